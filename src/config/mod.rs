//! Configuration: a TOML file, overlaid by environment variables, turned into typed values.
//!
//! Everything an operator can get wrong is caught here, at startup, with a message that names
//! the key and says how to fix it; past this module the rest of the code trusts the types
//! (a [`TrustedOrigins`] only holds real origins, a [`KeyRing`] is never empty, and so on).
//!
//! The environment rule: `TOKEN_HANDLER__<SECTION>__<KEY>` sets `<section>.<key>`, with array
//! elements addressed by index (`TOKEN_HANDLER__PROVIDERS__0__CLIENT_SECRET`). Values are
//! strings; booleans are `true`/`false`, lists are comma-separated. Secrets can also come from
//! files (`cookies.keys_file`, `providers[].client_secret_file`), so none has to sit in the TOML
//! or in the environment.

mod files;
mod provider;
mod proxy;

pub use files::{loose_secret_files, LooseSecretFile, SecretFile};
use provider::RawProvider;
pub use provider::{
    AssertionAudience, ClientAuth, EndpointOverrides, ParMode, Preset, ProviderConfig,
    DEFAULT_ALLOWED_EXTRA_PARAMS, RESERVED_PARAMS,
};
pub use proxy::{
    is_instructing_response_header, ProxyConfig, RouteConfig, RoutePath,
    INSTRUCTING_REQUEST_HEADERS,
};
use proxy::{validate_proxy, RawProxy, RawRoute};

use crate::crypto::{KeyError, KeyRing};
use serde::de::{self, Deserializer};
use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use url::Url;

/// The prefix of every environment variable that overrides a configuration key.
pub const ENV_PREFIX: &str = "TOKEN_HANDLER__";

/// A configuration problem, naming the key at fault.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The file format (serde), kept private: nothing outside this module sees unvalidated config.

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    cookies: RawCookies,
    #[serde(default)]
    web: RawWeb,
    #[serde(default)]
    providers: Vec<RawProvider>,
    #[serde(default)]
    proxy: RawProxy,
    #[serde(default)]
    routes: Vec<RawRoute>,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    metrics: RawMetrics,
    #[serde(default)]
    forward_auth: RawForwardAuth,
    #[serde(default)]
    rate_limit: RawRateLimit,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRateLimit {
    #[serde(deserialize_with = "usize_or_text")]
    login_per_minute: usize,
    #[serde(deserialize_with = "usize_or_text")]
    login_burst: usize,
}

