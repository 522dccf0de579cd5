//! Choosing a provider: `GET /providers` lists the ones a user may sign in with, so an SPA can
//! draw its "sign in with …" buttons from the configuration instead of hard-coding ids.
//!
//! The list carries ids, display names and which one is the default: nothing secret and no
//! endpoint (those stay between token-handler and the provider). When a provider is marked
//! `exclusive`, it is the only one listed and the only one `login/start` accepts.
//!
//! Server-side logins, for pages without JavaScript: `GET /login` starts a login exactly as
//! `login/start` does and redirects the browser to the provider; the provider sends it back to
//! `server.callback_path`, where token-handler completes the login itself, exactly as
//! `login/end` does, and redirects to an allow-listed `return_to`. The browser is only ever
//! sent to a *configured* URL (open redirects, RFC 9700 §4.11.2), and the callback only
//! completes a login whose cookie this browser holds (login CSRF, RFC 6749 §10.12).

use super::login;
use crate::error::ApiError;
use crate::oauth::callback::{Callback, Completed};
use crate::oauth::Provider;
use crate::origin::Origin;
use crate::session::{LoginLookup, LoginState};
use crate::state::{AppState, HttpClient, State};
use actix_web::cookie::Cookie;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;
use url::Url;

#[derive(Serialize)]
struct ProviderList<'a> {
    /// The id `login/start` uses when the request names none.
    default: &'a str,
    providers: Vec<ProviderEntry<'a>>,
}

#[derive(Serialize)]
struct ProviderEntry<'a> {
    id: &'a str,
    #[serde(rename = "displayName")]
    display_name: &'a str,
}

/// `GET /providers`: no cookie needed; the Origin rules of every agent endpoint apply.
pub async fn list(state: State) -> HttpResponse {
    let providers = &state.providers;
    let body = ProviderList {
        default: providers.default_provider().id(),
        providers: providers
            .offered()
            .into_iter()
            .map(|p| ProviderEntry {
                id: p.id(),
                display_name: &p.config.display_name,
            })
            .collect(),
    };
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(body)
}

/// `GET /login?provider=…&return_to=…`: a login for a page without JavaScript. The same login
/// as `login/start` ([`login::begin`]), with the `return_to` (one of `web.return_to`, checked
/// here) sealed into the login's cookie, answered with a 302 to the provider. The provider must
/// send the browser back to `server.callback_path`, where [`callback`] completes the login.
pub async fn login(
    req: HttpRequest,
    state: State,
    client: web::Data<HttpClient>,
) -> Result<HttpResponse, ApiError> {
    Origin::check_navigation(req.headers(), &state.config.web)?;
    // A fetch or an image from another page is not a user following a link: refusing it keeps
    // other sites from starting logins (and evicting the user's pending ones) unseen.
    if req
        .headers()
        .get("sec-fetch-mode")
        .is_some_and(|m| m.as_bytes() != b"navigate")
    {
        return Err(ApiError::InvalidRequest(
            "GET /login is for page navigations (a link or a form), not for scripts or images"
                .into(),
        ));
    }
    let [provider, return_to] = query_params(req.query_string(), ["provider", "return_to"])?;
    let target = state
        .config
        .web
        .return_to
        .allowed(return_to.as_deref())
        .ok_or_else(|| {
            ApiError::InvalidRequest(
                "return_to is not one of the configured return targets (web.return_to)".into(),
            )
        })?;
    let provider = state.providers.requested(provider.as_deref())?;
    if !returns_here(provider, &state) {
        return Err(ApiError::InvalidRequest(format!(
            "the identity provider `{}` returns to the SPA (its redirect_uri is not at server.callback_path): sign in with login/start",
            provider.id()
        )));
    }
    let (url, cookies) = login::begin(
        &req,
        &state,
        &client,
        provider,
        &[],
        Some(target.to_string()),
    )
    .await?;
    let mut resp = HttpResponse::Found();
    resp.insert_header((header::LOCATION, url));
    for c in cookies {
        resp.cookie(c);
    }
    Ok(resp.finish())
}

