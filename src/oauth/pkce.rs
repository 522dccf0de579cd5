//! PKCE (RFC 7636) with S256 only: `plain` would put the verifier itself in the browser's URL.

use crate::secret::{random_token, Token};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};

/// A fresh code verifier: 32 random bytes in base64url, 43 characters (RFC 7636 §4.1 asks for
/// 43–128 characters of 256 bits of entropy).
pub fn new_verifier() -> Token {
    random_token()
}

/// `BASE64URL(SHA256(verifier))`, RFC 7636 §4.2.
pub fn s256_challenge(verifier: &Token) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.expose().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7636_appendix_b_vector() {
        let verifier = Token::new("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk");
        assert_eq!(
            s256_challenge(&verifier),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn verifiers_have_the_required_length() {
        let v = new_verifier();
        assert!((43..=128).contains(&v.expose().len()));
    }
}
