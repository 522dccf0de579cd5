//! Logout-token validation (OpenID Connect Back-Channel Logout 1.0 §2.6).
//!
//! The provider tells us, server to server, that a user's session at it has ended. The request
//! is unauthenticated: all trust is in the Logout Token, so it is checked as strictly as an ID
//! token, with the same key rules ([`IdTokenSigning`]: the configuration picks the algorithm and
//! the key, never the token's header; `none` never), and then the claims that make it a logout
//! token and not another JWT of the provider's: the back-channel logout event (§2.4), `sid`
//! and/or `sub`, and no `nonce` (§2.4: forbidden, so an ID token can never pass as a logout
//! token). `jti` must be present; that it was not seen before is checked by the caller against
//! the store ([`crate::store::ended`]) and per replica ([`SeenJtis`]).

use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;

use super::id_token::{IdTokenSigning, LEEWAY_SECONDS};

/// The member of `events` that makes a JWT a back-channel logout token (§2.4).
pub const BACKCHANNEL_LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// How old (by `iat`) a logout token may be, besides the clock leeway. Providers send it at the
/// moment of logout; an old one is more likely a replay than a late delivery. `jti`s are
/// remembered this long, after which the token is refused by this rule anyway.
pub const MAX_AGE_SECONDS: i64 = 300;

/// How long a `jti` must be remembered so that a replay is refused by one rule or the other.
pub const JTI_RETENTION_SECONDS: i64 = MAX_AGE_SECONDS + 2 * LEEWAY_SECONDS;

/// Why a logout token was refused. For the log only: the provider is told `invalid_request`.
#[derive(Debug, thiserror::Error)]
pub enum LogoutTokenError {
    #[error("malformed logout token: {0}")]
    Malformed(jsonwebtoken::errors::Error),
    #[error(
        "the logout token is signed with {0:?}, which this provider's configuration does not allow"
    )]
    Algorithm(Algorithm),
    /// §2.4 recommends `typ: logout+jwt`; another explicit type is another kind of JWT.
    #[error("the logout token's typ is {0:?}, not logout+jwt")]
    Type(String),
    /// Signature, `iss`, `aud`, or `iat` missing (the library's checks).
    #[error("the logout token is not valid: {0}")]
    Invalid(jsonwebtoken::errors::Error),
    #[error("the logout token was issued in the future; check the clocks")]
    IssuedInFuture,
    #[error("the logout token was issued more than {MAX_AGE_SECONDS} s ago")]
    TooOld,
    #[error("the logout token has expired")]
    Expired,
    #[error("the logout token has no jti")]
    NoJti,
    #[error("the logout token's events claim has no back-channel logout event object")]
    NoLogoutEvent,
    #[error("the logout token has neither sid nor sub")]
    NoSessionOrSubject,
    #[error("the logout token contains a nonce")]
    HasNonce,
    #[error("the logout token's {0} claim is not a string")]
    NotAString(&'static str),
    #[error("the logout token's jti was seen before (a replay)")]
    Replayed,
}

/// What a valid logout token says: which session(s) at the provider ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutClaims {
    pub iss: String,
    /// The provider's session id (OIDC Front/Back-Channel `sid`).
    pub sid: Option<String>,
    pub sub: Option<String>,
    pub jti: String,
    pub iat: i64,
}

/// What the token must say.
pub struct Expected<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub now: i64,
}

/// The algorithm and key id from the header, refusing every algorithm the provider's
/// configuration does not allow, and an explicit type other than a logout token's.
pub fn header(
    token: &str,
    signing: &IdTokenSigning,
) -> Result<(Algorithm, Option<String>), LogoutTokenError> {
    let header = decode_header(token).map_err(LogoutTokenError::Malformed)?;
    if !signing.accepts(header.alg) {
        return Err(LogoutTokenError::Algorithm(header.alg));
    }
    if let Some(typ) = &header.typ {
        let t = typ.to_ascii_lowercase();
        if !matches!(t.as_str(), "jwt" | "logout+jwt" | "application/logout+jwt") {
            return Err(LogoutTokenError::Type(typ.clone()));
        }
    }
    Ok((header.alg, header.kid))
}

