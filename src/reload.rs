//! Live reload of the configuration: SIGHUP, a changed configuration or secret file, or
//! [`Reloader::reload`].
//!
//! Operators change trusted origins, routes, providers and their secrets without a rollout, and
//! without a window where some requests see half of the old configuration and half of the new.
//! A reload reads the file again (and every secret file it names) and validates the whole of it
//! with the same rules as at start; then it builds a complete new [`AppState`] and swaps it in at
//! once ([`LiveState::replace`]). A request keeps the snapshot it started with
//! ([`crate::state::of`]), so one under way finishes on its configuration.
//!
//! A configuration that fails validation, or that changes a setting only a restart can change
//! ([`restart_only_changes`]: listeners, workers, paths and cookie names, the store, telemetry,
//! ...), is refused whole, with an error log line naming the keys and
//! `token_handler_config_reloads_total{result="refused"}`: the running configuration stays. A
//! refusal never applies half: an operator who changed a route and a listener in one edit sees
//! the whole edit refused and why.
//!
//! What outlives a reload: the clock, the key ring and its own watcher (keys keep their rules,
//! [`crate::rotation`]), the refresh and narrowing coordination (a grant in flight keeps its
//! single flight), the login limiter (unless its rate changed), the store and the cache of ended
//! sessions, the assertion key (APIs cached it), and each provider's discovered metadata and
//! JWKS when its discovery settings did not change ([`crate::oauth::Provider::succeeding`]). A
//! new or re-pointed provider's metadata is fetched before the swap (bounded by its timeout),
//! so its logins work from the first request; every provider's discovery task is then restarted
//! on the new configuration, the old ones stopped.

use crate::config::{Config, ConfigError};
use crate::cookies::CookiePolicy;
use crate::oauth::http::build_client;
use crate::rate_limit::LoginLimiter;
use crate::state::{assertion_issuer, default_provider, AppState, LiveState};
use actix_web::web;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often the configuration file and the secret files it names are checked for changes
/// (the keys file's period, [`crate::rotation::POLL`]).
pub const POLL: Duration = crate::rotation::POLL;

/// Why a reload was refused; the running configuration stays.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("token-handler was started without a configuration file: there is nothing to reload")]
    NoFile,
    #[error("the configuration is invalid: {0}")]
    Invalid(#[from] ConfigError),
    #[error("these settings change only with a restart: {}", .0.join(", "))]
    NeedsRestart(Vec<String>),
}

impl ReloadError {
    fn reason(&self) -> &'static str {
        match self {
            ReloadError::NoFile => "no_file",
            ReloadError::Invalid(_) => "invalid",
            ReloadError::NeedsRestart(_) => "needs_restart",
        }
    }
}

/// What an applied reload changed: counts and names for the log, never a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub routes: usize,
    pub routes_added: Vec<String>,
    pub routes_removed: Vec<String>,
    pub trusted_origins: usize,
    pub providers_added: Vec<String>,
    pub providers_removed: Vec<String>,
    /// Providers whose discovered metadata could not be kept (new, or re-pointed).
    pub providers_rediscovered: Vec<String>,
}

/// Reloads the configuration: the handle the watcher, the binary and the tests share.
#[derive(Clone)]
pub struct Reloader {
    live: web::Data<LiveState>,
    path: Option<PathBuf>,
    shared: Arc<Shared>,
}

struct Shared {
    /// One reload at a time: two at once could each build on the same old state.
    running: tokio::sync::Mutex<()>,
    /// The discovery tasks of the current providers, stopped when a reload replaces them.
    discovery: Mutex<Vec<tokio::task::AbortHandle>>,
    connect_timeout: Duration,
    poll: Duration,
}

impl Reloader {
    /// A reloader of `live` from `path` (`None`: the configuration came from the environment
    /// alone, and every reload is refused).
    pub fn new(live: web::Data<LiveState>, path: Option<PathBuf>, poll: Duration) -> Self {
        let connect_timeout = live.current().config.server.connect_timeout;
        Self {
            live,
            path,
            shared: Arc::new(Shared {
                running: tokio::sync::Mutex::new(()),
                discovery: Mutex::new(Vec::new()),
                connect_timeout,
                poll,
            }),
        }
    }

