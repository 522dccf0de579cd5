//! A string that must never be printed: tokens, codes, verifiers, CSRF values.
//!
//! `secrecy::SecretString` does not serialize, and these values have to travel inside sealed
//! cookies, so this thin wrapper serializes transparently while Debug prints nothing. Reading
//! the value takes an explicit `expose()`, which makes every use easy to find in review.

use serde::{Deserialize, Serialize};
use std::fmt;
use subtle::ConstantTimeEq;

#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Token(String);

impl Token {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The raw value, for the few places that must send it somewhere.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Compares in constant time, for values an attacker may be guessing (state, CSRF, nonce).
    pub fn ct_eq(&self, other: &str) -> bool {
        self.0.as_bytes().ct_eq(other.as_bytes()).into()
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
    Token(URL_SAFE_NO_PAD.encode(bytes))
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

    #[test]
    fn random_tokens_are_43_chars_and_unique() {
        let a = random_token();
        assert_eq!(a.expose().len(), 43);
        assert_ne!(a, random_token());
    }
}
