//! Refresh coordination: one refresh grant per session per replica, however many requests need it.
//!
//! An SPA that fires ten API calls as its access token expires must not send ten refresh grants:
//! with rotating refresh tokens the provider accepts the first and, seeing the old token again,
//! revokes the whole grant (RFC 9700 §4.14.2), logging the user out. So requests that carry the
//! same refresh token share one in-flight grant (single flight, keyed by a hash of the token),
//! and its result is kept for [`RESULT_TTL`] so stragglers still holding the old cookie get the
//! same new tokens instead of replaying the old refresh token. A straggler never sends a
//! redeemed, rotated refresh token again, not even when the shared result has itself come due:
//! it then continues from the refresh token that result produced ([`MAX_CHAIN`] steps at most).
//!
//! A failed refresh never costs a working session: while the old access token is valid the
//! request goes on with it; only an expired access token plus a rejected refresh token ends the
//! session, and a provider that is down is a 502, not a logout.

use crate::cookies::CookieKind;
use crate::error::ApiError;
use crate::oauth::http::CallError;
use crate::oauth::token::{self, TokenResponse};
use crate::oauth::Provider;
use crate::secret::Token;
use crate::session::{
    access_token_expiry, open_optional, open_required, refresh_due, same_session, session_cookies,
    usable_until, AccessTokenCookie, CsrfCookie, NewSession, RefreshTokenCookie,
};
use crate::state::AppState;
use actix_web::cookie::Cookie;
use actix_web::HttpRequest;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

/// How long a refresh result is shared with requests that still carry the old refresh token.
pub const RESULT_TTL: Duration = Duration::from_secs(30);

/// How many shared results a request follows, each from the refresh token the previous one
/// produced, before it settles for the last (a bound, not a number ever reached in practice).
pub const MAX_CHAIN: usize = 3;

/// New tokens from a refresh grant, with the session's subject.
#[derive(Debug)]
pub struct Refreshed {
    pub tokens: TokenResponse,
    pub sub: Option<String>,
    /// Expiry of the new access token, by our clock.
    pub expires_at: Option<i64>,
    /// When the grant answered, by our clock.
    pub received_at: i64,
    /// The refresh token the session keeps: the rotated one, or the one redeemed when the
    /// provider did not rotate it.
    pub refresh_token: Token,
}

impl Refreshed {
    /// Whether the grant issued another refresh token than `redeemed` (rotation).
    fn rotated_from(&self, redeemed: &Token) -> bool {
        !self.refresh_token.ct_eq(redeemed.expose())
    }
}

/// Why a refresh produced no tokens.
#[derive(Debug, Clone)]
pub enum RefreshFailure {
    /// The provider refused the grant; `invalid_grant` means the refresh token is dead.
    Rejected(String),
    /// The provider could not be reached or answered 5xx.
    Unavailable(String),
    /// The provider answered, but with an ID token we must not accept.
    BadIdToken(String),
}

type Outcome = Result<Arc<Refreshed>, RefreshFailure>;

struct Flight {
    started: Instant,
    cell: Arc<OnceCell<Outcome>>,
}

/// The per-replica single-flight table.
#[derive(Default)]
pub struct RefreshCoordinator {
    flights: Mutex<HashMap<[u8; 32], Flight>>,
}

impl std::fmt::Debug for RefreshCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.flights.lock().map(|m| m.len()).unwrap_or(0);
        write!(f, "RefreshCoordinator({n} flights)")
    }
}

fn flight_key(provider: &str, refresh_token: &Token) -> [u8; 32] {
    Sha256::new()
        .chain_update(provider.as_bytes())
        .chain_update([0u8])
        .chain_update(refresh_token.expose().as_bytes())
        .finalize()
        .into()
}

impl RefreshCoordinator {
    /// Drops any shared result for this refresh token, so a copy of the old cookies cannot pick
    /// up tokens after the session ended (logout).
    pub fn forget(&self, provider: &str, refresh_token: &Token) {
        if let Ok(mut flights) = self.flights.lock() {
            flights.remove(&flight_key(provider, refresh_token));
        }
    }

