// The official SMART JS client (fhirclient) completes a standalone launch against Bluegate in headless
// Chromium: the app pages are served at http://localhost:47999/ by request interception, the member signs in
// and consents on Bluegate's real pages. Inputs from the environment (set by tests/browser.rs); prints one
// JSON line.
import { chromium } from 'playwright-core';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const clientJs = readFileSync(require.resolve('fhirclient/build/fhir-client.js'));
const iss = process.env.BG_ISS;
const clientId = process.env.BG_CLIENT_ID;
const scope = process.env.BG_SCOPE;

const launchPage = `<!doctype html><title>launch</title><script src="/fhir-client.js"></script>
<script>FHIR.oauth2.authorize({ clientId: ${JSON.stringify(clientId)}, scope: ${JSON.stringify(scope)},
  redirectUri: "http://localhost:47999/index.html", iss: ${JSON.stringify(iss)} })
  .catch(function (e) { document.title = "error"; window.__result = { error: String(e) }; });</script>`;
const indexPage = `<!doctype html><title>waiting</title><script src="/fhir-client.js"></script>
<script>FHIR.oauth2.ready().then(function (c) {
  // The app then reads its patient and the patient's claims from the FHIR API (CORS, bearer token).
  return Promise.all([c.patient.read(), c.request("ExplanationOfBenefit", { flat: true })])
    .then(function (r) {
      window.__result = { patient: c.patient.id, scope: c.state.tokenResponse.scope,
        hasToken: !!c.state.tokenResponse.access_token, hasIdToken: !!c.state.tokenResponse.id_token,
        user: c.user.fhirUser || null, patientResource: r[0].resourceType + "/" + r[0].id,
        eobs: r[1].map(function (e) { return e.id; }) };
      document.title = "ready";
    });
}).catch(function (e) { window.__result = { error: String(e) }; document.title = "error"; });</script>`;

const browser = await chromium.launch({
  executablePath: process.env.BG_CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
         '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic',
         // The app page is served by request interception, so Chromium cannot tell it lives on loopback
         // too; Local Network Access would then refuse its calls to Bluegate on localhost.
         '--disable-features=LocalNetworkAccessChecks'],
});
let result = {};
let page = null;
try {
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  page = await context.newPage();
  const notes = [];
  result.notes = notes;
  page.on('requestfailed', (r) => notes.push(`${r.method()} ${r.url()} ${r.failure() && r.failure().errorText}`));
  page.on('console', (m) => notes.push(`console ${m.type()}: ${m.text()}`.slice(0, 300)));
  await page.route('http://localhost:47999/**', async (route) => {
    const url = new URL(route.request().url());
    if (url.pathname === '/fhir-client.js') {
      await route.fulfill({ status: 200, contentType: 'application/javascript', body: clientJs });
    } else if (url.pathname === '/launch.html') {
      await route.fulfill({ status: 200, contentType: 'text/html', body: launchPage });
    } else {
      await route.fulfill({ status: 200, contentType: 'text/html', body: indexPage });
    }
  });
  await page.goto('http://localhost:47999/launch.html');
  await page.waitForSelector('input[name=username]', { timeout: 20000 });
  await page.getByLabel(/user/i).fill(process.env.BG_USERNAME);
  await page.getByLabel(/password/i).fill(process.env.BG_PASSWORD);
  await page.locator('form button[type=submit], form input[type=submit]').first().click();
  await page.waitForSelector('input[name=scope]', { timeout: 20000 });
  await page.locator('button[name=decision][value=allow], input[name=decision][value=allow]').click();
  await page.waitForFunction(() => window.__result !== undefined, null, { timeout: 20000 });
  result = { ...(await page.evaluate(() => window.__result)), notes };
} catch (e) {
  result.error = String(e && e.stack || e);
  try { result.url = page.url(); result.page = await page.evaluate(() => window.__result); } catch {}
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
