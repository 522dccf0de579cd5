//! `[web]`: the SPA origins allowed to call the agent endpoints and the proxied APIs.

use super::de::{bool_or_text, list_or_text};
use super::ConfigError;
use serde::Deserialize;
use url::Url;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawWeb {
    #[serde(deserialize_with = "list_or_text")]
    trusted_origins: Vec<String>,
    #[serde(deserialize_with = "bool_or_text")]
    cors: bool,
    /// Issue 14 part 3: where `GET /login` may send the browser once signed in.
    #[serde(deserialize_with = "list_or_text")]
    return_to: Vec<String>,
}

impl Default for RawWeb {
    fn default() -> Self {
        Self {
            trusted_origins: Vec::new(),
            cors: true,
            return_to: Vec::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct WebConfig {
    pub trusted_origins: TrustedOrigins,
    /// Answer CORS preflights and add CORS headers for trusted origins.
    pub cors: bool,
    /// Where a server-side login (`GET /login`) may return the browser.
    pub return_to: ReturnTargets,
}

impl TryFrom<RawWeb> for WebConfig {
    type Error = ConfigError;

    fn try_from(raw: RawWeb) -> Result<Self, ConfigError> {
        let trusted_origins = TrustedOrigins::parse(&raw.trusted_origins)
            .map_err(|m| ConfigError::new("web.trusted_origins", m))?;
        let return_to = ReturnTargets::parse(&raw.return_to, &trusted_origins)
            .map_err(|m| ConfigError::new("web.return_to", m))?;
        Ok(Self {
            trusted_origins,
            cors: raw.cors,
            return_to,
        })
    }
}

/// The SPA origins allowed to call us, as ASCII-serialized origins (`https://host[:port]`), so a
/// request's `Origin` header is compared exactly: `https://app.example.com.evil.test` is not
/// `https://app.example.com`.
#[derive(Debug, Clone)]
pub struct TrustedOrigins(Vec<String>);

impl TrustedOrigins {
    pub fn parse<S: AsRef<str>>(origins: &[S]) -> Result<Self, String> {
        let mut out = Vec::new();
        for text in origins {
            let text = text.as_ref().trim();
            let url = Url::parse(text).map_err(|e| format!("`{text}` is not a URL: {e}"))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(format!("`{text}` must be an http or https origin"));
            }
            if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
                return Err(format!(
                    "`{text}` must be an origin (scheme://host[:port]) without a path"
                ));
            }
            if !url.username().is_empty() || url.password().is_some() {
                return Err(format!("`{text}` must not carry credentials"));
            }
            out.push(url.origin().ascii_serialization());
        }
        if out.is_empty() {
            return Err("is empty: list the origin(s) your SPA is served from, e.g. [\"https://www.example.com\"]".into());
        }
        Ok(Self(out))
    }

    /// Whether a request's `Origin` header value is one of ours (exact match).
    pub fn contains(&self, origin: &str) -> bool {
        self.0.iter().any(|o| o == origin)
    }

    pub fn as_slice(&self) -> &[String] {
        &self.0
    }
}

/// Longest `return_to` a request may ask for; configured targets are short URLs.
pub const MAX_RETURN_TO: usize = 2048;

/// `web.return_to`: the only places a server-side login returns the browser to, each an
/// absolute URL on a trusted origin (or a path, on the first trusted origin). A request names
/// one; the redirect then goes to the *configured* URL, never to the request's text, so no
/// spelling of a URL (`//evil`, `/\evil`, `https://trusted@evil`, percent-encodings) can make
/// token-handler an open redirect (RFC 9700 §4.11.2, RFC 6749 §10.15).
#[derive(Debug, Clone)]
pub struct ReturnTargets {
    targets: Vec<Url>,
    /// The origin request paths are resolved on (the first trusted origin).
    base: Url,
}

impl ReturnTargets {
    /// The configured list; empty: the first trusted origin's `/`.
    pub fn parse<S: AsRef<str>>(entries: &[S], origins: &TrustedOrigins) -> Result<Self, String> {
        let first = origins
            .as_slice()
            .first()
            .ok_or("needs web.trusted_origins")?;
        let base = Url::parse(first).map_err(|e| format!("`{first}`: {e}"))?;
        let mut targets = Vec::new();
        for entry in entries {
            let text = entry.as_ref().trim();
            let url = target(text, &base).ok_or_else(|| {
                format!("`{text}` must be an absolute http(s) URL without credentials or fragment, or a path starting with a single `/`")
            })?;
            if !origins.contains(&url.origin().ascii_serialization()) {
                return Err(format!(
                    "`{text}` is not on one of web.trusted_origins: a login may only return to the application's own pages"
                ));
            }
            targets.push(url);
        }
        if targets.is_empty() {
            targets.push(base.clone());
        }
        Ok(Self { targets, base })
    }

