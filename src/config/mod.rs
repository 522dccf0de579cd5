//! Configuration: a TOML file, overlaid by environment variables, turned into typed values.
//!
//! Everything an operator can get wrong is caught here, at startup, with a message that names
//! the key and says how to fix it; past this module the rest of the code trusts the types
//! (a [`TrustedOrigins`] only holds real origins, a [`KeyRing`](crate::crypto::KeyRing) is never
//! empty, and so on).
//!
//! The environment rule: `TOKEN_HANDLER__<SECTION>__<KEY>` sets `<section>.<key>`, with array
//! elements addressed by index (`TOKEN_HANDLER__PROVIDERS__0__CLIENT_SECRET`). Values are
//! strings; booleans are `true`/`false`, lists are comma-separated. Secrets can also come from
//! files (`cookies.keys_file`, `providers[].client_secret_file`), so none has to sit in the TOML
//! or in the environment.
//!
//! The layout: serde reads each section into its `Raw…` type (words such as `same_site` and
//! durations already typed, through the readers in `de`), each section's file turns its raw
//! type into the validated one with `TryFrom`, and [`Config`]'s own `TryFrom` below checks only
//! the rules that span sections (the cookie path must cover the base path and the routes, forward
//! auth needs its listener).

mod cookies;
mod de;
mod env;
mod files;
mod listeners;
mod log;
mod provider;
mod proxy;
mod rate_limit;
#[cfg(test)]
mod reference;
mod server;
mod store;
mod web;

pub use cookies::{CookieConfig, SameSite};
pub use env::ENV_PREFIX;
pub use files::{loose_secret_files, LooseSecretFile, SecretFile};
pub use log::LogFormat;
pub use provider::{
    AssertionAudience, ClientAuth, EndpointOverrides, ParMode, Preset, ProviderConfig, TokenParams,
    TokenRequestHeaders, UserInfoMethod, UserInfoSource, DEFAULT_ALLOWED_EXTRA_PARAMS,
    RESERVED_PARAMS, RESERVED_TOKEN_HEADERS,
};
pub use proxy::{
    is_instructing_response_header, ProxyConfig, RouteConfig, RoutePath, TokenFormat,
    INSTRUCTING_REQUEST_HEADERS,
};
pub use rate_limit::LoginRate;
pub use server::{BasePath, IpNet, ServerConfig};
pub use store::StoreConfig;
pub use web::{ReturnTargets, TrustedOrigins, WebConfig, MAX_RETURN_TO};

use cookies::RawCookies;
use listeners::RawListener;
use log::RawLog;
use provider::RawProvider;
use proxy::{validate_proxy, RawProxy, RawRoute};
use rate_limit::RawRateLimit;
use serde::Deserialize;
use server::RawServer;
use std::path::Path;
use store::RawStore;
use url::Url;
use web::RawWeb;

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

/// The file format (serde), kept private: nothing outside this module sees unvalidated config.
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
    metrics: RawListener,
    #[serde(default)]
    forward_auth: RawListener,
    #[serde(default)]
    rate_limit: RawRateLimit,
    #[serde(default)]
    store: RawStore,
}

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
    /// The store shared by the replicas (`[store]`); `None`: off, each replica on its own.
    pub store: Option<StoreConfig>,
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
        env::overlay(&mut table, env)?;
        let raw: RawConfig =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                let key = e.path().to_string();
                ConfigError::new(key, e.into_inner().message().to_string())
            })?;
        Self::try_from(raw)
    }
}

impl TryFrom<RawConfig> for Config {
    type Error = ConfigError;

