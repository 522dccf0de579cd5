//! `[cookies]`: names, attributes, lifetimes and the keys that seal every cookie.
//!
//! The rules browsers enforce are enforced here first, so a setting they would silently drop
//! fails at startup instead: `SameSite=None` needs `Secure`, and so do the `__Host-`/`__Secure-`
//! name prefixes (RFC 6265bis §4.1.3, §5.4.7).

use super::de::{bool_or_text, duration, list_or_text, opt_bool_or_text, opt_duration, word_enum};
use super::{is_token, read_secret_file, ConfigError};
use crate::crypto::{KeyError, KeyRing};
use serde::Deserialize;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// `cookies.idle_timeout` when unset: a working day of inactivity, as the peers (Duende BFF,
/// oauth2-proxy's common setups) choose for SPAs.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(8 * 3600);

/// `cookies.absolute_lifetime` when unset: one sign-in a day at the most.
pub const DEFAULT_ABSOLUTE_LIFETIME: Duration = Duration::from_secs(24 * 3600);

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
    /// Deprecated alias of `idle_timeout` (see [`CookieConfig::session_lifetime_alias`]).
    #[serde(deserialize_with = "opt_duration")]
    session_lifetime: Option<Duration>,
    #[serde(deserialize_with = "opt_duration")]
    idle_timeout: Option<Duration>,
    #[serde(deserialize_with = "duration")]
    absolute_lifetime: Duration,
    #[serde(deserialize_with = "bool_or_text")]
    persistent: bool,
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
            session_lifetime: None,
            idle_timeout: None,
            absolute_lifetime: DEFAULT_ABSOLUTE_LIFETIME,
            persistent: false,
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
    /// How long a session lasts without a request (`cookies.idle_timeout`): measured from the
    /// last request that renewed it, renewed by any authenticated request.
    pub idle_timeout: Duration,
    /// How long a session lasts from its login, whatever the activity and however many
    /// refreshes (`cookies.absolute_lifetime`).
    pub absolute_lifetime: Duration,
    /// Session cookies carry `Max-Age` (the absolute lifetime left), so they survive a browser
    /// restart (`cookies.persistent`); off: browser-session cookies.
    pub persistent: bool,
    /// The configuration set the deprecated `cookies.session_lifetime`, read as `idle_timeout`:
    /// warned about at start.
    pub session_lifetime_alias: bool,
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
        let idle_timeout = match (c.idle_timeout, c.session_lifetime) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    "cookies.session_lifetime",
                    "is the deprecated name of cookies.idle_timeout: set only idle_timeout",
                ))
            }
            (Some(idle), None) | (None, Some(idle)) => idle,
            (None, None) => DEFAULT_IDLE_TIMEOUT,
        };
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
            idle_timeout,
            absolute_lifetime: c.absolute_lifetime,
            persistent: c.persistent,
            session_lifetime_alias: c.session_lifetime.is_some(),
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

#[cfg(test)]
mod tests {
    use crate::config::{test_toml, Config, TEST_PROVIDER};
    use std::time::Duration;

    fn cookies(lines: &str) -> Result<super::CookieConfig, String> {
        Config::from_toml(&test_toml(lines, TEST_PROVIDER), Vec::new())
            .map(|c| c.cookies)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn session_lifetimes_default_to_what_suits_an_spa() {
        let c = cookies("").expect("valid");
        assert_eq!(c.idle_timeout, Duration::from_secs(8 * 3600));
        assert_eq!(c.absolute_lifetime, Duration::from_secs(24 * 3600));
        assert!(!c.persistent && !c.session_lifetime_alias);
        let c = cookies("idle_timeout = \"30m\"\nabsolute_lifetime = \"7d\"\npersistent = true")
            .expect("valid");
        assert_eq!(c.idle_timeout, Duration::from_secs(1800));
        assert_eq!(c.absolute_lifetime, Duration::from_secs(7 * 86_400));
        assert!(c.persistent);
        let e = cookies("absolute_lifetime = \"0s\"").expect_err("zero");
        assert!(e.contains("cookies.absolute_lifetime"), "{e}");
    }

    /// Configurations written for earlier releases keep loading: `session_lifetime` (a lifetime
    /// renewed by every write, closest to an idle timeout) is read as `idle_timeout`.
    #[test]
    fn session_lifetime_is_a_deprecated_alias_of_idle_timeout() {
        let c = cookies("session_lifetime = \"12h\"").expect("valid");
        assert_eq!(c.idle_timeout, Duration::from_secs(12 * 3600));
        assert!(c.session_lifetime_alias);
        let e = cookies("session_lifetime = \"12h\"\nidle_timeout = \"1h\"").expect_err("both");
        assert!(e.contains("cookies.session_lifetime"), "{e}");
        assert!(e.contains("idle_timeout"), "{e}");
    }
}
