//! Session lifetime at the agent endpoints: `GET /session` (when the session will end), idle
//! renewal for the endpoints that count as activity, and clearing the cookies of a session that
//! is over.
//!
//! The clocks themselves are checked by the jar on every open ([`crate::session::lifetime`]);
//! this module only answers with them. `GET /session` reads no token and returns none: only the
//! session's times, from the access-token and CSRF cookies. It does not renew the idle clock, so
//! an SPA that polls it to warn the user does not keep an idle session alive; `/userInfo`,
//! `/claims` and a page load at `login/end` do renew it, like every proxied call.

use crate::cookies::{CookieKind, RequestCookies};
use crate::error::ApiError;
use crate::session::{
    same_session, AccessTokenCookie, CsrfCookie, Sealed, SessionEnd, SessionJar, SessionTimes,
};
use crate::state::State;
use actix_web::body::{BoxBody, EitherBody, MessageBody};
use actix_web::cookie::Cookie;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use serde::Serialize;

/// A request's session as its Path `/` cookies tell it: the access-token and CSRF cookies, both
/// opened (so checked against the session's clocks) and of one session.
pub(super) struct Current {
    pub at: AccessTokenCookie,
    pub csrf: CsrfCookie,
}

impl Current {
    /// The request's session; `None` when either cookie is missing (signed out). A cookie that
    /// was sent but cannot be opened, or two sessions' cookies, are refused, never taken for
    /// "signed out"; a session that is over is `session_expired`.
    pub fn open(cookies: &RequestCookies<'_>, jar: &SessionJar) -> Result<Option<Self>, ApiError> {
        let at: Option<AccessTokenCookie> = jar.open(cookies, CookieKind::AccessToken)?;
        let csrf: Option<CsrfCookie> = jar.open(cookies, CookieKind::Csrf)?;
        Ok(match (at, csrf) {
            (Some(at), Some(csrf)) => {
                same_session(&at.sid, &csrf.sid)?;
                Some(Self { at, csrf })
            }
            _ => None,
        })
    }

    /// The session's times, from both cookies.
    pub fn times(&self) -> SessionTimes {
        let at = self.at.times().unwrap_or_default();
        self.csrf.times().map_or(at, |c| at.merge(c))
    }

    /// The cookies that renew the idle clock, when due (none otherwise), and when the session
    /// ends once they are written.
    pub fn renewal(
        &self,
        jar: &SessionJar,
    ) -> Result<(SessionEnd, Vec<Cookie<'static>>), ApiError> {
        let now = jar.clock().now();
        let times = self.times();
        if !jar.renewal_due(times) {
            return Ok((jar.lifetimes().end(times, now), Vec::new()));
        }
        let cookies = jar.renew(&self.at, Some(&self.csrf))?;
        let renewed = SessionTimes {
            started_at: Some(jar.lifetimes().started(times, now)),
            active_at: Some(now),
        };
        Ok((jar.lifetimes().end(renewed, now), cookies))
    }
}

#[derive(Serialize)]
struct SessionInfo<'a> {
    #[serde(rename = "isLoggedIn")]
    is_logged_in: bool,
    #[serde(flatten)]
    end: Option<SessionEnd>,
    /// The providers the browser holds a live session with, default first; only when several
    /// providers are configured (the OAuth Agent's answer is otherwise unchanged).
    #[serde(skip_serializing_if = "Option::is_none")]
    providers: Option<Vec<&'a str>>,
}

/// `GET /session[?provider=…]`: whether the request carries a session with the provider (by
/// default, the session a request naming none uses: [`SessionJar::default_for`]), when it ends
/// (Unix seconds): `expiresAt` (the earlier of the two), `idleExpiresAt`, `absoluteExpiresAt`;
/// and which providers the browser holds a live session with. Never renews.
pub async fn session_info(req: HttpRequest, state: State) -> Result<HttpResponse, ApiError> {
    let jar = state
        .jar
        .requested(provider_param(&req)?.as_deref(), req.headers())?;
    let cookies = jar.read(req.headers());
    let (is_logged_in, end) = match Current::open(&cookies, jar)? {
        Some(current) => (
            true,
            Some(jar.lifetimes().end(current.times(), jar.clock().now())),
        ),
        None => (false, None),
    };
    let providers = (state.providers.iter().count() > 1).then(|| {
        state
            .jar
            .provider_jars()
            .filter(|j| matches!(Current::open(&j.read(req.headers()), j), Ok(Some(_))))
            .filter_map(SessionJar::provider_id)
            .collect()
    });
    Ok(HttpResponse::Ok().json(SessionInfo {
        is_logged_in,
        end,
        providers,
    }))
}

