//! Client authentication at the token, PAR and revocation endpoints, one method per provider.
//!
//! The same method serves every endpoint, as OAuth expects of a registered client. Form values
//! are URL-encoded by the form serializer; for `client_secret_basic` the id and secret are also
//! form-encoded before base64 (RFC 6749 §2.3.1), which providers with special characters in their
//! secrets rely on.

use crate::clock::system_now;
use crate::config::{AssertionAudience, ClientAuth, ProviderConfig};
use crate::secret::random_token;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use jsonwebtoken::{encode, Header};
use secrecy::ExposeSecret;
use serde::Serialize;
use url::form_urlencoded::byte_serialize;

/// How long a client assertion is valid (RFC 7523 §3: short).
const ASSERTION_LIFETIME: u64 = 60;

/// A form to post, with the `Authorization` header the method needs (if any).
pub struct Authenticated {
    pub authorization: Option<String>,
    pub form: Vec<(String, String)>,
}

/// Why client authentication could not be added to a request (our fault: a 502 for the SPA,
/// the cause in the log).
#[derive(Debug, thiserror::Error)]
pub enum ClientAuthError {
    /// RFC 7523 §3: the `private_key_jwt` assertion could not be signed with the configured key.
    #[error("the client assertion could not be signed: {0}")]
    Assertion(jsonwebtoken::errors::Error),
}

#[derive(Serialize)]
struct Assertion<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    jti: String,
    iat: u64,
    exp: u64,
}

/// Adds client authentication to `form` for a request to `endpoint` (the endpoint's URL).
pub fn authenticate(
    config: &ProviderConfig,
    endpoint: &str,
    mut form: Vec<(String, String)>,
) -> Result<Authenticated, ClientAuthError> {
    let mut authorization = None;
    // A pushed authorization request already names the client; RFC 6749 §3.1 forbids repeats.
    if !form.iter().any(|(k, _)| k == "client_id") {
        form.push(("client_id".into(), config.client_id.clone()));
    }
    match &config.client_auth {
        ClientAuth::SecretBasic(secret) => {
            let id: String = byte_serialize(config.client_id.as_bytes()).collect();
            let secret: String = byte_serialize(secret.expose_secret().as_bytes()).collect();
            authorization = Some(format!(
                "Basic {}",
                STANDARD.encode(format!("{id}:{secret}"))
            ));
        }
        ClientAuth::SecretPost(secret) => {
            form.push(("client_secret".into(), secret.expose_secret().to_string()));
        }
        ClientAuth::PrivateKeyJwt {
            key,
            alg,
            kid,
            audience,
        } => {
            // RFC 7523 §3 item 3; FAPI 2.0 / RFC 7523bis: the issuer when the provider asks.
            let aud = match audience {
                AssertionAudience::Endpoint => endpoint,
                AssertionAudience::Issuer => config.issuer.as_str(),
            };
            // The provider checks iat/exp against its own clock, so this uses the wall clock,
            // not the (test-adjustable) application clock.
            let now = u64::try_from(system_now()).unwrap_or(0);
            let mut header = Header::new(*alg);
            header.kid = kid.clone();
            let assertion = encode(
                &header,
                &Assertion {
                    iss: &config.client_id,
                    sub: &config.client_id,
                    aud,
                    jti: random_token().expose().to_string(),
                    iat: now,
                    exp: now.saturating_add(ASSERTION_LIFETIME),
                },
                key,
            )
            .map_err(ClientAuthError::Assertion)?;
            form.push((
                "client_assertion_type".into(),
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
            ));
            form.push(("client_assertion".into(), assertion));
        }
        ClientAuth::None => {}
    }
    Ok(Authenticated {
        authorization,
        form,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use p256::pkcs8::EncodePrivateKey;

    /// A provider with `private_key_jwt` and a fresh P-256 key; `extra` is more TOML.
    fn jwt_provider(dir: &std::path::Path, extra: &str) -> ProviderConfig {
        let secret = loop {
            if let Ok(key) = p256::SecretKey::from_slice(&rand::random::<[u8; 32]>()) {
                break key;
            }
        };
        let der = secret.to_pkcs8_der().expect("der");
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            STANDARD.encode(der.as_bytes())
        );
        let file = dir.join("client.pem");
        std::fs::write(&file, pem).expect("write pem");
        let toml = crate::config::test_toml("", &format!(
            "[[providers]]\nid = \"p\"\nissuer = \"https://login.example.com/tenant\"\nclient_id = \"c\"\nredirect_uri = \"https://www.example.com/\"\nclient_auth = \"private_key_jwt\"\nprivate_key_file = {:?}\n{extra}\n",
            file.display().to_string()
        ));
        Config::from_toml(&toml, Vec::new())
            .expect("valid")
            .providers
            .remove(0)
    }

    fn assertion_aud(config: &ProviderConfig) -> serde_json::Value {
        let auth = authenticate(config, "https://login.example.com/tenant/token", Vec::new())
            .expect("signed");
        let (_, assertion) = auth
            .form
            .iter()
            .find(|(k, _)| k == "client_assertion")
            .expect("assertion");
        jsonwebtoken::dangerous::insecure_decode::<serde_json::Value>(assertion)
            .expect("decode")
            .claims["aud"]
            .clone()
    }

    #[test]
    fn client_assertions_name_the_endpoint_or_the_issuer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let default = jwt_provider(dir.path(), "");
        assert_eq!(
            assertion_aud(&default),
            "https://login.example.com/tenant/token"
        );
        let fapi = jwt_provider(dir.path(), "client_assertion_audience = \"issuer\"");
        // FAPI 2.0 / RFC 7523bis: the issuer, as one string (not an array).
        assert_eq!(assertion_aud(&fapi), "https://login.example.com/tenant");
    }
}
