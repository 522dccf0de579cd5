//! Test harness: a real OpenID Provider (`oidc-provider`, started with node on a random loopback
//! port), token-handler on a random port, and a "browser": an HTTP client with a cookie jar that
//! honours cookie paths and removals the way browsers do.

use actix_web::cookie::Cookie;
use actix_web::web;
use awc::http::header::HeaderMap;
use awc::http::Method;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;
use token_handler::config::Config;
use token_handler::crypto::CookieKey;
use token_handler::startup::Application;
use token_handler::state::AppState;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};

pub const SPA_ORIGIN: &str = "https://www.example.test";
pub const REDIRECT_URI: &str = "https://www.example.test/";
pub const BASE: &str = "/oauth-agent";

/// A running `oidc-provider`. Killed by PID on drop; it also exits by itself when our end of
/// its stdin closes (if this process dies) and after a maximum lifetime.
pub struct TestProvider {
    child: Child,
    _stdin: ChildStdin,
    pub issuer: String,
}

impl TestProvider {
    pub async fn start() -> Self {
        Self::start_with(json!({})).await
    }

    pub async fn start_with(config: Value) -> Self {
        Self::start_on(config, 0).await
    }

    /// Starts on a given port (0: any), e.g. to bring a stopped provider back at its address.
    pub async fn start_on(config: Value, port: u16) -> Self {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/oidc/provider.mjs");
        let mut child = Command::new("node")
            .arg(script)
            .env("PORT", port.to_string())
            .env("OIDC_CONFIG", config.to_string())
            .env("MAX_LIFETIME_SECONDS", "300")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start node tests/oidc/provider.mjs (run scripts/test.sh, which installs it)");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        tokio::time::timeout(
            Duration::from_secs(30),
            BufReader::new(stdout).read_line(&mut line),
        )
        .await
        .expect("the provider did not start within 30 s")
        .expect("read the provider's issuer line");
        let issuer = serde_json::from_str::<Value>(&line).expect("issuer JSON")["issuer"]
            .as_str()
            .expect("issuer")
            .to_string();
        Self {
            child,
            _stdin: stdin,
            issuer,
        }
    }

    /// Makes the next `count` token-endpoint requests fail with `status`.
    pub async fn fail_token_endpoint(&self, status: u16, count: u32) {
        let resp = awc::Client::default()
            .post(format!("{}/test/fail-token-endpoint", self.issuer))
            .send_json(&json!({"status": status, "count": count}))
            .await
            .expect("fail-token-endpoint");
        assert!(resp.status().is_success());
    }

    /// Stops the provider (simulating an outage).
    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// The provider's counters (`/test/stats`).
    pub async fn stats(&self) -> Value {
        awc::Client::default()
            .get(format!("{}/test/stats", self.issuer))
            .send()
            .await
            .expect("stats")
            .json()
            .await
            .expect("stats json")
    }

    /// A refresh grant made directly at the provider, bypassing token-handler: tells whether a
    /// refresh token is still alive there.
    pub async fn refresh_directly(&self, refresh_token: &str) -> (u16, Value) {
        let mut resp = awc::Client::default()
            .post(format!("{}/token", self.issuer))
            .basic_auth("spa-client", "spa-secret")
            .send_form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ])
            .await
            .expect("token request");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Revokes a token directly at the provider.
    pub async fn revoke_directly(&self, token: &str) {
        let resp = awc::Client::default()
            .post(format!("{}/token/revocation", self.issuer))
            .basic_auth("spa-client", "spa-secret")
            .send_form(&[("token", token)])
            .await
            .expect("revocation");
        assert_eq!(resp.status().as_u16(), 200);
    }
}

impl Drop for TestProvider {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// A test configuration, typed: tests say what they change (`.proxy_to(&upstream)`,
/// `.refresh_ahead("1s")`, `.provider(|p| p.timeout("1s"))`) and never edit TOML text. It
/// renders to the TOML the app parses ([`TestConfig::toml`]), so the file format is exercised
/// too. Fields mirror docs/configuration.md; unset optional keys are left out, so the app's
/// defaults apply.
///
/// [`TestConfig::new`] is the configuration tests start from: one provider (the test
/// provider's `spa-client`, no PAR), a fresh cookie key, a random port, one worker.
#[derive(Clone, Serialize)]
pub struct TestConfig {
    server: ServerConfig,
    cookies: CookiesConfig,
    web: WebConfig,
    #[serde(skip_serializing_if = "Option::is_none")]
    rate_limit: Option<RateLimitConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metrics: Option<ListenerConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    proxy: Option<ProxyConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    forward_auth: Option<ListenerConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    store: Option<StoreSection>,
    providers: Vec<ProviderConfig>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    routes: Vec<RouteConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    log: Option<LogConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    telemetry: Option<TelemetryConfig>,
}

/// `[log]`.
#[derive(Clone, Serialize)]
struct LogConfig {
    format: String,
}

/// `[telemetry]` (traces.rs).
#[derive(Clone, Serialize)]
struct TelemetryConfig {
    otlp_endpoint: String,
}

#[derive(Clone, Serialize)]
struct ServerConfig {
    listen: String,
    base_path: String,
    workers: u32,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    trusted_proxies: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    shutdown_grace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    callback_path: Option<String>,
}

#[derive(Clone, Serialize)]
struct CookiesConfig {
    prefix: String,
    secure: bool,
    same_site: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    keys: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    keys_file: Option<String>,
    // Session lifetimes (sessions.rs): unset keys take the app's defaults.
    #[serde(skip_serializing_if = "Option::is_none")]
    idle_timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    absolute_lifetime: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    persistent: Option<bool>,
}

#[derive(Clone, Serialize)]
struct WebConfig {
    trusted_origins: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    return_to: Vec<String>,
}

#[derive(Clone, Serialize)]
struct RateLimitConfig {
    login_per_minute: u32,
    login_burst: u32,
}

/// A listener of its own (metrics, forward auth), on a random loopback port.
#[derive(Clone, Serialize)]
struct ListenerConfig {
    listen: String,
}

impl ListenerConfig {
    fn any_port() -> Self {
        Self {
            listen: "127.0.0.1:0".to_string(),
        }
    }
}

/// `[store]`: the shared Redis (tests/api/redis.rs starts one).
#[derive(Clone, Default, Serialize)]
struct StoreSection {
    url: String,
    // The list of ended sessions (tests/api/backchannel.rs).
    #[serde(skip_serializing_if = "Option::is_none")]
    revocation_cache: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    on_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    admin_listen: Option<String>,
}

#[derive(Clone, Default, Serialize)]
struct ProxyConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_ahead: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    forward_auth_paths: Vec<String>,
}

