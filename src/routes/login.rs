//! `POST /login/start` and `POST /login/end`: the authorization-code flow with PKCE. The
//! protocol lives in [`crate::oauth::authorize`] and [`crate::oauth::callback`]; these handlers
//! keep the login in its cookie and turn a completed login into session cookies.

use super::lifetime::Current;
use super::{json_with_cookies, JsonBody};
use crate::cookies::{CookieKind, RequestCookies};
use crate::error::{error_with_cookies, ApiError};
use crate::oauth::authorize::{authorization_request_url, ExtraParam, LoginSecrets};
use crate::oauth::callback::{complete, Callback, Completed, PendingLogin};
use crate::oauth::pkce;
use crate::oauth::Provider;
use crate::secret::{random_token, Token};
use crate::session::{
    CsrfCookie, LoginLookup, LoginState, NewSession, SessionEnd, SessionId, SessionJar,
    SessionTimes,
};
use crate::state::{AppState, HttpClient, State};
use actix_web::cookie::Cookie;
use actix_web::http::header::HeaderMap;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
pub struct StartRequest {
    #[serde(rename = "extraParams", default)]
    extra_params: Vec<ExtraParam>,
    /// Which provider to sign in with; the default when absent.
    provider: Option<String>,
}

#[derive(Serialize)]
struct StartResponse {
    #[serde(rename = "authorizationRequestUrl")]
    authorization_request_url: String,
}

pub async fn start(
    req: HttpRequest,
    state: State,
    client: web::Data<HttpClient>,
    body: JsonBody<StartRequest>,
) -> Result<HttpResponse, ApiError> {
    let request = body.0;
    let provider = state.providers.requested(request.provider.as_deref())?;
    let (url, cookies) =
        begin(&req, &state, &client, provider, &request.extra_params, None).await?;
    Ok(json_with_cookies(
        &StartResponse {
            authorization_request_url: url,
        },
        cookies,
    ))
}

/// Starts a login with `provider`: the authorization request URL, and the cookies that keep
/// the login (its own flow's cookie, and removals of the oldest others). `login/start` and the
/// server-side `GET /login` share it, so both flows carry the same state, nonce and PKCE.
pub(super) async fn begin(
    req: &HttpRequest,
    state: &AppState,
    client: &HttpClient,
    provider: &Provider,
    extra_params: &[ExtraParam],
    return_to: Option<String>,
) -> Result<(String, Vec<Cookie<'static>>), ApiError> {
    let login = LoginState {
        provider: provider.id().to_string(),
        state: random_token(),
        nonce: random_token(),
        verifier: pkce::new_verifier(),
        issued_at: state.clock.now(),
        step_up: provider.config.step_up.clone(),
        return_to,
    };
    let secrets = LoginSecrets {
        state: &login.state,
        nonce: &login.nonce,
        verifier: &login.verifier,
    };
    let url = authorization_request_url(&client.0, provider, &secrets, extra_params).await?;
    // This login gets a cookie of its own; the oldest others go when there are too many.
    let mut cookies = state.jar.prune_logins(&state.jar.read(req.headers()));
    cookies.extend(state.jar.seal_login(&login)?);
    Ok((url, cookies))
}

#[derive(Deserialize)]
pub struct EndRequest {
    #[serde(rename = "pageUrl")]
    page_url: Option<String>,
}

#[derive(Serialize)]
struct EndResponse {
    handled: bool,
    #[serde(rename = "isLoggedIn")]
    is_logged_in: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    csrf: Option<String>,
    /// When the session ends (`expiresAt`, `idleExpiresAt`, `absoluteExpiresAt`), when signed in.
    #[serde(flatten)]
    session: Option<SessionEnd>,
}

pub async fn end(
    req: HttpRequest,
    state: State,
    client: web::Data<HttpClient>,
    body: JsonBody<EndRequest>,
) -> Result<HttpResponse, ApiError> {
    let page_url = body.0.page_url.ok_or_else(|| {
        ApiError::InvalidRequest("the body needs pageUrl: the SPA's full URL".into())
    })?;
    let (page, callback) = Callback::parse(&page_url)?;
    let cookies = state.jar.read(req.headers());
    let found = match callback.state() {
        Some(callback_state) => state.jar.find_login(&cookies, callback_state),
        None => LoginLookup::NoLogin,
    };
    let (login, remove) = match found {
        LoginLookup::Found { login, remove } => (login, remove),
        // Logins are in progress, none with this state (RFC 6749 §10.12). Nothing is removed:
        // whoever can make the SPA load a URL with a made-up state must not end the logins of
        // the user's other tabs.
        LoginLookup::OtherLogins => {
            return Err(ApiError::InvalidRequest(
                "the state in pageUrl does not match any login in progress; start a new login"
                    .into(),
            ))
        }
        LoginLookup::NoLogin => {
            // A plain page load, or a callback whose login cookie is gone: reloading the
            // callback URL after a successful login lands here and is not an error.
            let jar = state.jar.default_for(req.headers());
            let (is_logged_in, csrf, session, renewed) = page_load(&jar.read(req.headers()), jar)?;
            if !is_logged_in && callback.is_response() {
                return Err(ApiError::Unauthorized(
                    "no login is in progress for this callback: the login cookie is missing or expired (start a new login; check that cookies reach the agent's base path)",
                ));
            }
            return Ok(json_with_cookies(
                &EndResponse {
                    handled: false,
                    is_logged_in,
                    csrf,
                    session,
                },
                renewed,
            ));
        }
    };
    let outcome = redeem(&state, &client, &login, &page, &callback)
        .await
        .and_then(|completed| signed_in(&state.jar, req.headers(), completed, remove.clone()));
    // Whatever failed, this login is over: its state, nonce and verifier must never serve a
    // second callback, so its cookie goes with the error. Other flows' cookies stay.
    Ok(outcome.unwrap_or_else(|error| error_with_cookies(error, remove)))
}

