// After the click, as a person sees it: a container that dies after a successful deploy turns its
// row red without a reload (and the Projects list says so) and is told to a signed webhook, and
// the lifecycle buttons stop, start, restart and take down the project's containers, each as a
// job of its history.

import { createHmac } from 'node:crypto';
import { createServer, IncomingHttpHeaders } from 'node:http';
import { AddressInfo } from 'node:net';
import { test as base, consoleProblems, expect, hydrated, openDashboard, Stagely } from './stagely';
import { addProject, deploy, ensureImage, HostProject } from './project';

// Runs long enough for the deploy to count it healthy (1.5 s), then dies with exit code 3.
const CRASH = `  crash:
    image: stagely-test/busybox:latest
    command: ["sh", "-c", "echo crash soon; sleep 5; exit 3"]
`;

const test = base.extend<{ project: HostProject }>({
  project: async ({ stagely }, use) => {
    ensureImage();
    const project = new HostProject(stagely.dataDir, CRASH);
    await use(project);
    project.remove();
  },
});

test('a service that dies after a successful deploy turns red live, and the lifecycle buttons act on the containers', async ({ page, stagely, project }) => {
  // Compose gives a container that ignores SIGTERM 10 s before killing it, and the restart, the
  // stop and the down here each wait that long.
  test.setTimeout(150_000);
  const problems = consoleProblems(page);
  await openDashboard(page, stagely);
  await addProject(page, project, stagely.agentName);
  await hydrated(page);
  let navigations = 0;
  page.on('framenavigated', () => navigations++);

  await deploy(page);
  const services = page.locator('[data-panel="services"]');
  const row = (service: string) => services.locator(`tr[data-service="${service}"]`);
  await expect(row('web')).toHaveAttribute('data-state', 'running');
  await expect(row('crash')).toHaveAttribute('data-state', 'running');
  // Five seconds after the deploy succeeded, the container exits: the row follows by itself.
  await expect(row('crash')).toHaveAttribute('data-state', 'exited', { timeout: 15_000 });
  await expect(row('crash')).toContainText('exited (3)');
  await expect(services.locator('[data-summary]')).toHaveText('crash exited (3) · 2/3 running');
  expect(navigations).toBe(0);
  await page.screenshot({ path: test.info().outputPath('crashed.png'), fullPage: true });

  // Restart one service: only its container starts again.
  const webStarted = await row('web').locator('td').nth(2).textContent();
  const workerStarted = await row('worker').locator('td').nth(2).textContent();
  await row('web').getByRole('button', { name: 'Restart' }).click();
  await expect(page.locator('.history li').first().locator('.job')).toHaveText('Restart web');
  await expect(page.locator('.history li').first().locator('.badge')).toHaveText('Succeeded', { timeout: 30_000 });
  await expect(row('web').locator('td').nth(2)).not.toHaveText(webStarted ?? '');
  await expect(row('worker').locator('td').nth(2)).toHaveText(workerStarted ?? '');

  // Stop asks for a second click, then the row shows the container stopped; Start brings it back.
  // A live report that draws the rows again between the two clicks (here: web restarted once
  // more) keeps the first one: the button still asks for confirmation.
  await row('worker').getByRole('button', { name: 'Stop' }).click();
  const webRestarted = await row('web').locator('td').nth(2).textContent();
  await row('web').getByRole('button', { name: 'Restart' }).click();
  await expect(row('web').locator('td').nth(2)).not.toHaveText(webRestarted ?? '', { timeout: 30_000 });
  await expect(row('worker').getByRole('button', { name: 'Confirm stop' })).toBeVisible();
  await row('worker').getByRole('button', { name: 'Confirm stop' }).click();
  await expect(row('worker')).toHaveAttribute('data-state', 'exited', { timeout: 30_000 });
  await row('worker').getByRole('button', { name: 'Start' }).click();
  await expect(row('worker')).toHaveAttribute('data-state', 'running', { timeout: 30_000 });

  // The Projects list sums the project up, live too.
  await page.getByRole('link', { name: 'Projects' }).click();
  const summary = page.locator(`tr[data-project="${project.name}"] [data-summary]`);
  await expect(summary).toHaveText('crash exited (3) · 2/3 running');
  await page.getByRole('link', { name: project.name }).click();
  // The address changes once the page has come (a reload before would load the Projects page).
  await expect(page).toHaveURL(/\/projects\/[^/]+$/);
  await expect(page.getByRole('heading', { name: project.name, level: 1 })).toBeVisible();
  // Rendered on the server this time: the rows are there at once, and the page hydrates cleanly.
  await page.reload();
  await hydrated(page);
  await expect(row('crash')).toHaveAttribute('data-state', 'exited');
  expect(problems).toEqual([]);

  // Down removes every container of the project.
  await services.getByRole('button', { name: 'Down', exact: true }).click();
  await services.getByRole('button', { name: 'Confirm down' }).click();
  await expect(services).toContainText('No containers', { timeout: 30_000 });
  expect(project.containers()).toEqual([]);
  await expect(page.locator('.history li').first().locator('.job')).toHaveText('Down');
  await page.screenshot({ path: test.info().outputPath('down.png'), fullPage: true });
});

