//! Origin checks and CORS, for the agent endpoints (as a middleware) and the proxy (called
//! directly).
//!
//! Cookies are sent by the browser whoever asks, so the `Origin` header is what tells our SPA
//! from any other site. A present Origin must be trusted, everywhere. The agent's state-changing
//! endpoints also require one (browsers always send it on cross-origin and on same-origin
//! non-GET requests); GETs may omit it, because browsers omit it on same-origin GETs. CORS
//! headers are only ever sent for trusted origins, also on error responses, so the SPA can read
//! our JSON errors.

use crate::error::ApiError;
use crate::state::AppState;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse, ResponseError};

/// A request's standing as far as its `Origin` header goes.
#[derive(Debug, Clone)]
pub enum Origin {
    /// A trusted origin (its value, to echo in CORS headers).
    Trusted(HeaderValue),
    /// No Origin header.
    Absent,
}

impl Origin {
    /// Judges the request: a present but untrusted Origin (including `null`) is refused;
    /// `require_for_unsafe` also refuses an absent one on methods other than GET and HEAD.
    pub fn check(
        method: &Method,
        headers: &HeaderMap,
        state: &AppState,
        require_for_unsafe: bool,
    ) -> Result<Self, ApiError> {
        match headers.get(header::ORIGIN) {
            None if require_for_unsafe && !matches!(*method, Method::GET | Method::HEAD) => {
                Err(ApiError::Unauthorized(
                    "this request has no Origin header; only the trusted web origins may call this endpoint",
                ))
            }
            None => Ok(Origin::Absent),
            Some(value) => match value.to_str() {
                Ok(text) if state.config.web.trusted_origins.contains(text) => {
                    Ok(Origin::Trusted(value.clone()))
                }
                _ => Err(ApiError::Unauthorized(
                    "the request's Origin is not one of web.trusted_origins",
                )),
            },
        }
    }

    /// Adds the CORS response headers when the origin is trusted and CORS is on.
    pub fn decorate(&self, headers: &mut HeaderMap, state: &AppState) {
        if let (true, Origin::Trusted(o)) = (state.config.web.cors, self) {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o.clone());
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
            headers.append(header::VARY, HeaderValue::from_static("Origin"));
        }
    }
}

/// The answer to a CORS preflight: 204, with CORS headers only for a trusted origin. Requested
/// headers are allowed when they are well-formed header names (the SPA's own API headers), and
/// our CSRF header always is.
pub fn preflight(headers: &HeaderMap, state: &AppState) -> HttpResponse {
    let mut resp = HttpResponse::NoContent().finish();
    let Ok(origin @ Origin::Trusted(_)) = Origin::check(&Method::GET, headers, state, false) else {
        return resp;
    };
    if !state.config.web.cors {
        return resp;
    }
    let h = resp.headers_mut();
    origin.decorate(h, state);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE"),
    );
    let mut allowed = format!("content-type, {}", state.cookies.csrf_header());
    if let Some(requested) = headers
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .and_then(|v| v.to_str().ok())
    {
        for name in requested.split(',').map(str::trim) {
            let valid = !name.is_empty()
                && name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            let name = name.to_ascii_lowercase();
            if valid && !allowed.split(", ").any(|a| a == name) {
                allowed.push_str(", ");
                allowed.push_str(&name);
            }
        }
    }
    if let Ok(v) = HeaderValue::from_str(&allowed) {
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
    }
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    resp
}

/// The agent endpoints' middleware: preflights, Origin enforcement, CORS headers.
pub async fn origin_policy(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        tracing::error!("application state missing");
        let resp = ApiError::Internal.error_response();
        return Ok(req.into_response(resp).map_into_right_body());
    };
    if req.method() == Method::OPTIONS {
        let resp = preflight(req.headers(), &state);
        return Ok(req.into_response(resp).map_into_right_body());
    }
    let origin = match Origin::check(req.method(), req.headers(), &state, true) {
        Ok(o) => o,
        Err(e) => {
            tracing::info!(path = %req.path(), reason = %e, "request refused by origin policy");
            return Ok(req.into_response(e.error_response()).map_into_right_body());
        }
    };
    let mut res = next.call(req).await?;
    origin.decorate(res.headers_mut(), &state);
    Ok(res.map_into_left_body())
}
