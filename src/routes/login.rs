//! `POST /login/start` and `POST /login/end`: the authorization-code flow with PKCE.

use super::{error_with_cookies, json_with_cookies, JsonBody};
use crate::config::{ParMode, RESERVED_PARAMS};
use crate::cookies::{CookieKind, RequestCookies};
use crate::error::ApiError;
use crate::oauth::http::{safe_code, safe_description, CallError};
use crate::oauth::{pkce, token};
use crate::secret::{random_token, Token};
use crate::session::{
    same_session, AccessTokenCookie, CsrfCookie, LoginState, NewSession, SessionId, SessionJar,
};
use crate::state::{AppState, HttpClient};
use actix_web::{web, HttpRequest, HttpResponse};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::{Deserialize, Serialize};
use url::Url;

/// Characters JavaScript's `encodeURIComponent` leaves alone: `A–Z a–z 0–9 - _ . ! ~ * ' ( )`.
const URI_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'~')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

const MAX_EXTRA_PARAMS: usize = 32;

#[derive(Deserialize)]
pub struct ExtraParam {
    key: String,
    value: String,
}

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
    state: web::Data<AppState>,
    client: web::Data<HttpClient>,
    body: JsonBody<StartRequest>,
) -> Result<HttpResponse, ApiError> {
    let request = body.0;
    let provider = match &request.provider {
        None => state.providers.default_provider(),
        Some(id) => state.providers.get(id).ok_or_else(|| {
            ApiError::InvalidRequest(format!(
                "no identity provider is configured with the id `{}`",
                safe_code(id)
            ))
        })?,
    };
    let config = &provider.config;
    if request.extra_params.len() > MAX_EXTRA_PARAMS {
        return Err(ApiError::InvalidRequest(format!(
            "at most {MAX_EXTRA_PARAMS} extraParams are accepted"
        )));
    }
    for p in &request.extra_params {
        // A parameter the operator configured is policy (a step-up's acr_values, max_age or
        // prompt=login): the SPA may not replace it, or it could downgrade the authentication
        // the operator requires (OIDC Core §3.1.2.1). Its effect is also checked on the ID
        // token at login/end.
        if config.extra_auth_params.iter().any(|(k, _)| k == &p.key) {
            return Err(ApiError::InvalidRequest(format!(
                "extraParams may not set `{}`: the token-handler configuration sets it for this provider",
                safe_code(&p.key)
            )));
        }
        if RESERVED_PARAMS.contains(&p.key.as_str()) {
            return Err(ApiError::InvalidRequest(format!(
                "extraParams may not set `{}`: token-handler sets it itself",
                safe_code(&p.key)
            )));
        }
        if !config.allowed_extra_params.iter().any(|a| a == &p.key) {
            return Err(ApiError::InvalidRequest(format!(
                "extraParams may not set `{}`: allowed are {}",
                safe_code(&p.key),
                config.allowed_extra_params.join(", ")
            )));
        }
    }

    let metadata = provider.metadata(&client.0).await?;
    let login = LoginState {
        provider: provider.id().to_string(),
        state: random_token(),
        nonce: random_token(),
        verifier: pkce::new_verifier(),
        issued_at: state.clock.now(),
        step_up: config.step_up.clone(),
    };
    let challenge = pkce::s256_challenge(&login.verifier);
    let mut params: Vec<(&str, &str)> = vec![
        ("client_id", &config.client_id),
        ("redirect_uri", config.redirect_uri.as_str()),
        ("response_type", "code"),
        ("scope", &config.scope),
        ("state", login.state.expose()),
        ("code_challenge", &challenge),
        ("code_challenge_method", "S256"),
    ];
    // nonce belongs to OpenID Connect (Core §3.1.2.1); plain OAuth 2.0 servers may refuse it.
    if config.is_openid() {
        params.push(("nonce", login.nonce.expose()));
    }
    // The configured parameters, then the SPA's: the names never overlap (checked above).
    params.extend(
        config
            .extra_auth_params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str())),
    );
    params.extend(
        request
            .extra_params
            .iter()
            .map(|p| (p.key.as_str(), p.value.as_str())),
    );

    let use_par = match config.par {
        ParMode::Off => false,
        ParMode::Required => true,
        ParMode::Auto => metadata.par_endpoint.is_some() || metadata.par_required,
    };
    let url = if use_par {
        let endpoint = metadata.par_endpoint.as_ref().ok_or_else(|| {
            ApiError::ProviderNotReady(format!(
                "the identity provider `{}` needs pushed authorization requests but names no pushed_authorization_request_endpoint; configure one",
                provider.id()
            ))
        })?;
        let request_uri =
            match token::push_authorization_request(&client.0, config, endpoint, &params).await {
                Ok(uri) => uri,
                Err(CallError::Rejected { error, .. }) => {
                    return Err(ApiError::AuthorizationError(format!(
                        "the identity provider refused the pushed authorization request ({error})"
                    )))
                }
                Err(CallError::Unavailable(m)) => return Err(ApiError::ProviderUnavailable(m)),
            };
        // RFC 9126 §4: the browser carries only client_id and the request_uri.
        authorization_url(
            &metadata.authorization_endpoint,
            &[
                ("client_id", &config.client_id),
                ("request_uri", &request_uri),
            ],
        )
    } else {
        authorization_url(&metadata.authorization_endpoint, &params)
    };

    let cookies = state.jar.seal_login(&login)?;
    Ok(json_with_cookies(
        &StartResponse {
            authorization_request_url: url,
        },
        cookies,
    ))
}

