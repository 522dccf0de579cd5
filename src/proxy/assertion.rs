//! Signed assertions: a short-lived JWT that tells an upstream who is calling, in the header a
//! route names (`assertion_header`), verifiable against the key token-handler publishes at
//! `GET /jwks` on its metrics listener (never the public one).
//!
//! Identity headers are only as trustworthy as the network between token-handler and the API:
//! anything that can reach the API can send `x-user-sub`. An assertion cannot be forged without
//! the key, names the API it is for (`aud`), so it cannot be replayed at another route's
//! upstream, and lives [`LIFETIME_SECONDS`], so a logged one is soon worthless (RFC 7519 §4.1).
//! The key (ES256, RFC 7518 §3.4) is generated at start and lives only in memory: nothing to
//! leak from disk, and a restart rotates it. Each process has its own, so with several replicas
//! an upstream fetches every replica's JWKS (docs/security.md).

use crate::state::State;
use actix_web::{HttpResponse, ResponseError};
use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::pkcs8::EncodePrivateKey;
use serde::Serialize;

/// How long an assertion is valid: one request's time to reach the upstream, with room for
/// clock skew, and no more.
pub const LIFETIME_SECONDS: i64 = 60;

/// The signing key and its public JWK.
pub struct AssertionSigner {
    key: EncodingKey,
    kid: String,
    jwks: JwkSet,
    issuer: String,
}

impl std::fmt::Debug for AssertionSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AssertionSigner")
            .field("kid", &self.kid)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    iat: i64,
    exp: i64,
    jti: String,
}

impl AssertionSigner {
    /// The same key under another issuer (a reload changed the first trusted origin): the APIs
    /// that cached the key at `/jwks` keep verifying.
    pub fn reissued(&self, issuer: String) -> Self {
        Self {
            key: self.key.clone(),
            kid: self.kid.clone(),
            jwks: self.jwks.clone(),
            issuer,
        }
    }

    /// The `iss` of every assertion.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// A fresh P-256 key; `issuer` goes in every assertion's `iss`.
    pub fn generate(issuer: String) -> Result<Self, String> {
        let secret = loop {
            // A random 32-byte string is a valid P-256 scalar except with negligible probability.
            if let Ok(key) = p256::SecretKey::from_slice(&rand::random::<[u8; 32]>()) {
                break key;
            }
        };
        let der = secret
            .to_pkcs8_der()
            .map_err(|e| format!("cannot encode the assertion key: {e}"))?;
        let key = EncodingKey::from_ec_der(der.as_bytes());
        let mut jwk = Jwk::from_encoding_key(&key, Algorithm::ES256)
            .map_err(|e| format!("cannot derive the assertion key's JWK: {e}"))?;
        // The RFC 7638 thumbprint: a key id that changes with the key.
        let kid = jwk.thumbprint(ThumbprintHash::SHA256);
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        jwk.common.key_algorithm = Some(jsonwebtoken::jwk::KeyAlgorithm::ES256);
        Ok(Self {
            key,
            kid,
            jwks: JwkSet { keys: vec![jwk] },
            issuer,
        })
    }

    /// The public key set, as served at `/jwks`.
    pub fn jwks(&self) -> &JwkSet {
        &self.jwks
    }

    /// An assertion that `sub` is calling `audience` (the route's upstream), as of `now`.
    pub fn sign(&self, sub: &str, audience: &str, now: i64) -> Result<String, String> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        header.typ = Some("JWT".into());
        let claims = Claims {
            iss: &self.issuer,
            sub,
            aud: audience,
            iat: now,
            exp: now + LIFETIME_SECONDS,
            jti: crate::secret::random_token().expose().to_string(),
        };
        jsonwebtoken::encode(&header, &claims, &self.key).map_err(|e| e.to_string())
    }
}

/// `GET /jwks` on the metrics listener: the assertion key (RFC 7517 §5). 404 when no route
/// asks for assertions.
pub async fn jwks(state: State) -> HttpResponse {
    match &state.assertions {
        Some(signer) => HttpResponse::Ok()
            .insert_header(("cache-control", "no-cache"))
            .json(signer.jwks()),
        None => crate::error::ApiError::NotFound.error_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{decode, DecodingKey, Validation};

    #[test]
    fn assertions_verify_against_the_published_key_and_name_their_audience() {
        let signer = AssertionSigner::generate("https://app.example.test".into()).expect("key");
        assert!(!format!("{signer:?}").contains("key:"));
        let token = signer
            .sign("alice", "http://orders:9001/", 1_000)
            .expect("sign");
        let jwk = &signer.jwks().keys[0];
        let mut v = Validation::new(Algorithm::ES256);
        v.set_audience(&["http://orders:9001/"]);
        v.set_issuer(&["https://app.example.test"]);
        v.validate_exp = false;
        let claims =
            decode::<serde_json::Value>(&token, &DecodingKey::from_jwk(jwk).expect("jwk"), &v)
                .expect("verifies")
                .claims;
        assert_eq!(claims["sub"], "alice");
        assert_eq!(claims["exp"], 1_060);
        v.set_audience(&["http://billing:9002/"]);
        assert!(
            decode::<serde_json::Value>(&token, &DecodingKey::from_jwk(jwk).expect("jwk"), &v)
                .is_err()
        );
    }
}