    /// Refreshes with `rt`, joining a grant already in flight (or just finished) for the same
    /// token. Returns the outcome and whether this call used another request's grant.
    pub async fn refresh(
        &self,
        state: &AppState,
        client: &awc::Client,
        provider: &Provider,
        rt: &RefreshTokenCookie,
    ) -> (Outcome, bool) {
        let ahead = state.config.proxy.refresh_ahead.as_secs() as i64;
        let mut current = rt.clone();
        let mut shared = false;
        let mut hop = 1;
        loop {
            let (outcome, joined) = self.flight(state, client, provider, &current, ahead).await;
            shared |= joined;
            match &outcome {
                // Made for an earlier request and come due since: the refresh token it
                // replaced is spent, so go on from the one it produced.
                Ok(r)
                    if joined
                        && hop < MAX_CHAIN
                        && r.rotated_from(&current.token)
                        && refresh_due(r.expires_at, r.received_at, ahead, state.clock.now()) =>
                {
                    current.token = r.refresh_token.clone();
                    hop += 1;
                }
                _ => return (outcome, shared),
            }
        }
    }

    /// One single-flight step: the grant for `rt`, performed here or shared with the requests
    /// that carry the same token.
    async fn flight(
        &self,
        state: &AppState,
        client: &awc::Client,
        provider: &Provider,
        rt: &RefreshTokenCookie,
        ahead: i64,
    ) -> (Outcome, bool) {
        let key = flight_key(provider.id(), &rt.token);
        let now = state.clock.now();
        let cell = {
            let Ok(mut flights) = self.flights.lock() else {
                return (
                    Err(RefreshFailure::Unavailable(
                        "refresh table unavailable".into(),
                    )),
                    false,
                );
            };
            flights.retain(|_, f| f.started.elapsed() < RESULT_TTL);
            // A finished result that has come due is replaced only when its grant left the
            // refresh token valid (no rotation): redeeming it again is then safe. A rotated
            // one is kept: whoever still holds the old token must never send it again.
            let replace = flights.get(&key).is_some_and(|f| match f.cell.get() {
                Some(Ok(r)) => {
                    !r.rotated_from(&rt.token)
                        && refresh_due(r.expires_at, r.received_at, ahead, now)
                }
                Some(Err(_)) => true,
                None => false,
            });
            if replace {
                flights.remove(&key);
            }
            flights
                .entry(key)
                .or_insert_with(|| Flight {
                    started: Instant::now(),
                    cell: Arc::new(OnceCell::new()),
                })
                .cell
                .clone()
        };
        let mut performed = false;
        let outcome = cell
            .get_or_init(|| {
                performed = true;
                grant(state, client, provider, rt)
            })
            .await
            .clone();
        if outcome.is_err() {
            // Failures are shared by the requests in flight with them, never by later ones.
            if let Ok(mut flights) = self.flights.lock() {
                if flights
                    .get(&key)
                    .is_some_and(|f| Arc::ptr_eq(&f.cell, &cell))
                {
                    flights.remove(&key);
                }
            }
        }
        let label = match (&outcome, performed) {
            (_, false) => "coalesced",
            (Ok(_), true) => "ok",
            (Err(RefreshFailure::Rejected(e)), true) if e == "invalid_grant" => "invalid_grant",
            (Err(RefreshFailure::Rejected(_)), true)
            | (Err(RefreshFailure::BadIdToken(_)), true) => "rejected",
            (Err(RefreshFailure::Unavailable(_)), true) => "provider_error",
        };
        crate::metrics::METRICS
            .refreshes
            .get_or_create(&crate::metrics::OutcomeLabel { outcome: label })
            .inc();
        (outcome, !performed)
    }
}

async fn grant(
    state: &AppState,
    client: &awc::Client,
    provider: &Provider,
    rt: &RefreshTokenCookie,
) -> Outcome {
    let metadata = provider
        .metadata(client)
        .await
        .map_err(|e| RefreshFailure::Unavailable(e.to_string()))?;
    let tokens = token::refresh(client, &provider.config, &metadata, &rt.token)
        .await
        .map_err(|e| match e {
            CallError::Rejected { error, .. } => RefreshFailure::Rejected(error),
            CallError::Unavailable(m) => RefreshFailure::Unavailable(m),
        })?;
    let now = state.clock.now();
    if let Some(id_token) = &tokens.id_token {
        provider
            .verify_id_token(
                client,
                &metadata,
                id_token.expose(),
                None,
                rt.sub.as_deref(),
                now,
            )
            .await
            .map_err(|e| RefreshFailure::BadIdToken(e.to_string()))?;
    }
    tracing::info!(provider = %provider.id(), "tokens refreshed");
    Ok(Arc::new(Refreshed {
        expires_at: access_token_expiry(&tokens, now),
        received_at: now,
        refresh_token: tokens
            .refresh_token
            .clone()
            .unwrap_or_else(|| rt.token.clone()),
        tokens,
        sub: rt.sub.clone(),
    }))
}

/// A refused request, and whether the session cookies must be cleared with the refusal.
#[derive(Debug)]
pub struct Denied {
    pub error: ApiError,
    pub clear_cookies: bool,
}

