//! A string that must never be printed: tokens, codes, verifiers, CSRF values.
//!
//! `secrecy::SecretString` does not serialize, and these values have to travel inside sealed
//! cookies, so this thin wrapper serializes as its text while Debug prints nothing. Reading the
//! value takes an explicit `expose()`, which makes every use easy to find in review.
//!
//! The text is shared, not copied, between clones: an access token opened from a session's
//! cookie is kept ([`crate::crypto`]'s values opened lately) and handed to call after call, 16
//! KB of it for large tokens. So is its form as a header value, made once
//! ([`Token::header_value`]).

use actix_web::http::header::HeaderValue;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::sync::{Arc, OnceLock};
use subtle::ConstantTimeEq;

#[derive(Clone)]
pub struct Token(Arc<Held>);

struct Held {
    text: String,
    /// The token as a header value in the first framing asked for ([`Token::header_value`]).
    header: OnceLock<Framed>,
}

/// A header value `before{token}after`.
struct Framed {
    before: Box<str>,
    after: Box<str>,
    value: HeaderValue,
}

impl Token {
    pub fn new(value: impl Into<String>) -> Self {
        Self(Arc::new(Held {
            text: value.into(),
            header: OnceLock::new(),
        }))
    }

    /// The raw value, for the few places that must send it somewhere.
    pub fn expose(&self) -> &str {
        &self.0.text
    }

    /// Compares in constant time, for values an attacker may be guessing (state, CSRF, nonce).
    pub fn ct_eq(&self, other: &str) -> bool {
        self.0.text.as_bytes().ct_eq(other.as_bytes()).into()
    }

    /// The token framed as `before{token}after` in a header value, made by `make` the first time
    /// and shared by every clone of this token after that (for the first framing asked for; any
    /// other is made each time). Making one checks every byte of a token that may be 16 KB, about
    /// 10 µs, and the proxy forwards the same token on call after call (issue 17,
    /// docs/benchmarks.md). The shared copy lives as long as the token does, no longer.
    pub fn header_value<E>(
        &self,
        before: &str,
        after: &str,
        make: impl FnOnce(&str) -> Result<HeaderValue, E>,
    ) -> Result<HeaderValue, E> {
        if let Some(framed) = self.0.header.get() {
            if *framed.before == *before && *framed.after == *after {
                return Ok(framed.value.clone());
            }
        }
        let mut value = make(&self.0.text)?;
        value.set_sensitive(true);
        // Another clone may have made it meanwhile; either is the same value.
        let _ = self.0.header.set(Framed {
            before: before.into(),
            after: after.into(),
            value: value.clone(),
        });
        Ok(value)
    }
}

impl PartialEq for Token {
    fn eq(&self, other: &Self) -> bool {
        self.0.text == other.0.text
    }
}

impl Eq for Token {}

impl Serialize for Token {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0.text)
    }
}

impl<'de> Deserialize<'de> for Token {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Token::new)
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// 32 random bytes, base64url: state, nonce, CSRF values and PKCE verifiers.
pub fn random_token() -> Token {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    Token::new(URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let t = Token::new("eyJhbGciOi.secret.value");
        assert_eq!(format!("{t:?}"), "Token(<redacted>)");
        assert_eq!(format!("{:?}", Some(&t)), "Some(Token(<redacted>))");
    }

    #[test]
    fn constant_time_comparison_is_exact() {
        let t = Token::new("abc");
        assert!(t.ct_eq("abc"));
        assert!(!t.ct_eq("abd"));
        assert!(!t.ct_eq("ab"));
        assert!(!t.ct_eq(""));
    }

    /// The proxy asks for the same token's header value on call after call (issue 17).
    #[test]
    fn a_header_value_is_made_once_per_token_and_shared_by_its_copies() {
        let made = std::cell::Cell::new(0);
        let make = |before: &'static str| {
            let made = &made;
            move |t: &str| {
                made.set(made.get() + 1);
                HeaderValue::from_str(&format!("{before}{t}"))
            }
        };
        let t = Token::new("abc");
        let copy = t.clone();
        let v = t
            .header_value("Bearer ", "", make("Bearer "))
            .expect("value");
        assert_eq!(v, "Bearer abc");
        assert_eq!(
            copy.header_value("Bearer ", "", make("Bearer "))
                .expect("value"),
            v
        );
        assert_eq!(made.get(), 1);
        // Another framing is made each time, never served the first one's value.
        for _ in 0..2 {
            let other = t.header_value("JWT ", "", make("JWT ")).expect("value");
            assert_eq!(other, "JWT abc");
        }
        assert_eq!(made.get(), 3);
        // Another token with the same text makes its own.
        let again = Token::new("abc");
        assert_eq!(
            again
                .header_value("Bearer ", "", make("Bearer "))
                .expect("value"),
            v
        );
        assert_eq!(made.get(), 4);
        // Marked sensitive: its Debug shows nothing of the token.
        assert_eq!(format!("{v:?}"), "Sensitive");
        // A refused value is not kept.
        let bad = Token::new("a\nb");
        assert!(bad.header_value("", "", HeaderValue::from_str).is_err());
        assert!(bad.header_value("", "", HeaderValue::from_str).is_err());
    }

    #[test]
    fn random_tokens_are_43_chars_and_unique() {
        let a = random_token();
        assert_eq!(a.expose().len(), 43);
        assert_ne!(a, random_token());
    }
}