/// `GET <server.callback_path>`: the provider's redirect after a login, completed by
/// token-handler itself with the protocol code of `login/end` ([`complete`]): the login cookie
/// whose sealed state equals the response's (RFC 6749 §10.12), the issuer or redirect-URI check
/// (RFC 9207, RFC 9700 §4.4), PKCE, the ID token. Then the session cookies are set and the
/// browser is sent (303) to the login's sealed `return_to`.
///
/// Without a login in progress for this state there is nowhere trusted to send the browser, so
/// the answer is a JSON error. Once the login is found, whatever fails ends it (its cookie is
/// removed) and the browser goes to `return_to` with `?error=<code>`.
pub async fn callback(
    req: HttpRequest,
    state: State,
    client: web::Data<HttpClient>,
) -> Result<HttpResponse, ApiError> {
    Origin::check_navigation(req.headers(), &state.config.web)?;
    let query = req.query_string();
    let response_state = query_params(query, ["state"])?;
    let Some(response_state) = response_state[0].as_deref() else {
        return Err(ApiError::InvalidRequest(
            "this is not an authorization response: it has no state".into(),
        ));
    };
    let cookies = state.jar.read(req.headers());
    let (login, remove) = match state.jar.find_login(&cookies, response_state) {
        LoginLookup::Found { login, remove } => (login, remove),
        // As at login/end: a made-up state must not end the user's other logins.
        LoginLookup::OtherLogins => {
            return Err(ApiError::InvalidRequest(
                "the state of this response does not match any login in progress; start a new login".into(),
            ))
        }
        LoginLookup::NoLogin => {
            return Err(ApiError::Unauthorized(
                "no login is in progress for this callback: the login cookie is missing or expired (start a new login from the same browser)",
            ))
        }
    };
    let return_to = state.config.web.return_to.default_target();
    let target = login
        .return_to
        .as_deref()
        .and_then(|t| state.config.web.return_to.allowed(Some(t)))
        .unwrap_or(return_to)
        .clone();
    let outcome = finish(&state, &client, &login, query)
        .await
        .and_then(|completed| {
            login::session_cookies(
                &state.jar,
                req.headers(),
                completed,
                remove.clone(),
                state.jar.clock().now(),
            )
        });
    Ok(match outcome {
        Ok(signed) => see_other(&target, signed.cookies),
        Err(error) => {
            tracing::info!(code = %error.code(), reason = %error, "server-side login failed");
            let mut failed = target;
            failed.query_pairs_mut().append_pair("error", error.code());
            // The login is over either way: its state and verifier must not serve again.
            see_other(&failed, remove)
        }
    })
}

/// The login's provider redeems the code this response carries.
async fn finish<'s>(
    state: &'s AppState,
    client: &HttpClient,
    login: &LoginState,
    query: &str,
) -> Result<Completed<'s>, ApiError> {
    let provider = state.providers.for_session(&login.provider)?;
    if !returns_here(provider, state) {
        return Err(ApiError::InvalidRequest(
            "the login's identity provider does not return to this callback".into(),
        ));
    }
    // The page the browser loaded: the provider's redirect_uri (which is this callback, its
    // origin as the provider saw it) with the query it arrived with.
    let mut page = provider.config.redirect_uri.clone();
    page.set_query((!query.is_empty()).then_some(query));
    let (page, callback) = Callback::parse(page.as_str())?;
    login::redeem(state, client, login, &page, &callback).await
}

/// Whether the provider sends the browser back to token-handler's callback.
fn returns_here(provider: &Provider, state: &AppState) -> bool {
    state.config.server.callback_path.as_deref() == Some(provider.config.redirect_uri.path())
}

/// A 303 to `target` (always a configured return target) with these cookies. The callback's
/// URL carries the code: `no-referrer` keeps it out of the `Referer` of the next page.
fn see_other(target: &Url, cookies: Vec<Cookie<'static>>) -> HttpResponse {
    let mut resp = HttpResponse::SeeOther();
    resp.insert_header((header::LOCATION, target.as_str()))
        .insert_header((header::REFERRER_POLICY, "no-referrer"));
    for c in cookies {
        resp.cookie(c);
    }
    resp.finish()
}

/// These query parameters, each at most once (RFC 6749 §3.1: parameters must not repeat).
pub(super) fn query_params<const N: usize>(
    query: &str,
    names: [&str; N],
) -> Result<[Option<String>; N], ApiError> {
    let mut out: [Option<String>; N] = std::array::from_fn(|_| None);
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        if let Some(i) = names.iter().position(|n| *n == name) {
            if out[i].replace(value.into_owned()).is_some() {
                return Err(ApiError::InvalidRequest(format!(
                    "the query repeats the `{}` parameter",
                    names[i]
                )));
            }
        }
    }
    Ok(out)
}
