// A real OpenID Provider (oidc-provider 8.x) for the integration tests.
//
// Started by the Rust tests (or by login-with-curl.sh) as `node tests/oidc/provider.mjs`
// with a *piped* stdin. Contract:
//
//   * listens on 127.0.0.1, port $PORT or a random free one (port 0);
//   * once listening, writes exactly ONE line to stdout:
//       {"issuer":"http://127.0.0.1:<port>"}
//     and never writes to stdout again (every diagnostic goes to stderr);
//   * exits by itself when its stdin reaches EOF / is closed (the parent that holds the
//     write end died or closed it), after MAX_LIFETIME_SECONDS (default 900), and on
//     SIGTERM / SIGINT / SIGHUP;
//   * configuration: env OIDC_CONFIG, a JSON object, every field optional (see README.md);
//   * test-only routes on the same server: GET /test/stats, POST /test/reset,
//     POST /test/fail-token-endpoint, GET /test/last-authorization, GET /test/last-client-auth,
//     GET /test/last-token-request.
//
// See README.md in this directory for the exact HTTP steps of the login/consent/logout.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as tty from 'node:tty';
import { handleInFlight } from './inflight.mjs';
import MapAdapter from './map-adapter.mjs';

// oidc-provider prints its notices with console.info (stdout). stdout is reserved for
// the single issuer line, so route every console method to stderr *before* importing it.
for (const method of ['log', 'info', 'debug', 'trace']) {
  // eslint-disable-next-line no-console
  console[method] = (...args) => console.error(...args);
}

const { default: Provider, errors: oidcErrors } = await import('oidc-provider');
const { narrowingSetup } = await import('./narrowing.mjs');

const log = (...args) => console.error('[test-oidc-provider]', ...args);

function fail(message) {
  log(`fatal: ${message}`);
  process.exit(2);
}

// ---------------------------------------------------------------------------------------
// configuration
// ---------------------------------------------------------------------------------------

const DEFAULT_CLIENT = {
  client_id: 'spa-client',
  client_secret: 'spa-secret',
  token_endpoint_auth_method: 'client_secret_basic',
  grant_types: ['authorization_code', 'refresh_token'],
  response_types: ['code'],
  redirect_uris: ['https://www.example.test/'],
  post_logout_redirect_uris: ['https://www.example.test/'],
};

const DEFAULTS = {
  clients: [DEFAULT_CLIENT],
  accessTokenTtl: 300,
  idTokenTtl: 300,
  refreshTokenTtl: 3600,
  authorizationCodeTtl: 60,
  sessionTtl: 3600,
  rotateRefreshToken: false,
  // Issue a refresh token on every authorization_code grant of a client allowed the
  // refresh_token grant, whether or not offline_access survived (see README.md).
  issueRefreshToken: true,
  // false: tokens outlive the provider's browser session (logout does not kill them unless
  // the grant is revoked). true: oidc-provider's default for grants without offline_access.
  expiresWithSession: false,
  // false: ID token carries the profile/email claims of the granted scopes (like most IdPs).
  // true: oidc-provider's strict default (those claims only from userinfo).
  conformIdTokenClaims: false,
  // null/absent: opaque access tokens (only usable at userinfo/introspection).
  // {"audience": "<api>"}: every authorization_code/refresh_token grant returns an RS256 JWT
  // access token (RFC 9068, typ at+jwt) for that audience, via features.resourceIndicators.
  jwtAccessTokens: null,
  // > 0: every token endpoint request waits this many ms before it is processed.
  tokenEndpointDelayMs: 0,
  // > 0: every JWKS request waits this many ms before it is answered.
  jwksDelayMs: 0,
  // The acr values the provider supports (discovery's acr_values_supported). Empty: no `acr`
  // claim at all (oidc-provider's default).
  acrValues: [],
  // null: logins carry no acr. A string (one of acrValues): the acr every login at the
  // provider's login page is recorded with, whatever acr_values asked for (a provider that
  // cannot do better than this level).
  loginAcr: null,
  // true: a provider without RFC 9207: authorization responses carry no `iss`, and discovery
  // does not advertise authorization_response_iss_parameter_supported.
  omitIss: false,
  // --- discovery tests (tests/api/discovery.rs) ---
  // null: the issuer is http://127.0.0.1:<port>. A URL: the issuer as seen through a reverse
  // proxy in front (nginx in the discovery tests), e.g. http://127.0.0.1:<nginx port>/tenant1;
  // a path in it is stripped from requests before oidc-provider sees them (a mount, so every
  // endpoint is published under the path).
  publicIssuer: null,
  // null: tokens of the usual size. {"accessToken": n, "refreshToken": n, "idToken": n} (each
  // optional, characters): opaque access and refresh tokens of n random base64url characters,
  // and ID tokens padded to at least n characters with a random `pad` claim (profile scope,
  // also in userinfo), like Entra ID tokens with group claims. See "big tokens" below.
  bigTokens: null,
  // null: no narrowed per-API tokens. See narrowing.mjs (resource indicators, token exchange).
  narrowing: null,
  // --- back-channel logout (tests/api/backchannel.rs) ---
  // true: OIDC Back-Channel Logout 1.0 (features.backchannelLogout). A client registered with
  // backchannel_logout_uri (and backchannel_logout_session_required: true for `sid` in its ID
  // tokens) is sent a Logout Token there when the user signs out at the end-session endpoint.
  backchannelLogout: false,
  // Issue 17 (inflight.mjs): milliseconds every token endpoint answer is held back.
  tokenDelayMs: 0,
  // Issue 17 (map-adapter.mjs): false: oidc-provider's development store, an LRU of 1,000
  // entries that evicts live refresh tokens past ~160 sessions. true: an unbounded Map with the
  // same behaviour (the refresh storm benchmark's 1,000 sessions).
  unboundedStore: false,
};