    /// Reads, validates and applies the configuration file; `trigger` (`sighup`, `file`, `api`)
    /// goes in the log line. Counted in `token_handler_config_reloads_total{result}`.
    pub async fn reload(&self, trigger: &'static str) -> Result<Applied, ReloadError> {
        let _one_at_a_time = self.shared.running.lock().await;
        let result = self.apply().await;
        match &result {
            Ok(applied) => {
                crate::metrics::METRICS.record_reload(true);
                tracing::info!(
                    trigger,
                    routes = applied.routes,
                    routes_added = ?applied.routes_added,
                    routes_removed = ?applied.routes_removed,
                    trusted_origins = applied.trusted_origins,
                    providers_added = ?applied.providers_added,
                    providers_removed = ?applied.providers_removed,
                    providers_rediscovered = ?applied.providers_rediscovered,
                    "configuration reloaded"
                );
            }
            Err(e) => {
                crate::metrics::METRICS.record_reload(false);
                tracing::error!(trigger, reason = e.reason(), error = %e, "configuration reload refused; the running configuration stays");
            }
        }
        result
    }

    async fn apply(&self) -> Result<Applied, ReloadError> {
        let path = self.path.as_deref().ok_or(ReloadError::NoFile)?;
        let config = Config::load(Some(path))?;
        let old = self.live.current();
        let refused = restart_only_changes(&old.config, &config);
        if !refused.is_empty() {
            return Err(ReloadError::NeedsRestart(refused));
        }
        let mut next = successor(&old, config);
        let client = build_client(self.shared.connect_timeout);
        let rediscovered: Vec<String> = next
            .providers
            .iter()
            .filter(|p| !p.is_ready())
            .map(|p| p.id().to_string())
            .collect();
        // Fetched before the swap, so the new configuration's logins work from its first
        // request; bounded, so a provider that is down does not hold the reload back.
        let fetches = next
            .providers
            .iter()
            .filter(|p| !p.is_ready())
            .map(|p| actix_web::rt::time::timeout(p.config.timeout, p.metadata(&client)));
        futures_util::future::join_all(fetches).await;
        // A reload never takes a ready replica out of the Service ([`crate::health`]): required
        // providers that have not loaded yet wait for discovery without holding readiness.
        next.late_providers = if crate::health::is_ready(&old) {
            next.providers
                .iter()
                .filter(|p| p.is_required() && !p.is_ready())
                .map(|p| p.id().to_string())
                .collect()
        } else {
            old.late_providers.clone()
        };
        let applied = summarize(&old.config, &next.config, rediscovered);
        for gone in &applied.providers_removed {
            crate::metrics::METRICS.forget_provider(gone);
        }
        self.live.replace(next);
        self.restart_discovery();
        Ok(applied)
    }

    /// Starts each current provider's discovery task ([`crate::oauth::Provider::keep_discovered`])
    /// and stops those of the providers a reload replaced. Needs the server's runtime.
    pub fn restart_discovery(&self) {
        let state = self.live.current();
        let client = build_client(self.shared.connect_timeout);
        let handles: Vec<_> = state
            .providers
            .shared()
            .map(|p| {
                let (p, client) = (Arc::clone(p), client.clone());
                actix_web::rt::spawn(async move { p.keep_discovered(&client).await }).abort_handle()
            })
            .collect();
        let old = match self.shared.discovery.lock() {
            Ok(mut d) => std::mem::replace(&mut *d, handles),
            Err(poisoned) => std::mem::replace(&mut *poisoned.into_inner(), handles),
        };
        for task in old {
            task.abort();
        }
    }

