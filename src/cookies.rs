//! Cookie names, paths and attributes, in one place.
//!
//! Every cookie is written and cleared through [`CookiePolicy`], so the attributes used to clear
//! a cookie are always exactly those used to set it: a cookie cleared with another Path or Domain
//! survives logout, which is the most common way token handlers fail to log out.
//!
//! Paths keep tokens off requests that do not need them: the refresh token (`-auth`) only goes to
//! the refresh and logout endpoints, the ID token (`-id`) only to claims, logout and userInfo. A cookie can
//! have one Path, so a cookie needed at two paths is written once per path.
//!
//! Names carry the prefixes browsers enforce (RFC 6265bis §4.1.3) when `cookies.name_prefixes`
//! is on (the default with `secure`): `__Host-` for the cookies at Path `/` without a Domain
//! (the browser then refuses any copy set by a sibling subdomain, over http, or for another
//! path), `__Secure-` for the path-scoped ones (refused over http). A sibling subdomain can then
//! no longer plant a session of its own (session fixation) under our names.
//!
//! A login in progress has a cookie of its own per flow, `<login name>-<flow id>` (the flow id
//! is derived from the flow's `state`, [`login_flow_id`]), so two tabs that sign in at the same
//! time do not overwrite each other's login state; at most [`MAX_PENDING_LOGINS`] are kept.

use crate::config::{Config, CookieConfig, SameSite};
use crate::crypto::{Purpose, Sealer};
use crate::error::ApiError;
use actix_web::cookie::{time::Duration as CookieDuration, Cookie};
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// Browsers drop a cookie whose name, value and attributes exceed this (RFC 6265 §6.1 minimum,
/// and what every major browser enforces) without telling anyone.
pub const MAX_COOKIE_BYTES: usize = 4096;

/// How many logins in progress (login cookies, one per flow) a browser keeps at most: a page
/// that starts logins in a loop would otherwise grow the Cookie header sent to the login path
/// until requests fail. `login/start` drops the oldest beyond it. Five covers a user who opens a
/// handful of tabs before signing in; each cookie is about 400 bytes.
pub const MAX_PENDING_LOGINS: usize = 5;

/// Length of a login flow id: 16 base64url characters, 96 bits of the state's SHA-256.
pub const LOGIN_FLOW_ID_LEN: usize = 16;

/// The id of the login flow with this `state`: the first [`LOGIN_FLOW_ID_LEN`] characters of
/// base64url(SHA-256(state)). `login/end` computes it from the callback's `state` to find the
/// flow's cookie by name. A hash, not the state itself: the name is a fixed-length cookie-name
/// token whatever the state holds, and does not repeat the state (which the authorization URL
/// carries) in every Cookie header. Which flow a cookie belongs to is still decided by the state
/// sealed inside it, compared in constant time; the name only says where to look.
pub fn login_flow_id(state: &str) -> String {
    let mut id = URL_SAFE_NO_PAD.encode(Sha256::digest(state.as_bytes()));
    id.truncate(LOGIN_FLOW_ID_LEN);
    id
}