// The scopes the provider knows; with jwtAccessTokens they are also the resource server's
// scopes, so the access token's `scope` (and the token response's `scope`) stay what they are
// with opaque tokens (`openid` included).
const SCOPES = ['openid', 'profile', 'email', 'offline_access'];

let userConfig = {};
if (process.env.OIDC_CONFIG && process.env.OIDC_CONFIG.trim() !== '') {
  try {
    userConfig = JSON.parse(process.env.OIDC_CONFIG);
  } catch (err) {
    fail(`OIDC_CONFIG is not valid JSON: ${err.message}`);
  }
  if (userConfig === null || typeof userConfig !== 'object' || Array.isArray(userConfig)) {
    fail('OIDC_CONFIG must be a JSON object');
  }
  const unknown = Object.keys(userConfig).filter((k) => !(k in DEFAULTS));
  if (unknown.length) {
    fail(`OIDC_CONFIG has unknown field(s) ${unknown.join(', ')}; known: ${Object.keys(DEFAULTS).join(', ')}`);
  }
}
const cfg = { ...DEFAULTS, ...userConfig };

for (const key of ['accessTokenTtl', 'idTokenTtl', 'refreshTokenTtl', 'authorizationCodeTtl', 'sessionTtl']) {
  if (!Number.isInteger(cfg[key]) || cfg[key] <= 0) fail(`OIDC_CONFIG.${key} must be a positive integer (seconds)`);
}
for (const key of ['rotateRefreshToken', 'issueRefreshToken', 'expiresWithSession', 'conformIdTokenClaims', 'omitIss', 'backchannelLogout', 'unboundedStore']) {
  if (typeof cfg[key] !== 'boolean') fail(`OIDC_CONFIG.${key} must be a boolean`);
}
if (!Array.isArray(cfg.clients) || cfg.clients.length === 0) fail('OIDC_CONFIG.clients must be a non-empty array');
if (!Array.isArray(cfg.acrValues) || !cfg.acrValues.every((v) => typeof v === 'string' && v !== '')) {
  fail('OIDC_CONFIG.acrValues must be an array of non-empty strings');
}
if (cfg.loginAcr !== null && !cfg.acrValues.includes(cfg.loginAcr)) {
  fail('OIDC_CONFIG.loginAcr must be null or one of OIDC_CONFIG.acrValues');
}
if (cfg.publicIssuer !== null) {
  let u;
  try { u = new URL(cfg.publicIssuer); } catch { fail('OIDC_CONFIG.publicIssuer must be null or an absolute http(s) URL'); }
  if (!['http:', 'https:'].includes(u.protocol) || u.search || u.hash) fail('OIDC_CONFIG.publicIssuer must be an http(s) URL without query or fragment');
}
// The path of publicIssuer, without a trailing slash ('' for none): requests under it are
// served as if mounted there.
const mountPath = cfg.publicIssuer === null ? '' : new URL(cfg.publicIssuer).pathname.replace(/\/+$/, '');
for (const key of ['tokenEndpointDelayMs', 'jwksDelayMs']) {
  if (!Number.isInteger(cfg[key]) || cfg[key] < 0 || cfg[key] > 600_000) {
    fail(`OIDC_CONFIG.${key} must be an integer 0..600000 (milliseconds)`);
  }
}

// jwtAccessTokens -> the (single) resource server. `resourceIndicator` is the RFC 8707 `resource`
// value oidc-provider tracks internally; it is the audience itself when that is an absolute URI
// (so a client MAY also send resource=<audience>), otherwise a fixed internal URN.
let jwtResource = null;
if (cfg.jwtAccessTokens !== null) {
  const j = cfg.jwtAccessTokens;
  if (typeof j !== 'object' || Array.isArray(j)) fail('OIDC_CONFIG.jwtAccessTokens must be an object like {"audience":"https://api.example.test"} (or null/absent)');
  const unknownJ = Object.keys(j).filter((k) => k !== 'audience');
  if (unknownJ.length) fail(`OIDC_CONFIG.jwtAccessTokens has unknown field(s) ${unknownJ.join(', ')}; known: audience`);
  if (typeof j.audience !== 'string' || j.audience === '') fail('OIDC_CONFIG.jwtAccessTokens.audience must be a non-empty string');
  let resourceIndicator = 'urn:test-oidc-provider:jwt-access-token-resource';
  try {
    // the same test oidc-provider applies to a `resource` parameter (absolute URI, no fragment)
    if (!new URL(j.audience).href.includes('#')) resourceIndicator = j.audience;
  } catch { /* not an absolute URI: keep the internal URN */ }
  jwtResource = { audience: j.audience, resourceIndicator };
}

