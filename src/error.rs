//! One error type for everything a client can be told, mapped to HTTP in one exhaustive match.
//!
//! The JSON body carries a stable `code` (SPAs branch on it; the names follow Curity's OAuth
//! Agent so existing SPAs work unchanged) and a human `message` that names likely causes. A cause
//! chain never reaches the body: whatever detail helps an operator is logged at the point where
//! the error is created, without tokens, codes or cookie values.

use actix_web::cookie::Cookie;
use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

/// Why a request could not be served. Each variant is one stable error `code`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Origin, CSRF header, or a missing/unreadable cookie. The reason is for the message only;
    /// the code is the same whatever failed, so probing learns nothing.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// No session with this provider: the request carries none of its session cookies. The
    /// same code as [`ApiError::Unauthorized`] (OAuth Agent SPAs branch on it), with the
    /// provider named in the body (`provider`), so an SPA that holds sessions with several
    /// providers knows which login to start.
    #[error("no session cookie was sent for the identity provider `{provider}`; sign in with it first (and send requests with credentials included)")]
    NoSession { provider: String },
    /// The request itself is malformed.
    #[error("{0}")]
    InvalidRequest(String),
    /// A request body over the limit.
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// The request's headers are larger than the proxy relays.
    #[error("the request headers exceed {limit} bytes")]
    HeadersTooLarge { limit: usize },
    /// No such endpoint.
    #[error("no endpoint at this path")]
    NotFound,
    /// The endpoint exists but not with this method.
    #[error("this endpoint does not accept the {0} method")]
    MethodNotAllowed(String),
    /// The provider redirected back with an error (front channel, RFC 6749 §4.1.2.1). The code is
    /// the provider's own, already restricted to a safe alphabet.
    #[error("{description}")]
    ProviderFrontChannel { code: String, description: String },
    /// The provider rejected a code exchange or refresh (RFC 6749 §5.2), or sent a token we must
    /// not accept (ID-token validation failed).
    #[error("{0}")]
    AuthorizationError(String),
    /// The access token has expired: the SPA should call `/refresh`.
    #[error("the access token has expired; call refresh and retry")]
    TokenExpired,
    /// The provider's userinfo endpoint refused an access token that has not expired by our
    /// clock: typically one issued for an API (RFC 8707 resource, Entra API scope, Auth0
    /// audience). Refreshing would get another such token, so this is not `token_expired`:
    /// an SPA that refreshed on it would loop.
    #[error("the identity provider refused this session's access token at its userinfo endpoint although it has not expired (it may be issued for an API audience); refreshing will not help: use claims, or configure userinfo_source")]
    UserInfoRefused,
    /// The refresh token was rejected: the user must sign in again.
    #[error("the session has expired; sign in again")]
    SessionExpired,
    /// One provider's part of the browser's session is over (its refresh token refused, or
    /// ended by its logout) while another provider's session goes on: the same code as
    /// [`ApiError::SessionExpired`], with the provider named, so an SPA signs in with that
    /// provider again and keeps its CSRF value for the others
    /// ([`crate::session::SessionJar::session_over`]).
    #[error("the session with the identity provider `{provider}` has expired; sign in with it again (the sessions with other providers go on)")]
    ProviderSessionExpired { provider: String },
    /// The provider is unreachable, timed out or answered 5xx.
    #[error("{0}")]
    ProviderUnavailable(String),
    /// A token, sealed, needs more cookies than [`crate::cookies::MAX_CHUNKS`]: more than
    /// browsers and front proxies can carry, so writing it would only lose the session. 422:
    /// the request was fine, the session it asks for cannot be kept. The message names the
    /// cookie and the limit, never the token.
    #[error("the session's {name} cookie would be larger than the {limit} bytes browsers can carry; sign in with fewer scopes or claims, or have the identity provider issue shorter tokens")]
    SessionTooLarge { name: String, limit: usize },
    /// The provider's metadata could not be loaded (yet): discovery keeps retrying in the
    /// background, and other providers keep working.
    #[error("{0}")]
    ProviderNotReady(String),
    /// The session has no ID token (a plain OAuth 2.0 provider, or no `openid` scope).
    #[error("this session has no ID token: the identity provider is not an OpenID Connect provider, or the openid scope was not requested; use userInfo")]
    NoIdToken,
    /// The proxied API refused the connection, reset it, or answered garbage.
    #[error("the API upstream could not be reached")]
    UpstreamUnavailable,
    /// The proxied API did not answer within the route's timeout.
    #[error("the API upstream did not answer in time")]
    UpstreamTimeout,
    /// The provider refused to narrow the session's token for a route's API (RFC 8707
    /// `invalid_target`, RFC 6749 `invalid_scope`, `unauthorized_client`, …): the user may not
    /// call this API with this session. Never answered by forwarding the broader token instead.
    /// 403 with the code RFC 6750 §3.1 gives a token lacking the privileges a resource needs.
    #[error("{0}")]
    InsufficientScope(String),
    /// Our own fault. The message is generic; details are logged where it happened.
    #[error("internal error; see the token-handler log")]
    Internal,
    /// This client address made too many calls to a rate-limited endpoint (RFC 6585 §4); the
    /// response carries `Retry-After` in seconds (RFC 9110 §10.2.3).
    #[error("too many requests from this address; retry in {retry_after_secs} s")]
    TooManyRequests { retry_after_secs: u64 },
}

