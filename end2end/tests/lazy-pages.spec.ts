// Each page's code is a separate WASM chunk fetched the first time the page is shown
// (`cargo leptos build --split`). A fetch that fails (a network blip, a Wi-Fi change, the server
// restarting) must neither kill the dashboard nor leave a blank page.

import { Page } from '@playwright/test';
import { test, expect, hydrated, openDashboard } from './stagely';

/** The split-off code of pages, and the chunks they share. */
const PAGE_CODE = /\/pkg\/(split_|chunk_)[^/]*\.wasm$/;

/** Every uncaught error of the page (a Rust panic in WASM shows as `unreachable`), but the
 * refused fetches themselves: the chunk loader leaves the rejection of a fetch it no longer
 * waits for unhandled. */
function watchErrors(page: Page): string[] {
  const errors: string[] = [];
  page.on('pageerror', (error) => {
    if (error.message !== 'Failed to fetch') errors.push(error.message);
  });
  return errors;
}

test('a page whose code fails to arrive at first is fetched again and shown', async ({ page, stagely }) => {
  const errors = watchErrors(page);
  await openDashboard(page, stagely);
  let refused = 0;
  await page.route(PAGE_CODE, async (route) => {
    if (refused < 2) {
      refused += 1;
      await route.abort('internetdisconnected');
    } else {
      await route.continue();
    }
  });
  await page.getByRole('link', { name: 'Projects', exact: true }).click();
  await expect(page.getByRole('heading', { name: 'Projects', level: 1 })).toBeVisible();
  expect(refused).toBe(2);
  expect(errors).toEqual([]);
});

test('a page whose code never arrives says so, and the rest of the dashboard keeps working', async ({ page, stagely }) => {
  const errors = watchErrors(page);
  await openDashboard(page, stagely);
  await page.route(PAGE_CODE, (route) => route.abort('internetdisconnected'));
  await page.getByRole('link', { name: 'Notifications', exact: true }).click();
  await expect(page.getByRole('heading', { name: 'This page could not be loaded' })).toBeVisible({ timeout: 20_000 });
  await expect(page.getByRole('link', { name: 'Reload' })).toBeVisible();

  // The Servers page's code arrived with the first page: it still works without the network.
  await page.getByRole('link', { name: 'Servers', exact: true }).click();
  await expect(page.getByRole('heading', { name: 'Servers', level: 1 })).toBeVisible();
  expect(errors).toEqual([]);

  // Back online, going to the page again fetches its code afresh.
  await page.unroute(PAGE_CODE);
  await page.getByRole('link', { name: 'Notifications', exact: true }).click();
  await expect(page.getByRole('heading', { name: 'Notifications', level: 1 })).toBeVisible();
  expect(errors).toEqual([]);
});

test('a page whose code fails to arrive while it hydrates is fetched again, and then works', async ({ page, stagely }) => {
  const errors = watchErrors(page);
  await openDashboard(page, stagely);
  let refused = 0;
  await page.route(PAGE_CODE, async (route) => {
    if (refused < 3) {
      refused += 1;
      await route.abort('internetdisconnected');
    } else {
      await route.continue();
    }
  });
  // Loaded from the server: the page's HTML is there, its code must come before it hydrates.
  await page.goto(`${stagely.url}/projects`);
  await hydrated(page);
  expect(refused).toBe(3);
  await page.getByRole('link', { name: 'Servers', exact: true }).click();
  await expect(page.getByRole('heading', { name: 'Servers', level: 1 })).toBeVisible();
  expect(errors).toEqual([]);
});