    /// Each section on its own, then the rules between sections.
    fn try_from(raw: RawConfig) -> Result<Self, ConfigError> {
        let server = ServerConfig::try_from(raw.server)?;
        let cookies = CookieConfig::try_from(raw.cookies)?;
        let base_path = &server.base_path;
        if !within(&format!("{}/", base_path.as_str()), &cookies.path) {
            return Err(ConfigError::new(
                "cookies.path",
                format!(
                    "`{}` must contain server.base_path `{}`: the agent endpoints need the access-token and CSRF cookies",
                    cookies.path,
                    base_path.as_str()
                ),
            ));
        }
        let web = WebConfig::try_from(raw.web)?;
        // The provider sends the browser back to the callback from its own site: browsers
        // withhold SameSite=Strict cookies on that navigation, so the login cookie would never
        // arrive and every server-side login would fail.
        if server.callback_path.is_some() && cookies.same_site == SameSite::Strict {
            return Err(ConfigError::new(
                "server.callback_path",
                "needs cookies.same_site = \"lax\": browsers do not send SameSite=Strict cookies on the identity provider's redirect to the callback, so the login could never complete",
            ));
        }
        let mut secret_files: Vec<SecretFile> = cookies
            .keys_file
            .iter()
            .map(|path| SecretFile {
                key: "cookies.keys_file".into(),
                path: path.clone(),
            })
            .collect();
        let providers = provider::providers(raw.providers, &mut secret_files)?;
        let proxy = validate_proxy(raw.proxy, raw.routes, base_path, &cookies.path)?;
        let login_rate = Option::<LoginRate>::try_from(raw.rate_limit)?;
        let store = raw.store.validate(&mut secret_files)?;
        let metrics_listen = Option::<String>::from(raw.metrics);
        let forward_auth_listen = Option::<String>::from(raw.forward_auth);
        if forward_auth_listen.is_none() && !proxy.forward_auth_paths.is_empty() {
            return Err(ConfigError::new(
                "proxy.forward_auth_paths",
                "forward auth is served on its own listener only: set forward_auth.listen (an address only the gateway reaches, e.g. \"127.0.0.1:9091\"), or remove these paths",
            ));
        }
        Ok(Config {
            server,
            cookies,
            web,
            providers,
            proxy,
            log_format: raw.log.format,
            metrics_listen,
            forward_auth_listen,
            secret_files,
            login_rate,
            store,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Rules shared by several sections.

fn read_secret_file(key: &str, path: &Path) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(key, format!("cannot read {}: {e}", path.display())))?;
    Ok(text)
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

/// Unit tests' configuration text: a fresh cookie key (`cookies` adds lines to `[cookies]`), one
/// trusted origin, and `rest` (the providers, routes and sections a test needs).
#[cfg(test)]
pub(crate) fn test_toml(cookies: &str, rest: &str) -> String {
    let key = crate::crypto::CookieKey::generate_text();
    format!(
        "[cookies]\nkeys = [\"{key}\"]\n{cookies}\n[web]\ntrusted_origins = [\"https://www.example.com\"]\n{rest}\n"
    )
}

/// A valid provider entry, for unit tests that need one but test something else.
#[cfg(test)]
pub(crate) const TEST_PROVIDER: &str = "[[providers]]\nid = \"default\"\nissuer = \"https://login.example.com\"\nclient_id = \"c\"\nclient_secret = \"s\"\nredirect_uri = \"https://www.example.com/\"\n";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::CookieKey;
    use std::time::Duration;

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
    fn server_side_logins_need_lax_cookies_and_configured_targets() {
        let key = CookieKey::generate_text();
        let on = minimal(&key).replace(
            "[cookies]",
            "[server]\ncallback_path = \"/oauth-agent/login/callback\"\n[cookies]",
        );
        let e = err(&on, no_env());
        assert_eq!(e.key, "server.callback_path");
        assert!(e.message.contains("lax"), "{e}");
        let lax = on.replace("[cookies]", "[cookies]\nsame_site = \"lax\"");
        let c = Config::from_toml(&lax, no_env()).expect("valid");
        assert_eq!(
            c.server.callback_path.as_deref(),
            Some("/oauth-agent/login/callback")
        );
        assert_eq!(
            c.web.return_to.default_target().as_str(),
            "https://www.example.com/"
        );
        let evil = lax.replace("[web]", "[web]\nreturn_to = [\"https://evil.example/\"]");
        assert_eq!(err(&evil, no_env()).key, "web.return_to");
    }

    #[test]
    fn at_most_one_provider_is_exclusive() {
        let key = CookieKey::generate_text();
        let second = "[[providers]]\nid = \"b\"\nissuer = \"https://b.example.com\"\nclient_id = \"c\"\nclient_secret = \"s\"\nredirect_uri = \"https://www.example.com/b\"\nexclusive = true\n";
        let one = minimal(&key) + second;
        let c = Config::from_toml(&one, no_env()).expect("valid");
        assert!(c.providers[1].exclusive && !c.providers[0].exclusive);
        assert_eq!(c.providers[0].display_name, "default");
        let two = one.replace(
            "redirect_uri = \"https://www.example.com/\"",
            "redirect_uri = \"https://www.example.com/\"\nexclusive = true\ndisplay_name = \"A\"",
        );
        assert_eq!(err(&two, no_env()).key, "providers[1].exclusive");
    }

    #[test]
    fn only_the_default_provider_is_required_unless_configured() {
        let key = CookieKey::generate_text();
        let second = "[[providers]]\nid = \"b\"\nissuer = \"https://b.example.com\"\nclient_id = \"c\"\nclient_secret = \"s\"\nredirect_uri = \"https://www.example.com/b\"\n";
        let two = minimal(&key) + second;
        let c = Config::from_toml(&two, no_env()).expect("valid");
        assert!(c.providers[0].required && !c.providers[1].required);
        let c = Config::from_toml(&(two.clone() + "required = true\n"), no_env()).expect("valid");
        assert!(c.providers[0].required && c.providers[1].required);
        // The exclusive provider is the default one, so it is the one required by default.
        let c = Config::from_toml(&(two + "exclusive = true\n"), no_env()).expect("valid");
        assert!(!c.providers[0].required && c.providers[1].required);
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
        assert_eq!((rate.per_minute.get(), rate.burst.get()), (600, 100));
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
}
