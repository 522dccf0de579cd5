// token-handler-client.js: a small, dependency-free ES module for SPAs that sign in through
// token-handler. Copy it next to your code or import it; TypeScript declarations are in
// token-handler-client.d.ts.
//
// The page never holds a token: they live in token-handler's HttpOnly cookies. This module only
//   - finishes a login on page load (POST <base>/login/end with the page URL) and cleans the
//     authorization response (?code&state) out of the address bar;
//   - keeps the CSRF value login/end returns (sessionStorage, per tab) and sends it as the CSRF
//     header on every request that is not GET/HEAD;
//   - on 401 token_expired refreshes once (POST <base>/refresh) and retries the request once;
//   - calls the app's onSessionExpired on 401 session_expired (the cookies are already gone;
//     with `provider` in the answer, only that provider's session ended and the others go on);
//   - warns before the session ends, from the times GET <base>/session reports (reading them does
//     not count as activity, so polling does not keep an idle session alive);
//   - keeps tabs in step: a login or logout in one tab is announced on a BroadcastChannel.

const CSRF_KEY = 'token-handler-csrf';

/** An error answer of token-handler (or of an API behind it): `{code, message}` and the status. */
export class TokenHandlerError extends Error {
  constructor(status, code, message, body) {
    super(message);
    this.name = 'TokenHandlerError';
    this.status = status;
    this.code = code;
    this.body = body;
  }
}

/** The stable error code of an error answer (`{code}`, or an OAuth `{error}`), else null. */
async function errorCode(response) {
  try {
    const body = await response.clone().json();
    return body?.code ?? body?.error ?? null;
  } catch {
    return null;
  }
}

/** The `provider` query parameter of a request's URL, else null. */
function providerOf(input) {
  try {
    const url = new URL(input instanceof Request ? input.url : String(input), globalThis.location?.href);
    return url.searchParams.get('provider');
  } catch {
    return null;
  }
}

/**
 * Creates a client. Every option is optional.
 *
 * @param {import('./token-handler-client').ClientOptions} [options]
 * @returns {import('./token-handler-client').TokenHandlerClient}
 */
