// What a browser downloads to show each dashboard page for the first time, and how long until
// the page is interactive (hydrated), with a cold and a warm cache. Run by
// scripts/bench-first-load.sh against a release server; prints a Markdown table.
//
//   node scripts/bench-first-load.mjs URL SITE_ROOT

import { chromium } from 'playwright';
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';

const [url, siteRoot] = process.argv.slice(2);
if (!url || !siteRoot) {
  console.error('usage: node scripts/bench-first-load.mjs URL SITE_ROOT');
  process.exit(2);
}

const size = (path) => (existsSync(path) ? statSync(path).size : 0);

/** Loads `path` in `context`, returning the /pkg files it fetched and the time to hydration. */
async function load(context, path) {
  const page = await context.newPage();
  const files = new Set();
  page.on('request', (request) => {
    const { pathname } = new URL(request.url());
    if (pathname.startsWith('/pkg/')) files.add(pathname.slice('/pkg/'.length));
  });
  const started = Date.now();
  await page.goto(url + path);
  await page.locator('[data-hydrated="true"]').waitFor({ state: 'attached', timeout: 30_000 });
  const interactive = Date.now() - started;
  await page.waitForLoadState('networkidle');
  const measured = { files: [...files].sort(), interactive };
  const again = Date.now();
  await page.reload();
  await page.locator('[data-hydrated="true"]').waitFor({ state: 'attached', timeout: 30_000 });
  measured.warm = Date.now() - again;
  await page.close();
  return measured;
}

function row(name, { files, interactive, warm }) {
  const wasm = files.filter((file) => file.endsWith('.wasm'));
  const raw = files.reduce((sum, file) => sum + size(join(siteRoot, 'pkg', file)), 0);
  const brotli = files.reduce((sum, file) => sum + size(join(siteRoot, 'pkg', `${file}.br`)), 0);
  const wasmBrotli = wasm.reduce((sum, file) => sum + size(join(siteRoot, 'pkg', `${file}.br`)), 0);
  return `| ${name} | ${files.length} (${wasm.length} WASM) | ${raw.toLocaleString('en')} B | ${brotli.toLocaleString('en')} B | ${wasmBrotli.toLocaleString('en')} B | ${interactive} ms | ${warm} ms |`;
}

const browser = await chromium.launch({ executablePath: '/usr/bin/chromium' });
const rows = [];

// A new instance: the setup page, then the first administrator is created.
const setup = await browser.newContext();
rows.push(row('`/setup` (signed out, first visit)', await load(setup, '/setup')));
const page = await setup.newPage();
await page.goto(`${url}/setup`);
await page.locator('[data-hydrated="true"]').waitFor({ state: 'attached' });
await page.getByLabel('Username').fill('admin');
await page.getByLabel('Password', { exact: true }).fill('correct-horse-battery');
await page.getByLabel('Repeat the password').fill('correct-horse-battery');
await page.getByRole('button', { name: 'Create the administrator' }).click();
await page.getByRole('heading', { name: 'Servers' }).waitFor();
const signedIn = await setup.storageState();
await setup.close();

const signedOut = await browser.newContext();
rows.push(row('`/login` (signed out)', await load(signedOut, '/login')));
await signedOut.close();

for (const [name, path] of [
  ['`/` Servers', '/'],
  ['`/projects`', '/projects'],
  ['`/projects/:id`', '/projects/00000000-0000-0000-0000-000000000000'],
  ['`/notifications`', '/notifications'],
]) {
  // A fresh context per page: an empty cache, as on a person's first visit to that page.
  const context = await browser.newContext({ storageState: signedIn });
  rows.push(row(name, await load(context, path)));
  await context.close();
}
await browser.close();

console.log('| first page loaded | files from /pkg | raw | brotli (all /pkg files) | brotli (WASM only) | time to interactive, cold cache | warm cache (reload) |');
console.log('| --- | --- | --- | --- | --- | --- | --- |');
for (const line of rows) console.log(line);