// ---- big tokens (bigTokens) ----------------------------------------------------------------
// Validated here; applied by replacing the opaque token id generator of the AccessToken and
// RefreshToken models once the provider exists (oidc-provider's own, nanoid, cannot make ids over
// ~500 characters: its random pool is 128 times the id), and through the `pad` claim of
// claimsFor (an ID token is base64url JSON: 4 characters per 3 bytes of claim, plus the usual
// claims and the signature).
const bigTokens = { accessToken: 0, refreshToken: 0, idToken: 0 };
if (cfg.bigTokens !== null) {
  const b = cfg.bigTokens;
  if (typeof b !== 'object' || Array.isArray(b)) fail('OIDC_CONFIG.bigTokens must be an object like {"accessToken":16384,"idToken":16384} (or null/absent)');
  for (const [k, v] of Object.entries(b)) {
    if (!(k in bigTokens)) fail(`OIDC_CONFIG.bigTokens has unknown field ${k}; known: ${Object.keys(bigTokens).join(', ')}`);
    if (!Number.isInteger(v) || v < 0 || v > 65536) fail(`OIDC_CONFIG.bigTokens.${k} must be an integer 0..65536 (characters)`);
    bigTokens[k] = v;
  }
}
const idTokenPad = () => (bigTokens.idToken > 0
  ? { pad: crypto.randomBytes(Math.ceil((bigTokens.idToken * 3) / 4)).toString('base64url').slice(0, Math.ceil((bigTokens.idToken * 3) / 4)) }
  : {});

const maxLifetime = process.env.MAX_LIFETIME_SECONDS === undefined
  ? 900 : Number(process.env.MAX_LIFETIME_SECONDS);
if (!Number.isFinite(maxLifetime) || maxLifetime <= 0 || maxLifetime > 2_000_000) fail('MAX_LIFETIME_SECONDS must be a number in (0, 2000000]');

const requestedPort = process.env.PORT === undefined || process.env.PORT === '' ? 0 : Number(process.env.PORT);
if (!Number.isInteger(requestedPort) || requestedPort < 0 || requestedPort > 65535) fail('PORT must be an integer 0..65535');

// ---------------------------------------------------------------------------------------
// lifetime: stdin EOF, max lifetime, signals
// ---------------------------------------------------------------------------------------

let server;
let exiting = false;
function shutdown(reason, code = 0) {
  if (exiting) return;
  exiting = true;
  log(`exiting: ${reason}`);
  // Do not wait for keep-alive connections to drain; exit promptly.
  if (server) {
    server.closeAllConnections?.();
    server.close();
  }
  setImmediate(() => process.exit(code));
}

// Only a pipe/socket (what a parent's piped stdin is) or a terminal is watched: /dev/null or a
// regular file would hit EOF at once and kill the provider right after start.
let stdinKind = 'unknown';
try {
  const st = fs.fstatSync(0);
  if (st.isFIFO()) stdinKind = 'pipe';
  else if (st.isSocket()) stdinKind = 'socket';
  else if (tty.isatty(0)) stdinKind = 'tty';
  else if (st.isCharacterDevice()) stdinKind = 'character device (e.g. /dev/null)';
  else if (st.isFile()) stdinKind = 'regular file';
} catch {
  stdinKind = 'closed';
}
const watchStdin = ['pipe', 'socket', 'tty'].includes(stdinKind);
if (watchStdin) {
  process.stdin.on('end', () => shutdown('stdin closed (EOF)'));
  process.stdin.on('close', () => shutdown('stdin closed'));
  process.stdin.on('error', (err) => shutdown(`stdin error: ${err.code || err.message}`));
  process.stdin.resume(); // discard whatever the parent writes; we only care about EOF
} else {
  log(`warning: stdin is a ${stdinKind}, not a pipe: NOT exiting on stdin close; only MAX_LIFETIME_SECONDS or a signal ends this process`);
}

// The parent may go away and take our stdout/stderr pipes with it: never crash on EPIPE.
process.stdout.on('error', () => {});
process.stderr.on('error', () => {});

for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP']) {
  process.on(sig, () => shutdown(sig));
}
setTimeout(() => shutdown(`max lifetime of ${maxLifetime}s reached`), maxLifetime * 1000).unref();

// ---------------------------------------------------------------------------------------
// keys
// ---------------------------------------------------------------------------------------

const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingJwk = {
  ...privateKey.export({ format: 'jwk' }),
  kid: `test-rs256-${crypto.randomBytes(6).toString('hex')}`,
  alg: 'RS256',
  use: 'sig',
};
const cookieKeys = [crypto.randomBytes(32).toString('hex')];

// ---------------------------------------------------------------------------------------
// counters (GET /test/stats)
// ---------------------------------------------------------------------------------------

