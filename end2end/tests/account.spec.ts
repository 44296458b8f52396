// The Account page: a person sees their sessions (this one marked), revokes another browser's
// session (that browser is signed out) and then their own (signed out here too); and the
// sign-in form, after too many wrong passwords, says so instead of trying the password.

import { expect, Page } from '@playwright/test';
import { hydrated, openDashboard, test } from './stagely';

async function signInWithPassword(page: Page, url: string, password: string) {
  await page.goto(`${url}/login`);
  await page.getByLabel('Username').fill('admin');
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Sign in' }).click();
}

test('sessions are listed and revoked, and revoking this one signs out', async ({ page, browser, stagely }) => {
  await openDashboard(page, stagely);
  const laptop = await browser.newContext();
  const other = await laptop.newPage();
  await signInWithPassword(other, stagely.url, 'correct-horse-battery');
  await expect(other.getByRole('heading', { name: 'Servers' })).toBeVisible();

  await page.getByRole('link', { name: 'Account', exact: true }).click();
  await expect(page.getByRole('heading', { name: 'Sessions', level: 1 })).toBeVisible();
  await hydrated(page);
  const rows = page.locator('table.sessions tbody tr');
  await expect(rows).toHaveCount(2);
  await expect(rows.filter({ hasText: 'this session' })).toHaveCount(1);
  // No secret on the page: the other browser's cookie value is nowhere in it.
  const cookie = (await laptop.cookies()).find((c) => c.name === 'stagely_session');
  expect(cookie).toBeTruthy();
  expect(await page.content()).not.toContain(cookie!.value);

  // Revoke the other browser's session: it is signed out.
  await rows.filter({ hasNotText: 'this session' }).getByRole('button', { name: 'Revoke' }).click();
  await expect(rows).toHaveCount(1);
  await other.reload();
  await expect(other).toHaveURL(/\/login$/);

  // Revoke this one: back to the sign-in page.
  await rows.getByRole('button', { name: 'Revoke' }).click();
  await expect(page).toHaveURL(/\/login$/);
  await page.goto(stagely.url);
  await expect(page).toHaveURL(/\/login$/);
  await laptop.close();
});

test('too many wrong passwords get a clear message, even for the right one', async ({ page, stagely }) => {
  await openDashboard(page, stagely);
  await page.context().clearCookies();
  for (let attempt = 0; attempt < 6; attempt++) {
    await signInWithPassword(page, stagely.url, 'wrong-password');
    await expect(page.getByRole('alert')).toHaveText('Wrong username or password.');
  }
  await signInWithPassword(page, stagely.url, 'correct-horse-battery');
  await expect(page.getByRole('heading', { name: 'Too many sign-in attempts' })).toBeVisible();
  await expect(page.getByText(/Try again in \d+ seconds\./)).toBeVisible();
});
