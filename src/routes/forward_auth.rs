//! `GET /auth` on the forward-auth listener (`[forward_auth] listen`): forward auth for gateways
//! users already run (nginx `auth_request`, Traefik ForwardAuth, Envoy ext_authz).
//!
//! The gateway sends the original request's headers here; we apply the proxy's rules (Origin;
//! CSRF for the original method, taken from `X-Forwarded-Method` or `X-Original-Method`; refresh
//! when due) and answer 200 with the `Authorization` header the gateway copies upstream, or 401.
//!
//! The answer carries the access token, so it must never reach a browser: the endpoint lives on
//! its own listener, which only the gateway can reach, and not on the public one, where any
//! same-origin script (an XSS payload) could `fetch` it and read the token (RFC 10017's BFF
//! promise). A missing or unknown original method is refused rather than taken for a GET: a
//! gateway that forgot to send it would otherwise skip the CSRF check for every POST.
//!
//! After a refresh (or an idle-clock renewal, see [`crate::session::lifetime`]) the new cookies
//! come as `Set-Cookie` headers and, again, one each in
//! `X-Token-Handler-Set-Cookie-1`, `-2`, …: nginx's `auth_request_set` sees only the first
//! `Set-Cookie` of an answer, but can copy numbered headers one by one (docs/gateways.md).

use crate::error::ApiError;
use crate::origin::Origin;
use crate::proxy::{refusal, session_token};
use crate::refresh::TokenSource;
use crate::state::{HttpClient, State};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};

/// The method of the request the gateway is asking about. Only the methods an SPA's API call
/// can have are known; anything else, or no header at all, is refused.
fn original_method(req: &HttpRequest) -> Result<Method, ApiError> {
    let value = ["x-forwarded-method", "x-original-method"]
        .iter()
        .find_map(|h| req.headers().get(*h))
        .ok_or(ApiError::Unauthorized(
            "the gateway sent no X-Forwarded-Method or X-Original-Method header: forward auth needs the original request's method to apply CSRF rules (docs/gateways.md)",
        ))?;
    let known = [
        Method::GET,
        Method::HEAD,
        Method::OPTIONS,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
    ];
    value
        .to_str()
        .ok()
        .and_then(|v| known.into_iter().find(|m| m.as_str() == v.trim()))
        .ok_or(ApiError::Unauthorized(
            "the original method the gateway sent is not one of GET, HEAD, OPTIONS, POST, PUT, PATCH, DELETE",
        ))
}

pub async fn forward_auth(
    req: HttpRequest,
    state: State,
    client: web::Data<HttpClient>,
) -> HttpResponse {
    let method = match original_method(&req) {
        Ok(m) => m,
        Err(e) => return e.error_response(),
    };
    if let Err(e) = Origin::check(&method, req.headers(), &state.config.web, false) {
        return e.error_response();
    }
    // Forward-auth paths name no provider: the default provider's session (or the one the
    // browser holds, [`crate::session::SessionJar::default_for`]).
    let jar = state.jar.default_for(req.headers());
    let cookies = jar.read(req.headers());
    let source = TokenSource {
        jar,
        ..state.token_source()
    };
    // A session ended by a back-channel logout or `sessions revoke` (issue 16).
    if let Err(e) = crate::store::ended::check_request(&state, jar, &cookies).await {
        return refusal(&state.jar, jar, req.headers(), e.into());
    }
    match session_token(&method, req.headers(), &cookies, &source, &client.0).await {
        Ok(usable) => {
            let Ok(value) =
                HeaderValue::from_str(&format!("Bearer {}", usable.access_token.expose()))
            else {
                return ApiError::Internal.error_response();
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
        Err(denied) => refusal(&state.jar, jar, req.headers(), denied),
    }
}
