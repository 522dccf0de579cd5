//! `GET /userInfo` and `GET /claims`: what the SPA may know about the user, without tokens.
//!
//! `/userInfo` must never send an SPA into a refresh loop. SPAs written for the OAuth Agent
//! refresh and retry when it answers `401 token_expired`, so that answer is kept for an access
//! token that is expired by its sealed expiry, or refused by the provider in the last stretch of
//! its life (clock skew). A refresh then yields a token outside that stretch, so the SPA
//! refreshes at most once. Any other refusal is `403 userinfo_refused`, or, with
//! `userinfo_source = "auto"` (the default), the ID token's claims: an access token issued for
//! an API is refused by most userinfo endpoints however often it is refreshed.

use super::lifetime::provider_param;
use crate::config::UserInfoSource;
use crate::cookies::{CookieKind, RequestCookies};
use crate::error::ApiError;
use crate::oauth::http::{CallError, ProviderCall};
use crate::oauth::id_token::LEEWAY_SECONDS;
use crate::oauth::userinfo_claims::{fill_email, lacks_email};
use crate::session::{
    refresh_due, same_session, AccessTokenCookie, IdTokenCookie, SessionId, SessionJar,
};
use crate::state::{HttpClient, State};
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{Map, Value};

pub async fn user_info(
    req: HttpRequest,
    state: State,
    client: web::Data<HttpClient>,
) -> Result<HttpResponse, ApiError> {
    // `?provider=`: which of the browser's sessions (by default, the default provider's).
    let jar = state
        .jar
        .requested(provider_param(&req)?.as_deref(), req.headers())?;
    let cookies = jar.read(req.headers());
    let at: AccessTokenCookie = jar.open_required(&cookies, CookieKind::AccessToken)?;
    let provider = state.providers.for_session(&at.provider)?;
    let source = provider.config.userinfo_source;
    if source == UserInfoSource::IdToken {
        // Like /claims, this reads only what the session holds: the access token's expiry
        // does not matter, and there is nothing to refresh.
        let claims = id_token_user_claims(jar, &cookies, &at.sid, Strictness::Refuse)?
            .ok_or(ApiError::NoIdToken)?;
        return Ok(HttpResponse::Ok().json(claims));
    }
    let now = jar.clock().now();
    if at.expires_at.is_some_and(|exp| exp <= now) {
        return Err(ApiError::TokenExpired);
    }
    let metadata = provider.metadata(&client.0).await?;
    let Some(endpoint) = metadata.userinfo_endpoint.as_ref() else {
        if source == UserInfoSource::Auto {
            if let Some(claims) = id_token_user_claims(jar, &cookies, &at.sid, Strictness::Skip)? {
                return Ok(HttpResponse::Ok().json(claims));
            }
        }
        return Err(ApiError::InvalidRequest(format!(
            "the identity provider `{}` has no userinfo endpoint; configure userinfo_endpoint",
            provider.id()
        )));
    };
    match provider.userinfo(&client.0, endpoint, &at.token).await {
        Ok(info) => {
            // Plain OAuth 2.0 providers: their own fields become the standard claims
            // (`userinfo_claims`), before `sub` is compared with an ID token's, if any.
            let mut info = provider.config.userinfo_claims.normalise(info);
            check_subject(jar, &cookies, &at.sid, &info, provider.id())?;
            // A private address (GitHub): the primary verified one, asked only for an answer
            // that is used.
            if provider.config.userinfo_emails_endpoint.is_some() && lacks_email(&info) {
                if let Some(email) = provider.primary_email(&client.0, &at.token).await {
                    fill_email(&mut info, email);
                }
            }
            Ok(HttpResponse::Ok().json(info))
        }
        // RFC 6750 §3.1: 401 invalid_token (expired, revoked, or not for this resource),
        // 403 insufficient_scope.
        Err(CallError::Rejected { status, error }) if status == 401 || status == 403 => {
            if status == 401 && refused_as_expired(&at, now) {
                return Err(ApiError::TokenExpired);
            }
            if source == UserInfoSource::Auto {
                if let Some(claims) =
                    id_token_user_claims(jar, &cookies, &at.sid, Strictness::Skip)?
                {
                    tracing::info!(provider = %provider.id(), %status, %error, "the userinfo endpoint refused an unexpired access token; answering from the ID token's claims");
                    return Ok(HttpResponse::Ok().json(claims));
                }
            }
            tracing::info!(provider = %provider.id(), %status, %error, "the userinfo endpoint refused an unexpired access token");
            Err(ApiError::UserInfoRefused)
        }
        Err(e) => Err(e.into_api_error(ProviderCall::UserInfo)),
    }
}

/// Whether the provider's 401 for this access token means it expired. The provider's clock
/// may run ahead of ours, so in the last stretch of its life (the window the proxy refreshes
/// in: [`LEEWAY_SECONDS`], but at most half the token's lifetime) a refused token counts as
/// expired. A token just received is outside that window, so after the one refresh this
/// answer asks for, a refusal is `userinfo_refused`. A token whose expiry the provider never
/// said counts as expired once it is older than the leeway: again, a fresh one does not.
fn refused_as_expired(at: &AccessTokenCookie, now: i64) -> bool {
    match at.expires_at {
        Some(_) => refresh_due(at.expires_at, at.received_at, LEEWAY_SECONDS, now),
        None => now.saturating_sub(at.received_at) >= LEEWAY_SECONDS,
    }
}

