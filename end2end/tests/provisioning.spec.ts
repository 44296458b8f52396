// Adding a server from the dashboard: the one-line command, run on a "new host" (a busybox
// container on the host network, its own root file system), installs the static agent, which
// registers itself and shows up on the Servers page that was open all along.

import { test, expect, openDashboard } from './stagely';
import { ensureImage, IMAGE } from './project';
import { execFileSync } from 'node:child_process';

test('a new server added with the one-line command appears on the open Servers page', async ({ page, stagely }) => {
  ensureImage();
  await openDashboard(page, stagely);
  let navigations = 0;
  page.on('framenavigated', () => navigations++);

  await page.getByLabel('Name (optional)').fill('edge-e2e');
  await page.getByRole('button', { name: 'Add server', exact: true }).click();
  const command = (await page.getByTestId('join-command').textContent()) ?? '';
  // The join token goes in the environment of `sh`, never in an argument list.
  expect(command).toMatch(/^curl -fsSL http:\/\/127\.0\.0\.1:\d+\/install\.sh \| STAGELY_JOIN_TOKEN=stj_[A-Za-z0-9_-]+ sh$/);
  // The cloud-init file offered for download runs the same installer, the same token in a
  // root-only file rather than on the command line of the shell cloud-init starts.
  const href = (await page.getByRole('link', { name: 'cloud-init.yaml' }).getAttribute('href')) ?? '';
  const cloudInit = decodeURIComponent(href.slice(href.indexOf(',') + 1));
  expect(cloudInit).toMatch(/^#cloud-config\n/);
  const token = command.match(/STAGELY_JOIN_TOKEN=(\S+)/)?.[1] ?? '';
  // Every value is a double-quoted YAML string (a bare 0600 would be read as a number).
  expect(cloudInit).toContain(`content: "${token}"`);
  expect(cloudInit).toContain('permissions: "0600"');
  expect(cloudInit).toContain(command.split(' | ')[0] + ' | STAGELY_JOIN_TOKEN_FILE=/run/stagely-join-token sh');

  // busybox has wget, not curl; the script works with either.
  const onHost = `${command.replace('curl -fsSL', 'wget -qO-')} && set -a && . /etc/stagely/agent.env && set +a && exec stagely-agent`;
  const host = execFileSync('docker', ['run', '-d', '--network', 'host', IMAGE, 'sh', '-c', onHost], { encoding: 'utf8' }).trim();
  try {
    const row = page.locator('table.servers tr', { hasText: 'edge-e2e' });
    await expect(row.locator('.status')).toHaveText('Connected', { timeout: 30_000 });
    expect(navigations).toBe(0);
    await page.screenshot({ path: test.info().outputPath('new-server.png'), fullPage: true });
  } finally {
    const logs = execFileSync('docker', ['logs', host], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    await test.info().attach('the new host', { body: logs, contentType: 'text/plain' });
    execFileSync('docker', ['rm', '-f', host], { stdio: 'ignore' });
  }
});
