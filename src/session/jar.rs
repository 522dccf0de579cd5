//! The session jar: the one way in and out of the session cookies.
//!
//! It holds what every open and seal needs together (the cookie policy for names, paths and
//! attributes; the sealer with its key ring; the clock that says whether a sealed value has
//! expired; the session and login lifetimes), so handlers, the proxy and the refresh policy take
//! the jar rather than the whole application state, and never pair a policy with the wrong
//! sealer or "now". A request's cookies are read once ([`SessionJar::read`]) and that view is
//! passed to every open. Every open of a session cookie also checks the session's idle and
//! absolute clocks ([`super::lifetime`]), so a session past either is `session_expired` at
//! every endpoint, whichever cookie it reads.

use super::lifetime::{Ended, Lifetimes, SessionTimes};
use super::{
    access_token_expiry, AccessTokenCookie, CsrfCookie, IdTokenCookie, LoginState, NewSession,
    Received, RefreshTokenCookie, Sealed,
};
use crate::clock::Clock;
use crate::cookies::{CookieKind, CookiePolicy, RequestCookies};
use crate::crypto::{SealError, Sealer};
use crate::error::ApiError;
use actix_web::cookie::Cookie;
use actix_web::http::header::HeaderMap;
use serde::de::DeserializeOwned;
use std::time::Duration;

/// Why a session cookie did not open: the seal refused it, or its session is over.
enum Closed {
    Seal(SealError),
    Ended(Ended),
}

/// Cookie policy, sealer and clock: everything needed to open and write session cookies.
#[derive(Debug)]
pub struct SessionJar {
    policy: CookiePolicy,
    sealer: Sealer,
    clock: Clock,
    /// The idle and absolute lifetimes of sessions, and whether their cookies persist.
    lifetimes: Lifetimes,
    /// How long a login in progress may take (`cookies.login_timeout`).
    login_timeout: i64,
}

impl SessionJar {
    pub fn new(
        policy: CookiePolicy,
        sealer: Sealer,
        clock: Clock,
        lifetimes: Lifetimes,
        login_timeout: Duration,
    ) -> Self {
        Self {
            policy,
            sealer,
            clock,
            lifetimes,
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

    /// The idle and absolute lifetimes of sessions.
    pub fn lifetimes(&self) -> &Lifetimes {
        &self.lifetimes
    }

    /// Our cookies in a request, read once.
    pub fn read<'r>(&self, headers: &'r HeaderMap) -> RequestCookies<'r> {
        self.policy.read(headers)
    }

    /// Unseals this kind's cookie, reporting how it failed. `Ok(None)` when the request has
    /// none. When a request carries several cookies of the name (another path, or one planted by
    /// a sibling subdomain), the first that opens wins; planted ones cannot open.
    pub fn unseal<T: DeserializeOwned>(
        &self,
        cookies: &RequestCookies<'_>,
        kind: CookieKind,
    ) -> Result<Option<T>, SealError> {
        let now = self.clock.now();
        let mut result = Ok(None);
        for value in cookies.values(kind) {
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

    /// [`SessionJar::unseal`], then the session's clocks: a cookie that opens but whose session
    /// is past its idle or absolute lifetime is refused as [`Closed::Ended`].
    fn unseal_session<T: Sealed>(
        &self,
        cookies: &RequestCookies<'_>,
        kind: CookieKind,
    ) -> Result<Option<T>, Closed> {
        let Some(value) = self.unseal::<T>(cookies, kind).map_err(Closed::Seal)? else {
            return Ok(None);
        };
        let times = value.times().unwrap_or_default();
        match self.lifetimes.ended(times, self.clock.now()) {
            None => Ok(Some(value)),
            Some(ended) => Err(Closed::Ended(ended)),
        }
    }

    /// Opens a session cookie the request may lack: `Ok(None)` when none was sent. A cookie
    /// that was sent but cannot be opened is an error, never taken for "none": a tampered
    /// ID-token cookie is not "no ID token", and a broken refresh-token cookie is not "no refresh
    /// token". Past its sealed expiry, or its session past its idle or absolute lifetime →
    /// `session_expired` (whose answers clear every cookie); altered, truncated, swapped or
    /// sealed with a key no longer configured → `unauthorized_request`.
    pub fn open<T: Sealed>(
        &self,
        cookies: &RequestCookies<'_>,
        kind: CookieKind,
    ) -> Result<Option<T>, ApiError> {
        match self.unseal_session(cookies, kind) {
            Ok(v) => Ok(v),
            Err(closed @ (Closed::Ended(_) | Closed::Seal(SealError::Expired))) => {
                // A session cookie's sealed expiry is its session's absolute end (or, sealed by
                // an earlier release, its old lifetime); a login's is its timeout.
                let reason = match closed {
                    Closed::Ended(ended) => Some(ended),
                    _ if kind != CookieKind::Login => Some(Ended::Absolute),
                    _ => None,
                };
                if let Some(reason) = reason {
                    tracing::info!(reason = reason.label(), "session over; cookies cleared");
                    crate::metrics::METRICS
                        .sessions_expired
                        .get_or_create(&crate::metrics::ReasonLabel {
                            reason: reason.label(),
                        })
                        .inc();
                }
                Err(ApiError::SessionExpired)
            }
            Err(Closed::Seal(_)) => Err(ApiError::Unauthorized(
                "a session cookie could not be read (it was altered, or sealed with a key that is no longer configured); sign in again",
            )),
        }
    }

    /// Opens a session cookie the request cannot do without: as [`SessionJar::open`], and none
    /// sent → `unauthorized_request`.
    pub fn open_required<T: Sealed>(
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
    pub fn readable<T: Sealed>(&self, cookies: &RequestCookies<'_>, kind: CookieKind) -> Option<T> {
        self.unseal_session(cookies, kind).unwrap_or(None)
    }

    /// Seals a token response into the session cookies. Each opens until the session's absolute
    /// end (`absolute_lifetime` after `started_at`, which a refresh carries over and never
    /// moves); the access-token and CSRF cookies start the idle clock anew (a login or refresh
    /// answers a request of the user's).
    pub fn seal(&self, session: NewSession<'_>) -> Result<Vec<Cookie<'static>>, ApiError> {
        let now = self.clock.now();
        let started_at = session.started_at.unwrap_or(now);
        let until = self.lifetimes.absolute_end(started_at);
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
                started_at: Some(started_at),
                active_at: Some(now),
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
                    started_at: Some(started_at),
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
                    started_at: Some(started_at),
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
                    started_at: Some(started_at),
                    active_at: Some(now),
                },
            )?);
        }
        self.persist(&mut out, started_at, now)?;
        Ok(out)
    }