impl TestConfig {
    /// The configuration tests start from, with the test provider at `issuer` as `default`.
    pub fn new(issuer: &str) -> Self {
        Self::with_providers([ProviderConfig::spa_client("default", issuer)
            .scope("openid profile email offline_access")])
    }

    /// As [`TestConfig::new`], with these `[[providers]]` instead (the first is the default).
    pub fn with_providers(providers: impl IntoIterator<Item = ProviderConfig>) -> Self {
        Self {
            server: ServerConfig {
                listen: "127.0.0.1:0".to_string(),
                base_path: BASE.to_string(),
                workers: 1,
                trusted_proxies: Vec::new(),
                shutdown_grace: None,
                callback_path: None,
            },
            cookies: CookiesConfig {
                prefix: "th".to_string(),
                secure: true,
                same_site: "strict".to_string(),
                keys: Some(vec![CookieKey::generate_text()]),
                keys_file: None,
                idle_timeout: None,
                absolute_lifetime: None,
                persistent: None,
            },
            web: WebConfig {
                trusted_origins: vec![SPA_ORIGIN.to_string()],
                return_to: Vec::new(),
            },
            rate_limit: None,
            metrics: None,
            proxy: None,
            forward_auth: None,
            store: None,
            providers: providers.into_iter().collect(),
            routes: Vec::new(),
            log: None,
            telemetry: None,
        }
    }

    /// `[log] format = "json"`.
    pub fn json_logs(mut self) -> Self {
        self.log = Some(LogConfig {
            format: "json".to_string(),
        });
        self
    }

    /// `[telemetry] otlp_endpoint`: traces exported to this OTLP/HTTP base URL.
    pub fn telemetry(mut self, otlp_endpoint: &str) -> Self {
        self.telemetry = Some(TelemetryConfig {
            otlp_endpoint: otlp_endpoint.to_string(),
        });
        self
    }

    /// The configuration as the TOML file the app reads.
    pub fn toml(&self) -> String {
        toml::to_string(self).expect("a test configuration renders as TOML")
    }

    /// `server.listen` (default `127.0.0.1:0`: a random port the in-process app reports;
    /// [`ProcessApp`] picks a free port itself).
    fn listen(mut self, address: &str) -> Self {
        self.server.listen = address.to_string();
        self
    }

    /// `web.trusted_origins` instead of the SPA's origin alone (reload.rs).
    pub fn trusted_origins(mut self, origins: &[&str]) -> Self {
        self.web.trusted_origins = origins.iter().map(|o| o.to_string()).collect();
        self
    }

    /// `cookies.keys = [key]` instead of the fresh key (weak or shared keys).
    pub fn key(mut self, key: &str) -> Self {
        self.cookies.keys = Some(vec![key.to_string()]);
        self.cookies.keys_file = None;
        self
    }

    /// `cookies.keys_file` instead of inline keys.
    pub fn keys_file(mut self, path: &std::path::Path) -> Self {
        self.cookies.keys = None;
        self.cookies.keys_file = Some(path.display().to_string());
        self
    }

    /// `cookies.idle_timeout` and `cookies.absolute_lifetime`.
    pub fn session_lifetimes(mut self, idle: &str, absolute: &str) -> Self {
        self.cookies.idle_timeout = Some(idle.to_string());
        self.cookies.absolute_lifetime = Some(absolute.to_string());
        self
    }

    /// `cookies.persistent = true`.
    pub fn persistent(mut self) -> Self {
        self.cookies.persistent = Some(true);
        self
    }

    /// `server.trusted_proxies`.
    pub fn trusted_proxies(mut self, cidrs: &[&str]) -> Self {
        self.server.trusted_proxies = cidrs.iter().map(|c| c.to_string()).collect();
        self
    }

    /// Server-side logins: `server.callback_path`, `web.return_to` (empty: the default) and
    /// `cookies.same_site = "lax"`, which they need.
    pub fn server_login(mut self, callback_path: &str, return_to: &[&str]) -> Self {
        self.server.callback_path = Some(callback_path.to_string());
        self.web.return_to = return_to.iter().map(|t| t.to_string()).collect();
        self.cookies.same_site = "lax".to_string();
        self
    }

    /// `server.shutdown_grace`.
    pub fn shutdown_grace(mut self, grace: &str) -> Self {
        self.server.shutdown_grace = Some(grace.to_string());
        self
    }

    /// `[rate_limit]` for `login/start` and `login/end`.
    pub fn login_rate_limit(mut self, per_minute: u32, burst: u32) -> Self {
        self.rate_limit = Some(RateLimitConfig {
            login_per_minute: per_minute,
            login_burst: burst,
        });
        self
    }

    /// `[metrics]` on a listener of its own.
    pub fn metrics(mut self) -> Self {
        self.metrics = Some(ListenerConfig::any_port());
        self
    }

    /// `proxy.refresh_ahead`.
    pub fn refresh_ahead(mut self, window: &str) -> Self {
        self.proxy
            .get_or_insert_with(ProxyConfig::default)
            .refresh_ahead = Some(window.to_string());
        self
    }

