//! What every request handler shares: validated config, keys, cookie policy, providers, clock.

use crate::clock::Clock;
use crate::config::Config;
use crate::cookies::CookiePolicy;
use crate::crypto::Sealer;
use crate::oauth::Providers;
use crate::refresh::RefreshCoordinator;

/// Shared by all workers (behind `web::Data`, an `Arc`).
#[derive(Debug)]
pub struct AppState {
    pub config: Config,
    pub sealer: Sealer,
    pub cookies: CookiePolicy,
    pub providers: Providers,
    pub clock: Clock,
    pub refresher: RefreshCoordinator,
}

impl AppState {
    pub fn new(config: Config, clock: Clock) -> Self {
        Self {
            sealer: Sealer::new(config.cookies.keys.clone()),
            cookies: CookiePolicy::new(&config),
            providers: Providers::new(&config.providers),
            clock,
            refresher: RefreshCoordinator::default(),
            config,
        }
    }
}

/// The outbound HTTP client of one worker (awc clients are not `Send`, so each worker has its
/// own; they share nothing but the caches in [`Providers`]).
pub struct HttpClient(pub awc::Client);
