// Time to interactive of dashboard pages in Debian's Chromium, signed in, with a cold cache (a
// new browser context per load) and a warm one (the same context loading the page again). The
// clock is the page's own: from the navigation's start (performance.timeOrigin) to the moment
// `<html data-hydrated="true">` is set, which `app::hydrate` does when hydration has ended; a
// MutationObserver installed before the page's scripts records it. Also printed: when the HTML
// had fully arrived (responseEnd) and DOMContentLoaded. Medians of RUNS loads each.
// Run by scripts/bench-pages.sh; prints a Markdown table.
//
//   node scripts/bench-pages-tti.mjs URL COOKIE_NAME=VALUE RUNS NAME=PATH...

import { chromium } from 'playwright';

const [url, cookie, runsArg, ...pages] = process.argv.slice(2);
if (!url || !cookie || !runsArg || pages.length === 0) {
  console.error('usage: node scripts/bench-pages-tti.mjs URL COOKIE_NAME=VALUE RUNS NAME=PATH...');
  process.exit(2);
}
const runs = Number(runsArg);
const [cookieName, ...rest] = cookie.split('=');
const cookies = [{ name: cookieName, value: rest.join('='), url }];

// Runs before the page's own scripts, when the document may not have its <html> yet: so it
// watches the whole document for the attribute.
function markHydration() {
  new MutationObserver((_, observer) => {
    if (document.documentElement?.dataset.hydrated === 'true') {
      window.__hydratedAt = performance.now();
      observer.disconnect();
    }
  }).observe(document, { attributes: true, subtree: true, attributeFilter: ['data-hydrated'] });
}

/** Loads (or reloads) the page and reads its timings, in ms from the navigation's start. */
async function timings(page, go) {
  await go();
  await page.locator('[data-hydrated="true"]').waitFor({ state: 'attached', timeout: 60_000 });
  return page.evaluate(() => {
    const [nav] = performance.getEntriesByType('navigation');
    return {
      html: nav.responseEnd,
      dcl: nav.domContentLoadedEventEnd,
      interactive: window.__hydratedAt,
    };
  });
}

const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor((sorted.length - 1) / 2)];
};
const ms = (value) => `${Math.round(value)} ms`;

const browser = await chromium.launch({ executablePath: '/usr/bin/chromium' });
const rows = [];
for (const spec of pages) {
  const [name, path] = spec.split('=');
  const cold = [];
  const warm = [];
  for (let run = 0; run < runs; run++) {
    const context = await browser.newContext();
    await context.addCookies(cookies);
    await context.addInitScript(markHydration);
    const page = await context.newPage();
    cold.push(await timings(page, () => page.goto(url + path)));
    await page.waitForLoadState('networkidle');
    warm.push(await timings(page, () => page.reload()));
    await context.close();
  }
  for (const [cache, list] of [['cold', cold], ['warm', warm]]) {
    rows.push(
      `| ${name} | ${cache} | ${ms(median(list.map((t) => t.html)))} | ` +
        `${ms(median(list.map((t) => t.dcl)))} | ${ms(median(list.map((t) => t.interactive)))} | ` +
        `${ms(Math.max(...list.map((t) => t.interactive)))} |`,
    );
  }
}
await browser.close();

console.log(`| page | cache | HTML received (median) | DOMContentLoaded (median) | interactive (median of ${runs}) | interactive (slowest) |`);
console.log('| --- | --- | --- | --- | --- | --- |');
for (const line of rows) console.log(line);