    /// Forward auth for these paths (`proxy.forward_auth_paths`), on its own listener
    /// (`[forward_auth]`).
    pub fn forward_auth(mut self, paths: &[&str]) -> Self {
        self.proxy
            .get_or_insert_with(ProxyConfig::default)
            .forward_auth_paths = paths.iter().map(|p| p.to_string()).collect();
        self.forward_auth = Some(ListenerConfig::any_port());
        self
    }

    /// `[store] url` (e.g. a [`crate::redis::RedisServer`]'s).
    pub fn store(mut self, url: &str) -> Self {
        self.store = Some(StoreSection {
            url: url.to_string(),
            ..Default::default()
        });
        self
    }

    /// `[store] revocation_cache`, `on_error` or `admin_listen` (after [`TestConfig::store`]).
    pub fn store_key(mut self, key: &str, value: &str) -> Self {
        let store = self.store.as_mut().expect("call .store(url) first");
        let value = Some(value.to_string());
        match key {
            "revocation_cache" => store.revocation_cache = value,
            "on_error" => store.on_error = value,
            "admin_listen" => store.admin_listen = value,
            other => panic!("no [store] key {other} in the test config"),
        }
        self
    }

    /// Adjusts the first (default) provider.
    pub fn provider(mut self, adjust: impl FnOnce(ProviderConfig) -> ProviderConfig) -> Self {
        let first = self.providers.remove(0);
        self.providers.insert(0, adjust(first));
        self
    }

    /// One more `[[routes]]` entry.
    pub fn route(mut self, route: RouteConfig) -> Self {
        self.routes.push(route);
        self
    }

    /// The proxy routes most proxy tests use: `/api` and `/api/slow` (1 s timeout) to
    /// `upstream`, `/mobile` (strip_prefix, allow_bearer), `/down` to a closed port, and
    /// `/api/ws` with WebSocket pass-through.
    pub fn proxy_to(self, upstream: &str) -> Self {
        let closed = format!("http://127.0.0.1:{}", free_port());
        self.route(RouteConfig::new("/api", upstream))
            .route(RouteConfig::new("/api/slow", upstream).timeout("1s"))
            .route(
                RouteConfig::new("/mobile", upstream)
                    .strip_prefix()
                    .allow_bearer(),
            )
            .route(RouteConfig::new("/down", &closed))
            .route(RouteConfig::new("/api/ws", upstream).websocket())
    }
}

