// From code to a running app, as a person does it (issue 13): create a Git project in the page,
// add the deploy key the page shows to the repository (a real sshd on loopback, the test's stand-in
// for GitHub, whose authorized_keys is the repository's deploy-key list), deploy, push a commit
// that adds a service, send the push webhook signed exactly as GitHub signs it, and watch the new
// service appear in the Services panel and the history show the commit — live, no reload.
// Nothing is put on the host by hand: the agent checks the repository out itself.

import { ChildProcess, execFileSync, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { githubPush } from './github-push';
import { test as base, expect, freePort, hydrated, openDashboard } from './stagely';
import { ensureImage, IMAGE, openProjects } from './project';

/** A bare repository served over SSH by a real sshd of the test's, and a clone to push from. */
class GitRepository {
  readonly dir = mkdtempSync(join(tmpdir(), 'stagely-git-'));
  readonly name = `e2egit${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;
  private sshd: ChildProcess | null = null;
  port = 0;

  private git(cwd: string, ...args: string[]): string {
    return execFileSync('git', ['-C', cwd, ...args], {
      encoding: 'utf8',
      env: {
        PATH: process.env.PATH,
        GIT_CONFIG_NOSYSTEM: '1',
        GIT_CONFIG_GLOBAL: '/dev/null',
        GIT_AUTHOR_NAME: 'Mona Octocat',
        GIT_AUTHOR_EMAIL: 'mona@example.com',
        GIT_COMMITTER_NAME: 'Mona Octocat',
        GIT_COMMITTER_EMAIL: 'mona@example.com',
      },
    });
  }

  async start() {
    this.git(this.dir, 'init', '--quiet', '--bare', '-b', 'main', 'shop.git');
    mkdirSync(join(this.dir, 'work'));
    this.git(join(this.dir, 'work'), 'init', '--quiet', '-b', 'main');
    this.git(join(this.dir, 'work'), 'remote', 'add', 'origin', join(this.dir, 'shop.git'));
    writeFileSync(join(this.dir, 'authorized_keys'), '');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(this.dir, 'host_key')]);
    this.port = await freePort();
    writeFileSync(
      join(this.dir, 'sshd_config'),
      [
        `Port ${this.port}`,
        'ListenAddress 127.0.0.1',
        `HostKey ${join(this.dir, 'host_key')}`,
        `AuthorizedKeysFile ${join(this.dir, 'authorized_keys')}`,
        'PasswordAuthentication no',
        'KbdInteractiveAuthentication no',
        'PubkeyAuthentication yes',
        'PermitRootLogin prohibit-password',
        'StrictModes no',
        'UsePAM no',
        'PidFile none',
        '',
      ].join('\n'),
    );
    // sshd's privilege separation directory; a fresh machine may not have it.
    mkdirSync('/run/sshd', { recursive: true });
    const sshd = spawn('/usr/sbin/sshd', ['-D', '-e', '-f', join(this.dir, 'sshd_config')], { stdio: ['ignore', 'ignore', 'pipe'] });
    this.sshd = sshd;
    await new Promise<void>((listening, failed) => {
      let said = '';
      sshd.stderr?.on('data', (chunk: Buffer) => {
        said += chunk.toString();
        if (said.includes('Server listening') && said.includes(`port ${this.port}`)) listening();
      });
      sshd.once('exit', () => failed(new Error(`sshd ended before listening:\n${said}`)));
    });
  }

  url(): string {
    return `ssh://root@127.0.0.1:${this.port}${join(this.dir, 'shop.git')}`;
  }

  /** What adding a deploy key on GitHub amounts to. */
  authorize(publicKey: string) {
    writeFileSync(join(this.dir, 'authorized_keys'), `${publicKey}\n`);
  }

  /** Commits `compose` as compose.yaml with `message`, pushes to main, returns the sha. */
  commit(compose: string, message: string): string {
    const work = join(this.dir, 'work');
    writeFileSync(join(work, 'compose.yaml'), compose);
    this.git(work, 'add', 'compose.yaml');
    this.git(work, 'commit', '--quiet', '-m', message);
    this.git(work, 'push', '--quiet', 'origin', 'main');
    return this.git(work, 'rev-parse', 'HEAD').trim();
  }

  /** The compose project's containers, removed; sshd stopped; the repository deleted. */
  remove() {
    this.sshd?.kill('SIGTERM');
    const ids = execFileSync('docker', ['ps', '-aq', '--filter', `label=com.docker.compose.project=${this.name}`], { encoding: 'utf8' }).trim();
    if (ids) execFileSync('docker', ['rm', '-f', ...ids.split('\n')], { stdio: 'ignore' });
    try {
      execFileSync('docker', ['network', 'rm', `${this.name}_default`], { stdio: 'ignore' });
    } catch {}
    rmSync(this.dir, { recursive: true, force: true });
  }
}

