// The product's success criteria, each as a person sees it in the browser: signing in with
// GitHub, secrets reaching the right containers through a one-click deploy, the deploy and the
// container logs appearing live, and secret values staying out of the page until revealed.

import { test as base, consoleProblems, expect, hydrated, openDashboard, Stagely } from './stagely';
import { startGitHub, StandIn } from './github-standin';
import { addProject, addSecret, deploy, deployAndWatch, ensureImage, HostProject } from './project';

const test = base.extend<{ project: HostProject }>({
  project: async ({ stagely }, use) => {
    ensureImage();
    const project = new HostProject(stagely.dataDir);
    await use(project);
    project.remove();
  },
});

test('a person signs in with GitHub and lands on the dashboard', async ({ page }) => {
  const github: StandIn = await startGitHub({
    clientId: 'Iv1.stagely-e2e',
    clientSecret: 'e2e-client-secret',
    user: { id: 4242, login: 'octocat', name: 'The Octocat' },
  });
  const stagely = await Stagely.start('local', {
    STAGELY_GITHUB_CLIENT_ID: 'Iv1.stagely-e2e',
    STAGELY_GITHUB_CLIENT_SECRET: 'e2e-client-secret',
    STAGELY_GITHUB_URL: github.url,
    STAGELY_GITHUB_API_URL: github.url,
    STAGELY_GITHUB_ALLOWED_USERS: 'octocat',
  });
  try {
    await page.goto(stagely.url);
    await expect(page).toHaveURL(/\/login$/);
    await page.getByRole('link', { name: 'Sign in with GitHub' }).click();
    // GitHub's consent page (the stand-in's), then back to Stagely.
    await expect(page.getByText('Authorize Stagely')).toBeVisible();
    await page.getByRole('button', { name: 'Authorize' }).click();
    await expect(page).toHaveURL(`${stagely.url}/`);
    await expect(page.getByRole('heading', { name: 'Servers' })).toBeVisible();
    await expect(page.locator('.whoami')).toContainText('octocat');
    expect(github.tokenRequests).toBe(1);
    await page.screenshot({ path: test.info().outputPath('github-signed-in.png'), fullPage: true });

    // Signing out ends the session: the dashboard asks to sign in again.
    await page.getByRole('button', { name: 'Sign out' }).click();
    await expect(page).toHaveURL(/\/login$/);
    await page.goto(stagely.url);
    await expect(page).toHaveURL(/\/login$/);
  } finally {
    await stagely.stop();
    await github.close();
  }
});

test('secrets added in the dashboard reach the right containers with one click on Deploy', async ({ page, stagely, project }) => {
  await openDashboard(page, stagely);
  await addProject(page, project, stagely.agentName);
  await hydrated(page);
  // The scope selector offers the services the agent found in the compose file.
  await expect(page.getByRole('combobox', { name: 'Scope' }).locator('option')).toHaveText(['Global (every service)', 'Service web', 'Service worker']);
  await addSecret(page, 'SHARED_TOKEN', 'global-value-123', 'Global');
  await addSecret(page, 'WORKER_ONLY', 'worker-value-456', 'worker');
  await deploy(page);
  await page.screenshot({ path: test.info().outputPath('deployed.png'), fullPage: true });

  expect(project.env('web')).toContain('SHARED_TOKEN=global-value-123');
  expect(project.env('web').some((entry) => entry.startsWith('WORKER_ONLY='))).toBe(false);
  expect(project.env('worker')).toEqual(expect.arrayContaining(['SHARED_TOKEN=global-value-123', 'WORKER_ONLY=worker-value-456']));
  // The history keeps the deployment, with its own log. The log stays open while other jobs
  // come and go: the list is read again each time one is queued or ends, and the status badge
  // turns Succeeded live, before that read.
  const id = await page.locator('.history li').first().getAttribute('data-deployment-id');
  const row = page.locator(`.history li[data-deployment-id="${id}"]`);
  await expect(row.locator('.badge')).toHaveText('Succeeded');
  await row.getByRole('button', { name: 'Log' }).click();
  await expect(row.locator('.deploy-log')).toContainText('up');
  await page.getByRole('button', { name: 'Deploy', exact: true }).click();
  const next = page.locator('.history li').first();
  await expect(next).not.toHaveAttribute('data-deployment-id', id!);
  // The images a job ran come with the list read after it ended.
  await expect(next.locator('.images')).toBeVisible({ timeout: 60_000 });
  await expect(row.getByRole('button', { name: 'Hide log' })).toBeVisible();
  await expect(row.locator('.deploy-log')).toContainText('up');
  // A Redeploy clicked once waits for its confirming click, across reads of the list too (one
  // when the next job is queued, one when it ends).
  await row.getByRole('button', { name: 'Redeploy', exact: true }).click();
  await expect(row.getByRole('button', { name: 'Confirm redeploy' })).toBeVisible();
  await page.getByRole('button', { name: 'Deploy', exact: true }).click();
  await expect(page.locator('.history li')).toHaveCount(3);
  const third = page.locator('.history li').first();
  await expect(third.locator('.images')).toBeVisible({ timeout: 60_000 });
  await expect(row.getByRole('button', { name: 'Confirm redeploy' })).toBeVisible();
});

