import { test, expect, hydrated, openDashboard } from './stagely';

test('the dashboard lists the local agent as connected', async ({ page, stagely }) => {
  await openDashboard(page, stagely);
  const row = page.locator('table.servers tr', { hasText: stagely.agentName });
  await expect(row.locator('.status')).toHaveText('Connected');
  // The agent reported its Docker and Compose versions and its host name.
  await expect(row.locator('td').nth(2)).not.toHaveText('—');
  await page.screenshot({ path: test.info().outputPath('connected.png'), fullPage: true });
});

test('a reload and the Refresh button show the same truth as the live feed', async ({ page, stagely }) => {
  await openDashboard(page, stagely);
  const status = page.locator('table.servers tr', { hasText: stagely.agentName }).locator('.status');
  await stagely.killAgent();
  await page.reload();
  await expect(status).toHaveText('Disconnected');
  // A click before hydration would do nothing; the Refresh must ask the server again.
  await hydrated(page);
  const asked = page.waitForResponse((response) => response.url().includes('/api/list_agents'));
  await page.getByRole('button', { name: 'Refresh' }).click();
  expect((await asked).ok()).toBe(true);
  await expect(status).toHaveText('Disconnected');
});
