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
//!
//! A sealed value too long for one cookie (a 3 KB token already is) is split into chunks: the
//! first keeps the kind's name, the others are `<name>.1`, `<name>.2`, … up to [`MAX_CHUNKS`].
//! The value is sealed once and the sealed text is cut, so the chunks are authenticated as one
//! value: a chunk from another session, reordered, or missing makes the whole value fail to
//! open. The first chunk of a split value starts with the number of chunks (`3.`, a character
//! base64url never uses), so chunks left over from a longer value are ignored on read and
//! swept away by the next response at their path ([`stale_chunk_removals`]).

use crate::config::{Config, CookieConfig, SameSite};
use crate::crypto::{Purpose, SealError, Sealer, MAX_SEALED_LEN};
use crate::error::ApiError;
use actix_web::cookie::{time::Duration as CookieDuration, Cookie};
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::borrow::Cow;

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

/// Length of a route key: 16 base64url characters, 96 bits of the route path's SHA-256.
pub const ROUTE_KEY_LEN: usize = 16;

/// The key of a route in its narrowed-token cookie's name: the first [`ROUTE_KEY_LEN`]
/// characters of base64url(SHA-256(route path)). Stable across restarts and replicas (the same
/// configuration names the same cookie), a cookie-name token whatever the path holds.
pub fn route_key(route_path: &str) -> String {
    let mut key = URL_SAFE_NO_PAD.encode(Sha256::digest(route_path.as_bytes()));
    key.truncate(ROUTE_KEY_LEN);
    key
}

