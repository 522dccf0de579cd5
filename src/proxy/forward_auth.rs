//! `GET <base_path>/auth`: forward auth for gateways users already run (nginx `auth_request`,
//! Traefik ForwardAuth, Envoy ext_authz).
//!
//! The gateway sends the original request's headers here; we apply the proxy's rules (CSRF for
//! the original method, taken from `X-Forwarded-Method` or `X-Original-Method`; refresh when
//! due) and answer 200 with the `Authorization` header the gateway copies upstream, or 401.
//!
//! After a refresh the new cookies come as `Set-Cookie` headers and, again, one each in
//! `X-Token-Handler-Set-Cookie-1`, `-2`, …: nginx's `auth_request_set` sees only the first
//! `Set-Cookie` of an answer, but can copy numbered headers one by one (docs/gateways.md).

use super::refusal;
use crate::csrf::require_csrf;
use crate::refresh::usable_access_token;
use crate::state::{AppState, HttpClient};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};

fn original_method(req: &HttpRequest) -> Method {
    ["x-forwarded-method", "x-original-method"]
        .iter()
        .find_map(|h| req.headers().get(*h))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Method::from_bytes(v.trim().as_bytes()).ok())
        .unwrap_or(Method::GET)
}

pub async fn forward_auth(
    req: HttpRequest,
    state: web::Data<AppState>,
    client: web::Data<HttpClient>,
) -> HttpResponse {
    let method = original_method(&req);
    if !matches!(method, Method::GET | Method::HEAD | Method::OPTIONS) {
        if let Err(e) = require_csrf(&req, &state) {
            return e.error_response();
        }
    }
    match usable_access_token(&req, &state, &client.0).await {
        Ok(usable) => {
            let Ok(value) =
                HeaderValue::from_str(&format!("Bearer {}", usable.access_token.expose()))
            else {
                return crate::error::ApiError::Internal.error_response();
            };
            let mut resp = HttpResponse::Ok();
            resp.insert_header((header::AUTHORIZATION, value));
            for (i, c) in usable.cookies.into_iter().enumerate() {
                if let Ok(v) = HeaderValue::from_str(&c.to_string()) {
                    resp.insert_header((format!("x-token-handler-set-cookie-{}", i + 1), v));
                }
                resp.cookie(c);
            }
            resp.finish()
        }
        Err(denied) => refusal(&state, denied),
    }
}
