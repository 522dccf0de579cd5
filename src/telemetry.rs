//! Logging setup and the per-request span and log line.
//!
//! Each request runs in a span carrying its request id, method and path without the query
//! string (the callback's query holds the authorization code), so every log line a request
//! causes can be correlated. The id comes from a well-formed incoming `X-Request-Id` or is made
//! here; it is passed to the upstream and returned to the client. Never logged: headers,
//! cookies, bodies, tokens, codes, secrets, keys (docs/logging.md).

use crate::config::LogFormat;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use std::time::Instant;
use tracing::Instrument;
use tracing_subscriber::EnvFilter;

/// The request-id header.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Installs the global subscriber; `RUST_LOG` overrides the default `info` level.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
}

/// An incoming request id is kept only when it is short and plain, so it is safe in logs and
/// headers; otherwise a fresh one is made.
fn request_id(req: &ServiceRequest) -> String {
    req.headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 128
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
        })
        .map(String::from)
        .unwrap_or_else(fresh_request_id)
}

/// 128 random bits as 22 base64url characters (the length the id always had), encoded
/// straight from 16 bytes: not a secret, so no 32-byte token is made and cut (issue 17).
fn fresh_request_id() -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>())
}

/// The metrics route label of every request of an app that serves one endpoint (the
/// forward-auth listener), set as app data.
pub struct RouteLabel(pub &'static str);

/// Runs the request in its span and logs one line when it completes.
pub async fn log_request(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let start = Instant::now();
    let id = request_id(&req);
    let value = HeaderValue::from_str(&id).unwrap_or(HeaderValue::from_static("invalid"));
    req.headers_mut().insert(REQUEST_ID, value.clone());
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %req.method(),
        path = %req.path(),
    );
    let mut res = next.call(req).instrument(span.clone()).await?;
    res.headers_mut().insert(REQUEST_ID, value);
    // The label is read from the request the response carries: borrowed, never copied.
    let served = res.request();
    let route = match served.app_data::<RouteLabel>() {
        Some(RouteLabel(label)) => label,
        None => served
            .app_data::<actix_web::web::Data<crate::state::AppState>>()
            .map_or("unmatched", |s| s.route_label_ref(served.path())),
    };
    crate::metrics::record_request(route, res.status().as_u16(), start.elapsed().as_secs_f64());
    span.in_scope(|| {
        tracing::info!(
            status = res.status().as_u16(),
            elapsed_ms = start.elapsed().as_millis() as u64,
            "request"
        )
    });
    Ok(res)
}