    /// The configured target a request's `return_to` names (the first one when it names
    /// none), or `None` when it names none of them. Compared after parsing, exactly: scheme,
    /// host, port, path and query.
    pub fn allowed(&self, requested: Option<&str>) -> Option<&Url> {
        let Some(text) = requested else {
            return self.targets.first();
        };
        if text.len() > MAX_RETURN_TO {
            return None;
        }
        let url = target(text, &self.base)?;
        self.targets.iter().find(|t| **t == url)
    }

    /// The first (default) target.
    pub fn default_target(&self) -> &Url {
        self.targets.first().unwrap_or(&self.base)
    }
}

/// A return target as written: an absolute http(s) URL, or a path starting with one `/`
/// resolved on `base`. Backslashes, control characters, credentials and fragments are refused
/// outright: browsers read `/\host` as `//host`, and `https://trusted@evil` is `evil`.
fn target(text: &str, base: &Url) -> Option<Url> {
    if text.is_empty() || text.contains('\\') || text.chars().any(|c| c.is_control() || c == ' ') {
        return None;
    }
    let url = if text.starts_with('/') {
        if text.starts_with("//") {
            return None;
        }
        base.join(text).ok()?
    } else {
        Url::parse(text).ok()?
    };
    let ok = matches!(url.scheme(), "http" | "https")
        && url.host().is_some()
        && url.username().is_empty()
        && url.password().is_none()
        && url.fragment().is_none();
    ok.then_some(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_configured_return_targets_are_allowed() {
        let origins =
            TrustedOrigins::parse(&["https://app.example.com", "https://admin.example.com"])
                .expect("valid");
        let t = ReturnTargets::parse(
            &["/", "/done?x=1", "https://admin.example.com/home"],
            &origins,
        )
        .expect("valid");
        let ok = |r: &str| t.allowed(Some(r)).map(|u| u.to_string());
        assert_eq!(ok("/").as_deref(), Some("https://app.example.com/"));
        assert_eq!(
            ok("https://app.example.com").as_deref(),
            Some("https://app.example.com/")
        );
        assert_eq!(
            ok("/done?x=1").as_deref(),
            Some("https://app.example.com/done?x=1")
        );
        assert_eq!(
            ok("https://admin.example.com/home").as_deref(),
            Some("https://admin.example.com/home")
        );
        assert_eq!(
            t.allowed(None).map(Url::as_str),
            Some("https://app.example.com/")
        );
        for evil in [
            "//evil.example",
            "//evil.example/",
            "///evil.example",
            "/\\evil.example",
            "\\\\evil.example",
            "https://evil.example",
            "https://evil.example/",
            "https://app.example.com@evil.example/",
            "https://app.example.com:443@evil.example/",
            "https://user@app.example.com/",
            "https://app.example.com.evil.example/",
            "http://app.example.com/",
            "https:evil.example",
            "javascript:alert(1)",
            "data:text/html,x",
            "/%2F%2Fevil.example",
            "%2F%2Fevil.example",
            "/done",
            "/done?x=2",
            "/#frag",
            "/ ",
            "/\t/evil.example",
            "",
        ] {
            assert_eq!(ok(evil), None, "{evil:?}");
        }
        assert_eq!(ok(&format!("/{}", "a".repeat(MAX_RETURN_TO))), None);
    }

    #[test]
    fn return_targets_default_to_the_first_origin_and_stay_on_trusted_origins() {
        let origins = TrustedOrigins::parse(&["https://app.example.com"]).expect("valid");
        let t = ReturnTargets::parse::<&str>(&[], &origins).expect("valid");
        assert_eq!(
            t.allowed(None).map(Url::as_str),
            Some("https://app.example.com/")
        );
        assert!(ReturnTargets::parse(&["https://evil.example/"], &origins).is_err());
        assert!(ReturnTargets::parse(&["//evil.example/"], &origins).is_err());
        assert!(
            ReturnTargets::parse(&["https://app.example.com@evil.example/"], &origins).is_err()
        );
        assert!(ReturnTargets::parse(&["https://app.example.com/#x"], &origins).is_err());
    }

    #[test]
    fn trusted_origins_compare_exactly() {
        let t = TrustedOrigins::parse(&["https://app.example.com/"]).expect("valid");
        assert!(t.contains("https://app.example.com"));
        assert!(!t.contains("https://app.example.com.evil.test"));
        assert!(!t.contains("http://app.example.com"));
        assert!(!t.contains("null"));
    }
}
