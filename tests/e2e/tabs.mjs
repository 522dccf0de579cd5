// Several tabs (issue 13, part 2): two tabs of one browser start a login before either finishes.
// Each login has a cookie of its own (th-login-<flow id>), so both finish and both are signed in.
// Before per-flow login cookies, the second tab's login/start overwrote the one th-login cookie
// and the first tab's callback failed its state check (400 invalid_request).
//
// Called by browser-test.mjs (run 1, the real oidc-provider) with the browser context it uses;
// the provider's own login and consent pages are driven as a person would.

/**
 * Two tabs sign in at the same time. Leaves the context signed out and without SPA cookies.
 *
 * @param {object} o
 * @param {import('playwright-core').BrowserContext} o.context
 * @param {string} o.spaUrl       the SPA, e.g. http://localhost:18080/
 * @param {string} o.issuer       the provider's issuer (its pages are recognised by this origin)
 * @param {string} o.login        the user name to type at the provider
 * @param {string} o.expectName   the name the SPA must show
 * @param {(msg: string) => void} o.log
 * @param {(page: any, name: string) => Promise<string>} o.screenshot
 */
export async function twoTabsSignIn({ context, spaUrl, issuer, login, expectName, log, screenshot }) {
  const spaOrigin = new URL(spaUrl).origin;
  const issuerOrigin = new URL(issuer).origin;
  const onSpa = (url) => url.origin === spaOrigin;
  const onProvider = (url) => url.origin === issuerOrigin;
  const check = (condition, message) => {
    if (!condition) throw new Error(`check failed (two tabs): ${message}`);
    log(`  ok (two tabs): ${message}`);
  };
  // The login cookies a browser sends to login/end: one per login in progress.
  const loginCookies = async () =>
    (await context.cookies(new URL('/oauth-agent/login/end', spaUrl).href))
      .filter((c) => c.name.includes('th-login'))
      .map((c) => c.name)
      .sort();

  /** Signs in on the provider's pages of `page` and waits until the SPA shows the user. */
  const finish = async (page, tab) => {
    await page.fill('input[name="login"]', login);
    await page.fill('input[name="password"]', 'any password');
    await page.click('button[type="submit"]');
    // The provider asks for consent unless this browser already gave it (the other tab did).
    const deadline = Date.now() + 20_000;
    for (;;) {
      if (onSpa(new URL(page.url()))) break;
      let consent = 0;
      try {
        consent = await page.locator('input[name="prompt"][value="consent"]').count();
      } catch { /* navigating */ }
      if (consent > 0) {
        await page.click('button[type="submit"]');
        await page.waitForURL(onSpa);
        break;
      }
      if (Date.now() > deadline) throw new Error(`tab ${tab}: the provider did not return to the SPA (${page.url()})`);
      await page.waitForTimeout(200);
    }
    await page.waitForSelector('#signed-in', { state: 'visible' });
    await page.waitForFunction(
      (name) => document.getElementById('user-name')?.textContent === name, expectName);
    check(true, `tab ${tab} finished its login and shows "${expectName}"`);
  };

  const a = await context.newPage();
  const b = await context.newPage();
  try {
    for (const page of [a, b]) {
      await page.goto(spaUrl);
      await page.waitForSelector('#signed-out', { state: 'visible' });
    }
    // Both tabs start a login before either finishes.
    for (const page of [a, b]) {
      await page.click('#sign-in');
      await page.waitForURL(onProvider);
      await page.waitForSelector('input[name="login"]');
    }
    const started = await loginCookies();
    check(started.length === 2 && started[0] !== started[1], `two logins in progress, one cookie each (${started.join(', ')})`);

    await finish(a, 'A');
    const left = await loginCookies();
    check(left.length === 1 && started.includes(left[0]), `A's login cookie is gone, B's is kept (${left.join(', ')})`);
    await finish(b, 'B');
    check((await loginCookies()).length === 0, 'no login cookie is left after both finished');
    await screenshot(b, 'two-tabs-b-signed-in');

    // The session B's login wrote is the one both tabs use: A, reloaded, is signed in too and
    // can call the API with the CSRF value its page load returns (a POST).
    await a.reload();
    await a.waitForSelector('#signed-in', { state: 'visible' });
    await a.waitForFunction(
      (name) => document.getElementById('user-name')?.textContent === name, expectName);
    check(true, `tab A, reloaded, is signed in as "${expectName}"`);
    for (const [page, tab] of [[a, 'A'], [b, 'B']]) {
      await page.click('#api-post');
      await page.waitForFunction(() => document.getElementById('api-result').textContent.includes('"method": "POST"'));
      check(true, `tab ${tab}: POST /api/data answered (session cookies and CSRF header accepted)`);
    }
    await screenshot(a, 'two-tabs-a-signed-in');

    // Sign out in B (the provider's confirmation): both tabs are signed out, no cookie is left.
    await b.click('#sign-out');
    await b.waitForURL(onProvider);
    const yes = b.getByRole('button', { name: 'Yes, sign me out' });
    await yes.waitFor();
    await yes.click();
    await b.waitForURL(onSpa);
    await b.waitForSelector('#signed-out', { state: 'visible' });
    await a.reload();
    await a.waitForSelector('#signed-out', { state: 'visible' });
    const host = new URL(spaUrl).hostname;
    const rest = (await context.cookies()).filter((c) => ['localhost', host].includes(c.domain));
    check(rest.length === 0, `both tabs signed out, no cookie left (${rest.map((c) => c.name).join(', ') || 'none'})`);
  } catch (e) {
    for (const [page, tab] of [[a, 'A'], [b, 'B']]) {
      try {
        await screenshot(page, `two-tabs-failure-${tab}`);
        log(`  tab ${tab} URL ${page.url()}: ${(await page.textContent('body'))?.replace(/\s+/g, ' ').slice(0, 300)}`);
      } catch { /* the page may be gone */ }
    }
    throw e;
  } finally {
    await a.close();
    await b.close();
  }
}