/// ID-token claims about the token rather than the user (RFC 7519 §4.1, OIDC Core §2): left
/// out when `/userInfo` answers from the ID token, so the answer has the userinfo response's
/// shape (OIDC Core §5.3.2). `/claims` returns them all.
const TOKEN_CLAIMS: [&str; 15] = [
    "iss",
    "aud",
    "exp",
    "iat",
    "nbf",
    "jti",
    "nonce",
    "at_hash",
    "c_hash",
    "s_hash",
    "azp",
    "auth_time",
    "acr",
    "amr",
    "sid",
];

/// What to do with an ID-token cookie that was sent but does not open.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Strictness {
    /// Refuse the request (401), never take it for "no ID token": where the ID token is the
    /// answer (`/claims`, `userinfo_source = "id_token"`).
    Refuse,
    /// Take it for "no ID token": where the access token authenticates the request and the ID
    /// token only adds to it (the `/userInfo` fallback and `sub` check). A `th-id` at
    /// `/userInfo` sealed with a key since dropped must not fail a session whose `th-at` the
    /// proxy has re-sealed.
    Skip,
}

/// The user's claims from the session's sealed ID token: `None` when the session has none.
fn id_token_user_claims(
    jar: &SessionJar,
    cookies: &RequestCookies<'_>,
    session: &SessionId,
    strictness: Strictness,
) -> Result<Option<Map<String, Value>>, ApiError> {
    let claims = sealed_id_token_claims(jar, cookies, Some(session), strictness)?;
    Ok(claims.map(|mut claims| {
        claims.retain(|name, _| !TOKEN_CLAIMS.contains(&name.as_str()));
        claims
    }))
}

/// The payload of the session's ID token: `None` without an ID-token cookie; one sent that
/// cannot be opened is handled per `strictness`. With `session` (the access-token cookie's),
/// an ID token of another session is refused (spliced cookies), so `/userInfo` never answers
/// with, or checks against, another user's claims.
fn sealed_id_token_claims(
    jar: &SessionJar,
    cookies: &RequestCookies<'_>,
    session: Option<&SessionId>,
    strictness: Strictness,
) -> Result<Option<Map<String, Value>>, ApiError> {
    let id = match strictness {
        Strictness::Refuse => jar.open::<IdTokenCookie>(cookies, CookieKind::IdToken)?,
        Strictness::Skip => jar.readable::<IdTokenCookie>(cookies, CookieKind::IdToken),
    };
    let Some(id) = id else {
        return Ok(None);
    };
    if let Some(sid) = session {
        same_session(sid, &id.sid)?;
    }
    // The token was verified when it was received (OIDC Core §3.1.3.7) and has been sealed
    // since: reading its payload again needs no signature check.
    jsonwebtoken::dangerous::insecure_decode::<Map<String, Value>>(id.token.expose())
        .map(|data| Some(data.claims))
        .map_err(|e| {
            tracing::error!(error = %e, "a sealed ID token could not be decoded");
            ApiError::Internal
        })
}

/// OIDC Core §5.3.2: the `sub` of a userinfo response must be the ID token's, or the
/// response must not be used (it may be another user's, substituted by an attacker).
fn check_subject(
    jar: &SessionJar,
    cookies: &RequestCookies<'_>,
    session: &SessionId,
    info: &Value,
    provider: &str,
) -> Result<(), ApiError> {
    let Some(claims) = sealed_id_token_claims(jar, cookies, Some(session), Strictness::Skip)?
    else {
        return Ok(());
    };
    if claims.get("sub") == info.get("sub") {
        return Ok(());
    }
    tracing::warn!(
        provider,
        "the userinfo response's sub is not the ID token's; not used (OIDC Core §5.3.2)"
    );
    Err(ApiError::AuthorizationError(
        "the identity provider's userinfo response is for another user than the session's ID token; the token-handler log says more".to_string(),
    ))
}

pub async fn claims(req: HttpRequest, state: State) -> Result<HttpResponse, ApiError> {
    let jar = state
        .jar
        .requested(provider_param(&req)?.as_deref(), req.headers())?;
    let cookies = jar.read(req.headers());
    let Some(claims) = sealed_id_token_claims(jar, &cookies, None, Strictness::Refuse)? else {
        // No ID-token cookie at all: a session with a provider that issued no ID token (404
        // no_id_token, so the SPA uses userInfo), or no session (401).
        let _: AccessTokenCookie = jar.open_required(&cookies, CookieKind::AccessToken)?;
        return Err(ApiError::NoIdToken);
    };
    Ok(HttpResponse::Ok().json(claims))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(expires_at: Option<i64>, received_at: i64) -> AccessTokenCookie {
        AccessTokenCookie {
            provider: "p".into(),
            token: crate::secret::Token::new("t"),
            expires_at,
            received_at,
            sid: SessionId::new(),
            started_at: None,
            active_at: None,
            sub: None,
            op_sid: None,
        }
    }

    #[test]
    fn a_refusal_means_expired_only_at_the_end_of_the_tokens_life() {
        // 300 s token: the last 60 s (leeway) count as expired.
        assert!(!refused_as_expired(&token(Some(1300), 1000), 1000));
        assert!(!refused_as_expired(&token(Some(1300), 1000), 1239));
        assert!(refused_as_expired(&token(Some(1300), 1000), 1240));
        // 8 s token: at most its second half, never when just received (no loop).
        assert!(!refused_as_expired(&token(Some(1008), 1000), 1000));
        assert!(refused_as_expired(&token(Some(1008), 1000), 1004));
        // No known expiry: older than the leeway.
        assert!(!refused_as_expired(&token(None, 1000), 1059));
        assert!(refused_as_expired(&token(None, 1000), 1060));
    }
}
