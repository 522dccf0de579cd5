//! Calls to the token, PAR, revocation and userinfo endpoints.
//!
//! Every client-authenticated call is built by [`authenticated_post`], so the provider's configured
//! client authentication applies to all of them alike.

use super::client_auth::authenticate;
use super::error_code::OAuthErrorCode;
use super::http::{send_ignoring_body, send_json, CallError};
use super::metadata::ProviderMetadata;
use crate::config::{ProviderConfig, TokenRequestHeaders, UserInfoMethod};
use crate::secret::Token;
use serde::Deserialize;
use tracing::Instrument;
use url::Url;

/// A successful token response (RFC 6749 §5.1). Debug is redacted by [`Token`].
#[derive(Debug, Deserialize)]
pub struct TokenResponse {
    pub access_token: Token,
    pub token_type: Option<String>,
    #[serde(default, deserialize_with = "number_or_text")]
    pub expires_in: Option<i64>,
    pub refresh_token: Option<Token>,
    pub id_token: Option<Token>,
    /// RFC 8693 §2.2.1: what a token exchange issued; absent from other grants' answers.
    #[serde(default)]
    pub issued_token_type: Option<String>,
}

/// Some providers send `expires_in` as a string.
fn number_or_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum N {
        Num(i64),
        Text(String),
    }
    Ok(match Option::<N>::deserialize(d)? {
        Some(N::Num(n)) => Some(n),
        Some(N::Text(t)) => t.trim().parse().ok(),
        None => None,
    })
}

/// Posts a client-authenticated form to one of the provider's endpoints.
async fn post_form(
    client: &awc::Client,
    config: &ProviderConfig,
    endpoint: &Url,
    what: &str,
    form: Vec<(String, String)>,
) -> Result<serde_json::Value, CallError> {
    post_form_with_headers(
        client,
        config,
        endpoint,
        what,
        form,
        &TokenRequestHeaders::default(),
    )
    .await
}

/// As [`post_form`], with the configured headers (`token_request_headers`, for the token
/// endpoint only).
async fn post_form_with_headers(
    client: &awc::Client,
    config: &ProviderConfig,
    endpoint: &Url,
    what: &str,
    form: Vec<(String, String)>,
    headers: &TokenRequestHeaders,
) -> Result<serde_json::Value, CallError> {
    let span = crate::telemetry::provider_span(what);
    let request = span.in_scope(|| authenticated_post(client, config, endpoint, form, headers))?;
    send_json(request, what).instrument(span).await
}

/// The client-authenticated form request, sent. The configured `headers` are set before client
/// authentication, which configuration cannot replace (`authorization` is reserved), and are
/// never logged.
fn authenticated_post(
    client: &awc::Client,
    config: &ProviderConfig,
    endpoint: &Url,
    form: Vec<(String, String)>,
    headers: &TokenRequestHeaders,
) -> Result<awc::SendClientRequest, CallError> {
    let authenticated = authenticate(config, endpoint.as_str(), form).map_err(|e| {
        tracing::error!(provider = %config.id, error = %e, "client authentication failed");
        CallError::Unavailable("token-handler could not authenticate to the provider".into())
    })?;
    let mut request = client
        .post(endpoint.as_str())
        .timeout(config.timeout)
        .insert_header((awc::http::header::ACCEPT, "application/json"));
    for (name, value) in headers.iter() {
        request = request.insert_header((name.clone(), value.clone()));
    }
    if let Some(value) = authenticated.authorization {
        request = request.insert_header((awc::http::header::AUTHORIZATION, value));
    }
    crate::telemetry::inject(request.headers_mut());
    Ok(request.send_form(&authenticated.form))
}

pub(crate) fn pairs(items: &[(&str, &str)], extra: &[(String, String)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .chain(extra.iter().cloned())
        .collect()
}

pub(crate) async fn token_request(
    client: &awc::Client,
    config: &ProviderConfig,
    metadata: &ProviderMetadata,
    form: Vec<(String, String)>,
) -> Result<TokenResponse, CallError> {
    let value = post_form_with_headers(
        client,
        config,
        &metadata.token_endpoint,
        "token endpoint",
        form,
        &config.token_request_headers,
    )
    .await?;
    // Some providers (GitHub) answer token errors with 200 and an `error` member.
    if value.get("access_token").is_none() {
        if let Some(error) = value.get("error").and_then(|e| e.as_str()) {
            let error = match OAuthErrorCode::parse(error) {
                // GitHub's names for a dead code or refresh token.
                OAuthErrorCode::Other(code)
                    if code == "bad_verification_code" || code == "bad_refresh_token" =>
                {
                    OAuthErrorCode::InvalidGrant
                }
                other => other,
            };
            let description = value
                .get("error_description")
                .and_then(|d| d.as_str())
                .unwrap_or_default();
            tracing::info!(provider = %config.id, "provider rejected the token request with a 200");
            super::refusal::log("token endpoint", 200, &error, description);
            return Err(CallError::Rejected { status: 200, error });
        }
    }
    let response: TokenResponse = serde_json::from_value(value)
        .map_err(|_| CallError::Unavailable("the provider's token response is not valid".into()))?;
    if let Some(kind) = &response.token_type {
        if !kind.eq_ignore_ascii_case("bearer") {
            return Err(CallError::Unavailable(format!(
                "the provider issued a `{}` token; token-handler forwards Bearer tokens only",
                super::http::safe_code(kind)
            )));
        }
    }
    Ok(response)
}

/// Redeems an authorization code with its PKCE verifier (RFC 6749 §4.1.3, RFC 7636 §4.5).
pub async fn redeem_code(
    client: &awc::Client,
    config: &ProviderConfig,
    metadata: &ProviderMetadata,
    code: &str,
    verifier: &Token,
) -> Result<TokenResponse, CallError> {
    let form = pairs(
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", config.redirect_uri.as_str()),
            ("code_verifier", verifier.expose()),
        ],
        &config.extra_token_params,
    );
    token_request(client, config, metadata, form).await
}