/// Builder methods that set optional string keys of the same name: `scope("x")` is
/// `scope = "x"`.
macro_rules! optional_keys {
    ($($(#[$doc:meta])* $key:ident,)*) => {$(
        $(#[$doc])*
        pub fn $key(mut self, value: &str) -> Self {
            self.$key = Some(value.to_string());
            self
        }
    )*};
}

/// One `[[providers]]` entry. [`ProviderConfig::new`] sets only what every entry needs: the
/// client, the SPA's redirect URIs and a 5 s timeout.
#[derive(Clone, Serialize)]
pub struct ProviderConfig {
    id: String,
    issuer: String,
    client_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_secret: Option<String>,
    /// reload.rs: a secret read again on reload.
    #[serde(skip_serializing_if = "Option::is_none")]
    client_secret_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_auth: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    private_key_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    private_key_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_assertion_audience: Option<String>,
    redirect_uri: String,
    post_logout_redirect_uri: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
    timeout: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    par: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    require_iss: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    jwks_uri: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    extra_auth_params: BTreeMap<String, String>,
    // Discovery, configured endpoints, ID-token algorithm, token-request extras (discovery.rs).
    #[serde(skip_serializing_if = "Option::is_none")]
    discovery: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    authorization_endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token_endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    userinfo_endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    revocation_endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    end_session_endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id_token_signing_alg: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    extra_token_params: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    token_request_headers: BTreeMap<String, String>,
    #[serde(flatten)]
    userinfo: UserInfoKeys,
    #[serde(flatten)]
    plain: PlainOAuthKeys,
    #[serde(flatten)]
    picker: PickerKeys,
    #[serde(flatten)]
    readiness: ReadinessKeys,
    #[serde(flatten)]
    bound: BoundKeys,
}

/// `max_concurrent_calls` of a `[[providers]]` entry (tests/api/storm.rs).
#[derive(Clone, Default, Serialize)]
struct BoundKeys {
    #[serde(skip_serializing_if = "Option::is_none")]
    max_concurrent_calls: Option<usize>,
}

/// `required` of a `[[providers]]` entry (tests/api/readiness.rs).
#[derive(Clone, Default, Serialize)]
struct ReadinessKeys {
    #[serde(skip_serializing_if = "Option::is_none")]
    required: Option<bool>,
}

/// `preset`, `userinfo_emails_endpoint` and `[providers.userinfo_claims]` (tests/api/github.rs).
#[derive(Clone, Default, Serialize)]
struct PlainOAuthKeys {
    #[serde(skip_serializing_if = "Option::is_none")]
    preset: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    userinfo_emails_endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    userinfo_claims: Option<BTreeMap<String, String>>,
}

/// The provider-choice keys of a `[[providers]]` entry (tests/api/picker.rs).
#[derive(Clone, Default, Serialize)]
struct PickerKeys {
    #[serde(skip_serializing_if = "Option::is_none")]
    display_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exclusive: Option<bool>,
}

/// The `userinfo_*` keys of a `[[providers]]` entry (tests/api/userinfo.rs).
#[derive(Clone, Default, Serialize)]
struct UserInfoKeys {
    #[serde(skip_serializing_if = "Option::is_none")]
    userinfo_method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    userinfo_source: Option<String>,
}

impl ProviderConfig {
    pub fn new(id: &str, issuer: &str, client_id: &str) -> Self {
        Self {
            id: id.to_string(),
            issuer: issuer.to_string(),
            client_id: client_id.to_string(),
            client_secret: None,
            client_secret_file: None,
            client_auth: None,
            private_key_file: None,
            private_key_id: None,
            client_assertion_audience: None,
            redirect_uri: REDIRECT_URI.to_string(),
            post_logout_redirect_uri: REDIRECT_URI.to_string(),
            scope: None,
            timeout: "5s".to_string(),
            par: None,
            require_iss: None,
            jwks_uri: None,
            extra_auth_params: BTreeMap::new(),
            discovery: None,
            authorization_endpoint: None,
            token_endpoint: None,
            userinfo_endpoint: None,
            revocation_endpoint: None,
            end_session_endpoint: None,
            id_token_signing_alg: None,
            extra_token_params: BTreeMap::new(),
            token_request_headers: BTreeMap::new(),
            userinfo: UserInfoKeys::default(),
            plain: PlainOAuthKeys::default(),
            picker: PickerKeys::default(),
            readiness: ReadinessKeys::default(),
            bound: BoundKeys::default(),
        }
    }

    /// `max_concurrent_calls = n` (tests/api/storm.rs).
    pub fn max_concurrent_calls(mut self, n: usize) -> Self {
        self.bound.max_concurrent_calls = Some(n);
        self
    }

    /// `preset = "<name>"` (the helper still writes `issuer`, which overrides the preset's).
    pub fn preset(mut self, name: &str) -> Self {
        self.plain.preset = Some(name.to_string());
        self
    }

    /// `userinfo_emails_endpoint`.
    pub fn userinfo_emails_endpoint(mut self, url: &str) -> Self {
        self.plain.userinfo_emails_endpoint = Some(url.to_string());
        self
    }

    /// `[providers.userinfo_claims]`: standard claim = member of the provider's answer.
    pub fn userinfo_claims(mut self, pairs: &[(&str, &str)]) -> Self {
        self.plain.userinfo_claims = Some(
            pairs
                .iter()
                .map(|(claim, member)| (claim.to_string(), member.to_string()))
                .collect(),
        );
        self
    }

    /// `display_name`.
    pub fn display_name(mut self, name: &str) -> Self {
        self.picker.display_name = Some(name.to_string());
        self
    }

    /// `required = <on>`: whether readiness waits for this provider.
    pub fn required(mut self, on: bool) -> Self {
        self.readiness.required = Some(on);
        self
    }

    /// `exclusive = true`: the only provider logins may use.
    pub fn exclusive(mut self) -> Self {
        self.picker.exclusive = Some(true);
        self
    }

    /// `userinfo_endpoint`, `userinfo_method` (`post`, `get`) and `userinfo_source` (`auto`,
    /// `provider`, `id_token`); `None` leaves a key out.
    pub fn userinfo(
        mut self,
        endpoint: Option<&str>,
        method: Option<&str>,
        source: Option<&str>,
    ) -> Self {
        self.userinfo_endpoint = endpoint.map(String::from);
        self.userinfo = UserInfoKeys {
            userinfo_method: method.map(String::from),
            userinfo_source: source.map(String::from),
        };
        self
    }

    /// The test provider's `spa-client` (client_secret_basic). Most tests read state and
    /// nonce from the authorization URL, so PAR is off; PAR has its own tests.
    pub fn spa_client(id: &str, issuer: &str) -> Self {
        Self::new(id, issuer, "spa-client")
            .client_secret("spa-secret")
            .par("off")
    }

    optional_keys! {
        client_secret,
        client_secret_file,
        /// `client_auth` (`client_secret_post`, `private_key_jwt`, `none`, …).
        client_auth,
        client_assertion_audience,
        scope,
        /// `par`: `off`, `auto` or `required`.
        par,
        jwks_uri,
        authorization_endpoint,
        token_endpoint,
        userinfo_endpoint,
        revocation_endpoint,
        end_session_endpoint,
        /// `id_token_signing_alg` (`RS256`, `HS256`, …).
        id_token_signing_alg,
    }

    /// `discovery = <on>`.
    pub fn discovery(mut self, on: bool) -> Self {
        self.discovery = Some(on);
        self
    }

    /// One entry of `[providers.extra_token_params]`.
    pub fn token_param(mut self, key: &str, value: &str) -> Self {
        self.extra_token_params
            .insert(key.to_string(), value.to_string());
        self
    }

    /// One entry of `[providers.token_request_headers]`.
    pub fn token_header(mut self, name: &str, value: &str) -> Self {
        self.token_request_headers
            .insert(name.to_string(), value.to_string());
        self
    }

    /// `private_key_jwt`'s key: `private_key_file` and `private_key_id`.
    pub fn private_key(mut self, file: &std::path::Path, key_id: &str) -> Self {
        self.private_key_file = Some(file.display().to_string());
        self.private_key_id = Some(key_id.to_string());
        self
    }

    /// Both `redirect_uri` and `post_logout_redirect_uri`.
    pub fn redirect_uris(mut self, uri: &str) -> Self {
        self.redirect_uri = uri.to_string();
        self.post_logout_redirect_uri = uri.to_string();
        self
    }

    pub fn timeout(mut self, timeout: &str) -> Self {
        self.timeout = timeout.to_string();
        self
    }

    pub fn require_iss(mut self) -> Self {
        self.require_iss = Some(true);
        self
    }

    /// One entry of `[providers.extra_auth_params]`.
    pub fn auth_param(mut self, key: &str, value: &str) -> Self {
        self.extra_auth_params
            .insert(key.to_string(), value.to_string());
        self
    }
}

/// One `[[routes]]` entry.
#[derive(Clone, Serialize)]
pub struct RouteConfig {
    path: String,
    upstream: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    strip_prefix: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    allow_bearer: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    websocket: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    allow_headers: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token_header: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token_format: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    auth: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    methods: Option<Vec<String>>,
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    identity_headers: std::collections::BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    assertion_header: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resource: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    audience: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    provider: Option<String>,
}

impl RouteConfig {
    pub fn new(path: &str, upstream: &str) -> Self {
        Self {
            path: path.to_string(),
            upstream: upstream.to_string(),
            timeout: None,
            strip_prefix: false,
            allow_bearer: false,
            websocket: false,
            allow_headers: Vec::new(),
            token_header: None,
            token_format: None,
            auth: None,
            methods: None,
            identity_headers: Default::default(),
            assertion_header: None,
            token: None,
            resource: None,
            audience: None,
            scope: None,
            provider: None,
        }
    }

    /// `methods`: the methods forwarded.
    pub fn methods(mut self, names: &[&str]) -> Self {
        self.methods = Some(names.iter().map(|n| n.to_string()).collect());
        self
    }

    /// `identity_headers`: header → ID-token claim.
    pub fn identity_headers(mut self, pairs: &[(&str, &str)]) -> Self {
        self.identity_headers = pairs
            .iter()
            .map(|(h, c)| (h.to_string(), c.to_string()))
            .collect();
        self
    }

    optional_keys! {
        timeout,
        /// `token_header`: the header that carries the token upstream.
        token_header,
        /// `token_format`: its value, around `{token}`.
        token_format,
        /// `auth`: "required", "optional" or "none".
        auth,
        /// `assertion_header`: the header of the signed assertion.
        assertion_header,
        /// `token`: which token ("session", "resource", "exchange").
        token,
        /// `resource`: the API's resource indicator (RFC 8707).
        resource,
        /// `audience`: the API's name for a token exchange (RFC 8693).
        audience,
        /// `scope`: a narrower scope for the route's token.
        scope,
        /// `provider`: whose session's token the route forwards.
        provider,
    }

    pub fn strip_prefix(mut self) -> Self {
        self.strip_prefix = true;
        self
    }

    pub fn allow_bearer(mut self) -> Self {
        self.allow_bearer = true;
        self
    }

    pub fn websocket(mut self) -> Self {
        self.websocket = true;
        self
    }

    /// `allow_headers`: headers let through both ways despite the header rules.
    pub fn allow_headers(mut self, names: &[&str]) -> Self {
        self.allow_headers = names.iter().map(|n| n.to_string()).collect();
        self
    }
}

/// A loopback port nothing listens on (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port()
}

/// token-handler running in this test.
pub struct TestApp {
    pub address: String,
    pub state: web::Data<AppState>,
    /// The metrics listener, when the configuration enables it.
    pub metrics_address: Option<String>,
    /// The forward-auth listener, when the configuration enables it.
    pub forward_auth_address: Option<String>,
    /// The admin listener (`[store] admin_listen`), when the configuration enables it.
    pub admin_address: Option<String>,
}

impl TestApp {
    pub async fn spawn(issuer: &str) -> Self {
        Self::spawn_with(&TestConfig::new(issuer)).await
    }

    pub async fn spawn_with(config: &TestConfig) -> Self {
        // Logs go through libtest's capture: shown for failing tests only (RUST_LOG to change).
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
            )
            .with_test_writer()
            .try_init();
        let config = Config::from_toml(&config.toml(), Vec::new()).expect("valid test config");
        let app = Application::build(config).expect("bind");
        let address = format!("http://127.0.0.1:{}", app.port());
        let metrics_address = app.metrics_port().map(|p| format!("http://127.0.0.1:{p}"));
        let forward_auth_address = app
            .forward_auth_port()
            .map(|p| format!("http://127.0.0.1:{p}"));
        let admin_address = app.admin_port().map(|p| format!("http://127.0.0.1:{p}"));
        let state = app.state();
        actix_web::rt::spawn(app.run_until_stopped());
        Self {
            address,
            state,
            metrics_address,
            forward_auth_address,
            admin_address,
        }
    }

    pub fn browser(&self) -> Browser {
        Browser::new(&self.address)
    }

    /// Opens one of our sealed cookies with the app's keys (the tests' window into them).
    pub fn unseal<T: token_handler::crypto::Opens>(
        &self,
        purpose: token_handler::crypto::Purpose,
        value: &str,
    ) -> T {
        self.state
            .jar
            .sealer()
            .unseal(purpose, self.state.clock.now(), value)
            .expect("unseal")
    }

    /// Checks that the service still answers normally (ends every adversarial case).
    pub async fn assert_alive(&self) {
        let resp = self
            .browser()
            .post(
                "/login/end",
                &json!({"pageUrl": "https://www.example.test/"}).to_string(),
            )
            .await;
        assert_eq!(
            resp.status, 200,
            "service no longer answers: {:?}",
            resp.body
        );
        assert_eq!(resp.body["handled"], false);
    }
}

