//! What the sealed cookies contain, and how a token response becomes session cookies.
//!
//! Each cookie names the provider that issued its token, so refresh, userinfo and logout always
//! talk to that provider, and carries the session's id, so cookies of two sessions cannot be
//! combined: A's access token with B's CSRF cookie and B's CSRF value would otherwise pass every
//! check ([`same_session`]). The access-token cookie carries the token's own expiry, so expiry is
//! known without calling anyone. Every session cookie also carries the session's clocks
//! ([`lifetime`]): when it started (all of them) and when it was last active (the access-token
//! and CSRF cookies); the jar refuses any cookie whose session is over.

mod jar;
pub mod lifetime;

pub use jar::{LoginLookup, SessionJar};
pub use lifetime::{Ended, Lifetimes, SessionEnd, SessionTimes};

use crate::crypto::Opens;
use crate::error::ApiError;
use crate::oauth::id_token::StepUp;
use crate::oauth::token::TokenResponse;
use crate::secret::Token;
use serde::{Deserialize, Serialize};

/// A payload the jar seals, and the session clocks it carries: the jar checks them on every
/// open, so no handler can forget to.
pub trait Sealed: Opens {
    /// The session's times as this cookie tells them; `None` for a cookie that is not part of
    /// a session (a login in progress).
    fn times(&self) -> Option<SessionTimes> {
        None
    }

    /// The provider whose session this cookie holds, checked against the name it came under
    /// (a jar per provider); `None` for cookies every provider's session shares (CSRF).
    fn provider(&self) -> Option<&str> {
        None
    }

    /// The session this cookie belongs to; `None` for a login in progress.
    fn sid(&self) -> Option<&SessionId> {
        None
    }
}

impl Sealed for LoginState {}

/// A login in progress: one cookie per flow, `-login-<flow id>` (named from its state,
/// [`crate::cookies::login_flow_id`]), so logins started in several tabs do not overwrite each
/// other. Logins started before per-flow cookies used the single name `-login`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginState {
    pub provider: String,
    pub state: Token,
    pub nonce: Token,
    pub verifier: Token,
    pub issued_at: i64,
    /// The operator's `acr_values` and `max_age` sent with this login, checked on its ID token
    /// at `login/end` (OIDC Core §3.1.3.7). Sealed here so a configuration reload between start
    /// and end cannot change what is enforced; absent in logins started before it existed.
    #[serde(default)]
    pub step_up: StepUp,
    /// Where a server-side login (`GET /login`) returns the browser: one of `web.return_to`,
    /// checked when the login started and again at the callback. `None` for SPA logins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_to: Option<String>,
}

/// The access token (`-at`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessTokenCookie {
    /// Shared text, like [`SessionId`] and the ID token's `sub` and `sid` below: this value is
    /// copied out of the values kept opened on every proxied call (issue 17).
    pub provider: std::sync::Arc<str>,
    pub token: Token,
    /// Unix seconds; `None` when the provider gave neither `expires_in` nor a JWT `exp`.
    pub expires_at: Option<i64>,
    /// When we received the token (Unix seconds, our clock): with `expires_at`, its lifetime,
    /// which bounds how early it is refreshed ([`refresh_due`]).
    pub received_at: i64,
    /// The session's id ([`SessionId`]).
    pub sid: SessionId,
    /// When the session started (login; Unix seconds, our clock). `None` in cookies sealed
    /// before the clocks existed ([`lifetime`]).
    #[serde(default)]
    pub started_at: Option<i64>,
    /// When the idle clock was last renewed (Unix seconds, our clock).
    #[serde(default)]
    pub active_at: Option<i64>,
    /// The ID token's `sub` and `sid` ([`NewSession::op_sid`]): which user and which session
    /// at the provider, so a back-channel logout or `sessions revoke` can end this session.
    /// `None` in cookies sealed before they existed (such sessions cannot be ended that way).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<std::sync::Arc<str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op_sid: Option<std::sync::Arc<str>>,
}

impl Sealed for AccessTokenCookie {
    fn provider(&self) -> Option<&str> {
        Some(&self.provider)
    }

    fn sid(&self) -> Option<&SessionId> {
        Some(&self.sid)
    }

    fn times(&self) -> Option<SessionTimes> {
        Some(SessionTimes {
            started_at: self.started_at,
            active_at: self.active_at,
        })
    }
}

