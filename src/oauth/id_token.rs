//! ID-token validation (OIDC Core §3.1.3.7).
//!
//! Signature with the provider's JWKS (asymmetric algorithms only: an HMAC-signed token would be
//! keyed with the client secret, and `none` is never acceptable), then `iss`, `aud`, `azp`,
//! `exp`, `iat` and `nonce`. Time checks read our [`Clock`](crate::clock::Clock) rather than the
//! library's, so there is one notion of "now" everywhere.

use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};

use crate::secret::Token;

/// Clock skew tolerated between us and the provider.
pub const LEEWAY_SECONDS: i64 = 60;

/// The only signature algorithms accepted: asymmetric ones. `none` never, and HMAC would be
/// keyed with the client secret, which an ID token must not depend on.
pub const ACCEPTED_ALGORITHMS: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// `aud` is a string or an array of strings (OIDC Core §2).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn contains(&self, client_id: &str) -> bool {
        match self {
            Audience::One(a) => a == client_id,
            Audience::Many(list) => list.iter().any(|a| a == client_id),
        }
    }

    fn len(&self) -> usize {
        match self {
            Audience::One(_) => 1,
            Audience::Many(list) => list.len(),
        }
    }
}

/// The claims token-handler checks. Other claims are kept in the token and shown by `/claims`.
#[derive(Debug, Clone, Deserialize)]
pub struct IdTokenClaims {
    pub iss: String,
    pub sub: String,
    pub aud: Audience,
    pub exp: i64,
    pub iat: i64,
    pub nonce: Option<String>,
    pub azp: Option<String>,
}

/// What the token must say.
pub struct Expected<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    /// The nonce sent in the authorization request; `None` for tokens from a refresh, which
    /// carry no fresh nonce (OIDC Core §12.2).
    pub nonce: Option<&'a Token>,
    /// The subject of the existing session, for tokens from a refresh (OIDC Core §12.2).
    pub subject: Option<&'a str>,
    pub now: i64,
}

/// The algorithm and key id from the token header, refusing algorithms we never accept.
pub fn header(token: &str) -> Result<(Algorithm, Option<String>), String> {
    let header = decode_header(token).map_err(|e| format!("malformed ID token: {e}"))?;
    if !ACCEPTED_ALGORITHMS.contains(&header.alg) {
        return Err(format!(
            "the ID token is signed with {:?}, which token-handler does not accept",
            header.alg
        ));
    }
    Ok((header.alg, header.kid))
}

/// Verifies the signature with `key` and checks every claim.
pub fn verify(
    token: &str,
    alg: Algorithm,
    key: &DecodingKey,
    expected: &Expected<'_>,
) -> Result<IdTokenClaims, String> {
    let mut validation = Validation::new(alg);
    validation.algorithms = vec![alg];
    validation.set_issuer(&[expected.issuer]);
    validation.set_audience(&[expected.client_id]);
    validation.set_required_spec_claims(&["iss", "aud", "sub", "exp", "iat"]);
    // Time is checked below with our clock.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    let claims = decode::<IdTokenClaims>(token, key, &validation)
        .map_err(|e| format!("the ID token is not valid: {e}"))?
        .claims;

    let now = expected.now;
    if claims.exp + LEEWAY_SECONDS <= now {
        return Err("the ID token has expired".into());
    }
    if claims.iat > now + LEEWAY_SECONDS {
        return Err("the ID token was issued in the future; check the clocks".into());
    }
    if !claims.aud.contains(expected.client_id) {
        return Err("the ID token is not for this client".into());
    }
    // OIDC Core §3.1.3.7 items 4 and 5.
    if claims.aud.len() > 1 && claims.azp.is_none() {
        return Err("the ID token has several audiences but no azp".into());
    }
    if let Some(azp) = &claims.azp {
        if azp != expected.client_id {
            return Err("the ID token's azp is another client".into());
        }
    }
    match (expected.nonce, &claims.nonce) {
        (Some(want), Some(got)) if want.ct_eq(got) => {}
        (Some(_), _) => return Err("the ID token's nonce does not match the login".into()),
        (None, _) => {}
    }
    if let Some(sub) = expected.subject {
        if sub != claims.sub {
            return Err("the refreshed ID token is for another subject".into());
        }
    }
    Ok(claims)
}
