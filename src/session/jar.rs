//! The session jar: the one way in and out of the session cookies.
//!
//! It holds what every open and seal needs together (the cookie policy for names, paths and
//! attributes; the sealer with its key ring; the clock that says whether a sealed value has
//! expired; the session and login lifetimes), so handlers, the proxy and the refresh policy take
//! the jar rather than the whole application state, and never pair a policy with the wrong
//! sealer or "now". A request's cookies are read once ([`SessionJar::read`]) and that view is
//! passed to every open.

use super::{
    access_token_expiry, AccessTokenCookie, CsrfCookie, IdTokenCookie, LoginState, NewSession,
    Received, RefreshTokenCookie,
};
use crate::clock::Clock;
use crate::cookies::{CookieKind, CookiePolicy, RequestCookies};
use crate::crypto::{SealError, Sealer};
use crate::error::ApiError;
use actix_web::cookie::Cookie;
use actix_web::http::header::HeaderMap;
use serde::de::DeserializeOwned;
use std::time::Duration;

/// Cookie policy, sealer and clock: everything needed to open and write session cookies.
#[derive(Debug)]
pub struct SessionJar {
    policy: CookiePolicy,
    sealer: Sealer,
    clock: Clock,
    /// How long session cookies open after they were written (`cookies.session_lifetime`).
    session_lifetime: i64,
    /// How long a login in progress may take (`cookies.login_timeout`).
    login_timeout: i64,
}

impl SessionJar {
    pub fn new(
        policy: CookiePolicy,
        sealer: Sealer,
        clock: Clock,
        session_lifetime: Duration,
        login_timeout: Duration,
    ) -> Self {
        Self {
            policy,
            sealer,
            clock,
            session_lifetime: session_lifetime.as_secs() as i64,
            login_timeout: login_timeout.as_secs() as i64,
        }
    }

    /// Names, paths and attributes of the cookies.
    pub fn policy(&self) -> &CookiePolicy {
        &self.policy
    }

    /// The key ring's holder (key rotation replaces its ring).
    pub fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    /// The clock the jar checks sealed expiry with.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// How long session cookies open after they were written, in seconds.
    pub fn session_lifetime(&self) -> i64 {
        self.session_lifetime
    }

