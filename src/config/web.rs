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
}

impl Default for RawWeb {
    fn default() -> Self {
        Self {
            trusted_origins: Vec::new(),
            cors: true,
        }
    }
}

#[derive(Debug, Clone)]
pub struct WebConfig {
    pub trusted_origins: TrustedOrigins,
    /// Answer CORS preflights and add CORS headers for trusted origins.
    pub cors: bool,
}

impl TryFrom<RawWeb> for WebConfig {
    type Error = ConfigError;

    fn try_from(raw: RawWeb) -> Result<Self, ConfigError> {
        Ok(Self {
            trusted_origins: TrustedOrigins::parse(&raw.trusted_origins)
                .map_err(|m| ConfigError::new("web.trusted_origins", m))?,
            cors: raw.cors,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_origins_compare_exactly() {
        let t = TrustedOrigins::parse(&["https://app.example.com/"]).expect("valid");
        assert!(t.contains("https://app.example.com"));
        assert!(!t.contains("https://app.example.com.evil.test"));
        assert!(!t.contains("http://app.example.com"));
        assert!(!t.contains("null"));
    }
}