/// Whether a name's tail is a flow id we could have written (base64url, at most 64
/// characters), so the name can be written back in a removal without surprises.
fn is_flow_id(flow: &str) -> bool {
    (1..=64).contains(&flow.len())
        && flow
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The most cookies one sealed value is split into: about 30 KB of sealed text per kind, some
/// 23 KB of token before compression. RFC 6265 §6.1 only promises 50 cookies and 4096 bytes each
/// per domain, and front proxies limit the whole Cookie header (docs/deployment.md), so a value
/// that needs more is refused with `session_too_large` rather than written and lost.
pub const MAX_CHUNKS: usize = 8;

/// A value split into more chunks than this is logged as a warning (and counted in the
/// `cookie_chunks` histogram): sessions that large are near the front proxies' header limits.
pub const WARN_CHUNKS: usize = 3;

/// Room kept in every session cookie for a `Max-Age` attribute added after sealing
/// (`cookies.persistent`): `; Max-Age=` and up to ten digits.
pub const MAX_AGE_ROOM: usize = 21;

/// How many reassemblies of one kind are tried when a request carries several copies of its
/// chunks (other paths, or planted by a sibling subdomain): each costs a decryption, so an
/// attacker's copies cannot multiply the work without bound.
const MAX_ASSEMBLIES: usize = 8;

// A reassembled value is never longer than the sealing code accepts.
const _: () = assert!(MAX_CHUNKS * MAX_COOKIE_BYTES <= MAX_SEALED_LEN);

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

    /// The kinds that hold one provider's session (named per provider,
    /// [`CookiePolicy::for_provider`]); the login and CSRF cookies are the browser's.
    pub const SESSION: [CookieKind; 3] = [
        CookieKind::AccessToken,
        CookieKind::RefreshToken,
        CookieKind::IdToken,
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

    /// How many cookies one value of this kind may be split into. Login state and the CSRF value
    /// are small and bounded by the configuration: never split.
    pub fn max_chunks(self) -> usize {
        match self {
            CookieKind::AccessToken | CookieKind::RefreshToken | CookieKind::IdToken => MAX_CHUNKS,
            CookieKind::Login | CookieKind::Csrf => 1,
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
    /// The paths of the routes that get a narrowed token: each has its own `-nt-<route key>`
    /// cookie there, cleared with the session ([`CookiePolicy::clear_all`]).
    /// With each path, the provider its route names (`None`: the default provider's), so that
    /// ending one provider's session removes its routes' narrowed tokens and no other's.
    narrowed_paths: Vec<(String, Option<String>)>,
    /// What a narrowed-token cookie's name starts with (`__Secure-th-`): the same for every
    /// provider's policy, so that the names are ours whichever session the route uses.
    narrowed_head: String,
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
            narrowed_paths: Vec::new(),
            // The refresh-token cookie is path-scoped too: its name carries the same prefix.
            narrowed_head: format!(
                "{}{}-",
                Self::name_prefix(config, CookieKind::RefreshToken),
                config.prefix
            ),
        }
    }

    /// The policy of a configuration: its cookies section, base path, proxy routes and
    /// forward-auth paths.
    pub fn for_config(config: &Config) -> Self {
        let proxy = &config.proxy;
        let api_paths = proxy.routes.iter().map(|r| r.path.as_str());
        let forward_auth = proxy.forward_auth_paths.iter().map(|p| p.as_str());
        let mut policy = CookiePolicy::new(
            &config.cookies,
            config.server.base_path.as_str(),
            api_paths.chain(forward_auth),
        );
        // Routes with identity headers or assertions read the user's claims from the ID token
        // on each call.
        policy.id_paths.extend(
            proxy
                .routes
                .iter()
                .filter(|r| r.access.reads_id_token())
                .map(|r| r.path.as_str().to_string()),
        );
        policy.narrowed_paths = proxy
            .routes
            .iter()
            .filter(|r| r.narrowing.is_some())
            .map(|r| (r.path.as_str().to_string(), r.provider.clone()))
            .collect();
        policy
    }

    /// The policy of a non-default provider's session: the same paths and attributes, with the
    /// names of its session cookies (access, refresh and ID token) suffixed with `_<provider>`
    /// (`__Host-th-at_drive`, chunks `__Host-th-at_drive.1`), so one browser holds a session
    /// with each provider side by side. Login flows and the CSRF value keep their names: a login
    /// cookie names its provider inside, and one CSRF value serves the browser's sessions with
    /// every provider (docs/security.md). Provider ids are tokens (letters, digits, `-`, `_`),
    /// never `.`, so a suffixed name cannot be read as another name's chunk.
    pub fn for_provider(&self, provider: &str) -> CookiePolicy {
        let mut policy = self.clone();
        for kind in CookieKind::SESSION {
            policy.names[kind.index()] = format!("{}_{provider}", self.name(kind));
        }
        policy
    }

    /// Cookies that remove this policy's session cookies (access, refresh and ID token, at
    /// every path each is written at), and nothing shared with other providers' sessions.
    pub fn clear_session(&self) -> Vec<Cookie<'static>> {
        CookieKind::SESSION
            .iter()
            .flat_map(|k| self.clear(*k))
            .collect()
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

    /// The name of chunk `index` of this kind: the kind's name for the first, `<name>.<index>`
    /// for the others.
    pub fn chunk_name(&self, kind: CookieKind, index: usize) -> Cow<'_, str> {
        match index {
            0 => Cow::Borrowed(self.name(kind)),
            i => Cow::Owned(format!("{}.{i}", self.name(kind))),
        }
    }

    /// Seals `value` into cookies of this kind (one per path, split into chunks when one cookie
    /// cannot carry it), refusing what no browser could carry.
    pub fn seal<T: Serialize>(
        &self,
        sealer: &Sealer,
        kind: CookieKind,
        expires_at: i64,
        value: &T,
    ) -> Result<Vec<Cookie<'static>>, ApiError> {
        let sealed = sealer
            .seal(kind.purpose(), expires_at, value)
            .map_err(|e| match e {
                SealError::TooLarge => self.too_large(kind, None),
                e => {
                    tracing::error!(cookie = %self.name(kind), error = %e, "sealing failed");
                    ApiError::Internal
                }
            })?;
        self.with_value(kind, &sealed)
    }

    /// The error for a value of this kind that no browser could carry (the sealed length only:
    /// never the value).
    fn too_large(&self, kind: CookieKind, size: Option<usize>) -> ApiError {
        let limit = kind.max_chunks() * MAX_COOKIE_BYTES;
        tracing::warn!(
            cookie = %self.name(kind),
            size,
            limit,
            "a session value is larger than browsers can carry; refused"
        );
        ApiError::SessionTooLarge {
            name: self.name(kind).to_string(),
            limit,
        }
    }

    /// Cookies of this kind, at every path, carrying an already sealed value (also when
    /// re-sealing), split into chunks when it does not fit in one cookie. Every path gets the
    /// same split, so a chunk count read at one path holds at all of them.
    pub fn with_value(
        &self,
        kind: CookieKind,
        sealed: &str,
    ) -> Result<Vec<Cookie<'static>>, ApiError> {
        let parts = self.split(kind, sealed)?;
        let label = crate::metrics::CookieLabel {
            cookie: self.name(kind).to_string(),
        };
        crate::metrics::METRICS
            .cookie_chunks
            .get_or_create(&label)
            .observe(parts.len() as f64);
        if parts.len() > WARN_CHUNKS {
            tracing::warn!(
                cookie = %self.name(kind),
                chunks = parts.len(),
                bytes = sealed.len(),
                "a session value needs more than {WARN_CHUNKS} cookies; front proxies may refuse its requests (docs/deployment.md)"
            );
        }
        let mut out = Vec::with_capacity(parts.len() * self.paths(kind).len());
        for path in self.paths(kind) {
            for (index, part) in parts.iter().enumerate() {
                let c = self.cookie(kind, index, part.clone(), path);
                let size = c.to_string().len();
                crate::metrics::METRICS
                    .cookie_bytes
                    .get_or_create(&label)
                    .observe(size as f64);
                if size > MAX_COOKIE_BYTES {
                    // `split` sized the chunks for exactly these attributes: a bug if reached.
                    tracing::error!(cookie = %c.name(), size, "cookie too large for browsers");
                    return Err(ApiError::Internal);
                }
                out.push(c);
            }
        }
        Ok(out)
    }

    /// One cookie of this kind: chunk `index` at `path`.
    fn cookie(&self, kind: CookieKind, index: usize, value: String, path: &str) -> Cookie<'static> {
        let mut c = self.base(&self.chunk_name(kind, index), value, path);
        if kind == CookieKind::Login {
            c.set_max_age(CookieDuration::seconds(self.login_max_age));
        }
        c
    }

    /// Cuts a sealed value into the cookie values that carry it: the value itself when it fits
    /// one cookie, else `<n>.<first part>`, `<second part>`, … of equal length (the last
    /// shorter), sized so the longest name with the attributes of every path stays within
    /// [`MAX_COOKIE_BYTES`].
    fn split(&self, kind: CookieKind, sealed: &str) -> Result<Vec<String>, ApiError> {
        let overhead = self
            .paths(kind)
            .iter()
            .map(|path| {
                let longest = kind.max_chunks() - 1;
                self.cookie(kind, longest, String::new(), path)
                    .to_string()
                    .len()
            })
            .max()
            .unwrap_or(0)
            // Session cookies may get a `Max-Age` after sealing (`cookies.persistent`).
            + if kind == CookieKind::Login { 0 } else { MAX_AGE_ROOM };
        let Some(budget) = MAX_COOKIE_BYTES.checked_sub(overhead) else {
            tracing::error!(cookie = %self.name(kind), overhead, "the cookie attributes alone exceed what browsers keep");
            return Err(ApiError::Internal);
        };
        if sealed.len() <= budget {
            return Ok(vec![sealed.to_string()]);
        }
        // Room for the `<n>.` count on every chunk, so all chunks are cut alike.
        let size = budget.saturating_sub(2);
        let count = sealed.len().div_ceil(size.max(1));
        if size == 0 || count > kind.max_chunks() {
            return Err(self.too_large(kind, Some(sealed.len())));
        }
        let mut parts = Vec::with_capacity(count);
        for (i, part) in sealed.as_bytes().chunks(size).enumerate() {
            // Sealed values are base64url: ASCII, so any byte boundary is a char boundary.
            let part = std::str::from_utf8(part).map_err(|_| ApiError::Internal)?;
            parts.push(match i {
                0 => format!("{count}.{part}"),
                _ => part.to_string(),
            });
        }
        Ok(parts)
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
        let mut out: Vec<Cookie<'static>> = CookieKind::ALL
            .iter()
            .flat_map(|k| self.clear(*k))
            .collect();
        out.extend(self.clear_narrowed());
        out
    }

    /// The name of the narrowed-token cookie of the route at `route_path`:
    /// `__Secure-<prefix>-nt-<route key>` ([`route_key`]; no `__Secure-` without name
    /// prefixes). Path-scoped, so never `__Host-`.
    pub fn narrowed_name(&self, route_path: &str) -> String {
        format!("{}nt-{}", self.narrowed_head, route_key(route_path))
    }

    /// A cookie with our attributes (Secure, HttpOnly, SameSite, Domain) at `path`, for the
    /// cookies named per route ([`CookiePolicy::narrowed_name`]).
    pub fn cookie_at(&self, name: &str, value: String, path: &str) -> Cookie<'static> {
        self.base(name, value, path)
    }

    /// Cookies that remove every narrowed-token cookie, every chunk, at its route's path: the
    /// browser sends them only to their routes, so they are removed by name, unseen.
    pub fn clear_narrowed(&self) -> Vec<Cookie<'static>> {
        self.clear_narrowed_of(|_| true)
    }

    /// As [`CookiePolicy::clear_narrowed`], for the routes whose configured provider (`None`:
    /// the default) `of` accepts.
    pub fn clear_narrowed_of(&self, of: impl Fn(Option<&str>) -> bool) -> Vec<Cookie<'static>> {
        let mut out = Vec::new();
        for (path, _) in self.narrowed_paths.iter().filter(|(_, p)| of(p.as_deref())) {
            let name = self.narrowed_name(path);
            for index in 0..MAX_CHUNKS {
                let chunk = match index {
                    0 => name.clone(),
                    i => format!("{name}.{i}"),
                };
                let mut c = self.base(&chunk, String::new(), path);
                c.make_removal();
                out.push(c);
            }
        }
        out
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
                return Err(self.too_large(kind, Some(size)));
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

    /// The kind and chunk index a cookie name stands for: `<name>` is chunk 0, `<name>.<i>`
    /// chunk `i` (decimal, no leading zero, below the kind's [`CookieKind::max_chunks`]). Other
    /// names of ours are nobody's: never forwarded, never read.
    fn kind_of(&self, name: &str) -> Option<(CookieKind, usize)> {
        CookieKind::ALL.iter().find_map(|&kind| {
            let rest = name.strip_prefix(self.name(kind))?;
            if rest.is_empty() {
                return Some((kind, 0));
            }
            let digits = rest.strip_prefix('.')?;
            if digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let index: usize = digits.parse().ok()?;
            (index < kind.max_chunks()).then_some((kind, index))
        })
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
            if let Some((kind, index)) = self.kind_of(name) {
                view.ours.push((kind.index() as u8, index as u8, value));
            }
        }
        view
    }
}

