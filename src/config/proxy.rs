//! The API proxy's configuration: `[proxy]` and `[[routes]]`.
//!
//! Route paths are checked against the agent's base path and the cookie path here, so the
//! proxy can trust that a route never shadows an agent endpoint and always receives the
//! session cookies.

use super::de::{bool_or_text, duration, duration_or_zero, list_or_text, opt_list_or_text};
use super::route_access::{RawAccess, RouteAccess};
use super::{parse_url, within, BasePath, ConfigError};
use crate::secret::Token;
use actix_web::http::header::{self, HeaderName, HeaderValue, InvalidHeaderValue};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;
use url::Url;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawProxy {
    #[serde(deserialize_with = "duration_or_zero")]
    refresh_ahead: Duration,
    #[serde(deserialize_with = "list_or_text")]
    forward_auth_paths: Vec<String>,
}

impl Default for RawProxy {
    fn default() -> Self {
        Self {
            refresh_ahead: Duration::from_secs(60),
            forward_auth_paths: Vec::new(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    path: String,
    upstream: String,
    #[serde(default, deserialize_with = "bool_or_text")]
    strip_prefix: bool,
    #[serde(default = "default_route_timeout", deserialize_with = "duration")]
    timeout: Duration,
    #[serde(default, deserialize_with = "bool_or_text")]
    allow_bearer: bool,
    #[serde(default, deserialize_with = "bool_or_text")]
    websocket: bool,
    #[serde(default, deserialize_with = "list_or_text")]
    allow_headers: Vec<String>,
    #[serde(default)]
    token_header: Option<String>,
    #[serde(default)]
    token_format: Option<String>,
    #[serde(default)]
    auth: Option<String>,
    #[serde(default, deserialize_with = "opt_list_or_text")]
    methods: Option<Vec<String>>,
    #[serde(default)]
    identity_headers: BTreeMap<String, String>,
    #[serde(default)]
    assertion_header: Option<String>,
    // Which token the route gets (see [`Narrowing`]).
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    resource: Option<String>,
    #[serde(default)]
    audience: Option<String>,
    #[serde(default)]
    scope: Option<String>,
    provider: Option<String>,
}

/// Request headers that make a server behind the proxy act on what the client says: serve
/// another path than the one routed (`X-Original-URL`, `X-Rewrite-URL`: IIS, Symfony, Laminas),
/// run another method than the one checked for CSRF (`X-HTTP-Method-Override` and its
/// variants), or believe a client address (`X-Real-IP`, `True-Client-IP`, `X-Client-IP`, RFC
/// 7239 `Forwarded`; token-handler writes `X-Forwarded-*` itself). Withheld from the upstream
/// unless a route lists one in `allow_headers`.
pub const INSTRUCTING_REQUEST_HEADERS: [&str; 9] = [
    "x-original-url",
    "x-rewrite-url",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-real-ip",
    "true-client-ip",
    "x-client-ip",
    "forwarded",
];

/// Response headers that a web server in front of token-handler obeys rather than relays:
/// nginx's `X-Accel-*` (`X-Accel-Redirect` serves any internal location or file), and
/// `X-Sendfile` (Apache, lighttpd; `X-LIGHTTPD-send-file` is lighttpd's older name). From the
/// upstream, they would let an API answer with files or locations only the front server should
/// reach. Withheld from the client unless a route lists one in `allow_headers`.
pub fn is_instructing_response_header(name: &str) -> bool {
    name.starts_with("x-accel-") || name == "x-sendfile" || name == "x-lighttpd-send-file"
}

fn default_route_timeout() -> Duration {
    Duration::from_secs(30)
}

/// The API proxy's settings.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Refresh an access token this long before it expires, so calls never carry a token that
    /// expires in flight.
    pub refresh_ahead: Duration,
    /// Paths of APIs behind a gateway that asks `GET <base_path>/auth` (forward auth): the
    /// refresh-token cookie is also sent to these.
    pub forward_auth_paths: Vec<RoutePath>,
    /// Routes, longest path first (so the first match is the longest).
    pub routes: Vec<RouteConfig>,
}

/// A route prefix: `/segment[/segment…]`, no trailing slash, matched on segment boundaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePath(String);

impl RoutePath {
    pub fn parse(text: &str) -> Result<Self, String> {
        let base = BasePath::parse(text)?;
        if base.as_str().is_empty() {
            return Err(format!(
                "`{text}` would capture every path; name the API's prefix, e.g. \"/api\""
            ));
        }
        Ok(Self(base.as_str().to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether a request path is this prefix or below it (`/api` matches `/api` and `/api/x`,
    /// not `/apix`).
    pub fn matches(&self, path: &str) -> bool {
        path.strip_prefix(self.0.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }
}

/// One proxied API.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub path: RoutePath,
    /// Scheme, authority and optional base path of the upstream.
    pub upstream: Url,
    /// Remove `path` from the forwarded path.
    pub strip_prefix: bool,
    /// Time allowed until the upstream's response headers arrive (sending the body included).
    pub timeout: Duration,
    /// Pass requests that carry their own Bearer token and none of our cookies unchanged
    /// (mobile clients).
    pub allow_bearer: bool,
    /// Pass WebSocket upgrades through (the connection is authenticated once, at the upgrade).
    pub websocket: bool,
    /// Headers of [`INSTRUCTING_REQUEST_HEADERS`] or [`is_instructing_response_header`] that this
    /// route lets through after all (lowercase, as `HeaderName` is).
    pub allow_headers: Vec<HeaderName>,
    /// The header that carries the token upstream (`token_header`, default `Authorization`), for
    /// APIs that expect it elsewhere (e.g. `x-pat-jwt`). Whatever the client sends under this
    /// name is dropped, so a client can never choose the token the upstream sees.
    pub token_header: HeaderName,
    /// How the token is written into [`Self::token_header`] (`token_format`).
    pub token_format: TokenFormat,
    /// `auth`, `methods` and `identity_headers` ([`RouteAccess`]).
    pub access: RouteAccess,
    /// A token narrowed for this API instead of the session's (`token = "resource"` or
    /// `"exchange"`); `None` forwards the session's access token (`token = "session"`).
    pub narrowing: Option<Narrowing>,
    /// The provider whose session's token this route forwards (`provider`, a configured id,
    /// checked by [`check_route_providers`]); `None`: the default provider's session, or the
    /// one the browser holds ([`crate::session::SessionJar::default_for`]).
    pub provider: Option<String>,
}

/// `[[routes]] provider` names a configured provider: a typo would otherwise make every call to
/// the route a 401 no login could cure.
pub(super) fn check_route_providers(
    routes: &[RouteConfig],
    providers: &[super::ProviderConfig],
) -> Result<(), ConfigError> {
    // `routes` is sorted longest path first by now, so the entry is named by its path: an index
    // would not be the one in the file.
    for route in routes {
        if let Some(id) = &route.provider {
            if !providers.iter().any(|p| &p.id == id) {
                return Err(ConfigError::new(
                    format!("routes[path = \"{}\"].provider", route.path.as_str()),
                    format!("`{id}` is not the id of a configured [[providers]] entry"),
                ));
            }
        }
    }
    Ok(())
}

/// A `token_format` template such as `Bearer {token}`: the text around its one `{token}`
/// placeholder, checked at load to be valid header-value text (RFC 9110 §5.5: visible ASCII,
/// spaces and tabs; never CR or LF, which would let a template inject further headers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenFormat {
    before: String,
    after: String,
}

/// The placeholder a `token_format` must hold exactly once.
const TOKEN_PLACEHOLDER: &str = "{token}";

impl Default for TokenFormat {
    /// `Bearer {token}` (RFC 6750 §2.1).
    fn default() -> Self {
        Self {
            before: "Bearer ".to_string(),
            after: String::new(),
        }
    }
}

impl TokenFormat {
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.matches(TOKEN_PLACEHOLDER).count() != 1 {
            return Err(format!(
                "must hold the placeholder {TOKEN_PLACEHOLDER} exactly once, e.g. \"Bearer {TOKEN_PLACEHOLDER}\""
            ));
        }
        let (before, after) = text.split_once(TOKEN_PLACEHOLDER).unwrap_or((text, ""));
        if text.trim_matches([' ', '\t']) != text {
            return Err(
                "must not start or end with spaces or tabs (RFC 9110 §5.5 trims them)".into(),
            );
        }
        if HeaderValue::from_str(&format!("{before}x{after}")).is_err()
            || text
                .chars()
                .any(|c| !(c == ' ' || c == '\t' || c.is_ascii_graphic()))
        {
            return Err(
                "may hold only visible ASCII, spaces and tabs (no CR, LF or other control characters: RFC 9110 §5.5)"
                    .into(),
            );
        }
        Ok(Self {
            before: before.to_string(),
            after: after.to_string(),
        })
    }

    /// The header value for `token`; an error when the token itself is not header-value text
    /// (never the case for tokens from a provider's token response, but not trusted either).
    /// Made once per token and format, then shared ([`Token::header_value`]).
    pub fn value(&self, token: &Token) -> Result<HeaderValue, InvalidHeaderValue> {
        token.header_value(&self.before, &self.after, |t| self.frame(t))
    }

    fn frame(&self, token: &str) -> Result<HeaderValue, InvalidHeaderValue> {
        if !token.is_ascii() {
            // Refused as before: `from_str` takes visible ASCII only, where the byte check of
            // `from_maybe_shared` below would let other bytes through.
            return HeaderValue::from_str(&format!("{}{token}{}", self.before, self.after));
        }
        // Built once, in a buffer of the final size, and handed over without a copy: a token
        // can be 16 KB (issue 17).
        let mut value = Vec::with_capacity(self.before.len() + token.len() + self.after.len());
        value.extend_from_slice(self.before.as_bytes());
        value.extend_from_slice(token.as_bytes());
        value.extend_from_slice(self.after.as_bytes());
        HeaderValue::from_maybe_shared(actix_web::web::Bytes::from(value))
    }
}

/// Names a route cannot carry its token in: hop-by-hop headers (RFC 9110 §7.6.1), headers that
/// frame or route the message, our cookies' header, the handshake headers of a WebSocket
/// upgrade, and the headers the proxy writes or withholds itself. Setting the token in one of
/// these would corrupt the request or hand the token to a server that does not expect it.
fn reserved_token_header(name: &str) -> bool {
    const RESERVED: [&str; 20] = [
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "cookie",
        "set-cookie",
        "content-length",
        "content-type",
        "content-encoding",
        "expect",
        "origin",
        "user-agent",
        "accept",
        "accept-encoding",
    ];
    RESERVED.contains(&name)
        || INSTRUCTING_REQUEST_HEADERS.contains(&name)
        || name.starts_with("x-forwarded-")
        || name.starts_with("sec-websocket-")
}

/// `token_header`: a header name (any case, nothing around it), not one of
/// [`reserved_token_header`].
fn parse_token_header(key: &str, text: &str) -> Result<HeaderName, ConfigError> {
    let name = HeaderName::from_bytes(text.as_bytes())
        .map_err(|_| ConfigError::new(key, format!("`{text}` is not a header name")))?;
    if reserved_token_header(name.as_str()) {
        return Err(ConfigError::new(
            key,
            format!(
                "`{text}` cannot carry the token: hop-by-hop, framing, cookie, WebSocket handshake and X-Forwarded-* headers are the proxy's own"
            ),
        ));
    }
    Ok(name)
}

impl TryFrom<(usize, RawRoute)> for RouteConfig {
    type Error = ConfigError;

    /// Validates `routes[i]` on its own (see [`validate_proxy`] for the rules it must meet
    /// against the other sections and routes).
    fn try_from((i, r): (usize, RawRoute)) -> Result<Self, ConfigError> {
        let k = |name: &str| format!("routes[{i}].{name}");
        let path = RoutePath::parse(&r.path).map_err(|m| ConfigError::new(k("path"), m))?;
        let upstream = parse_url(&k("upstream"), &r.upstream)?;
        if upstream.query().is_some()
            || upstream.fragment().is_some()
            || !upstream.username().is_empty()
            || upstream.password().is_some()
        {
            return Err(ConfigError::new(
                k("upstream"),
                "must be scheme://host[:port][/base-path] without query, fragment or credentials",
            ));
        }
        let allow_headers = r
            .allow_headers
            .iter()
            .enumerate()
            .map(|(j, text)| parse_allowed_header(&format!("routes[{i}].allow_headers[{j}]"), text))
            .collect::<Result<_, _>>()?;
        let token_header = match &r.token_header {
            Some(text) => parse_token_header(&k("token_header"), text)?,
            None => header::AUTHORIZATION,
        };
        let token_format = match &r.token_format {
            Some(text) => {
                TokenFormat::parse(text).map_err(|m| ConfigError::new(k("token_format"), m))?
            }
            None => TokenFormat::default(),
        };
        let access = RouteAccess::parse(
            RawAccess {
                auth: r.auth.as_deref(),
                methods: r.methods.as_deref(),
                identity_headers: &r.identity_headers,
                assertion_header: r.assertion_header.as_deref(),
                websocket: r.websocket,
                token_header: &token_header,
            },
            k,
            reserved_token_header,
        )?;
        let narrowing = parse_narrowing(&k, &r)?;
        Ok(Self {
            narrowing,
            path,
            upstream,
            strip_prefix: r.strip_prefix,
            timeout: r.timeout,
            allow_bearer: r.allow_bearer,
            websocket: r.websocket,
            allow_headers,
            token_header,
            token_format,
            access,
            provider: r.provider,
        })
    }
}

/// How a route's token is narrowed for its API (`token`, `resource`, `audience`, `scope`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Narrowing {
    pub kind: NarrowKind,
    /// RFC 8707 §2: the API's resource indicator, an absolute URI without a fragment, kept as
    /// written (a parser's normalisation, such as a trailing `/`, would name another resource).
    pub resource: Option<String>,
    /// RFC 8693 §2.1: the logical name of the API (exchange only).
    pub audience: Option<String>,
    /// A narrower scope (RFC 6749 §3.3 syntax), sent as `scope`.
    pub scope: Option<String>,
}

/// The grant that narrows a route's token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NarrowKind {
    /// A refresh-token grant with `resource` (RFC 8707 §2.2).
    Resource,
    /// A token exchange with the session's access token as subject (RFC 8693 §2.1).
    Exchange,
}

/// `token`, `resource`, `audience` and `scope` of a route: `None` for the session's token. Keys
/// that only mean something to a narrowed token are refused on a `"session"` route, and
/// `audience` (a token-exchange parameter) on a `"resource"` route, so a misread configuration
/// never forwards a broader token than the operator meant.
fn parse_narrowing(
    k: &dyn Fn(&str) -> String,
    r: &RawRoute,
) -> Result<Option<Narrowing>, ConfigError> {
    let kind = match r.token.as_deref().map(str::trim) {
        None | Some("session") => None,
        Some("resource") => Some(NarrowKind::Resource),
        Some("exchange") => Some(NarrowKind::Exchange),
        Some(other) => {
            return Err(ConfigError::new(
                k("token"),
                format!("`{other}` is not one of \"session\", \"resource\", \"exchange\""),
            ))
        }
    };
    let resource = match r.resource.as_deref().map(str::trim) {
        Some(text) => {
            // RFC 8707 §2: an absolute URI, without a fragment.
            let url = Url::parse(text).map_err(|_| {
                ConfigError::new(k("resource"), "must be an absolute URI (RFC 8707 §2)")
            })?;
            if url.fragment().is_some() || text.contains('#') {
                return Err(ConfigError::new(
                    k("resource"),
                    "must not have a fragment (RFC 8707 §2)",
                ));
            }
            if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(ConfigError::new(
                    k("resource"),
                    "must not hold spaces or control characters",
                ));
            }
            Some(text.to_string())
        }
        None => None,
    };
    let audience = match r.audience.as_deref().map(str::trim) {
        Some("") => return Err(ConfigError::new(k("audience"), "must not be empty")),
        Some(a) if a.chars().any(char::is_control) => {
            return Err(ConfigError::new(
                k("audience"),
                "must not hold control characters",
            ))
        }
        other => other.map(String::from),
    };
    let scope = match r.scope.as_deref() {
        Some(text) => Some(parse_scope(text).map_err(|m| ConfigError::new(k("scope"), m))?),
        None => None,
    };
    let Some(kind) = kind else {
        for (name, set) in [
            ("resource", resource.is_some()),
            ("audience", audience.is_some()),
            ("scope", scope.is_some()),
        ] {
            if set {
                return Err(ConfigError::new(
                    k(name),
                    "only applies to a narrowed token: set token = \"resource\" or \"exchange\"",
                ));
            }
        }
        return Ok(None);
    };
    match kind {
        NarrowKind::Resource if resource.is_none() => Err(ConfigError::new(
            k("resource"),
            "token = \"resource\" needs the API's resource indicator (RFC 8707 §2.2)",
        )),
        NarrowKind::Resource if audience.is_some() => Err(ConfigError::new(
            k("audience"),
            "is a token-exchange parameter (RFC 8693): use token = \"exchange\", or resource",
        )),
        NarrowKind::Exchange if resource.is_none() && audience.is_none() => Err(ConfigError::new(
            k("audience"),
            "token = \"exchange\" needs audience or resource (RFC 8693 §2.1)",
        )),
        _ => Ok(Some(Narrowing {
            kind,
            resource,
            audience,
            scope,
        })),
    }
}

/// A `scope` value: space-separated scope tokens (RFC 6749 §3.3: `%x21 / %x23-5B / %x5D-7E`),
/// at least one, written back with single spaces.
fn parse_scope(text: &str) -> Result<String, String> {
    let tokens: Vec<&str> = text.split(' ').filter(|t| !t.is_empty()).collect();
    if tokens.is_empty() {
        return Err("must name at least one scope".into());
    }
    let valid = |t: &&str| {
        t.bytes()
            .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
    };
    if !tokens.iter().all(valid) {
        return Err(
            "scopes are separated by spaces and hold only visible ASCII other than \" and \\ (RFC 6749 §3.3)"
                .into(),
        );
    }
    Ok(tokens.join(" "))
}

/// `[proxy]` and the routes, with the rules between sections: no route or forward-auth path
/// may overlap the agent's base path or lie outside the cookie path, and no two routes share a
/// path.
pub(super) fn validate_proxy(
    raw: RawProxy,
    raw_routes: Vec<RawRoute>,
    base_path: &BasePath,
    cookie_path: &str,
) -> Result<ProxyConfig, ConfigError> {
    // A prefix that contains the agent's base path, or lies inside it, would shadow or be
    // shadowed by the agent endpoints.
    let clashes = |p: &RoutePath| {
        !base_path.as_str().is_empty()
            && (p.matches(base_path.as_str())
                || RoutePath(base_path.as_str().to_string()).matches(p.as_str()))
    };
    let mut forward_auth_paths = Vec::new();
    for (i, text) in raw.forward_auth_paths.iter().enumerate() {
        let key = format!("proxy.forward_auth_paths[{i}]");
        let p = RoutePath::parse(text).map_err(|m| ConfigError::new(&key, m))?;
        if !within(&format!("{}/", p.as_str()), cookie_path) {
            return Err(ConfigError::new(
                key,
                format!("must lie within cookies.path `{cookie_path}`"),
            ));
        }
        forward_auth_paths.push(p);
    }
    let mut routes: Vec<RouteConfig> = Vec::new();
    for (i, r) in raw_routes.into_iter().enumerate() {
        let route = RouteConfig::try_from((i, r))?;
        let key = format!("routes[{i}].path");
        let path = route.path.as_str();
        if clashes(&route.path) {
            return Err(ConfigError::new(
                key,
                format!(
                    "`{path}` overlaps server.base_path `{}`, where the agent endpoints live",
                    base_path.as_str()
                ),
            ));
        }
        if !within(&format!("{path}/"), cookie_path) {
            return Err(ConfigError::new(
                key,
                format!(
                    "`{path}` must lie within cookies.path `{cookie_path}`, or the access-token cookie never reaches it"
                ),
            ));
        }
        if routes.iter().any(|o| o.path == route.path) {
            return Err(ConfigError::new(key, "another route has the same path"));
        }
        routes.push(route);
    }
    routes.sort_by_key(|r| std::cmp::Reverse(r.path.as_str().len()));
    Ok(ProxyConfig {
        refresh_ahead: raw.refresh_ahead,
        forward_auth_paths,
        routes,
    })
}

/// The index of the first route with `assertion_header` when no listener publishes the key.
pub(super) fn assertion_without_listener(routes: &[RawRoute], listener: bool) -> Option<usize> {
    match listener {
        true => None,
        false => routes.iter().position(|r| r.assertion_header.is_some()),
    }
}

/// One `allow_headers` entry: a header name (any case) that the proxy would otherwise withhold.
/// Any other name is refused, so the list cannot open the proxy to cookies, `Authorization` or
/// hop-by-hop headers, and a misspelt name does not pass unnoticed.
fn parse_allowed_header(key: &str, text: &str) -> Result<HeaderName, ConfigError> {
    let name = HeaderName::from_bytes(text.trim().as_bytes())
        .map_err(|_| ConfigError::new(key, format!("`{text}` is not a header name")))?;
    let n = name.as_str();
    if INSTRUCTING_REQUEST_HEADERS.contains(&n) || is_instructing_response_header(n) {
        Ok(name)
    } else {
        Err(ConfigError::new(
            key,
            format!(
                "`{text}` is not withheld by the proxy; allow_headers takes only {}, x-accel-*, x-sendfile or x-lighttpd-send-file",
                INSTRUCTING_REQUEST_HEADERS.join(", ")
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, RoutePath};
    use crate::secret::Token;

    #[test]
    fn route_paths_match_on_segment_boundaries() {
        let p = RoutePath::parse("/api").expect("valid");
        assert!(p.matches("/api"));
        assert!(p.matches("/api/"));
        assert!(p.matches("/api/orders"));
        assert!(!p.matches("/apix"));
        assert!(!p.matches("/ap"));
        assert!(!p.matches("/"));
    }

    fn with_route(allow: &str) -> String {
        crate::config::test_toml(
            "",
            &format!(
                "{}[[routes]]\npath = \"/api\"\nupstream = \"http://127.0.0.1:9001\"\n{allow}",
                crate::config::TEST_PROVIDER
            ),
        )
    }

    #[test]
    fn allow_headers_takes_only_withheld_names_in_any_case() {
        let c = Config::from_toml(
            &with_route(r#"allow_headers = ["X-Real-IP", " x-accel-buffering", "forwarded"]"#),
            Vec::new(),
        )
        .expect("valid");
        let names: Vec<&str> = c.proxy.routes[0]
            .allow_headers
            .iter()
            .map(|h| h.as_str())
            .collect();
        assert_eq!(names, ["x-real-ip", "x-accel-buffering", "forwarded"]);
        let c = Config::from_toml(&with_route(""), Vec::new()).expect("valid");
        assert!(c.proxy.routes[0].allow_headers.is_empty());
        for bad in [
            "cookie",
            "authorization",
            "connection",
            "x-forwarded-for",
            "x-real ip",
            "",
        ] {
            let e = Config::from_toml(
                &with_route(&format!("allow_headers = [\"{bad}\"]")),
                Vec::new(),
            )
            .expect_err(bad);
            assert_eq!(e.key, "routes[0].allow_headers[0]", "{bad}");
        }
    }

    #[test]
    fn token_header_and_format_default_to_authorization_bearer() {
        let c = Config::from_toml(&with_route(""), Vec::new()).expect("valid");
        let r = &c.proxy.routes[0];
        assert_eq!(r.token_header.as_str(), "authorization");
        assert_eq!(
            r.token_format.value(&Token::new("abc")).expect("value"),
            "Bearer abc"
        );
        let c = Config::from_toml(
            &with_route("token_header = \"X-Pat-JWT\"\ntoken_format = \"JWT {token}; v=1\""),
            Vec::new(),
        )
        .expect("valid");
        let r = &c.proxy.routes[0];
        assert_eq!(r.token_header.as_str(), "x-pat-jwt");
        assert_eq!(
            r.token_format.value(&Token::new("abc")).expect("value"),
            "JWT abc; v=1"
        );
        let c = Config::from_toml(&with_route("token_format = \"{token}\""), Vec::new())
            .expect("valid");
        assert_eq!(
            c.proxy.routes[0]
                .token_format
                .value(&Token::new("abc"))
                .expect("value"),
            "abc"
        );
    }

    #[test]
    fn a_route_names_a_configured_provider_or_none() {
        let c = Config::from_toml(&with_route(""), Vec::new()).expect("valid");
        assert_eq!(c.proxy.routes[0].provider, None);
        let c =
            Config::from_toml(&with_route("provider = \"default\""), Vec::new()).expect("valid");
        assert_eq!(c.proxy.routes[0].provider.as_deref(), Some("default"));
        let e = Config::from_toml(&with_route("provider = \"drive\""), Vec::new())
            .expect_err("unknown provider");
        assert_eq!(e.key, "routes[path = \"/api\"].provider");
        assert!(e.to_string().contains("drive"), "{e}");
    }

    #[test]
    fn token_formats_need_one_placeholder_and_header_text() {
        for (bad, says) in [
            ("Bearer", "exactly once"),
            ("Bearer {Token}", "exactly once"),
            ("{token} {token}", "exactly once"),
            ("", "exactly once"),
            ("Bearer {token}\\r\\nX-Admin: 1", "no CR, LF"),
            ("Bearer {token}\\nx", "no CR, LF"),
            ("Bearer\\u0000{token}", "no CR, LF"),
            ("Bearer \u{e9}{token}", "visible ASCII"),
            (" Bearer {token}", "spaces or tabs"),
            ("Bearer {token} ", "spaces or tabs"),
        ] {
            let e = Config::from_toml(
                &with_route(&format!("token_format = \"{bad}\"")),
                Vec::new(),
            )
            .expect_err(bad);
            assert_eq!(e.key, "routes[0].token_format", "{bad}");
            assert!(e.message.contains(says), "{bad}: {}", e.message);
        }
    }

    #[test]
    fn token_header_refuses_reserved_and_invalid_names() {
        for bad in [
            "host",
            "Cookie",
            "content-length",
            "Transfer-Encoding",
            "connection",
            "upgrade",
            "proxy-authorization",
            "x-forwarded-for",
            "sec-websocket-key",
            "x-real-ip",
            "x pat",
            " x-pat",
            "x-pat\r\n",
            "",
        ] {
            let e = Config::from_toml(&with_route(&format!("token_header = {bad:?}")), Vec::new())
                .expect_err(bad);
            assert_eq!(e.key, "routes[0].token_header", "{bad}");
        }
    }

    #[test]
    fn narrowed_tokens_need_what_their_grant_sends() {
        use crate::config::NarrowKind;
        let c = Config::from_toml(&with_route(""), Vec::new()).expect("valid");
        assert!(c.proxy.routes[0].narrowing.is_none());
        let c = Config::from_toml(
            &with_route("token = \"resource\"\nresource = \"https://orders.example\"\nscope = \" orders:read  orders:list \""),
            Vec::new(),
        )
        .expect("valid");
        let n = c.proxy.routes[0].narrowing.as_ref().expect("narrowed");
        assert_eq!(n.kind, NarrowKind::Resource);
        assert_eq!(n.resource.as_deref(), Some("https://orders.example"));
        assert_eq!(n.scope.as_deref(), Some("orders:read orders:list"));
        let c = Config::from_toml(
            &with_route("token = \"exchange\"\naudience = \"billing\""),
            Vec::new(),
        )
        .expect("valid");
        let n = c.proxy.routes[0].narrowing.as_ref().expect("narrowed");
        assert_eq!(
            (n.kind, n.audience.as_deref()),
            (NarrowKind::Exchange, Some("billing"))
        );
        for (bad, key) in [
            ("token = \"narrow\"", "token"),
            ("token = \"resource\"", "resource"),
            ("token = \"resource\"\nresource = \"orders\"", "resource"),
            (
                "token = \"resource\"\nresource = \"https://o.example/#x\"",
                "resource",
            ),
            (
                "token = \"resource\"\nresource = \"https://o.example\"\naudience = \"o\"",
                "audience",
            ),
            ("token = \"exchange\"", "audience"),
            ("token = \"exchange\"\naudience = \"\"", "audience"),
            (
                "token = \"exchange\"\naudience = \"a\"\nscope = \"\"",
                "scope",
            ),
            (
                "token = \"exchange\"\naudience = \"a\"\nscope = \"a\\\"b\"",
                "scope",
            ),
            ("resource = \"https://o.example\"", "resource"),
            ("token = \"session\"\nscope = \"read\"", "scope"),
            ("audience = \"a\"", "audience"),
        ] {
            let e = Config::from_toml(&with_route(bad), Vec::new()).expect_err(bad);
            assert_eq!(e.key, format!("routes[0].{key}"), "{bad}: {}", e.message);
        }
    }
}