/// Appends parameters to the endpoint (which may already carry a query), encoded as
/// `encodeURIComponent` does so SPAs that compare URLs see what they expect.
fn authorization_url(endpoint: &Url, params: &[(&str, &str)]) -> String {
    let mut url = endpoint.to_string();
    url.push(if endpoint.query().is_some() { '&' } else { '?' });
    let encoded: Vec<String> = params
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                utf8_percent_encode(k, URI_COMPONENT),
                utf8_percent_encode(v, URI_COMPONENT)
            )
        })
        .collect();
    url.push_str(&encoded.join("&"));
    url
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
}

/// The authorization response parameters of a page URL (RFC 6749 §4.1.2, RFC 9207).
#[derive(Default)]
struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
    iss: Option<String>,
}

/// The page URL and its authorization response parameters.
fn parse_callback(page_url: &str) -> Result<(Url, Callback), ApiError> {
    let url = Url::parse(page_url)
        .map_err(|_| ApiError::InvalidRequest("pageUrl is not an absolute URL".into()))?;
    let mut cb = Callback::default();
    for (name, value) in url.query_pairs() {
        let slot = match name.as_ref() {
            "code" => &mut cb.code,
            "state" => &mut cb.state,
            "error" => &mut cb.error,
            "error_description" => &mut cb.error_description,
            "iss" => &mut cb.iss,
            _ => continue,
        };
        // RFC 6749 §3.1: parameters must not be repeated.
        if slot.replace(value.into_owned()).is_some() {
            return Err(ApiError::InvalidRequest(format!(
                "pageUrl repeats the `{name}` parameter"
            )));
        }
    }
    Ok((url, cb))
}

/// Whether the page is the redirect URI with the response parameters added: same scheme,
/// host, port and path, and every query parameter of the redirect URI kept (RFC 6749 §3.1.2
/// lets a redirect URI carry a query, to which the provider adds its own).
fn arrived_at(page: &Url, redirect_uri: &Url) -> bool {
    page.scheme() == redirect_uri.scheme()
        && page.host() == redirect_uri.host()
        && page.port_or_known_default() == redirect_uri.port_or_known_default()
        && page.path() == redirect_uri.path()
        && redirect_uri
            .query_pairs()
            .all(|pair| page.query_pairs().any(|p| p == pair))
}

