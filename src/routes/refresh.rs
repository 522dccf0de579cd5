//! `POST /refresh`: a refresh grant, with new cookies.

use crate::cookies::CookieKind;
use crate::csrf::require_csrf;
use crate::error::{error_with_cookies, ApiError};
use crate::refresh::Denied;
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
        Err(failure) => {
            let denied = Denied::from(failure);
            if !denied.clear_cookies {
                return Err(denied.error);
            }
            tracing::info!(provider = %provider.id(), "refresh token rejected; session ended");
            return Ok(error_with_cookies(denied.error, jar.clear_all()));
        }
    };
    let written = jar.seal(refreshed.session(provider.id(), &rt.sid, Some(&csrf.token)))?;
    let mut resp = HttpResponse::NoContent();
    for c in written {
        resp.cookie(c);
    }
    Ok(resp.finish())
}