/// A browser's cookie store for one host: paths, replacement and removal as in RFC 6265.
#[derive(Default, Clone)]
pub struct Jar {
    cookies: Vec<Cookie<'static>>,
}

fn path_matches(request_path: &str, cookie_path: &str) -> bool {
    request_path == cookie_path
        || (request_path.starts_with(cookie_path)
            && (cookie_path.ends_with('/') || request_path[cookie_path.len()..].starts_with('/')))
}

fn default_path(request_path: &str) -> String {
    match request_path.rfind('/') {
        Some(0) | None => "/".to_string(),
        Some(i) => request_path[..i].to_string(),
    }
}

/// A cookie's name without the `__Host-`/`__Secure-` prefix: tests name cookies `th-at` and
/// find them whether or not the configuration prefixes them (the default with `secure`).
pub fn base_name(name: &str) -> &str {
    name.strip_prefix("__Host-")
        .or_else(|| name.strip_prefix("__Secure-"))
        .unwrap_or(name)
}

/// Whether a cookie is a login in progress: a flow's `th-login-<flow id>`, or the single
/// `th-login` of versions before per-flow login cookies.
pub fn is_login_cookie(name: &str) -> bool {
    let name = base_name(name);
    name == "th-login" || name.starts_with("th-login-")
}

/// The (unprefixed) cookie name of the login flow with this `state`.
pub fn login_cookie_name(state: &str) -> String {
    format!("th-login-{}", token_handler::cookies::login_flow_id(state))
}