const zeroStats = () => ({
  authorization_code_grants: 0, // successful grant_type=authorization_code token requests
  refresh_grants: 0, // successful grant_type=refresh_token token requests
  revocations: 0, // revocation endpoint requests answered 200 (RFC 7009: also for unknown tokens)
  revoked_tokens: 0, // ...of those, the ones that actually found and destroyed a token
  grant_errors: 0, // token endpoint requests that failed (event grant.error)
  authorizations: 0, // authorization responses with a code (event authorization.success)
  userinfo_requests: 0, // userinfo requests answered 200
  end_sessions: 0, // completed logouts (event end_session.success)
  injected_failures: 0, // token endpoint requests answered by POST /test/fail-token-endpoint
});
let stats = zeroStats();

// POST /test/fail-token-endpoint {"status": 503, "count": 2}: the next `count` token endpoint
// requests are answered with `status` and {"error":"temporarily_unavailable"}, unprocessed.
const failTokenEndpoint = { status: 503, remaining: 0 };

// GET /test/last-authorization: the parameters of the most recent authorization request the
// authorization endpoint accepted (after resolving a PAR request_uri), exactly as received.
let lastAuthorization = null;
// GET /test/last-client-auth: the most recent successful client authentication at the token,
// pushed authorization request or revocation endpoint.
let lastClientAuth = null;
// GET /test/last-token-request (see the middleware near the end).
let lastTokenRequest = null;
// request_uri -> {params, at}: what was pushed at the PAR endpoint (raw, without the client
// authentication parameters), so /test/last-authorization can report it when it is used.
const pushedRequests = new Map();
// Client authentication parameters: never reported as authorization request parameters.
const CLIENT_AUTH_PARAMS = new Set(['client_secret', 'client_assertion', 'client_assertion_type']);

// ---------------------------------------------------------------------------------------
// HTTP server: listen first (to learn the port), then build the provider with that issuer
// ---------------------------------------------------------------------------------------

let providerCallback;
// bigTokens: a 16 KB bearer token alone fills node's default 16 KiB request-header limit.
const serverOptions = cfg.bigTokens !== null ? { maxHeaderSize: 256 * 1024 } : {};
server = http.createServer(serverOptions, (req, res) => {
  // publicIssuer with a path: strip it the way a mount does (oidc-provider reads the mount
  // path from req.originalUrl, so the endpoints it publishes keep the path).
  if (mountPath && req.url && (req.url === mountPath || req.url.startsWith(`${mountPath}/`) || req.url.startsWith(`${mountPath}?`))) {
    req.originalUrl = req.url;
    req.url = req.url.slice(mountPath.length) || '/';
    if (req.url.startsWith('?')) req.url = `/${req.url}`;
  }
  const path = (req.url || '/').split('?')[0];
  if (handleInFlight(req, res, path, cfg.tokenDelayMs)) return;
  if (path === '/test/last-token-request' && req.method === 'GET') {
    res.writeHead(lastTokenRequest ? 200 : 404, { 'content-type': 'application/json', 'cache-control': 'no-store' });
    res.end(JSON.stringify(lastTokenRequest || { error: 'no token request yet' }));
    return;
  }
  if (path === '/test/stats' && req.method === 'GET') {
    res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
    res.end(JSON.stringify(stats));
    return;
  }
  if ((path === '/test/last-authorization' || path === '/test/last-client-auth') && req.method === 'GET') {
    const value = path === '/test/last-authorization' ? lastAuthorization : lastClientAuth;
    res.writeHead(value ? 200 : 404, { 'content-type': 'application/json', 'cache-control': 'no-store' });
    res.end(JSON.stringify(value || {
      error: path === '/test/last-authorization'
        ? 'no authorization request accepted yet' : 'no client authenticated yet',
    }));
    return;
  }
  if (path === '/test/reset' && req.method === 'POST') {
    stats = zeroStats();
    lastAuthorization = null;
    lastClientAuth = null;
    res.writeHead(204, { 'cache-control': 'no-store' });
    res.end();
    return;
  }
  if (path === '/test/fail-token-endpoint' && req.method === 'POST') {
    handleFailTokenEndpoint(req, res);
    return;
  }
  if (!providerCallback) {
    res.writeHead(503, { 'content-type': 'text/plain' });
    res.end('starting');
    return;
  }
  providerCallback(req, res);
});
server.keepAliveTimeout = 5000;

function handleFailTokenEndpoint(req, res) {
  const answer = (status, body) => {
    res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
    res.end(JSON.stringify(body));
  };
  const chunks = [];
  let size = 0;
  req.on('data', (c) => {
    size += c.length;
    if (size <= 65536) chunks.push(c);
  });
  req.on('error', () => {});
  req.on('end', () => {
    let body;
    try {
      body = JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}');
    } catch (err) {
      answer(400, { error: `body is not valid JSON: ${err.message}` });
      return;
    }
    if (body === null || typeof body !== 'object' || Array.isArray(body)) {
      answer(400, { error: 'body must be a JSON object like {"status":503,"count":2}' });
      return;
    }
    const unknown = Object.keys(body).filter((k) => k !== 'status' && k !== 'count');
    if (unknown.length) {
      answer(400, { error: `unknown field(s) ${unknown.join(', ')}; known: status, count` });
      return;
    }
    const status = body.status === undefined ? 503 : body.status;
    const { count } = body;
    if (!Number.isInteger(status) || status < 400 || status > 599) {
      answer(400, { error: 'status must be an integer 400..599 (default 503)' });
      return;
    }
    if (!Number.isInteger(count) || count < 0) {
      answer(400, { error: 'count must be a non-negative integer (0 disarms)' });
      return;
    }
    failTokenEndpoint.status = status;
    failTokenEndpoint.remaining = count;
    log(`test: the next ${count} token endpoint request(s) will be answered ${status}`);
    answer(200, { status, count });
  });
}

