//! Sending the request upstream and streaming the answer back.

use super::headers::{keep_response_header, response_connection_listed, upstream_request_headers};
use super::RouteMatch;
use crate::error::ApiError;
use crate::secret::Token;
use crate::state::AppState;
use actix_web::body::SizedStream;
use actix_web::cookie::Cookie;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use awc::error::SendRequestError;

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
        for (name, value) in upstream_request_headers(req.headers(), state, bearer.is_none()) {
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
        if let Some(peer) = req.peer_addr() {
            if let Ok(v) = HeaderValue::from_str(&peer.ip().to_string()) {
                h.insert(header::X_FORWARDED_FOR, v);
            }
        }
        let proto = if req.app_config().secure() {
            "https"
        } else {
            "http"
        };
        h.insert(
            header::HeaderName::from_static("x-forwarded-proto"),
            HeaderValue::from_static(proto),
        );
        if let Some(host) = req.headers().get(header::HOST) {
            h.insert(
                header::HeaderName::from_static("x-forwarded-host"),
                host.clone(),
            );
        }
    }

    let declared_length = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let sent = match declared_length {
        Some(len) => upstream.send_body(SizedStream::new(len, body)).await,
        None => upstream.send_stream(body).await,
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
        if keep_response_header(name, value, &listed, state) {
            builder.append_header((name.clone(), value.clone()));
        }
    }
    for c in cookies {
        builder.cookie(c);
    }
    let length = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match length {
        Some(len) => builder.body(SizedStream::new(len, response)),
        None => builder.streaming(response),
    }
}