const service = (name: string) => `  ${name}:
    image: ${IMAGE}
    command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]
`;

const test = base.extend<{ repo: GitRepository }>({
  repo: async ({}, use) => {
    ensureImage();
    const repo = new GitRepository();
    await repo.start();
    await use(repo);
    repo.remove();
  },
});

test('a Git project deploys from the page, and a signed push adds a service live', async ({ page, stagely, repo }) => {
  test.setTimeout(180_000);
  const first = repo.commit(`services:\n${service('web')}`, 'Serve the shop');

  await openDashboard(page, stagely);
  await openProjects(page);
  await page.getByLabel('Name', { exact: true }).fill(repo.name);
  await page.getByRole('combobox', { name: 'Server' }).selectOption({ label: stagely.agentName });
  await page.getByRole('combobox', { name: 'Source' }).selectOption({ label: 'A Git repository' });
  await page.getByLabel('Repository (https:// or ssh)').fill(repo.url());
  await page.getByLabel('Branch or tag (optional)').fill('main');
  await page.getByRole('button', { name: 'Add project' }).click();
  await expect(page.getByRole('heading', { name: repo.name, level: 1 })).toBeVisible();
  await hydrated(page);

  // The deploy key the page shows goes to the repository; nothing goes to the host.
  const source = page.getByTestId('git-source');
  await source.getByRole('button', { name: 'Generate deploy key' }).click();
  const publicKey = ((await source.getByTestId('deploy-key').textContent()) ?? '').trim();
  expect(publicKey).toMatch(/^ssh-ed25519 /);
  repo.authorize(publicKey);

  await page.getByRole('button', { name: 'Deploy', exact: true }).click();
  await expect(page.locator('.deploy-live .badge')).toHaveText('Succeeded', { timeout: 90_000 });
  const services = page.locator('[data-panel="services"]');
  await expect(services.locator('tr[data-service="web"]')).toHaveAttribute('data-state', 'running', { timeout: 20_000 });
  await expect(page.locator('.history li').first().getByTestId('commit')).toContainText(first.slice(0, 8));

  // The webhook, as GitHub would be given it.
  const panel = page.getByTestId('webhook');
  await panel.getByRole('button', { name: 'Create webhook' }).click();
  const secret = ((await panel.getByTestId('webhook-secret-value').textContent()) ?? '').trim();
  const url = ((await panel.getByTestId('webhook-url').textContent()) ?? '').trim();
  expect(secret).toMatch(/^stw_/);

  // A push that adds a service: GitHub delivers the hook; the page changes by itself.
  const second = repo.commit(`services:\n${service('web')}${service('worker')}`, 'Add the worker');
  const delivered = await githubPush(url, secret, { after: second, before: first, message: 'Add the worker' });
  expect(delivered.status).toBe(202);
  const latest = page.locator('.history li').first();
  await expect(latest.locator('.trigger')).toContainText('webhook github', { timeout: 20_000 });
  await expect(latest.locator('[data-status]')).toHaveAttribute('data-status', 'succeeded', { timeout: 90_000 });
  await expect(latest.getByTestId('commit')).toContainText(second.slice(0, 8));
  await expect(latest.getByTestId('commit')).toContainText('Add the worker');
  await expect(services.locator('tr[data-service="worker"]')).toHaveAttribute('data-state', 'running', { timeout: 20_000 });
  await expect(services.locator('tr[data-service="web"]')).toBeVisible();
  await page.screenshot({ path: test.info().outputPath('git-journey.png'), fullPage: true });

  expect(stagely.logs()).not.toContain(secret);
  expect(stagely.logs()).not.toContain('PRIVATE KEY');
});
