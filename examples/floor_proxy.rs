//! Benchmark only, never shipped: the floor of token-handler's proxy (issue 17).
//!
//! A pass-through proxy on exactly token-handler's stack and settings: actix-web's server with
//! the same worker count (one per core unless given), awc built by the same
//! `oauth::http::build_client` (same connection pool size, idle reuse and timeouts) one per
//! worker, tokio underneath; the request goes upstream with its headers and the answer streams
//! back as `proxy::forward` does it. No cookie, no unsealing, no metrics, no logging, no auth,
//! no middleware: whatever token-handler costs above this is ours to cut.
//!
//! `cargo run --release --example floor_proxy -- <listen addr> <upstream base URL> [workers]`
//! (scripts/bench-proxy.sh runs it in the same rounds as nginx and token-handler).
//!
//! `FLOOR_SPIN_NS=<n>` makes each request also spin on the CPU for n nanoseconds before going
//! upstream: a stand-in for a proxy's own work that touches nothing else, so
//! scripts/floor-slope.sh can measure what each microsecond of work costs in all, the kernel's
//! share included, on this stack and this machine (issue 17, docs/benchmarks.md).
//! `FLOOR_SHAPE=app` gives the floor token-handler's application shape and nothing of its work:
//! one `from_fn` middleware that only passes the request on, and the routes registered ahead
//! of the proxy's default service (health, server-side login, back-channel logout, the agent's
//! scope and its resources), each answering nothing a proxied request reaches.

use actix_web::body::{BodyStream, MessageBody, SizedStream};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use std::time::Duration;

struct Upstream(String);

/// Nanoseconds of work each request stands in for (`FLOOR_SPIN_NS`; 0 by default). A static,
/// not app data, so the floor itself extracts nothing more than before.
static SPIN_NS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();

/// Busy for `ns` nanoseconds of wall time: the worker is pinned or alone on its core in the
/// runs this serves, so that is CPU time.
fn spin(ns: u64) {
    if ns == 0 {
        return;
    }
    let start = std::time::Instant::now();
    while start.elapsed().as_nanos() < u128::from(ns) {
        std::hint::spin_loop();
    }
}

async fn pass(
    req: HttpRequest,
    body: web::Payload,
    client: web::Data<awc::Client>,
    upstream: web::Data<Upstream>,
) -> HttpResponse {
    spin(SPIN_NS.get().copied().unwrap_or(0));
    let url = match req.uri().path_and_query() {
        Some(pq) => format!("{}{}", upstream.0, pq.as_str()),
        None => upstream.0.clone(),
    };
    let mut request = client
        .request(req.method().clone(), url)
        .timeout(Duration::from_secs(30));
    for (name, value) in req.headers() {
        if name != header::HOST && name != header::CONNECTION {
            request = request.append_header((name.clone(), value.clone()));
        }
    }
    let length = |h: &header::HeaderMap| {
        h.get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
    };
    let sent = match length(req.headers()) {
        Some(len) => request.send_body(SizedStream::new(len, body)).await,
        None => request.send_body(actix_web::body::None::new()).await,
    };
    let response = match sent {
        Ok(r) => r,
        Err(_) => return HttpResponse::BadGateway().finish(),
    };
    let mut builder = HttpResponse::build(response.status());
    for (name, value) in response.headers() {
        if name != header::CONNECTION && name != header::TRANSFER_ENCODING {
            builder.append_header((name.clone(), value.clone()));
        }
    }
    match length(response.headers()) {
        Some(len) => builder.body(SizedStream::new(len, response)),
        None => builder.body(BodyStream::new(response)),
    }
}

/// The middleware of the `app` shape: passes the request on, nothing else.
async fn pass_on(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    next.call(req).await
}

/// The routes token-handler registers ahead of its proxy (src/startup.rs, src/routes), with
/// handlers that answer nothing: for the `app` shape.
fn agent_shaped(cfg: &mut web::ServiceConfig) {
    let none = || web::to(HttpResponse::NoContent);
    cfg.route("/health/live", web::get().to(HttpResponse::NoContent))
        .route("/health/ready", web::get().to(HttpResponse::NoContent))
        .service(web::resource("/tokenhandler/login").default_service(none()))
        .service(web::resource("/tokenhandler/backchannel-logout").default_service(none()))
        .service(
            web::scope("/tokenhandler")
                .wrap(from_fn(pass_on))
                .service(web::resource("/login/start").default_service(none()))
                .service(web::resource("/login/end").default_service(none()))
                .service(web::resource("/userInfo").default_service(none()))
                .service(web::resource("/claims").default_service(none()))
                .service(web::resource("/providers").default_service(none()))
                .service(web::resource("/session").default_service(none()))
                .service(web::resource("/refresh").default_service(none()))
                .service(web::resource("/logout").default_service(none()))
                .default_service(none()),
        );
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        eprintln!("usage: floor_proxy <listen addr> <upstream base URL> [workers]");
        std::process::exit(2);
    };
    let workers = args
        .next()
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let upstream = upstream.trim_end_matches('/').to_string();
    let spin_ns = std::env::var("FLOOR_SPIN_NS").ok();
    SPIN_NS.get_or_init(|| spin_ns.and_then(|v| v.parse().ok()).unwrap_or(0));
    let shaped = std::env::var("FLOOR_SHAPE").is_ok_and(|v| v == "app");
    let app = move || {
        App::new()
            .app_data(web::Data::new(token_handler::oauth::http::build_client(
                Duration::from_secs(5),
            )))
            .app_data(web::Data::new(Upstream(upstream.clone())))
    };
    actix_web::rt::System::new().block_on(async move {
        if shaped {
            HttpServer::new(move || {
                app()
                    .wrap(from_fn(pass_on))
                    .configure(agent_shaped)
                    .default_service(web::to(pass))
            })
            .workers(workers)
            .bind(listen)?
            .run()
            .await
        } else {
            HttpServer::new(move || app().default_service(web::to(pass)))
                .workers(workers)
                .bind(listen)?
                .run()
                .await
        }
    })
}