await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(requestedPort, '127.0.0.1', resolve);
}).catch((err) => fail(`cannot listen on 127.0.0.1:${requestedPort}: ${err.message}`));

const { port } = server.address();
const issuer = cfg.publicIssuer === null ? `http://127.0.0.1:${port}` : cfg.publicIssuer;

function claimsFor(login) {
  return {
    sub: login,
    name: `Test User ${login}`,
    given_name: 'Test',
    family_name: `User ${login}`,
    preferred_username: login,
    email: `${login}@example.test`,
    email_verified: true,
    ...idTokenPad(),
  };
}

const htmlEscape = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

// features.resourceIndicators for jwtAccessTokens: the one resource server is the default
// resource of every authorization request (so it is part of every grant and code), and at the
// token endpoint the granted resource is used even without a `resource` parameter and even
// though `openid` was granted (useGrantedResource -> true; otherwise oidc-provider would issue
// an opaque userinfo-only token).
function jwtResourceIndicators({ audience, resourceIndicator }) {
  return {
    enabled: true,
    async defaultResource(ctx, client, oneOf) {
      if (oneOf) return oneOf.includes(resourceIndicator) ? resourceIndicator : oneOf;
      return resourceIndicator;
    },
    async useGrantedResource() {
      return true;
    },
    async getResourceServerInfo(ctx, indicator) {
      if (indicator !== resourceIndicator) {
        throw new oidcErrors.InvalidTarget(`unknown resource indicator; the only resource server is ${resourceIndicator}`);
      }
      return {
        scope: SCOPES.join(' '),
        audience,
        accessTokenTTL: cfg.accessTokenTtl,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: 'RS256', kid: signingJwk.kid } },
      };
    },
  };
}

const narrowing = narrowingSetup(cfg, {
  fail, scopes: SCOPES, signingKid: signingJwk.kid, errors: oidcErrors, getStats: () => stats,
});