/// Whether a token received at `received_at` and expiring at `expires_at` should be refreshed
/// now: within `ahead` of its expiry, but never before half its lifetime has passed, so a token
/// that lives less than `2 × ahead` (5 s tokens with the default 60 s) is not refreshed on every
/// call. A token without an expiry is never due.
pub fn refresh_due(expires_at: Option<i64>, received_at: i64, ahead: i64, now: i64) -> bool {
    let Some(exp) = expires_at else {
        return false;
    };
    let half_life = exp.saturating_sub(received_at).max(0) / 2;
    exp.saturating_sub(ahead.min(half_life)) <= now
}

/// The last moment (Unix seconds, our clock) a connection authenticated with an access token
/// may stay open without presenting the cookies again: the token's expiry, and never later than
/// the end of its session as known at the handshake ([`SessionEnd::expires_at`]), after which no
/// request with those cookies would be served either. A token without a known expiry lasts as
/// long as its session. Used by WebSocket connections, which cannot be refreshed in place.
pub fn usable_until(expires_at: Option<i64>, session_ends: i64) -> i64 {
    expires_at.map_or(session_ends, |exp| exp.min(session_ends))
}

/// The refresh token (`-auth`), with the session's subject so a refreshed ID token can be
/// checked against it (OIDC Core §12.2).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefreshTokenCookie {
    pub provider: String,
    pub token: Token,
    pub sub: Option<String>,
    /// The session's id ([`SessionId`]).
    pub sid: SessionId,
    /// When the session started ([`AccessTokenCookie::started_at`]). This cookie is sent only
    /// to the refresh and logout endpoints (and API paths), so it carries no idle clock.
    #[serde(default)]
    pub started_at: Option<i64>,
    /// The provider's session id ([`AccessTokenCookie::op_sid`]), carried over by refreshes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op_sid: Option<String>,
}

impl Sealed for RefreshTokenCookie {
    fn provider(&self) -> Option<&str> {
        Some(&self.provider)
    }

    fn sid(&self) -> Option<&SessionId> {
        Some(&self.sid)
    }

    fn times(&self) -> Option<SessionTimes> {
        Some(SessionTimes {
            started_at: self.started_at,
            active_at: None,
        })
    }
}

/// The ID token (`-id`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdTokenCookie {
    pub provider: String,
    pub token: Token,
    /// The session's id ([`SessionId`]).
    pub sid: SessionId,
    /// When the session started ([`AccessTokenCookie::started_at`]).
    #[serde(default)]
    pub started_at: Option<i64>,
}

impl Sealed for IdTokenCookie {
    fn provider(&self) -> Option<&str> {
        Some(&self.provider)
    }

    fn sid(&self) -> Option<&SessionId> {
        Some(&self.sid)
    }

    fn times(&self) -> Option<SessionTimes> {
        Some(SessionTimes {
            started_at: self.started_at,
            active_at: None,
        })
    }
}

/// The CSRF value (`-csrf`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CsrfCookie {
    pub token: Token,
    /// The session's id ([`SessionId`]).
    pub sid: SessionId,
    /// When the session started ([`AccessTokenCookie::started_at`]).
    #[serde(default)]
    pub started_at: Option<i64>,
    /// When the idle clock was last renewed: `/refresh`, which does not get the access-token
    /// cookie's company of API calls but always needs this one, checks it before any grant.
    #[serde(default)]
    pub active_at: Option<i64>,
}

impl Sealed for CsrfCookie {
    fn sid(&self) -> Option<&SessionId> {
        Some(&self.sid)
    }

    fn times(&self) -> Option<SessionTimes> {
        Some(SessionTimes {
            started_at: self.started_at,
            active_at: self.active_at,
        })
    }
}

/// A session's id: random at login, kept across refreshes, sealed into every cookie of the
/// session. Not a secret (it is only ever inside sealed cookies, and knowing it grants nothing);
/// it tells which cookies belong together.
///
/// Shared text (`Arc<str>`): the id travels in every value a proxied request opens, and the
/// value kept opened is copied out on every call (issue 17).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionId(std::sync::Arc<str>);

impl SessionId {
    /// A fresh id for a new login (256 random bits).
    pub fn new() -> Self {
        Self(crate::secret::random_token().expose().into())
    }
}

impl Default for SessionId {
    fn default() -> Self {
        Self::new()
    }
}

/// Refuses cookies of two different sessions in one request (spliced cookies).
pub fn same_session(a: &SessionId, b: &SessionId) -> Result<(), ApiError> {
    if a == b {
        return Ok(());
    }
    tracing::warn!("a request combined cookies of two sessions; refused");
    Err(ApiError::Unauthorized(
        "the request's cookies belong to different sessions; sign in again",
    ))
}