/// A request's cookies, read once ([`CookiePolicy::read`]), borrowed from its headers.
#[derive(Debug, Default)]
pub struct RequestCookies<'r> {
    /// Our values as ([`CookieKind::index`], chunk index, value), in the order sent: a request
    /// can carry several of one name (another Path, or one planted by a sibling subdomain).
    /// A flat list rather than a table by kind and chunk: a request carries a handful of our
    /// cookies, and the table (40 vectors, 1 KiB) was built, held across the proxied
    /// request's awaits and dropped on every request (issue 17).
    ours: Vec<(u8, u8, &'r str)>,
    /// The login flows' cookies (`<login name>-<flow id>`), as (flow id, sealed value), in the
    /// order sent. The old single `-login` cookie is in `ours`.
    login_flows: Vec<(&'r str, &'r str)>,
    /// The pairs that are not ours (`<prefix>-*` in any spelling), exactly as sent.
    foreign: Vec<&'r str>,
}

impl<'r> RequestCookies<'r> {
    /// The sealed values this kind's cookies make up, reassembled from their chunks, to be tried
    /// in this order (the first that opens wins). One per first chunk sent, in the order sent;
    /// when a chunk name was sent more than once, the combinations in the order sent, at most
    /// [`MAX_ASSEMBLIES`] in all. A first chunk whose other chunks are missing, or whose parts
    /// add up past [`MAX_SEALED_LEN`], yields an empty value: it was sent, and it cannot open.
    pub fn sealed_values(&self, kind: CookieKind) -> Vec<Cow<'r, str>> {
        let mut out = Vec::new();
        for first in self.copies(kind, 0) {
            let (count, head) = chunk_count(first);
            if count == 1 {
                out.push(Cow::Borrowed(head));
            } else {
                let rest: Vec<Vec<&'r str>> = (1..count.min(MAX_CHUNKS))
                    .map(|index| self.copies(kind, index).collect())
                    .collect();
                if count > kind.max_chunks() || rest.iter().any(|copies| copies.is_empty()) {
                    out.push(Cow::Borrowed(""));
                } else {
                    // An odometer over the copies of each chunk: the first copies first.
                    let mut pick = vec![0usize; rest.len()];
                    loop {
                        let parts = rest.iter().zip(&pick).map(|(copies, &i)| copies[i]);
                        let len = head.len() + parts.clone().map(str::len).sum::<usize>();
                        if len > MAX_SEALED_LEN {
                            out.push(Cow::Borrowed(""));
                        } else {
                            let mut value = String::with_capacity(len);
                            value.push_str(head);
                            parts.for_each(|p| value.push_str(p));
                            out.push(Cow::Owned(value));
                        }
                        if out.len() >= MAX_ASSEMBLIES {
                            return out;
                        }
                        let next = pick
                            .iter()
                            .zip(&rest)
                            .rposition(|(&i, copies)| i + 1 < copies.len());
                        let Some(at) = next else { break };
                        pick[at] += 1;
                        pick[at + 1..].iter_mut().for_each(|i| *i = 0);
                    }
                }
            }
            if out.len() >= MAX_ASSEMBLIES {
                break;
            }
        }
        out
    }

    /// The login flows' cookies the request carries, as (flow id, sealed value) pairs.
    pub fn login_flows(&self) -> &[(&'r str, &'r str)] {
        &self.login_flows
    }

    /// The start of each sealed value of this kind, without reassembling anything: the first
    /// chunks' parts, in the order sent (enough to read the key id a value names).
    pub fn heads(&self, kind: CookieKind) -> impl Iterator<Item = &'r str> + '_ {
        self.copies(kind, 0).map(|first| chunk_count(first).1)
    }

    /// Every first chunk's head with its kind, in the order sent: [`RequestCookies::heads`] for
    /// all kinds in one pass.
    pub fn all_heads(&self) -> impl Iterator<Item = (CookieKind, &'r str)> + '_ {
        self.ours
            .iter()
            .filter(|(_, i, _)| *i == 0)
            .filter_map(|(k, _, v)| {
                let kind = CookieKind::ALL.get(usize::from(*k))?;
                Some((*kind, chunk_count(v).1))
            })
    }

    /// Whether every chunk sent past the first is below the count its kind's first chunks
    /// declare (the most; 1 without a first chunk), so none is left over from a longer value.
    /// What [`RequestCookies::chunk_indexes`] and [`RequestCookies::declared_chunks`] answer
    /// kind by kind, in two passes over the few pairs that are ours: the key-rotation check asks
    /// it on every proxied request (issue 17).
    pub fn no_chunk_left_over(&self) -> bool {
        let mut keep = [1usize; CookieKind::ALL.len()];
        for (k, i, v) in &self.ours {
            if let (0, Some(most)) = (*i, keep.get_mut(usize::from(*k))) {
                *most = (*most).max(chunk_count(v).0);
            }
        }
        self.ours.iter().all(|(k, i, _)| {
            *i == 0
                || keep
                    .get(usize::from(*k))
                    .is_some_and(|most| usize::from(*i) < *most)
        })
    }

    /// The values sent for one chunk of a kind (0: the first), in the order sent.
    fn copies(&self, kind: CookieKind, index: usize) -> impl Iterator<Item = &'r str> + '_ {
        let (kind, index) = (kind.index() as u8, index as u8);
        self.ours
            .iter()
            .filter(move |(k, i, _)| *k == kind && *i == index)
            .map(|(_, _, value)| *value)
    }

    /// Whether the request carries the first chunk of this kind (readable or not). Chunks
    /// without a first one are left-overs, not a session.
    pub fn has(&self, kind: CookieKind) -> bool {
        self.copies(kind, 0).next().is_some()
    }

    /// The chunk indexes past the first that the request carries for this kind.
    pub fn chunk_indexes(&self, kind: CookieKind) -> impl Iterator<Item = usize> + '_ {
        (1..MAX_CHUNKS).filter(move |&index| self.copies(kind, index).next().is_some())
    }

    /// How many chunks the request's first chunks of this kind say their value has (the most,
    /// when several were sent); `None` without a first chunk.
    pub fn declared_chunks(&self, kind: CookieKind) -> Option<usize> {
        self.copies(kind, 0).map(|first| chunk_count(first).0).max()
    }

    /// The length of [`RequestCookies::foreign_header`], without building it: pairs joined by
    /// `; `, 0 when nothing is left.
    pub fn foreign_len(&self) -> usize {
        let pairs: usize = self.foreign.iter().map(|p| p.len()).sum();
        pairs + 2 * self.foreign.len().saturating_sub(1)
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

/// The number of chunks a first chunk announces, and its part of the sealed value: `<n>.<part>`
/// for a split value (`n` from 2 to 9), else 1 and the value itself (base64url has no `.`).
pub fn chunk_count(first: &str) -> (usize, &str) {
    match first.as_bytes() {
        [n @ b'2'..=b'9', b'.', ..] => (usize::from(n - b'0'), &first[2..]),
        _ => (1, first),
    }
}

/// Removal cookies for chunks the request carried that no longer belong to a value (sent after
/// the response, by the cookie middleware in `rotation.rs`): chunks past the count of the
/// value the response writes, or, when it writes none, past the count the request's first chunk
/// announces (all of them when the response removes the kind or none was sent). Each goes to
/// every path of the kind: the same value was written at all of them, so a left-over chunk seen
/// here exists there too (a removal for a cookie the browser does not hold is a no-op). Paths
/// the request did not reach are swept when a request reaches them; until then the count in the
/// first chunk keeps the left-overs out of every reassembly.
pub fn stale_chunk_removals(
    policy: &CookiePolicy,
    cookies: &RequestCookies<'_>,
    written: &[Cookie<'_>],
) -> Vec<Cookie<'static>> {
    let mut out = Vec::new();
    for kind in CookieKind::ALL {
        if kind.max_chunks() == 1 {
            continue;
        }
        let mut sent = cookies.chunk_indexes(kind).peekable();
        if sent.peek().is_none() {
            continue;
        }
        let ours: Vec<(usize, bool)> = written
            .iter()
            .filter_map(|c| {
                let (k, index) = policy.kind_of(c.name())?;
                let removal = c.max_age().is_some_and(|m| m.is_zero() || m.is_negative());
                (k == kind).then_some((index, removal))
            })
            .collect();
        let keep = match ours.iter().find(|(index, _)| *index == 0) {
            Some((_, true)) => 0,
            Some((_, false)) => ours
                .iter()
                .filter(|(_, removal)| !removal)
                .map(|(index, _)| index + 1)
                .max()
                .unwrap_or(1),
            None => cookies.declared_chunks(kind).unwrap_or(0),
        };
        for index in sent.filter(|i| *i >= keep.max(1)) {
            if ours.iter().any(|(i, _)| *i == index) {
                continue;
            }
            for path in policy.paths(kind) {
                let mut c = policy.base(&policy.chunk_name(kind, index), String::new(), path);
                c.make_removal();
                out.push(c);
            }
        }
    }
    out
}

/// One `name=value` pair of a request's Cookie header, exactly as the browser sent it.
pub struct CookiePair<'r> {
    /// The pair's text, to forward unchanged.
    pub text: &'r str,
}