let provider;
try {
  provider = new Provider(issuer, {
    // unboundedStore: see map-adapter.mjs (absent: oidc-provider's development LRU).
    ...(cfg.unboundedStore ? { adapter: MapAdapter } : {}),
    clients: cfg.clients,
    jwks: { keys: [signingJwk] },
    cookies: { keys: cookieKeys },
    responseTypes: ['code'],
    scopes: SCOPES,
    claims: {
      openid: ['sub'],
      profile: ['name', 'given_name', 'family_name', 'preferred_username', ...(bigTokens.idToken > 0 ? ['pad'] : [])],
      email: ['email', 'email_verified'],
      acr: null,
      sid: null,
      auth_time: null,
      iss: null,
    },
    conformIdTokenClaims: cfg.conformIdTokenClaims,
    acrValues: cfg.acrValues,
    // Client authentication (token, PAR, revocation, introspection endpoints). These are
    // oidc-provider's defaults, spelled out: a client picks one with token_endpoint_auth_method
    // (private_key_jwt: `jwks` with its public key, optionally token_endpoint_auth_signing_alg).
    clientAuthMethods: ['client_secret_basic', 'client_secret_post', 'client_secret_jwt', 'private_key_jwt', 'none'],
    enabledJWA: {
      clientAuthSigningAlgValues: ['HS256', 'RS256', 'PS256', 'ES256', 'EdDSA'],
      // HS* too (OIDC Core §10.1, keyed with the client secret), for a client registered with
      // id_token_signed_response_alg: 'HS256' (tests/api/discovery.rs); the others get RS256.
      idTokenSigningAlgValues: ['RS256', 'PS256', 'ES256', 'EdDSA', 'HS256', 'HS384', 'HS512'],
    },
    async findAccount(ctx, sub) {
      if (typeof sub !== 'string' || sub === '') return undefined;
      return {
        accountId: sub,
        async claims() {
          return claimsFor(sub);
        },
      };
    },
    pkce: {
      methods: ['S256'],
      required: () => true,
    },
    async issueRefreshToken(ctx, client, code) {
      if (!client.grantTypeAllowed('refresh_token')) return false;
      return cfg.issueRefreshToken || code.scopes.has('offline_access');
    },
    async expiresWithSession(ctx, code) {
      return cfg.expiresWithSession && !code.scopes.has('offline_access');
    },
    rotateRefreshToken: cfg.rotateRefreshToken,
    ttl: {
      AccessToken: () => cfg.accessTokenTtl,
      AuthorizationCode: () => cfg.authorizationCodeTtl,
      IdToken: () => cfg.idTokenTtl,
      RefreshToken: () => cfg.refreshTokenTtl,
      Grant: () => Math.max(cfg.refreshTokenTtl, cfg.sessionTtl),
      Session: () => cfg.sessionTtl,
      Interaction: () => 600,
      ClientCredentials: () => cfg.accessTokenTtl,
      DeviceCode: () => 600,
      BackchannelAuthenticationRequest: () => 600,
    },
    features: {
      devInteractions: { enabled: true },
      revocation: { enabled: true },
      introspection: { enabled: true },
      userinfo: { enabled: true },
      claimsParameter: { enabled: true },
      // PAR (RFC 9126) for every client; a client with require_pushed_authorization_requests:
      // true must use it (that client metadata needs no other switch). Not required globally.
      pushedAuthorizationRequests: { enabled: true, requirePushedAuthorizationRequests: false },
      // Without jwtAccessTokens: oidc-provider's defaults (enabled, but no resource server is
      // known, so a `resource` parameter is refused with invalid_target; opaque tokens).
      ...(jwtResource ? { resourceIndicators: jwtResourceIndicators(jwtResource) } : {}),
      ...(narrowing ? narrowing.features : {}),
      ...(cfg.backchannelLogout ? { backchannelLogout: { enabled: true } } : {}),
      rpInitiatedLogout: {
        enabled: true,
        async logoutSource(ctx, form) {
          ctx.body = `<!DOCTYPE html><html><head><meta charset="utf-8"><title>Logout Request</title></head><body>
<h1>Do you want to sign-out from ${htmlEscape(ctx.host)}?</h1>
${form}
<button autofocus type="submit" form="op.logoutForm" value="yes" name="logout">Yes, sign me out</button>
<button type="submit" form="op.logoutForm">No, stay signed in</button>
</body></html>`;
        },
        async postLogoutSuccessSource(ctx) {
          ctx.body = '<!DOCTYPE html><html><head><meta charset="utf-8"><title>Sign-out Success</title></head><body><h1>Sign-out Success</h1></body></html>';
        },
      },
    },
    async renderError(ctx, out) {
      ctx.type = 'html';
      ctx.body = `<!DOCTYPE html><html><head><meta charset="utf-8"><title>error</title></head><body>${
        Object.entries(out).map(([k, v]) => `<pre><strong>${htmlEscape(k)}</strong>: ${htmlEscape(v)}</pre>`).join('')
      }</body></html>`;
    },
  });
} catch (err) {
  fail(`invalid provider configuration: ${err.message}${err.error_description ? ` (${err.error_description})` : ''}`);
}

provider.proxy = false;
narrowing?.install(provider);

// bigTokens: opaque access and refresh tokens of the configured length (the token value is its
// id, the key under which the provider stores it, so userinfo, introspection and revocation all
// keep working).
for (const [model, chars] of [[provider.AccessToken, bigTokens.accessToken], [provider.RefreshToken, bigTokens.refreshToken]]) {
  if (chars > 0) {
    // The original still runs: for access tokens it also decides the format (JWT access tokens
    // keep their own jti).
    const original = model.prototype.generateTokenId;
    model.prototype.generateTokenId = function generateBigTokenId(...args) {
      const id = original.apply(this, args);
      if (this.format && this.format !== 'opaque') return id;
      return crypto.randomBytes(Math.ceil((chars * 3) / 4) + 1).toString('base64url').slice(0, chars);
    };
  }
}

// loginAcr: the dev interactions' login records no acr; add it to every finished login.
if (cfg.loginAcr !== null) {
  const interactionFinished = provider.interactionFinished.bind(provider);
  provider.interactionFinished = (req, res, result, options) => {
    if (result && result.login) result.login.acr = cfg.loginAcr;
    return interactionFinished(req, res, result, options);
  };
}

// oidc-provider validates static client metadata lazily (on first use): force it now so a bad
// `clients` entry fails the start (exit 2) instead of the first request.
for (const c of cfg.clients) {
  try {
    // eslint-disable-next-line no-await-in-loop
    if (!await provider.Client.find(String(c.client_id))) throw new Error('not found after registration');
  } catch (err) {
    fail(`invalid client ${JSON.stringify(c.client_id)}: ${err.message}${err.error_description ? ` (${err.error_description})` : ''}`);
  }
}

provider.on('grant.success', (ctx) => {
  const gt = ctx.oidc.params.grant_type;
  if (gt === 'authorization_code') stats.authorization_code_grants += 1;
  else if (gt === 'refresh_token') stats.refresh_grants += 1;
});
provider.on('grant.error', (ctx, err) => {
  stats.grant_errors += 1;
  log(`token endpoint error: ${err.error}${err.error_description ? ` (${err.error_description})` : ''}${err.error_detail ? ` [${err.error_detail}]` : ''}`);
});
provider.on('authorization.success', () => { stats.authorizations += 1; });
provider.on('end_session.success', () => { stats.end_sessions += 1; });
for (const event of ['authorization.error', 'revocation.error', 'userinfo.error', 'end_session.error', 'introspection.error', 'server_error']) {
  provider.on(event, (ctx, err) => log(`${event}: ${err.error || err.message}${err.error_description ? ` (${err.error_description})` : ''}`));
}