test('the scope chosen for a new secret stays chosen while the page reads the services again', async ({ page, stagely, project }) => {
  await openDashboard(page, stagely);
  await addProject(page, project, stagely.agentName);
  await hydrated(page);
  const scope = page.getByRole('combobox', { name: 'Scope' });
  await expect(scope.locator('option')).toHaveText(['Global (every service)', 'Service web', 'Service worker']);
  await page.getByLabel('Key').fill('WORKER_ONLY');
  await page.getByLabel('Value').fill('worker-value-456');
  await scope.selectOption({ label: 'Service worker' });
  // The agent goes away and comes back: the page asks it for the services again.
  const readAgain = page.waitForResponse((response) => response.url().includes('/api/project_services'));
  await stagely.killAgent();
  await stagely.startAgent();
  expect((await readAgain).ok()).toBe(true);
  await expect(scope.locator('option')).toHaveText(['Global (every service)', 'Service web', 'Service worker']);
  await expect(scope).toHaveValue('worker');
  await page.getByRole('button', { name: 'Add secret' }).click();
  await expect(page.locator('tr[data-secret-key="WORKER_ONLY"] td').nth(1)).toHaveText('worker');
});

test('the server status flips to Disconnected and back to Connected live, without a reload', async ({ page, stagely }) => {
  await openDashboard(page, stagely);
  const status = page.locator('table.servers tr', { hasText: stagely.agentName }).locator('.status');
  await expect(status).toHaveText('Connected');
  let navigations = 0;
  page.on('framenavigated', () => navigations++);

  await stagely.killAgent();
  await expect(status).toHaveText('Disconnected');
  await page.screenshot({ path: test.info().outputPath('disconnected.png'), fullPage: true });
  await stagely.startAgent();
  await expect(status).toHaveText('Connected');
  expect(navigations).toBe(0);
  await page.screenshot({ path: test.info().outputPath('reconnected.png'), fullPage: true });
});

test('the deploy shows container creation and then the container log lines as they happen', async ({ page, stagely, project }) => {
  await openDashboard(page, stagely);
  await addProject(page, project, stagely.agentName);
  await hydrated(page);
  let navigations = 0;
  page.on('framenavigated', () => navigations++);

  // New lines keep arriving on the open page.
  const { steps, logs } = await deployAndWatch(page, project);
  await expect(steps).toContainText(/Created|Started|Running/);
  // ANSI colours are rendered, not printed.
  await expect(logs).not.toContainText('[32m');
  await expect(logs.locator('.line', { hasText: 'tick' }).first().locator('span[style*="color"]')).toHaveCount(1);
  await expect(page.locator('.deploy-live .badge')).toHaveText('Succeeded', { timeout: 60_000 });
  expect(navigations).toBe(0);
  await page.screenshot({ path: test.info().outputPath('live-logs.png'), fullPage: true });
});

test('leaving the project page while log lines arrive breaks nothing', async ({ page, stagely, project }) => {
  const problems = consoleProblems(page);
  await openDashboard(page, stagely);
  await addProject(page, project, stagely.agentName);
  await hydrated(page);
  const { logs } = await deployAndWatch(page, project);
  await expect(page.locator('.deploy-live .badge')).toHaveText('Succeeded', { timeout: 60_000 });
  // The log panel scrolls to new lines on the next animation frame. The page's frames are held
  // from here, so the one asked for by the last line comes after the person has left the page.
  await page.evaluate(() => {
    const held: FrameRequestCallback[] = [];
    const w = window as any;
    w.heldFrames = held;
    w.frameRequest = window.requestAnimationFrame;
    window.requestAnimationFrame = (callback) => held.push(callback);
  });
  const ticks = await logs.locator('.line', { hasText: 'tick' }).count();
  await expect.poll(() => logs.locator('.line', { hasText: 'tick' }).count()).toBeGreaterThan(ticks);

  await page.getByRole('link', { name: 'Projects', exact: true }).click();
  await expect(page.getByRole('heading', { name: 'Projects', level: 1 })).toBeVisible();
  // The held frames come now; a panic in one fails this step.
  const frames = await page.evaluate(() => {
    const w = window as any;
    window.requestAnimationFrame = w.frameRequest;
    const held: FrameRequestCallback[] = w.heldFrames.splice(0);
    held.forEach((callback) => callback(performance.now()));
    return held.length;
  });
  expect(frames).toBeGreaterThan(0);
  // The page still works: back on the project, lines keep coming.
  await page.getByRole('link', { name: project.name }).click();
  await expect(page.getByTestId('log-panel')).toContainText('tick');
  expect(problems).toEqual([]);
});

test('a secret value never reaches the page or its live feed unless revealed', async ({ page, stagely, project }) => {
  const secret = 'hunter2-very-secret-value';
  const seen: string[] = [];
  page.on('websocket', (socket) => socket.on('framereceived', (frame) => seen.push(String(frame.payload))));
  page.on('response', async (response) => {
    const body = await response.text().catch(() => '');
    seen.push(body);
  });

  await openDashboard(page, stagely);
  await addProject(page, project, stagely.agentName);
  await hydrated(page);
  await addSecret(page, 'SHARED_TOKEN', secret, 'Global');
  await deploy(page);
  // The container printed it; the agent redacted it before it left the host.
  await expect(page.getByTestId('log-panel')).toContainText('web starting with token ***');
  await page.reload();
  await hydrated(page);
  await expect(page.getByTestId('log-panel')).toContainText('tick');

  expect(await page.content()).not.toContain(secret);
  expect(seen.length).toBeGreaterThan(10);
  expect(seen.filter((body) => body.includes(secret))).toEqual([]);

  // Revealing is the one way to see it.
  const row = page.locator('tr[data-secret-key="SHARED_TOKEN"]');
  await row.getByRole('button', { name: 'Reveal' }).click();
  await expect(row).toContainText(secret);
  await page.screenshot({ path: test.info().outputPath('revealed.png'), fullPage: true });
});
