// Narrowed per-API tokens for the test provider (tests/api/narrowed.rs): RFC 8707 resource
// indicators with audience-restricted JWT access tokens, and an RFC 8693 token-exchange grant.
//
// Enabled by OIDC_CONFIG.narrowing (absent/null: nothing here applies):
//
//   {"resources": {"<absolute URI>": {"scope": "<extra scopes>"}, ...},   // required, >= 1
//    "tokenExchange": true,                                              // default false
//    "audiences": {"<logical name>": "<one of the resource URIs>"}}      // default {}
//
// * Every authorization request without `resource` is granted every listed resource (so a
//   refresh token can later be narrowed to any of them); the code grant itself still returns
//   the usual opaque (userinfo) access token, since no resource is asked for there.
// * A refresh_token grant with `resource=<uri>` returns an RS256 JWT access token (typ at+jwt)
//   whose `aud` is that URI alone; an unknown URI is refused with invalid_target.
// * tokenExchange: grant_type urn:ietf:params:oauth:grant-type:token-exchange with
//   subject_token (an access token of this provider issued to the same client),
//   subject_token_type urn:ietf:params:oauth:token-type:access_token, and `resource` and/or
//   `audience` (a name from `audiences`, or a resource URI): an RS256 JWT for that resource.
//   Every client gets the grant type added to its grant_types.
// * GET /test/stats gains `resource_grants` (refresh grants with `resource`) and
//   `token_exchange_grants` once the first one succeeded.

const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';

// Validates OIDC_CONFIG.narrowing and adjusts the clients; returns null when it is off, else
// { features: {resourceIndicators}, install(provider) } for provider.mjs to apply.
export function narrowingSetup(cfg, {
  fail, scopes, signingKid, errors, getStats,
}) {
  const n = cfg.narrowing;
  if (n === null || n === undefined) return null;
  if (typeof n !== 'object' || Array.isArray(n)) fail('OIDC_CONFIG.narrowing must be an object like {"resources":{"https://api.example.test":{}}}');
  const unknown = Object.keys(n).filter((k) => !['resources', 'tokenExchange', 'audiences'].includes(k));
  if (unknown.length) fail(`OIDC_CONFIG.narrowing has unknown field(s) ${unknown.join(', ')}; known: resources, tokenExchange, audiences`);
  if (cfg.jwtAccessTokens !== null) fail('OIDC_CONFIG.narrowing and jwtAccessTokens cannot be combined');
  if (typeof n.resources !== 'object' || n.resources === null || Object.keys(n.resources).length === 0) {
    fail('OIDC_CONFIG.narrowing.resources must name at least one resource URI');
  }
  const resources = new Map();
  for (const [uri, info] of Object.entries(n.resources)) {
    let href;
    try { ({ href } = new URL(uri)); } catch { fail(`OIDC_CONFIG.narrowing.resources: ${uri} is not an absolute URI`); }
    if (href.includes('#')) fail(`OIDC_CONFIG.narrowing.resources: ${uri} has a fragment`);
    const extra = (info && typeof info.scope === 'string') ? info.scope.split(' ').filter(Boolean) : [];
    resources.set(uri, [...scopes, ...extra]);
  }
  const audiences = n.audiences || {};
  for (const [name, uri] of Object.entries(audiences)) {
    if (!resources.has(uri)) fail(`OIDC_CONFIG.narrowing.audiences.${name} must be one of the resources`);
  }
  const tokenExchange = n.tokenExchange === true;
  if (tokenExchange) {
    cfg.clients = cfg.clients.map((c) => ({
      ...c,
      grant_types: [...new Set([...(c.grant_types || ['authorization_code']), TOKEN_EXCHANGE])],
    }));
  }

  const serverInfo = (uri) => ({
    scope: resources.get(uri).join(' '),
    audience: uri,
    accessTokenTTL: cfg.accessTokenTtl,
    accessTokenFormat: 'jwt',
    jwt: { sign: { alg: 'RS256', kid: signingKid } },
  });

  const resourceIndicators = {
    enabled: true,
    async defaultResource(ctx, client, oneOf) {
      // At the token endpoint with several granted and none asked for: no resource (the
      // opaque userinfo token); at authorization: every resource.
      if (oneOf) return undefined;
      return [...resources.keys()];
    },
    async useGrantedResource() {
      return false;
    },
    async getResourceServerInfo(ctx, indicator) {
      if (!resources.has(indicator)) {
        throw new errors.InvalidTarget('unknown resource indicator');
      }
      return serverInfo(indicator);
    },
  };

  function install(provider) {
    provider.on('grant.success', (ctx) => {
      const { grant_type: gt, resource } = ctx.oidc.params;
      const stats = getStats();
      if (gt === 'refresh_token' && resource) stats.resource_grants = (stats.resource_grants ?? 0) + 1;
      if (gt === TOKEN_EXCHANGE) stats.token_exchange_grants = (stats.token_exchange_grants ?? 0) + 1;
    });
    if (!tokenExchange) return;
    provider.registerGrantType(TOKEN_EXCHANGE, async (ctx, next) => {
      const { params, client } = ctx.oidc;
      if (params.subject_token_type !== ACCESS_TOKEN_TYPE) {
        throw new errors.InvalidRequest('subject_token_type must be an access token');
      }
      if (!params.subject_token) throw new errors.InvalidRequest('missing subject_token');
      const subject = await provider.AccessToken.find(params.subject_token);
      if (!subject) throw new errors.InvalidGrant('subject_token is invalid or expired');
      if (subject.clientId !== client.clientId) throw new errors.InvalidGrant('subject_token was issued to another client');
      let uri = params.resource;
      if (params.audience !== undefined) {
        const named = audiences[params.audience] ?? (resources.has(params.audience) ? params.audience : undefined);
        if (!named || (uri && uri !== named)) throw new errors.InvalidTarget('unknown audience');
        uri = named;
      }
      if (!uri || !resources.has(uri)) throw new errors.InvalidTarget('unknown or missing resource');
      const granted = new Set(String(subject.scope || '').split(' ').filter(Boolean));
      let scope = [...granted];
      if (params.scope) {
        const asked = params.scope.split(' ').filter(Boolean);
        const missing = asked.filter((s) => !granted.has(s));
        if (missing.length) throw new errors.InvalidScope('subject token lacks a requested scope', missing.join(' '));
        scope = asked;
      }
      const at = new provider.AccessToken({
        accountId: subject.accountId,
        client,
        grantId: subject.grantId,
        gty: 'token_exchange',
        scope: scope.filter((s) => resources.get(uri).includes(s)).join(' ') || undefined,
      });
      at.resourceServer = new provider.ResourceServer(uri, serverInfo(uri));
      ctx.oidc.entity('AccessToken', at);
      const value = await at.save();
      ctx.body = {
        access_token: value,
        issued_token_type: ACCESS_TOKEN_TYPE,
        token_type: 'Bearer',
        expires_in: at.expiration,
        scope: at.scope,
      };
      await next();
    }, ['subject_token', 'subject_token_type', 'requested_token_type', 'audience', 'resource', 'scope']);
  }

  return { features: { resourceIndicators }, install };
}