impl Jar {
    /// Every login cookie the browser holds (any flow, or the old single name).
    pub fn login_cookies(&self) -> Vec<&Cookie<'static>> {
        self.cookies
            .iter()
            .filter(|c| is_login_cookie(c.name()))
            .collect()
    }

    pub fn store(&mut self, set_cookie: &str, request_path: &str) {
        let mut c = Cookie::parse(set_cookie.to_string()).expect("valid Set-Cookie");
        // What browsers demand of prefixed names (RFC 6265bis §4.1.3): token-handler must never
        // send a cookie a browser would drop.
        if c.name().starts_with("__Secure-") || c.name().starts_with("__Host-") {
            assert_eq!(c.secure(), Some(true), "{set_cookie}");
        }
        if c.name().starts_with("__Host-") {
            assert!(c.domain().is_none(), "{set_cookie}");
            assert_eq!(c.path(), Some("/"), "{set_cookie}");
        }
        if c.path().is_none() {
            c.set_path(default_path(request_path));
        }
        self.cookies.retain(|o| {
            !(o.name() == c.name() && o.path() == c.path() && o.domain() == c.domain())
        });
        // A browser drops a cookie whose Expires has passed by its own clock, so the test
        // browser does too (the service's clock rule in clippy.toml is not about the browser).
        #[allow(clippy::disallowed_methods)]
        let removed = c.max_age().is_some_and(|m| m.is_zero() || m.is_negative())
            || c.expires_datetime()
                .is_some_and(|e| e < actix_web::cookie::time::OffsetDateTime::now_utc());
        if !removed {
            self.cookies.push(c.into_owned());
        }
    }

    pub fn header_for(&self, request_path: &str) -> String {
        let mut matching: Vec<&Cookie> = self
            .cookies
            .iter()
            .filter(|c| path_matches(request_path, c.path().unwrap_or("/")))
            .collect();
        matching.sort_by_key(|c| std::cmp::Reverse(c.path().map_or(0, str::len)));
        matching
            .iter()
            .map(|c| format!("{}={}", c.name(), c.value()))
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub fn all(&self) -> &[Cookie<'static>] {
        &self.cookies
    }

    pub fn named(&self, name: &str) -> Vec<&Cookie<'static>> {
        self.cookies
            .iter()
            .filter(|c| base_name(c.name()) == name)
            .collect()
    }

    pub fn value(&self, name: &str) -> String {
        self.named(name)
            .first()
            .unwrap_or_else(|| panic!("no {name} cookie"))
            .value()
            .to_string()
    }

    /// The value of a session cookie of one provider, whichever it is: `th-at` for the default
    /// provider, `th-at_<id>` for another (a browser signed in with one provider).
    pub fn session_value(&self, name: &str) -> String {
        let prefix = format!("{name}_");
        self.cookies
            .iter()
            .find(|c| {
                let base = base_name(c.name());
                base == name || (base.starts_with(&prefix) && !base.contains('.'))
            })
            .unwrap_or_else(|| panic!("no {name} cookie of any provider"))
            .value()
            .to_string()
    }

    /// Renames every cookie of this exact name (cookies written by another version).
    pub fn rename(&mut self, from: &str, to: &str) {
        for c in self.cookies.iter_mut().filter(|c| c.name() == from) {
            c.set_name(to.to_string());
        }
    }

    /// Replaces the value of every cookie of this name (tampering tests).
    pub fn set_value(&mut self, name: &str, value: &str) {
        for c in self
            .cookies
            .iter_mut()
            .filter(|c| base_name(c.name()) == name)
        {
            c.set_value(value.to_string());
        }
    }
}

/// What a request returned.
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub set_cookies: Vec<String>,
    pub body: Value,
}

impl Resp {
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    }

    /// The Set-Cookie headers for login cookies (any flow, or the old single name), parsed.
    pub fn login_cookies(&self) -> Vec<Cookie<'static>> {
        self.set_cookies
            .iter()
            .filter_map(|s| Cookie::parse(s.clone()).ok())
            .filter(|c| is_login_cookie(c.name()))
            .map(|c| c.into_owned())
            .collect()
    }

    /// The Set-Cookie headers for one cookie name, parsed.
    pub fn cookies_named(&self, name: &str) -> Vec<Cookie<'static>> {
        self.set_cookies
            .iter()
            .filter_map(|s| Cookie::parse(s.clone()).ok())
            .filter(|c| base_name(c.name()) == name)
            .map(|c| c.into_owned())
            .collect()
    }
}

/// An SPA in a browser: sends our cookies, its Origin and (once known) the CSRF header.
#[derive(Clone)]
pub struct Browser {
    client: awc::Client,
    pub jar: Jar,
    address: String,
    pub origin: Option<String>,
    pub csrf: Option<String>,
}

impl Browser {
    /// A fresh browser (no cookies) for the token-handler at `address`. It reuses a connection
    /// idle for less than 3 s only, well inside the servers' own limits (token-handler closes
    /// idle ones after 5 s, the tests' nginx after 4 s): a request sent on a connection the
    /// server is closing fails (`Connect(Disconnected)`), which token-handler's own client
    /// avoids the same way.
    pub fn new(address: &str) -> Self {
        Browser {
            client: awc::Client::builder()
                .connector(awc::Connector::new().conn_keep_alive(Duration::from_secs(3)))
                .disable_redirects()
                .timeout(Duration::from_secs(20))
                .finish(),
            jar: Jar::default(),
            address: address.to_string(),
            origin: Some(SPA_ORIGIN.to_string()),
            csrf: None,
        }
    }

