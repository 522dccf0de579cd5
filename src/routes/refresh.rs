//! `POST /refresh`: a refresh grant, with new cookies.
//!
//! The refresh-token cookie is path-scoped and never sees API calls, so it cannot tell whether
//! the session went idle; the CSRF cookie, required here and sent with every call, carries the
//! idle clock, and the jar refuses it (`session_expired`, cookies cleared) once the session is
//! idle or past its absolute lifetime, before any grant: an idle session cannot be revived here.

use super::lifetime::provider_param;
use crate::cookies::CookieKind;
use crate::csrf::require_csrf;
use crate::error::{error_with_cookies, ApiError};
use crate::refresh::Denied;
use crate::session::{same_session, RefreshTokenCookie, Sealed};
use crate::state::{HttpClient, State};
use actix_web::{web, HttpRequest, HttpResponse};

pub async fn refresh(
    req: HttpRequest,
    state: State,
    client: web::Data<HttpClient>,
) -> Result<HttpResponse, ApiError> {
    // `?provider=`: which of the browser's sessions (by default, the default provider's).
    let jar = state
        .jar
        .requested(provider_param(&req)?.as_deref(), req.headers())?;
    let cookies = jar.read(req.headers());
    let csrf = require_csrf(req.headers(), &cookies, jar)?;
    let rt: RefreshTokenCookie = jar.open_required(&cookies, CookieKind::RefreshToken)?;
    same_session(&csrf.sid, &rt.sid)?;
    let provider = state.providers.for_session(&rt.provider)?;
    let (outcome, _) = state
        .refresher
        .refresh(&client.0, provider, &rt, jar.sealer())
        .await;
    let refreshed = match outcome {
        Ok(r) => r,
        Err(failure) => {
            let denied = Denied::from(failure);
            if !denied.clear_cookies {
                return Err(denied.error);
            }
            tracing::info!(provider = %provider.id(), "refresh token rejected; session ended");
            let (error, cookies) = state.jar.session_over(jar, req.headers(), denied.error);
            return Ok(error_with_cookies(error, cookies));
        }
    };
    // The session's start as its cookies tell it: a refresh never moves the absolute end.
    let times = csrf
        .times()
        .unwrap_or_default()
        .merge(rt.times().unwrap_or_default());
    let written =
        jar.seal(refreshed.session(provider.id(), &rt.sid, Some(&csrf.token), times.started_at))?;
    let mut resp = HttpResponse::NoContent();
    for c in written {
        resp.cookie(c);
    }
    Ok(resp.finish())
}