    /// Stops the discovery tasks (the server stopped).
    pub fn stop_discovery(&self) {
        let tasks = match self.shared.discovery.lock() {
            Ok(mut d) => std::mem::take(&mut *d),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        };
        for task in tasks {
            task.abort();
        }
    }

    /// Reloads on SIGHUP and whenever the configuration file or one of the secret files it
    /// names changes (checked every poll period), until the server stops.
    pub async fn watch(self) {
        let Some(path) = self.path.clone() else {
            return;
        };
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; the configuration file is still polled");
                None
            }
        };
        let mut last = self.fingerprint(&path);
        loop {
            let signalled = match hangup.as_mut() {
                Some(h) => tokio::select! {
                    _ = h.recv() => true,
                    _ = actix_web::rt::time::sleep(self.shared.poll) => false,
                },
                None => {
                    actix_web::rt::time::sleep(self.shared.poll).await;
                    false
                }
            };
            let now = self.fingerprint(&path);
            if !signalled && now == last {
                continue;
            }
            let trigger = if signalled { "sighup" } else { "file" };
            // Refused or applied, this version of the files has been looked at.
            let _ = self.reload(trigger).await;
            last = self.fingerprint(&path);
        }
    }

    /// A digest of the configuration file and of the secret files the running configuration
    /// names: a change of any of them is a reason to reload (a digest, so no secret is kept).
    fn fingerprint(&self, path: &Path) -> [u8; 32] {
        let state = self.live.current();
        let mut hash = Sha256::new();
        // The keys file has its own watcher and rules ([`crate::rotation`]).
        let secrets = state.config.secret_files.iter();
        let secrets = secrets.filter(|f| f.key != "cookies.keys_file");
        for file in std::iter::once(path).chain(secrets.map(|f| &*f.path)) {
            match std::fs::read(file) {
                Ok(bytes) => hash.update(Sha256::digest(&bytes)),
                Err(_) => hash.update([0u8; 32]),
            }
        }
        hash.finalize().into()
    }
}

/// The state that serves `config`, carrying over from `old` what must outlive a reload (see the
/// module documentation).
fn successor(old: &AppState, config: Config) -> AppState {
    let providers = old.providers.succeeding(&config.providers, &old.clock);
    let jar = old
        .jar
        .succeeding(CookiePolicy::for_config(&config))
        .with_providers(
            default_provider(&config),
            config.providers.iter().map(|p| p.id.as_str()),
        );
    let login_limiter = if old.config.login_rate == config.login_rate {
        Arc::clone(&old.login_limiter)
    } else {
        Arc::new(LoginLimiter::new(config.login_rate))
    };
    let assertions = match (assertion_issuer(&config), &old.assertions) {
        (None, _) => None,
        (Some(issuer), Some(kept)) if kept.issuer() == issuer => Some(Arc::clone(kept)),
        (Some(issuer), Some(kept)) => Some(Arc::new(kept.reissued(issuer))),
        (Some(_), None) => crate::state::assertion_signer(&config).map(Arc::new),
    };
    AppState {
        jar,
        providers,
        clock: old.clock.clone(),
        refresher: Arc::clone(&old.refresher),
        narrower: Arc::clone(&old.narrower),
        login_limiter,
        assertions,
        store: old.store.clone(),
        ended: old.ended.clone(),
        late_providers: Vec::new(),
        config,
    }
}