    /// The same browser (cookies, Origin, CSRF header) on connections of its own, none reused,
    /// and with a request `timeout` of its own: a browser coming back once its access token
    /// expired has long lost its keep-alive connections (token-handler closes idle ones after
    /// 5 s), and a request sent on a pooled connection the server has just closed fails
    /// (`Connect(Disconnected)`, issue 17's storm, whose calls also wait longer than 20 s).
    pub fn with_new_connections(&self, timeout: Duration) -> Browser {
        Browser {
            client: awc::Client::builder()
                .disable_redirects()
                .timeout(timeout)
                .finish(),
            ..self.clone()
        }
    }

    pub async fn post(&mut self, path: &str, body: &str) -> Resp {
        self.request(Method::POST, path, Some(body), &[]).await
    }

    pub async fn get(&mut self, path: &str) -> Resp {
        self.request(Method::GET, path, None, &[]).await
    }

    /// A request to `BASE + path` (or to `path` itself when it does not start with `/`... it
    /// always does: agent paths are relative to the base path).
    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&str>,
        extra_headers: &[(&str, &str)],
    ) -> Resp {
        let full_path = format!("{BASE}{path}");
        self.raw(
            method,
            &full_path,
            body.map(|b| b.as_bytes().to_vec()),
            extra_headers,
        )
        .await
    }

    pub async fn raw(
        &mut self,
        method: Method,
        full_path: &str,
        body: Option<Vec<u8>>,
        extra_headers: &[(&str, &str)],
    ) -> Resp {
        let mut req = self
            .client
            .request(method, format!("{}{}", self.address, full_path));
        let cookies = self
            .jar
            .header_for(full_path.split('?').next().unwrap_or("/"));
        if !cookies.is_empty() {
            req = req.insert_header(("cookie", cookies));
        }
        if let Some(origin) = &self.origin {
            req = req.insert_header(("origin", origin.as_str()));
        }
        if let Some(csrf) = &self.csrf {
            req = req.insert_header(("x-th-csrf", csrf.as_str()));
        }
        for (k, v) in extra_headers {
            req = req.insert_header((*k, *v));
        }
        let mut resp = match body {
            Some(b) => req.send_body(b).await,
            None => req.send().await,
        }
        .expect("request to token-handler");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let set_cookies: Vec<String> = headers
            .get_all("set-cookie")
            .filter_map(|v| v.to_str().ok().map(String::from))
            .collect();
        for sc in &set_cookies {
            self.jar.store(sc, full_path);
        }
        let bytes = resp.body().limit(1 << 20).await.expect("body");
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            set_cookies,
            body,
        }
    }

    /// `POST /login/start`, returning the authorization request URL.
    pub async fn start_login(&mut self, body: &str) -> String {
        let resp = self.post("/login/start", body).await;
        assert_eq!(resp.status, 200, "login/start: {:?}", resp.body);
        resp.body["authorizationRequestUrl"]
            .as_str()
            .expect("authorizationRequestUrl")
            .to_string()
    }

    /// The whole login: start, the provider's own login and consent pages, end.
    pub async fn login(&mut self, user: &str) -> Resp {
        let url = self.start_login("").await;
        let callback = provider_login(&url, user).await;
        self.end_login(&callback).await
    }

    pub async fn end_login(&mut self, page_url: &str) -> Resp {
        let resp = self
            .post("/login/end", &json!({ "pageUrl": page_url }).to_string())
            .await;
        if let Some(csrf) = resp.body["csrf"].as_str() {
            self.csrf = Some(csrf.to_string());
        }
        resp
    }
}

fn resolve(base: &str, location: &str) -> String {
    url::Url::parse(base)
        .and_then(|b| b.join(location))
        .expect("valid Location")
        .to_string()
}

/// Signs `user` in at the provider the way a person would: follow redirects, submit the login
/// form, then the consent form, until the provider redirects to the SPA. Returns that URL.
pub async fn provider_login(authorization_url: &str, user: &str) -> String {
    provider_login_to(authorization_url, user, REDIRECT_URI).await
}