/// What a page load answers: signed in or not, the CSRF value, when the session ends.
type PageLoad = (
    bool,
    Option<String>,
    Option<SessionEnd>,
    Vec<actix_web::cookie::Cookie<'static>>,
);

/// Whether the request carries a session, its CSRF value and when it ends; a page load is the
/// user's activity, so it renews the idle clock when due (the cookies returned). Cookies that
/// were sent but cannot be opened, or that belong to two sessions, are refused rather than taken
/// for "signed out"; a session that is over is `session_expired`.
fn page_load(cookies: &RequestCookies<'_>, jar: &SessionJar) -> Result<PageLoad, ApiError> {
    Ok(match Current::open(cookies, jar)? {
        Some(current) => {
            let (end, renewed) = current.renewal(jar)?;
            let csrf = current.csrf.token.expose().to_string();
            (true, Some(csrf), Some(end), renewed)
        }
        None => (false, None, None, Vec::new()),
    })
}

/// The login's callback completed by its provider ([`complete`]: code, PKCE, ID token), for
/// `login/end` and the server-side callback alike.
pub(super) async fn redeem<'s>(
    state: &'s AppState,
    client: &HttpClient,
    login: &LoginState,
    page: &url::Url,
    callback: &Callback,
) -> Result<Completed<'s>, ApiError> {
    let pending = PendingLogin {
        provider: &login.provider,
        nonce: &login.nonce,
        verifier: &login.verifier,
        step_up: &login.step_up,
    };
    complete(
        &client.0,
        &state.providers,
        &state.clock,
        &pending,
        page,
        callback,
    )
    .await
}

/// The session cookies of a completed login, in place of its login cookie (`remove`).
fn signed_in(
    jar: &SessionJar,
    headers: &HeaderMap,
    completed: Completed<'_>,
    remove: Vec<Cookie<'static>>,
) -> Result<HttpResponse, ApiError> {
    let now = jar.clock().now();
    let signed = session_cookies(jar, headers, completed, remove, now)?;
    let (cookies, csrf) = (signed.cookies, signed.csrf);
    let started = SessionTimes {
        started_at: Some(signed.started_at),
        active_at: Some(now),
    };
    Ok(json_with_cookies(
        &EndResponse {
            handled: true,
            is_logged_in: true,
            csrf: Some(csrf.expose().to_string()),
            session: Some(jar.lifetimes().end(started, now)),
        },
        cookies,
    ))
}

/// What a completed login writes: the session cookies, the CSRF value the SPA echoes, and when
/// the browser's session started.
pub(super) struct SignedIn {
    pub cookies: Vec<Cookie<'static>>,
    pub csrf: Token,
    pub started_at: i64,
}

/// A completed login's session cookies, under its provider's names
/// ([`SessionJar::for_provider`]), and the removal of its login cookie (`remove`), sealed as of
/// `now`. `login/end` and the server-side callback share it.
///
/// A browser may hold sessions with several providers. When the request carries a live session
/// (its CSRF cookie opens), the login joins it: the same session id, CSRF value and start, so
/// one CSRF header serves every provider's routes and a login adds a provider without moving
/// the session's absolute end. Otherwise the session is new (fresh id and CSRF value, starting
/// now), and other providers' session cookies the request carries, of a session that is over or
/// unreadable, are removed. Either way, a refresh or ID token this provider's earlier login left
/// and this one did not renew is removed, so it cannot pass for the new login's.
pub(super) fn session_cookies(
    jar: &SessionJar,
    headers: &HeaderMap,
    completed: Completed<'_>,
    remove: Vec<Cookie<'static>>,
    now: i64,
) -> Result<SignedIn, ApiError> {
    let Completed {
        provider,
        tokens,
        sub,
        op_sid,
    } = completed;
    let Some(provider_jar) = jar.for_provider(provider.id()) else {
        tracing::error!(provider = %provider.id(), "no cookie names for a configured provider");
        return Err(ApiError::Internal);
    };
    let joined: Option<CsrfCookie> = jar.readable(&jar.read(headers), CookieKind::Csrf);
    let joins = joined.is_some();
    let (sid, csrf, started_at) = match joined {
        Some(c) => (c.sid, c.token, c.started_at),
        None => (SessionId::new(), random_token(), None),
    };
    let mut cookies = provider_jar.seal_at(
        NewSession {
            provider: provider.id(),
            sid: &sid,
            tokens: &tokens,
            previous_refresh_token: None,
            sub,
            op_sid,
            csrf: Some(&csrf),
            received: None,
            started_at,
        },
        now,
    )?;
    if tokens.refresh_token.is_none() {
        cookies.extend(provider_jar.clear(CookieKind::RefreshToken));
    }
    if tokens.id_token.is_none() {
        cookies.extend(provider_jar.clear(CookieKind::IdToken));
    }
    if !joins {
        for other in jar.provider_jars() {
            if other.provider_id() != provider_jar.provider_id()
                && other.read(headers).has(CookieKind::AccessToken)
            {
                cookies.extend(other.clear_session());
            }
        }
    }
    cookies.extend(remove);
    tracing::info!(
        provider = %provider.id(),
        joined = joins,
        "login completed"
    );
    Ok(SignedIn {
        cookies,
        csrf,
        started_at: started_at.unwrap_or(now),
    })
}
