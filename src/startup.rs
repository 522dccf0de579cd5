//! Builds the actix application and binds it, so `main` and the tests start the very same app.

use crate::clock::Clock;
use crate::config::Config;
use crate::oauth::http::build_client;
use crate::routes;
use crate::state::{AppState, HttpClient};
use crate::telemetry::log_request;
use actix_web::dev::Server;
use actix_web::http::header;
use actix_web::{middleware, web, App, HttpServer};
use std::net::TcpListener;

/// A bound, not yet running server.
pub struct Application {
    server: Server,
    metrics: Option<(Server, u16)>,
    port: u16,
    state: web::Data<AppState>,
}

impl Application {
    /// Binds `server.listen` (port 0 picks a free port).
    pub fn build(config: Config) -> std::io::Result<Self> {
        Self::build_with_clock(config, Clock::default())
    }

    /// As [`Application::build`], with a clock tests can move.
    pub fn build_with_clock(config: Config, clock: Clock) -> std::io::Result<Self> {
        let listener = TcpListener::bind(&config.server.listen)?;
        let port = listener.local_addr()?.port();
        let workers = config.server.workers;
        let grace = config.server.shutdown_grace;
        let connect_timeout = config.server.connect_timeout;
        let state = web::Data::new(AppState::new(config, clock));
        let app_state = state.clone();
        let mut server = HttpServer::new(move || {
            let base_path = app_state.config.server.base_path.as_str().to_string();
            App::new()
                .app_data(app_state.clone())
                .app_data(web::Data::new(HttpClient(build_client(connect_timeout))))
                .wrap(
                    middleware::DefaultHeaders::new()
                        .add((header::CACHE_CONTROL, "no-store"))
                        .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff")),
                )
                .wrap(middleware::from_fn(crate::rotation::reseal_cookies))
                .wrap(middleware::from_fn(log_request))
                .route("/health/live", web::get().to(crate::health::live))
                .route("/health/ready", web::get().to(crate::health::ready))
                .configure(routes::configure(&base_path))
                .default_service(web::to(crate::proxy::handle))
        })
        .shutdown_timeout(grace.as_secs())
        .listen(listener)?;
        if let Some(n) = workers {
            server = server.workers(n);
        }
        let metrics = match state.config.metrics_listen.as_deref() {
            None => None,
            Some(addr) => {
                let listener = TcpListener::bind(addr)?;
                let metrics_port = listener.local_addr()?.port();
                let server = HttpServer::new(|| {
                    App::new().route("/metrics", web::get().to(crate::metrics::serve))
                })
                .workers(1)
                .shutdown_timeout(grace.as_secs())
                .listen(listener)?
                .run();
                Some((server, metrics_port))
            }
        };
        Ok(Self {
            server: server.run(),
            metrics,
            port,
            state,
        })
    }

    /// The port actually bound.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The metrics listener's port, when `[metrics] listen` is set.
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics.as_ref().map(|(_, p)| *p)
    }

    /// The shared state (tests read the clock and keys through it).
    pub fn state(&self) -> web::Data<AppState> {
        self.state.clone()
    }

    /// Runs until the server is stopped (SIGINT/SIGTERM, handled by actix). Provider discovery
    /// runs alongside, so a provider that is down at startup is picked up when it comes back.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let state = self.state.clone();
        let discovery = actix_web::rt::spawn(async move {
            let client = build_client(state.config.server.connect_timeout);
            let tasks = state.providers.iter().map(|p| p.keep_discovered(&client));
            futures_util::future::join_all(tasks).await;
        });
        let keys = actix_web::rt::spawn(crate::rotation::watch_keys_file(self.state.clone()));
        let sweep = actix_web::rt::spawn(crate::rate_limit::sweep(self.state.clone()));
        let metrics = self.metrics.map(|(server, _)| {
            let handle = server.handle();
            actix_web::rt::spawn(server);
            handle
        });
        let result = self.server.await;
        if let Some(handle) = metrics {
            handle.stop(true).await;
        }
        discovery.abort();
        keys.abort();
        sweep.abort();
        result
    }
}