/// A refresh grant (RFC 6749 §6).
pub async fn refresh(
    client: &awc::Client,
    config: &ProviderConfig,
    metadata: &ProviderMetadata,
    refresh_token: &Token,
) -> Result<TokenResponse, CallError> {
    let form = pairs(
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token.expose()),
        ],
        &config.extra_token_params,
    );
    token_request(client, config, metadata, form).await
}

/// Pushes an authorization request (RFC 9126 §2) and returns its `request_uri`.
pub async fn push_authorization_request(
    client: &awc::Client,
    config: &ProviderConfig,
    endpoint: &Url,
    params: &[(&str, &str)],
) -> Result<String, CallError> {
    let value = post_form(
        client,
        config,
        endpoint,
        "pushed authorization request endpoint",
        pairs(params, &[]),
    )
    .await?;
    value
        .get("request_uri")
        .and_then(|v| v.as_str())
        .map(String::from)
        .ok_or_else(|| {
            CallError::Unavailable("the provider's PAR response has no request_uri".into())
        })
}

/// Revokes a token (RFC 7009). `hint` is `refresh_token` or `access_token`.
pub async fn revoke(
    client: &awc::Client,
    config: &ProviderConfig,
    endpoint: &Url,
    token: &Token,
    hint: &str,
) -> Result<(), CallError> {
    let form = pairs(&[("token", token.expose()), ("token_type_hint", hint)], &[]);
    let request = authenticated_post(
        client,
        config,
        endpoint,
        form,
        &TokenRequestHeaders::default(),
    )?;
    send_ignoring_body(request, "revocation endpoint").await
}

/// The userinfo answer (OIDC Core §5.3), or a plain OAuth 2.0 provider's user API (GitHub's
/// `/user`). Signed or encrypted userinfo is not supported.
///
/// The access token goes in the `Authorization` header with either method (OIDC Core §5.3.1,
/// RFC 6750 §2.1), never in a form body or query, where servers log it. A POST carries an empty
/// form body, as the OAuth Agent's reference implementations send it.
pub async fn userinfo(
    client: &awc::Client,
    config: &ProviderConfig,
    endpoint: &Url,
    access_token: &Token,
    method: UserInfoMethod,
) -> Result<serde_json::Value, CallError> {
    let request = match method {
        UserInfoMethod::Get => client.get(endpoint.as_str()),
        UserInfoMethod::Post => client.post(endpoint.as_str()).insert_header((
            awc::http::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )),
    }
    .timeout(config.timeout)
    .insert_header((
        awc::http::header::AUTHORIZATION,
        format!("Bearer {}", access_token.expose()),
    ))
    .insert_header((awc::http::header::ACCEPT, "application/json"));
    let request = match method {
        UserInfoMethod::Get => request.send(),
        UserInfoMethod::Post => request.send_body(""),
    };
    send_json(request, "userinfo endpoint").await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires_in_may_be_text() {
        let r: TokenResponse =
            serde_json::from_str(r#"{"access_token":"a","expires_in":"3600"}"#).expect("parse");
        assert_eq!(r.expires_in, Some(3600));
        let r: TokenResponse =
            serde_json::from_str(r#"{"access_token":"a","expires_in":60}"#).expect("parse");
        assert_eq!(r.expires_in, Some(60));
    }

    #[test]
    fn debug_of_a_token_response_is_redacted() {
        let r: TokenResponse = serde_json::from_str(
            r#"{"access_token":"AT-SECRET","refresh_token":"RT-SECRET","id_token":"ID-SECRET"}"#,
        )
        .expect("parse");
        let debug = format!("{r:?}");
        assert!(!debug.contains("SECRET"), "{debug}");
    }
}