/// The settings a reload may not change, named by key, that `new` changes from `old`. Each is
/// read once at start: a listener is bound, a worker count spawned, the agent's routes are
/// mounted under the base path and the callback, cookie names and attributes are what browsers
/// hold, the store connection and the refresher's window are shared by every snapshot, the
/// logger and tracer are installed. The default provider names the unsuffixed session cookies:
/// changing it would hand its sessions to another provider.
pub fn restart_only_changes(old: &Config, new: &Config) -> Vec<String> {
    fn differs<T: std::fmt::Debug>(a: &T, b: &T) -> bool {
        format!("{a:?}") != format!("{b:?}")
    }
    let (o, n) = (&old.server, &new.server);
    let (oc, nc) = (&old.cookies, &new.cookies);
    let checks: [(&str, bool); 24] = [
        ("server.listen", o.listen != n.listen),
        ("server.workers", o.workers != n.workers),
        (
            "server.shutdown_grace",
            o.shutdown_grace != n.shutdown_grace,
        ),
        (
            "server.connect_timeout",
            o.connect_timeout != n.connect_timeout,
        ),
        (
            "server.base_path",
            o.base_path.as_str() != n.base_path.as_str(),
        ),
        ("server.callback_path", o.callback_path != n.callback_path),
        ("cookies.prefix", oc.prefix != nc.prefix),
        ("cookies.secure", oc.secure != nc.secure),
        (
            "cookies.name_prefixes",
            oc.name_prefixes != nc.name_prefixes,
        ),
        ("cookies.same_site", differs(&oc.same_site, &nc.same_site)),
        ("cookies.domain", oc.domain != nc.domain),
        ("cookies.path", oc.path != nc.path),
        ("cookies.keys_file", oc.keys_file != nc.keys_file),
        // Inline keys: only a restart changes them (keys_file rotates without one). Keys
        // read from keys_file follow its own rules, whatever the file holds now.
        (
            "cookies.keys",
            nc.keys_file.is_none() && key_ids(&oc.keys) != key_ids(&nc.keys),
        ),
        (
            "cookies.login_timeout",
            oc.login_timeout != nc.login_timeout,
        ),
        ("cookies.idle_timeout", oc.idle_timeout != nc.idle_timeout),
        (
            "cookies.absolute_lifetime",
            oc.absolute_lifetime != nc.absolute_lifetime,
        ),
        ("cookies.persistent", oc.persistent != nc.persistent),
        ("metrics.listen", old.metrics_listen != new.metrics_listen),
        (
            "forward_auth.listen",
            old.forward_auth_listen != new.forward_auth_listen,
        ),
        ("store", store_differs(old, new)),
        ("telemetry", old.telemetry != new.telemetry),
        ("log.format", differs(&old.log_format, &new.log_format)),
        (
            "proxy.refresh_ahead",
            old.proxy.refresh_ahead != new.proxy.refresh_ahead,
        ),
    ];
    let mut refused: Vec<String> = checks
        .iter()
        .filter(|(_, changed)| *changed)
        .map(|(key, _)| key.to_string())
        .collect();
    if default_provider(old) != default_provider(new) {
        refused.push("the default provider (the exclusive one, else the first)".to_string());
    }
    refused
}

fn key_ids(ring: &crate::crypto::KeyRing) -> Vec<String> {
    ring.keys().iter().map(|k| k.id_hex()).collect()
}

/// `[store]`, its password included (Debug redacts it).
fn store_differs(old: &Config, new: &Config) -> bool {
    use secrecy::ExposeSecret;
    match (&old.store, &new.store) {
        (None, None) => false,
        (Some(a), Some(b)) => {
            format!("{a:?}") != format!("{b:?}")
                || a.password.as_ref().map(|p| p.expose_secret().to_string())
                    != b.password.as_ref().map(|p| p.expose_secret().to_string())
        }
        _ => true,
    }
}

