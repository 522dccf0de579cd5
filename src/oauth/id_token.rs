//! ID-token validation (OIDC Core §3.1.3.7).
//!
//! Signature first, then `iss`, `aud`, `azp`, `exp`, `iat` and `nonce`. Which algorithm and
//! which key is the provider's configuration's choice ([`IdTokenSigning`]), never the token's
//! own header: by default asymmetric algorithms with a key from the provider's JWKS; with
//! `id_token_signing_alg = "HS256"` (or HS384, HS512) only that HMAC keyed with the client
//! secret (OIDC Core §10.1), and then no asymmetric key at all. `none` is never acceptable.
//! Mixing the two would open algorithm confusion (RFC 8725 §2.1, §3.1): an RSA public key is
//! public, so a token "HMAC-signed with the public key" could be forged by anyone. Time checks
//! read our [`Clock`](crate::clock::Clock) rather than the library's, so there is one notion of
//! "now" everywhere.

use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use std::fmt;

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

/// The HMAC algorithms a provider may be configured to sign ID tokens with, and the least
/// length of the client secret in bytes for each: the size of the hash (RFC 7518 §3.2).
pub const HMAC_ALGORITHMS: [(Algorithm, usize); 3] = [
    (Algorithm::HS256, 32),
    (Algorithm::HS384, 48),
    (Algorithm::HS512, 64),
];

/// How a provider signs its ID tokens, from its configuration (`id_token_signing_alg`). The
/// token's header must name exactly what this allows; it never picks the key or the algorithm
/// family (RFC 8725 §3.1).
#[derive(Clone)]
pub enum IdTokenSigning {
    /// Asymmetric, with a key from the provider's JWKS: any of [`ACCEPTED_ALGORITHMS`]
    /// (`None`, the default), or only the configured one.
    Jwks(Option<Algorithm>),
    /// HMAC keyed with the UTF-8 octets of the client secret (OIDC Core §10.1), only this
    /// algorithm (one of [`HMAC_ALGORITHMS`]); the JWKS is never consulted.
    ClientSecret {
        alg: Algorithm,
        secret: SecretString,
    },
}

impl Default for IdTokenSigning {
    fn default() -> Self {
        IdTokenSigning::Jwks(None)
    }
}

impl fmt::Debug for IdTokenSigning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdTokenSigning::Jwks(None) => write!(f, "Jwks(any asymmetric)"),
            IdTokenSigning::Jwks(Some(alg)) => write!(f, "Jwks({alg:?})"),
            IdTokenSigning::ClientSecret { alg, .. } => {
                write!(f, "ClientSecret({alg:?}, secret=<redacted>)")
            }
        }
    }
}

impl IdTokenSigning {
    /// Whether a token whose header names `alg` may be verified at all.
    pub fn accepts(&self, alg: Algorithm) -> bool {
        match self {
            IdTokenSigning::Jwks(None) => ACCEPTED_ALGORITHMS.contains(&alg),
            IdTokenSigning::Jwks(Some(pinned)) => {
                alg == *pinned && ACCEPTED_ALGORITHMS.contains(&alg)
            }
            IdTokenSigning::ClientSecret { alg: pinned, .. } => {
                alg == *pinned && HMAC_ALGORITHMS.iter().any(|(a, _)| *a == alg)
            }
        }
    }

    /// The HMAC key, when ID tokens are signed with the client secret; `None`: use the JWKS.
    pub fn client_secret_key(&self) -> Option<DecodingKey> {
        match self {
            IdTokenSigning::ClientSecret { secret, .. } => {
                Some(DecodingKey::from_secret(secret.expose_secret().as_bytes()))
            }
            IdTokenSigning::Jwks(_) => None,
        }
    }
}

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
    /// The provider's session id (OIDC Back-Channel Logout 1.0 §2.1), sealed into the session
    /// so a logout token naming it ends this session.
    #[serde(default)]
    pub sid: Option<String>,
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