pub async fn end(
    req: HttpRequest,
    state: web::Data<AppState>,
    client: web::Data<HttpClient>,
    body: JsonBody<EndRequest>,
) -> Result<HttpResponse, ApiError> {
    let page_url = body.0.page_url.ok_or_else(|| {
        ApiError::InvalidRequest("the body needs pageUrl: the SPA's full URL".into())
    })?;
    let (page, callback) = parse_callback(&page_url)?;
    let cookies = state.jar.read(req.headers());
    let login: Option<LoginState> = state.jar.readable(&cookies, CookieKind::Login);
    let matching_login =
        match (&callback.state, login) {
            (Some(sent), Some(login)) if login.state.ct_eq(sent) => Some(login),
            (Some(_), Some(_)) => return Ok(error_with_cookies(
                ApiError::InvalidRequest(
                    "the state in pageUrl does not match the login in progress; start a new login"
                        .into(),
                ),
                state.jar.clear(CookieKind::Login),
            )),
            _ => None,
        };

    match (matching_login, &callback) {
        (Some(login), cb) => {
            let outcome = match cb {
                Callback {
                    error: Some(error), ..
                } => {
                    let code = safe_code(error);
                    let description = cb
                        .error_description
                        .as_deref()
                        .map(safe_description)
                        .unwrap_or_else(|| format!("the identity provider answered {code}"));
                    Err(ApiError::ProviderFrontChannel { code, description })
                }
                Callback {
                    code: Some(code), ..
                } => {
                    let response = Response {
                        code,
                        iss: cb.iss.as_deref(),
                        page: &page,
                    };
                    complete_login(&state, &client.0, login, response).await
                }
                _ => Err(ApiError::InvalidRequest(
                    "pageUrl has a state but neither code nor error".into(),
                )),
            };
            // Whatever failed, this login is over: its state, nonce and verifier must never
            // serve a second callback, so its cookie goes with the error.
            Ok(outcome.unwrap_or_else(|error| {
                error_with_cookies(error, state.jar.clear(CookieKind::Login))
            }))
        }
        (None, cb) => {
            // A plain page load, or a callback whose login cookie is gone: reloading the
            // callback URL after a successful login lands here and is not an error.
            let logged_in = page_load(&cookies, &state.jar)?;
            if !logged_in.0 && cb.state.is_some() && (cb.code.is_some() || cb.error.is_some()) {
                return Err(ApiError::Unauthorized(
                    "no login is in progress for this callback: the login cookie is missing or expired (start a new login; check that cookies reach the agent's base path)",
                ));
            }
            Ok(HttpResponse::Ok().json(EndResponse {
                handled: false,
                is_logged_in: logged_in.0,
                csrf: logged_in.1,
            }))
        }
    }
}

/// Whether the request carries a session, and its CSRF value. Cookies that were sent but cannot
/// be opened, or that belong to two sessions, are refused rather than taken for "signed out".
fn page_load(
    cookies: &RequestCookies<'_>,
    jar: &SessionJar,
) -> Result<(bool, Option<String>), ApiError> {
    let at: Option<AccessTokenCookie> = jar.open(cookies, CookieKind::AccessToken)?;
    let csrf: Option<CsrfCookie> = jar.open(cookies, CookieKind::Csrf)?;
    Ok(match (at, csrf) {
        (Some(at), Some(c)) => {
            same_session(&at.sid, &c.sid)?;
            (true, Some(c.token.expose().to_string()))
        }
        _ => (false, None),
    })
}

/// A successful authorization response: its code, its `iss` and the page it arrived at.
struct Response<'a> {
    code: &'a str,
    iss: Option<&'a str>,
    page: &'a Url,
}

