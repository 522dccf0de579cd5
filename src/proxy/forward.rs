//! Sending the request upstream and streaming the answer back.

use super::headers::{keep_response_header, response_connection_listed, upstream_request_headers};
use super::route::client_location;
use super::RouteMatch;
use crate::error::ApiError;
use crate::secret::Token;
use crate::state::AppState;
use actix_web::body::{self, BodyStream, SizedStream};
use actix_web::cookie::Cookie;
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use awc::error::SendRequestError;

/// `X-Forwarded-For/-Proto/-Host` for the upstream. A client's own values are believed only when
/// the connecting peer is one of `server.trusted_proxies` (then the peer is appended to its
/// chain); from anyone else they are replaced, so a client cannot spoof its address.
pub fn forwarded_headers(
    req: &HttpRequest,
    state: &AppState,
) -> Vec<(header::HeaderName, HeaderValue)> {
    let peer = req.peer_addr().map(|p| p.ip());
    let trusted = peer.is_some_and(|ip| {
        state
            .config
            .server
            .trusted_proxies
            .iter()
            .any(|n| n.contains(ip))
    });
    let incoming = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let peer_text = peer.map(|p| p.to_string()).unwrap_or_default();
    let chain = match (trusted, incoming("x-forwarded-for")) {
        (true, Some(chain)) => format!("{chain}, {peer_text}"),
        _ => peer_text,
    };
    let https = match (trusted, incoming("x-forwarded-proto")) {
        (true, Some(p)) if p == "http" || p == "https" => p == "https",
        _ => req.app_config().secure(),
    };
    let host = match trusted {
        true => incoming("x-forwarded-host").or_else(|| incoming("host")),
        false => incoming("host"),
    };
    let mut out = Vec::new();
    if let Ok(v) = HeaderValue::from_str(&chain) {
        out.push((header::X_FORWARDED_FOR, v));
    }
    out.push((
        header::HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static(if https { "https" } else { "http" }),
    ));
    if let Some(v) = host.and_then(|h| HeaderValue::from_str(h).ok()) {
        out.push((header::HeaderName::from_static("x-forwarded-host"), v));
    }
    out
}

/// The upstream's `Location`, pointed back at the route when it names the upstream itself.
fn relocated(found: &RouteMatch<'_>, value: &HeaderValue) -> Option<HeaderValue> {
    let location = client_location(found.route, value.to_str().ok()?)?;
    HeaderValue::from_str(&location).ok()
}

/// Forwards the request; `bearer` replaces any client Authorization header when set.
pub async fn forward(
    req: &HttpRequest,
    body: web::Payload,
    state: &AppState,
    client: &awc::Client,
    found: &RouteMatch<'_>,
    bearer: Option<&Token>,
    cookies: Vec<Cookie<'static>>,
) -> HttpResponse {
    let mut upstream = client
        .request(req.method().clone(), found.upstream_url.as_str())
        .timeout(found.route.timeout);
    {
        let h = upstream.headers_mut();
        // awc starts every request with its own User-Agent; the client's replaces it.
        if req.headers().contains_key(header::USER_AGENT) {
            h.remove(header::USER_AGENT);
        }
        for (name, value) in upstream_request_headers(
            req.headers(),
            state,
            bearer.is_none(),
            &found.route.allow_headers,
        ) {
            h.append(name, value);
        }
        if let Some(token) = bearer {
            match HeaderValue::from_str(&format!("Bearer {}", token.expose())) {
                Ok(v) => {
                    h.insert(header::AUTHORIZATION, v);
                }
                Err(_) => {
                    tracing::error!("the access token is not a valid header value");
                    return ApiError::Internal.error_response();
                }
            }
        }
        for (name, value) in forwarded_headers(req, state) {
            h.insert(name, value);
        }
    }

    let declared_length = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // RFC 9112 §6.3: a request with neither Content-Length nor Transfer-Encoding has no content
    // (actix-web refuses requests that carry both). It goes upstream without a body rather than
    // as an empty stream: with `Content-Length: 0` for methods that define content (RFC 9110
    // §8.6), with no length at all for the others, as the client sent it.
    let chunked = req.headers().contains_key(header::TRANSFER_ENCODING);
    let defines_content = matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH);
    let sent = match (declared_length, chunked) {
        (Some(len), _) => upstream.send_body(SizedStream::new(len, body)).await,
        (None, true) => upstream.send_stream(body).await,
        (None, false) if defines_content => upstream.send().await,
        (None, false) => upstream.send_body(body::None::new()).await,
    };
    let response = match sent {
        Ok(r) => r,
        Err(e) => {
            let (error, kind) = match e {
                SendRequestError::Timeout => (ApiError::UpstreamTimeout, "timeout"),
                SendRequestError::Connect(_) => (ApiError::UpstreamUnavailable, "connect"),
                _ => (ApiError::UpstreamUnavailable, "exchange"),
            };
            tracing::warn!(route = %found.route.path.as_str(), kind, error = %e, "upstream call failed");
            return error.error_response();
        }
    };

    let mut builder = HttpResponse::build(response.status());
    let listed = response_connection_listed(response.headers());
    for (name, value) in response.headers() {
        if !keep_response_header(name, value, &listed, state, &found.route.allow_headers) {
            continue;
        }
        let value = if *name == header::LOCATION {
            relocated(found, value).unwrap_or_else(|| value.clone())
        } else {
            value.clone()
        };
        builder.append_header((name.clone(), value));
    }
    for c in cookies {
        builder.cookie(c);
    }
    let length = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // `body`, not `streaming`: the latter invents `Content-Type: application/octet-stream` when
    // the upstream sent none, which on a 304 would overwrite the browser's cached type.
    match length {
        Some(len) => builder.body(SizedStream::new(len, response)),
        None => builder.body(BodyStream::new(response)),
    }
}