/// Whether a name's tail is a flow id we could have written (base64url, at most 64
/// characters), so the name can be written back in a removal without surprises.
fn is_flow_id(flow: &str) -> bool {
    (1..=64).contains(&flow.len())
        && flow
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The cookies token-handler writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CookieKind {
    /// PKCE verifier, state and nonce of a login in progress.
    Login,
    /// The access token.
    AccessToken,
    /// The refresh token (named `-auth` for compatibility with Curity's OAuth Agent).
    RefreshToken,
    /// The ID token.
    IdToken,
    /// The CSRF value the SPA must echo in the `x-<prefix>-csrf` header.
    Csrf,
}

impl CookieKind {
    pub const ALL: [CookieKind; 5] = [
        CookieKind::Login,
        CookieKind::AccessToken,
        CookieKind::RefreshToken,
        CookieKind::IdToken,
        CookieKind::Csrf,
    ];

    /// Position in [`CookieKind::ALL`].
    fn index(self) -> usize {
        match self {
            CookieKind::Login => 0,
            CookieKind::AccessToken => 1,
            CookieKind::RefreshToken => 2,
            CookieKind::IdToken => 3,
            CookieKind::Csrf => 4,
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            CookieKind::Login => "login",
            CookieKind::AccessToken => "at",
            CookieKind::RefreshToken => "auth",
            CookieKind::IdToken => "id",
            CookieKind::Csrf => "csrf",
        }
    }

    /// The sealing purpose bound into this cookie's values.
    pub fn purpose(self) -> Purpose {
        match self {
            CookieKind::Login => Purpose::Login,
            CookieKind::AccessToken => Purpose::AccessToken,
            CookieKind::RefreshToken => Purpose::RefreshToken,
            CookieKind::IdToken => Purpose::IdToken,
            CookieKind::Csrf => Purpose::Csrf,
        }
    }
}

/// How each cookie is named, scoped and attributed, derived once from the configuration.
#[derive(Clone, Debug)]
pub struct CookiePolicy {
    prefix: String,
    /// `<prefix>-<suffix>` for each kind, by [`CookieKind::index`]: read on every request.
    names: [String; 5],
    csrf_header: String,
    secure: bool,
    same_site: SameSite,
    domain: Option<String>,
    login_max_age: i64,
    session_path: String,
    login_paths: Vec<String>,
    refresh_paths: Vec<String>,
    id_paths: Vec<String>,
}

impl CookiePolicy {
    /// The browser-enforced name prefix of a kind: `__Host-` needs Path `/` and no Domain.
    fn name_prefix(config: &CookieConfig, kind: CookieKind) -> &'static str {
        let at_root = matches!(kind, CookieKind::AccessToken | CookieKind::Csrf);
        match (
            config.name_prefixes,
            at_root && config.path == "/" && config.domain.is_none(),
        ) {
            (false, _) => "",
            (true, true) => "__Host-",
            (true, false) => "__Secure-",
        }
    }

    /// Derives names and paths: the refresh-token cookie goes to the agent's refresh and logout
    /// endpoints (under `base_path`), the `api_paths` (the proxy routes, and the forward-auth
    /// paths a gateway protects: the gateway forwards the browser's cookies for them), and
    /// nowhere else.
    pub fn new<'p>(
        config: &CookieConfig,
        base_path: &str,
        api_paths: impl IntoIterator<Item = &'p str>,
    ) -> Self {
        let mut refresh_paths = vec![
            format!("{base_path}/refresh"),
            format!("{base_path}/logout"),
        ];
        refresh_paths.extend(api_paths.into_iter().map(str::to_string));
        // A forward-auth path may also be a route: one cookie per distinct path.
        let mut seen = std::collections::HashSet::new();
        refresh_paths.retain(|p| seen.insert(p.clone()));
        Self {
            prefix: config.prefix.clone(),
            names: CookieKind::ALL.map(|k| {
                format!(
                    "{}{}-{}",
                    Self::name_prefix(config, k),
                    config.prefix,
                    k.suffix()
                )
            }),
            csrf_header: format!("x-{}-csrf", config.prefix),
            secure: config.secure,
            same_site: config.same_site,
            domain: config.domain.clone(),
            login_max_age: config.login_timeout.as_secs() as i64,
            session_path: config.path.clone(),
            login_paths: vec![format!("{base_path}/login")],
            refresh_paths,
            // `/userInfo` answers from the ID token's claims when the provider refuses an
            // API-audience access token, and checks the provider's `sub` against it.
            id_paths: vec![
                format!("{base_path}/claims"),
                format!("{base_path}/logout"),
                format!("{base_path}/userInfo"),
            ],
        }
    }

    /// The policy of a configuration: its cookies section, base path, proxy routes and
    /// forward-auth paths.
    pub fn for_config(config: &Config) -> Self {
        let proxy = &config.proxy;
        let api_paths = proxy.routes.iter().map(|r| r.path.as_str());
        let forward_auth = proxy.forward_auth_paths.iter().map(|p| p.as_str());
        CookiePolicy::new(
            &config.cookies,
            config.server.base_path.as_str(),
            api_paths.chain(forward_auth),
        )
    }

    /// The cookie's name, e.g. `__Host-th-at`, or `th-at` without name prefixes.
    pub fn name(&self, kind: CookieKind) -> &str {
        &self.names[kind.index()]
    }

    /// The header the SPA echoes the CSRF value in.
    pub fn csrf_header(&self) -> &str {
        &self.csrf_header
    }

    /// Every path this cookie is written at.
    pub fn paths(&self, kind: CookieKind) -> &[String] {
        match kind {
            CookieKind::Login => &self.login_paths,
            CookieKind::AccessToken | CookieKind::Csrf => std::slice::from_ref(&self.session_path),
            CookieKind::RefreshToken => &self.refresh_paths,
            CookieKind::IdToken => &self.id_paths,
        }
    }

    fn base(&self, name: &str, value: String, path: &str) -> Cookie<'static> {
        let mut c = Cookie::new(name.to_string(), value);
        c.set_http_only(true);
        c.set_secure(self.secure);
        c.set_same_site(match self.same_site {
            SameSite::Strict => actix_web::cookie::SameSite::Strict,
            SameSite::Lax => actix_web::cookie::SameSite::Lax,
            SameSite::None => actix_web::cookie::SameSite::None,
        });
        c.set_path(path.to_string());
        if let Some(domain) = &self.domain {
            c.set_domain(domain.clone());
        }
        c
    }

    /// Seals `value` into cookies of this kind (one per path), refusing any a browser would drop.
    pub fn seal<T: Serialize>(
        &self,
        sealer: &Sealer,
        kind: CookieKind,
        expires_at: i64,
        value: &T,
    ) -> Result<Vec<Cookie<'static>>, ApiError> {
        let sealed = sealer
            .seal(kind.purpose(), expires_at, value)
            .map_err(|e| {
                tracing::error!(cookie = %self.name(kind), error = %e, "sealing failed");
                ApiError::Internal
            })?;
        let out = self.with_value(kind, &sealed);
        for c in &out {
            let size = c.to_string().len();
            crate::metrics::METRICS
                .cookie_bytes
                .get_or_create(&crate::metrics::CookieLabel {
                    cookie: self.name(kind).to_string(),
                })
                .observe(size as f64);
            if size > MAX_COOKIE_BYTES {
                tracing::error!(cookie = %self.name(kind), size, "cookie too large for browsers");
                return Err(ApiError::CookieTooLarge {
                    name: self.name(kind).to_string(),
                    size,
                    limit: MAX_COOKIE_BYTES,
                });
            }
        }
        Ok(out)
    }

    /// Cookies of this kind, at every path, carrying an already sealed value (re-sealing).
    pub fn with_value(&self, kind: CookieKind, sealed: &str) -> Vec<Cookie<'static>> {
        self.paths(kind)
            .iter()
            .map(|path| {
                let mut c = self.base(self.name(kind), sealed.to_string(), path);
                if kind == CookieKind::Login {
                    c.set_max_age(CookieDuration::seconds(self.login_max_age));
                }
                c
            })
            .collect()
    }

    /// Cookies that remove this kind at every path it is written at.
    pub fn clear(&self, kind: CookieKind) -> Vec<Cookie<'static>> {
        self.paths(kind)
            .iter()
            .map(|path| {
                let mut c = self.base(self.name(kind), String::new(), path);
                c.make_removal();
                c
            })
            .collect()
    }

    /// Cookies that remove every token-handler cookie everywhere.
    pub fn clear_all(&self) -> Vec<Cookie<'static>> {
        CookieKind::ALL
            .iter()
            .flat_map(|k| self.clear(*k))
            .collect()
    }

    /// The cookie name of one login flow: `<login name>-<flow id>`, e.g.
    /// `__Secure-th-login-Xf3…` ([`login_flow_id`]).
    pub fn login_flow_name(&self, flow: &str) -> String {
        format!("{}-{flow}", self.name(CookieKind::Login))
    }

    /// The flow id of a login flow's cookie name, `None` for any other name (the old single
    /// `-login` name included).
    fn login_flow_of<'n>(&self, name: &'n str) -> Option<&'n str> {
        name.strip_prefix(self.name(CookieKind::Login))?
            .strip_prefix('-')
            .filter(|flow| is_flow_id(flow))
    }

    /// Seals a login in progress into its flow's cookie (at the login path, with the login's
    /// short Max-Age), refusing one a browser would drop.
    pub fn seal_login_flow<T: Serialize>(
        &self,
        sealer: &Sealer,
        flow: &str,
        expires_at: i64,
        value: &T,
    ) -> Result<Vec<Cookie<'static>>, ApiError> {
        let kind = CookieKind::Login;
        let sealed = sealer
            .seal(kind.purpose(), expires_at, value)
            .map_err(|e| {
                tracing::error!(cookie = %self.name(kind), error = %e, "sealing failed");
                ApiError::Internal
            })?;
        let name = self.login_flow_name(flow);
        let mut out = Vec::new();
        for path in self.paths(kind) {
            let mut c = self.base(&name, sealed.clone(), path);
            c.set_max_age(CookieDuration::seconds(self.login_max_age));
            let size = c.to_string().len();
            // Labelled with the kind's name, not the flow's: one series, whatever the flow.
            crate::metrics::METRICS
                .cookie_bytes
                .get_or_create(&crate::metrics::CookieLabel {
                    cookie: self.name(kind).to_string(),
                })
                .observe(size as f64);
            if size > MAX_COOKIE_BYTES {
                tracing::error!(cookie = %self.name(kind), size, "cookie too large for browsers");
                return Err(ApiError::CookieTooLarge {
                    name: self.name(kind).to_string(),
                    size,
                    limit: MAX_COOKIE_BYTES,
                });
            }
            out.push(c);
        }
        Ok(out)
    }

    /// Cookies that remove one login flow's cookie, with the attributes it was set with.
    pub fn clear_login_flow(&self, flow: &str) -> Vec<Cookie<'static>> {
        let name = self.login_flow_name(flow);
        self.paths(CookieKind::Login)
            .iter()
            .map(|path| {
                let mut c = self.base(&name, String::new(), path);
                c.make_removal();
                c
            })
            .collect()
    }

    /// Cookies that remove every login flow cookie this request carried (each flow once).
    pub fn clear_login_flows(&self, cookies: &RequestCookies<'_>) -> Vec<Cookie<'static>> {
        let mut seen = std::collections::HashSet::new();
        cookies
            .login_flows()
            .iter()
            .filter(|(flow, _)| seen.insert(*flow))
            .flat_map(|(flow, _)| self.clear_login_flow(flow))
            .collect()
    }

    /// Whether a cookie name is one of ours (`<prefix>-…`, with or without a `__Host-` or
    /// `__Secure-` prefix, in any letter case), so it is never forwarded upstream nor set by an
    /// upstream's Set-Cookie. Erring towards "ours" is the safe side: browsers compare the
    /// `__Host-`/`__Secure-` prefixes without regard to case.
    pub fn is_ours(&self, name: &str) -> bool {
        let name = ["__host-", "__secure-"]
            .iter()
            .find_map(|p| {
                name.get(..p.len())
                    .filter(|head| head.eq_ignore_ascii_case(p))
                    .map(|_| &name[p.len()..])
            })
            .unwrap_or(name);
        let prefix = self.prefix.as_str();
        name.get(..prefix.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
            && name[prefix.len()..].starts_with('-')
    }

    /// Reads the request's Cookie headers once: our cookies by kind, and the pairs that are not
    /// ours (to forward upstream). A proxied request used to scan the header once per question
    /// (any session cookie? the CSRF cookie, the access token, what goes upstream); this view
    /// answers them all.
    pub fn read<'r>(&self, headers: &'r HeaderMap) -> RequestCookies<'r> {
        let mut view = RequestCookies::default();
        for pair in request_cookies(headers) {
            // A pair starts with its name: only pairs that start like ours need parsing (the
            // others can be kilobytes long). Pairs the cookie crate cannot parse are not ours.
            let parsed = if self.is_ours(pair.text) {
                pair.name_value().filter(|(name, _)| self.is_ours(name))
            } else {
                None
            };
            let Some((name, value)) = parsed else {
                view.foreign.push(pair.text);
                continue;
            };
            // A login flow's cookie, `<login name>-<flow id>`: kept with its flow id.
            if let Some(flow) = self.login_flow_of(name) {
                view.login_flows.push((flow, value));
                continue;
            }
            if let Some(kind) = CookieKind::ALL.iter().find(|k| self.name(**k) == name) {
                view.ours[kind.index()].push(value);
            }
        }
        view
    }
}

