// Drives a standalone launch through Bluegate's real pages in headless Chromium:
// sign in, untick a scope, allow, and observe the redirect back to the app. Then checks that the pages
// cannot be framed. Inputs come from the environment (set by tests/browser.rs); prints one JSON line.
import { chromium } from 'playwright-core';

const authorizeUrl = process.env.BG_AUTHORIZE_URL;
const redirectPrefix = process.env.BG_REDIRECT_PREFIX;
const username = process.env.BG_USERNAME;
const password = process.env.BG_PASSWORD;
const untick = process.env.BG_UNTICK;
const screenshot = process.env.BG_SCREENSHOT || '';

const browser = await chromium.launch({
  executablePath: process.env.BG_CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
         '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'],
});
const result = {};
let page = null;
try {
  // The test CA is not in the system store; the test trusts it for this browser context only.
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  page = await context.newPage();
  let redirected = null;
  await page.route(redirectPrefix + '**', async (route) => {
    redirected = route.request().url();
    await route.fulfill({ status: 200, contentType: 'text/html', body: '<p>back in the app</p>' });
  });
  await page.goto(authorizeUrl);
  result.loginTitle = await page.title();
  await page.getByLabel(/user/i).fill(username);
  await page.getByLabel(/password/i).fill(password);
  await page.locator('form button[type=submit], form input[type=submit]').first().click();
  await page.waitForSelector('input[name=scope]');
  if (screenshot) await page.screenshot({ path: screenshot, fullPage: true });
  result.scopes = await page.$$eval('input[name=scope]', (els) => els.map((e) => ({ value: e.value, checked: e.checked })));
  if (untick) await page.locator(`input[name=scope][value="${untick}"]`).uncheck();
  await page.locator('button[name=decision][value=allow], input[name=decision][value=allow]').click();
  await page.waitForURL(redirectPrefix + '**');
  result.redirect = redirected || page.url();

  // Framing: a hostile page embeds the authorization page; the frame must stay empty.
  const evil = await context.newPage();
  await evil.setContent(`<iframe id="f" src="${authorizeUrl}" width="600" height="400"></iframe>`);
  await evil.waitForTimeout(1500);
  const frame = evil.frames().find((f) => f !== evil.mainFrame());
  let framedForm = false;
  if (frame) {
    try { framedForm = (await frame.$('input[name=username]')) !== null; } catch { framedForm = false; }
  }
  result.framedForm = framedForm;
} catch (e) {
  result.error = String(e && e.stack || e);
  try { result.html = (await page.content()).slice(0, 3000); result.url = page.url(); } catch {}
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
