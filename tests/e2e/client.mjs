// The SPA client module (issue 18, item 5): examples/spa/token-handler-client.js, as the example
// SPA uses it, in two tabs of one browser against the real oidc-provider (run 1, 8 s access
// tokens):
//   1. a login in tab A signs tab B in too, without a reload (BroadcastChannel), and the
//      session-expiry warning reports the end GET /session tells;
//   2. a call after the access token expired goes through: client.fetch() gets 401 token_expired,
//      POSTs /refresh once and retries (the requests are watched with playwright);
//   3. signing out in tab B signs tab A out, without a reload;
//   4. an expired session reaches the app's handler: the session's cookies, copied before the
//      logout, are put back; token-handler revoked the refresh token at the logout, so the next
//      API call after the access token's expiry answers 401 session_expired, and the SPA's
//      onSessionExpired shows "Your session has ended".
//
// Called by browser-test.mjs (run 1) with a signed-out browser context; leaves it signed out.

const ACCESS_TOKEN_SECONDS = 8;

/**
 * @param {object} o
 * @param {import('playwright-core').BrowserContext} o.context
 * @param {string} o.spaUrl       the SPA, e.g. http://localhost:18080/
 * @param {string} o.issuer       the provider's issuer (its pages are recognised by this origin)
 * @param {string} o.login        the user name to type at the provider
 * @param {string} o.expectName   the name the SPA must show
 * @param {(msg: string) => void} o.log
 * @param {(page: any, name: string) => Promise<string>} o.screenshot
 */