/// Verifies the signature with `key` and checks every claim (§2.6 steps 2 to 5).
pub fn verify(
    token: &str,
    alg: Algorithm,
    key: &DecodingKey,
    expected: &Expected<'_>,
) -> Result<LogoutClaims, LogoutTokenError> {
    let mut validation = Validation::new(alg);
    validation.algorithms = vec![alg];
    validation.set_issuer(&[expected.issuer]);
    validation.set_audience(&[expected.client_id]);
    // `exp` is REQUIRED by the final specification but absent in tokens of earlier drafts
    // that providers still send; when present it is checked below with our clock.
    validation.set_required_spec_claims(&["iss", "aud", "iat"]);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    let claims = decode::<Map<String, Value>>(token, key, &validation)
        .map_err(LogoutTokenError::Invalid)?
        .claims;
    check_claims(&claims, expected)
}

fn string(
    claims: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<String>, LogoutTokenError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(LogoutTokenError::NotAString(name)),
    }
}

/// The checks after the signature, issuer and audience.
fn check_claims(
    claims: &Map<String, Value>,
    expected: &Expected<'_>,
) -> Result<LogoutClaims, LogoutTokenError> {
    let now = expected.now;
    let iat = claims.get("iat").and_then(Value::as_i64).ok_or_else(|| {
        LogoutTokenError::Invalid(jsonwebtoken::errors::ErrorKind::InvalidToken.into())
    })?;
    // Saturating: `iat` and `exp` come from the provider and may be anything.
    if iat > now.saturating_add(LEEWAY_SECONDS) {
        return Err(LogoutTokenError::IssuedInFuture);
    }
    if iat.saturating_add(MAX_AGE_SECONDS + LEEWAY_SECONDS) < now {
        return Err(LogoutTokenError::TooOld);
    }
    if let Some(exp) = claims.get("exp") {
        let exp = exp.as_i64().ok_or(LogoutTokenError::Expired)?;
        if exp.saturating_add(LEEWAY_SECONDS) <= now {
            return Err(LogoutTokenError::Expired);
        }
    }
    // §2.4: a nonce is PROHIBITED, so an ID token (which may carry every other claim) can
    // never be replayed here as a logout token.
    if claims.contains_key("nonce") {
        return Err(LogoutTokenError::HasNonce);
    }
    // §2.4: `events` is a JSON object whose back-channel logout member is a JSON object.
    let has_event = claims
        .get("events")
        .and_then(Value::as_object)
        .and_then(|events| events.get(BACKCHANNEL_LOGOUT_EVENT))
        .is_some_and(Value::is_object);
    if !has_event {
        return Err(LogoutTokenError::NoLogoutEvent);
    }
    let jti = string(claims, "jti")?
        .filter(|j| !j.is_empty())
        .ok_or(LogoutTokenError::NoJti)?;
    let sid = string(claims, "sid")?.filter(|s| !s.is_empty());
    let sub = string(claims, "sub")?.filter(|s| !s.is_empty());
    // §2.4: at least one of them.
    if sid.is_none() && sub.is_none() {
        return Err(LogoutTokenError::NoSessionOrSubject);
    }
    let iss = string(claims, "iss")?.unwrap_or_default();
    Ok(LogoutClaims {
        iss,
        sid,
        sub,
        jti,
        iat,
    })
}

/// The issuer and audiences a logout token claims, read WITHOUT verifying it: only to choose
/// which configured provider's keys and client id verify it next. Nothing else may use them.
#[derive(Debug)]
pub struct UnverifiedIssuer {
    pub iss: String,
    pub aud: Vec<String>,
}

impl UnverifiedIssuer {
    pub fn peek(token: &str) -> Option<Self> {
        #[derive(serde::Deserialize)]
        struct Peek {
            iss: String,
            aud: super::id_token::Audience,
        }
        let peek = jsonwebtoken::dangerous::insecure_decode::<Peek>(token)
            .ok()?
            .claims;
        let aud = match peek.aud {
            super::id_token::Audience::One(a) => vec![a],
            super::id_token::Audience::Many(list) => list,
        };
        Some(Self { iss: peek.iss, aud })
    }
}

/// The `jti`s of logout tokens this replica accepted, until [`JTI_RETENTION_SECONDS`] after
/// their `iat`: a replay reaching the same replica is refused without asking the store (which
/// remembers them for every replica). Bounded: at [`SeenJtis::MAX`] entries the expired ones are
/// dropped, and if none has expired the oldest go; a replay of a token so old only marks again
/// a session that is already ended. Keys are hashes of issuer and `jti`.
#[derive(Debug, Default)]
pub struct SeenJtis {
    seen: Mutex<HashMap<[u8; 32], i64>>,
}

impl SeenJtis {
    pub const MAX: usize = 10_000;

