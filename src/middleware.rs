//! The main listener's one middleware: the request's id, span, log line and metrics; the
//! re-seal of cookies sealed with an older key; `Cache-Control: no-store` on every response
//! that writes one of our cookies; and the default security headers.
//!
//! These were four middlewares (`from_fn` ×3 and `DefaultHeaders`), each a service layer and a
//! boxed future on every request, and the re-seal one scanned the Cookie header a second time.
//! One layer does the same work in the same order (issue 17, docs/benchmarks.md): inside the
//! request's span the handler runs, then the default headers are added where the handler set
//! none, then the re-seal, then the id, metrics and log line, and last the `no-store` rule,
//! which so sees every `Set-Cookie`, the re-sealed ones included.

use crate::state::AppState;
use crate::telemetry::RequestLog;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::middleware::Next;
use tracing::Instrument;

/// Wraps every request of the main listener (`middleware::from_fn(around_request)`).
pub async fn around_request(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let log = RequestLog::begin(&mut req);
    let state = crate::state::of(req.request());
    let span = log.span.clone();
    async move {
        let mut res = next.call(req).await?;
        default_headers(res.headers_mut());
        let Some(state) = state else {
            log.finish(&mut res);
            return Ok(res);
        };
        let mut sets_ours = sets_our_cookie(&state, res.headers());
        sets_ours |= crate::rotation::reseal_after(&state, &mut res, sets_ours);
        log.finish(&mut res);
        if sets_ours {
            no_store(res.headers_mut());
        }
        Ok(res)
    }
    .instrument(span)
    .await
}

/// `Cache-Control: no-store` and `X-Content-Type-Options: nosniff` where the handler set none
/// (what `middleware::DefaultHeaders` did): nothing we answer is for a cache unless an upstream
/// says so, and no answer of ours is to be sniffed into another type.
fn default_headers(headers: &mut HeaderMap) {
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if !headers.contains_key(header::X_CONTENT_TYPE_OPTIONS) {
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
    }
}

/// Whether the response writes one of our cookies.
fn sets_our_cookie(state: &AppState, headers: &HeaderMap) -> bool {
    headers
        .get_all(header::SET_COOKIE)
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(['=', ';']).next())
        .any(|name| state.jar.policy().is_ours(name.trim()))
}

/// `Cache-Control: no-store` on every response that writes one of our cookies, whatever else set
/// a `Cache-Control` (an upstream's `public, max-age=600` on a proxied call that refreshed, say).
///
/// A cache that stored such a response would hand the session's cookies to whoever asks next
/// (RFC 9111 §3: `Set-Cookie` does not make a response uncacheable; §5.2.2.5 `no-store` does).
/// Cookies are written by the endpoints, the proxy and the key-rotation re-seal, so the rule
/// lives here, once, around all of them.
fn no_store(headers: &mut HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}
