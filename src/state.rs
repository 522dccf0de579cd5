//! What every request handler shares: validated config, the session jar, providers, clock.
//!
//! Handlers extract it and hand each callee the part it needs (the jar, the providers, the
//! refresher).

use crate::clock::Clock;
use crate::config::Config;
use crate::cookies::CookiePolicy;
use crate::crypto::Sealer;
use crate::oauth::Providers;
use crate::rate_limit::LoginLimiter;
use crate::refresh::{Refresher, TokenSource};
use crate::session::SessionJar;
use crate::store::{Store, StoreError};

/// Shared by all workers (behind `web::Data`, an `Arc`).
#[derive(Debug)]
pub struct AppState {
    pub config: Config,
    /// Cookie policy, sealer and clock: how session cookies are opened and written.
    pub jar: SessionJar,
    pub providers: Providers,
    /// The application's clock (the jar and the refresher hold clones: one shared offset).
    pub clock: Clock,
    pub refresher: Refresher,
    /// Grants of narrowed route tokens, coordinated like the refresher's.
    pub narrower: crate::proxy::Narrower,
    /// Per-client-address limits on `login/start` and `login/end`.
    pub login_limiter: LoginLimiter,
    /// The key that signs routes' assertions (`assertion_header`); `None` when no route asks.
    pub assertions: Option<crate::proxy::AssertionSigner>,
    /// The store shared by the replicas (`[store]`), once connected ([`AppState::with_store`]).
    pub store: Option<Store>,
    /// The list of ended sessions' per-replica side (`[store]`; [`AppState::ended_sessions`]).
    pub ended: Option<crate::store::ended::EndedSessions>,
}

impl AppState {
    /// A bounded name for the request's route, for metrics: the agent endpoint, the health
    /// endpoint, or the matching proxy route's configured path; never the raw path.
    pub fn route_label(&self, path: &str) -> String {
        self.route_label_ref(path).to_string()
    }

    /// As [`AppState::route_label`], borrowed from the path or the configuration: the label is
    /// worked out on every request, so it allocates nothing (issue 17).
    pub fn route_label_ref<'a>(&'a self, path: &'a str) -> &'a str {
        let base = self.config.server.base_path.as_str();
        if let Some(endpoint) = path.strip_prefix(base) {
            const ENDPOINTS: [&str; 10] = [
                "/backchannel-logout",
                "/login",
                "/providers",
                "/login/start",
                "/login/end",
                "/userInfo",
                "/claims",
                "/refresh",
                "/logout",
                "/session",
            ];
            if ENDPOINTS.contains(&endpoint) {
                // The path is the base path followed by the endpoint: the label itself.
                return path;
            }
        }
        if matches!(path, "/health/live" | "/health/ready")
            || self.config.server.callback_path.as_deref() == Some(path)
        {
            return path;
        }
        self.config
            .proxy
            .routes
            .iter()
            .find(|r| r.path.matches(path))
            .map_or("unmatched", |r| r.path.as_str())
    }

    /// The parts a request's access token comes from (the proxy and forward auth).
    pub fn token_source(&self) -> TokenSource<'_> {
        TokenSource {
            jar: &self.jar,
            refresher: &self.refresher,
            providers: &self.providers,
        }
    }

    pub fn new(config: Config, clock: Clock) -> Self {
        Self {
            jar: SessionJar::new(
                CookiePolicy::for_config(&config),
                Sealer::new(config.cookies.keys.clone()),
                clock.clone(),
                crate::session::Lifetimes::new(&config.cookies),
                config.cookies.login_timeout,
            )
            .with_providers(
                default_provider(&config),
                config.providers.iter().map(|p| p.id.as_str()),
            ),
            providers: Providers::new(&config.providers, &clock),
            refresher: Refresher::new(clock.clone(), config.proxy.refresh_ahead),
            narrower: crate::proxy::Narrower::default(),
            clock,
            login_limiter: LoginLimiter::new(config.login_rate),
            assertions: assertion_signer(&config),
            store: None,
            ended: crate::store::ended::EndedSessions::for_config(&config),
            config,
        }
    }

    /// Connects the configured store, if any (lazily: a store that is down now is picked up
    /// when it answers). Needs a tokio runtime, so it runs in startup rather than in `new`.
    pub fn with_store(mut self) -> Result<Self, StoreError> {
        if let Some(config) = &self.config.store {
            let store = Store::connect(config)?;
            self.refresher.set_store(store.clone());
            self.store = Some(store);
        }
        Ok(self)
    }
}

/// The assertion key, when a route asks for assertions. Its `iss` is token-handler's public
/// address: the first trusted web origin (token-handler is served under the SPA's origin) and
/// the base path. A key that cannot be made is logged, and those routes answer 500.
fn assertion_signer(config: &Config) -> Option<crate::proxy::AssertionSigner> {
    let wanted = config
        .proxy
        .routes
        .iter()
        .any(|r| r.access.assertion_header.is_some());
    if !wanted {
        return None;
    }
    let origin = config.web.trusted_origins.as_slice().first().cloned();
    let issuer = format!(
        "{}{}",
        origin.unwrap_or_default(),
        config.server.base_path.as_str()
    );
    match crate::proxy::AssertionSigner::generate(issuer) {
        Ok(signer) => Some(signer),
        Err(e) => {
            tracing::error!(error = %e, "no assertion key: routes with assertion_header answer 500");
            None
        }
    }
}

/// The default provider's id: the exclusive one, else the first ([`Providers::default_provider`]).
fn default_provider(config: &Config) -> &str {
    config
        .providers
        .iter()
        .find(|p| p.exclusive)
        .or(config.providers.first())
        .map_or("", |p| p.id.as_str())
}

/// The outbound HTTP client of one worker (awc clients are not `Send`, so each worker has its
/// own; they share nothing but the caches in [`Providers`]).
pub struct HttpClient(pub awc::Client);

impl AppState {
    /// The store and the list of ended sessions, when `[store]` is configured
    /// ([`crate::store::ended`]); `None` in the stateless mode.
    pub fn ended_sessions(
        &self,
    ) -> Option<(&crate::store::Store, &crate::store::ended::EndedSessions)> {
        self.store.as_ref().zip(self.ended.as_ref())
    }
}