impl Default for RawRateLimit {
    fn default() -> Self {
        Self {
            login_per_minute: 60,
            login_burst: 30,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLog {
    format: String,
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            format: "text".into(),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawMetrics {
    listen: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawForwardAuth {
    listen: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawServer {
    listen: String,
    base_path: String,
    #[serde(deserialize_with = "usize_or_text")]
    workers: usize,
    shutdown_grace: String,
    #[serde(deserialize_with = "list_or_text")]
    trusted_proxies: Vec<String>,
    connect_timeout: String,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            base_path: "/oauth-agent".into(),
            workers: 0,
            shutdown_grace: "30s".into(),
            trusted_proxies: Vec::new(),
            connect_timeout: "5s".into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawCookies {
    prefix: String,
    #[serde(deserialize_with = "bool_or_text")]
    secure: bool,
    #[serde(deserialize_with = "opt_bool_or_text")]
    name_prefixes: Option<bool>,
    same_site: String,
    domain: String,
    path: String,
    #[serde(deserialize_with = "list_or_text")]
    keys: Vec<String>,
    keys_file: Option<PathBuf>,
    login_timeout: String,
    session_lifetime: String,
}

impl Default for RawCookies {
    fn default() -> Self {
        Self {
            prefix: "th".into(),
            secure: true,
            name_prefixes: None,
            same_site: "strict".into(),
            domain: String::new(),
            path: "/".into(),
            keys: Vec::new(),
            keys_file: None,
            login_timeout: "10m".into(),
            session_lifetime: "12h".into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawWeb {
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

/// Environment values are strings; TOML has real booleans. Accept both.
fn bool_or_text<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum B {
        Bool(bool),
        Text(String),
    }
    match B::deserialize(d)? {
        B::Bool(b) => Ok(b),
        B::Text(t) => match t.trim() {
            "true" => Ok(true),
            "false" => Ok(false),
            other => Err(de::Error::custom(format!(
                "expected true or false, found `{other}`"
            ))),
        },
    }
}

/// As [`bool_or_text`], for a key whose default depends on others.
fn opt_bool_or_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    bool_or_text(d).map(Some)
}

/// Environment values are strings; TOML has real integers. Accept both.
fn usize_or_text<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum N {
        Num(usize),
        Text(String),
    }
    match N::deserialize(d)? {
        N::Num(n) => Ok(n),
        N::Text(t) => t
            .trim()
            .parse()
            .map_err(|_| de::Error::custom(format!("expected a whole number, found `{t}`"))),
    }
}

/// Environment values are strings; a list there is comma-separated.
fn list_or_text<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum L {
        List(Vec<String>),
        Text(String),
    }
    Ok(match L::deserialize(d)? {
        L::List(l) => l,
        L::Text(t) => t
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
    })
}

// ---------------------------------------------------------------------------------------------
// The validated configuration.

/// The whole validated configuration. Debug output never contains a secret.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub cookies: CookieConfig,
    pub web: WebConfig,
    /// At least one; the first is the default.
    pub providers: Vec<ProviderConfig>,
    pub proxy: ProxyConfig,
    pub log_format: LogFormat,
    /// Where Prometheus metrics are served; `None`: not at all.
    pub metrics_listen: Option<String>,
    /// Where the forward-auth endpoint is served; `None`: not at all. Never the public
    /// listener: its answers carry the access token, which no page may read.
    pub forward_auth_listen: Option<String>,
    /// The configured files that hold secrets (their modes are checked at start).
    pub secret_files: Vec<SecretFile>,
    /// Per-client-address limits on starting and ending logins; `None`: off.
    pub login_rate: Option<LoginRate>,
}

/// How many `login/start` (and, separately, `login/end`) calls one client address may make:
/// `per_minute` on average, up to `burst` at once (a token bucket).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginRate {
    pub per_minute: std::num::NonZeroU32,
    pub burst: std::num::NonZeroU32,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// `host:port` to bind; port 0 picks a free port (tests).
    pub listen: String,
    pub base_path: BasePath,
    /// Worker threads; `None`: one per CPU core.
    pub workers: Option<usize>,
    /// How long in-flight requests may take to finish after SIGTERM/SIGINT.
    pub shutdown_grace: Duration,
    /// Peers whose `X-Forwarded-*` headers are believed (extended, not replaced).
    pub trusted_proxies: Vec<IpNet>,
    /// Time allowed to open a connection (TCP and TLS) to a provider or upstream; the total
    /// time of a call is `providers[].timeout` or `routes[].timeout`.
    pub connect_timeout: Duration,
}

impl ServerConfig {
    /// Whether `ip` is one of `trusted_proxies`, whose `X-Forwarded-*` headers are believed.
    pub fn trusts(&self, ip: std::net::IpAddr) -> bool {
        self.trusted_proxies.iter().any(|n| n.contains(ip))
    }
}

/// An address range, `10.0.0.0/8` or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: std::net::IpAddr,
    prefix: u8,
}

impl IpNet {
    pub fn parse(text: &str) -> Result<Self, String> {
        let (ip, prefix) = match text.trim().split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (text.trim(), None),
        };
        let addr: std::net::IpAddr = ip
            .parse()
            .map_err(|_| format!("`{text}` is not an IP address or CIDR range"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{text}` has an invalid prefix length"))?,
        };
        Ok(Self { addr, prefix })
    }

    /// Whether `ip` lies in this range (IPv4-mapped IPv6 peers count as IPv4).
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        let ip = match ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map(std::net::IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        let (a, b, bits) = match (self.addr, ip) {
            (std::net::IpAddr::V4(a), std::net::IpAddr::V4(b)) => {
                (u32::from(a) as u128, u32::from(b) as u128, 32)
            }
            (std::net::IpAddr::V6(a), std::net::IpAddr::V6(b)) => {
                (u128::from(a), u128::from(b), 128)
            }
            _ => return false,
        };
        let shift = bits - u32::from(self.prefix);
        shift >= bits || (a >> shift) == (b >> shift)
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Where the agent endpoints live: empty (the root) or `/segment[/segment…]` without a trailing
/// slash, so `format!("{base}/login/start")` is always a clean path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasePath(String);

impl BasePath {
    pub fn parse(text: &str) -> Result<Self, String> {
        let trimmed = text.trim().trim_end_matches('/');
        if trimmed.is_empty() {
            return Ok(Self(String::new()));
        }
        if !trimmed.starts_with('/') {
            return Err(format!("`{text}` must start with `/`"));
        }
        if trimmed.split('/').skip(1).any(|seg| {
            seg.is_empty() || seg == "." || seg == ".." || !seg.chars().all(is_path_char)
        }) {
            return Err(format!(
                "`{text}` must be plain path segments (letters, digits, `-`, `_`, `.`, `~`)"
            ));
        }
        Ok(Self(trimmed.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The full path of an endpoint under this base, e.g. `join("/refresh")`.
    pub fn join(&self, endpoint: &str) -> String {
        format!("{}{}", self.0, endpoint)
    }
}

fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~')
}

/// SameSite attribute of every cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    Strict,
    Lax,
    None,
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

#[derive(Debug, Clone)]
pub struct WebConfig {
    pub trusted_origins: TrustedOrigins,
    /// Answer CORS preflights and add CORS headers for trusted origins.
    pub cors: bool,
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

impl Config {
    /// Loads a file (if given) and overlays environment variables named by [`ENV_PREFIX`].
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p).map_err(|e| {
                ConfigError::new("--config", format!("cannot read {}: {e}", p.display()))
            })?,
            None => String::new(),
        };
        Self::from_toml(&text, std::env::vars())
    }

    /// Parses TOML text overlaid with the given environment (tests pass their own).
    pub fn from_toml(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut table: toml::Table =
            toml::from_str(text).map_err(|e| ConfigError::new("config file", e.to_string()))?;
        for (name, value) in env {
            if let Some(rest) = name.strip_prefix(ENV_PREFIX) {
                apply_env(&mut table, &name, rest, value)?;
            }
        }
        let raw: RawConfig =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                let key = e.path().to_string();
                ConfigError::new(key, e.into_inner().message().to_string())
            })?;
        raw.validate()
    }
}

/// The configuration's lists of tables, addressed by index from the environment.
const LISTS: [&str; 2] = ["providers", "routes"];

/// Sets one key from an environment variable: `SECTION__KEY`, `PROVIDERS__0__KEY`.
fn apply_env(
    table: &mut toml::Table,
    name: &str,
    rest: &str,
    value: String,
) -> Result<(), ConfigError> {
    let parts: Vec<String> = rest.split("__").map(|p| p.to_ascii_lowercase()).collect();
    let bad = || {
        ConfigError::new(
            name,
            "environment overrides are TOKEN_HANDLER__<SECTION>__<KEY>, or TOKEN_HANDLER__PROVIDERS__<INDEX>__<KEY> and TOKEN_HANDLER__ROUTES__<INDEX>__<KEY> for list entries",
        )
    };
    match parts.as_slice() {
        [section, key] if !LISTS.contains(&section.as_str()) && !key.is_empty() => {
            let entry = table
                .entry(section.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let section = entry.as_table_mut().ok_or_else(bad)?;
            section.insert(key.clone(), toml::Value::String(value));
        }
        [section, index, key] if LISTS.contains(&section.as_str()) && !key.is_empty() => {
            let index: usize = index.parse().map_err(|_| bad())?;
            if index > 64 {
                return Err(bad());
            }
            let entry = table
                .entry(section.clone())
                .or_insert_with(|| toml::Value::Array(Vec::new()));
            let list = entry.as_array_mut().ok_or_else(bad)?;
            while list.len() <= index {
                list.push(toml::Value::Table(toml::Table::new()));
            }
            let provider = list[index].as_table_mut().ok_or_else(bad)?;
            provider.insert(key.clone(), toml::Value::String(value));
        }
        _ => return Err(bad()),
    }
    Ok(())
}

fn read_secret_file(key: &str, path: &Path) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(key, format!("cannot read {}: {e}", path.display())))?;
    Ok(text)
}

fn parse_duration(key: &str, text: &str) -> Result<Duration, ConfigError> {
    let d = humantime::parse_duration(text.trim()).map_err(|e| {
        ConfigError::new(
            key,
            format!("`{text}` is not a duration like \"30s\" or \"10m\": {e}"),
        )
    })?;
    if d.is_zero() {
        return Err(ConfigError::new(key, "must be longer than zero"));
    }
    Ok(d)
}

fn parse_url(key: &str, text: &str) -> Result<Url, ConfigError> {
    let url =
        Url::parse(text.trim()).map_err(|e| ConfigError::new(key, format!("`{text}`: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ConfigError::new(
            key,
            format!("`{text}` must be an http(s) URL"),
        ));
    }
    Ok(url)
}

/// Provider endpoints carry codes and tokens: https, except on loopback for development and
/// tests, where there is no network to eavesdrop on.
pub(crate) fn parse_provider_url(key: &str, text: &str) -> Result<Url, ConfigError> {
    let url = parse_url(key, text)?;
    if url.scheme() == "http" && !is_loopback(&url) {
        return Err(ConfigError::new(
            key,
            format!("`{text}` must use https (http is only allowed for loopback addresses)"),
        ));
    }
    Ok(url)
}

/// RFC 9700 §4.4 (mix-up): when two providers send their responses to the same redirect URI,
/// the response alone does not say which provider issued the code, so a malicious or
/// compromised provider could have the code of another sent to its own token endpoint. Only
/// the `iss` parameter of RFC 9207 tells them apart, so every provider that shares a
/// `redirect_uri` must be configured to require it (`require_iss = true`).
fn check_shared_redirect_uris(providers: &[ProviderConfig]) -> Result<(), ConfigError> {
    for (i, p) in providers.iter().enumerate() {
        if p.require_iss {
            continue;
        }
        if let Some(other) = providers
            .iter()
            .find(|q| q.id != p.id && q.redirect_uri == p.redirect_uri)
        {
            return Err(ConfigError::new(
                format!("providers[{i}].require_iss"),
                format!(
                    "providers `{}` and `{}` share redirect_uri `{}`: a response at a shared redirect URI does not say which provider sent it, so one provider could obtain another's authorization code (mix-up attack, RFC 9700 §4.4). Give each provider its own redirect_uri, or set require_iss = true on every provider that shares it (each must send the iss parameter of RFC 9207)",
                    p.id, other.id, p.redirect_uri
                ),
            ));
        }
    }
    Ok(())
}

/// Whether a URL names the local machine (`localhost`, `*.localhost`, 127.0.0.0/8, `::1`).
pub(crate) fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost" || d.ends_with(".localhost"),
        None => false,
    }
}

/// Whether `path` lies under the cookie path `scope` (RFC 6265 §5.1.4 path-match).
fn within(path: &str, scope: &str) -> bool {
    let path = if path.is_empty() { "/" } else { path };
    path == scope
        || (path.starts_with(scope)
            && (scope.ends_with('/') || path[scope.len()..].starts_with('/')))
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl RawConfig {
    fn validate(self) -> Result<Config, ConfigError> {
        let base_path = BasePath::parse(&self.server.base_path)
            .map_err(|m| ConfigError::new("server.base_path", m))?;
        if self.server.listen.trim().is_empty() {
            return Err(ConfigError::new("server.listen", "must be host:port"));
        }

        let c = self.cookies;
        if !is_token(&c.prefix) {
            return Err(ConfigError::new(
                "cookies.prefix",
                "must be letters, digits, `-` or `_` (it names cookies and the CSRF header)",
            ));
        }
        let same_site = match c.same_site.to_ascii_lowercase().as_str() {
            "strict" => SameSite::Strict,
            "lax" => SameSite::Lax,
            "none" => SameSite::None,
            other => {
                return Err(ConfigError::new(
                    "cookies.same_site",
                    format!("`{other}` is not one of strict, lax, none"),
                ))
            }
        };
        if same_site == SameSite::None && !c.secure {
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
        let key_texts = match (&c.keys_file, c.keys.is_empty()) {
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
            (None, _) => c.keys,
        };
        let keys_key = if c.keys_file.is_some() {
            "cookies.keys_file"
        } else {
            "cookies.keys"
        };
        let keys = KeyRing::parse(&key_texts).map_err(|e| {
            let hint = match e {
                KeyError::Empty => String::new(),
                _ => " (keys are never shown; check each entry)".to_string(),
            };
            ConfigError::new(keys_key, format!("{e}{hint}"))
        })?;
        if !within(&format!("{}/", base_path.as_str()), &path) {
            return Err(ConfigError::new(
                "cookies.path",
                format!(
                    "`{path}` must contain server.base_path `{}`: the agent endpoints need the access-token and CSRF cookies",
                    base_path.as_str()
                ),
            ));
        }
        let name_prefixes = c.name_prefixes.unwrap_or(c.secure);
        if name_prefixes && !c.secure {
            return Err(ConfigError::new(
                "cookies.name_prefixes",
                "`true` requires cookies.secure = true (browsers refuse __Host- and __Secure- cookies that are not Secure)",
            ));
        }
        let cookies = CookieConfig {
            prefix: c.prefix,
            secure: c.secure,
            name_prefixes,
            same_site,
            domain,
            path,
            keys,
            keys_file: c.keys_file.clone(),
            login_timeout: parse_duration("cookies.login_timeout", &c.login_timeout)?,
            session_lifetime: parse_duration("cookies.session_lifetime", &c.session_lifetime)?,
        };

        let web = WebConfig {
            trusted_origins: TrustedOrigins::parse(&self.web.trusted_origins)
                .map_err(|m| ConfigError::new("web.trusted_origins", m))?,
            cors: self.web.cors,
        };

        if self.providers.is_empty() {
            return Err(ConfigError::new(
                "providers",
                "configure at least one [[providers]] entry",
            ));
        }
        let mut secret_files: Vec<SecretFile> = c
            .keys_file
            .iter()
            .map(|path| SecretFile {
                key: "cookies.keys_file".into(),
                path: path.clone(),
            })
            .collect();
        let mut providers: Vec<ProviderConfig> = Vec::new();
        for (i, p) in self.providers.into_iter().enumerate() {
            secret_files.extend(p.secret_files(i));
            let provider = p.validate(i)?;
            if providers.iter().any(|q| q.id == provider.id) {
                return Err(ConfigError::new(
                    format!("providers[{i}].id"),
                    format!("`{}` is used by another provider", provider.id),
                ));
            }
            providers.push(provider);
        }
        check_shared_redirect_uris(&providers)?;

        let proxy = validate_proxy(self.proxy, self.routes, &base_path, &cookies.path)?;

        let log_format = match self.log.format.to_ascii_lowercase().as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(ConfigError::new(
                    "log.format",
                    format!("`{other}` is not one of text, json"),
                ))
            }
        };
        let login_rate = match self.rate_limit.login_per_minute {
            0 => None,
            n => {
                let count = |key: &str, n: usize| {
                    u32::try_from(n)
                        .ok()
                        .and_then(std::num::NonZeroU32::new)
                        .ok_or_else(|| ConfigError::new(key, "must be between 1 and 4294967295"))
                };
                Some(LoginRate {
                    per_minute: count("rate_limit.login_per_minute", n)?,
                    burst: count("rate_limit.login_burst", self.rate_limit.login_burst)?,
                })
            }
        };
        let metrics_listen = match self.metrics.listen.trim() {
            "" => None,
            addr => Some(addr.to_string()),
        };
        let forward_auth_listen = match self.forward_auth.listen.trim() {
            "" => None,
            addr => Some(addr.to_string()),
        };
        if forward_auth_listen.is_none() && !proxy.forward_auth_paths.is_empty() {
            return Err(ConfigError::new(
                "proxy.forward_auth_paths",
                "forward auth is served on its own listener only: set forward_auth.listen (an address only the gateway reaches, e.g. \"127.0.0.1:9091\"), or remove these paths",
            ));
        }

        Ok(Config {
            proxy,
            log_format,
            metrics_listen,
            forward_auth_listen,
            secret_files,
            login_rate,
            server: ServerConfig {
                listen: self.server.listen.trim().to_string(),
                base_path,
                workers: (self.server.workers > 0).then_some(self.server.workers),
                shutdown_grace: parse_duration(
                    "server.shutdown_grace",
                    &self.server.shutdown_grace,
                )?,
                connect_timeout: parse_duration(
                    "server.connect_timeout",
                    &self.server.connect_timeout,
                )?,
                trusted_proxies: self
                    .server
                    .trusted_proxies
                    .iter()
                    .map(|t| {
                        IpNet::parse(t).map_err(|m| ConfigError::new("server.trusted_proxies", m))
                    })
                    .collect::<Result<_, _>>()?,
            },
            cookies,
            web,
            providers,
        })
    }
}

impl fmt::Display for SameSite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SameSite::Strict => "Strict",
            SameSite::Lax => "Lax",
            SameSite::None => "None",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::CookieKey;

    fn minimal(key: &str) -> String {
        format!(
            r#"
[cookies]
keys = ["{key}"]
[web]
trusted_origins = ["https://www.example.com"]
[[providers]]
id = "default"
issuer = "https://login.example.com"
client_id = "spa-client"
client_secret = "s3cr3t-value"
redirect_uri = "https://www.example.com/"
"#
        )
    }

    fn secret_of(p: &ProviderConfig) -> String {
        use secrecy::ExposeSecret;
        match &p.client_auth {
            ClientAuth::SecretBasic(s) | ClientAuth::SecretPost(s) => s.expose_secret().to_string(),
            other => panic!("no secret in {other:?}"),
        }
    }

    fn no_env() -> Vec<(String, String)> {
        Vec::new()
    }

    fn err(text: &str, env: Vec<(String, String)>) -> ConfigError {
        match Config::from_toml(text, env) {
            Ok(_) => panic!("expected a configuration error"),
            Err(e) => e,
        }
    }

    #[test]
    fn forward_auth_is_off_unless_it_has_its_own_listener() {
        let key = CookieKey::generate_text();
        let c = Config::from_toml(&minimal(&key), no_env()).expect("valid");
        assert_eq!(c.forward_auth_listen, None);
        let paths = minimal(&key) + "[proxy]\nforward_auth_paths = [\"/api\"]\n";
        let e = err(&paths, no_env());
        assert_eq!(e.key, "proxy.forward_auth_paths");
        assert!(e.message.contains("forward_auth.listen"), "{e}");
        let on = paths + "[forward_auth]\nlisten = \"127.0.0.1:9091\"\n";
        let c = Config::from_toml(&on, no_env()).expect("valid");
        assert_eq!(c.forward_auth_listen.as_deref(), Some("127.0.0.1:9091"));
    }

    #[test]
    fn name_prefixes_follow_secure_and_need_it() {
        let key = CookieKey::generate_text();
        let insecure = minimal(&key).replace("[cookies]", "[cookies]\nsecure = false");
        let c = Config::from_toml(&insecure, no_env()).expect("valid");
        assert!(!c.cookies.name_prefixes);
        let forced = insecure.replace("[cookies]", "[cookies]\nname_prefixes = true");
        assert_eq!(err(&forced, no_env()).key, "cookies.name_prefixes");
        let off = minimal(&key).replace("[cookies]", "[cookies]\nname_prefixes = false");
        let c = Config::from_toml(&off, no_env()).expect("valid");
        assert!(c.cookies.secure && !c.cookies.name_prefixes);
    }

    #[test]
    fn minimal_config_has_secure_defaults() {
        let key = CookieKey::generate_text();
        let c = Config::from_toml(&minimal(&key), no_env()).expect("valid");
        assert!(c.cookies.secure);
        assert!(c.cookies.name_prefixes);
        assert_eq!(c.cookies.same_site, SameSite::Strict);
        assert_eq!(c.cookies.prefix, "th");
        assert_eq!(c.server.base_path.as_str(), "/oauth-agent");
        assert_eq!(c.cookies.login_timeout, Duration::from_secs(600));
        assert!(c.web.cors);
        assert_eq!(c.providers[0].scope, "openid profile email offline_access");
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_key() {
        let key = CookieKey::generate_text();
        let text = minimal(&key).replace("[web]", "[web]\ntrusted_origin = []");
        let e = err(&text, no_env());
        assert!(e.to_string().contains("trusted_origin"), "{e}");
    }

    #[test]
    fn environment_overrides_use_one_rule() {
        let key = CookieKey::generate_text();
        let env = vec![
            ("TOKEN_HANDLER__COOKIES__SECURE".into(), "false".into()),
            ("TOKEN_HANDLER__SERVER__BASE_PATH".into(), "/bff/".into()),
            (
                "TOKEN_HANDLER__WEB__TRUSTED_ORIGINS".into(),
                "https://a.example, http://localhost:3000".into(),
            ),
            (
                "TOKEN_HANDLER__PROVIDERS__0__CLIENT_SECRET".into(),
                "from-env".into(),
            ),
            ("UNRELATED".into(), "x".into()),
        ];
        let c = Config::from_toml(&minimal(&key), env).expect("valid");
        assert!(!c.cookies.secure);
        assert_eq!(c.server.base_path.as_str(), "/bff");
        assert_eq!(
            c.web.trusted_origins.as_slice(),
            ["https://a.example", "http://localhost:3000"]
        );
        assert_eq!(secret_of(&c.providers[0]), "from-env");
    }

    #[test]
    fn a_whole_config_can_come_from_the_environment() {
        let key = CookieKey::generate_text();
        let env: Vec<(String, String)> = [
            ("TOKEN_HANDLER__COOKIES__KEYS", key.as_str()),
            (
                "TOKEN_HANDLER__WEB__TRUSTED_ORIGINS",
                "https://www.example.com",
            ),
            ("TOKEN_HANDLER__PROVIDERS__0__ID", "default"),
            (
                "TOKEN_HANDLER__PROVIDERS__0__ISSUER",
                "https://login.example.com",
            ),
            ("TOKEN_HANDLER__PROVIDERS__0__CLIENT_ID", "spa"),
            ("TOKEN_HANDLER__PROVIDERS__0__CLIENT_SECRET", "x"),
            (
                "TOKEN_HANDLER__PROVIDERS__0__REDIRECT_URI",
                "https://www.example.com/",
            ),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        let c = Config::from_toml("", env).expect("valid");
        assert_eq!(c.providers[0].client_id, "spa");
    }

    #[test]
    fn malformed_environment_names_are_refused() {
        let key = CookieKey::generate_text();
        let e = err(
            &minimal(&key),
            vec![("TOKEN_HANDLER__PROVIDERS__X__ID".into(), "a".into())],
        );
        assert_eq!(e.key, "TOKEN_HANDLER__PROVIDERS__X__ID");
    }

    #[test]
    fn secrets_come_from_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (k1, k2) = (CookieKey::generate_text(), CookieKey::generate_text());
        let keys = dir.path().join("keys");
        std::fs::write(&keys, format!("# newest first\n{k1}\n\n{k2}\n")).expect("write");
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "file-secret\n").expect("write");
        let text = minimal("unused")
            .replace(
                "keys = [\"unused\"]",
                &format!("keys_file = {:?}", keys.display().to_string()),
            )
            .replace(
                "client_secret = \"s3cr3t-value\"",
                &format!("client_secret_file = {:?}", secret.display().to_string()),
            );
        let c = Config::from_toml(&text, no_env()).expect("valid");
        assert_eq!(c.cookies.keys.keys().len(), 2);
        assert_eq!(secret_of(&c.providers[0]), "file-secret");
    }

    #[test]
    fn startup_refuses_unsafe_or_broken_settings() {
        let key = CookieKey::generate_text();
        let base = minimal(&key);
        let cases: Vec<(String, &str)> = vec![
            (
                base.replace(&format!("keys = [\"{key}\"]"), "keys = []"),
                "cookies.keys",
            ),
            (base.replace(&key, "c2hvcnQ"), "cookies.keys"),
            (
                base.replace(
                    "[cookies]",
                    "[cookies]\nsame_site = \"none\"\nsecure = false",
                ),
                "cookies.same_site",
            ),
            (
                base.replace("[cookies]", "[cookies]\nsame_site = \"relaxed\""),
                "cookies.same_site",
            ),
            (
                base.replace("https://login.example.com", "http://login.example.com"),
                "providers[0].issuer",
            ),
            (
                base.replace(
                    "\"https://www.example.com\"]",
                    "\"https://www.example.com/app\"]",
                ),
                "web.trusted_origins",
            ),
            (
                base.replace(
                    "trusted_origins = [\"https://www.example.com\"]",
                    "trusted_origins = []",
                ),
                "web.trusted_origins",
            ),
            (
                base.replace("[cookies]", "[cookies]\nprefix = \"a b\""),
                "cookies.prefix",
            ),
        ];
        for (text, key_name) in cases {
            let e = err(&text, no_env());
            assert_eq!(e.key, key_name, "{e}");
        }
    }

    #[test]
    fn debug_output_holds_no_secret() {
        let key = CookieKey::generate_text();
        let c = Config::from_toml(&minimal(&key), no_env()).expect("valid");
        let debug = format!("{c:?}");
        assert!(!debug.contains("s3cr3t-value"), "{debug}");
        assert!(!debug.contains(&key), "{debug}");
    }

    #[test]
    fn routes_are_validated_and_sorted_longest_first() {
        let key = CookieKey::generate_text();
        let text = minimal(&key)
            + r#"
[[routes]]
path = "/api"
upstream = "http://127.0.0.1:9001"
[[routes]]
path = "/api/orders/"
upstream = "http://127.0.0.1:9002/v1"
strip_prefix = true
timeout = "5s"
"#;
        let c = Config::from_toml(&text, no_env()).expect("valid");
        let paths: Vec<_> = c.proxy.routes.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(paths, ["/api/orders", "/api"]);
        assert_eq!(c.proxy.refresh_ahead, Duration::from_secs(60));
        assert!(c.proxy.routes[0].strip_prefix);
        let route = |extra: &str| minimal(&key) + "\n[[routes]]\n" + extra;
        for (extra, key_name) in [
            ("path = \"/\"\nupstream = \"http://a\"", "routes[0].path"),
            (
                "path = \"/oauth-agent\"\nupstream = \"http://a\"",
                "routes[0].path",
            ),
            (
                "path = \"/oauth-agent/x\"\nupstream = \"http://a\"",
                "routes[0].path",
            ),
            (
                "path = \"/api/../x\"\nupstream = \"http://a\"",
                "routes[0].path",
            ),
            (
                "path = \"/api\"\nupstream = \"ftp://a\"",
                "routes[0].upstream",
            ),
            (
                "path = \"/api\"\nupstream = \"http://a/?q=1\"",
                "routes[0].upstream",
            ),
            (
                "path = \"/api\"\nupstream = \"http://a\"\nfoo = 1",
                "routes[0].foo",
            ),
        ] {
            let e = err(&route(extra), no_env());
            assert_eq!(e.key, key_name, "{extra}: {e}");
        }
    }

    #[test]
    fn lists_and_numbers_come_from_the_environment_too() {
        let key = CookieKey::generate_text();
        let env = vec![
            ("TOKEN_HANDLER__SERVER__WORKERS".into(), "4".into()),
            ("TOKEN_HANDLER__ROUTES__0__PATH".into(), "/api".into()),
            (
                "TOKEN_HANDLER__ROUTES__0__UPSTREAM".into(),
                "http://api:9001".into(),
            ),
            (
                "TOKEN_HANDLER__ROUTES__0__ALLOW_BEARER".into(),
                "true".into(),
            ),
        ];
        let c = Config::from_toml(&minimal(&key), env).expect("valid");
        assert_eq!(c.server.workers, Some(4));
        assert_eq!(c.proxy.routes[0].path.as_str(), "/api");
        assert!(c.proxy.routes[0].allow_bearer);
        let e = err(
            &minimal(&key),
            vec![("TOKEN_HANDLER__SERVER__WORKERS".into(), "many".into())],
        );
        assert_eq!(e.key, "server.workers", "{e}");
    }

    #[test]
    fn a_cookie_path_with_a_trailing_slash_may_cover_the_base_path() {
        let key = CookieKey::generate_text();
        let text = minimal(&key).replace("[cookies]", "[cookies]\npath = \"/oauth-agent/\"");
        assert!(Config::from_toml(&text, no_env()).is_ok());
        let text = minimal(&key).replace("[cookies]", "[cookies]\npath = \"/other/\"");
        assert_eq!(err(&text, no_env()).key, "cookies.path");
    }

    #[test]
    fn login_rate_limits_default_on_and_zero_turns_them_off() {
        let key = CookieKey::generate_text();
        let c = Config::from_toml(&minimal(&key), no_env()).expect("valid");
        let rate = c.login_rate.expect("on by default");
        assert_eq!((rate.per_minute.get(), rate.burst.get()), (60, 30));
        let text = minimal(&key) + "\n[rate_limit]\nlogin_per_minute = 5\nlogin_burst = 2\n";
        let rate = Config::from_toml(&text, no_env())
            .expect("valid")
            .login_rate;
        assert_eq!(
            rate.map(|r| (r.per_minute.get(), r.burst.get())),
            Some((5, 2))
        );
        let env = vec![(
            "TOKEN_HANDLER__RATE_LIMIT__LOGIN_PER_MINUTE".to_string(),
            "0".to_string(),
        )];
        let c = Config::from_toml(&minimal(&key), env).expect("valid");
        assert_eq!(c.login_rate, None);
        let text = minimal(&key) + "\n[rate_limit]\nlogin_burst = 0\n";
        assert_eq!(err(&text, no_env()).key, "rate_limit.login_burst");
    }

    #[test]
    fn providers_sharing_a_redirect_uri_must_require_iss() {
        let key = CookieKey::generate_text();
        let second = |extra: &str| {
            format!(
                "{}\n[[providers]]\nid = \"other\"\nissuer = \"https://other.example.com\"\nclient_id = \"c\"\nclient_secret = \"s\"\n{extra}\n",
                minimal(&key)
            )
        };
        // Same redirect_uri, neither requires iss: refused, naming the mix-up.
        let e = err(
            &second("redirect_uri = \"https://www.example.com/\""),
            no_env(),
        );
        assert_eq!(e.key, "providers[0].require_iss", "{e}");
        assert!(e.message.contains("RFC 9700"), "{e}");
        // Only one of them requires it: still refused, for the other.
        let e = err(
            &second("redirect_uri = \"https://www.example.com/\"\nrequire_iss = true"),
            no_env(),
        );
        assert_eq!(e.key, "providers[0].require_iss", "{e}");
        // Both require it: accepted.
        let both = second("redirect_uri = \"https://www.example.com/\"\nrequire_iss = true")
            .replacen(
                "redirect_uri = \"https://www.example.com/\"\n",
                "redirect_uri = \"https://www.example.com/\"\nrequire_iss = \"true\"\n",
                1,
            );
        let c = Config::from_toml(&both, no_env()).expect("valid");
        assert!(c.providers.iter().all(|p| p.require_iss));
        // Distinct redirect URIs: accepted without iss.
        assert!(Config::from_toml(
            &second("redirect_uri = \"https://www.example.com/other\""),
            no_env()
        )
        .is_ok());
    }

    #[test]
    fn trusted_proxy_ranges() {
        let net = IpNet::parse("10.1.0.0/16").expect("valid");
        assert!(net.contains("10.1.2.3".parse().expect("ip")));
        assert!(!net.contains("10.2.0.1".parse().expect("ip")));
        assert!(net.contains("::ffff:10.1.9.9".parse().expect("ip")));
        let one = IpNet::parse("127.0.0.1").expect("valid");
        assert!(one.contains("127.0.0.1".parse().expect("ip")));
        assert!(!one.contains("127.0.0.2".parse().expect("ip")));
        let all6 = IpNet::parse("::/0").expect("valid");
        assert!(all6.contains("2001:db8::1".parse().expect("ip")));
        assert!(IpNet::parse("10.0.0.0/33").is_err());
        assert!(IpNet::parse("proxy.internal").is_err());
    }

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

    #[test]
    fn trusted_origins_compare_exactly() {
        let t = TrustedOrigins::parse(&["https://app.example.com/"]).expect("valid");
        assert!(t.contains("https://app.example.com"));
        assert!(!t.contains("https://app.example.com.evil.test"));
        assert!(!t.contains("http://app.example.com"));
        assert!(!t.contains("null"));
    }
}