impl ApiError {
    /// The stable, documented error code carried in the JSON body.
    pub fn code(&self) -> &str {
        match self {
            ApiError::Unauthorized(_) | ApiError::NoSession { .. } => "unauthorized_request",
            ApiError::InvalidRequest(_) => "invalid_request",
            ApiError::PayloadTooLarge { .. } => "request_too_large",
            ApiError::HeadersTooLarge { .. } => "request_header_too_large",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::ProviderFrontChannel { code, .. } => code,
            ApiError::AuthorizationError(_) => "authorization_error",
            ApiError::TokenExpired => "token_expired",
            ApiError::UserInfoRefused => "userinfo_refused",
            ApiError::SessionExpired | ApiError::ProviderSessionExpired { .. } => "session_expired",
            ApiError::ProviderUnavailable(_) => "authorization_server_error",
            ApiError::SessionTooLarge { .. } => "session_too_large",
            ApiError::UpstreamUnavailable => "upstream_unavailable",
            ApiError::ProviderNotReady(_) => "provider_unavailable",
            ApiError::NoIdToken => "no_id_token",
            ApiError::UpstreamTimeout => "upstream_timeout",
            ApiError::InsufficientScope(_) => "insufficient_scope",
            ApiError::Internal => "server_error",
            ApiError::TooManyRequests { .. } => "too_many_requests",
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'a str,
    message: String,
    /// The provider whose session is missing ([`ApiError::NoSession`]) or alone ended
    /// ([`ApiError::ProviderSessionExpired`]); a configured id, never request data.
    #[serde(skip_serializing_if = "Option::is_none")]
    provider: Option<&'a str>,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized(_)
            | ApiError::NoSession { .. }
            | ApiError::TokenExpired
            | ApiError::SessionExpired
            | ApiError::ProviderSessionExpired { .. } => StatusCode::UNAUTHORIZED,
            ApiError::InvalidRequest(_) | ApiError::AuthorizationError(_) => {
                StatusCode::BAD_REQUEST
            }
            // OIDC Core §3.1.2.6: login_required means "no session at the provider", which for the
            // SPA is the same situation as an expired session.
            ApiError::ProviderFrontChannel { code, .. } if code == "login_required" => {
                StatusCode::UNAUTHORIZED
            }
            ApiError::ProviderFrontChannel { .. } => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::ProviderUnavailable(_) | ApiError::UpstreamUnavailable => {
                StatusCode::BAD_GATEWAY
            }
            ApiError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ApiError::ProviderNotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::NoIdToken => StatusCode::NOT_FOUND,
            // Not 401: SPAs written for the OAuth Agent refresh on any 401 from userInfo.
            ApiError::UserInfoRefused | ApiError::InsufficientScope(_) => StatusCode::FORBIDDEN,
            ApiError::SessionTooLarge { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut builder = HttpResponse::build(self.status_code());
        builder.insert_header((header::CACHE_CONTROL, "no-store"));
        if let ApiError::TooManyRequests { retry_after_secs } = self {
            builder.insert_header((header::RETRY_AFTER, retry_after_secs.to_string()));
        }
        builder.json(ErrorBody {
            code: self.code(),
            message: self.to_string(),
            provider: match self {
                ApiError::NoSession { provider }
                | ApiError::ProviderSessionExpired { provider } => Some(provider),
                _ => None,
            },
        })
    }
}

/// An error response that also sets (usually clears) cookies.
pub fn error_with_cookies(error: ApiError, cookies: Vec<Cookie<'static>>) -> HttpResponse {
    let mut resp = error.error_response();
    for c in &cookies {
        if let Err(e) = resp.add_cookie(c) {
            tracing::error!(error = %e, "could not add a cookie to an error response");
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_required_is_401_other_front_channel_errors_400() {
        let e = ApiError::ProviderFrontChannel {
            code: "login_required".into(),
            description: "x".into(),
        };
        assert_eq!(e.status_code(), StatusCode::UNAUTHORIZED);
        let e = ApiError::ProviderFrontChannel {
            code: "access_denied".into(),
            description: "x".into(),
        };
        assert_eq!(e.status_code(), StatusCode::BAD_REQUEST);
        assert_eq!(e.code(), "access_denied");
    }

    #[test]
    fn too_many_requests_is_429_with_retry_after() {
        let resp = ApiError::TooManyRequests {
            retry_after_secs: 7,
        }
        .error_response();
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            resp.headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()),
            Some("7")
        );
    }

    #[actix_web::test]
    async fn a_missing_session_names_its_provider_under_the_usual_code() {
        let e = ApiError::NoSession {
            provider: "drive".into(),
        };
        assert_eq!(e.status_code(), StatusCode::UNAUTHORIZED);
        let body = actix_web::body::to_bytes(e.error_response().into_body())
            .await
            .expect("body");
        let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(json["code"], "unauthorized_request");
        assert_eq!(json["provider"], "drive");
        let other = ApiError::Unauthorized("x").error_response();
        let body = actix_web::body::to_bytes(other.into_body())
            .await
            .expect("body");
        let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert!(json.get("provider").is_none());
    }

    #[test]
    fn internal_errors_say_nothing_of_their_cause() {
        assert_eq!(ApiError::Internal.code(), "server_error");
        assert!(!ApiError::Internal.to_string().contains("panic"));
    }
}