/// A request's cookies, read once ([`CookiePolicy::read`]), borrowed from its headers.
#[derive(Debug, Default)]
pub struct RequestCookies<'r> {
    /// The sealed values of each kind, by [`CookieKind::index`], in the order sent: a request
    /// can carry several of one name (another Path, or one planted by a sibling subdomain).
    ours: [Vec<&'r str>; 5],
    /// The login flows' cookies (`<login name>-<flow id>`), as (flow id, sealed value), in the
    /// order sent. The old single `-login` cookie is in `ours`.
    login_flows: Vec<(&'r str, &'r str)>,
    /// The pairs that are not ours (`<prefix>-*` in any spelling), exactly as sent.
    foreign: Vec<&'r str>,
}

impl<'r> RequestCookies<'r> {
    /// The sealed values of this kind's cookies, in the order sent.
    pub fn values(&self, kind: CookieKind) -> &[&'r str] {
        &self.ours[kind.index()]
    }

    /// The login flows' cookies the request carries, as (flow id, sealed value) pairs.
    pub fn login_flows(&self) -> &[(&'r str, &'r str)] {
        &self.login_flows
    }

    /// Whether the request carries a cookie of this kind at all (readable or not).
    pub fn has(&self, kind: CookieKind) -> bool {
        !self.values(kind).is_empty()
    }

