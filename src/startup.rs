//! Builds the actix application and binds it, so `main` and the tests start the very same app.

use crate::clock::Clock;
use crate::config::Config;
use crate::oauth::http::build_client;
use crate::reload::Reloader;
use crate::routes;
use crate::state::{AppState, HttpClient, LiveState};
use crate::telemetry::{log_request, RouteLabel};
use actix_web::dev::Server;
use actix_web::http::header;
use actix_web::{middleware, web, App, HttpServer};
use std::net::TcpListener;

/// A bound, not yet running server.
pub struct Application {
    server: Server,
    metrics: Option<(Server, u16)>,
    forward_auth: Option<(Server, u16)>,
    /// The admin listener (`[store] admin_listen`): `POST /sessions/revoke`.
    admin: Option<(Server, u16)>,
    port: u16,
    /// The state every listener serves, replaced whole by a reload ([`crate::reload`]).
    live: web::Data<LiveState>,
    reloader: Reloader,
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
        let state = AppState::new(config, clock)
            .with_store()
            .map_err(|e| std::io::Error::other(format!("store: {e}")))?;
        let live = web::Data::new(LiveState::new(state));
        crate::metrics::METRICS.record_config_loaded();
        // Read once: a reload refuses to change them (`reload::restart_only_changes`).
        let state = live.current();
        let app_live = live.clone();
        let mut server = HttpServer::new(move || {
            let start = app_live.current();
            let base_path = start.config.server.base_path.as_str().to_string();
            let callback_path = start.config.server.callback_path.clone();
            App::new()
                .app_data(app_live.clone())
                .app_data(web::Data::new(HttpClient(build_client(connect_timeout))))
                // One layer: the request log, the key-rotation re-seal, `no-store` on
                // Set-Cookie and the default headers (src/middleware.rs; issue 17).
                .wrap(middleware::from_fn(crate::middleware::around_request))
                .route("/health/live", web::get().to(crate::health::live))
                .route("/health/ready", web::get().to(crate::health::ready))
                .configure(routes::configure_server_login(
                    &base_path,
                    callback_path.as_deref(),
                ))
                .configure(routes::backchannel::configure(&base_path))
                .configure(routes::configure(&base_path))
                .default_service(web::to(crate::proxy::handle))
        })
        // The peer's address as text once per connection, not per request
        // (`X-Forwarded-For`, src/proxy/forward.rs).
        .on_connect(crate::proxy::note_peer)
        .shutdown_timeout(grace.as_secs())
        .listen(listener)?;
        if let Some(n) = workers {
            server = server.workers(n);
        }
        let metrics = match state.config.metrics_listen.as_deref() {
            None => None,
            Some(addr) => {
                let m_live = live.clone();
                Some(side_listener(addr, 1, grace, move || {
                    App::new()
                        .app_data(m_live.clone())
                        .route("/metrics", web::get().to(crate::metrics::serve))
                        // The assertion key (routes' `assertion_header`): for the APIs, never
                        // on the public listener.
                        .route("/jwks", web::get().to(crate::proxy::jwks))
                })?)
            }
        };
        // Forward auth answers with the access token: on its own listener, which only the
        // gateway reaches, never on the public one where same-origin JavaScript could read it.
        let forward_auth = match state.config.forward_auth_listen.as_deref() {
            None => None,
            Some(addr) => {
                let fa_live = live.clone();
                let threads = workers
                    .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
                Some(side_listener(addr, threads, grace, move || {
                    App::new()
                        .app_data(fa_live.clone())
                        .app_data(web::Data::new(HttpClient(build_client(connect_timeout))))
                        .app_data(RouteLabel("forward_auth"))
                        .wrap(
                            middleware::DefaultHeaders::new()
                                .add((header::CACHE_CONTROL, "no-store")),
                        )
                        .wrap(middleware::from_fn(log_request))
                        .route("/auth", web::get().to(routes::forward_auth))
                        .route("/auth", web::head().to(routes::forward_auth))
                        .default_service(web::to(routes::not_found))
                })?)
            }
        };
        let admin = admin_listener(&live, grace, connect_timeout)?;
        let reloader = Reloader::new(live.clone(), None, crate::reload::POLL);
        Ok(Self {
            server: server.run(),
            metrics,
            forward_auth,
            admin,
            port,
            live,
            reloader,
        })
    }

    /// Reloads the configuration from `path` (the file it was loaded from) on SIGHUP, when the
    /// file or a secret file it names changes (checked every `poll`), and on
    /// [`Reloader::reload`] ([`crate::reload`]). Without it, the configuration is the one given.
    pub fn with_config_file(mut self, path: std::path::PathBuf, poll: std::time::Duration) -> Self {
        self.reloader = Reloader::new(self.live.clone(), Some(path), poll);
        self
    }

    /// The handle that reloads the configuration ([`Application::with_config_file`]).
    pub fn reloader(&self) -> Reloader {
        self.reloader.clone()
    }

    /// The holder of the current state (tests look at what a reload applied).
    pub fn live(&self) -> web::Data<LiveState> {
        self.live.clone()
    }

    /// The port actually bound.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The metrics listener's port, when `[metrics] listen` is set.
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics.as_ref().map(|(_, p)| *p)
    }

    /// The forward-auth listener's port, when `[forward_auth] listen` is set.
    pub fn forward_auth_port(&self) -> Option<u16> {
        self.forward_auth.as_ref().map(|(_, p)| *p)
    }

    /// The admin listener's port, when `[store] admin_listen` is set.
    pub fn admin_port(&self) -> Option<u16> {
        self.admin.as_ref().map(|(_, p)| *p)
    }

    /// The state now (tests read the clock and keys through it; both outlive reloads).
    pub fn state(&self) -> web::Data<AppState> {
        web::Data::from(self.live.current().shared())
    }

    /// Runs until the server is stopped (SIGINT/SIGTERM, handled by actix). Provider discovery
    /// runs alongside, so a provider that is down at startup is picked up when it comes back.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.reloader.restart_discovery();
        let config = actix_web::rt::spawn(self.reloader.clone().watch());
        let keys = actix_web::rt::spawn(crate::rotation::watch_keys_file(self.live.clone()));
        let sweep = actix_web::rt::spawn(crate::rate_limit::sweep(self.live.clone()));
        let side: Vec<_> = [self.metrics, self.forward_auth, self.admin]
            .into_iter()
            .flatten()
            .map(|(server, _)| {
                let handle = server.handle();
                actix_web::rt::spawn(server);
                handle
            })
            .collect();
        let result = self.server.await;
        for handle in side {
            handle.stop(true).await;
        }
        self.reloader.stop_discovery();
        config.abort();
        keys.abort();
        sweep.abort();
        result
    }
}