test('deleting a project takes its containers down first', async ({ page, stagely, project }) => {
  await openDashboard(page, stagely);
  await addProject(page, project, stagely.agentName);
  await hydrated(page);
  await deploy(page);
  expect(project.containers().length).toBe(3);

  await page.getByRole('button', { name: 'Delete project' }).click();
  await expect(page.getByRole('checkbox', { name: 'Take its containers and networks down first' })).toBeChecked();
  await page.getByRole('button', { name: 'Confirm delete' }).click();
  await expect(page).toHaveURL(/\/projects$/, { timeout: 30_000 });
  // The address changes before the page does: the list is checked on the Projects page.
  await expect(page.getByRole('heading', { name: 'Add a project', level: 2 })).toBeVisible();
  await expect(page.locator(`tr[data-project="${project.name}"]`)).toHaveCount(0);
  expect(project.containers()).toEqual([]);
});

/** A local HTTP receiver standing in for a webhook endpoint: it records every request. */
async function startReceiver() {
  const requests: { headers: IncomingHttpHeaders; body: string }[] = [];
  const server = createServer((request, response) => {
    let body = '';
    request.on('data', (chunk) => (body += chunk));
    request.on('end', () => {
      requests.push({ headers: request.headers, body });
      response.writeHead(200).end();
    });
  });
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}/hook`, requests, close: () => server.close() };
}

test('a service that dies after a deploy is told to a webhook, signed', async ({ page }) => {
  const receiver = await startReceiver();
  // The receiver is on this host, which the operator must allow for notifications.
  const stagely = await Stagely.start('local', { STAGELY_NOTIFY_ALLOW_PRIVATE_NETWORKS: '1', STAGELY_NOTIFY_POLL_MS: '100' });
  ensureImage();
  const project = new HostProject(stagely.dataDir, CRASH);
  try {
    await openDashboard(page, stagely);
    await page.getByRole('navigation').getByRole('link', { name: 'Notifications' }).click();
    await page.getByRole('combobox', { name: 'Kind' }).selectOption({ label: 'Webhook' });
    await page.getByLabel('Name', { exact: true }).fill('on-call');
    await page.getByLabel('URL').fill(receiver.url);
    await page.getByRole('button', { name: 'Add channel' }).click();
    // The signing secret is shown once, right after the channel is added.
    const secret = (await page.locator('pre.signing-secret').textContent())?.trim() ?? '';
    expect(secret.length).toBeGreaterThan(20);

    // The project's saved choices come 2 s after the channels (a slow link): the boxes wait
    // for them, since a box ticked before they came would be unticked by them.
    await page.route('**/api/project_notifications*', async (route) => {
      await new Promise((resolve) => setTimeout(resolve, 2_000));
      await route.continue();
    });
    const choicesCame = page.waitForResponse((response) => response.url().includes('/api/project_notifications'));
    await addProject(page, project, stagely.agentName);
    await hydrated(page);
    const box = page.getByRole('checkbox', { name: 'on-call: Service exited' });
    await box.check();
    // A person takes a moment before Save: the choices have come by then.
    await choicesCame;
    await page.getByRole('button', { name: 'Save notifications' }).click();
    await expect(page.getByText('Saved.')).toBeVisible();
    await expect(box).toBeChecked();
    await deploy(page);
    await expect(page.locator('tr[data-service="crash"]')).toHaveAttribute('data-state', 'exited', { timeout: 15_000 });

    await expect.poll(() => receiver.requests.length, { timeout: 15_000 }).toBeGreaterThan(0);
    const delivered = receiver.requests.find((request) => request.headers['x-stagely-event'] === 'service_exited');
    expect(delivered, JSON.stringify(receiver.requests.map((request) => request.headers))).toBeDefined();
    const expected = 'sha256=' + createHmac('sha256', secret).update(delivered!.body).digest('hex');
    expect(delivered!.headers['x-stagely-signature']).toBe(expected);
    const body = JSON.parse(delivered!.body);
    expect(body.project).toBe(project.name);
    expect(body.service).toBe('crash');
    expect(body.message).toContain('3');
  } finally {
    await stagely.stop();
    project.remove();
    receiver.close();
  }
});

test('the scope selector says why the services are unknown and fills in by itself once the agent is back', async ({ page, stagely, project }) => {
  await openDashboard(page, stagely);
  await stagely.killAgent();
  await addProject(page, project, stagely.agentName);
  await hydrated(page);
  const scope = page.getByRole('combobox', { name: 'Scope' }).locator('option');
  const hint = page.locator('[data-services="unknown"]');
  await expect(hint).toContainText('not connected');
  await expect(hint).toContainText('Trying again in');
  await expect(scope).toHaveText(['Global (every service)']);

  // No reload, no click: the agent's return is enough.
  await stagely.startAgent();
  await expect(scope).toHaveText(['Global (every service)', 'Service crash', 'Service web', 'Service worker'], { timeout: 15_000 });
  await expect(hint).toHaveCount(0);
});
