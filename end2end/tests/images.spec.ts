// The Images panel as a person uses it: a project created to always pull, registry credentials
// added and removed, the password never on the page, and a bad registry name refused with a
// message.

import { test as base, expect, hydrated, openDashboard } from './stagely';
import { ensureImage, HostProject, openProjects } from './project';

const test = base.extend<{ project: HostProject }>({
  project: async ({ stagely }, use) => {
    ensureImage();
    const project = new HostProject(stagely.dataDir);
    await use(project);
    project.remove();
  },
});

test('registry credentials are kept per project and their password never reaches the page', async ({ page, stagely, project }) => {
  const password = 'registry-token-e2e-4d2c9a';
  await openDashboard(page, stagely);
  await openProjects(page);
  await page.getByLabel('Name', { exact: true }).fill(project.name);
  await page.getByRole('combobox', { name: 'Server' }).selectOption({ label: stagely.agentName });
  await page.getByLabel('Directory on the server').fill(project.dir);
  await page.getByRole('combobox', { name: 'Images' }).selectOption('always');
  await page.getByRole('button', { name: 'Add project' }).click();
  await expect(page.getByRole('heading', { name: project.name, level: 1 })).toBeVisible();
  await hydrated(page);

  const panel = page.locator('section[data-panel="images"]');
  await expect(panel.getByRole('combobox', { name: 'Pull policy' })).toHaveValue('always');
  await expect(panel.locator('[data-pull-policy]')).toHaveAttribute('data-pull-policy', 'always');
  await expect(panel.getByText('No registry credentials.')).toBeVisible();

  await panel.getByLabel('Registry').fill('registry.example.com:5000');
  await panel.getByLabel('Username').fill('ci-bot');
  await panel.getByLabel('Password or token').fill(password);
  await panel.getByRole('button', { name: 'Save credentials' }).click();
  const row = panel.locator('tr[data-registry="registry.example.com:5000"]');
  await expect(row).toContainText('ci-bot');
  expect(await page.content()).not.toContain(password);
  await page.reload();
  await expect(row).toContainText('ci-bot');
  expect(await page.content()).not.toContain(password);
  await hydrated(page);

  // A registry given as a URL is refused, saying what a registry name is.
  await panel.getByLabel('Registry').fill('https://ghcr.io');
  await panel.getByLabel('Username').fill('ci-bot');
  await panel.getByLabel('Password or token').fill(password);
  await panel.getByRole('button', { name: 'Save credentials' }).click();
  await expect(panel.getByRole('alert')).toContainText('registry host name');
  await expect(panel.locator('tr[data-registry]')).toHaveCount(1);

  // Back to pulling missing images only; it stays so after a reload.
  await panel.getByRole('combobox', { name: 'Pull policy' }).selectOption('missing');
  await panel.getByRole('button', { name: 'Save', exact: true }).click();
  await expect(panel.locator('[data-pull-policy]')).toHaveAttribute('data-pull-policy', 'missing');
  await page.reload();
  await expect(panel.getByRole('combobox', { name: 'Pull policy' })).toHaveValue('missing');
  await hydrated(page);

  await row.getByRole('button', { name: 'Remove' }).click();
  await expect(row).toHaveCount(0);
  await expect(panel.getByText('No registry credentials.')).toBeVisible();
});