export async function clientModule({ context, spaUrl, issuer, login, expectName, log, screenshot }) {
  const spaOrigin = new URL(spaUrl).origin;
  const issuerOrigin = new URL(issuer).origin;
  const host = new URL(spaUrl).hostname;
  const onSpa = (url) => url.origin === spaOrigin;
  const onProvider = (url) => url.origin === issuerOrigin;
  const check = (condition, message) => {
    if (!condition) throw new Error(`check failed (client module): ${message}`);
    log(`  ok (client module): ${message}`);
  };
  const spaCookies = async () =>
    (await context.cookies()).filter((c) => ['localhost', host].includes(c.domain));
  const note = async (page) => ({
    text: await page.textContent('#session-note'),
    kind: await page.getAttribute('#session-note', 'data-kind'),
  });
  const waitNote = (page, kind) => page.waitForFunction(
    (k) => {
      const n = document.getElementById('session-note');
      return n && !n.hidden && n.dataset.kind === k;
    }, kind, { timeout: 10_000 });
  const showsName = (page) => page.waitForFunction(
    (name) => document.getElementById('user-name')?.textContent === name, expectName);

  const a = await context.newPage();
  const b = await context.newPage();
  try {
    for (const page of [a, b]) {
      await page.goto(spaUrl);
      await page.waitForSelector('#signed-out', { state: 'visible' });
    }

    // 1. Sign in in A; B follows.
    await a.click('#sign-in');
    await a.waitForURL(onProvider);
    await a.fill('input[name="login"]', login);
    await a.fill('input[name="password"]', 'any password');
    await a.click('button[type="submit"]');
    const deadline = Date.now() + 20_000;
    while (!onSpa(new URL(a.url()))) {
      let consent = 0;
      try {
        consent = await a.locator('input[name="prompt"][value="consent"]').count();
      } catch { /* navigating */ }
      if (consent > 0) {
        await a.click('button[type="submit"]');
        await a.waitForURL(onSpa);
        break;
      }
      if (Date.now() > deadline) throw new Error(`the provider did not return to the SPA (${a.url()})`);
      await a.waitForTimeout(200);
    }
    await a.waitForSelector('#signed-in', { state: 'visible' });
    await showsName(a);
    check(new URL(a.url()).search === '', `handlePageLoad() finished the login and cleaned the URL (${a.url()})`);
    await b.waitForSelector('#signed-in', { state: 'visible', timeout: 10_000 });
    await showsName(b);
    await waitNote(b, 'other-tab');
    check(true, `tab B signed in without a reload: "${(await note(b)).text}"`);

    // Expiry warnings come from GET /session: with a warning period longer than the session
    // (the demo's idle_timeout is 1 h), the warning is due at once.
    const warning = await a.evaluate(async () => {
      const { createClient } = await import('/token-handler-client.js');
      return new Promise((resolve, reject) => {
        const client = createClient({
          channel: null,
          warnBeforeSeconds: 24 * 3600,
          onSessionWarning: (w) => { client.close(); resolve(w); },
        });
        client.session().catch(reject);
        setTimeout(() => reject(new Error('no session warning within 5 s')), 5000);
      });
    });
    check(warning.isLoggedIn && warning.secondsLeft > 0 && warning.secondsLeft <= 3600,
      `onSessionWarning reports the session's end from GET /session (${warning.secondsLeft} s left)`);

    // 2. A call after the access token's expiry: refresh once, retry, answered.
    log(`  waiting ${ACCESS_TOKEN_SECONDS + 2} s for the access token to expire`);
    await a.waitForTimeout((ACCESS_TOKEN_SECONDS + 2) * 1000);
    const seen = [];
    const onResponse = (r) => {
      const path = new URL(r.url()).pathname;
      if (path.startsWith('/oauth-agent/')) seen.push(`${r.request().method()} ${path} ${r.status()}`);
    };
    a.on('response', onResponse);
    let result;
    try {
      result = await a.evaluate(async () => {
        const { createClient } = await import('/token-handler-client.js');
        const client = createClient({ channel: null });
        const r = await client.fetch('/oauth-agent/userInfo');
        client.close();
        return { status: r.status, body: await r.json() };
      });
    } finally {
      a.off('response', onResponse);
    }
    check(result.status === 200 && typeof result.body.sub === 'string', `client.fetch('/oauth-agent/userInfo') after expiry answered 200 (sub ${result.body.sub})`);
    check(
      /^GET \/oauth-agent\/userInfo 401, POST \/oauth-agent\/refresh 20[04], GET \/oauth-agent\/userInfo 200$/.test(seen.join(', ')),
      `one refresh, one retry: ${seen.join(', ')}`,
    );
    // The refresh happened now: the access token in the cookies lives ACCESS_TOKEN_SECONDS more.
    const refreshedAt = Date.now();

    // 3. Sign out in B: A is signed out without a reload.
    const session = await spaCookies();
    check(session.some((c) => c.name === 'th-at'), `the session's cookies are copied (${session.length})`);
    await b.click('#sign-out');
    await b.waitForURL(onProvider);
    const yes = b.getByRole('button', { name: 'Yes, sign me out' });
    await yes.waitFor();
    await yes.click();
    await b.waitForURL(onSpa);
    await b.waitForSelector('#signed-out', { state: 'visible' });
    await a.waitForSelector('#signed-out', { state: 'visible', timeout: 10_000 });
    await waitNote(a, 'other-tab');
    check(true, `tab A signed out without a reload: "${(await note(a)).text}"`);
    check((await spaCookies()).length === 0, 'no cookie is left after the logout');
    await screenshot(a, 'client-a-signed-out-by-b');

    // 4. The old session's cookies are back, its refresh token revoked: once its access token
    // has expired, the API call's refresh fails and the app's handler is told.
    await context.addCookies(session);
    const wait = refreshedAt + (ACCESS_TOKEN_SECONDS + 2) * 1000 - Date.now();
    if (wait > 0) await a.waitForTimeout(wait);
    const answers = [];
    const onApi = (r) => {
      if (new URL(r.url()).pathname === '/api/data') answers.push(r.status());
    };
    a.on('response', onApi);
    try {
      await a.click('#api-get');
      await waitNote(a, 'expired');
    } finally {
      a.off('response', onApi);
    }
    const expired = await note(a);
    check(expired.text.includes('session has ended'), `onSessionExpired was called: "${expired.text}"`);
    check(answers.join(',') === '401', `the API call answered 401 session_expired, and was not retried (${answers.join(',')})`);
    check((await a.textContent('#error-message')).startsWith('session_expired'), 'the error shown is session_expired');
    await a.waitForSelector('#signed-out', { state: 'visible' });
    const left = (await spaCookies()).map((c) => c.name);
    check(!left.includes('th-at') && !left.includes('th-csrf'), `token-handler cleared the ended session's access-token and CSRF cookies (left: ${left.join(', ') || 'none'})`);
    await screenshot(a, 'client-session-expired');
  } catch (e) {
    for (const [page, tab] of [[a, 'A'], [b, 'B']]) {
      try {
        await screenshot(page, `client-failure-${tab}`);
        log(`  tab ${tab} URL ${page.url()}: ${(await page.textContent('body'))?.replace(/\s+/g, ' ').slice(0, 300)}`);
      } catch { /* the page may be gone */ }
    }
    throw e;
  } finally {
    await a.close();
    await b.close();
    await context.clearCookies();
  }
}
