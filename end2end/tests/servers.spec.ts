import { test, expect, openDashboard } from './stagely';

test('the dashboard lists the local agent as connected', async ({ page, stagely }) => {
  await openDashboard(page, stagely);
  const row = page.locator('table.servers tr', { hasText: stagely.agentName });
  await expect(row.locator('.status')).toHaveText('Connected');
  // The agent reported its Docker and Compose versions and its host name.
  await expect(row.locator('td').nth(2)).not.toHaveText('—');
  await page.screenshot({ path: test.info().outputPath('connected.png'), fullPage: true });
});

test('a killed agent shows as disconnected, and connected again once restarted', async ({ page, stagely }) => {
  await openDashboard(page, stagely);
  const status = page.locator('table.servers tr', { hasText: stagely.agentName }).locator('.status');
  await expect(status).toHaveText('Connected');

  await stagely.killAgent();
  // The Refresh button re-fetches through a server function: this only works once hydrated.
  await expect(async () => {
    await page.getByRole('button', { name: 'Refresh' }).click();
    await expect(status).toHaveText('Disconnected', { timeout: 1_000 });
  }).toPass();
  // A reload renders the same truth on the server.
  await page.reload();
  await expect(status).toHaveText('Disconnected');
  await page.screenshot({ path: test.info().outputPath('disconnected.png'), fullPage: true });

  await stagely.startAgent();
  await expect(async () => {
    await page.getByRole('button', { name: 'Refresh' }).click();
    await expect(status).toHaveText('Connected', { timeout: 1_000 });
  }).toPass();
});