// Test controls for the token endpoint (POST /test/fail-token-endpoint, tokenEndpointDelayMs).
// Whether a request is failed is decided on arrival (so with N concurrent requests exactly the
// first `count` to arrive fail); the delay applies to every token endpoint request, failed or not.
const tokenPath = provider.pathFor('token');
const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });
provider.use(async (ctx, next) => {
  if (ctx.path !== tokenPath) return next();
  let injectStatus = 0;
  if (failTokenEndpoint.remaining > 0) {
    failTokenEndpoint.remaining -= 1;
    injectStatus = failTokenEndpoint.status;
  }
  if (cfg.tokenEndpointDelayMs > 0) await sleep(cfg.tokenEndpointDelayMs);
  if (!injectStatus) return next();
  stats.injected_failures += 1;
  log(`test: token endpoint request answered ${injectStatus} (injected failure, ${failTokenEndpoint.remaining} left)`);
  ctx.status = injectStatus;
  ctx.set('cache-control', 'no-store');
  ctx.set('pragma', 'no-cache');
  ctx.body = { error: 'temporarily_unavailable' };
  return undefined;
});

// omitIss: no RFC 9207 (the `iss` response parameter is removed from every redirect that
// carries one, and discovery no longer advertises it).
if (cfg.omitIss) {
  provider.use(async (ctx, next) => {
    await next();
    if (ctx.oidc && ctx.oidc.route === 'discovery' && ctx.body && typeof ctx.body === 'object') {
      delete ctx.body.authorization_response_iss_parameter_supported;
    }
    const location = ctx.response.get('location');
    if (location && location.includes('iss=')) {
      const url = new URL(location);
      if (url.searchParams.has('iss')) {
        url.searchParams.delete('iss');
        ctx.set('location', url.href);
      }
    }
  });
}

// A slow JWKS endpoint (jwksDelayMs).
const jwksPath = provider.pathFor('jwks');
provider.use(async (ctx, next) => {
  if (ctx.path === jwksPath && cfg.jwksDelayMs > 0) await sleep(cfg.jwksDelayMs);
  return next();
});

// oidc-provider 8 emits no event for a successful revocation or userinfo call; count them here.
provider.use(async (ctx, next) => {
  await next();
  if (!ctx.oidc || ctx.status !== 200) return;
  if (ctx.oidc.route === 'revocation') {
    stats.revocations += 1;
    const e = ctx.oidc.entities;
    if (e.AccessToken || e.RefreshToken || e.ClientCredentials) stats.revoked_tokens += 1;
  } else if (ctx.oidc.route === 'userinfo') {
    stats.userinfo_requests += 1;
  }
});

// ---- userinfo requests by method (GET /test/stats: userinfo_get, userinfo_post) -------------
// Every userinfo request, answered or refused, counted by its HTTP method (OIDC Core §5.3.1
// allows GET and POST), so a test can tell which method a client used. Absent until the first.
provider.use(async (ctx, next) => {
  try {
    await next();
  } finally {
    if (ctx.oidc && ctx.oidc.route === 'userinfo' && (ctx.method === 'GET' || ctx.method === 'POST')) {
      const key = `userinfo_${ctx.method.toLowerCase()}`;
      stats[key] = (stats[key] ?? 0) + 1;
    }
  }
});