/// The `provider` query parameter of an agent endpoint that serves one provider's session
/// (`/userInfo`, `/claims`, `/session`, `/refresh`), at most once; `None` when absent.
pub(crate) fn provider_param(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let [provider] = super::picker::query_params(req.query_string(), ["provider"])?;
    Ok(provider)
}

/// The session clocks at an endpoint that counts as the user's activity (`/userInfo`,
/// `/claims`): refused with `session_expired` before the handler runs when the session is over
/// (`/claims` may read only the ID-token cookie, which carries no idle clock), and the idle clock
/// renewed after a successful answer when due. Cookies that cannot be opened for another reason
/// are left to the handler, which reports them as it always has.
pub async fn renew_idle(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let Some(state) = crate::state::of(req.request()) else {
        return Ok(next.call(req).await?.map_into_left_body());
    };
    let opened = {
        let requested = match provider_param(req.request()) {
            Ok(id) => state.jar.requested(id.as_deref(), req.headers()),
            Err(e) => Err(e),
        };
        match requested {
            // The handler answers a bad or unknown provider.
            Err(_) => Ok(None),
            Ok(jar) => Current::open(&jar.read(req.headers()), jar).map(|c| c.map(|c| (jar, c))),
        }
    };
    let current = match opened {
        Err(ApiError::SessionExpired) => {
            // With the error attached (`into_response` would drop it), so that
            // [`clear_ended`] clears the cookies.
            return Ok(req
                .error_response(ApiError::SessionExpired)
                .map_into_right_body());
        }
        Ok(current) => current.filter(|(jar, c)| jar.renewal_due(c.times())),
        Err(_) => None,
    };
    let mut res = next.call(req).await?;
    // The requested provider's jar: its cookies are re-sealed, and the (shared) CSRF cookie.
    if let (Some((jar, current)), true) = (current, res.status().is_success()) {
        match current.renewal(jar) {
            Ok((_, cookies)) => {
                for c in &cookies {
                    if let Err(e) = res.response_mut().add_cookie(c) {
                        tracing::error!(error = %e, "could not add a renewed cookie");
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "the idle clock could not be renewed"),
        }
    }
    Ok(res.map_into_left_body())
}

/// Clears the session's cookies with any agent answer that says it is over (`session_expired`
/// returned by a handler), so the browser stops sending cookies that can never work again: that
/// provider's only (and the answer names it) while the browser holds another provider's live
/// session, else every cookie ([`crate::session::SessionJar::session_over`]). Answers that
/// already clear them (a refresh token the provider refused) are built without the error
/// attached and pass unchanged.
pub async fn clear_ended(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let state = crate::state::of(req.request());
    let res = next.call(req).await?;
    let ended = res
        .response()
        .error()
        .and_then(|e| e.as_error::<ApiError>())
        .is_some_and(|e| matches!(e, ApiError::SessionExpired));
    let Some(state) = state.filter(|_| ended) else {
        return Ok(res.map_into_boxed_body());
    };
    // The provider whose session the endpoint serves (`?provider=`), when the browser holds
    // another provider's live session: only its cookies go, and the answer names it.
    let only = {
        let req = res.request();
        provider_param(req)
            .ok()
            .and_then(|id| state.jar.requested(id.as_deref(), req.headers()).ok())
            .filter(|jar| jar.provider_id().is_some())
            .filter(|jar| state.jar.others_remain(jar, req.headers()))
    };
    let (mut res, clear) = match only {
        Some(jar) => {
            let error = ApiError::ProviderSessionExpired {
                provider: jar.provider_id().unwrap_or_default().to_string(),
            };
            let clear = jar.clear_session();
            let (req, _) = res.into_parts();
            (ServiceResponse::new(req, error.error_response()), clear)
        }
        None => (res.map_into_boxed_body(), state.jar.clear_all()),
    };
    for c in clear {
        if let Err(e) = res.response_mut().add_cookie(&c) {
            tracing::error!(error = %e, "could not add a removal cookie");
        }
    }
    Ok(res)
}
