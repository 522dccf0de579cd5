//! `POST <base_path>/backchannel-logout` (OpenID Connect Back-Channel Logout 1.0), and the
//! operator's `POST /sessions/revoke` on the admin listener (`[store] admin_listen`).
//!
//! The provider calls the first, server to server, when a user signs out there: no browser, no
//! Origin, no cookies, so it is mounted outside the agent's Origin and CSRF rules, and all trust
//! is in the Logout Token ([`crate::oauth::logout_token`]). It answers as §2.8 says: 200 with
//! `Cache-Control: no-store`, or 400 with an OAuth 2.0 error body (`{"error":"invalid_request",
//! "error_description":…}`): this endpoint answers the provider, not the SPA, so it speaks the
//! provider's format rather than the agent's `{code, message}`.
//!
//! Ending a session needs the shared list ([`crate::store::ended`]): stateless cookies cannot be
//! recalled. Without `[store]` the endpoint answers 501 Not Implemented, so the provider's log
//! (and its admin console) says plainly that this relying party cannot honour back-channel
//! logout, rather than a 200 that would claim sessions ended that go on.

use crate::error::ApiError;
use crate::oauth::logout_token::{UnverifiedIssuer, JTI_RETENTION_SECONDS};
use crate::state::{HttpClient, State};
use crate::store::ended::{jti_key, MarkStore};
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Largest form body read: a logout token is a signed JWT of a few hundred bytes.
const MAX_BODY: usize = 16 * 1024;

/// An OAuth 2.0 error body (RFC 6749 §5.2), as §2.8 asks.
#[derive(Serialize)]
struct OAuthError<'a> {
    error: &'a str,
    error_description: &'a str,
}

fn answer(status: StatusCode, error: &str, description: &str) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(OAuthError {
            error,
            error_description: description,
        })
}

/// §2.8: the logout request was invalid or the logout failed. The reason is logged; the body
/// says only what the provider can act on.
fn refused(description: &str) -> HttpResponse {
    answer(StatusCode::BAD_REQUEST, "invalid_request", description)
}

/// Mounts the endpoint (before the agent scope, whose Origin rules it must not get).
pub fn configure(base_path: &str) -> impl FnOnce(&mut web::ServiceConfig) + '_ {
    move |cfg| {
        cfg.service(
            web::resource(format!("{base_path}/backchannel-logout"))
                .route(web::post().to(backchannel_logout))
                .default_service(web::to(|| async {
                    let mut resp = HttpResponse::MethodNotAllowed();
                    resp.insert_header((header::ALLOW, "POST"));
                    resp.insert_header((header::CACHE_CONTROL, "no-store"));
                    resp.json(OAuthError {
                        error: "invalid_request",
                        error_description: "the back-channel logout endpoint accepts POST only",
                    })
                })),
        );
    }
}

