// The dashboard under its Content-Security-Policy, as a browser enforces it: every page still
// hydrates and the live log feed still arrives with no violation reported, and a page of
// another origin cannot frame the dashboard.

import { createServer, Server } from 'node:http';
import { Page } from '@playwright/test';
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

/** Records every CSP violation: what Chromium prints on the console, and the
 * `securitypolicyviolation` events of every document the page loads (read with `reported`). */
async function watchViolations(page: Page): Promise<{ console: string[]; reported: () => Promise<string[]> }> {
  const console: string[] = [];
  page.on('console', (message) => {
    const text = message.text();
    if (/Content Security Policy|Content-Security-Policy|Refused to (execute|load|apply|connect|frame)/i.test(text)) console.push(text);
  });
  // Injected by the browser itself, ahead of the page's scripts: not subject to the policy.
  await page.addInitScript(() => {
    const seen: string[] = [];
    (window as unknown as { cspViolations: string[] }).cspViolations = seen;
    document.addEventListener('securitypolicyviolation', (event) => {
      seen.push(`${event.effectiveDirective} blocked ${event.blockedURI || 'inline'} (${event.sourceFile}:${event.lineNumber})`);
    });
  });
  const reported = () => page.evaluate(() => (window as unknown as { cspViolations?: string[] }).cspViolations ?? []);
  return { console, reported };
}

test('every page hydrates under the policy and the live log feed still arrives, with no violation', async ({ page, stagely, project }) => {
  const violations = await watchViolations(page);
  const first = await page.request.get(`${stagely.url}/setup`);
  const csp = first.headers()['content-security-policy'] ?? '';
  expect(csp).toContain("script-src 'self' 'nonce-");
  expect(csp.split(';').find((directive) => directive.trim().startsWith('script-src'))).not.toContain("'unsafe-inline'");

  await openDashboard(page, stagely);
  await expect(page.locator('.whoami')).toContainText('admin');
  for (const [link, heading] of [
    ['Projects', 'Projects'],
    ['Notifications', 'Notifications'],
    ['Servers', 'Servers'],
  ]) {
    await page.getByRole('link', { name: link, exact: true }).click();
    await expect(page.getByRole('heading', { name: heading, level: 1 })).toBeVisible();
  }
  // A page loaded from the server (not routed in the browser) hydrates too.
  await expect(page).toHaveURL(`${stagely.url}/`);
  await page.reload();
  await hydrated(page);
  expect(await violations.reported()).toEqual([]);

  // The live feed (a WebSocket to /api/v1/events) still brings the log lines, coloured.
  await addProject(page, project, stagely.agentName);
  await page.reload();
  await hydrated(page);
  await page.getByRole('button', { name: 'Deploy', exact: true }).click();
  const logs = page.getByTestId('log-panel');
  await expect(logs).toContainText('web starting with token');
  const ticks = await logs.locator('.line', { hasText: 'tick' }).count();
  await expect.poll(() => logs.locator('.line', { hasText: 'tick' }).count()).toBeGreaterThan(ticks);
  await expect(logs.locator('.line', { hasText: 'tick' }).first().locator('span[style*="color"]')).toHaveCount(1);
  await expect(page.locator('.deploy-live .badge')).toHaveText('Succeeded', { timeout: 60_000 });
  await page.screenshot({ path: test.info().outputPath('live-logs-under-csp.png'), fullPage: true });

  expect(await violations.reported()).toEqual([]);
  expect(violations.console).toEqual([]);
});

test('a page of another origin cannot frame the dashboard', async ({ page, stagely }) => {
  const violations = await watchViolations(page);
  // The other site: a page on another port that frames Stagely's sign-in page.
  const framer: Server = createServer((_, response) => {
    response.writeHead(200, { 'Content-Type': 'text/html' });
    response.end(`<!DOCTYPE html><title>Elsewhere</title><h1>Elsewhere</h1><iframe id="stagely" src="${stagely.url}/setup" width="800" height="600"></iframe>`);
  });
  await new Promise<void>((done) => framer.listen(0, '127.0.0.1', done));
  const address = framer.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  try {
    // The same page opened directly shows the form: the framed one must not.
    await page.goto(`${stagely.url}/setup`);
    await expect(page.getByRole('button', { name: 'Create the administrator' })).toBeVisible();

    await page.goto(`http://127.0.0.1:${port}/`);
    await expect(page.getByRole('heading', { name: 'Elsewhere' })).toBeVisible();
    // Chromium says so once Stagely's answer has arrived and been refused.
    const refused = () => violations.console.some((text) => /frame-ancestors|X-Frame-Options|Refused to (display|frame)/i.test(text));
    await expect.poll(refused).toBe(true);
    const frame = page.frames().find((candidate) => candidate !== page.mainFrame());
    expect(frame).toBeTruthy();
    // The refused frame is left on the browser's error page, never Stagely's document.
    const shown = await frame!.evaluate(() => document.body?.innerText ?? '').catch(() => '');
    expect(shown).not.toContain('Create the administrator');
    expect(await frame!.locator('form[action="/auth/setup"]').count().catch(() => 0)).toBe(0);
    await page.screenshot({ path: test.info().outputPath('framed.png'), fullPage: true });
  } finally {
    framer.close();
  }
});