export function createClient(options = {}) {
  const base = (options.base ?? '/oauth-agent').replace(/\/+$/, '');
  const csrfHeader = options.csrfHeader ?? 'x-th-csrf';
  const warnBefore = options.warnBeforeSeconds ?? 120;
  const storage = options.storage ?? globalThis.sessionStorage;
  const fetchImpl = options.fetch ?? globalThis.fetch.bind(globalThis);
  const on = {
    sessionExpired: options.onSessionExpired ?? (() => {}),
    sessionWarning: options.onSessionWarning ?? (() => {}),
    signedIn: options.onSignedIn ?? (() => {}),
    signedOut: options.onSignedOut ?? (() => {}),
  };
  const channelName = options.channel === undefined ? 'token-handler' : options.channel;
  const channel = channelName && typeof BroadcastChannel === 'function'
    ? new BroadcastChannel(channelName) : null;
  let warningTimer = null;
  let expired = false;

  const csrf = () => storage?.getItem(CSRF_KEY) ?? null;
  const setCsrf = (value) => {
    if (value) storage?.setItem(CSRF_KEY, value);
    else storage?.removeItem(CSRF_KEY);
  };

  /** fetch with the cookies and, unless GET/HEAD, the CSRF header. */
  function send(input, init = {}) {
    const method = (init.method ?? (input instanceof Request ? input.method : 'GET')).toUpperCase();
    const headers = new Headers(init.headers ?? (input instanceof Request ? input.headers : undefined));
    const value = csrf();
    if (value && method !== 'GET' && method !== 'HEAD' && !headers.has(csrfHeader)) {
      headers.set(csrfHeader, value);
    }
    return fetchImpl(input, { ...init, credentials: 'include', headers });
  }

  /** A JSON call to token-handler itself; error answers become TokenHandlerError. */
  async function agent(path, { method = 'GET', body } = {}) {
    const headers = { accept: 'application/json' };
    if (body !== undefined) headers['content-type'] = 'application/json';
    const response = await send(`${base}${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (!response.ok) {
      const code = data?.code ?? data?.error ?? `http_${response.status}`;
      if (code === 'session_expired') sessionOver(data);
      throw new TokenHandlerError(response.status, code, data?.message ?? response.statusText, data);
    }
    return data;
  }

  /**
   * The session is over: forget its CSRF value and tell the app once. An answer that names a
   * provider ends only that provider's session (several providers in one browser): the others,
   * and the CSRF value they share, go on, and the app hears of each such end.
   */
  function sessionOver(detail) {
    if (detail?.provider) {
      on.sessionExpired({ code: 'session_expired', ...detail });
      return;
    }
    setCsrf(null);
    clearTimeout(warningTimer);
    if (expired) return;
    expired = true;
    on.sessionExpired(detail ?? { code: 'session_expired' });
  }

  /** Schedules the warning `warnBefore` seconds before `info.expiresAt` (Unix seconds). */
  function schedule(info) {
    clearTimeout(warningTimer);
    if (!info?.isLoggedIn || typeof info.expiresAt !== 'number') return;
    const now = Date.now() / 1000;
    const delay = Math.max(0, info.expiresAt - now - warnBefore) * 1000;
    warningTimer = setTimeout(async () => {
      // The end moves with the user's activity: read it again before warning.
      let fresh;
      try {
        fresh = await agent('/session');
      } catch {
        return; // session_expired already reached the app; other failures: no warning.
      }
      if (!fresh?.isLoggedIn) return;
      const left = fresh.expiresAt - Date.now() / 1000;
      if (left > warnBefore + 1) {
        schedule(fresh);
        return;
      }
      // At the end itself, confirm it (GET /session answers 401 session_expired, which reaches
      // onSessionExpired), unless the user's activity moved it.
      warningTimer = setTimeout(() => {
        agent('/session').then(schedule, () => {});
      }, Math.max(0, left) * 1000 + 1000);
      on.sessionWarning({ ...fresh, secondsLeft: Math.max(0, Math.round(left)) });
    }, delay);
  }

  /** Handles the login/end answer of this tab. */
  function adopt(end) {
    if (end?.isLoggedIn) {
      expired = false;
      setCsrf(end.csrf);
      schedule(end);
    } else {
      setCsrf(null);
      clearTimeout(warningTimer);
    }
    return end;
  }

  channel?.addEventListener('message', async (event) => {
    if (event.data === 'logout') {
      setCsrf(null);
      clearTimeout(warningTimer);
      on.signedOut({ fromOtherTab: true });
    } else if (event.data === 'login') {
      // The cookies are shared; this tab needs its own CSRF value and the session's times.
      try {
        const end = adopt(await agent('/login/end', { method: 'POST', body: { pageUrl: location.href } }));
        if (end?.isLoggedIn) on.signedIn({ ...end, fromOtherTab: true });
      } catch {
        /* session_expired reached the app; anything else: stay as we are */
      }
    }
  });

  return {
    /** Starts a login: asks token-handler for the authorization request and goes there. */
    async login(body = {}) {
      const { authorizationRequestUrl } = await agent('/login/start', { method: 'POST', body });
      location.assign(authorizationRequestUrl);
    },

    /**
     * Call on every page load: finishes a login when the URL is the provider's redirect (then
     * removes ?code&state from the address bar, history and bookmarks) and reports the session.
     */
    async handlePageLoad(pageUrl = location.href) {
      const url = new URL(pageUrl);
      const isCallback = ['code', 'state', 'error', 'iss'].some((p) => url.searchParams.has(p));
      try {
        const end = adopt(await agent('/login/end', { method: 'POST', body: { pageUrl } }));
        if (end?.handled) channel?.postMessage('login');
        return end;
      } finally {
        if (isCallback && pageUrl === location.href) {
          history.replaceState(history.state, '', url.pathname + url.hash);
        }
      }
    },

    /**
     * fetch() for token-handler's endpoints and the APIs behind its proxy: credentials and the
     * CSRF header; on 401 token_expired one refresh and one retry (so it cannot loop); on 401
     * session_expired the app's onSessionExpired. Answers the Response, like fetch.
     */
    async fetch(input, init = {}) {
      let response = await send(input, init);
      if (response.status !== 401) return response;
      let code = await errorCode(response);
      if (code === 'token_expired') {
        // The session the call used: the provider it names (`?provider=` of /userInfo and
        // /claims), else the default one.
        const provider = providerOf(input);
        const refresh = provider ? `/refresh?provider=${encodeURIComponent(provider)}` : '/refresh';
        try {
          await agent(refresh, { method: 'POST' });
        } catch (e) {
          if (e instanceof TokenHandlerError && e.code === 'session_expired') {
            return new Response(JSON.stringify(e.body ?? { code: e.code }), {
              status: 401,
              headers: { 'content-type': 'application/json' },
            });
          }
          throw e;
        }
        response = await send(input, init);
        if (response.status !== 401) return response;
        code = await errorCode(response);
      }
      if (code === 'session_expired') {
        let body = null;
        try {
          body = await response.clone().json();
        } catch {
          body = null;
        }
        sessionOver({ code, ...(body?.provider ? { provider: body.provider } : {}) });
      }
      return response;
    },

    /** The session's state and end times (GET <base>/session); schedules the warning. */
    async session() {
      const info = await agent('/session');
      schedule(info);
      return info;
    },

    /**
     * Signs out: token-handler clears the cookies (and revokes the tokens); every other tab is
     * told. With `provider`, ends only that provider's session (several providers in one
     * browser) and the other tabs keep theirs. Goes to the provider's logout page when there is one, unless `redirect` is false.
     */
    async logout({ redirect = true, provider } = {}) {
      if (provider) {
        // One provider's session ends; the others (and this tab's CSRF value) stay.
        const { url } = await agent('/logout', { method: 'POST', body: { provider } });
        if (redirect && url) location.assign(url);
        return url ?? null;
      }
      const { url } = await agent('/logout', { method: 'POST' });
      setCsrf(null);
      clearTimeout(warningTimer);
      channel?.postMessage('logout');
      if (redirect && url) location.assign(url);
      return url ?? null;
    },

    /** The CSRF value of this tab's session (null when signed out). */
    csrf,

    /** Stops the timers and the cross-tab channel. */
    close() {
      clearTimeout(warningTimer);
      channel?.close();
    },
  };
}