/// As [`provider_login`], until the provider redirects to a URL starting with `redirect_uri`
/// (token-handler's own callback, for server-side logins).
pub async fn provider_login_to(authorization_url: &str, user: &str, redirect_uri: &str) -> String {
    let answer = |html: &str| {
        let action = html
            .split("action=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("a form on the provider's page")
            .to_string();
        let body = if html.contains("name=\"prompt\" value=\"login\"") {
            format!("prompt=login&login={user}&password=any")
        } else if html.contains("name=\"prompt\" value=\"consent\"") {
            "prompt=consent".to_string()
        } else {
            panic!("unexpected provider page: {html}")
        };
        (action, body)
    };
    follow_provider_pages(authorization_url, redirect_uri, answer)
        .await
        .0
}

/// Follows a provider's redirects and pages from `authorization_url` like a browser, with the
/// provider's cookies, until it redirects to a URL starting with `redirect_uri`: `answer(page)`
/// gives each page's form action and the form body to post. Returns that URL and the provider's
/// cookies (its session).
pub async fn follow_provider_pages(
    authorization_url: &str,
    redirect_uri: &str,
    answer: impl Fn(&str) -> (String, String),
) -> (String, Jar) {
    follow_provider_pages_with(authorization_url, redirect_uri, Jar::default(), answer).await
}

/// As [`follow_provider_pages`], starting with the provider's cookies `jar` (its session, e.g.
/// to sign out at its end-session endpoint).
pub async fn follow_provider_pages_with(
    authorization_url: &str,
    redirect_uri: &str,
    mut jar: Jar,
    answer: impl Fn(&str) -> (String, String),
) -> (String, Jar) {
    let client = awc::Client::builder()
        .disable_redirects()
        .timeout(Duration::from_secs(20))
        .finish();
    let mut url = authorization_url.to_string();
    let mut form: Option<String> = None;
    for _ in 0..12 {
        if url.starts_with(redirect_uri) {
            return (url, jar);
        }
        let path = url::Url::parse(&url).expect("url").path().to_string();
        let mut req = match &form {
            Some(_) => client.post(&url),
            None => client.get(&url),
        };
        let cookies = jar.header_for(&path);
        if !cookies.is_empty() {
            req = req.insert_header(("cookie", cookies));
        }
        let mut resp = match form.take() {
            Some(body) => {
                req.insert_header(("content-type", "application/x-www-form-urlencoded"))
                    .send_body(body)
                    .await
            }
            None => req.send().await,
        }
        .expect("provider request");
        for sc in resp.headers().get_all("set-cookie") {
            jar.store(sc.to_str().expect("ascii"), &path);
        }
        if resp.status().is_redirection() {
            let location = resp
                .headers()
                .get("location")
                .expect("Location")
                .to_str()
                .expect("location");
            url = resolve(&url, location);
            continue;
        }
        let html = String::from_utf8_lossy(&resp.body().await.expect("page")).to_string();
        assert_eq!(resp.status().as_u16(), 200, "provider page: {html}");
        let (action, body) = answer(&html);
        form = Some(body);
        url = resolve(&url, &action);
    }
    panic!("the provider did not redirect back to the SPA");
}

/// A query parameter of a URL.
pub fn query_param(url: &str, name: &str) -> Option<String> {
    url::Url::parse(url)
        .ok()?
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Sends raw bytes over TCP and returns the status code and the whole response text: for
/// requests no well-behaved client library would send (bad framing, odd headers, raw paths).
pub async fn raw_http(address: &str, request: Vec<u8>) -> (u16, String) {
    use std::io::{Read, Write};
    let addr = address.trim_start_matches("http://").to_string();
    tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(&addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        stream.write_all(&request).expect("write");
        let mut out = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
        let text = String::from_utf8_lossy(&out).to_string();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        (status, text)
    })
    .await
    .expect("raw request")
}

/// The real `token-handler` binary in its own process (for memory, signals and logs), killed by
/// PID on drop.
pub struct ProcessApp {
    child: Child,
    pub address: String,
    pub dir: tempfile::TempDir,
}

impl ProcessApp {
    /// Starts the binary with this configuration, listening on a free port.
    /// Its log (stderr and stdout) goes to `token-handler.log` in [`ProcessApp::dir`].
    pub async fn start(config: &TestConfig) -> Self {
        Self::start_in(config, tempfile::tempdir().expect("tempdir"), "warn").await
    }

    /// As [`ProcessApp::start`], in a given directory and at a given log level.
    pub async fn start_in(config: &TestConfig, dir: tempfile::TempDir, log_level: &str) -> Self {
        let port = free_port();
        let toml = config.clone().listen(&format!("127.0.0.1:{port}")).toml();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, toml).expect("write config");
        let log = std::fs::File::create(dir.path().join("token-handler.log")).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_token-handler"))
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", log_level)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start token-handler");
        let address = format!("http://127.0.0.1:{port}");
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Self {
                    child,
                    address,
                    dir,
                };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("token-handler did not start listening within 5 s");
    }

    /// Writes `config` over the process's configuration file, on the port it listens on (it
    /// reloads it on SIGHUP or on its next check of the file: reload.rs).
    pub fn rewrite_config(&self, config: &TestConfig) {
        let port = self.address.rsplit(':').next().expect("port");
        let toml = config.clone().listen(&format!("127.0.0.1:{port}")).toml();
        let path = self.dir.path().join("config.toml");
        let next = self.dir.path().join("config.toml.next");
        std::fs::write(&next, toml).expect("write config");
        std::fs::rename(&next, &path).expect("replace config");
    }

    /// Peak resident memory of the process so far, in KiB (`VmHWM`).
    pub fn peak_rss_kib(&self) -> u64 {
        self.status_field("VmHWM:")
    }

    /// Resident memory now, in KiB (`VmRSS`).
    pub fn rss_kib(&self) -> u64 {
        self.status_field("VmRSS:")
    }

    fn status_field(&self, field: &str) -> u64 {
        let pid = self.child.id().expect("running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("status field")
    }

    /// Sends a signal (`TERM`, `HUP`, …) to the process, by its PID.
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().expect("running");
        let status = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(pid.to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{name} {pid}");
    }

    /// Waits for the process to exit, at most `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        tokio::time::timeout(timeout, self.child.wait())
            .await
            .ok()
            .and_then(Result::ok)
    }

    /// Everything the process logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("token-handler.log")).unwrap_or_default()
    }
}

impl Drop for ProcessApp {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// The start of a standalone nginx.conf for tests: foreground, one process, every path under
/// `dir`, and an open `http {` block for the caller to fill and close.
pub fn nginx_preamble(dir: &str) -> String {
    format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;"#
    )
}

/// Debian's nginx, started on a free loopback port with a generated configuration, killed by
/// PID on drop.
pub struct Nginx {
    child: Child,
    pub address: String,
    dir: tempfile::TempDir,
}

impl Nginx {
    /// `conf(dir, port)` returns the whole nginx.conf (see gateway.rs and replicas.rs).
    pub async fn start(conf: impl FnOnce(&str, u16) -> String) -> Self {
        Self::start_at(free_port(), conf).await
    }

    /// As [`Nginx::start`], on a port chosen beforehand (e.g. one a provider's issuer names).
    pub async fn start_at(port: u16, conf: impl FnOnce(&str, u16) -> String) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().display().to_string();
        std::fs::write(dir.path().join("nginx.conf"), conf(&d, port)).expect("write nginx.conf");
        let child = Command::new("nginx")
            .args([
                "-p",
                &d,
                "-c",
                &format!("{d}/nginx.conf"),
                "-e",
                &format!("{d}/error.log"),
            ])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start nginx (scripts/test.sh installs Debian's nginx)");
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Self {
                    child,
                    address: format!("http://127.0.0.1:{port}"),
                    dir,
                };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let log = std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
        panic!("nginx did not start: {log}");
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}
