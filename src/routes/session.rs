//! `GET /userInfo` and `GET /claims`: what the SPA may know about the user, without tokens.

use crate::cookies::CookieKind;
use crate::error::ApiError;
use crate::oauth::http::ProviderCall;
use crate::oauth::token;
use crate::session::{AccessTokenCookie, IdTokenCookie};
use crate::state::{AppState, HttpClient};
use actix_web::{web, HttpRequest, HttpResponse};

pub async fn user_info(
    req: HttpRequest,
    state: web::Data<AppState>,
    client: web::Data<HttpClient>,
) -> Result<HttpResponse, ApiError> {
    let jar = &state.jar;
    let at: AccessTokenCookie =
        jar.open_required(&jar.read(req.headers()), CookieKind::AccessToken)?;
    if at.expires_at.is_some_and(|exp| exp <= jar.clock().now()) {
        return Err(ApiError::TokenExpired);
    }
    let provider = state.providers.for_session(&at.provider)?;
    let metadata = provider.metadata(&client.0).await?;
    let endpoint = metadata.userinfo_endpoint.as_ref().ok_or_else(|| {
        ApiError::InvalidRequest(format!(
            "the identity provider `{}` has no userinfo endpoint; configure userinfo_endpoint",
            provider.id()
        ))
    })?;
    let info = token::userinfo(&client.0, &provider.config, endpoint, &at.token)
        .await
        .map_err(|e| e.into_api_error(ProviderCall::UserInfo))?;
    Ok(HttpResponse::Ok().json(info))
}

pub async fn claims(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let jar = &state.jar;
    let cookies = jar.read(req.headers());
    // A sent ID-token cookie that cannot be opened is refused (401), never taken for "none".
    let Some(id) = jar.open::<IdTokenCookie>(&cookies, CookieKind::IdToken)? else {
        // No ID-token cookie at all: a session with a provider that issued no ID token (404
        // no_id_token, so the SPA uses userInfo), or no session (401).
        let _: AccessTokenCookie = jar.open_required(&cookies, CookieKind::AccessToken)?;
        return Err(ApiError::NoIdToken);
    };
    // The token was verified when it was received and has been sealed since: reading its
    // payload again needs no signature check.
    let claims = jsonwebtoken::dangerous::insecure_decode::<serde_json::Value>(id.token.expose())
        .map_err(|e| {
            tracing::error!(error = %e, "a sealed ID token could not be decoded");
            ApiError::Internal
        })?
        .claims;
    Ok(HttpResponse::Ok().json(claims))
}
