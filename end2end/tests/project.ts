// A compose project on this host for the dashboard tests: two services on a local busybox
// image (no image can be pulled), and the helpers a person's clicks boil down to.

import { Page, expect } from '@playwright/test';
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const IMAGE = 'stagely-test/busybox:latest';

/** Builds the busybox image once per machine (the cargo tests use the same one). */
export function ensureImage() {
  try {
    execFileSync('docker', ['image', 'inspect', IMAGE], { stdio: 'ignore' });
    return;
  } catch {}
  const context = mkdtempSync(join(tmpdir(), 'stagely-image-'));
  const busybox = ['/bin/busybox', '/usr/bin/busybox'].find(existsSync);
  if (!busybox) throw new Error('busybox is missing: install Debian busybox-static');
  copyFileSync(busybox, join(context, 'busybox'));
  writeFileSync(join(context, 'Dockerfile'), 'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\n');
  execFileSync('docker', ['build', '-q', '-t', IMAGE, context], { stdio: 'ignore' });
}

export class HostProject {
  readonly name = `e2e${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;
  readonly dir: string;

  /** `web` prints a coloured line every half second and echoes its secret (the agent must
   * redact it); `worker` just waits. `extra` adds services (compose YAML, indented by two). */
  constructor(parent: string, extra = '') {
    this.dir = join(parent, this.name);
    mkdirSync(this.dir);
    writeFileSync(
      join(this.dir, 'compose.yaml'),
      `services:
  web:
    image: ${IMAGE}
    command: ["sh", "-c", "echo \\"web starting with token $$SHARED_TOKEN\\"; i=0; while true; do i=$$((i+1)); printf '\\\\033[32mtick %s\\\\033[0m\\\\n' $$i; sleep 0.5; done"]
  worker:
    image: ${IMAGE}
    command: ["sh", "-c", "echo worker up; exec sleep 3600"]
${extra}`,
    );
  }

  /** The ids of the project's containers, running or not. */
  containers(): string[] {
    const ids = execFileSync('docker', ['ps', '-aq', '--filter', `label=com.docker.compose.project=${this.name}`], { encoding: 'utf8' }).trim();
    return ids ? ids.split('\n') : [];
  }

  /** The environment of a service's container, as Docker has it. */
  env(service: string): string[] {
    const id = execFileSync('docker', ['ps', '-q', '--filter', `label=com.docker.compose.project=${this.name}`, '--filter', `label=com.docker.compose.service=${service}`], { encoding: 'utf8' }).trim();
    const env = execFileSync('docker', ['inspect', '--format', '{{json .Config.Env}}', id], { encoding: 'utf8' });
    return JSON.parse(env) as string[];
  }

  remove() {
    const ids = execFileSync('docker', ['ps', '-aq', '--filter', `label=com.docker.compose.project=${this.name}`], { encoding: 'utf8' }).trim();
    if (ids) execFileSync('docker', ['rm', '-f', ...ids.split('\n')], { stdio: 'ignore' });
    try {
      execFileSync('docker', ['network', 'rm', `${this.name}_default`], { stdio: 'ignore' });
    } catch {}
  }
}

/** Goes to the Projects page by its link and waits until it shows: the page being left may
 * have fields of the same names (the Notifications page has a "Name" too), which a form filled
 * at once would reach instead. */
export async function openProjects(page: Page) {
  await page.getByRole('link', { name: 'Projects', exact: true }).click();
  await expect(page.getByRole('heading', { name: 'Add a project', level: 2 })).toBeVisible();
}

/** Adds the project through the Projects page and lands on its page. */
export async function addProject(page: Page, project: HostProject, agentName: string) {
  await openProjects(page);
  await page.getByLabel('Name', { exact: true }).fill(project.name);
  await page.getByRole('combobox', { name: 'Server' }).selectOption({ label: agentName });
  await page.getByLabel('Directory on the server').fill(project.dir);
  await page.getByRole('button', { name: 'Add project' }).click();
  await expect(page.getByRole('heading', { name: project.name, level: 1 })).toBeVisible();
}

/** Adds a secret with the form on the Project page; `scope` is `Global` or a service. */
export async function addSecret(page: Page, key: string, value: string, scope: string) {
  await page.getByLabel('Key').fill(key);
  await page.getByLabel('Value').fill(value);
  const option = scope === 'Global' ? 'Global (every service)' : `Service ${scope}`;
  await page.getByRole('combobox', { name: 'Scope' }).selectOption({ label: option });
  await page.getByRole('button', { name: 'Add secret' }).click();
  await expect(page.locator(`tr[data-secret-key="${key}"]`)).toBeVisible();
}

/** Clicks Deploy and waits for the deployment it started to succeed. */
export async function deploy(page: Page) {
  await page.getByRole('button', { name: 'Deploy', exact: true }).click();
  await expect(page.locator('.deploy-live .badge')).toHaveText('Succeeded', { timeout: 60_000 });
}

/** Clicks Deploy and follows it live, as a person watching the page: the agent's steps name the
 * `web` container, its log lines appear and new ones keep coming. Returns both panels. */
export async function deployAndWatch(page: Page, project: HostProject) {
  await page.getByRole('button', { name: 'Deploy', exact: true }).click();
  const steps = page.locator('.deploy-live .deploy-log');
  await expect(steps).toContainText(`${project.name}-web-1`);
  const logs = page.getByTestId('log-panel');
  await expect(logs).toContainText('web starting with token');
  const ticks = await logs.locator('.line', { hasText: 'tick' }).count();
  await expect.poll(() => logs.locator('.line', { hasText: 'tick' }).count()).toBeGreaterThan(ticks);
  return { steps, logs };
}
