//! What every request handler shares: validated config, the session jar, providers, clock.
//!
//! Handlers extract it and hand each callee the part it needs (the jar, the providers, the
//! refresher).
//!
//! The configuration can be reloaded while the server runs ([`crate::reload`]): the application
//! holds a [`LiveState`], whose current [`AppState`] a reload replaces whole and atomically. A
//! request takes ONE snapshot, the first time anything asks for the state ([`of`], the
//! [`State`] extractor), and keeps it to its end: an in-flight request finishes on the
//! configuration it started with, and never sees half of one and half of another. The runtime
//! parts that must outlive a reload (the key ring, the refresh and narrowing coordination, the
//! login limiter, the store, the ended-sessions cache) are shared by the snapshots (`Arc`s).

use crate::clock::Clock;
use crate::config::Config;
use crate::cookies::CookiePolicy;
use crate::crypto::Sealer;
use crate::oauth::Providers;
use crate::rate_limit::LoginLimiter;
use crate::refresh::{Refresher, TokenSource};
use crate::session::SessionJar;
use crate::store::{Store, StoreError};
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use std::sync::Arc;

/// One configuration and the runtime parts that serve it: a snapshot, shared by all workers
/// (behind an `Arc`), replaced whole by a reload ([`LiveState`]).
#[derive(Debug)]
pub struct AppState {
    pub config: Config,
    /// Cookie policy, sealer and clock: how session cookies are opened and written.
    pub jar: SessionJar,
    pub providers: Providers,
    /// The application's clock (the jar and the refresher hold clones: one shared offset).
    pub clock: Clock,
    pub refresher: Arc<Refresher>,
    /// Grants of narrowed route tokens, coordinated like the refresher's.
    pub narrower: Arc<crate::proxy::Narrower>,
    /// Per-client-address limits on `login/start` and `login/end`.
    pub login_limiter: Arc<LoginLimiter>,
    /// The key that signs routes' assertions (`assertion_header`); `None` when no route asks.
    pub assertions: Option<Arc<crate::proxy::AssertionSigner>>,
    /// The store shared by the replicas (`[store]`), once connected ([`AppState::with_store`]).
    pub store: Option<Store>,
    /// The list of ended sessions' per-replica side (`[store]`; [`AppState::ended_sessions`]).
    pub ended: Option<Arc<crate::store::ended::EndedSessions>>,
    /// Required providers a live reload added while this replica was ready, and that had not
    /// loaded yet: readiness does not wait for them ([`crate::health`]), so a reload never takes
    /// a serving replica out of the Service. Empty unless a reload made it so.
    pub late_providers: Vec<String>,
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
            refresher: Arc::new(Refresher::new(clock.clone(), config.proxy.refresh_ahead)),
            narrower: Arc::default(),
            clock,
            login_limiter: Arc::new(LoginLimiter::new(config.login_rate)),
            assertions: assertion_signer(&config).map(Arc::new),
            store: None,
            ended: crate::store::ended::EndedSessions::for_config(&config).map(Arc::new),
            late_providers: Vec::new(),
            config,
        }
    }

    /// Connects the configured store, if any (lazily: a store that is down now is picked up
    /// when it answers). Needs a tokio runtime, so it runs in startup rather than in `new`.
    pub fn with_store(mut self) -> Result<Self, StoreError> {
        if let Some(config) = &self.config.store {
            let store = Store::connect(config)?;
            match Arc::get_mut(&mut self.refresher) {
                Some(refresher) => refresher.set_store(store.clone()),
                // Invariant: called once, on a state just made by `new`, before anything
                // shared its refresher.
                None => {
                    tracing::error!("the refresher is shared already: it does not use the store")
                }
            }
            self.store = Some(store);
        }
        Ok(self)
    }
}

/// The assertion key, when a route asks for assertions ([`assertion_issuer`]). A key that
/// cannot be made is logged, and those routes answer 500.
pub(crate) fn assertion_signer(config: &Config) -> Option<crate::proxy::AssertionSigner> {
    let issuer = assertion_issuer(config)?;
    match crate::proxy::AssertionSigner::generate(issuer) {
        Ok(signer) => Some(signer),
        Err(e) => {
            tracing::error!(error = %e, "no assertion key: routes with assertion_header answer 500");
            None
        }
    }
}

/// The `iss` of routes' assertions, when a route asks for them: token-handler's public address,
/// the first trusted web origin (token-handler is served under the SPA's origin) and the base
/// path.
pub(crate) fn assertion_issuer(config: &Config) -> Option<String> {
    let wanted = config
        .proxy
        .routes
        .iter()
        .any(|r| r.access.assertion_header.is_some());
    if !wanted {
        return None;
    }
    let origin = config.web.trusted_origins.as_slice().first().cloned();
    Some(format!(
        "{}{}",
        origin.unwrap_or_default(),
        config.server.base_path.as_str()
    ))
}

/// The default provider's id: the exclusive one, else the first ([`Providers::default_provider`]).
pub(crate) fn default_provider(config: &Config) -> &str {
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
        self.store.as_ref().zip(self.ended.as_deref())
    }
}

/// The application's current [`AppState`], replaced whole by a reload ([`crate::reload`]).
/// Registered once as app data on every listener; requests reach it through [`of`].
#[derive(Debug)]
pub struct LiveState(arc_swap::ArcSwap<AppState>);

impl LiveState {
    pub fn new(state: AppState) -> Self {
        Self(arc_swap::ArcSwap::from_pointee(state))
    }

    /// The state now (a reload may replace it right after: a request pins one with [`of`]).
    pub fn current(&self) -> State {
        State(self.0.load_full())
    }

    /// Makes `state` the one new requests see; requests under way keep theirs.
    pub fn replace(&self, state: AppState) {
        self.0.store(Arc::new(state));
    }
}

/// A request's snapshot of the [`AppState`] (an `Arc`: cheap to clone, derefs to the state).
/// As an extractor it is the same snapshot everything else in the request sees ([`of`]).
#[derive(Debug, Clone)]
pub struct State(Arc<AppState>);

impl State {
    /// The snapshot as a plain `Arc` (to keep beyond the request, e.g. as `web::Data`).
    pub fn shared(&self) -> Arc<AppState> {
        Arc::clone(&self.0)
    }
}

impl std::ops::Deref for State {
    type Target = AppState;

    fn deref(&self) -> &AppState {
        &self.0
    }
}

/// The request's state: the snapshot it took the first time anything asked (kept in its
/// extensions), else the live one, taken now and kept for the rest of the request. The one
/// accessor of handlers (through [`State`]'s extractor) and middlewares alike: whatever order
/// the middlewares run in, a request sees one configuration from its start to its end. `None`
/// only in an app built without a [`LiveState`] (no listener of ours).
pub fn of(req: &HttpRequest) -> Option<State> {
    if let Some(state) = req.extensions().get::<State>() {
        return Some(state.clone());
    }
    let state = req.app_data::<web::Data<LiveState>>()?.current();
    req.extensions_mut().insert(state.clone());
    Some(state)
}

impl FromRequest for State {
    type Error = crate::error::ApiError;
    type Future = std::future::Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        std::future::ready(of(req).ok_or_else(|| {
            tracing::error!("the application state is not configured for this listener");
            crate::error::ApiError::Internal
        }))
    }
}
