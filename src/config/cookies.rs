//! `[cookies]`: names, attributes, lifetimes and the keys that seal every cookie.
//!
//! The rules browsers enforce are enforced here first, so a setting they would silently drop
//! fails at startup instead: `SameSite=None` needs `Secure`, and so do the `__Host-`/`__Secure-`
//! name prefixes (RFC 6265bis §4.1.3, §5.4.7).

use super::de::{bool_or_text, duration, list_or_text, opt_bool_or_text, word_enum};
use super::{is_token, read_secret_file, ConfigError};
use crate::crypto::{KeyError, KeyRing};
use serde::Deserialize;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawCookies {
    prefix: String,
    #[serde(deserialize_with = "bool_or_text")]
    secure: bool,
    #[serde(deserialize_with = "opt_bool_or_text")]
    name_prefixes: Option<bool>,
    same_site: SameSite,
    domain: String,
    path: String,
    #[serde(deserialize_with = "list_or_text")]
    keys: Vec<String>,
    keys_file: Option<PathBuf>,
    #[serde(deserialize_with = "duration")]
    login_timeout: Duration,
    #[serde(deserialize_with = "duration")]
    session_lifetime: Duration,
}

impl Default for RawCookies {
    fn default() -> Self {
        Self {
            prefix: "th".into(),
            secure: true,
            name_prefixes: None,
            same_site: SameSite::Strict,
            domain: String::new(),
            path: "/".into(),
            keys: Vec::new(),
            keys_file: None,
            login_timeout: Duration::from_secs(600),
            session_lifetime: Duration::from_secs(12 * 3600),
        }
    }
}

/// SameSite attribute of every cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    Strict,
    Lax,
    None,
}

word_enum!(SameSite {
    "strict" => SameSite::Strict,
    "lax" => SameSite::Lax,
    "none" => SameSite::None,
});

impl fmt::Display for SameSite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SameSite::Strict => "Strict",
            SameSite::Lax => "Lax",
            SameSite::None => "None",
        })
    }
}

#[derive(Debug, Clone)]
pub struct CookieConfig {
    /// Cookie-name prefix: `<prefix>-at`, … and the CSRF header `x-<prefix>-csrf`.
    pub prefix: String,
    pub secure: bool,
    /// Name cookies `__Host-…`/`__Secure-…` (RFC 6265bis §4.1.3), so browsers refuse copies
    /// planted by a sibling subdomain or over plain http.
    pub name_prefixes: bool,
    pub same_site: SameSite,
    /// `None`: host-only cookies.
    pub domain: Option<String>,
    /// Path of the `-at` and `-csrf` cookies.
    pub path: String,
    pub keys: KeyRing,
    /// Where the keys came from, when from a file: re-read on SIGHUP and on change.
    pub keys_file: Option<PathBuf>,
    /// How long a started login may take (lifetime of the `-login` cookie).
    pub login_timeout: Duration,
    /// How long session cookies open after they were last written (the refresh token's own
    /// lifetime at the provider still applies).
    pub session_lifetime: Duration,
}

impl TryFrom<RawCookies> for CookieConfig {
    type Error = ConfigError;

    fn try_from(c: RawCookies) -> Result<Self, ConfigError> {
        if !is_token(&c.prefix) {
            return Err(ConfigError::new(
                "cookies.prefix",
                "must be letters, digits, `-` or `_` (it names cookies and the CSRF header)",
            ));
        }
        if c.same_site == SameSite::None && !c.secure {
            return Err(ConfigError::new(
                "cookies.same_site",
                "`none` requires cookies.secure = true (browsers drop SameSite=None cookies that are not Secure)",
            ));
        }
        let domain = match c.domain.trim() {
            "" => None,
            d if d
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '.') =>
            {
                Some(d.trim_start_matches('.').to_ascii_lowercase())
            }
            d => {
                return Err(ConfigError::new(
                    "cookies.domain",
                    format!("`{d}` is not a domain name"),
                ))
            }
        };
        let path = c.path.trim().to_string();
        if !path.starts_with('/')
            || path
                .chars()
                .any(|ch| ch == ';' || ch.is_control() || ch == ' ')
        {
            return Err(ConfigError::new(
                "cookies.path",
                "must be a path starting with `/`",
            ));
        }
        let keys = key_ring(c.keys, c.keys_file.as_ref())?;
        let name_prefixes = c.name_prefixes.unwrap_or(c.secure);
        if name_prefixes && !c.secure {
            return Err(ConfigError::new(
                "cookies.name_prefixes",
                "`true` requires cookies.secure = true (browsers refuse __Host- and __Secure- cookies that are not Secure)",
            ));
        }
        Ok(Self {
            prefix: c.prefix,
            secure: c.secure,
            name_prefixes,
            same_site: c.same_site,
            domain,
            path,
            keys,
            keys_file: c.keys_file,
            login_timeout: c.login_timeout,
            session_lifetime: c.session_lifetime,
        })
    }
}

/// The sealing keys, from `keys` or from `keys_file` (one a line, `#` comments), never both.
/// A key that does not parse is not shown in the message: it is a secret.
fn key_ring(keys: Vec<String>, keys_file: Option<&PathBuf>) -> Result<KeyRing, ConfigError> {
    let key_texts = match (keys_file, keys.is_empty()) {
        (Some(_), false) => {
            return Err(ConfigError::new(
                "cookies.keys",
                "set cookies.keys or cookies.keys_file, not both",
            ))
        }
        (Some(file), true) => read_secret_file("cookies.keys_file", file)?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(String::from)
            .collect(),
        (None, _) => keys,
    };
    let keys_key = if keys_file.is_some() {
        "cookies.keys_file"
    } else {
        "cookies.keys"
    };
    KeyRing::parse(&key_texts).map_err(|e| {
        let hint = match e {
            KeyError::Empty => String::new(),
            _ => " (keys are never shown; check each entry)".to_string(),
        };
        ConfigError::new(keys_key, format!("{e}{hint}"))
    })
}
