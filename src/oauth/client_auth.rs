//! Client authentication at the token, PAR and revocation endpoints, one method per provider.
//!
//! The same method serves every endpoint, as OAuth expects of a registered client. Form values
//! are URL-encoded by the form serializer; for `client_secret_basic` the id and secret are also
//! form-encoded before base64 (RFC 6749 §2.3.1), which providers with special characters in their
//! secrets rely on.

use crate::clock::system_now;
use crate::config::{ClientAuth, ProviderConfig};
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

#[derive(Serialize)]
struct Assertion<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    jti: String,
    iat: u64,
    exp: u64,
}

/// Adds client authentication to `form` for a request to `audience` (the endpoint's URL).
pub fn authenticate(
    config: &ProviderConfig,
    audience: &str,
    mut form: Vec<(String, String)>,
) -> Result<Authenticated, String> {
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
        ClientAuth::PrivateKeyJwt { key, alg, kid } => {
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
                    aud: audience,
                    jti: random_token().expose().to_string(),
                    iat: now,
                    exp: now + ASSERTION_LIFETIME,
                },
                key,
            )
            .map_err(|e| format!("the client assertion could not be signed: {e}"))?;
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
