//! What the sealed cookies contain, and how a token response becomes session cookies.
//!
//! Each cookie names the provider that issued its token, so refresh, userinfo and logout always
//! talk to that provider. The access-token cookie carries the token's own expiry, so expiry is
//! known without calling anyone; the cookie itself opens for `session_lifetime` after it was
//! written, which lets an expired access token still be refreshed.

use crate::cookies::CookieKind;
use crate::crypto::SealError;
use crate::error::ApiError;
use crate::oauth::id_token::StepUp;
use crate::oauth::token::TokenResponse;
use crate::secret::Token;
use crate::state::AppState;
use actix_web::cookie::Cookie;
use actix_web::HttpRequest;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A login in progress (`-login`).
#[derive(Debug, Serialize, Deserialize)]
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
}

/// The access token (`-at`).
#[derive(Debug, Serialize, Deserialize)]
pub struct AccessTokenCookie {
    pub provider: String,
    pub token: Token,
    /// Unix seconds; `None` when the provider gave neither `expires_in` nor a JWT `exp`.
    pub expires_at: Option<i64>,
}

/// The refresh token (`-auth`), with the session's subject so a refreshed ID token can be
/// checked against it (OIDC Core §12.2).
#[derive(Debug, Serialize, Deserialize)]
pub struct RefreshTokenCookie {
    pub provider: String,
    pub token: Token,
    pub sub: Option<String>,
}

/// The ID token (`-id`).
#[derive(Debug, Serialize, Deserialize)]
pub struct IdTokenCookie {
    pub provider: String,
    pub token: Token,
}

/// The CSRF value (`-csrf`).
#[derive(Debug, Serialize, Deserialize)]
pub struct CsrfCookie {
    pub token: Token,
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
    pub tokens: &'a TokenResponse,
    /// Kept when the provider did not rotate the refresh token.
    pub previous_refresh_token: Option<Token>,
    pub sub: Option<String>,
    /// The CSRF value to (re)seal; `None` leaves the `-csrf` cookie as it is.
    pub csrf: Option<&'a Token>,
}

/// Seals a token response into the session cookies.
pub fn session_cookies(
    state: &AppState,
    session: NewSession<'_>,
) -> Result<Vec<Cookie<'static>>, ApiError> {
    let now = state.clock.now();
    let until = now.saturating_add(state.config.cookies.session_lifetime.as_secs() as i64);
    let policy = &state.cookies;
    let sealer = &state.sealer;
    let mut out = policy.seal(
        sealer,
        CookieKind::AccessToken,
        until,
        &AccessTokenCookie {
            provider: session.provider.to_string(),
            token: session.tokens.access_token.clone(),
            expires_at: access_token_expiry(session.tokens, now),
        },
    )?;
    let refresh = session
        .tokens
        .refresh_token
        .clone()
        .or(session.previous_refresh_token);
    if let Some(token) = refresh {
        out.extend(policy.seal(
            sealer,
            CookieKind::RefreshToken,
            until,
            &RefreshTokenCookie {
                provider: session.provider.to_string(),
                token,
                sub: session.sub.clone(),
            },
        )?);
    }
    if let Some(id_token) = &session.tokens.id_token {
        out.extend(policy.seal(
            sealer,
            CookieKind::IdToken,
            until,
            &IdTokenCookie {
                provider: session.provider.to_string(),
                token: id_token.clone(),
            },
        )?);
    }
    if let Some(csrf) = session.csrf {
        out.extend(policy.seal(
            sealer,
            CookieKind::Csrf,
            until,
            &CsrfCookie {
                token: csrf.clone(),
            },
        )?);
    }
    Ok(out)
}

/// Opens a session cookie the request cannot do without, mapping each failure to its documented
/// error: none sent or unreadable → `unauthorized_request`, past its sealed expiry →
/// `session_expired`.
pub fn open_required<T: DeserializeOwned>(
    req: &HttpRequest,
    state: &AppState,
    kind: CookieKind,
) -> Result<T, ApiError> {
    match state
        .cookies
        .open(req, &state.sealer, kind, state.clock.now())
    {
        Ok(Some(v)) => Ok(v),
        Ok(None) => Err(ApiError::Unauthorized(
            "no session cookie was sent; sign in first (and send requests with credentials included)",
        )),
        Err(SealError::Expired) => Err(ApiError::SessionExpired),
        Err(_) => Err(ApiError::Unauthorized(
            "the session cookie could not be read (it was altered, or sealed with a key that is no longer configured); sign in again",
        )),
    }
}
