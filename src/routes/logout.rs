//! `POST /logout`: revoke, clear every cookie, and hand the SPA the provider's end-session URL.

use crate::cookies::CookieKind;
use crate::csrf::require_csrf;
use crate::error::ApiError;
use crate::session::{AccessTokenCookie, IdTokenCookie, RefreshTokenCookie};
use crate::state::{AppState, HttpClient};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;
use url::Url;

#[derive(Serialize)]
struct LogoutResponse {
    url: String,
}

pub async fn logout(
    req: HttpRequest,
    state: web::Data<AppState>,
    client: web::Data<HttpClient>,
) -> Result<HttpResponse, ApiError> {
    require_csrf(&req, &state)?;
    let now = state.clock.now();
    let rt: Option<RefreshTokenCookie> = state
        .cookies
        .open(&req, &state.sealer, CookieKind::RefreshToken, now)
        .unwrap_or(None);
    let id: Option<IdTokenCookie> = state
        .cookies
        .open(&req, &state.sealer, CookieKind::IdToken, now)
        .unwrap_or(None);
    let at: Option<AccessTokenCookie> = state
        .cookies
        .open(&req, &state.sealer, CookieKind::AccessToken, now)
        .unwrap_or(None);
    let provider_id = rt
        .as_ref()
        .map(|r| r.provider.as_str())
        .or(id.as_ref().map(|i| i.provider.as_str()))
        .or(at.as_ref().map(|a| a.provider.as_str()));
    let provider = provider_id
        .and_then(|p| state.providers.get(p))
        .unwrap_or_else(|| state.providers.default_provider());
    let metadata = provider.metadata(&client.0).await.ok();

    if let Some(rt) = &rt {
        state.refresher.forget(&rt.provider, &rt.token);
    }

    // RFC 7009: revoke the refresh token (at most providers that ends the whole grant) and the
    // access token, before the cookies are cleared. A failure is logged and does not keep the
    // user signed in.
    if let Some(endpoint) = metadata
        .as_ref()
        .and_then(|m| m.revocation_endpoint.as_ref())
    {
        let at = at.as_ref().filter(|at| at.provider == provider.id());
        let tokens = [
            rt.as_ref().map(|r| (&r.token, "refresh_token")),
            at.as_ref().map(|a| (&a.token, "access_token")),
        ];
        for (token, hint) in tokens.into_iter().flatten() {
            match crate::oauth::token::revoke(&client.0, &provider.config, endpoint, token, hint)
                .await
            {
                Ok(()) => tracing::info!(provider = %provider.id(), hint, "token revoked"),
                Err(e) => {
                    tracing::warn!(provider = %provider.id(), hint, error = %e, "token revocation failed")
                }
            }
        }
    }

    let config = &provider.config;
    let url = match metadata
        .as_ref()
        .and_then(|m| m.end_session_endpoint.as_ref())
    {
        Some(endpoint) => {
            let mut url: Url = endpoint.clone();
            {
                let mut q = url.query_pairs_mut();
                q.append_pair("client_id", &config.client_id);
                if let Some(post) = &config.post_logout_redirect_uri {
                    q.append_pair("post_logout_redirect_uri", post.as_str());
                }
                if let Some(id) = &id {
                    q.append_pair("id_token_hint", id.token.expose());
                }
            }
            url.to_string()
        }
        None => config
            .post_logout_redirect_uri
            .as_ref()
            .unwrap_or(&config.redirect_uri)
            .to_string(),
    };
    let mut resp = HttpResponse::Ok();
    for c in state.cookies.clear_all() {
        resp.cookie(c);
    }
    Ok(resp.json(LogoutResponse { url }))
}