fn summarize(old: &Config, new: &Config, rediscovered: Vec<String>) -> Applied {
    let routes = |c: &Config| -> Vec<String> {
        c.proxy
            .routes
            .iter()
            .map(|r| r.path.as_str().to_string())
            .collect()
    };
    let providers =
        |c: &Config| -> Vec<String> { c.providers.iter().map(|p| p.id.clone()).collect() };
    let minus = |a: &[String], b: &[String]| -> Vec<String> {
        a.iter().filter(|x| !b.contains(x)).cloned().collect()
    };
    let (or, nr) = (routes(old), routes(new));
    let (op, np) = (providers(old), providers(new));
    Applied {
        routes: nr.len(),
        routes_added: minus(&nr, &or),
        routes_removed: minus(&or, &nr),
        trusted_origins: new.web.trusted_origins.as_slice().len(),
        providers_added: minus(&np, &op),
        providers_removed: minus(&op, &np),
        providers_rediscovered: rediscovered,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{test_toml, TEST_PROVIDER};

    fn config(text: &str) -> Config {
        Config::from_toml(text, Vec::<(String, String)>::new()).expect("valid")
    }

    #[test]
    fn routes_origins_and_providers_reload_but_listeners_and_cookies_need_a_restart() {
        let base = test_toml("", TEST_PROVIDER);
        let old = config(&base);
        let more = format!(
            "{base}\n[[routes]]\npath = \"/api\"\nupstream = \"http://127.0.0.1:9\"\n[[providers]]\nid = \"other\"\nissuer = \"https://other.example.com\"\nclient_id = \"c\"\nclient_secret = \"t\"\nredirect_uri = \"https://www.example.com/x\"\n"
        )
        .replace(
            "trusted_origins = [\"https://www.example.com\"]",
            "trusted_origins = [\"https://www.example.com\", \"https://app.example.com\"]",
        );
        assert_eq!(
            restart_only_changes(&old, &config(&more)),
            Vec::<String>::new()
        );
        let listen = base.replace("[web]", "[server]\nlisten = \"127.0.0.1:1\"\n[web]");
        let prefix = base.replace("[cookies]", "[cookies]\nprefix = \"other\"");
        let both = listen.replace("[cookies]", "[cookies]\nprefix = \"other\"");
        assert_eq!(
            restart_only_changes(&old, &config(&listen)),
            ["server.listen"]
        );
        assert_eq!(
            restart_only_changes(&old, &config(&prefix)),
            ["cookies.prefix"]
        );
        assert_eq!(
            restart_only_changes(&old, &config(&both)),
            ["server.listen", "cookies.prefix"]
        );
        // Another inline key (test_toml makes a fresh one): keys_file rotates, inline keys do not.
        let other_key = config(&test_toml("", TEST_PROVIDER));
        assert_eq!(restart_only_changes(&old, &other_key), ["cookies.keys"]);
    }

    #[test]
    fn a_successor_shares_the_runtime_parts_that_must_outlive_a_reload() {
        let base = test_toml("", TEST_PROVIDER);
        let old = AppState::new(config(&base), crate::clock::Clock::default());
        let routed =
            format!("{base}\n[[routes]]\npath = \"/api\"\nupstream = \"http://127.0.0.1:9\"\n");
        let next = successor(&old, config(&routed));
        assert!(Arc::ptr_eq(&old.refresher, &next.refresher));
        assert!(Arc::ptr_eq(&old.narrower, &next.narrower));
        assert!(Arc::ptr_eq(&old.login_limiter, &next.login_limiter));
        // One key ring: a rotation through either snapshot's jar is the other's too.
        old.jar.sealer().replace_ring(
            crate::crypto::KeyRing::parse(&[&crate::crypto::CookieKey::generate_text()])
                .expect("ring"),
        );
        assert_eq!(
            key_ids(&old.jar.sealer().ring()),
            key_ids(&next.jar.sealer().ring())
        );
        assert_eq!(next.config.proxy.routes.len(), 1);
        // The new snapshot routes by its own table; the old one keeps its own.
        assert_eq!(old.route_label("/api/x"), "unmatched");
        assert_eq!(next.route_label("/api/x"), "/api");
        // A changed login rate starts a new limiter.
        let slower = format!("{base}\n[rate_limit]\nlogin_per_minute = 5\n");
        let next = successor(&old, config(&slower));
        assert!(!Arc::ptr_eq(&old.login_limiter, &next.login_limiter));
    }

    #[test]
    fn reload_errors_name_keys_and_never_secrets() {
        let e = ReloadError::NeedsRestart(vec!["server.listen".into(), "store".into()]);
        assert_eq!(
            e.to_string(),
            "these settings change only with a restart: server.listen, store"
        );
    }
}