    /// Our cookies in a request, read once.
    pub fn read<'r>(&self, headers: &'r HeaderMap) -> RequestCookies<'r> {
        self.policy.read(headers)
    }

    /// Unseals this kind's cookie, reporting how it failed. `Ok(None)` when the request has
    /// none. A value split over several cookies is reassembled first and opens only whole. When
    /// a request carries several cookies of the name (another path, or one planted by a sibling
    /// subdomain), the first that opens wins; planted ones cannot open
    /// ([`RequestCookies::sealed_values`] bounds how many combinations are tried).
    pub fn unseal<T: DeserializeOwned>(
        &self,
        cookies: &RequestCookies<'_>,
        kind: CookieKind,
    ) -> Result<Option<T>, SealError> {
        let now = self.clock.now();
        let mut result = Ok(None);
        for value in cookies.sealed_values(kind) {
            let value = value.as_ref();
            match self.sealer.unseal(kind.purpose(), now, value) {
                Ok(v) => return Ok(Some(v)),
                Err(e) => {
                    crate::metrics::METRICS
                        .unseal_failures
                        .get_or_create(&crate::metrics::UnsealLabels {
                            cookie: self.policy.name(kind).to_string(),
                            reason: match e {
                                SealError::Expired => "expired",
                                _ => "invalid",
                            },
                            key_id: self
                                .sealer
                                .listed_key_id(value)
                                .unwrap_or_else(|| "unknown".into()),
                        })
                        .inc();
                    result = Err(e)
                }
            }
        }
        result
    }

    /// Opens a session cookie the request may lack: `Ok(None)` when none was sent. A cookie
    /// that was sent but cannot be opened is an error, never taken for "none": a tampered
    /// ID-token cookie is not "no ID token", and a broken refresh-token cookie is not "no refresh
    /// token". Past its sealed expiry → `session_expired`; altered, truncated, swapped or sealed
    /// with a key no longer configured → `unauthorized_request`.
    pub fn open<T: DeserializeOwned>(
        &self,
        cookies: &RequestCookies<'_>,
        kind: CookieKind,
    ) -> Result<Option<T>, ApiError> {
        match self.unseal(cookies, kind) {
            Ok(v) => Ok(v),
            Err(SealError::Expired) => Err(ApiError::SessionExpired),
            Err(_) => Err(ApiError::Unauthorized(
                "a session cookie could not be read (it was altered, or sealed with a key that is no longer configured); sign in again",
            )),
        }
    }

    /// Opens a session cookie the request cannot do without: as [`SessionJar::open`], and none
    /// sent → `unauthorized_request`.
    pub fn open_required<T: DeserializeOwned>(
        &self,
        cookies: &RequestCookies<'_>,
        kind: CookieKind,
    ) -> Result<T, ApiError> {
        self.open(cookies, kind)?.ok_or(ApiError::Unauthorized(
            "no session cookie was sent; sign in first (and send requests with credentials included)",
        ))
    }

    /// The cookie when it opens, `None` when it was not sent or cannot be opened: only for
    /// callers that must go on either way (logout clears what it cannot read; a login cookie
    /// that does not open is no login in progress).
    pub fn readable<T: DeserializeOwned>(
        &self,
        cookies: &RequestCookies<'_>,
        kind: CookieKind,
    ) -> Option<T> {
        self.unseal(cookies, kind).unwrap_or(None)
    }

    /// Seals a token response into the session cookies, each opening for `session_lifetime`.
    pub fn seal(&self, session: NewSession<'_>) -> Result<Vec<Cookie<'static>>, ApiError> {
        let now = self.clock.now();
        let until = now.saturating_add(self.session_lifetime);
        let received = session.received.unwrap_or_else(|| Received {
            at: now,
            expires_at: access_token_expiry(session.tokens, now),
        });
        let mut out = self.policy.seal(
            &self.sealer,
            CookieKind::AccessToken,
            until,
            &AccessTokenCookie {
                provider: session.provider.to_string(),
                token: session.tokens.access_token.clone(),
                expires_at: received.expires_at,
                received_at: received.at,
                sid: session.sid.clone(),
            },
        )?;
        let refresh = session
            .tokens
            .refresh_token
            .clone()
            .or(session.previous_refresh_token);
        if let Some(token) = refresh {
            out.extend(self.policy.seal(
                &self.sealer,
                CookieKind::RefreshToken,
                until,
                &RefreshTokenCookie {
                    provider: session.provider.to_string(),
                    token,
                    sub: session.sub.clone(),
                    sid: session.sid.clone(),
                },
            )?);
        }
        if let Some(id_token) = &session.tokens.id_token {
            out.extend(self.policy.seal(
                &self.sealer,
                CookieKind::IdToken,
                until,
                &IdTokenCookie {
                    provider: session.provider.to_string(),
                    token: id_token.clone(),
                    sid: session.sid.clone(),
                },
            )?);
        }
        if let Some(csrf) = session.csrf {
            out.extend(self.policy.seal(
                &self.sealer,
                CookieKind::Csrf,
                until,
                &CsrfCookie {
                    token: csrf.clone(),
                    sid: session.sid.clone(),
                },
            )?);
        }
        Ok(out)
    }

    /// Seals a login in progress, opening until `login_timeout` after it started.
    pub fn seal_login(&self, login: &LoginState) -> Result<Vec<Cookie<'static>>, ApiError> {
        let expires = login.issued_at.saturating_add(self.login_timeout);
        self.policy
            .seal(&self.sealer, CookieKind::Login, expires, login)
    }

    /// Cookies that remove this kind at every path it is written at.
    pub fn clear(&self, kind: CookieKind) -> Vec<Cookie<'static>> {
        self.policy.clear(kind)
    }

    /// Cookies that remove every token-handler cookie everywhere.
    pub fn clear_all(&self) -> Vec<Cookie<'static>> {
        self.policy.clear_all()
    }
}
