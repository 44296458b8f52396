// A Docker Swarm stack as a person runs it from the dashboard, on this machine's engine in
// single-node swarm mode (entered here and left when the file ends, unless it was a manager
// already): the Servers page lists the Swarm's nodes, a project whose target is swarm deploys
// with its rollout's progress in the deploy log and its replicas counted in the services panel,
// a new version rolls out, Redeploy brings the first version back exactly (its image, although
// the file names another), and Down removes the stack.

import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test, expect, hydrated, openDashboard } from './stagely';
import { ensureImage, IMAGE, openProjects } from './project';

const docker = (...args: string[]) => execFileSync('docker', args, { encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] }).trim();

let joined = false;
const repository = `stagely-test/e2e-swarm-${Date.now().toString(36)}`;
const stacks: string[] = [];

test.beforeAll(() => {
  ensureImage();
  if (docker('info', '--format', '{{.Swarm.LocalNodeState}}') !== 'active') {
    docker('swarm', 'init', '--advertise-addr', '127.0.0.1');
    joined = true;
  }
});

test.afterAll(() => {
  for (const stack of stacks) {
    try {
      docker('stack', 'rm', stack);
    } catch {}
  }
  if (joined) docker('swarm', 'leave', '--force');
  for (const version of ['one', 'two']) {
    try {
      docker('rmi', '-f', `${repository}:${version}`);
    } catch {}
  }
});

/** An image whose `/version` says `version`; returns its id. */
function buildVersion(version: string): string {
  const tag = `${repository}:${version}`;
  execFileSync('docker', ['build', '-q', '-t', tag, '-'], {
    input: `FROM ${IMAGE}\nRUN echo ${version} > /version\n`,
    stdio: ['pipe', 'ignore', 'pipe'],
  });
  return docker('image', 'inspect', '--format', '{{.Id}}', tag);
}

/** Two replicas of `web`, each saying which version it runs, then ticking. */
function writeStack(dir: string, version: string) {
  writeFileSync(
    join(dir, 'compose.yaml'),
    `services:
  web:
    image: ${repository}:${version}
    command: ["sh", "-c", "trap 'exit 0' TERM; echo \\"web $$(cat /version) starting\\"; i=0; while true; do i=$$((i+1)); echo tick $$i; sleep 0.5; done"]
    deploy:
      replicas: 2
`,
  );
}

/** The image ids the stack's web tasks run now. */
function runningImages(stack: string): string[] {
  const containers = docker('ps', '-q', '--filter', `label=com.docker.swarm.service.name=${stack}_web`);
  if (!containers) return [];
  return containers
    .split('\n')
    .map((id) => docker('inspect', '--format', '{{.Image}}', id))
    .sort();
}

test('a Swarm stack deploys from the dashboard, rolls out a new version, is redeployed exactly and taken down', async ({ page, stagely }) => {
  test.setTimeout(240_000);
  const one = buildVersion('one');
  const two = buildVersion('two');
  const name = `e2esw${Date.now().toString(36)}`;
  stacks.push(name);
  const dir = join(stagely.dataDir, name);
  mkdirSync(dir);
  writeStack(dir, 'one');

  // The agent runs on the manager: the Servers page lists the Swarm's one node.
  await openDashboard(page, stagely);
  const server = page.locator('table.servers tr', { hasText: stagely.agentName });
  await expect(server.locator('[data-swarm-nodes] li')).toHaveCount(1);
  await expect(server.locator('[data-swarm-nodes] li')).toContainText('manager (leader) · active · ready');

  await openProjects(page);
  await page.getByLabel('Name', { exact: true }).fill(name);
  await page.getByRole('combobox', { name: 'Server' }).selectOption({ label: stagely.agentName });
  await page.getByLabel('Directory on the server').fill(dir);
  await page.getByRole('combobox', { name: 'Target' }).selectOption('swarm');
  await page.getByRole('button', { name: 'Add project' }).click();
  await expect(page.getByRole('heading', { name, level: 1 })).toBeVisible();
  await page.getByRole('link', { name: 'Projects' }).click();
  await expect(page.locator(`tr[data-project="${name}"] td.target`)).toHaveText('swarm (secrets as environment)');
  await page.getByRole('link', { name, exact: true }).click();
  await expect(page.getByRole('heading', { name, level: 1 })).toBeVisible();
  await hydrated(page);

  // The first deploy: the log shows the service's rollout, the panel its replicas and logs.
  await page.getByRole('button', { name: 'Deploy', exact: true }).click();
  const live = page.locator('.deploy-live');
  await expect(live.locator('.badge')).toHaveText('Succeeded', { timeout: 90_000 });
  await expect(live.locator('.deploy-log')).toContainText(`${name}_web: 2/2 updated`);
  const services = page.locator('[data-panel="services"]');
  await expect(services.locator('tr[data-service="web"]')).toHaveCount(2, { timeout: 30_000 });
  await expect(services.locator('tr[data-service="web"] [data-replicas]').first()).toHaveText('2/2 running');
  await expect(page.getByTestId('log-panel')).toContainText('web one starting');
  await expect(page.getByTestId('log-panel')).toContainText('tick');
  expect(runningImages(name)).toEqual([one, one]);
  const history = page.locator('.history li');
  await expect(history.first().locator('.images')).toContainText(`web ${repository}:one`);

  // A new version rolls out, one replica at a time, start-first.
  writeStack(dir, 'two');
  await page.getByRole('button', { name: 'Deploy', exact: true }).click();
  await expect(history).toHaveCount(2);
  await expect(history.first().locator('.badge')).toHaveText('Succeeded', { timeout: 90_000 });
  // The list read after the job ended (the badge turns live, before it): the rows below are
  // the ones the Redeploy clicks land on, not ones about to be rendered anew.
  await expect(history.first().locator('.images')).toContainText(`web ${repository}:two`);
  await expect(live.locator('.deploy-log')).toContainText(`${name}_web: 2/2 updated (completed)`);
  expect(runningImages(name)).toEqual([two, two]);
  // The replaced tasks' containers (Swarm keeps them a while) are not listed as exited web
  // containers: the panel shows the two that run.
  await expect(services.locator('[data-summary]')).toHaveText('2/2 running', { timeout: 30_000 });
  await expect(services.locator('tr[data-service="web"]')).toHaveCount(2);

  // Redeploy the first deployment: version one again, although the file names two.
  const first = history.nth(1);
  await first.getByRole('button', { name: 'Redeploy' }).click();
  await first.getByRole('button', { name: 'Confirm redeploy' }).click();
  await expect(history).toHaveCount(3);
  await expect(history.first().locator('.job')).toHaveText(/^Redeploy/);
  await expect(history.first().locator('.badge')).toHaveText('Succeeded', { timeout: 90_000 });
  expect(runningImages(name)).toEqual([one, one]);
  await page.screenshot({ path: test.info().outputPath('swarm-redeployed.png'), fullPage: true });

  // Down removes the stack.
  await services.getByRole('button', { name: 'Down', exact: true }).click();
  await services.getByRole('button', { name: 'Confirm down' }).click();
  await expect(history.first().locator('.job')).toHaveText('Down');
  await expect(history.first().locator('.badge')).toHaveText('Succeeded', { timeout: 120_000 });
  expect(docker('service', 'ls', '-q', '--filter', `label=com.docker.stack.namespace=${name}`)).toBe('');
});
