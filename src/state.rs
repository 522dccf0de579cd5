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
    /// Per-client-address limits on `login/start` and `login/end`.
    pub login_limiter: LoginLimiter,
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
            const ENDPOINTS: [&str; 9] = [
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
            ),
            providers: Providers::new(&config.providers, &clock),
            refresher: Refresher::new(clock.clone(), config.proxy.refresh_ahead),
            clock,
            login_limiter: LoginLimiter::new(config.login_rate),
            config,
        }
    }
}

/// The outbound HTTP client of one worker (awc clients are not `Send`, so each worker has its
/// own; they share nothing but the caches in [`Providers`]).
pub struct HttpClient(pub awc::Client);