impl From<ApiError> for Denied {
    fn from(error: ApiError) -> Self {
        Self {
            error,
            clear_cookies: false,
        }
    }
}

/// An access token fit to forward, and the cookies to set when it came from a refresh (empty
/// otherwise).
#[derive(Debug)]
pub struct Usable {
    pub access_token: Token,
    pub cookies: Vec<Cookie<'static>>,
    /// When this token stops being usable (Unix seconds, our clock; [`usable_until`]): what a
    /// long-lived connection opened with it must not outlive.
    pub until: i64,
}

/// The request's access token, refreshed first when it is expired or within
/// `proxy.refresh_ahead` of expiry. Shared by the proxy and the forward-auth endpoint. `csrf` is
/// the CSRF cookie when the caller checked it: every cookie opened here must belong to its
/// session.
pub async fn usable_access_token(
    req: &HttpRequest,
    state: &AppState,
    client: &awc::Client,
    csrf: Option<CsrfCookie>,
) -> Result<Usable, Denied> {
    let at: AccessTokenCookie = open_required(req, state, CookieKind::AccessToken)?;
    if let Some(csrf) = &csrf {
        same_session(&at.sid, &csrf.sid)?;
    }
    let now = state.clock.now();
    let ahead = state.config.proxy.refresh_ahead.as_secs() as i64;
    let lifetime =
        i64::try_from(state.config.cookies.session_lifetime.as_secs()).unwrap_or(i64::MAX);
    let expired = at.expires_at.is_some_and(|exp| exp <= now);
    let due = refresh_due(at.expires_at, at.received_at, ahead, now);
    let keep = |at: AccessTokenCookie| Usable {
        until: usable_until(at.expires_at, at.received_at, lifetime),
        access_token: at.token,
        cookies: Vec::new(),
    };
    if !due {
        return Ok(keep(at));
    }
    let rt: Option<RefreshTokenCookie> = open_optional(req, state, CookieKind::RefreshToken)?;
    let Some(rt) = rt else {
        return if expired {
            Err(ApiError::TokenExpired.into())
        } else {
            Ok(keep(at))
        };
    };
    same_session(&at.sid, &rt.sid)?;
    // The CSRF cookie is re-sealed with the new tokens (same value): it must be this session's.
    let csrf = match csrf {
        Some(c) => Some(c),
        None => open_optional::<CsrfCookie>(req, state, CookieKind::Csrf)?,
    };
    if let Some(csrf) = &csrf {
        same_session(&at.sid, &csrf.sid)?;
    }
    let provider = state.providers.for_session(&rt.provider)?;
    let (outcome, coalesced) = state.refresher.refresh(state, client, provider, &rt).await;
    match outcome {
        Ok(refreshed) => {
            let cookies = session_cookies(
                state,
                NewSession {
                    provider: provider.id(),
                    sid: &rt.sid,
                    tokens: &refreshed.tokens,
                    previous_refresh_token: Some(refreshed.refresh_token.clone()),
                    sub: refreshed.sub.clone(),
                    csrf: csrf.as_ref().map(|c| &c.token),
                },
            )?;
            tracing::debug!(coalesced, "request continues with refreshed tokens");
            Ok(Usable {
                access_token: refreshed.tokens.access_token.clone(),
                cookies,
                // The grant's own time: a shared result is as old as its grant, not this request.
                until: usable_until(refreshed.expires_at, refreshed.received_at, lifetime),
            })
        }
        Err(failure) if !expired => {
            tracing::warn!(
                ?failure,
                "refresh ahead of expiry failed; continuing with the current access token"
            );
            Ok(keep(at))
        }
        Err(RefreshFailure::Rejected(error)) if error == "invalid_grant" => Err(Denied {
            error: ApiError::SessionExpired,
            clear_cookies: true,
        }),
        Err(RefreshFailure::Rejected(error)) => Err(ApiError::AuthorizationError(format!(
            "the identity provider refused the refresh ({error})"
        ))
        .into()),
        Err(RefreshFailure::BadIdToken(m)) => Err(ApiError::AuthorizationError(m).into()),
        Err(RefreshFailure::Unavailable(m)) => Err(ApiError::ProviderUnavailable(m).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flight_keys_separate_providers_and_tokens() {
        let a = flight_key("a", &Token::new("rt"));
        assert_ne!(a, flight_key("b", &Token::new("rt")));
        assert_ne!(a, flight_key("a", &Token::new("rt2")));
        assert_eq!(a, flight_key("a", &Token::new("rt")));
    }
}