// ---- GET /test/last-authorization and GET /test/last-client-auth ------------------------
// The Koa ctx of a request is marked by oidc-provider's events; the middleware below reads the
// marks once the request has been handled.
const CLIENT_AUTH_ROUTES = new Set(['token', 'pushed_authorization_request', 'revocation']);
// Request parameters exactly as received: the query of a GET, the form body of a POST (both
// parsed with node:querystring by oidc-provider/Koa: percent-decoding, `+` = space; a repeated
// parameter becomes an array). Plain object, insertion order = order in the request.
function rawParams(ctx) {
  const src = ctx.method === 'POST' ? (ctx.oidc && ctx.oidc.body) || {} : ctx.query || {};
  const out = {};
  for (const [k, v] of Object.entries(src)) out[k] = Array.isArray(v) ? [...v] : v;
  return out;
}
// validation passed: either an interaction (login/consent) was started or none was needed
provider.on('interaction.started', (ctx) => { ctx.state.testAuthorizationAccepted = true; });
provider.on('authorization.accepted', (ctx) => { ctx.state.testAuthorizationAccepted = true; });
provider.on('authorization.error', (ctx) => { ctx.state.testAuthorizationError = true; });
// The client entity is assigned (OIDCContext#entity('Client', ..)) by oidc-provider's client
// authentication (its loadClient step) once the credentials were parsed and before they are
// checked; an error handler may assign it too, but only after it has set the error status (so
// ctx.status is no longer Koa's initial 404 then). A failed check is an invalid_client error.
const originalEntity = provider.OIDCContext.prototype.entity;
provider.OIDCContext.prototype.entity = function entity(key, value) {
  if (key === 'Client' && CLIENT_AUTH_ROUTES.has(this.route) && this.ctx.status === 404) {
    this.ctx.state.testClientLoaded = true;
  }
  return originalEntity.call(this, key, value);
};
for (const event of ['grant.error', 'revocation.error', 'pushed_authorization_request.error', 'server_error']) {
  provider.on(event, (ctx, err) => {
    if (ctx && ctx.state && (event === 'server_error' || (err && err.error === 'invalid_client'))) {
      ctx.state.testClientAuthFailed = true;
    }
  });
}
const PAR_MAX_AGE_MS = 10 * 60 * 1000;
provider.use(async (ctx, next) => {
  await next();
  const route = ctx.oidc && ctx.oidc.route;
  if (!route) return;

  if (CLIENT_AUTH_ROUTES.has(route) && ctx.state.testClientLoaded && !ctx.state.testClientAuthFailed && ctx.oidc.client) {
    const { client } = ctx.oidc;
    const body = (ctx.oidc.body) || {};
    let method;
    if (ctx.headers.authorization !== undefined) method = 'client_secret_basic';
    else if (body.client_assertion !== undefined) method = client.clientAuthMethod; // private_key_jwt / client_secret_jwt
    else if (body.client_secret !== undefined) method = 'client_secret_post';
    else method = 'none';
    lastClientAuth = {
      endpoint: route,
      method,
      client_id: client.clientId,
      registered_method: client.clientAuthMethod,
    };
    if (typeof body.client_assertion === 'string') {
      // The assertion's aud, as sent (its signature was checked by oidc-provider).
      try {
        const payload = JSON.parse(Buffer.from(body.client_assertion.split('.')[1], 'base64url').toString('utf8'));
        lastClientAuth.assertion_aud = payload.aud;
      } catch { /* cannot happen: oidc-provider accepted it */ }
    }
  }

  if (route === 'pushed_authorization_request' && ctx.status === 201 && ctx.body && ctx.body.request_uri) {
    const params = rawParams(ctx);
    for (const k of CLIENT_AUTH_PARAMS) delete params[k];
    const now = Date.now();
    for (const [uri, entry] of pushedRequests) {
      if (now - entry.at > PAR_MAX_AGE_MS) pushedRequests.delete(uri);
    }
    pushedRequests.set(ctx.body.request_uri, { params, at: now });
  }

  if (route === 'authorization' && ctx.state.testAuthorizationAccepted && !ctx.state.testAuthorizationError) {
    const front = rawParams(ctx);
    const par = ctx.oidc.entities && ctx.oidc.entities.PushedAuthorizationRequest;
    if (par) {
      let params;
      const entry = typeof front.request_uri === 'string' ? pushedRequests.get(front.request_uri) : undefined;
      if (entry) {
        ({ params } = entry);
        pushedRequests.delete(front.request_uri);
      } else {
        // not seen by this middleware (cannot happen, but be safe): oidc-provider's own copy
        // (an unsecured JWT of the validated parameters; claims re-serialised)
        const payload = JSON.parse(Buffer.from(String(par.request).split('.')[1], 'base64url').toString('utf8'));
        for (const k of ['iat', 'exp', 'nbf', 'iss', 'aud']) delete payload[k];
        if (payload.claims && typeof payload.claims === 'object') payload.claims = JSON.stringify(payload.claims);
        params = payload;
      }
      lastAuthorization = { ...params, pushed: true, front_channel: front };
    } else {
      lastAuthorization = { ...front, pushed: false };
    }
  }
});

// ---- GET /test/last-token-request (tests/api/discovery.rs) --------------------------------
// The most recent token endpoint request: its grant_type, its x-* headers and its body
// parameters, without client authentication, codes, verifiers or tokens.
const TOKEN_REQUEST_SECRETS = new Set([...CLIENT_AUTH_PARAMS, 'code', 'code_verifier', 'refresh_token']);
provider.use(async (ctx, next) => {
  await next();
  if (!ctx.oidc || ctx.oidc.route !== 'token') return;
  const headers = {};
  for (const [k, v] of Object.entries(ctx.headers)) if (k.startsWith('x-')) headers[k] = v;
  const params = rawParams(ctx);
  for (const k of TOKEN_REQUEST_SECRETS) delete params[k];
  lastTokenRequest = { status: ctx.status, grant_type: params.grant_type, headers, params };
});

providerCallback = provider.callback();

// THE one line on stdout.
process.stdout.write(`${JSON.stringify({ issuer })}\n`);
log(`listening, issuer ${issuer}, clients: ${cfg.clients.map((c) => c.client_id).join(', ')}, access tokens: ${
  jwtResource ? `JWT for audience ${jwtResource.audience}` : 'opaque'}${
  cfg.tokenEndpointDelayMs ? `, token endpoint delay ${cfg.tokenEndpointDelayMs} ms` : ''}, max lifetime ${maxLifetime}s, stdin: ${stdinKind}${watchStdin ? ' (exit on EOF)' : ''}`);