impl<'r> CookiePair<'r> {
    /// Name and value as the cookie crate's `Cookie::parse` gives them (`name_raw`,
    /// `value_raw`); `None` for a pair it refuses (no `=`, an empty name). Nothing is
    /// percent-decoded: our values are base64url, and a cookie is ours only under the very name
    /// the proxy filters on when it forwards the rest.
    ///
    /// The crate's parse begins by splitting its input at `;` for attributes, a scan of the
    /// whole value (a session's is kilobytes) that a pair, already split at `;`, does not need:
    /// about 2,400 instructions of every proxied request went there (issue 17,
    /// docs/benchmarks.md). So the pair is cut here the crate's way (the first `=`, both sides
    /// trimmed, one pair of surrounding double quotes taken off the value), and the property
    /// test `a_pair_is_read_as_the_cookie_crate_reads_it` holds it to the crate.
    pub fn name_value(&self) -> Option<(&'r str, &'r str)> {
        let (name, value) = self.text.split_once('=')?;
        let name = name.trim();
        if name.is_empty() {
            return None;
        }
        let value = value.trim();
        let unquoted = match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
            Some(inner) if value.len() >= 2 => inner,
            _ => value,
        };
        Some((name, unquoted.trim()))
    }
}

/// The pairs of every Cookie header of a request, borrowed: sealed values are kilobytes long and
/// are looked up on every proxied request, so nothing is copied or decoded until it is used.
/// Split as actix-web splits them (`;`, trimmed, empty pairs skipped).
///
/// A header that is not UTF-8 is not read (as before); it is checked with the `simdutf8`
/// crate's vectorised validation, which answers exactly as `std::str::from_utf8` does: the
/// standard library's check went through a session's 22 KB Cookie header eight bytes at a time,
/// about 10,000 instructions of every request with a 16 KB token (issue 17, docs/benchmarks.md).
pub fn request_cookies(headers: &HeaderMap) -> impl Iterator<Item = CookiePair<'_>> {
    headers
        .get_all(header::COOKIE)
        .filter_map(|v| simdutf8::basic::from_utf8(v.as_bytes()).ok())
        .flat_map(split_pairs)
        .map(str::trim)
        .filter(|text| !text.is_empty())
        .map(|text| CookiePair { text })
}