    /// The store key part for a `jti`: a hash, so the store holds no provider data.
    pub fn hash(iss: &str, jti: &str) -> [u8; 32] {
        Sha256::new()
            .chain_update(iss.as_bytes())
            .chain_update([0u8])
            .chain_update(jti.as_bytes())
            .finalize()
            .into()
    }

    /// Records the token's `jti`; `Err(Replayed)` when this replica saw it before.
    pub fn first_use(&self, claims: &LogoutClaims, now: i64) -> Result<(), LogoutTokenError> {
        self.first_use_bounded(claims, now, Self::MAX)
    }

    fn first_use_bounded(
        &self,
        claims: &LogoutClaims,
        now: i64,
        max: usize,
    ) -> Result<(), LogoutTokenError> {
        let key = Self::hash(&claims.iss, &claims.jti);
        let until = claims.iat.saturating_add(JTI_RETENTION_SECONDS);
        let Ok(mut seen) = self.seen.lock() else {
            // A poisoned lock: the store still refuses replays across replicas.
            return Ok(());
        };
        if seen.get(&key).is_some_and(|u| *u >= now) {
            return Err(LogoutTokenError::Replayed);
        }
        if seen.len() >= max {
            seen.retain(|_, u| *u >= now);
            while seen.len() >= max {
                let Some(oldest) = seen.iter().min_by_key(|(_, u)| **u).map(|(k, _)| *k) else {
                    break;
                };
                seen.remove(&oldest);
            }
        }
        seen.insert(key, until);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::id_token::tests::signed::key_pair;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    const NOW: i64 = 1_800_000_000;
    const ISSUER: &str = "https://op.example";
    const CLIENT: &str = "spa";

    fn good() -> Value {
        json!({
            "iss": ISSUER,
            "aud": CLIENT,
            "iat": NOW,
            "exp": NOW + 120,
            "jti": "jti-1",
            "sid": "op-session",
            "sub": "alice",
            "events": {BACKCHANNEL_LOGOUT_EVENT: {}},
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

    fn sign_typed(claims: &Value, key: &EncodingKey, typ: Option<&str>) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.typ = typ.map(str::to_string);
        encode(&header, claims, key).expect("sign")
    }

    fn check(token: &str, key: &DecodingKey) -> Result<LogoutClaims, LogoutTokenError> {
        let (alg, _) = header(token, &IdTokenSigning::default())?;
        verify(
            token,
            alg,
            key,
            &Expected {
                issuer: ISSUER,
                client_id: CLIENT,
                now: NOW,
            },
        )
    }

    fn refused(claims: Value, why: &str) {
        let (k, v) = key_pair();
        let token = sign_typed(&claims, &k, Some("logout+jwt"));
        match check(&token, &v) {
            Ok(c) => panic!("accepted a logout token that should fail ({why}): {c:?}"),
            Err(e) => assert!(e.to_string().contains(why), "{why}: {e}"),
        }
    }

    #[test]
    fn a_good_logout_token_is_accepted_with_either_type() {
        let (k, v) = key_pair();
        for typ in [Some("logout+jwt"), Some("JWT"), None] {
            let claims = check(&sign_typed(&good(), &k, typ), &v).expect("valid");
            assert_eq!(claims.sid.as_deref(), Some("op-session"));
            assert_eq!(claims.sub.as_deref(), Some("alice"));
            assert_eq!(claims.jti, "jti-1");
        }
        // sid alone, sub alone, no exp (earlier drafts): accepted.
        for c in [
            with(json!({"sub": null})),
            with(json!({"sid": null})),
            with(json!({"exp": null})),
        ] {
            assert!(check(&sign_typed(&c, &k, None), &v).is_ok(), "{c}");
        }
    }

    #[test]
    fn another_explicit_type_is_refused() {
        let (k, v) = key_pair();
        let err = check(&sign_typed(&good(), &k, Some("at+jwt")), &v).expect_err("at+jwt");
        assert!(err.to_string().contains("typ"), "{err}");
    }

    #[test]
    fn a_forged_signature_or_alg_none_is_refused() {
        let (_, v) = key_pair();
        let (attacker, _) = key_pair();
        let err = check(&sign_typed(&good(), &attacker, None), &v).expect_err("forged");
        assert!(err.to_string().contains("not valid"), "{err}");
        let unsigned = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"logout+jwt"}"#),
            URL_SAFE_NO_PAD.encode(good().to_string())
        );
        assert!(check(&unsigned, &v).is_err());
        // HS256 keyed with anything: not an algorithm a JWKS provider allows.
        let hs = encode(
            &Header::new(Algorithm::HS256),
            &good(),
            &EncodingKey::from_secret(b"the-client-secret-the-client-secret"),
        )
        .expect("sign");
        let err = check(&hs, &v).expect_err("HS256");
        assert!(err.to_string().contains("HS256"), "{err}");
    }

    #[test]
    fn wrong_issuer_or_audience_is_refused() {
        refused(with(json!({"iss": "https://evil.example"})), "not valid");
        refused(with(json!({"aud": "another-client"})), "not valid");
        refused(with(json!({"aud": null})), "not valid");
    }

    #[test]
    fn iat_must_be_present_recent_and_not_in_the_future() {
        refused(with(json!({"iat": null})), "not valid");
        refused(
            with(json!({"iat": NOW + LEEWAY_SECONDS + 5})),
            "in the future",
        );
        refused(
            with(json!({"iat": NOW - MAX_AGE_SECONDS - LEEWAY_SECONDS - 5, "exp": null})),
            "more than",
        );
        refused(with(json!({"iat": i64::MIN})), "more than");
    }

    #[test]
    fn an_expired_token_is_refused() {
        refused(
            with(json!({"iat": NOW - 200, "exp": NOW - LEEWAY_SECONDS - 5})),
            "expired",
        );
        refused(with(json!({"exp": "soon"})), "expired");
    }

    #[test]
    fn jti_is_required() {
        refused(with(json!({"jti": null})), "no jti");
        refused(with(json!({"jti": ""})), "no jti");
        refused(with(json!({"jti": 7})), "not a string");
    }

    #[test]
    fn the_backchannel_logout_event_object_is_required() {
        refused(with(json!({"events": null})), "event");
        refused(with(json!({"events": {}})), "event");
        refused(
            with(json!({"events": {"http://schemas.openid.net/event/other": {}}})),
            "event",
        );
        // The member must be an object, not `true` or a string.
        refused(
            with(json!({"events": {BACKCHANNEL_LOGOUT_EVENT: true}})),
            "event",
        );
        refused(with(json!({"events": [BACKCHANNEL_LOGOUT_EVENT]})), "event");
    }

    #[test]
    fn sid_or_sub_is_required() {
        refused(
            with(json!({"sid": null, "sub": null})),
            "neither sid nor sub",
        );
        refused(with(json!({"sid": "", "sub": null})), "neither sid nor sub");
        refused(with(json!({"sid": 5})), "not a string");
    }

    #[test]
    fn a_nonce_is_refused_so_an_id_token_never_passes() {
        refused(with(json!({"nonce": "n"})), "nonce");
        // An ID token of the same provider: nonce, no events.
        refused(
            with(json!({"nonce": "n", "events": null, "jti": null})),
            "nonce",
        );
    }

    #[test]
    fn a_jti_is_accepted_once_per_replica_and_the_memory_is_bounded() {
        let seen = SeenJtis::default();
        let claims = |jti: &str, iat: i64| LogoutClaims {
            iss: ISSUER.into(),
            sid: Some("s".into()),
            sub: None,
            jti: jti.into(),
            iat,
        };
        assert!(seen.first_use(&claims("a", NOW), NOW).is_ok());
        assert!(matches!(
            seen.first_use(&claims("a", NOW), NOW + 10),
            Err(LogoutTokenError::Replayed)
        ));
        // Another issuer's jti of the same value is another token.
        let mut other = claims("a", NOW);
        other.iss = "https://other.example".into();
        assert!(seen.first_use(&other, NOW).is_ok());
        // Bounded: filling past the bound drops the oldest, never refuses a new token.
        let small = SeenJtis::default();
        for i in 0..10 {
            small
                .first_use_bounded(&claims(&format!("j{i}"), NOW + i), NOW, 4)
                .expect("new jti");
        }
        assert!(small.seen.lock().expect("lock").len() <= 4);
        // The newest is still remembered.
        assert!(small
            .first_use_bounded(&claims("j9", NOW + 9), NOW, 4)
            .is_err());
    }

    #[test]
    fn the_unverified_peek_reads_issuer_and_audiences_only() {
        let (k, _) = key_pair();
        let token = sign_typed(&with(json!({"aud": [CLIENT, "other"]})), &k, None);
        let peek = UnverifiedIssuer::peek(&token).expect("peek");
        assert_eq!(peek.iss, ISSUER);
        assert_eq!(peek.aud, vec![CLIENT.to_string(), "other".to_string()]);
        assert!(UnverifiedIssuer::peek("not-a-jwt").is_none());
    }
}
