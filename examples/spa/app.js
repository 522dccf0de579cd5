// The example SPA: plain JavaScript, no framework, no build step.
//
// Everything token-related happens in token-handler; this code uses token-handler-client.js
// (beside it, dependency-free: copy it into any SPA), which
//   1. POSTs the page URL to /oauth-agent/login/end on every load (finishing a login when the
//      URL is the provider's callback), then drops ?code&state from the address bar;
//   2. keeps the CSRF value login/end returns and sends it as x-th-csrf on every POST;
//   3. refreshes once on 401 token_expired and retries, and tells this page when the session is
//      over (session_expired), about to end, or signed in or out in another tab.
// It never sees a token: they live in HttpOnly cookies.

import { createClient, TokenHandlerError } from '/token-handler-client.js';

const AGENT = '/oauth-agent';
const LAST_TOKEN_KEY = 'example-api-last-token';

const $ = (id) => document.getElementById(id);

const client = createClient({
  base: AGENT,
  csrfHeader: 'x-th-csrf',
  onSessionExpired: () => {
    sessionStorage.removeItem(LAST_TOKEN_KEY);
    showNote('Your session has ended: sign in again.', 'expired');
    showSignedOut();
  },
  onSessionWarning: ({ secondsLeft }) =>
    showNote(`Your session ends in ${secondsLeft} s unless you use the app.`, 'warning'),
  onSignedOut: () => {
    sessionStorage.removeItem(LAST_TOKEN_KEY);
    showNote('Signed out in another tab.', 'other-tab');
    showSignedOut();
  },
  onSignedIn: () => {
    showNote('Signed in in another tab.', 'other-tab');
    showSignedIn().catch(showError);
  },
});

/** An error answer, with token-handler's (or the API's) JSON {code, message}. */
class CallError extends Error {
  constructor(request, status, code, message, body) {
    super(message);
    this.request = request;
    this.status = status;
    this.code = code;
    this.body = body;
  }
}

/** client.fetch (cookies, CSRF header, one refresh and retry) with JSON errors as CallError. */
async function call(url, { method = 'GET', body } = {}) {
  const headers = { accept: 'application/json' };
  if (body !== undefined) headers['content-type'] = 'application/json';
  const request = `${method} ${url}`;
  let response;
  try {
    response = await client.fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    throw new CallError(request, 0, 'network_error', `the request failed: ${e.message}`, null);
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = { raw: text };
    }
  }
  if (!response.ok) {
    const code = data?.code ?? data?.error ?? `http_${response.status}`;
    const message = data?.message ?? data?.error_description ?? (text || response.statusText);
    throw new CallError(request, response.status, code, message, data);
  }
  return data;
}

// ---------------------------------------------------------------------------------------------
// Rendering.

function showError(e) {
  if (e instanceof CallError || e instanceof TokenHandlerError) {
    $('error-title').textContent = `${e.request ?? 'token-handler'} → ${e.status || 'no answer'}`;
    $('error-message').textContent = `${e.code}: ${e.message}`;
    $('error-body').textContent = e.body ? JSON.stringify(e.body, null, 2) : '';
    $('error-body').hidden = !e.body;
  } else {
    $('error-title').textContent = 'Unexpected error';
    $('error-message').textContent = String(e?.message ?? e);
    $('error-body').hidden = true;
  }
  $('error').hidden = false;
}

function clearError() {
  $('error').hidden = true;
}

/** A note about the session (ended, ending soon, changed in another tab); `kind` is a data tag. */
function showNote(text, kind) {
  const n = $('session-note');
  n.textContent = text;
  n.dataset.kind = kind;
  n.hidden = false;
}

function setStatus(text, kind) {
  const s = $('status');
  s.textContent = text;
  s.className = `pill ${kind}`;
}

function showSignedOut() {
  setStatus('signed out', 'off');
  $('signed-out').hidden = false;
  $('signed-in').hidden = true;
  $('claims-card').hidden = true;
}

