//! `POST /refresh`: a refresh grant, with new cookies.

use crate::cookies::CookieKind;
use crate::csrf::require_csrf;
use crate::error::error_with_cookies;
use crate::error::ApiError;
use crate::refresh::RefreshFailure;
use crate::session::{same_session, RefreshTokenCookie};
use crate::state::{AppState, HttpClient};
use actix_web::{web, HttpRequest, HttpResponse};

pub async fn refresh(
    req: HttpRequest,
    state: web::Data<AppState>,
    client: web::Data<HttpClient>,
) -> Result<HttpResponse, ApiError> {
    let jar = &state.jar;
    let cookies = jar.read(req.headers());
    let csrf = require_csrf(req.headers(), &cookies, jar)?;
    let rt: RefreshTokenCookie = jar.open_required(&cookies, CookieKind::RefreshToken)?;
    same_session(&csrf.sid, &rt.sid)?;
    let provider = state.providers.for_session(&rt.provider)?;
    let (outcome, _) = state.refresher.refresh(&client.0, provider, &rt).await;
    let refreshed = match outcome {
        Ok(r) => r,
        // RFC 6749 §5.2: the refresh token is invalid, expired or revoked.
        Err(RefreshFailure::Rejected(error)) if error == "invalid_grant" => {
            tracing::info!(provider = %provider.id(), "refresh token rejected; session ended");
            return Ok(error_with_cookies(
                ApiError::SessionExpired,
                jar.clear_all(),
            ));
        }
        Err(RefreshFailure::Rejected(error)) => {
            return Err(ApiError::AuthorizationError(format!(
                "the identity provider refused the refresh ({error})"
            )))
        }
        Err(RefreshFailure::BadIdToken(m)) => return Err(ApiError::AuthorizationError(m)),
        Err(RefreshFailure::Unavailable(m)) => return Err(ApiError::ProviderUnavailable(m)),
    };
    let written = jar.seal(refreshed.session(provider.id(), &rt.sid, Some(&csrf.token)))?;
    let mut resp = HttpResponse::NoContent();
    for c in written {
        resp.cookie(c);
    }
    Ok(resp.finish())
}