/// `text.split(';')`, found with the `memchr` crate's vectorised search: a session's Cookie
/// header can be 22 KB, and `str::split` looks for the separator a word at a time (about 2 µs per
/// request at that size; issue 17, docs/benchmarks.md).
fn split_pairs(text: &str) -> impl Iterator<Item = &str> {
    let mut start = 0;
    memchr::memchr_iter(b';', text.as_bytes())
        .chain(std::iter::once(text.len()))
        // `;` is ASCII, so every index found is a character boundary.
        .map(move |end| {
            let pair = text.get(start..end).unwrap_or("");
            start = end + 1;
            pair
        })
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
    fn narrowed_cookies_are_named_per_route_ours_and_cleared_with_the_session() {
        let key = route_key("/orders");
        assert_eq!(key.len(), ROUTE_KEY_LEN);
        assert_ne!(key, route_key("/billing"));
        let (p, _) = policy_with("");
        assert_eq!(p.narrowed_name("/orders"), format!("__Secure-th-nt-{key}"));
        assert!(p.is_ours(&p.narrowed_name("/orders")));
        assert!(p.is_ours(&format!("{}.3", p.narrowed_name("/orders"))));
        let (p, _) = policy_with("secure = false");
        assert_eq!(p.narrowed_name("/orders"), format!("th-nt-{key}"));
        // Only narrowed routes get removals, every chunk at the route's path.
        let text = crate::config::test_toml(
            "",
            &format!(
                "{}[[routes]]\npath = \"/orders\"\nupstream = \"http://127.0.0.1:9\"\ntoken = \"resource\"\nresource = \"https://o.example\"\n[[routes]]\npath = \"/plain\"\nupstream = \"http://127.0.0.1:9\"\n",
                crate::config::TEST_PROVIDER
            ),
        );
        let c = Config::from_toml(&text, Vec::new()).expect("valid");
        let p = CookiePolicy::for_config(&c);
        let removals: Vec<_> = p
            .clear_all()
            .into_iter()
            .filter(|c| c.name().contains("-nt-"))
            .collect();
        assert_eq!(removals.len(), MAX_CHUNKS);
        assert!(removals.iter().all(|c| c.path() == Some("/orders")
            && c.max_age() == Some(CookieDuration::ZERO)
            && c.name().starts_with(&format!("__Secure-th-nt-{key}"))));
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

    proptest::proptest! {
        /// The vectorised split finds exactly the pairs `str::split(';')` finds, whatever the
        /// text (separators anywhere, doubled, at the ends; non-ASCII around them).
        #[test]
        fn pairs_are_split_as_str_split_splits_them(text in "[a=; é\\u{10348}]{0,40}") {
            proptest::prop_assert_eq!(
                split_pairs(&text).collect::<Vec<_>>(),
                text.split(';').collect::<Vec<_>>()
            );
        }

        /// The one-pass answers are the kind-by-kind ones, whatever mix of our first chunks
        /// (with or without a declared count), later chunks and repeats a request carries.
        #[test]
        fn one_pass_answers_match_the_kind_by_kind_ones(
            pairs in proptest::collection::vec((0usize..5, 0usize..9, 0u8..12), 0..8)
        ) {
            let (p, _) = policy_with("secure = false");
            let header: Vec<String> = pairs
                .iter()
                .map(|&(k, i, v)| {
                    let kind = CookieKind::ALL[k];
                    let value = if v < 8 { format!("{}.v{v}", v + 2) } else { format!("v{v}") };
                    format!("{}={value}", p.chunk_name(kind, i))
                })
                .collect();
            let mut headers = HeaderMap::new();
            if let Ok(value) = header::HeaderValue::from_str(&header.join("; ")) {
                headers.insert(header::COOKIE, value);
            }
            let view = p.read(&headers);
            let by_kind: Vec<(CookieKind, &str)> = CookieKind::ALL
                .into_iter()
                .flat_map(|kind| view.heads(kind).map(move |h| (kind, h)))
                .collect();
            let mut one_pass: Vec<(CookieKind, &str)> = view.all_heads().collect();
            one_pass.sort_by_key(|(kind, _)| kind.index());
            proptest::prop_assert_eq!(one_pass, by_kind);
            let kind_by_kind = CookieKind::ALL.into_iter().all(|kind| {
                let keep = view.declared_chunks(kind).unwrap_or(0).max(1);
                view.chunk_indexes(kind).all(|i| i < keep)
            });
            proptest::prop_assert_eq!(view.no_chunk_left_over(), kind_by_kind);
        }

        /// A pair (no `;`: the header is split before) gets the name and value the cookie
        /// crate's parser gives it, and is refused where the crate refuses it: `=` anywhere and
        /// repeated, quotes, ASCII and Unicode white space around and inside, empty sides.
        #[test]
        fn a_pair_is_read_as_the_cookie_crate_reads_it(
            text in "[a=\" \t\u{a0}\u{2003}é]{0,24}"
        ) {
            let crate_reads = Cookie::parse(text.as_str())
                .ok()
                .and_then(|c| Some((c.name_raw()?.to_string(), c.value_raw()?.to_string())));
            let ours = CookiePair { text: &text }
                .name_value()
                .map(|(n, v)| (n.to_string(), v.to_string()));
            proptest::prop_assert_eq!(ours, crate_reads);
        }
    }

    proptest::proptest! {
        /// A Cookie header line is read exactly when it is UTF-8, as `std::str::from_utf8`
        /// decides (obs-text bytes, cut sequences and overlong forms included), and the other
        /// lines of the request are read all the same.
        #[test]
        fn a_cookie_line_is_read_exactly_when_it_is_utf8(
            bytes in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::strategy::Just(b'a'),
                    proptest::strategy::Just(b'='),
                    proptest::strategy::Just(b';'),
                    0x80u8..=0xff
                ],
                0..48,
            )
        ) {
            let Ok(odd) = header::HeaderValue::from_bytes(&bytes) else {
                return Ok(());
            };
            let mut headers = HeaderMap::new();
            headers.append(header::COOKIE, odd);
            headers.append(header::COOKIE, header::HeaderValue::from_static("b=1"));
            let read: Vec<&str> = request_cookies(&headers).map(|c| c.text).collect();
            let mut expected: Vec<&str> = match std::str::from_utf8(&bytes) {
                Ok(text) => text.split(';').map(str::trim).filter(|t| !t.is_empty()).collect(),
                Err(_) => Vec::new(),
            };
            expected.push("b=1");
            proptest::prop_assert_eq!(read, expected);
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
        let values = view.sealed_values(CookieKind::AccessToken);
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
        assert_eq!(view.foreign_len(), "a=1; flag".len());
        assert_eq!(RequestCookies::default().foreign_len(), 0);
    }

    /// `len` random base64url characters: compress no better than a JWT's signature.
    fn random_token(len: usize) -> String {
        use base64::Engine;
        use rand::RngCore;
        let mut bytes = vec![0u8; len];
        rand::rng().fill_bytes(&mut bytes);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)[..len].to_string()
    }

    /// The Cookie header a browser would send for these cookies (one path's worth).
    fn cookie_header(cookies: &[&Cookie<'_>]) -> HeaderMap {
        let text = cookies
            .iter()
            .map(|c| format!("{}={}", c.name(), c.value()))
            .collect::<Vec<_>>()
            .join("; ");
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_str(&text).expect("header"),
        );
        h
    }

    fn opens(p: &CookiePolicy, s: &Sealer, headers: &HeaderMap) -> Option<String> {
        p.read(headers)
            .sealed_values(CookieKind::AccessToken)
            .iter()
            .find_map(|v| s.unseal::<String>(Purpose::AccessToken, 0, v).ok())
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
        assert_eq!(view.sealed_values(CookieKind::Login), ["old"]);
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
    fn a_value_too_large_for_any_browser_is_a_4xx_that_names_no_token() {
        let (p, s) = policy();
        let token = random_token(40_000);
        let err = p
            .seal(&s, CookieKind::AccessToken, i64::MAX, &token)
            .expect_err("too large");
        assert_eq!(err.code(), "session_too_large");
        assert_eq!(
            actix_web::ResponseError::status_code(&err).as_u16(),
            422,
            "{err}"
        );
        let message = err.to_string();
        assert!(!message.contains(&token[..16]), "{message}");
        // Login and CSRF values are never split: one cookie or refused.
        let err = p
            .seal(&s, CookieKind::Csrf, i64::MAX, &random_token(5000))
            .expect_err("too large");
        assert_eq!(err.code(), "session_too_large");
    }

    #[test]
    fn a_large_value_is_split_into_numbered_chunks_that_reassemble() {
        let (p, s) = policy_with("");
        let token = random_token(16 * 1024);
        let cookies = p
            .seal(&s, CookieKind::AccessToken, i64::MAX, &token)
            .expect("seal");
        let names: Vec<&str> = cookies.iter().map(|c| c.name()).collect();
        assert!(names.len() >= 4 && names.len() <= MAX_CHUNKS, "{names:?}");
        assert_eq!(names[0], "__Host-th-at");
        for (i, name) in names.iter().enumerate().skip(1) {
            assert_eq!(*name, format!("__Host-th-at.{i}"));
        }
        for c in &cookies {
            assert!(c.to_string().len() <= MAX_COOKIE_BYTES, "{}", c.name());
            assert_eq!(c.path(), Some("/"));
        }
        assert!(cookies[0]
            .value()
            .starts_with(&format!("{}.", cookies.len())));
        let all: Vec<&Cookie> = cookies.iter().collect();
        assert_eq!(opens(&p, &s, &cookie_header(&all)), Some(token.clone()));
        // The browser's order does not matter, the chunk names do.
        let reversed: Vec<&Cookie> = cookies.iter().rev().collect();
        assert_eq!(
            opens(&p, &s, &cookie_header(&reversed)),
            Some(token.clone())
        );
        // Every path of a path-scoped kind gets the same chunks.
        let auth = p
            .seal(&s, CookieKind::RefreshToken, i64::MAX, &token)
            .expect("seal");
        // (The refresh token is compressed, the access token not: their counts differ.)
        let paths = p.paths(CookieKind::RefreshToken);
        let per_path = auth.len() / paths.len();
        assert!(per_path >= 3 && auth.len() == per_path * paths.len());
        for path in paths {
            let at_path = auth.iter().filter(|c| c.path() == Some(path.as_str()));
            assert_eq!(at_path.count(), per_path, "{path}");
        }
        // A small value stays one cookie, without a count.
        let small = p
            .seal(&s, CookieKind::AccessToken, i64::MAX, &"t")
            .expect("seal");
        assert_eq!(small.len(), 1);
        assert!(!small[0].value().contains('.'));
    }

    #[test]
    fn a_chunk_swapped_in_reordered_or_dropped_fails_to_open() {
        let (p, s) = policy_with("");
        let seal = |t: &str| {
            p.seal(&s, CookieKind::AccessToken, i64::MAX, &t)
                .expect("seal")
        };
        let token = random_token(12 * 1024);
        let mine = seal(&token);
        let theirs = seal(&random_token(12 * 1024));
        assert_eq!(mine.len(), theirs.len());
        assert!(mine.len() >= 3);
        let failed = |cookies: Vec<&Cookie>| {
            let h = cookie_header(&cookies);
            let view = p.read(&h);
            assert!(view.has(CookieKind::AccessToken));
            let values = view.sealed_values(CookieKind::AccessToken);
            assert!(!values.is_empty(), "sent, so not taken for none");
            opens(&p, &s, &h).is_none()
        };
        // Another session's chunk in place of one of ours.
        let mut swapped: Vec<&Cookie> = mine.iter().collect();
        swapped[1] = &theirs[1];
        assert!(failed(swapped));
        // Two chunks' values exchanged (names kept).
        let mut c1 = mine[1].clone();
        let mut c2 = mine[2].clone();
        c1.set_value(mine[2].value().to_string());
        c2.set_value(mine[1].value().to_string());
        let mut reordered: Vec<&Cookie> = mine.iter().collect();
        reordered[1] = &c1;
        reordered[2] = &c2;
        assert!(failed(reordered));
        // A chunk missing.
        let mut dropped: Vec<&Cookie> = mine.iter().collect();
        dropped.remove(1);
        assert!(failed(dropped));
        // The count edited down: the value is cut short.
        let mut fewer = mine[0].clone();
        fewer.set_value(format!("2{}", &mine[0].value()[1..]));
        let mut cut: Vec<&Cookie> = mine.iter().collect();
        cut[0] = &fewer;
        assert!(failed(cut));
    }

    #[test]
    fn left_over_and_planted_chunks_do_not_break_a_session() {
        let (p, s) = policy_with("");
        let token = random_token(8 * 1024);
        let mine = p
            .seal(&s, CookieKind::AccessToken, i64::MAX, &token)
            .expect("seal");
        let other = p
            .seal(&s, CookieKind::AccessToken, i64::MAX, &random_token(20_000))
            .expect("seal");
        assert!(other.len() > mine.len() + 1);
        // Chunks of a longer, older value still in the jar past our count: ignored.
        let mut with_left_overs: Vec<&Cookie> = mine.iter().collect();
        with_left_overs.extend(other[mine.len()..].iter());
        assert_eq!(
            opens(&p, &s, &cookie_header(&with_left_overs)),
            Some(token.clone())
        );
        // Copies planted before ours (a sibling subdomain's cookies come first when older):
        // the first that opens still wins.
        let mut planted: Vec<&Cookie> = other.iter().take(mine.len()).collect();
        planted.extend(mine.iter());
        assert_eq!(opens(&p, &s, &cookie_header(&planted)), Some(token.clone()));
        let mut one_planted: Vec<&Cookie> = vec![&other[1]];
        one_planted.extend(mine.iter());
        assert_eq!(opens(&p, &s, &cookie_header(&one_planted)), Some(token));
        // However many copies an attacker sends, the tries stay bounded.
        let mut many: Vec<&Cookie> = Vec::new();
        for _ in 0..6 {
            many.extend(other.iter());
        }
        let h = cookie_header(&many);
        assert!(p.read(&h).sealed_values(CookieKind::AccessToken).len() <= MAX_ASSEMBLIES);
    }

    #[test]
    fn another_providers_session_has_names_of_its_own_and_shares_login_and_csrf() {
        let (p, s) = policy_with("");
        let drive = p.for_provider("drive");
        let names: Vec<&str> = CookieKind::ALL.iter().map(|k| drive.name(*k)).collect();
        assert_eq!(
            names,
            [
                "__Secure-th-login",
                "__Host-th-at_drive",
                "__Secure-th-auth_drive",
                "__Secure-th-id_drive",
                "__Host-th-csrf"
            ]
        );
        assert_eq!(
            drive.paths(CookieKind::RefreshToken),
            p.paths(CookieKind::RefreshToken)
        );
        // A split value's chunks carry the provider too.
        let big = drive
            .seal(
                &s,
                CookieKind::AccessToken,
                i64::MAX,
                &random_token(8 * 1024),
            )
            .expect("seal");
        assert_eq!(big[1].name(), "__Host-th-at_drive.1");
        // Each policy reads its own names only; both keep all of ours from the upstream.
        let all: Vec<&Cookie> = big.iter().collect();
        let mut h = cookie_header(&all);
        h.append(
            header::COOKIE,
            HeaderValue::from_static("__Host-th-at=x; app=1"),
        );
        assert_eq!(p.read(&h).sealed_values(CookieKind::AccessToken), ["x"]);
        assert_eq!(
            drive.read(&h).sealed_values(CookieKind::AccessToken).len(),
            1
        );
        assert_ne!(drive.read(&h).sealed_values(CookieKind::AccessToken), ["x"]);
        for policy in [&p, &drive] {
            assert_eq!(policy.read(&h).foreign_header().expect("foreign"), "app=1");
        }
        // Logging out of one provider clears its session cookies only, where they were set.
        let cleared: Vec<(String, String)> = drive
            .clear_session()
            .iter()
            .map(|c| (c.name().to_string(), c.path().unwrap_or("").to_string()))
            .collect();
        assert!(
            cleared.iter().all(|(n, _)| n.ends_with("_drive")),
            "{cleared:?}"
        );
        assert_eq!(
            cleared.len(),
            CookieKind::SESSION
                .iter()
                .map(|k| drive.paths(*k).len())
                .sum::<usize>()
        );
    }

    #[test]
    fn only_decimal_chunk_names_below_the_bound_are_chunks() {
        let (p, _) = policy_with("secure = false");
        assert_eq!(p.kind_of("th-at"), Some((CookieKind::AccessToken, 0)));
        assert_eq!(p.kind_of("th-at.1"), Some((CookieKind::AccessToken, 1)));
        assert_eq!(p.kind_of("th-auth.7"), Some((CookieKind::RefreshToken, 7)));
        for name in [
            "th-at.0",
            "th-at.01",
            "th-at.8",
            "th-at.x",
            "th-at.",
            "th-csrf.1",
            "th-login.1",
            "th-atx",
        ] {
            assert_eq!(p.kind_of(name), None, "{name}");
        }
        // Ours all the same: never forwarded upstream.
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("th-at.9=x; a=1"));
        assert_eq!(p.read(&h).foreign_header().expect("foreign"), "a=1");
    }

    #[test]
    fn stale_chunks_are_removed_at_every_path_of_their_kind() {
        let (p, s) = policy_with("");
        let big = p
            .seal(
                &s,
                CookieKind::RefreshToken,
                i64::MAX,
                &random_token(12 * 1024),
            )
            .expect("seal");
        let paths = p.paths(CookieKind::RefreshToken).len();
        let chunks = big.len() / paths;
        assert!(chunks >= 3);
        // What the browser sends at one path.
        let at_one_path: Vec<&Cookie> = big.iter().take(chunks).collect();
        let h = cookie_header(&at_one_path);
        let view = p.read(&h);
        let removed = |written: &[Cookie<'_>]| -> Vec<(String, String)> {
            stale_chunk_removals(&p, &view, written)
                .iter()
                .inspect(|c| assert_eq!(c.max_age(), Some(CookieDuration::ZERO)))
                .map(|c| (c.name().to_string(), c.path().unwrap_or("").to_string()))
                .collect()
        };
        // Nothing written: the request's chunks all belong to its value.
        assert!(removed(&[]).is_empty());
        // A one-cookie value written: every other chunk goes, at every path.
        let small = p
            .seal(&s, CookieKind::RefreshToken, i64::MAX, &"t")
            .expect("seal");
        let gone = removed(&small);
        assert_eq!(gone.len(), (chunks - 1) * paths);
        assert!(gone
            .iter()
            .any(|(n, path)| n == "__Secure-th-auth.1" && path == "/oauth-agent/logout"));
        assert!(!gone.iter().any(|(n, _)| n == "__Secure-th-auth"));
        // The kind removed (logout): every chunk goes.
        assert_eq!(
            removed(&p.clear(CookieKind::RefreshToken)).len(),
            (chunks - 1) * paths
        );
        // A value of two chunks written: chunks 2.. go.
        let two = p
            .seal(&s, CookieKind::RefreshToken, i64::MAX, &random_token(5000))
            .expect("seal");
        assert_eq!(two.len(), 2 * paths);
        assert_eq!(removed(&two).len(), (chunks - 2) * paths);
        // Chunks without their first one (orphans): all go.
        let orphans: Vec<&Cookie> = big.iter().take(chunks).skip(1).collect();
        let h = cookie_header(&orphans);
        let view = p.read(&h);
        assert!(!view.has(CookieKind::RefreshToken));
        assert_eq!(
            stale_chunk_removals(&p, &view, &[]).len(),
            (chunks - 1) * paths
        );
    }
}
