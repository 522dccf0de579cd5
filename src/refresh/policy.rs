//! When a request's access token may be forwarded, and when it must be refreshed first.
//!
//! A failed refresh never costs a working session: while the old access token is valid the
//! request goes on with it; only an expired access token plus a rejected refresh token ends the
//! session, and a provider that is down is a 502, not a logout. Every cookie opened here must
//! belong to one session ([`same_session`]).

use super::{RefreshFailure, Refresher};
use crate::cookies::{CookieKind, RequestCookies};
use crate::error::ApiError;
use crate::oauth::http::ProviderCall;
use crate::oauth::Providers;
use crate::secret::Token;
use crate::session::{
    same_session, usable_until, AccessTokenCookie, CsrfCookie, RefreshTokenCookie, Sealed,
    SessionId, SessionJar, SessionTimes,
};
use actix_web::cookie::Cookie;
use tracing::Instrument;

/// Where a request's access token comes from: its cookies (the jar), the refresh grant shared
/// with other requests (the refresher), and the provider that issued it.
#[derive(Clone, Copy, Debug)]
pub struct TokenSource<'a> {
    pub jar: &'a SessionJar,
    pub refresher: &'a Refresher,
    pub providers: &'a Providers,
}

/// A refused request, and whether the session cookies must be cleared with the refusal.
#[derive(Debug)]
pub struct Denied {
    pub error: ApiError,
    pub clear_cookies: bool,
}

/// A refusal clears the cookies exactly when the session is over (`session_expired`: past its
/// idle or absolute lifetime, or its refresh token dead): the browser would otherwise keep
/// sending cookies that can never work again.
impl From<ApiError> for Denied {
    fn from(error: ApiError) -> Self {
        Self {
            clear_cookies: matches!(error, ApiError::SessionExpired),
            error,
        }
    }
}

/// What a failed refresh costs the request, decided here once for the proxy, forward auth and
/// `POST /refresh`: a dead refresh token ends the session (its cookies are cleared), any other
/// refusal or a bad ID token is `authorization_error`, an unreachable provider a 502.
impl From<RefreshFailure> for Denied {
    fn from(failure: RefreshFailure) -> Self {
        let error = match failure {
            // RFC 6749 §5.2: the refresh token is invalid, expired or revoked.
            f if f.ends_session() => {
                return Self {
                    error: ApiError::SessionExpired,
                    clear_cookies: true,
                }
            }
            RefreshFailure::Rejected(error) => {
                ApiError::AuthorizationError(ProviderCall::Refresh.refused(&error))
            }
            RefreshFailure::BadIdToken(m) => ApiError::AuthorizationError(m),
            RefreshFailure::Unavailable(m) => ApiError::ProviderUnavailable(m),
        };
        error.into()
    }
}

/// An access token fit to forward, and the cookies to set when it came from a refresh or the
/// idle clock was renewed (empty otherwise).
#[derive(Debug)]
pub struct Usable {
    pub access_token: Token,
    pub cookies: Vec<Cookie<'static>>,
    /// When this token stops being usable (Unix seconds, our clock; [`usable_until`]): what a
    /// long-lived connection opened with it must not outlive.
    pub until: i64,
    /// The session's id: what a route's narrowed-token cookie is bound to.
    pub sid: SessionId,
    /// The provider that issued the token (the one a narrowed token is asked from).
    pub provider: std::sync::Arc<str>,
    /// The refresh token this request's refresh left the session with (`None` when no refresh
    /// happened): a later grant in the same request must not redeem the one it replaced.
    pub refreshed_token: Option<Token>,
}

/// The request's access token, refreshed first when it is expired or within
/// `proxy.refresh_ahead` of expiry. Shared by the proxy and the forward-auth endpoint. `csrf` is
/// the CSRF cookie when the caller checked it: every cookie opened here must belong to its
/// session. Every such request is activity: it renews the session's idle clock, at most once per
/// [`Lifetimes::renew_after`](crate::session::Lifetimes::renew_after) (a refresh rewrites the
/// cookies anyway, and renews it with them). A session past its idle or absolute lifetime is
/// refused by the jar when the access-token cookie is opened, before any refresh.
pub async fn usable_access_token(
    cookies: &RequestCookies<'_>,
    csrf: Option<CsrfCookie>,
    source: &TokenSource<'_>,
    client: &awc::Client,
) -> Result<Usable, Denied> {
    let TokenSource { jar, refresher, .. } = *source;
    let at: AccessTokenCookie = crate::telemetry::unseal_span("access_token")
        .in_scope(|| jar.open_required(cookies, CookieKind::AccessToken))?;
    if let Some(csrf) = &csrf {
        same_session(&at.sid, &csrf.sid)?;
    }
    let now = jar.clock().now();
    let expired = at.expires_at.is_some_and(|exp| exp <= now);
    let due = refresher.due(at.expires_at, at.received_at, now);
    if !due {
        return keep(jar, cookies, at, csrf);
    }
    // Boxed: the refresh's future (the grant, the store's lock, sealing) is several KiB, and
    // unboxed it would make every proxied request's future, allocated and moved per request and
    // held per open connection, that large for the rare request that refreshes (issue 17).
    Box::pin(refresh_then_use(cookies, csrf, source, client, at, expired)).await
}

