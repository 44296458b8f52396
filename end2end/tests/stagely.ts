// A Playwright fixture that runs the real Stagely: a stagely-server on a free loopback port with
// a fresh SQLite data directory, and a stagely-agent registered against it with
// `stagely-server agents add`. Binaries come from the cargo-leptos build (override with
// STAGELY_SERVER_BIN / STAGELY_AGENT_BIN / STAGELY_SITE_ROOT).

import { test as base, expect, Page } from '@playwright/test';
import { ChildProcess, execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, openSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

export const root = resolve(__dirname, '..', '..');
export const serverBin = process.env.STAGELY_SERVER_BIN ?? join(root, 'target/debug/stagely-server');
export const agentBin = process.env.STAGELY_AGENT_BIN ?? join(root, 'target/debug/stagely-agent');
export const siteRoot = process.env.STAGELY_SITE_ROOT ?? join(root, 'target/site');

/** The text of `dir/name`; empty while the file does not exist. */
export function readLog(dir: string, name: string): string {
  try {
    return readFileSync(join(dir, name), 'utf8');
  } catch {
    return '';
  }
}

export class Stagely {
  agent: ChildProcess | null = null;
  private server: ChildProcess | null = null;

  constructor(
    readonly url: string,
    readonly dataDir: string,
    readonly agentName: string,
    private readonly token: string,
    private readonly env: NodeJS.ProcessEnv,
  ) {}

  static async start(agentName: string, extraEnv: NodeJS.ProcessEnv = {}): Promise<Stagely> {
    const dataDir = mkdtempSync(join(tmpdir(), 'stagely-e2e-'));
    const port = await freePort();
    const env = {
      ...process.env,
      STAGELY_BIND: `127.0.0.1:${port}`,
      STAGELY_PUBLIC_URL: `http://127.0.0.1:${port}`,
      STAGELY_DATA_DIR: dataDir,
      STAGELY_SITE_ROOT: siteRoot,
      STAGELY_DOWNLOADS_DIR: join(root, 'target/downloads'),
      RUST_LOG: 'info',
      ...extraEnv,
    };
    const token = execFileSync(serverBin, ['agents', 'add', agentName], { env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
    const stagely = new Stagely(`http://127.0.0.1:${port}`, dataDir, agentName, token, env);
    stagely.server = spawn(serverBin, [], { env, stdio: ['ignore', 'ignore', openSync(join(dataDir, 'server.log'), 'a')] });
    await waitFor(async () => (await fetch(`${stagely.url}/healthz`).catch(() => null))?.ok === true, 'server /healthz');
    await stagely.startAgent();
    return stagely;
  }

  /** Starts the agent and waits until it says it is connected. */
  async startAgent() {
    const connectedBefore = this.agentLog().split('connected to the server').length;
    this.agent = spawn(agentBin, ['--server', this.url], {
      env: { ...this.env, STAGELY_AGENT_TOKEN: this.token },
      stdio: ['ignore', 'ignore', openSync(join(this.dataDir, 'agent.log'), 'a')],
    });
    await waitFor(async () => this.agentLog().split('connected to the server').length > connectedBefore, 'the agent to connect');
  }

  private agentLog(): string {
    return readLog(this.dataDir, 'agent.log');
  }

  /** SIGKILL: the agent gets no chance to say goodbye. */
  async killAgent() {
    const agent = this.agent;
    if (!agent || agent.exitCode !== null) return;
    const exited = new Promise((done) => agent.once('exit', done));
    agent.kill('SIGKILL');
    await exited;
    this.agent = null;
  }

  logs(): string {
    const read = (name: string) => readLog(this.dataDir, name);
    return `--- server.log\n${read('server.log')}\n--- agent.log\n${read('agent.log')}`;
  }

  async stop() {
    await this.killAgent();
    this.server?.kill('SIGTERM');
  }
}

export function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const probe = createServer();
    probe.once('error', fail);
    probe.listen(0, '127.0.0.1', () => {
      const address = probe.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      probe.close(() => done(port));
    });
  });
}

export async function waitFor(check: () => Promise<boolean>, what: string, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((done) => setTimeout(done, 100));
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** Waits until hydration has attached the page's event handlers. */
export async function hydrated(page: Page) {
  await expect(page.locator('[data-hydrated="true"]')).toBeAttached();
}

/**
 * What the page prints to its console that a person should never have to see: errors, and
 * anything about hydration. Chromium cancels the requests in flight whenever the host's network
 * changes, which on this machine happens each time Docker brings up a project's network next to
 * the browser ("net::ERR_NETWORK_CHANGED"); a browser on another machine never sees that, so
 * those messages are left out.
 */
export function consoleProblems(page: Page): string[] {
  const problems: string[] = [];
  page.on('console', (message) => {
    const text = message.text();
    if (text.includes('net::ERR_NETWORK_CHANGED')) return;
    if (message.type() === 'error' || text.includes('hydration')) problems.push(text);
  });
  return problems;
}

/** Creates the first admin through the setup page a fresh instance shows, which signs them in. */
export async function signIn(page: Page, stagely: { url: string }) {
  await page.goto(stagely.url);
  await expect(page).toHaveURL(/\/setup$/);
  await page.getByLabel('Username').fill('admin');
  await page.getByLabel('Password', { exact: true }).fill('correct-horse-battery');
  await page.getByLabel('Repeat the password').fill('correct-horse-battery');
  await page.getByRole('button', { name: 'Create the administrator' }).click();
  await expect(page.getByRole('heading', { name: 'Servers' })).toBeVisible();
}

/** Signs in and waits for the Servers page to be live. */
export async function openDashboard(page: Page, stagely: { url: string }) {
  await signIn(page, stagely);
  await hydrated(page);
}

export const test = base.extend<{ stagely: Stagely }>({
  stagely: async ({}, use, testInfo) => {
    const stagely = await Stagely.start('local');
    await use(stagely);
    if (testInfo.status !== testInfo.expectedStatus) {
      await testInfo.attach('stagely logs', { body: stagely.logs(), contentType: 'text/plain' });
    }
    await stagely.stop();
  },
});

export { expect };