/// Why an ID token was refused. The reason is for the log only: the client is told one stable
/// message whatever failed ([`crate::oauth::provider::ID_TOKEN_REJECTED`]).
#[derive(Debug, thiserror::Error)]
pub enum IdTokenError {
    #[error("malformed ID token: {0}")]
    Malformed(jsonwebtoken::errors::Error),
    #[error("the ID token is signed with {0:?}, which token-handler does not accept")]
    Algorithm(Algorithm),
    /// Signature, `iss`, `aud` or a required claim (the library's checks).
    #[error("the ID token is not valid: {0}")]
    Invalid(jsonwebtoken::errors::Error),
    #[error("the ID token has expired")]
    Expired,
    #[error("the ID token was issued in the future; check the clocks")]
    IssuedInFuture,
    #[error("the ID token is not for this client")]
    NotForThisClient,
    /// OIDC Core §3.1.3.7 items 4 and 5.
    #[error("the ID token has several audiences but no azp")]
    SeveralAudiencesWithoutAzp,
    #[error("the ID token's azp is another client")]
    AzpIsAnotherClient,
    #[error("the ID token's nonce does not match the login")]
    NonceMismatch,
    /// OIDC Core §12.2.
    #[error("the refreshed ID token is for another subject")]
    SubjectChanged,
    #[error("the ID token's acr is not one of the configured acr_values")]
    AcrNotConfigured,
    #[error("the ID token has no acr although acr_values are configured")]
    NoAcr,
    #[error("the ID token has no auth_time although max_age is configured")]
    NoAuthTime,
    #[error("the ID token's auth_time is older than the configured max_age")]
    AuthenticationTooOld,
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

/// The algorithm and key id from the token header, refusing every algorithm the provider's
/// configuration does not allow (`none` and, by default, HMAC included).
pub fn header(
    token: &str,
    signing: &IdTokenSigning,
) -> Result<(Algorithm, Option<String>), IdTokenError> {
    let header = decode_header(token).map_err(IdTokenError::Malformed)?;
    if !signing.accepts(header.alg) {
        return Err(IdTokenError::Algorithm(header.alg));
    }
    Ok((header.alg, header.kid))
}

/// Verifies the signature with `key` and checks every claim.
pub fn verify(
    token: &str,
    alg: Algorithm,
    key: &DecodingKey,
    expected: &Expected<'_>,
) -> Result<IdTokenClaims, IdTokenError> {
    let mut validation = Validation::new(alg);
    validation.algorithms = vec![alg];
    validation.set_issuer(&[expected.issuer]);
    validation.set_audience(&[expected.client_id]);
    validation.set_required_spec_claims(&["iss", "aud", "sub", "exp", "iat"]);
    // Time is checked below with our clock.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    let claims = decode::<IdTokenClaims>(token, key, &validation)
        .map_err(IdTokenError::Invalid)?
        .claims;
    check_claims(&claims, expected)?;
    Ok(claims)
}

/// The checks after the signature: time, audience, nonce, subject and step-up.
fn check_claims(claims: &IdTokenClaims, expected: &Expected<'_>) -> Result<(), IdTokenError> {
    let now = expected.now;
    // Saturating: `exp` and `iat` come from the provider and may be anything up to i64::MAX.
    if claims.exp.saturating_add(LEEWAY_SECONDS) <= now {
        return Err(IdTokenError::Expired);
    }
    if claims.iat > now.saturating_add(LEEWAY_SECONDS) {
        return Err(IdTokenError::IssuedInFuture);
    }
    if !claims.aud.contains(expected.client_id) {
        return Err(IdTokenError::NotForThisClient);
    }
    // OIDC Core §3.1.3.7 items 4 and 5.
    if claims.aud.len() > 1 && claims.azp.is_none() {
        return Err(IdTokenError::SeveralAudiencesWithoutAzp);
    }
    if let Some(azp) = &claims.azp {
        if azp != expected.client_id {
            return Err(IdTokenError::AzpIsAnotherClient);
        }
    }
    match (expected.nonce, &claims.nonce) {
        (Some(want), Some(got)) if want.ct_eq(got) => {}
        (Some(_), _) => return Err(IdTokenError::NonceMismatch),
        (None, _) => {}
    }
    if let Some(sub) = expected.subject {
        if sub != claims.sub {
            return Err(IdTokenError::SubjectChanged);
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
fn check_step_up(claims: &IdTokenClaims, step_up: &StepUp, now: i64) -> Result<(), IdTokenError> {
    if !step_up.acr_values.is_empty() {
        match &claims.acr {
            Some(acr) if step_up.acr_values.iter().any(|a| a == acr) => {}
            Some(_) => return Err(IdTokenError::AcrNotConfigured),
            None => return Err(IdTokenError::NoAcr),
        }
    }
    if let Some(max_age) = step_up.max_age {
        let Some(auth_time) = claims.auth_time else {
            return Err(IdTokenError::NoAuthTime);
        };
        let max_age = i64::try_from(max_age).unwrap_or(i64::MAX);
        if auth_time
            .saturating_add(max_age)
            .saturating_add(LEEWAY_SECONDS)
            < now
        {
            return Err(IdTokenError::AuthenticationTooOld);
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
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
            sid: None,
        }
    }

    fn check(c: &IdTokenClaims, step_up: Option<&StepUp>) -> Result<(), IdTokenError> {
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

    /// The tests below run the whole of [`header`] and [`verify`] on tokens signed by a test
    /// key: the cases a real provider cannot be made to produce.
    pub(crate) mod signed {
        use super::*;
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use base64::Engine;
        use jsonwebtoken::{encode, EncodingKey, Header};
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        use p256::pkcs8::EncodePrivateKey;
        use serde_json::{json, Value};

        const ISSUER: &str = "https://op.example";
        const CLIENT: &str = "spa";
        const CLIENT_SECRET: &[u8] = b"the-client-secret";

        /// A fresh P-256 key pair, as a provider's ES256 signing key and its JWK (also the
        /// logout-token tests' provider key).
        pub(crate) fn key_pair() -> (EncodingKey, DecodingKey) {
            let secret = loop {
                if let Ok(key) = p256::SecretKey::from_slice(&rand::random::<[u8; 32]>()) {
                    break key;
                }
            };
            let der = secret.to_pkcs8_der().expect("der");
            let point = secret.public_key().to_encoded_point(false);
            let (x, y) = (
                URL_SAFE_NO_PAD.encode(point.x().expect("x")),
                URL_SAFE_NO_PAD.encode(point.y().expect("y")),
            );
            (
                EncodingKey::from_ec_der(der.as_bytes()),
                DecodingKey::from_ec_components(&x, &y).expect("public key"),
            )
        }

        /// The claims of a good login ID token.
        fn good() -> Value {
            json!({
                "iss": ISSUER,
                "sub": "alice",
                "aud": CLIENT,
                "exp": NOW + 300,
                "iat": NOW,
                "nonce": "n",
            })
        }

        fn with(changes: Value) -> Value {
            let mut claims = good();
            for (k, v) in changes.as_object().expect("object") {
                if v.is_null() {
                    claims.as_object_mut().expect("object").remove(k);
                } else {
                    claims[k] = v.clone();
                }
            }
            claims
        }

        fn sign(claims: &Value, key: &EncodingKey) -> String {
            encode(&Header::new(Algorithm::ES256), claims, key).expect("sign")
        }

        /// A login's expectations: nonce `n`, no subject yet, the given step-up.
        fn login(step_up: Option<&StepUp>, run: impl FnOnce(&Expected<'_>)) {
            let nonce = Token::new("n");
            run(&Expected {
                issuer: ISSUER,
                client_id: CLIENT,
                nonce: Some(&nonce),
                subject: None,
                step_up,
                now: NOW,
            })
        }

        /// What a real caller does: the header's algorithm, then the signature and claims.
        fn check(token: &str, key: &DecodingKey, expected: &Expected<'_>) -> Result<(), String> {
            let (alg, _) = header(token, &IdTokenSigning::default()).map_err(|e| e.to_string())?;
            verify(token, alg, key, expected)
                .map(|_| ())
                .map_err(|e| e.to_string())
        }

        fn refused(token: &str, key: &DecodingKey, step_up: Option<&StepUp>, why: &str) {
            login(step_up, |e| match check(token, key, e) {
                Ok(()) => panic!("accepted a token that should fail: {why}"),
                Err(reason) => assert!(reason.contains(why), "{why}: {reason}"),
            });
        }

        #[test]
        fn a_good_token_is_accepted() {
            let (sign_key, verify_key) = key_pair();
            login(None, |e| {
                let claims = verify(&sign(&good(), &sign_key), Algorithm::ES256, &verify_key, e)
                    .expect("valid");
                assert_eq!(claims.sub, "alice");
            });
        }

        #[test]
        fn a_forged_or_altered_signature_is_refused() {
            let (_, verify_key) = key_pair();
            let (attacker, _) = key_pair();
            refused(&sign(&good(), &attacker), &verify_key, None, "not valid");

            // A genuine token whose payload was swapped for another subject.
            let (sign_key, verify_key) = key_pair();
            let token = sign(&good(), &sign_key);
            let mut parts: Vec<&str> = token.split('.').collect();
            let forged = URL_SAFE_NO_PAD.encode(with(json!({"sub": "mallory"})).to_string());
            parts[1] = &forged;
            refused(&parts.join("."), &verify_key, None, "not valid");
        }

        #[test]
        fn alg_none_is_refused() {
            let (_, verify_key) = key_pair();
            let unsigned = format!(
                "{}.{}.",
                URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
                URL_SAFE_NO_PAD.encode(good().to_string())
            );
            login(None, |e| {
                assert!(check(&unsigned, &verify_key, e).is_err());
                // Even if a caller skipped the header check, the signature is required.
                assert!(verify(&unsigned, Algorithm::ES256, &verify_key, e).is_err());
            });
        }

        #[test]
        fn hs256_keyed_with_the_client_secret_is_refused() {
            let token = encode(
                &Header::new(Algorithm::HS256),
                &good(),
                &EncodingKey::from_secret(CLIENT_SECRET),
            )
            .expect("sign");
            let err = header(&token, &IdTokenSigning::default())
                .expect_err("HS256 must be refused")
                .to_string();
            assert!(err.contains("HS256"), "{err}");
            // Verified with the HMAC key itself, the algorithm pinned by the caller still
            // refuses it: the header's HS256 is not the ES256 asked for.
            login(None, |e| {
                assert!(verify(
                    &token,
                    Algorithm::ES256,
                    &DecodingKey::from_secret(CLIENT_SECRET),
                    e
                )
                .is_err());
            });
        }

        /// A fixed RSA key (generating one per test run is slow): tests/keys/README.md.
        const RSA_PRIVATE_PEM: &str = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/keys/id-token-rs256.pem"
        ));
        const RSA_PUBLIC_PEM: &str = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/keys/id-token-rs256.pub.pem"
        ));
        /// A client secret long enough for HS512 (RFC 7518 §3.2).
        const LONG_SECRET: &str =
            "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

        fn hs(alg: Algorithm) -> IdTokenSigning {
            IdTokenSigning::ClientSecret {
                alg,
                secret: SecretString::from(LONG_SECRET),
            }
        }

        fn sign_with(alg: Algorithm, key: &EncodingKey) -> String {
            encode(&Header::new(alg), &good(), key).expect("sign")
        }

        fn hmac(alg: Algorithm, secret: &[u8]) -> String {
            sign_with(alg, &EncodingKey::from_secret(secret))
        }

        fn rs256() -> String {
            sign_with(
                Algorithm::RS256,
                &EncodingKey::from_rsa_pem(RSA_PRIVATE_PEM.as_bytes()).expect("rsa key"),
            )
        }

        fn unsigned() -> String {
            format!(
                "{}.{}.",
                URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
                URL_SAFE_NO_PAD.encode(good().to_string())
            )
        }

        /// What [`crate::oauth::provider::Provider`] does: the header checked against the
        /// configuration, then the key the configuration names (the client secret, or here the
        /// provider's RSA public key standing in for its JWKS).
        fn as_provider_does(token: &str, signing: &IdTokenSigning) -> Result<(), String> {
            let (alg, _) = header(token, signing).map_err(|e| e.to_string())?;
            let key = match signing.client_secret_key() {
                Some(key) => key,
                None => DecodingKey::from_rsa_pem(RSA_PUBLIC_PEM.as_bytes()).expect("public key"),
            };
            let nonce = Token::new("n");
            let expected = Expected {
                issuer: ISSUER,
                client_id: CLIENT,
                nonce: Some(&nonce),
                subject: None,
                step_up: None,
                now: NOW,
            };
            verify(token, alg, &key, &expected)
                .map(|_| ())
                .map_err(|e| e.to_string())
        }

        #[test]
        fn an_rs256_provider_refuses_hmac_tokens_whatever_their_key() {
            for signing in [
                IdTokenSigning::Jwks(Some(Algorithm::RS256)),
                IdTokenSigning::default(),
            ] {
                assert_eq!(as_provider_does(&rs256(), &signing), Ok(()), "{signing:?}");
                // Keyed with the client secret, or with the provider's public key bytes (the
                // classic confusion: the attacker knows the public key).
                for secret in [LONG_SECRET.as_bytes(), RSA_PUBLIC_PEM.as_bytes()] {
                    for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
                        let err = as_provider_does(&hmac(alg, secret), &signing)
                            .expect_err("HMAC token accepted by an RS256 provider");
                        assert!(
                            err.contains("does not accept"),
                            "{signing:?} {alg:?}: {err}"
                        );
                    }
                }
                assert!(as_provider_does(&unsigned(), &signing).is_err());
            }
            // Pinned to RS256: another asymmetric algorithm is refused too.
            let (es, _) = key_pair();
            let err = as_provider_does(
                &sign(&good(), &es),
                &IdTokenSigning::Jwks(Some(Algorithm::RS256)),
            )
            .expect_err("ES256 token accepted by a provider pinned to RS256");
            assert!(err.contains("ES256"), "{err}");
        }

        #[test]
        fn an_hs256_provider_refuses_asymmetric_none_and_other_hmac_tokens() {
            let signing = hs(Algorithm::HS256);
            let good_token = hmac(Algorithm::HS256, LONG_SECRET.as_bytes());
            assert_eq!(as_provider_does(&good_token, &signing), Ok(()));
            // RS256 signed by the provider's real key: never with an HMAC configuration.
            let err = as_provider_does(&rs256(), &signing).expect_err("RS256 accepted");
            assert!(err.contains("RS256"), "{err}");
            // `none` is not even an algorithm the library knows: the token is malformed.
            let err = as_provider_does(&unsigned(), &signing).expect_err("none accepted");
            assert!(err.contains("none"), "{err}");
            // The configured HMAC only, not a sibling keyed with the same secret.
            for alg in [Algorithm::HS384, Algorithm::HS512] {
                let err = as_provider_does(&hmac(alg, LONG_SECRET.as_bytes()), &signing)
                    .expect_err("another HMAC accepted");
                assert!(err.contains(&format!("{alg:?}")), "{err}");
            }
            // Another secret: the signature fails.
            let forged = hmac(Algorithm::HS256, b"another-secret-another-secret-another");
            let err = as_provider_does(&forged, &signing).expect_err("forged HS256 accepted");
            assert!(err.contains("not valid"), "{err}");
            // HS512 configured: only HS512.
            let signing = hs(Algorithm::HS512);
            assert_eq!(
                as_provider_does(&hmac(Algorithm::HS512, LONG_SECRET.as_bytes()), &signing),
                Ok(())
            );
            assert!(as_provider_does(&good_token, &signing).is_err());
        }

        #[test]
        fn debug_of_the_signing_configuration_is_redacted() {
            let debug = format!("{:?}", hs(Algorithm::HS256));
            assert!(!debug.contains("0123456789"), "{debug}");
            assert!(debug.contains("HS256"), "{debug}");
        }

        #[test]
        fn wrong_issuer_audience_or_azp_is_refused() {
            let (k, v) = key_pair();
            let token = |c: Value| sign(&c, &k);
            refused(
                &token(with(json!({"iss": "https://evil.example"}))),
                &v,
                None,
                "not valid",
            );
            refused(
                &token(with(json!({"aud": "another-client"}))),
                &v,
                None,
                "not valid",
            );
            refused(
                &token(with(json!({"aud": ["another-client", "third"]}))),
                &v,
                None,
                "not valid",
            );
            refused(
                &token(with(json!({"azp": "another-client"}))),
                &v,
                None,
                "azp is another client",
            );
            // OIDC Core §3.1.3.7 items 4 and 5: several audiences need azp, naming us.
            let several = with(json!({"aud": [CLIENT, "another-client"]}));
            refused(
                &token(several.clone()),
                &v,
                None,
                "several audiences but no azp",
            );
            let mut with_azp = several;
            with_azp["azp"] = json!(CLIENT);
            login(None, |e| assert!(check(&token(with_azp), &v, e).is_ok()));
        }

        #[test]
        fn time_claims_are_checked_with_our_clock() {
            let (k, v) = key_pair();
            let token = |c: Value| sign(&c, &k);
            let leeway = LEEWAY_SECONDS;
            refused(
                &token(with(json!({"iat": NOW + leeway + 5}))),
                &v,
                None,
                "issued in the future",
            );
            refused(
                &token(with(json!({"exp": NOW - leeway - 5}))),
                &v,
                None,
                "expired",
            );
            refused(&token(with(json!({"exp": null}))), &v, None, "not valid");
            // Within the leeway both ways.
            let skewed = with(json!({"iat": NOW + leeway - 5, "exp": NOW - leeway + 5}));
            login(None, |e| assert!(check(&token(skewed), &v, e).is_ok()));
        }

        #[test]
        fn the_nonce_must_be_the_logins() {
            let (k, v) = key_pair();
            refused(
                &sign(&with(json!({"nonce": "other"})), &k),
                &v,
                None,
                "nonce does not match",
            );
            refused(
                &sign(&with(json!({"nonce": null})), &k),
                &v,
                None,
                "nonce does not match",
            );
        }

        #[test]
        fn a_refreshed_token_must_keep_the_subject() {
            let (k, v) = key_pair();
            // Refreshed tokens carry no fresh nonce (OIDC Core §12.2).
            let refreshed = sign(&with(json!({"nonce": null, "sub": "mallory"})), &k);
            let expected = |subject| Expected {
                issuer: ISSUER,
                client_id: CLIENT,
                nonce: None,
                subject: Some(subject),
                step_up: None,
                now: NOW,
            };
            let err = check(&refreshed, &v, &expected("alice")).expect_err("other subject");
            assert!(err.contains("another subject"), "{err}");
            assert!(check(&refreshed, &v, &expected("mallory")).is_ok());
        }

        #[test]
        fn step_up_is_checked_on_the_signed_token() {
            let (k, v) = key_pair();
            let step_up = StepUp {
                acr_values: vec!["urn:mfa".into()],
                max_age: Some(300),
            };
            let token = |c: Value| sign(&c, &k);
            let fresh_mfa = json!({"acr": "urn:mfa", "auth_time": NOW - 10});
            login(Some(&step_up), |e| {
                assert!(check(&token(with(fresh_mfa)), &v, e).is_ok());
            });
            refused(
                &token(with(json!({"acr": "urn:pwd", "auth_time": NOW - 10}))),
                &v,
                Some(&step_up),
                "acr is not one of",
            );
            refused(
                &token(with(json!({"auth_time": NOW - 10}))),
                &v,
                Some(&step_up),
                "no acr",
            );
            refused(
                &token(with(json!({"acr": "urn:mfa"}))),
                &v,
                Some(&step_up),
                "no auth_time",
            );
            refused(
                &token(with(
                    json!({"acr": "urn:mfa", "auth_time": NOW - 300 - LEEWAY_SECONDS - 1}),
                )),
                &v,
                Some(&step_up),
                "older than the configured max_age",
            );
        }
    }
}
