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
//   * test-only routes on the same server: GET /test/stats, POST /test/reset.
//
// See README.md in this directory for the exact HTTP steps of the login/consent/logout.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as tty from 'node:tty';

// oidc-provider prints its notices with console.info (stdout). stdout is reserved for
// the single issuer line, so route every console method to stderr *before* importing it.
for (const method of ['log', 'info', 'debug', 'trace']) {
  // eslint-disable-next-line no-console
  console[method] = (...args) => console.error(...args);
}

const { default: Provider } = await import('oidc-provider');

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
};

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
for (const key of ['rotateRefreshToken', 'issueRefreshToken', 'expiresWithSession', 'conformIdTokenClaims']) {
  if (typeof cfg[key] !== 'boolean') fail(`OIDC_CONFIG.${key} must be a boolean`);
}
if (!Array.isArray(cfg.clients) || cfg.clients.length === 0) fail('OIDC_CONFIG.clients must be a non-empty array');

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
});
let stats = zeroStats();

// ---------------------------------------------------------------------------------------
// HTTP server: listen first (to learn the port), then build the provider with that issuer
// ---------------------------------------------------------------------------------------

let providerCallback;
server = http.createServer((req, res) => {
  const path = (req.url || '/').split('?')[0];
  if (path === '/test/stats' && req.method === 'GET') {
    res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
    res.end(JSON.stringify(stats));
    return;
  }
  if (path === '/test/reset' && req.method === 'POST') {
    stats = zeroStats();
    res.writeHead(204, { 'cache-control': 'no-store' });
    res.end();
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

await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(requestedPort, '127.0.0.1', resolve);
}).catch((err) => fail(`cannot listen on 127.0.0.1:${requestedPort}: ${err.message}`));

const { port } = server.address();
const issuer = `http://127.0.0.1:${port}`;

function claimsFor(login) {
  return {
    sub: login,
    name: `Test User ${login}`,
    given_name: 'Test',
    family_name: `User ${login}`,
    preferred_username: login,
    email: `${login}@example.test`,
    email_verified: true,
  };
}

const htmlEscape = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

let provider;
try {
  provider = new Provider(issuer, {
    clients: cfg.clients,
    jwks: { keys: [signingJwk] },
    cookies: { keys: cookieKeys },
    responseTypes: ['code'],
    scopes: ['openid', 'profile', 'email', 'offline_access'],
    claims: {
      openid: ['sub'],
      profile: ['name', 'given_name', 'family_name', 'preferred_username'],
      email: ['email', 'email_verified'],
      acr: null,
      sid: null,
      auth_time: null,
      iss: null,
    },
    conformIdTokenClaims: cfg.conformIdTokenClaims,
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

providerCallback = provider.callback();

// THE one line on stdout.
process.stdout.write(`${JSON.stringify({ issuer })}\n`);
log(`listening, issuer ${issuer}, clients: ${cfg.clients.map((c) => c.client_id).join(', ')}, max lifetime ${maxLifetime}s, stdin: ${stdinKind}${watchStdin ? ' (exit on EOF)' : ''}`);