    /// Whether a request at the jar's now should renew the idle clock of the session whose
    /// cookies tell these times ([`Lifetimes::renewal_due`]).
    pub fn renewal_due(&self, times: SessionTimes) -> bool {
        self.lifetimes.renewal_due(times, self.clock.now())
    }

    /// Renews the idle clock: the access-token and CSRF cookies (the ones at `cookies.path`,
    /// sent with every call) re-sealed as they are, with `active_at` now. The session's start
    /// and absolute end do not move; a session sealed before the clocks gets its start (now).
    /// `csrf` is `None` only when the request carries no CSRF cookie; it must be the same
    /// session's as `at` (the caller checks).
    pub fn renew(
        &self,
        at: &AccessTokenCookie,
        csrf: Option<&CsrfCookie>,
    ) -> Result<Vec<Cookie<'static>>, ApiError> {
        let now = self.clock.now();
        let mut times = at.times().unwrap_or_default();
        if let Some(csrf) = csrf {
            times = times.merge(csrf.times().unwrap_or_default());
        }
        let started_at = self.lifetimes.started(times, now);
        let until = self.lifetimes.absolute_end(started_at);
        let mut out = self.policy.seal(
            &self.sealer,
            CookieKind::AccessToken,
            until,
            &AccessTokenCookie {
                provider: at.provider.clone(),
                token: at.token.clone(),
                expires_at: at.expires_at,
                received_at: at.received_at,
                sid: at.sid.clone(),
                started_at: Some(started_at),
                active_at: Some(now),
            },
        )?;
        if let Some(csrf) = csrf {
            out.extend(self.policy.seal(
                &self.sealer,
                CookieKind::Csrf,
                until,
                &CsrfCookie {
                    token: csrf.token.clone(),
                    sid: csrf.sid.clone(),
                    started_at: Some(started_at),
                    active_at: Some(now),
                },
            )?);
        }
        self.persist(&mut out, started_at, now)?;
        Ok(out)
    }

    /// With `cookies.persistent`, gives every session cookie a `Max-Age` of the absolute
    /// lifetime left, so the browser keeps it across restarts, and never longer than the session
    /// can last. Refuses, like the policy does, a cookie the attribute pushes over what browsers
    /// keep.
    fn persist(
        &self,
        cookies: &mut [Cookie<'static>],
        started_at: i64,
        now: i64,
    ) -> Result<(), ApiError> {
        let Some(max_age) = self.lifetimes.max_age(started_at, now) else {
            return Ok(());
        };
        for c in cookies.iter_mut() {
            c.set_max_age(actix_web::cookie::time::Duration::seconds(max_age));
            let size = c.to_string().len();
            if size > crate::cookies::MAX_COOKIE_BYTES {
                tracing::error!(cookie = %c.name(), size, "cookie too large for browsers");
                return Err(ApiError::CookieTooLarge {
                    name: c.name().to_string(),
                    size,
                    limit: crate::cookies::MAX_COOKIE_BYTES,
                });
            }
        }
        Ok(())
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
