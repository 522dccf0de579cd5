//! `POST /refresh`: a refresh grant, with new cookies.

use super::session::require;
use super::{error_with_cookies, provider_of};
use crate::cookies::CookieKind;
use crate::csrf::require_csrf;
use crate::error::ApiError;
use crate::oauth::http::CallError;
use crate::oauth::token;
use crate::session::{session_cookies, NewSession, RefreshTokenCookie};
use crate::state::{AppState, HttpClient};
use actix_web::{web, HttpRequest, HttpResponse};

pub async fn refresh(
    req: HttpRequest,
    state: web::Data<AppState>,
    client: web::Data<HttpClient>,
) -> Result<HttpResponse, ApiError> {
    let csrf = require_csrf(&req, &state)?;
    let rt: RefreshTokenCookie = require(&req, &state, CookieKind::RefreshToken)?;
    let provider = provider_of(&state, &rt.provider)?;
    let metadata = provider.metadata(&client.0).await?;
    let tokens = match token::refresh(&client.0, &provider.config, &metadata, &rt.token).await {
        Ok(t) => t,
        // RFC 6749 §5.2: the refresh token is invalid, expired or revoked.
        Err(CallError::Rejected { error, .. }) if error == "invalid_grant" => {
            tracing::info!(provider = %provider.id(), "refresh token rejected; session ended");
            return Ok(error_with_cookies(
                ApiError::SessionExpired,
                state.cookies.clear_all(),
            ));
        }
        Err(CallError::Rejected { error, .. }) => {
            return Err(ApiError::AuthorizationError(format!(
                "the identity provider refused the refresh ({error})"
            )))
        }
        Err(CallError::Unavailable(m)) => return Err(ApiError::ProviderUnavailable(m)),
    };
    let now = state.clock.now();
    if let Some(id_token) = &tokens.id_token {
        provider
            .verify_id_token(
                &client.0,
                &metadata,
                id_token.expose(),
                None,
                rt.sub.as_deref(),
                now,
            )
            .await?;
    }
    let cookies = session_cookies(
        &state,
        NewSession {
            provider: provider.id(),
            tokens: &tokens,
            previous_refresh_token: Some(rt.token),
            sub: rt.sub,
            csrf: &csrf,
        },
    )?;
    let mut resp = HttpResponse::NoContent();
    for c in cookies {
        resp.cookie(c);
    }
    Ok(resp.finish())
}