    /// The request's cookies minus ours, as one Cookie header for the upstream, or `None` when
    /// nothing is left.
    pub fn foreign_header(&self) -> Option<HeaderValue> {
        if self.foreign.is_empty() {
            return None;
        }
        HeaderValue::from_str(&self.foreign.join("; ")).ok()
    }
}

/// One `name=value` pair of a request's Cookie header, exactly as the browser sent it.
pub struct CookiePair<'r> {
    /// The pair's text, to forward unchanged.
    pub text: &'r str,
}

impl<'r> CookiePair<'r> {
    /// Name and value as parsed by the cookie crate; `None` for a pair it refuses (no `=`, an
    /// empty name). Nothing is percent-decoded: our values are base64url, and a cookie is ours
    /// only under the very name the proxy filters on when it forwards the rest.
    pub fn name_value(&self) -> Option<(&'r str, &'r str)> {
        let c = Cookie::parse(self.text).ok()?;
        Some((c.name_raw()?, c.value_raw()?))
    }
}

/// The pairs of every Cookie header of a request, borrowed: sealed values are kilobytes long and
/// are looked up on every proxied request, so nothing is copied or decoded until it is used.
/// Split as actix-web splits them (`;`, trimmed, empty pairs skipped).
pub fn request_cookies(headers: &HeaderMap) -> impl Iterator<Item = CookiePair<'_>> {
    headers
        .get_all(header::COOKIE)
        .filter_map(|v| std::str::from_utf8(v.as_bytes()).ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|text| !text.is_empty())
        .map(|text| CookiePair { text })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn policy() -> (CookiePolicy, Sealer) {
        policy_with("domain = \"example.com\"")
    }

    fn policy_with(cookies: &str) -> (CookiePolicy, Sealer) {
        let text = crate::config::test_toml(cookies, crate::config::TEST_PROVIDER);
        let c = Config::from_toml(&text, Vec::new()).expect("valid");
        (CookiePolicy::for_config(&c), Sealer::new(c.cookies.keys))
    }

    #[test]
    fn cookies_are_http_only_secure_same_site_and_scoped() {
        let (p, s) = policy();
        assert_eq!(p.name(CookieKind::AccessToken), "__Secure-th-at");
        let at = p
            .seal(&s, CookieKind::AccessToken, i64::MAX, &"t")
            .expect("seal");
        assert_eq!(at.len(), 1);
        let text = at[0].to_string();
        for attr in [
            "HttpOnly",
            "Secure",
            "SameSite=Strict",
            "Path=/",
            "Domain=example.com",
        ] {
            assert!(text.contains(attr), "{text} lacks {attr}");
        }
        let auth = p
            .seal(&s, CookieKind::RefreshToken, i64::MAX, &"t")
            .expect("seal");
        let paths: Vec<_> = auth.iter().filter_map(|c| c.path()).collect();
        assert_eq!(paths, ["/oauth-agent/refresh", "/oauth-agent/logout"]);
    }

    #[test]
    fn clearing_uses_the_same_path_and_domain_as_setting() {
        let (p, s) = policy();
        for kind in CookieKind::ALL {
            let set = p.seal(&s, kind, i64::MAX, &"t").expect("seal");
            let clear = p.clear(kind);
            assert_eq!(set.len(), clear.len());
            for (a, b) in set.iter().zip(clear.iter()) {
                assert_eq!(a.name(), b.name());
                assert_eq!(a.path(), b.path());
                assert_eq!(a.domain(), b.domain());
                assert_eq!(b.max_age(), Some(CookieDuration::ZERO));
            }
        }
    }

    #[test]
    fn every_kind_has_its_own_name_with_the_prefix_browsers_enforce() {
        let names = |p: &CookiePolicy| -> Vec<String> {
            CookieKind::ALL
                .iter()
                .map(|k| p.name(*k).to_string())
                .collect()
        };
        // Host-only cookies at Path `/`: __Host-; path-scoped ones: __Secure-.
        let (p, s) = policy_with("");
        assert_eq!(
            names(&p),
            [
                "__Secure-th-login",
                "__Host-th-at",
                "__Secure-th-auth",
                "__Secure-th-id",
                "__Host-th-csrf"
            ]
        );
        assert_eq!(p.csrf_header(), "x-th-csrf");
        // What __Host- demands of the attributes (RFC 6265bis §4.1.3.2).
        for kind in [CookieKind::AccessToken, CookieKind::Csrf] {
            for c in p.seal(&s, kind, i64::MAX, &"t").expect("seal") {
                assert!(c.secure() == Some(true) && c.domain().is_none(), "{c}");
                assert_eq!(c.path(), Some("/"));
            }
        }
        // A Domain (or another path) rules __Host- out.
        let (p, _) = policy();
        assert!(names(&p).iter().all(|n| n.starts_with("__Secure-th-")));
        let (p, _) = policy_with("path = \"/oauth-agent\"");
        assert_eq!(p.name(CookieKind::AccessToken), "__Secure-th-at");
        // Off, or without Secure: plain names.
        let (p, _) = policy_with("secure = false");
        assert_eq!(
            names(&p),
            ["th-login", "th-at", "th-auth", "th-id", "th-csrf"]
        );
    }

    #[test]
    fn our_names_are_recognised_with_any_prefix_and_case() {
        let (p, _) = policy_with("");
        for ours in [
            "th-at",
            "th-",
            "TH-csrf",
            "__Host-th-at",
            "__host-th-x",
            "__SECURE-th-auth",
            "__Secure-Th-id",
        ] {
            assert!(p.is_ours(ours), "{ours}");
        }
        for other in [
            "th",
            "thx-at",
            "session",
            "__Host-other",
            "__Host-",
            "",
            "é-th-at",
        ] {
            assert!(!p.is_ours(other), "{other}");
        }
    }

    #[test]
    fn request_cookies_are_read_as_sent_from_every_cookie_header() {
        let (p, _) = policy_with("secure = false");
        let mut headers = HeaderMap::new();
        for value in [
            "a=1; th-at=first;; th-atx=no",
            "th-at=\"second\"; flag; th-at=%41",
        ] {
            headers.append(
                header::COOKIE,
                header::HeaderValue::from_str(value).expect("value"),
            );
        }
        let view = p.read(&headers);
        let values = view.values(CookieKind::AccessToken);
        // Quotes are stripped as the cookie crate does; percent-escapes are not decoded.
        assert_eq!(values, ["first", "second", "%41"]);
        let pairs: Vec<&str> = request_cookies(&headers).map(|c| c.text).collect();
        assert_eq!(
            pairs,
            [
                "a=1",
                "th-at=first",
                "th-atx=no",
                "th-at=\"second\"",
                "flag",
                "th-at=%41"
            ]
        );
        assert!(request_cookies(&headers)
            .find(|c| c.text == "flag")
            .is_some_and(|c| c.name_value().is_none()));
        assert!(!view.has(CookieKind::Csrf));
        assert_eq!(view.foreign_header().expect("foreign"), "a=1; flag");
    }

    #[test]
    fn login_flow_cookies_are_read_with_their_flow_id() {
        let (p, s) = policy_with("");
        let flow = login_flow_id("some-state");
        assert_eq!(flow.len(), LOGIN_FLOW_ID_LEN);
        assert!(is_flow_id(&flow));
        assert_eq!(login_flow_id("some-state"), flow);
        assert_ne!(login_flow_id("other-state"), flow);
        // Set and cleared with the same name, path and attributes.
        let set = p.seal_login_flow(&s, &flow, i64::MAX, &"t").expect("seal");
        let clear = p.clear_login_flow(&flow);
        assert_eq!(set.len(), 1);
        assert_eq!(set[0].name(), format!("__Secure-th-login-{flow}"));
        assert_eq!(set[0].max_age(), Some(CookieDuration::seconds(600)));
        assert_eq!(
            (clear[0].name(), clear[0].path(), clear[0].domain()),
            (set[0].name(), set[0].path(), set[0].domain())
        );
        assert_eq!(clear[0].max_age(), Some(CookieDuration::ZERO));

        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            header::HeaderValue::from_str(&format!(
                "__Secure-th-login=old; __Secure-th-login-{flow}=a; __Secure-th-login-x_Y-9=b; \
                 __Secure-th-login-=c; __Secure-th-login-a.b=d; __Secure-th-login.1=e; app=1"
            ))
            .expect("value"),
        );
        let view = p.read(&headers);
        assert_eq!(view.values(CookieKind::Login), ["old"]);
        assert_eq!(view.login_flows(), [(flow.as_str(), "a"), ("x_Y-9", "b")]);
        // Ours whatever their tail: never forwarded upstream.
        assert_eq!(view.foreign_header().expect("foreign"), "app=1");
        assert_eq!(
            p.clear_login_flows(&view)
                .iter()
                .map(|c| c.name().to_string())
                .collect::<Vec<_>>(),
            [
                format!("__Secure-th-login-{flow}"),
                "__Secure-th-login-x_Y-9".to_string()
            ]
        );
    }

    #[test]
    fn oversized_cookies_are_refused_not_dropped() {
        let (p, s) = policy();
        let err = p
            .seal(&s, CookieKind::AccessToken, i64::MAX, &"x".repeat(4000))
            .expect_err("too large");
        assert_eq!(err.code(), "cookie_too_large");
    }
}