async fn complete_login(
    state: &AppState,
    client: &awc::Client,
    login: LoginState,
    response: Response<'_>,
) -> Result<HttpResponse, ApiError> {
    let Response { code, iss, page } = response;
    let provider = state.providers.for_session(&login.provider)?;
    let metadata = provider.metadata(client).await?;
    // RFC 9207: when the provider names itself in the response, it must be the one we asked;
    // a provider that promises to name itself, or that the configuration says must (a shared
    // redirect_uri, RFC 9700 §4.4), must do so.
    if iss.is_none() && (metadata.iss_in_response || provider.config.require_iss) {
        return Err(ApiError::InvalidRequest(
            "the authorization response lacks the iss parameter its provider must send (RFC 9207)"
                .into(),
        ));
    }
    if let Some(iss) = iss {
        if iss != metadata.issuer {
            return Err(ApiError::InvalidRequest(
                "the authorization response comes from another issuer than the login was started with".into(),
            ));
        }
    }
    // RFC 9700 §4.4.2: without `iss`, only the redirect URI tells providers apart (each has
    // its own, or startup refuses the configuration), so the response must have arrived at
    // the redirect URI of the provider this login was started with. Otherwise another
    // provider's code, sent to its own redirect URI, would be redeemed here (mix-up).
    if iss.is_none() && !arrived_at(page, &provider.config.redirect_uri) {
        return Err(ApiError::InvalidRequest(
            "the authorization response did not arrive at the redirect_uri of the provider the login was started with (RFC 9700 §4.4); send the page's full URL as pageUrl".into(),
        ));
    }
    let mut tokens = match token::redeem_code(client, &provider.config, &metadata, code, &login.verifier).await {
        Ok(t) => t,
        Err(CallError::Rejected { error, .. }) => {
            return Err(ApiError::AuthorizationError(format!(
                "the identity provider refused the authorization code ({error}); it may have expired or been used already: start a new login"
            )))
        }
        Err(CallError::Unavailable(m)) => return Err(ApiError::ProviderUnavailable(m)),
    };
    let now = state.clock.now();
    if !provider.config.is_openid() && tokens.id_token.is_some() {
        // Not an OpenID Connect login: no nonce was sent, so the token cannot be checked.
        tracing::info!(provider = %provider.id(), "ignoring an ID token from a login without the openid scope");
        tokens.id_token = None;
    }
    let sub = match &tokens.id_token {
        Some(id_token) => Some(
            provider
                .verify_login_id_token(
                    client,
                    &metadata,
                    id_token.expose(),
                    &login.nonce,
                    &login.step_up,
                    now,
                )
                .await?
                .sub,
        ),
        None if provider.config.is_openid() => {
            return Err(ApiError::AuthorizationError(
                "the provider returned no ID token although the openid scope was requested".into(),
            ))
        }
        None => None,
    };
    let csrf: Token = random_token();
    let sid = SessionId::new();
    let mut cookies = state.jar.seal(NewSession {
        provider: provider.id(),
        sid: &sid,
        tokens: &tokens,
        previous_refresh_token: None,
        sub,
        csrf: Some(&csrf),
    })?;
    cookies.extend(state.jar.clear(CookieKind::Login));
    tracing::info!(provider = %provider.id(), "login completed");
    Ok(json_with_cookies(
        &EndResponse {
            handled: true,
            is_logged_in: true,
            csrf: Some(csrf.expose().to_string()),
        },
        cookies,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_encoded_like_encode_uri_component() {
        let endpoint = Url::parse("https://login.example.com/authorize").expect("url");
        let url = authorization_url(
            &endpoint,
            &[("ui_locales", "fr en"), ("x", "a+b/c?d=e&f!*'()~")],
        );
        assert_eq!(
            url,
            "https://login.example.com/authorize?ui_locales=fr%20en&x=a%2Bb%2Fc%3Fd%3De%26f!*'()~"
        );
        let with_query = Url::parse("https://login.example.com/authorize?p=B2C_1").expect("url");
        assert!(authorization_url(&with_query, &[("a", "b")]).ends_with("?p=B2C_1&a=b"));
    }

    #[test]
    fn repeated_callback_parameters_are_refused() {
        assert!(parse_callback("https://app.example/?code=a&code=b&state=s").is_err());
        let (_, cb) = parse_callback("https://app.example/?code=a&state=s&other=1").expect("parse");
        assert_eq!(cb.code.as_deref(), Some("a"));
        assert!(parse_callback("/relative").is_err());
    }

    #[test]
    fn a_response_arrives_at_its_redirect_uri() {
        let url = |t: &str| Url::parse(t).expect("url");
        let redirect = url("https://www.example.com/cb?idp=a");
        assert!(arrived_at(
            &url("https://www.example.com/cb?idp=a&code=x&state=y"),
            &redirect
        ));
        assert!(arrived_at(
            &url("https://www.example.com:443/cb?code=x&idp=a"),
            &redirect
        ));
        for other in [
            "https://www.example.com/cb?idp=b&code=x",
            "https://www.example.com/cb?code=x",
            "https://www.example.com/other?idp=a&code=x",
            "http://www.example.com/cb?idp=a&code=x",
            "https://www.example.com:8443/cb?idp=a&code=x",
            "https://evil.example/cb?idp=a&code=x",
        ] {
            assert!(!arrived_at(&url(other), &redirect), "{other}");
        }
    }
}
