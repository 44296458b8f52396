// Push webhooks (issue 13) as a person sees them: create the project's webhook in the page, a
// push signed as GitHub signs it deploys, and the history shows which push started it, live,
// without a reload; rotating the secret shows a new one and the old one is refused.

import { githubPush } from './github-push';
import { test as base, expect, hydrated, openDashboard } from './stagely';
import { addProject, ensureImage, HostProject } from './project';

const test = base.extend<{ project: HostProject }>({
  project: async ({ stagely }, use) => {
    ensureImage();
    const project = new HostProject(stagely.dataDir);
    await use(project);
    project.remove();
  },
});

test('a signed push deploys and the history says which push, live; a rotated secret replaces the old one', async ({ page, stagely, project }) => {
  await openDashboard(page, stagely);
  await addProject(page, project, stagely.agentName);
  await hydrated(page);
  const panel = page.getByTestId('webhook');
  await panel.getByRole('button', { name: 'Create webhook' }).click();
  const secret = (await panel.getByTestId('webhook-secret-value').textContent())?.trim() ?? '';
  expect(secret).toMatch(/^stw_/);
  const url = (await panel.getByTestId('webhook-url').textContent())?.trim() ?? '';
  expect(url).toMatch(new RegExp(`^${stagely.url}/api/v1/hooks/[A-Za-z0-9_-]+$`));

  const after = 'a'.repeat(40);
  expect((await githubPush(url, secret, { delivery: 'e2e-1', after, message: 'Add the worker' })).status).toBe(202);
  const row = page.locator('.history li').first();
  await expect(row.locator('.trigger')).toHaveText('webhook github: aaaaaaa by octocat');
  await expect(row.locator('[data-status]')).toHaveAttribute('data-status', 'succeeded', { timeout: 60_000 });
  await expect(panel.getByTestId('webhook-deliveries').locator('tr[data-outcome="deployed"]')).toHaveCount(1);
  await page.screenshot({ path: test.info().outputPath('webhook-deployed.png'), fullPage: true });

  await panel.getByRole('button', { name: 'Rotate secret' }).click();
  await panel.getByRole('button', { name: 'Confirm: rotate secret' }).click();
  await expect(panel.getByTestId('webhook-secret-value')).not.toHaveText(secret);
  expect((await githubPush(url, secret, { delivery: 'e2e-2', after: 'b'.repeat(40), message: 'Add the worker' })).status).toBe(401);
  const rotated = (await panel.getByTestId('webhook-secret-value').textContent())?.trim() ?? '';
  expect((await githubPush(url, rotated, { delivery: 'e2e-3', after: 'c'.repeat(40), message: 'Add the worker' })).status).toBe(202);
  const last = page.locator('.history li').first();
  await expect(last.locator('.trigger')).toHaveText('webhook github: ccccccc by octocat');
  // Its deploy ends before the test does (one still running would start containers after the
  // project's were removed).
  await expect(last.locator('[data-status]')).toHaveAttribute('data-status', 'succeeded', { timeout: 60_000 });
  expect(stagely.logs()).not.toContain(secret);
  expect(stagely.logs()).not.toContain(rotated);
});