/// The refresh half of [`usable_access_token`]: the access token `at` is due (or `expired`).
async fn refresh_then_use(
    cookies: &RequestCookies<'_>,
    csrf: Option<CsrfCookie>,
    source: &TokenSource<'_>,
    client: &awc::Client,
    at: AccessTokenCookie,
    expired: bool,
) -> Result<Usable, Denied> {
    let TokenSource {
        jar,
        refresher,
        providers,
    } = *source;
    let rt: Option<RefreshTokenCookie> = crate::telemetry::unseal_span("refresh_token")
        .in_scope(|| jar.open(cookies, CookieKind::RefreshToken))?;
    let Some(rt) = rt else {
        return if expired {
            Err(ApiError::TokenExpired.into())
        } else {
            keep(jar, cookies, at, csrf)
        };
    };
    same_session(&at.sid, &rt.sid)?;
    // The CSRF cookie is re-sealed with the new tokens (same value): it must be this session's.
    let csrf = match csrf {
        Some(c) => Some(c),
        None => jar.open::<CsrfCookie>(cookies, CookieKind::Csrf)?,
    };
    if let Some(csrf) = &csrf {
        same_session(&at.sid, &csrf.sid)?;
    }
    // The session's start as its cookies tell it: a refresh never moves the absolute end.
    let mut times = session_times(&at, csrf.as_ref());
    times = times.merge(rt.times().unwrap_or_default());
    let provider = providers.for_session(&rt.provider)?;
    let (outcome, coalesced) = refresher
        .refresh(client, provider, &rt, jar.sealer())
        .instrument(crate::telemetry::refresh_span(provider.id()))
        .await;
    match outcome {
        Ok(refreshed) => {
            // A shared result's refresh token may since have been rotated by a later grant (a
            // narrowing, on this replica or another): the session keeps the newest, never a
            // spent one (RFC 9700 §4.14.2).
            let kept = refresher
                .newest_across(provider.id(), &refreshed.refresh_token, jar.sealer())
                .await;
            let mut cookies = jar.seal(refreshed.session(
                provider.id(),
                &rt.sid,
                csrf.as_ref().map(|c| &c.token),
                times.started_at,
            ))?;
            if !kept.ct_eq(refreshed.refresh_token.expose()) {
                cookies.retain(|c| !jar.is_refresh_cookie(c.name()));
                let sealed = RefreshTokenCookie {
                    op_sid: refreshed.op_sid.clone(),
                    ..rt.clone()
                };
                cookies.extend(jar.reseal_refresh_token(&sealed, kept.clone())?);
            }
            tracing::debug!(coalesced, "request continues with refreshed tokens");
            // The idle clock was just renewed by this write.
            let now = jar.clock().now();
            let renewed = SessionTimes {
                started_at: Some(jar.lifetimes().started(times, now)),
                active_at: Some(now),
            };
            Ok(Usable {
                access_token: refreshed.tokens.access_token.clone(),
                cookies,
                // The grant's own time: a shared result is as old as its grant, not this request.
                until: usable_until(
                    refreshed.expires_at,
                    jar.lifetimes().end(renewed, now).expires_at,
                ),
                sid: rt.sid.clone(),
                provider: provider.id().into(),
                refreshed_token: Some(kept),
            })
        }
        Err(failure) if !expired => {
            tracing::warn!(
                ?failure,
                "refresh ahead of expiry failed; continuing with the current access token"
            );
            keep(jar, cookies, at, csrf)
        }
        Err(failure) => Err(failure.into()),
    }
}

/// The session's times as the access-token and (when opened) CSRF cookies tell them.
fn session_times(at: &AccessTokenCookie, csrf: Option<&CsrfCookie>) -> SessionTimes {
    let times = at.times().unwrap_or_default();
    csrf.and_then(Sealed::times)
        .map_or(times, |c| times.merge(c))
}

/// The request's access token as it is, with the idle clock renewed when due: the access-token
/// and CSRF cookies re-sealed with the request's time ([`SessionJar::renew`]). The CSRF cookie
/// is opened for that when the caller did not (a GET), and must be the same session's.
fn keep(
    jar: &SessionJar,
    cookies: &RequestCookies<'_>,
    at: AccessTokenCookie,
    csrf: Option<CsrfCookie>,
) -> Result<Usable, Denied> {
    let now = jar.clock().now();
    let mut times = session_times(&at, csrf.as_ref());
    let mut written = Vec::new();
    if jar.renewal_due(times) {
        let csrf = match csrf {
            Some(c) => Some(c),
            None => jar.open::<CsrfCookie>(cookies, CookieKind::Csrf)?,
        };
        if let Some(csrf) = &csrf {
            same_session(&at.sid, &csrf.sid)?;
        }
        written = jar.renew(&at, csrf.as_ref())?;
        times = SessionTimes {
            started_at: Some(
                jar.lifetimes()
                    .started(session_times(&at, csrf.as_ref()), now),
            ),
            active_at: Some(now),
        };
    }
    Ok(Usable {
        until: usable_until(at.expires_at, jar.lifetimes().end(times, now).expires_at),
        access_token: at.token,
        cookies: written,
        sid: at.sid,
        provider: at.provider,
        refreshed_token: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::error_code::OAuthErrorCode;

    #[test]
    fn a_failed_refresh_maps_in_one_place() {
        let denied = Denied::from(RefreshFailure::Rejected(OAuthErrorCode::InvalidGrant));
        assert!(denied.clear_cookies);
        assert_eq!(denied.error.code(), "session_expired");

        let denied = Denied::from(RefreshFailure::Rejected(OAuthErrorCode::parse("slow_down")));
        assert!(!denied.clear_cookies);
        assert_eq!(denied.error.code(), "authorization_error");
        assert_eq!(
            denied.error.to_string(),
            "the identity provider refused the refresh (slow_down)"
        );

        let denied = Denied::from(RefreshFailure::Unavailable("down".into()));
        assert!(!denied.clear_cookies);
        assert_eq!(denied.error.code(), "authorization_server_error");
        let denied = Denied::from(RefreshFailure::BadIdToken("bad".into()));
        assert_eq!(denied.error.code(), "authorization_error");
    }
}