/// `POST <base_path>/backchannel-logout`, form-encoded `logout_token` (§2.5).
pub async fn backchannel_logout(
    req: HttpRequest,
    body: web::Bytes,
    state: State,
    client: web::Data<HttpClient>,
) -> HttpResponse {
    let Some((store, ended)) = state.ended_sessions() else {
        tracing::warn!("a back-channel logout arrived, but no [store] is configured: answered 501 (stateless cookies cannot be ended; docs/security.md)");
        return answer(
            StatusCode::NOT_IMPLEMENTED,
            "invalid_request",
            "this relying party keeps no session state ([store] is not configured), so it cannot end sessions by back-channel logout",
        );
    };
    let form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';').next().is_some_and(|t| {
                t.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            })
        });
    if !form || body.len() > MAX_BODY {
        return refused("send logout_token form-encoded (application/x-www-form-urlencoded)");
    }
    let tokens: Vec<String> = url::form_urlencoded::parse(&body)
        .filter(|(k, _)| k == "logout_token")
        .map(|(_, v)| v.into_owned())
        .collect();
    let [token] = tokens.as_slice() else {
        return refused("exactly one logout_token is required");
    };
    // Which provider: the one whose discovered issuer the token names, with our client id
    // among its audiences. Only a choice of keys: the token is verified next.
    let Some(peek) = UnverifiedIssuer::peek(token) else {
        tracing::warn!(
            "back-channel logout refused: the logout token is not a JWT with iss and aud"
        );
        return refused("the logout token is not valid");
    };
    let now = state.clock.now();
    let mut verified = None;
    for provider in state.providers.iter() {
        let Ok(metadata) = provider.metadata(&client.0).await else {
            continue;
        };
        if !provider.may_have_issued(&metadata, &peek.iss, &peek.aud) {
            continue;
        }
        match provider
            .verify_logout_token(&client.0, &metadata, token, now)
            .await
        {
            Ok(claims) => {
                verified = Some((provider.id().to_string(), claims));
                break;
            }
            Err(reason) => {
                tracing::warn!(provider = %provider.id(), %reason, "back-channel logout refused");
                return refused("the logout token is not valid");
            }
        }
    }
    let Some((provider, claims)) = verified else {
        tracing::warn!("back-channel logout refused: no configured provider has the token's issuer and audience");
        return refused("the logout token is not valid");
    };
    // §2.6: the jti must not have been used before, by this replica or any other.
    if let Err(e) = ended.jtis.first_use(&claims, now) {
        tracing::warn!(provider = %provider, reason = %e, "back-channel logout refused");
        return refused("the logout token was already used");
    }
    let jti = jti_key(&claims.iss, &claims.jti);
    let retention = Duration::from_secs(JTI_RETENTION_SECONDS.unsigned_abs());
    match store.set_new(&jti, retention).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(provider = %provider, "back-channel logout refused: the logout token's jti was already used (a replay)");
            return refused("the logout token was already used");
        }
        Err(reason) => {
            tracing::error!(provider = %provider, %reason, "back-channel logout failed: the store did not answer");
            return refused(
                "the logout could not be recorded; the relying party's store is unavailable",
            );
        }
    }
    // §2.7: with a sid, that session at the provider; with only a sub, all of the user's.
    let marked = match (&claims.sid, &claims.sub) {
        (Some(sid), _) => ended.end_sid(store, &provider, sid, now).await,
        (None, Some(sub)) => ended.end_sub(store, &provider, sub, now).await,
        (None, None) => Ok(()),
    };
    if let Err(reason) = marked {
        // Let the provider retry with the same token.
        let _ = store.delete(&jti).await;
        tracing::error!(provider = %provider, %reason, "back-channel logout failed: the store did not answer");
        return refused(
            "the logout could not be recorded; the relying party's store is unavailable",
        );
    }
    tracing::info!(
        provider = %provider,
        by = if claims.sid.is_some() { "sid" } else { "sub" },
        "back-channel logout: session ended"
    );
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}

/// `POST /sessions/revoke` on the admin listener: `{"provider": "…", "sub": "…"}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    pub provider: String,
    pub sub: String,
}

#[derive(Serialize)]
struct Revoked<'a> {
    provider: &'a str,
    revoked: bool,
}

/// Ends every session of a user at a provider, on every replica: what `token-handler sessions
/// revoke` does, for automation (an account disabled, a device stolen). The admin listener is
/// for the operator's network only; it has no other authentication.
pub async fn revoke(
    state: State,
    body: super::JsonBody<RevokeRequest>,
) -> Result<HttpResponse, ApiError> {
    let (store, ended) = state.ended_sessions().ok_or(ApiError::NotFound)?;
    let RevokeRequest { provider, sub } = body.0;
    if state.providers.get(&provider).is_none() {
        return Err(ApiError::InvalidRequest(format!(
            "no provider `{provider}` is configured"
        )));
    }
    if sub.is_empty() {
        return Err(ApiError::InvalidRequest("sub must not be empty".into()));
    }
    ended
        .end_sub(store, &provider, &sub, state.clock.now())
        .await
        .map_err(|reason| {
            tracing::error!(%reason, "sessions revoke failed: the store did not answer");
            ApiError::Internal
        })?;
    tracing::info!(provider = %provider, "sessions revoked for a user");
    Ok(HttpResponse::Ok().json(Revoked {
        provider: &provider,
        revoked: true,
    }))
}
