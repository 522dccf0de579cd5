//! Origin checks and CORS for every agent endpoint, in one middleware.
//!
//! Cookies are sent by the browser whoever asks, so the `Origin` header is what tells our SPA
//! from any other site. State-changing methods must carry a trusted Origin (browsers always send
//! it on cross-origin and on same-origin non-GET requests); GETs are checked when they carry one,
//! because browsers omit it on same-origin GETs. CORS headers are only ever sent for trusted
//! origins, also on error responses, so the SPA can read our JSON errors.

use crate::error::ApiError;
use crate::state::AppState;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse, ResponseError};

/// The verdict on a request's `Origin`.
enum OriginVerdict {
    /// A trusted origin (its value, to echo in CORS headers).
    Trusted(HeaderValue),
    /// No Origin header.
    Absent,
    /// Present but not trusted (including `null` and unparseable values).
    Untrusted,
}

fn verdict(headers: &HeaderMap, state: &AppState) -> OriginVerdict {
    match headers.get(header::ORIGIN) {
        None => OriginVerdict::Absent,
        Some(value) => match value.to_str() {
            Ok(text) if state.config.web.trusted_origins.contains(text) => {
                OriginVerdict::Trusted(value.clone())
            }
            _ => OriginVerdict::Untrusted,
        },
    }
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD)
}

fn add_cors(headers: &mut HeaderMap, origin: HeaderValue) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        HeaderValue::from_static("true"),
    );
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
}

/// The middleware: preflights, Origin enforcement, CORS headers.
pub async fn origin_policy(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        tracing::error!("application state missing");
        let resp = ApiError::Internal.error_response();
        return Ok(req.into_response(resp).map_into_right_body());
    };
    let cors = state.config.web.cors;
    let origin = verdict(req.headers(), &state);

    if req.method() == Method::OPTIONS {
        let mut resp = HttpResponse::NoContent().finish();
        if let (true, OriginVerdict::Trusted(o)) = (cors, origin) {
            let h = resp.headers_mut();
            add_cors(h, o);
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE"),
            );
            let allowed = format!("content-type, {}", state.cookies.csrf_header());
            if let Ok(v) = HeaderValue::from_str(&allowed) {
                h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
            }
            h.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("600"),
            );
        }
        return Ok(req.into_response(resp).map_into_right_body());
    }

    let refusal = match (&origin, is_safe(req.method())) {
        (OriginVerdict::Trusted(_), _) | (OriginVerdict::Absent, true) => None,
        (OriginVerdict::Absent, false) => Some(
            "this request has no Origin header; only the trusted web origins may call this endpoint",
        ),
        (OriginVerdict::Untrusted, _) => Some(
            "the request's Origin is not one of web.trusted_origins",
        ),
    };
    if let Some(reason) = refusal {
        tracing::info!(path = %req.path(), reason, "request refused by origin policy");
        let resp = ApiError::Unauthorized(reason).error_response();
        return Ok(req.into_response(resp).map_into_right_body());
    }

    let mut res = next.call(req).await?;
    if let (true, OriginVerdict::Trusted(o)) = (cors, origin) {
        add_cors(res.headers_mut(), o);
    }
    Ok(res.map_into_left_body())
}
