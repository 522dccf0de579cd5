//! `POST /logout`: revoke, clear every cookie, and hand the SPA the provider's end-session URL.
//!
//! A browser may hold sessions with several providers. `{"provider": "…"}` ends that
//! provider's session only (its tokens revoked, its cookies cleared, its end-session URL
//! returned); the others keep working, and the shared CSRF cookie stays while one of them does.
//! Without a provider (the OAuth Agent's logout), every session ends: each provider's tokens
//! are revoked and every cookie cleared; the URL is that of the session a request naming no
//! provider uses ([`SessionJar::default_for`]).

use super::JsonBody;
use crate::cookies::{CookieKind, RequestCookies};
use crate::csrf::require_csrf;
use crate::error::ApiError;
use crate::session::{
    AccessTokenCookie, CsrfCookie, IdTokenCookie, RefreshTokenCookie, SessionId, SessionJar,
};
use crate::state::{AppState, HttpClient, State};
use actix_web::http::header::HeaderMap;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use url::Url;

#[derive(Serialize)]
struct LogoutResponse {
    url: String,
}

#[derive(Deserialize)]
pub struct LogoutRequest {
    /// The provider whose session ends; every session when absent.
    #[serde(default)]
    provider: Option<String>,
}

pub async fn logout(
    req: HttpRequest,
    state: State,
    client: web::Data<HttpClient>,
    body: JsonBody<LogoutRequest>,
) -> Result<HttpResponse, ApiError> {
    // A session whose CSRF cookie is gone or can no longer be opened (altered, or its key was
    // removed) cannot prove anything, so it gets nothing from the provider; but it can always
    // be cleared, or the browser would keep sending dead cookies.
    let jar = &state.jar;
    let only = match body.0.provider.as_deref() {
        Some(id) => Some(jar.requested(Some(id), req.headers())?),
        None => None,
    };
    let cookies = jar.read(req.headers());
    let csrf = match jar.open::<CsrfCookie>(&cookies, CookieKind::Csrf) {
        Ok(Some(_)) => require_csrf(req.headers(), &cookies, jar)?,
        Ok(None) | Err(_) => {
            tracing::info!(
                "logout without a readable session: cookies cleared, no provider called"
            );
            return Ok(cleared(jar, &cookies, default_url(&state)));
        }
    };
    if let Some(provider_jar) = only {
        let url = end_session(&state, &client, provider_jar, req.headers(), &csrf.sid).await;
        // The last session ends with it: everything goes, the shared CSRF cookie included.
        if !jar.others_remain(provider_jar, req.headers()) {
            return Ok(cleared(jar, &cookies, url));
        }
        tracing::info!(provider = ?provider_jar.provider_id(), "one provider's session ended");
        let mut resp = HttpResponse::Ok();
        for c in provider_jar.clear_session() {
            resp.cookie(c);
        }
        return Ok(resp.json(LogoutResponse { url }));
    }
    // Every provider's session ends; the URL is the one of the session used by default.
    let primary = jar.default_for(req.headers());
    let mut url = None;
    for provider_jar in jar.provider_jars() {
        let sent = provider_jar
            .read(req.headers())
            .has(CookieKind::AccessToken);
        if !sent && provider_jar.provider_id() != primary.provider_id() {
            continue;
        }
        let ended = end_session(&state, &client, provider_jar, req.headers(), &csrf.sid).await;
        if provider_jar.provider_id() == primary.provider_id() {
            url = Some(ended);
        }
    }
    let url = url.unwrap_or_else(|| default_url(&state));
    Ok(cleared(jar, &cookies, url))
}

/// The URL the browser goes to after a logout without a provider to call: the default
/// provider's post-logout (or redirect) URI.
fn default_url(state: &AppState) -> String {
    let config = &state.providers.default_provider().config;
    config
        .post_logout_redirect_uri
        .as_ref()
        .unwrap_or(&config.redirect_uri)
        .to_string()
}

/// Ends the session `jar` holds (one provider's): revokes its tokens and returns the URL that
/// ends the user's session at its provider (or the post-logout URI). Clearing is the caller's.
async fn end_session(
    state: &AppState,
    client: &HttpClient,
    jar: &SessionJar,
    headers: &HeaderMap,
    sid: &SessionId,
) -> String {
    let cookies = jar.read(headers);
    // Only this session's cookies count: another session's, spliced in, is cleared but never
    // revoked nor named in the end-session URL. Unreadable ones are just cleared.
    let ours = |s: &SessionId| s == sid;
    let rt = jar
        .readable::<RefreshTokenCookie>(&cookies, CookieKind::RefreshToken)
        .filter(|c| ours(&c.sid));
    let id = jar
        .readable::<IdTokenCookie>(&cookies, CookieKind::IdToken)
        .filter(|c| ours(&c.sid));
    let at = jar
        .readable::<AccessTokenCookie>(&cookies, CookieKind::AccessToken)
        .filter(|c| ours(&c.sid));
    let provider_id = rt
        .as_ref()
        .map(|r| r.provider.as_str())
        .or(id.as_ref().map(|i| i.provider.as_str()))
        .or(at.as_ref().map(|a| &*a.provider));
    let provider = provider_id
        .or(jar.provider_id())
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
        let at = at.as_ref().filter(|at| &*at.provider == provider.id());
        let tokens = [
            rt.as_ref().map(|r| (&r.token, "refresh_token")),
            at.as_ref().map(|a| (&a.token, "access_token")),
        ];
        for (token, hint) in tokens.into_iter().flatten() {
            let _slot = provider.calls().acquire().await;
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
    match metadata
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
    }
}

/// 200 with the URL to send the browser to, clearing every cookie at every path (and the login
/// flows' cookies the request carried).
fn cleared(jar: &SessionJar, cookies: &RequestCookies<'_>, url: String) -> HttpResponse {
    let mut resp = HttpResponse::Ok();
    for c in jar.clear_all_sent(cookies) {
        resp.cookie(c);
    }
    resp.json(LogoutResponse { url })
}
