// One browser session against a running setup (started by run.sh): Debian's chromium, driven by
// playwright-core, signs in on the provider's own pages, uses the example SPA, waits out the
// access token, sees the transparent refresh, signs out, and checks that no cookie is left.
//
// Configuration (environment):
//   SPA_URL       the SPA, e.g. http://localhost:18080/
//   ISSUER        the provider's issuer (its pages are recognised by this origin)
//   PROVIDER      "oidc-provider" (tests/oidc: login + consent pages, logout confirmation)
//                 or "dev" (the demo's development provider: a user-name form, no confirmation)
//   LOGIN         what to type as the user name
//   EXPECT_NAME   the name the SPA must show
//   SHOTS         directory for screenshots; SHOT_PREFIX names them
//   DOCS_SHOT     optional: where to copy the "token refreshed" screenshot (docs/demo.png)
//   CHROMIUM      browser executable (default /usr/bin/chromium)

import { chromium } from 'playwright-core';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { twoTabsSignIn } from './tabs.mjs';
import { clientModule } from './client.mjs';
import { userInfoDoesNotLoop } from './userinfo.mjs';

const env = (name, fallback) => {
  const v = process.env[name] ?? fallback;
  if (v === undefined) throw new Error(`${name} is not set`);
  return v;
};
const SPA_URL = env('SPA_URL');
const SPA_ORIGIN = new URL(SPA_URL).origin;
const SPA_HOST = new URL(SPA_URL).hostname;
const ISSUER_ORIGIN = new URL(env('ISSUER')).origin;
const PROVIDER = env('PROVIDER');
const LOGIN = env('LOGIN');
const EXPECT_NAME = env('EXPECT_NAME');
const SHOTS = env('SHOTS');
const PREFIX = env('SHOT_PREFIX', PROVIDER);
const DOCS_SHOT = process.env.DOCS_SHOT;
const WAIT = 20_000;

const started = Date.now();
let stepNo = 0;
const log = (msg) => console.log(`[${PREFIX} ${((Date.now() - started) / 1000).toFixed(1)}s] ${msg}`);
const step = (msg) => log(`step ${++stepNo}: ${msg}`);
function check(condition, message) {
  if (!condition) throw new Error(`check failed: ${message}`);
  log(`  ok: ${message}`);
}

mkdirSync(SHOTS, { recursive: true });
const profile = mkdtempSync(join(tmpdir(), 'th-e2e-profile-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: env('CHROMIUM', '/usr/bin/chromium'),
  headless: true,
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
  viewport: { width: 1100, height: 820 },
  deviceScaleFactor: 1,
  timeout: 30_000,
});
context.setDefaultTimeout(WAIT);

let shot = 0;
const screenshot = async (page, name) => {
  const path = join(SHOTS, `${PREFIX}-${String(++shot).padStart(2, '0')}-${name}.png`);
  await page.screenshot({ path, fullPage: true });
  log(`  screenshot ${path}`);
  return path;
};

const page = context.pages()[0] ?? (await context.newPage());
// Errors logged while the SPA is shown (the providers' own pages are not ours to judge: the
// test provider's pages load a web font that cannot be fetched here).
const consoleErrors = [];
const fromSpa = (url) => {
  try {
    return new URL(url).origin === SPA_ORIGIN;
  } catch {
    return true;
  }
};
page.on('console', (m) => {
  if (m.type() !== 'error' || !fromSpa(page.url())) return;
  const where = m.location()?.url;
  if (where && !fromSpa(where)) return;
  consoleErrors.push(m.text());
});
page.on('pageerror', (e) => consoleErrors.push(String(e)));

const spaCookies = async () => (await context.cookies(SPA_URL)).filter((c) => c.name.startsWith('th-'));
const apiResult = async () => JSON.parse(await page.textContent('#api-result'));
const onSpa = (url) => url.origin === SPA_ORIGIN;
const onProvider = (url) => url.origin === ISSUER_ORIGIN;

