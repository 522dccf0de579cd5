//! Cookie names, paths and attributes, in one place.
//!
//! Every cookie is written and cleared through [`CookiePolicy`], so the attributes used to clear
//! a cookie are always exactly those used to set it: a cookie cleared with another Path or Domain
//! survives logout, which is the most common way token handlers fail to log out.
//!
//! Paths keep tokens off requests that do not need them: the refresh token (`-auth`) only goes to
//! the refresh and logout endpoints, the ID token (`-id`) only to claims and logout. A cookie can
//! have one Path, so a cookie needed at two paths is written once per path.

use crate::config::{Config, SameSite};
use crate::crypto::{Purpose, SealError, Sealer};
use crate::error::ApiError;
use actix_web::cookie::{time::Duration as CookieDuration, Cookie};
use actix_web::HttpRequest;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Browsers drop a cookie whose name, value and attributes exceed this (RFC 6265 §6.1 minimum,
/// and what every major browser enforces) without telling anyone.
pub const MAX_COOKIE_BYTES: usize = 4096;

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
    /// Derives names and paths: the refresh-token cookie goes to the agent's refresh and logout
    /// endpoints, the proxy routes and the forward-auth paths, and nowhere else.
    pub fn new(full: &Config) -> Self {
        let config = &full.cookies;
        let base_path = full.server.base_path.as_str();
        let mut refresh_paths = vec![
            format!("{base_path}/refresh"),
            format!("{base_path}/logout"),
        ];
        refresh_paths.extend(
            full.proxy
                .routes
                .iter()
                .map(|r| r.path.as_str().to_string()),
        );
        refresh_paths.extend(
            full.proxy
                .forward_auth_paths
                .iter()
                .map(|p| p.as_str().to_string()),
        );
        refresh_paths.push(format!("{base_path}/auth"));
        // A forward-auth path may also be a route: one cookie per distinct path.
        let mut seen = std::collections::HashSet::new();
        refresh_paths.retain(|p| seen.insert(p.clone()));
        Self {
            prefix: config.prefix.clone(),
            secure: config.secure,
            same_site: config.same_site,
            domain: config.domain.clone(),
            login_max_age: config.login_timeout.as_secs() as i64,
            session_path: config.path.clone(),
            login_paths: vec![format!("{base_path}/login")],
            refresh_paths,
            id_paths: vec![format!("{base_path}/claims"), format!("{base_path}/logout")],
        }
    }

    /// The cookie's name, e.g. `th-at`.
    pub fn name(&self, kind: CookieKind) -> String {
        format!("{}-{}", self.prefix, kind.suffix())
    }

    /// The header the SPA echoes the CSRF value in.
    pub fn csrf_header(&self) -> String {
        format!("x-{}-csrf", self.prefix)
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

    fn base(&self, name: String, value: String, path: &str) -> Cookie<'static> {
        let mut c = Cookie::new(name, value);
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
                    cookie: self.name(kind),
                })
                .observe(size as f64);
            if size > MAX_COOKIE_BYTES {
                tracing::error!(cookie = %self.name(kind), size, "cookie too large for browsers");
                return Err(ApiError::CookieTooLarge {
                    name: self.name(kind),
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

    /// Whether a cookie name is one of ours (`<prefix>-…`), so it is never forwarded upstream
    /// nor overwritten by an upstream's Set-Cookie.
    pub fn is_ours(&self, name: &str) -> bool {
        name.strip_prefix(self.prefix.as_str())
            .is_some_and(|rest| rest.starts_with('-'))
    }

    /// Whether the request carries a cookie of this kind at all (readable or not).
    pub fn has(&self, req: &HttpRequest, kind: CookieKind) -> bool {
        let name = self.name(kind);
        req.cookies()
            .map(|c| c.iter().any(|c| c.name() == name))
            .unwrap_or(false)
    }

    /// Opens this kind's cookie from the request. `Ok(None)` when the request has none. When a
    /// request carries several cookies of the name (another path, or one planted by a sibling
    /// subdomain), the first that opens wins; planted ones cannot open.
    pub fn open<T: DeserializeOwned>(
        &self,
        req: &HttpRequest,
        sealer: &Sealer,
        kind: CookieKind,
        now: i64,
    ) -> Result<Option<T>, SealError> {
        let name = self.name(kind);
        let cookies = match req.cookies() {
            Ok(c) => c,
            Err(_) => return Err(SealError::Invalid),
        };
        let mut result = Ok(None);
        for c in cookies.iter().filter(|c| c.name() == name) {
            match sealer.unseal(kind.purpose(), now, c.value()) {
                Ok(v) => return Ok(Some(v)),
                Err(e) => {
                    crate::metrics::METRICS
                        .unseal_failures
                        .get_or_create(&crate::metrics::UnsealLabels {
                            cookie: name.clone(),
                            reason: match e {
                                SealError::Expired => "expired",
                                _ => "invalid",
                            },
                            key_id: sealer
                                .listed_key_id(c.value())
                                .unwrap_or_else(|| "unknown".into()),
                        })
                        .inc();
                    result = Err(e)
                }
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::crypto::{CookieKey, KeyRing};

    fn policy() -> (CookiePolicy, Sealer) {
        let key = CookieKey::generate_text();
        let text = format!(
            r#"
[cookies]
keys = ["{key}"]
domain = "example.com"
[web]
trusted_origins = ["https://www.example.com"]
[[providers]]
id = "default"
issuer = "https://login.example.com"
client_id = "c"
client_secret = "s"
redirect_uri = "https://www.example.com/"
"#
        );
        let c = Config::from_toml(&text, Vec::new()).expect("valid");
        (
            CookiePolicy::new(&c),
            Sealer::new(KeyRing::parse(&[key]).expect("key")),
        )
    }

    #[test]
    fn cookies_are_http_only_secure_same_site_and_scoped() {
        let (p, s) = policy();
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
        assert_eq!(
            paths,
            [
                "/oauth-agent/refresh",
                "/oauth-agent/logout",
                "/oauth-agent/auth"
            ]
        );
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
    fn oversized_cookies_are_refused_not_dropped() {
        let (p, s) = policy();
        let err = p
            .seal(&s, CookieKind::AccessToken, i64::MAX, &"x".repeat(4000))
            .expect_err("too large");
        assert_eq!(err.code(), "cookie_too_large");
    }
}
