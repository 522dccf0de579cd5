//! What every request handler shares: validated config, keys, cookie policy, providers, clock.

use crate::clock::Clock;
use crate::config::Config;
use crate::cookies::CookiePolicy;
use crate::crypto::Sealer;
use crate::oauth::Providers;

/// Shared by all workers (behind `web::Data`, an `Arc`).
#[derive(Debug)]
pub struct AppState {
    pub config: Config,
    pub sealer: Sealer,
    pub cookies: CookiePolicy,
    pub providers: Providers,
    pub clock: Clock,
}

impl AppState {
    pub fn new(config: Config, clock: Clock) -> Self {
        Self {
            sealer: Sealer::new(config.cookies.keys.clone()),
            cookies: CookiePolicy::new(&config.cookies, config.server.base_path.as_str()),
            providers: Providers::new(&config.providers),
            clock,
            config,
        }
    }
}

/// The outbound HTTP client of one worker (awc clients are not `Send`, so each worker has its
/// own; they share nothing but the caches in [`Providers`]).
pub struct HttpClient(pub awc::Client);