/// The admin listener (`[store] admin_listen`), when configured: `POST /sessions/revoke` ends
/// every session of a user ([`routes::backchannel::revoke`]). It has no authentication of its
/// own: like the metrics listener, it must be reachable only from the operator's network.
fn admin_listener(
    live: &web::Data<LiveState>,
    grace: std::time::Duration,
    connect_timeout: std::time::Duration,
) -> std::io::Result<Option<(Server, u16)>> {
    let Some(addr) = live
        .current()
        .config
        .store
        .as_ref()
        .and_then(|s| s.admin_listen.clone())
    else {
        return Ok(None);
    };
    let admin_live = live.clone();
    side_listener(&addr, 1, grace, move || {
        App::new()
            .app_data(admin_live.clone())
            .app_data(web::Data::new(HttpClient(build_client(connect_timeout))))
            .app_data(RouteLabel("admin"))
            .wrap(middleware::DefaultHeaders::new().add((header::CACHE_CONTROL, "no-store")))
            .wrap(middleware::from_fn(log_request))
            .route(
                "/sessions/revoke",
                web::post().to(routes::backchannel::revoke),
            )
            .default_service(web::to(routes::not_found))
    })
    .map(Some)
}

/// A listener beside the public one (metrics, forward auth), running its own small app.
fn side_listener<F, A, B>(
    addr: &str,
    workers: usize,
    grace: std::time::Duration,
    app: F,
) -> std::io::Result<(Server, u16)>
where
    F: Fn() -> App<A> + Send + Clone + 'static,
    A: actix_web::dev::ServiceFactory<
            actix_web::dev::ServiceRequest,
            Config = (),
            Response = actix_web::dev::ServiceResponse<B>,
            Error = actix_web::Error,
            InitError = (),
        > + 'static,
    B: actix_web::body::MessageBody + 'static,
{
    let listener = TcpListener::bind(addr)?;
    let port = listener.local_addr()?.port();
    let server = HttpServer::new(app)
        .workers(workers)
        .shutdown_timeout(grace.as_secs())
        .listen(listener)?
        .run();
    Ok((server, port))
}