try {
  step('open the SPA: signed out');
  await page.goto(SPA_URL);
  await page.waitForSelector('#signed-out', { state: 'visible' });
  check((await page.textContent('#status')) === 'signed out', 'status pill says "signed out"');
  await screenshot(page, 'signed-out');

  step('call the API while signed out: a readable error');
  await page.click('#api-get');
  await page.waitForSelector('#error', { state: 'visible' });
  const errorText = await page.textContent('#error-message');
  check(errorText.startsWith('unauthorized_request:'), `error shows code and message ("${errorText.slice(0, 60)}…")`);
  await screenshot(page, 'error-when-signed-out');
  await page.click('#error-dismiss');

  step(`sign in on the provider's page (${PROVIDER})`);
  await page.click('#sign-in');
  await page.waitForURL(onProvider);
  if (PROVIDER === 'oidc-provider') {
    await page.waitForSelector('input[name="login"]');
    await page.fill('input[name="login"]', LOGIN);
    await page.fill('input[name="password"]', 'any password');
    await screenshot(page, 'provider-login');
    await page.click('button[type="submit"]');
    await page.waitForSelector('input[name="prompt"][value="consent"]', { state: 'attached' });
    await screenshot(page, 'provider-consent');
    await page.click('button[type="submit"]');
  } else {
    await page.waitForSelector('input[name="username"]');
    check((await page.textContent('.dev')).includes('for development only'), 'the dev provider says "for development only"');
    await page.fill('input[name="username"]', LOGIN);
    await screenshot(page, 'provider-login');
    await page.click('button[value="login"]');
  }

  step('back on the SPA: signed in');
  await page.waitForURL(onSpa);
  await page.waitForSelector('#signed-in', { state: 'visible' });
  await page.waitForFunction(
    (name) => document.getElementById('user-name')?.textContent === name, EXPECT_NAME);
  check(true, `the SPA shows the user's name "${EXPECT_NAME}" (${await page.textContent('#user-source')})`);
  check(new URL(page.url()).search === '', `code and state are gone from the address bar (${page.url()})`);
  check((await page.evaluate(() => document.cookie)) === '', 'document.cookie is empty: JavaScript sees no cookie');
  const sessionCookies = await spaCookies();
  const names = sessionCookies.map((c) => c.name).sort();
  check(['th-at', 'th-csrf'].every((n) => names.includes(n)), `session cookies set (${[...new Set(names)].join(', ')})`);
  check(sessionCookies.every((c) => c.httpOnly && c.sameSite === 'Strict'), 'every th-* cookie is HttpOnly and SameSite=Strict');
  // EXPECT_CHUNKS: cookies whose tokens are too large for one cookie (run 1's 12 KB ID tokens
  // and 6 KB refresh tokens) are split into `<name>`, `<name>.1`, …; the claims shown below come
  // from the reassembled ID-token cookie.
  for (const base of (process.env.EXPECT_CHUNKS || '').split(' ').filter(Boolean)) {
    // Every path: the ID-token and refresh-token cookies are scoped to the agent's endpoints.
    const chunks = (await context.cookies()).filter((c) => [SPA_HOST, 'localhost'].includes(c.domain)
      && (c.name === base || c.name.startsWith(`${base}.`)));
    const biggest = Math.max(...chunks.map((c) => c.name.length + c.value.length));
    check(chunks.some((c) => c.name === `${base}.1`) && biggest <= 4096,
      `${base} is split into chunks of at most 4096 bytes (${[...new Set(chunks.map((c) => c.name))].join(', ')})`);
  }
  const claims = JSON.parse(await page.textContent('#claims'));
  check(typeof claims.sub === 'string' && claims.iss === new URL(env('ISSUER')).href.replace(/\/$/, ''), `claims shown (sub ${claims.sub}, iss ${claims.iss})`);
  await screenshot(page, 'signed-in');

  step('call the example API through the proxy (GET, then POST with the CSRF header)');
  await page.click('#api-get');
  await page.waitForSelector('#api-result', { state: 'visible' });
  const first = await apiResult();
  check(first.sub === claims.sub && first.method === 'GET', `GET /api/data answered for sub ${first.sub}`);
  const jti1 = first.token.jti;
  check(typeof jti1 === 'string' && jti1.length > 0, `the API reports the token's jti ${jti1}`);
  await page.click('#api-post');
  await page.waitForFunction(() => document.getElementById('api-result').textContent.includes('"method": "POST"'));
  const second = await apiResult();
  check(second.notes.length === 1, 'POST /api/data stored a note (the CSRF header was accepted)');
  check(second.token.jti === jti1, 'the second call used the same access token');
  check((await page.textContent('#refresh-note')).startsWith('Same access token'), 'the SPA says the token did not change');
  await screenshot(page, 'api-call');

  const waitSeconds = Math.max(0, second.token.exp - Math.floor(Date.now() / 1000)) + 1;
  step(`wait ${waitSeconds} s, past the access token's expiry (exp ${second.token.exp})`);
  await page.waitForTimeout(waitSeconds * 1000);
  const atBefore = (await spaCookies()).find((c) => c.name === 'th-at')?.value;

  step('call the API again: token-handler refreshes transparently');
  await page.click('#api-get');
  await page.waitForFunction(
    () => document.getElementById('refresh-note').textContent.startsWith('Token refreshed'));
  const third = await apiResult();
  check(third.token.jti !== jti1, `a new access token reached the API (jti ${third.token.jti})`);
  check(third.token.iat > second.token.iat && third.token.exp > Date.now() / 1000, 'it is newer and not expired');
  check(third.sub === claims.sub && third.notes.length === 1, 'same user, same data');
  const atAfter = (await spaCookies()).find((c) => c.name === 'th-at')?.value;
  check(atAfter && atAfter !== atBefore, 'the proxy set a new th-at cookie on that response');
  const refreshedShot = await screenshot(page, 'token-refreshed');
  if (DOCS_SHOT) {
    copyFileSync(refreshedShot, DOCS_SHOT);
    log(`  copied to ${DOCS_SHOT}`);
  }

  await userInfoDoesNotLoop({ page, step, check, expectName: EXPECT_NAME });

  step('sign out');
  await page.click('#sign-out');
  if (PROVIDER === 'oidc-provider') {
    await page.waitForURL(onProvider);
    const yes = page.getByRole('button', { name: 'Yes, sign me out' });
    await yes.waitFor();
    await screenshot(page, 'provider-logout');
    await yes.click();
  }
  await page.waitForURL(onSpa);
  await page.waitForSelector('#signed-out', { state: 'visible' });
  const left = (await context.cookies()).filter((c) => ['localhost', new URL(SPA_URL).hostname].includes(c.domain));
  check(left.length === 0, `no cookie is left for ${SPA_ORIGIN} (${left.map((c) => `${c.name}@${c.path}`).join(', ') || 'none'})`);
  check(new URL(page.url()).search === '', `the address bar is clean (${page.url()})`);
  const after = await page.evaluate(async () => {
    const r = await fetch('/api/data', { credentials: 'include' });
    return { status: r.status, body: await r.json() };
  });
  check(after.status === 401 && after.body.code === 'unauthorized_request', 'the API proxy now answers 401 unauthorized_request');
  await screenshot(page, 'signed-out-again');

  // 401s are expected: the signed-out API call, userInfo refused by a provider, the final check.
  const unexpected = consoleErrors.filter((e) => !/status of 401/.test(e));
  check(unexpected.length === 0, `no unexpected console errors${unexpected.length ? `: ${unexpected.join(' | ')}` : ''}`);
  if (PROVIDER === 'oidc-provider') {
    step('two tabs sign in at the same time (tabs.mjs)');
    await twoTabsSignIn({ context, spaUrl: SPA_URL, issuer: env('ISSUER'), login: LOGIN, expectName: EXPECT_NAME, log, screenshot });
    step('the SPA client module: refresh and retry, tabs in step, session expiry (client.mjs)');
    await clientModule({ context, spaUrl: SPA_URL, issuer: env('ISSUER'), login: LOGIN, expectName: EXPECT_NAME, log, screenshot });
  }
  log(`PASSED in ${((Date.now() - started) / 1000).toFixed(1)} s`);
} catch (e) {
  log(`FAILED: ${e.message}`);
  try {
    await screenshot(page, 'failure');
    log(`  page URL ${page.url()}`);
    log(`  page text: ${(await page.textContent('body'))?.replace(/\s+/g, ' ').slice(0, 600)}`);
  } catch { /* the page may be gone */ }
  if (consoleErrors.length) log(`  console: ${consoleErrors.join(' | ')}`);
  process.exitCode = 1;
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
