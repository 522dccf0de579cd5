//! The authorization request (RFC 6749 §4.1.1 with PKCE, RFC 7636 §4.3), sent through the
//! browser or pushed first (RFC 9126).
//!
//! The SPA may add parameters (`extraParams`, e.g. `ui_locales`), but only those the operator
//! allows: never one token-handler sets itself (`state`, `code_challenge`, `redirect_uri`…),
//! which would undo the protection it gives, and never one the operator configured (a step-up's
//! `acr_values`), which would let the SPA downgrade the authentication the operator requires.

use super::http::{safe_code, ProviderCall};
use super::{pkce, token, Provider};
use crate::config::{ParMode, ProviderConfig, RESERVED_PARAMS};
use crate::error::ApiError;
use crate::secret::Token;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Deserialize;
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

/// Most `extraParams` one authorization request may carry.
pub const MAX_EXTRA_PARAMS: usize = 32;

/// A parameter the SPA asks to add to the authorization request.
#[derive(Deserialize)]
pub struct ExtraParam {
    key: String,
    value: String,
}

/// The per-login secrets the request carries: `state` (RFC 6749 §10.12), `nonce` (OIDC Core
/// §3.1.2.1) and the PKCE verifier, of which only the S256 challenge leaves us.
pub struct LoginSecrets<'a> {
    pub state: &'a Token,
    pub nonce: &'a Token,
    pub verifier: &'a Token,
}

/// The URL the SPA sends the browser to. The SPA's parameters are checked before anything is
/// fetched; with PAR the request is pushed first and the URL carries only its `request_uri`.
pub async fn authorization_request_url(
    client: &awc::Client,
    provider: &Provider,
    secrets: &LoginSecrets<'_>,
    extra_params: &[ExtraParam],
) -> Result<String, ApiError> {
    let config = &provider.config;
    check_extra_params(config, extra_params)?;
    let metadata = provider.metadata(client).await?;
    let challenge = pkce::s256_challenge(secrets.verifier);
    let mut params: Vec<(&str, &str)> = vec![
        ("client_id", &config.client_id),
        ("redirect_uri", config.redirect_uri.as_str()),
        ("response_type", "code"),
        ("scope", &config.scope),
        ("state", secrets.state.expose()),
        ("code_challenge", &challenge),
        ("code_challenge_method", "S256"),
    ];
    // nonce belongs to OpenID Connect (Core §3.1.2.1); plain OAuth 2.0 servers may refuse it.
    if config.is_openid() {
        params.push(("nonce", secrets.nonce.expose()));
    }
    // The configured parameters, then the SPA's: the names never overlap (checked above).
    params.extend(
        config
            .extra_auth_params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str())),
    );
    params.extend(
        extra_params
            .iter()
            .map(|p| (p.key.as_str(), p.value.as_str())),
    );

    let use_par = match config.par {
        ParMode::Off => false,
        ParMode::Required => true,
        ParMode::Auto => metadata.par_endpoint.is_some() || metadata.par_required,
    };
    if !use_par {
        return Ok(authorization_url(&metadata.authorization_endpoint, &params));
    }
    let endpoint = metadata.par_endpoint.as_ref().ok_or_else(|| {
        ApiError::ProviderNotReady(format!(
            "the identity provider `{}` needs pushed authorization requests but names no pushed_authorization_request_endpoint; configure one",
            provider.id()
        ))
    })?;
    let slot = provider.calls().acquire().await;
    let request_uri = token::push_authorization_request(client, config, endpoint, &params)
        .await
        .map_err(|e| e.into_api_error(ProviderCall::PushedAuthorization))?;
    drop(slot);
    // RFC 9126 §4: the browser carries only client_id and the request_uri.
    Ok(authorization_url(
        &metadata.authorization_endpoint,
        &[
            ("client_id", &config.client_id),
            ("request_uri", &request_uri),
        ],
    ))
}

/// The SPA's parameters: few, none that token-handler or the operator sets, and each one the
/// operator allows.
fn check_extra_params(config: &ProviderConfig, params: &[ExtraParam]) -> Result<(), ApiError> {
    if params.len() > MAX_EXTRA_PARAMS {
        return Err(ApiError::InvalidRequest(format!(
            "at most {MAX_EXTRA_PARAMS} extraParams are accepted"
        )));
    }
    for p in params {
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
    Ok(())
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
}
