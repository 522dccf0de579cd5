// Issue 13 part 4: /userInfo never sends the SPA into a refresh loop.
//
// With run 1's JWT access tokens for an API audience, oidc-provider's userinfo endpoint refuses
// every access token ("token audience prevents accessing the userinfo endpoint"). token-handler
// used to answer that with 401 token_expired, so the SPA (OAuth Agent contract: refresh, retry
// once) refreshed on every page load. Now /userInfo answers the ID token's claims instead, and
// token_expired only for an access token that has expired (or is refused in its last stretch,
// clock skew), so a page load refreshes at most once and a load right after one does not.
//
// Called by browser-test.mjs with a signed-in page on the SPA; reloads it LOADS times, counts the
// page's POSTs to /refresh during each load (playwright request events) and checks /userInfo's
// answers.

const LOADS = 3;

export async function userInfoDoesNotLoop({ page, step, check, expectName }) {
  step(`reload the signed-in SPA ${LOADS} times: /userInfo answers, at most one refresh`);
  const refreshes = [];
  const userInfo = [];
  const onRequest = (request) => {
    if (request.method() === 'POST' && new URL(request.url()).pathname.endsWith('/refresh')) {
      refreshes[refreshes.length - 1] += 1;
    }
  };
  const onResponse = (response) => {
    if (new URL(response.url()).pathname.endsWith('/userInfo')) userInfo.push(response.status());
  };
  page.on('request', onRequest);
  page.on('response', onResponse);
  try {
    for (let load = 1; load <= LOADS; load += 1) {
      refreshes.push(0);
      await page.reload();
      await page.waitForSelector('#signed-in', { state: 'visible' });
      await page.waitForFunction(
        (name) => document.getElementById('user-name')?.textContent === name, expectName);
      const total = refreshes.reduce((a, b) => a + b, 0);
      check(refreshes[load - 1] <= 1, `load ${load}: the name "${expectName}" is shown after ${refreshes[load - 1]} POST /refresh (at most one)`);
      // A refresh leaves a fresh access token, which is never token_expired on the next load.
      check(total <= 1, `${total} refresh(es) in ${load} load(s) in a row (a loop refreshes on every load)`);
    }
  } finally {
    page.off('request', onRequest);
    page.off('response', onResponse);
  }
  const source = await page.textContent('#user-source');
  check(source.startsWith('from GET /oauth-agent/userInfo'), `the name comes from /userInfo (${source})`);
  check(userInfo.at(-1) === 200, `the last /userInfo answered 200 (statuses: ${userInfo.join(', ')})`);
  check(await page.$('#error:not([hidden])') === null, 'no error is shown');
}
