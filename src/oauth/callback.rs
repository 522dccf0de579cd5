//! The authorization response (RFC 6749 §4.1.2), as the SPA hands it over in `pageUrl`, and
//! the redemption of its code.
//!
//! Before a code is redeemed the response must be the one this login asked for: its `state`
//! (compared by the caller, RFC 6749 §10.12), its issuer (RFC 9207) or, when the provider does
//! not name itself, the redirect URI it arrived at (RFC 9700 §4.4, mix-up). After redemption
//! the ID token is checked against the login's nonce and step-up (OIDC Core §3.1.3.7).

use super::http::{safe_code, safe_description, ProviderCall};
use super::id_token::StepUp;
use super::metadata::ProviderMetadata;
use super::token::{self, TokenResponse};
use super::{Provider, Providers};
use crate::clock::Clock;
use crate::error::ApiError;
use crate::secret::Token;
use url::Url;

/// The authorization response parameters of a page URL (RFC 6749 §4.1.2, RFC 9207).
#[derive(Default)]
pub struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
    iss: Option<String>,
}

impl Callback {
    /// The page URL and its authorization response parameters.
    pub fn parse(page_url: &str) -> Result<(Url, Callback), ApiError> {
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

    /// The `state` the page carries, if any.
    pub fn state(&self) -> Option<&str> {
        self.state.as_deref()
    }

    /// Whether this `state` is the login's, compared in constant time (RFC 6749 §10.12).
    pub fn answers(&self, login_state: &Token) -> bool {
        self.state.as_deref().is_some_and(|s| login_state.ct_eq(s))
    }

    /// Whether the page looks like an authorization response (a state with a code or an
    /// error), not a plain page load.
    pub fn is_response(&self) -> bool {
        self.state.is_some() && (self.code.is_some() || self.error.is_some())
    }
}

/// What the login in progress promised: the provider it was started with, its nonce and PKCE
/// verifier, and the operator's step-up requirements sealed with it.
pub struct PendingLogin<'a> {
    pub provider: &'a str,
    pub nonce: &'a Token,
    pub verifier: &'a Token,
    pub step_up: &'a StepUp,
}

/// A completed login: the provider, its tokens, and the ID token's subject when there is one.
pub struct Completed<'p> {
    pub provider: &'p Provider,
    pub tokens: TokenResponse,
    pub sub: Option<String>,
    /// The ID token's `sid`, the provider's session (OIDC Back-Channel Logout 1.0 §2.1).
    pub op_sid: Option<String>,
}

/// Completes the login this callback answers: the provider's error becomes the SPA's, a code
/// is redeemed once the response is known to come from the right provider.
pub async fn complete<'p>(
    client: &awc::Client,
    providers: &'p Providers,
    clock: &Clock,
    login: &PendingLogin<'_>,
    page: &Url,
    callback: &Callback,
) -> Result<Completed<'p>, ApiError> {
    if let Some(error) = &callback.error {
        let code = safe_code(error);
        let description = callback
            .error_description
            .as_deref()
            .map(safe_description)
            .unwrap_or_else(|| format!("the identity provider answered {code}"));
        // The provider's redirect with an error (RFC 6749 §4.1.2.1): a configuration fault
        // (unauthorized_client, invalid_scope, a redirect URI) is logged at error with a hint.
        super::refusal::log(
            "authorization endpoint (redirect)",
            302,
            &super::error_code::OAuthErrorCode::parse(&code),
            callback.error_description.as_deref().unwrap_or_default(),
        );
        return Err(ApiError::ProviderFrontChannel { code, description });
    }
    let Some(code) = &callback.code else {
        return Err(ApiError::InvalidRequest(
            "pageUrl has a state but neither code nor error".into(),
        ));
    };
    let provider = providers.for_session(login.provider)?;
    let metadata = provider.metadata(client).await?;
    check_origin(provider, &metadata, callback.iss.as_deref(), page)?;
    let slot = provider.calls().acquire().await;
    let mut tokens = token::redeem_code(client, &provider.config, &metadata, code, login.verifier)
        .await
        .map_err(|e| e.into_api_error(ProviderCall::CodeRedemption))?;
    drop(slot);
    let now = clock.now();
    if !provider.config.is_openid() && tokens.id_token.is_some() {
        // Not an OpenID Connect login: no nonce was sent, so the token cannot be checked.
        tracing::info!(provider = %provider.id(), "ignoring an ID token from a login without the openid scope");
        tokens.id_token = None;
    }
    let (sub, op_sid) = match &tokens.id_token {
        Some(id_token) => {
            let claims = provider
                .verify_login_id_token(
                    client,
                    &metadata,
                    id_token.expose(),
                    login.nonce,
                    login.step_up,
                    now,
                )
                .await?;
            (Some(claims.sub), claims.sid)
        }
        None if provider.config.is_openid() => {
            return Err(ApiError::AuthorizationError(
                "the provider returned no ID token although the openid scope was requested".into(),
            ))
        }
        None => (None, None),
    };
    Ok(Completed {
        provider,
        tokens,
        sub,
        op_sid,
    })
}

/// Whether the response comes from the provider the login was started with.
fn check_origin(
    provider: &Provider,
    metadata: &ProviderMetadata,
    iss: Option<&str>,
    page: &Url,
) -> Result<(), ApiError> {
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
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_callback_parameters_are_refused() {
        assert!(Callback::parse("https://app.example/?code=a&code=b&state=s").is_err());
        let (_, cb) =
            Callback::parse("https://app.example/?code=a&state=s&other=1").expect("parse");
        assert_eq!(cb.code.as_deref(), Some("a"));
        assert!(Callback::parse("/relative").is_err());
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
