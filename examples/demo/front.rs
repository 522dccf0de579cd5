//! The demo's front door, `http://localhost:8080`: one origin for the SPA's files, the agent
//! (`/oauth-agent/*`) and the API proxy (`/api/*`).
//!
//! In production this is your CDN, ingress or nginx: it serves the SPA and routes the agent and
//! API paths to token-handler. One origin means the browser sends token-handler's
//! `SameSite=Strict` cookies with the SPA's requests, and no CORS is involved at all.
//!
//! The SPA's files are compiled in (`include_str!`), so the demo runs from any directory.

use actix_web::dev::Server;
use actix_web::http::header::{self, HeaderName};
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::json;
use std::time::Duration;

const INDEX_HTML: &str = include_str!("../spa/index.html");
const APP_JS: &str = include_str!("../spa/app.js");
const CLIENT_JS: &str = include_str!("../spa/token-handler-client.js");
const STYLE_CSS: &str = include_str!("../spa/style.css");

/// The SPA page's policy: scripts and styles only from this origin, no framing, and no
/// `Referer` (the callback URL carries an authorization code until the SPA drops it).
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Largest request body relayed to token-handler.
const MAX_BODY: usize = 1024 * 1024;

/// Where `/oauth-agent` and `/api` go.
#[derive(Clone)]
struct Upstream(String);

/// One HTTP client per worker (awc clients are not `Send`).
struct Relay(awc::Client);

/// Binds `listen`; `token_handler` is `http://127.0.0.1:<port>` of token-handler.
pub fn server(listen: &str, token_handler: String, agent_path: &str) -> std::io::Result<Server> {
    let upstream = Upstream(token_handler);
    let agent_path = agent_path.to_string();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(upstream.clone()))
            .app_data(web::Data::new(Relay(
                awc::Client::builder()
                    .disable_redirects()
                    .timeout(Duration::from_secs(30))
                    .finish(),
            )))
            .app_data(web::PayloadConfig::new(MAX_BODY))
            .route("/", web::get().to(index))
            .route("/index.html", web::get().to(index))
            .route("/app.js", web::get().to(app_js))
            .route("/token-handler-client.js", web::get().to(client_js))
            .route("/style.css", web::get().to(style_css))
            .service(web::scope(&agent_path).default_service(web::to(relay)))
            .service(web::scope("/api").default_service(web::to(relay)))
            .default_service(web::to(not_found))
    })
    .workers(1)
    .shutdown_timeout(1)
    .bind(listen)?
    .run();
    Ok(server)
}

fn asset(content_type: &str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        // Always revalidate: editing examples/spa and rebuilding shows up on reload.
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(body)
}

async fn index() -> HttpResponse {
    let mut resp = asset("text/html; charset=utf-8", INDEX_HTML);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(CSP),
    );
    h.insert(
        header::REFERRER_POLICY,
        header::HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_FRAME_OPTIONS,
        header::HeaderValue::from_static("DENY"),
    );
    resp
}

async fn app_js() -> HttpResponse {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn client_js() -> HttpResponse {
    asset("text/javascript; charset=utf-8", CLIENT_JS)
}

async fn style_css() -> HttpResponse {
    asset("text/css; charset=utf-8", STYLE_CSS)
}

async fn not_found() -> HttpResponse {
    HttpResponse::NotFound()
        .content_type("text/plain; charset=utf-8")
        .body("not found\n")
}

/// Headers that belong to one connection and are never relayed (RFC 9110 §7.6.1).
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "content-length"
    )
}

/// Relays the request to token-handler unchanged (Host, Origin and Cookie included, so
/// token-handler sees what the browser sent) and its answer back (every Set-Cookie included).
async fn relay(
    req: HttpRequest,
    body: web::Bytes,
    upstream: web::Data<Upstream>,
    relay: web::Data<Relay>,
) -> HttpResponse {
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let mut out = relay
        .0
        .request(req.method().clone(), format!("{}{path}", upstream.0));
    for (name, value) in req.headers() {
        if !hop_by_hop(name) {
            out = out.append_header((name.clone(), value.clone()));
        }
    }
    let sent = if body.is_empty() {
        out.send().await
    } else {
        out.send_body(body).await
    };
    let mut resp = match sent {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "token-handler could not be reached");
            return HttpResponse::BadGateway().json(json!({
                "code": "bad_gateway",
                "message": "the demo's front server could not reach token-handler"
            }));
        }
    };
    let mut builder = HttpResponse::build(resp.status());
    for (name, value) in resp.headers() {
        if !hop_by_hop(name) {
            builder.append_header((name.clone(), value.clone()));
        }
    }
    match resp.body().limit(16 * 1024 * 1024).await {
        Ok(bytes) => builder.body(bytes),
        Err(e) => {
            tracing::warn!(error = %e, "token-handler's answer could not be read");
            HttpResponse::BadGateway().json(json!({
                "code": "bad_gateway",
                "message": "token-handler's answer could not be read"
            }))
        }
    }
}