/// The access token's expiry: `expires_in` when given, else the JWT's `exp` when the token is
/// a JWT. The token was just received from the provider over TLS; its signature is the
/// resource server's business, we only read when to refresh it.
pub fn access_token_expiry(tokens: &TokenResponse, now: i64) -> Option<i64> {
    if let Some(seconds) = tokens.expires_in {
        return Some(now.saturating_add(seconds.max(0)));
    }
    #[derive(Deserialize)]
    struct Exp {
        exp: i64,
    }
    jsonwebtoken::dangerous::insecure_decode::<Exp>(tokens.access_token.expose())
        .ok()
        .map(|t| t.claims.exp)
}

/// Everything a successful code exchange or refresh writes.
pub struct NewSession<'a> {
    pub provider: &'a str,
    /// The session's id: new at login, the old one at a refresh.
    pub sid: &'a SessionId,
    pub tokens: &'a TokenResponse,
    /// Kept when the provider did not rotate the refresh token.
    pub previous_refresh_token: Option<Token>,
    pub sub: Option<String>,
    /// The ID token's `sid` at login (OIDC Back-Channel Logout 1.0 §2.1), kept by refreshes.
    pub op_sid: Option<String>,
    /// The CSRF value to (re)seal; `None` leaves the `-csrf` cookie as it is.
    pub csrf: Option<&'a Token>,
    /// When the tokens were received and when the access token expires, by our clock; `None`
    /// for tokens received just now. A refresh result shared with later requests (single
    /// flight) is as old as its grant: sealing it with the time of the request that picks it up
    /// would let the cookie claim the access token lives longer than it does.
    pub received: Option<Received>,
    /// When the session started: `None` for a new login (or a session sealed before the clocks
    /// existed), which starts now. Never moved by a refresh.
    pub started_at: Option<i64>,
}

/// When a token response was received (Unix seconds, our clock) and the access-token expiry
/// computed then ([`access_token_expiry`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    pub at: i64,
    pub expires_at: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_is_due_ahead_of_expiry_but_not_before_half_the_lifetime() {
        // A 300 s token, 60 s ahead: due from 240 s on.
        assert!(!refresh_due(Some(1300), 1000, 60, 1239));
        assert!(refresh_due(Some(1300), 1000, 60, 1240));
        // A 5 s token with 60 s ahead: due at half its life, not at once.
        assert!(!refresh_due(Some(1005), 1000, 60, 1000));
        assert!(!refresh_due(Some(1005), 1000, 60, 1002));
        assert!(refresh_due(Some(1005), 1000, 60, 1003));
        // No expiry: never; extreme values: no overflow.
        assert!(!refresh_due(None, 1000, 60, i64::MAX));
        assert!(!refresh_due(Some(i64::MAX), i64::MIN, 60, 0));
        assert!(refresh_due(Some(i64::MIN), i64::MAX, i64::MAX, 0));
    }

    #[test]
    fn a_token_is_usable_until_its_expiry_or_the_end_of_its_session() {
        // A 300 s token in a session that ends later: its expiry.
        assert_eq!(usable_until(Some(1300), 44_200), 1300);
        // A token that outlives its session, or one without expiry: the session's end.
        assert_eq!(usable_until(Some(1000 + 86_400), 44_200), 44_200);
        assert_eq!(usable_until(None, 44_200), 44_200);
        assert_eq!(usable_until(Some(i64::MAX), i64::MAX), i64::MAX);
    }

    /// Cookies sealed by the release before the session clocks still open (rolling upgrades),
    /// without times.
    #[test]
    fn cookies_sealed_before_the_clocks_still_open() {
        let at: AccessTokenCookie = serde_json::from_value(serde_json::json!({
            "provider": "p", "token": "t", "expires_at": 5, "received_at": 1, "sid": "s"
        }))
        .expect("old access-token cookie");
        assert_eq!(at.times(), Some(SessionTimes::default()));
        let csrf: CsrfCookie =
            serde_json::from_value(serde_json::json!({"token": "c", "sid": "s"})).expect("csrf");
        assert_eq!(csrf.times(), Some(SessionTimes::default()));
        let rt: RefreshTokenCookie = serde_json::from_value(serde_json::json!({
            "provider": "p", "token": "r", "sub": null, "sid": "s"
        }))
        .expect("refresh-token cookie");
        assert_eq!(rt.started_at, None);
    }
}