async function showSignedIn() {
  setStatus('signed in', 'on');
  $('signed-out').hidden = true;
  $('signed-in').hidden = false;

  const claims = await call(`${AGENT}/claims`);
  $('claims').textContent = JSON.stringify(claims, null, 2);
  $('claims-card').hidden = false;

  // The user's name from /userInfo: the provider's userinfo endpoint, or, when the provider
  // refuses an access token issued for an API, the ID token's claims (userinfo_source "auto").
  // token_expired is answered only for an expired access token, so the one refresh and retry
  // of client.fetch() cannot loop; userinfo_refused (403) is never worth a refresh.
  try {
    const info = await call(`${AGENT}/userInfo`);
    $('user-name').textContent = info.name ?? info.preferred_username ?? info.sub;
    $('user-source').textContent = `from GET ${AGENT}/userInfo · subject ${info.sub}`;
  } catch (e) {
    if (e instanceof CallError && e.code === 'session_expired') throw e;
    $('user-name').textContent = '…';
    showError(e);
  }
}

const time = (seconds) => new Date(seconds * 1000).toLocaleTimeString();

let expiryTimer = null;

function renderApiResult(data) {
  const token = data.token ?? {};
  const previous = JSON.parse(sessionStorage.getItem(LAST_TOKEN_KEY) ?? 'null');
  sessionStorage.setItem(LAST_TOKEN_KEY, JSON.stringify(token));

  // The proxy refreshes the access token (and sets new cookies, which this script cannot see)
  // when it is about to expire. The API reports which token it got: a new jti means a refresh.
  const note = $('refresh-note');
  if (previous?.jti && token.jti && previous.jti !== token.jti) {
    note.textContent =
      `Token refreshed: this call carried a new access token (jti ${short(previous.jti)} → ` +
      `${short(token.jti)}, issued ${time(token.iat)}). token-handler refreshed it transparently.`;
    note.hidden = false;
  } else if (previous?.jti) {
    note.textContent = `Same access token as the previous call (jti ${short(token.jti)}).`;
    note.hidden = false;
  } else {
    note.hidden = true;
  }
  note.className = previous?.jti && previous.jti !== token.jti ? 'note ok' : 'note info';

  $('fact-sub').textContent = data.sub;
  $('fact-jti').textContent = token.jti ?? '(none)';
  $('fact-iat').textContent = token.iat ? time(token.iat) : '';
  $('token-facts').hidden = false;
  const showExpiry = () => {
    const left = token.exp - Math.floor(Date.now() / 1000);
    $('fact-exp').textContent = `${time(token.exp)} (${left > 0 ? `in ${left} s` : 'expired'})`;
  };
  showExpiry();
  clearInterval(expiryTimer);
  expiryTimer = setInterval(showExpiry, 1000);

  $('api-result').textContent = JSON.stringify(data, null, 2);
  $('api-result').hidden = false;
}

const short = (s) => (s && s.length > 10 ? `${s.slice(0, 10)}…` : s);

// ---------------------------------------------------------------------------------------------
// Actions.

/** Runs a click handler with its button disabled and errors shown. */
function action(button, fn) {
  button.addEventListener('click', async () => {
    button.disabled = true;
    clearError();
    try {
      await fn();
    } catch (e) {
      showError(e);
      // session_expired: onSessionExpired (above) has shown the sign-in page.
    } finally {
      button.disabled = false;
    }
  });
}

async function signIn() {
  await client.login();
}

async function signOut() {
  sessionStorage.removeItem(LAST_TOKEN_KEY);
  const url = await client.logout({ redirect: false });
  if (url) location.href = url;
  else showSignedOut();
}

let notes = 0;

async function callApi(method) {
  const body = method === 'POST' ? { text: `note ${++notes} from the SPA` } : undefined;
  const data = await call('/api/data', { method, body });
  renderApiResult(data);
}

// ---------------------------------------------------------------------------------------------
// Page load.

async function start() {
  action($('sign-in'), signIn);
  action($('sign-out'), signOut);
  action($('api-get'), () => callApi('GET'));
  action($('api-post'), () => callApi('POST'));
  $('error-dismiss').addEventListener('click', clearError);

  let end;
  try {
    // Every page load: a callback completes the login (and the URL is cleaned); any other URL
    // just reports the session.
    end = await client.handlePageLoad();
  } catch (e) {
    showError(e);
    end = { isLoggedIn: false };
  }
  if (!end.isLoggedIn) {
    sessionStorage.removeItem(LAST_TOKEN_KEY);
    showSignedOut();
    return;
  }
  try {
    await showSignedIn();
  } catch (e) {
    showError(e);
    showSignedOut();
  }
}

start();
