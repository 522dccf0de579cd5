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
    /// Authentication Context Class Reference (OIDC Core §2).
    pub acr: Option<String>,
    /// When the user authenticated (OIDC Core §2), Unix seconds.
    pub auth_time: Option<i64>,
}

/// The operator's step-up requirements for a login (configured `acr_values` and `max_age`),
/// enforced on the ID token the login returns (OIDC Core §3.1.3.7 items 12 and 13). Values the
/// SPA asks for on its own are not enforced here: `acr_values` is a request for a voluntary
/// claim (OIDC Core §3.1.2.1), and the SPA can read `acr` and `auth_time` from `/claims`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepUp {
    /// The ID token's `acr` must be one of these (when non-empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acr_values: Vec<String>,
    /// The ID token's `auth_time` must be present and at most this many seconds old.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<u64>,
}

impl StepUp {
    /// Whether there is nothing to enforce.
    pub fn is_empty(&self) -> bool {
        self.acr_values.is_empty() && self.max_age.is_none()
    }
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
    /// The operator's `acr_values` and `max_age` for a login; `None` for a refresh (the
    /// refreshed token restates the original authentication, already checked at login).
    pub step_up: Option<&'a StepUp>,
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
    check_claims(&claims, expected)?;
    Ok(claims)
}

/// The checks after the signature: time, audience, nonce, subject and step-up.
fn check_claims(claims: &IdTokenClaims, expected: &Expected<'_>) -> Result<(), String> {
    let now = expected.now;
    // Saturating: `exp` and `iat` come from the provider and may be anything up to i64::MAX.
    if claims.exp.saturating_add(LEEWAY_SECONDS) <= now {
        return Err("the ID token has expired".into());
    }
    if claims.iat > now.saturating_add(LEEWAY_SECONDS) {
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
    if let Some(step_up) = expected.step_up {
        check_step_up(claims, step_up, now)?;
    }
    Ok(())
}

/// OIDC Core §3.1.3.7 item 12: the `acr` asserted must be one the operator asked for (a
/// provider may answer a lower level than requested, §3.1.2.1 makes `acr_values` voluntary).
/// Item 13: with `max_age`, `auth_time` must be present (§3.1.2.1 makes it REQUIRED then) and
/// no older than `max_age`, with the usual clock leeway.
fn check_step_up(claims: &IdTokenClaims, step_up: &StepUp, now: i64) -> Result<(), String> {
    if !step_up.acr_values.is_empty() {
        match &claims.acr {
            Some(acr) if step_up.acr_values.iter().any(|a| a == acr) => {}
            Some(_) => {
                return Err("the ID token's acr is not one of the configured acr_values".to_string())
            }
            None => {
                return Err("the ID token has no acr although acr_values are configured".to_string())
            }
        }
    }
    if let Some(max_age) = step_up.max_age {
        let Some(auth_time) = claims.auth_time else {
            return Err("the ID token has no auth_time although max_age is configured".into());
        };
        let max_age = i64::try_from(max_age).unwrap_or(i64::MAX);
        if auth_time
            .saturating_add(max_age)
            .saturating_add(LEEWAY_SECONDS)
            < now
        {
            return Err(
                "the ID token's auth_time is older than the configured max_age".to_string(),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn claims(exp: i64, iat: i64) -> IdTokenClaims {
        IdTokenClaims {
            iss: "https://op.example".into(),
            sub: "alice".into(),
            aud: Audience::One("spa".into()),
            exp,
            iat,
            nonce: Some("n".into()),
            azp: None,
            acr: None,
            auth_time: None,
        }
    }

    fn check(c: &IdTokenClaims, step_up: Option<&StepUp>) -> Result<(), String> {
        let nonce = Token::new("n");
        check_claims(
            c,
            &Expected {
                issuer: "https://op.example",
                client_id: "spa",
                nonce: Some(&nonce),
                subject: None,
                step_up,
                now: NOW,
            },
        )
    }

    #[test]
    fn extreme_exp_and_iat_do_not_overflow() {
        assert!(check(&claims(i64::MAX, NOW), None).is_ok());
        assert!(check(&claims(i64::MAX - 1, i64::MAX), None).is_err());
        assert!(check(&claims(i64::MIN, NOW), None).is_err());
        assert!(check(&claims(NOW + 300, i64::MIN), None).is_ok());
        let mut c = claims(NOW + 300, NOW);
        c.auth_time = Some(i64::MAX);
        let step_up = StepUp {
            acr_values: Vec::new(),
            max_age: Some(u64::MAX),
        };
        assert!(check(&c, Some(&step_up)).is_ok());
        c.auth_time = Some(i64::MIN);
        assert!(check(&c, Some(&step_up)).is_err());
    }

    #[test]
    fn configured_acr_values_are_enforced() {
        let step_up = StepUp {
            acr_values: vec!["urn:mfa".into(), "urn:hwk".into()],
            max_age: None,
        };
        let mut c = claims(NOW + 300, NOW);
        assert!(check(&c, Some(&step_up)).is_err(), "no acr");
        c.acr = Some("urn:pwd".into());
        assert!(check(&c, Some(&step_up)).is_err(), "lower acr");
        c.acr = Some("urn:hwk".into());
        assert!(check(&c, Some(&step_up)).is_ok());
        // Nothing configured: whatever acr the provider asserts is the SPA's business.
        c.acr = Some("urn:pwd".into());
        assert!(check(&c, Some(&StepUp::default())).is_ok());
        assert!(check(&c, None).is_ok());
    }

    #[test]
    fn configured_max_age_needs_a_recent_auth_time() {
        let step_up = StepUp {
            acr_values: Vec::new(),
            max_age: Some(300),
        };
        let mut c = claims(NOW + 300, NOW);
        assert!(check(&c, Some(&step_up)).is_err(), "no auth_time");
        c.auth_time = Some(NOW - 300 - LEEWAY_SECONDS);
        assert!(check(&c, Some(&step_up)).is_ok(), "at the limit");
        c.auth_time = Some(NOW - 301 - LEEWAY_SECONDS);
        assert!(check(&c, Some(&step_up)).is_err(), "too old");
        c.auth_time = Some(NOW - 10);
        assert!(check(&c, Some(&step_up)).is_ok());
    }
}
