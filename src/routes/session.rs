//! `GET /userInfo` and `GET /claims`: what the SPA may know about the user, without tokens.

use crate::cookies::CookieKind;
use crate::error::ApiError;
use crate::oauth::http::CallError;
use crate::oauth::token;
use crate::session::{open_required, AccessTokenCookie, IdTokenCookie};
use crate::state::{AppState, HttpClient};
use actix_web::{web, HttpRequest, HttpResponse};

pub async fn user_info(
    req: HttpRequest,
    state: web::Data<AppState>,
    client: web::Data<HttpClient>,
) -> Result<HttpResponse, ApiError> {
    let at: AccessTokenCookie = open_required(&req, &state, CookieKind::AccessToken)?;
    if at.expires_at.is_some_and(|exp| exp <= state.clock.now()) {
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
    match token::userinfo(&client.0, &provider.config, endpoint, &at.token).await {
        Ok(info) => Ok(HttpResponse::Ok().json(info)),
        Err(CallError::Rejected { status: 401, .. }) => Err(ApiError::TokenExpired),
        Err(CallError::Rejected { error, .. }) => Err(ApiError::AuthorizationError(format!(
            "the identity provider refused the userinfo request ({error})"
        ))),
        Err(CallError::Unavailable(m)) => Err(ApiError::ProviderUnavailable(m)),
    }
}

pub async fn claims(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id: IdTokenCookie = match open_required(&req, &state, CookieKind::IdToken) {
        Ok(id) => id,
        // Signed in with a provider that issued no ID token: say so, rather than "no session".
        Err(ApiError::Unauthorized(_)) if state.cookies.has(&req, CookieKind::AccessToken) => {
            let at: Result<AccessTokenCookie, _> =
                open_required(&req, &state, CookieKind::AccessToken);
            return Err(match at {
                Ok(_) => ApiError::NoIdToken,
                Err(e) => e,
            });
        }
        Err(e) => return Err(e),
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
