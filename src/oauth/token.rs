//! Calls to the token, revocation and userinfo endpoints.
//!
//! Client authentication is `client_secret_basic` (RFC 6749 §2.3.1): the id and secret are
//! form-urlencoded before base64, as the RFC requires and as providers with special characters
//! in their secrets expect.

use super::http::{send_json, CallError};
use super::metadata::ProviderMetadata;
use crate::config::ProviderConfig;
use crate::secret::Token;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use secrecy::ExposeSecret;
use serde::Deserialize;
use url::form_urlencoded::byte_serialize;

/// A successful token response (RFC 6749 §5.1). Debug is redacted by [`Token`].
#[derive(Debug, Deserialize)]
pub struct TokenResponse {
    pub access_token: Token,
    pub token_type: Option<String>,
    #[serde(default, deserialize_with = "number_or_text")]
    pub expires_in: Option<i64>,
    pub refresh_token: Option<Token>,
    pub id_token: Option<Token>,
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

fn basic_auth(config: &ProviderConfig) -> String {
    let id: String = byte_serialize(config.client_id.as_bytes()).collect();
    let secret: String = byte_serialize(config.client_secret.expose_secret().as_bytes()).collect();
    format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")))
}

async fn token_request(
    client: &awc::Client,
    config: &ProviderConfig,
    metadata: &ProviderMetadata,
    form: &[(&str, &str)],
) -> Result<TokenResponse, CallError> {
    let request = client
        .post(metadata.token_endpoint.as_str())
        .timeout(config.timeout)
        .insert_header((awc::http::header::AUTHORIZATION, basic_auth(config)))
        .insert_header((awc::http::header::ACCEPT, "application/json"))
        .send_form(&form);
    let value = send_json(request, "token endpoint").await?;
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
    token_request(
        client,
        config,
        metadata,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", config.redirect_uri.as_str()),
            ("code_verifier", verifier.expose()),
        ],
    )
    .await
}

/// A refresh grant (RFC 6749 §6).
pub async fn refresh(
    client: &awc::Client,
    config: &ProviderConfig,
    metadata: &ProviderMetadata,
    refresh_token: &Token,
) -> Result<TokenResponse, CallError> {
    token_request(
        client,
        config,
        metadata,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token.expose()),
        ],
    )
    .await
}

/// Revokes a token (RFC 7009). `hint` is `refresh_token` or `access_token`.
pub async fn revoke(
    client: &awc::Client,
    config: &ProviderConfig,
    endpoint: &url::Url,
    token: &Token,
    hint: &str,
) -> Result<(), CallError> {
    let request = client
        .post(endpoint.as_str())
        .timeout(config.timeout)
        .insert_header((awc::http::header::AUTHORIZATION, basic_auth(config)))
        .send_form(&[("token", token.expose()), ("token_type_hint", hint)]);
    send_json(request, "revocation endpoint").await.map(|_| ())
}

/// The userinfo answer (OIDC Core §5.3). Signed or encrypted userinfo is not supported.
pub async fn userinfo(
    client: &awc::Client,
    config: &ProviderConfig,
    endpoint: &url::Url,
    access_token: &Token,
) -> Result<serde_json::Value, CallError> {
    let request = client
        .get(endpoint.as_str())
        .timeout(config.timeout)
        .insert_header((
            awc::http::header::AUTHORIZATION,
            format!("Bearer {}", access_token.expose()),
        ))
        .insert_header((awc::http::header::ACCEPT, "application/json"))
        .send();
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
