//! Cookie keys and the key ring.
//!
//! A key id is derived from the key itself (a truncated SHA-256), not from its position in the
//! list, so an operator can reorder, add and drop keys without invalidating cookies sealed with
//! the keys that remain. The id is public (it travels in every cookie); deriving it with a
//! domain-separation label from a 256-bit random key reveals nothing about the key.
//!
//! A key must also *be* random: the all-zero key, a key of one repeated byte, a simple byte
//! pattern, base64 of a passphrase, or a key printed in our own examples would let anyone who
//! guesses it forge every cookie (and so every session). Such keys are refused wherever a key is
//! parsed (config load, `check`, keys-file reload), with a reason and never the key itself.

use aes_gcm::{Aes256Gcm, KeyInit};
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::fmt;

/// Length of a key id inside a sealed value.
pub const KEY_ID_LEN: usize = 4;

/// Why a configured key was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("a cookie key is not valid base64 (generate one with `token-handler keygen`)")]
    NotBase64,
    #[error("a cookie key decodes to {0} bytes; it must be exactly 32 bytes (generate one with `token-handler keygen`)")]
    WrongLength(usize),
    #[error("the cookie key ring is empty; configure at least one key in cookies.keys or cookies.keys_file (generate one with `token-handler keygen`)")]
    Empty,
    #[error("the same cookie key is listed twice")]
    Duplicate,
    /// The key is one printed in token-handler's examples or documentation: public, so anyone
    /// could seal cookies with it.
    #[error("a cookie key is an example key published in token-handler's documentation; anyone can forge cookies with it (generate one with `token-handler keygen`)")]
    Published,
    /// The key is not 32 random bytes (the reason says which test it failed). Random keys fail
    /// these tests with a probability far below 2^-40.
    #[error("a cookie key is not random: {0}; anyone who guesses it can forge cookies (generate one with `token-handler keygen`)")]
    Weak(&'static str),
}

/// SHA-256 of the bytes of every 32-byte base64 value printed in our examples and docs: the
/// placeholder key of examples/config.toml, and values an operator could mistake for a key (the
/// RFC 7636 PKCE example, sample CSRF and nonce values). The
/// `keys_printed_in_the_repository_are_refused` test fails when a new one is committed without
/// being listed here.
const PUBLISHED_KEY_DIGESTS: [&str; 5] = [
    // examples/config.toml: "AAAA…AAA" (32 zero bytes).
    "66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925",
    // docs/openapi.yaml: the sample CSRF value "TZkw_con…".
    "b8052990368f35f3f46cae0bfe7bc3906aad451b52ec265804f2128bdac99dc8",
    // docs/openapi.yaml: the sample nonce "6L9Q9oeu…".
    "f093bdf17f9e2a52ebe394cf60520d2ff81d1856a566f7c68f80e018f477b0d5",
    // RFC 7636 Appendix B code_verifier "dBjftJeZ…" (examples/demo/dev_op.rs).
    "dfcbf760e8bacd0824d7192a93a63976f483a011ea66b4e1de69961f1c56bf29",
    // RFC 7636 Appendix B code_challenge "E9Melhoa…" (examples/demo/dev_op.rs).
    "d2ee4e5db1dd98d20dda68e999138e9505f161f97e9bacfe6cf5a6d69da40e2c",
];

/// Fewest distinct byte values a key may have. 32 random bytes have about 30; fewer than 16
/// happens with probability below 2^-60, while repeated short patterns and most text land here.
const MIN_DISTINCT_BYTES: usize = 16;

/// Why these 32 bytes are not acceptable as a key, if they are not.
fn weakness(key: &[u8; 32]) -> Option<KeyError> {
    let digest: String = Sha256::digest(key)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if PUBLISHED_KEY_DIGESTS.contains(&digest.as_str()) {
        return Some(KeyError::Published);
    }
    if key.iter().all(|b| *b == key[0]) {
        return Some(KeyError::Weak(if key[0] == 0 {
            "all its bytes are zero"
        } else {
            "all its bytes are the same"
        }));
    }
    // 0, 1, 2, … or any other constant step between bytes.
    let step = key[1].wrapping_sub(key[0]);
    if key.windows(2).all(|w| w[1].wrapping_sub(w[0]) == step) {
        return Some(KeyError::Weak(
            "its bytes count up or down in constant steps",
        ));
    }
    let mut seen = [false; 256];
    for b in key {
        seen[usize::from(*b)] = true;
    }
    if seen.iter().filter(|s| **s).count() < MIN_DISTINCT_BYTES {
        return Some(KeyError::Weak("it repeats a few byte values"));
    }
    // 32 random bytes are all printable ASCII with probability (95/256)^32, about 2^-45.
    if key.iter().all(|b| (0x20..0x7f).contains(b)) {
        return Some(KeyError::Weak(
            "it is printable text (a passphrase encoded as base64?)",
        ));
    }
    None
}

/// One AES-256-GCM key with its public id. Debug never shows key material.
#[derive(Clone)]
pub struct CookieKey {
    id: [u8; KEY_ID_LEN],
    pub(super) cipher: Aes256Gcm,
}

impl CookieKey {
    /// Parses the configured text form: 32 bytes in base64url (standard base64 and padding are
    /// also accepted, because operators paste keys from many tools).
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let text = text.trim();
        let bytes = [URL_SAFE_NO_PAD, URL_SAFE, STANDARD, STANDARD_NO_PAD]
            .iter()
            .find_map(|engine| engine.decode(text).ok())
            .ok_or(KeyError::NotBase64)?;
        let key: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| KeyError::WrongLength(bytes.len()))?;
        if let Some(e) = weakness(&key) {
            return Err(e);
        }
        Ok(Self::from_bytes(&key))
    }

    fn from_bytes(key: &[u8; 32]) -> Self {
        let digest = Sha256::new()
            .chain_update(b"token-handler cookie key id\0")
            .chain_update(key)
            .finalize();
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&digest[..KEY_ID_LEN]);
        Self {
            id,
            cipher: Aes256Gcm::new(&(*key).into()),
        }
    }

    /// A fresh random key in the configured text form, for `token-handler keygen`.
    pub fn generate_text() -> String {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        URL_SAFE_NO_PAD.encode(key)
    }

    /// The public id written into every value this key seals.
    pub fn id(&self) -> [u8; KEY_ID_LEN] {
        self.id
    }

    /// The id as hex, for logs and `check` output.
    pub fn id_hex(&self) -> String {
        self.id.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for CookieKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CookieKey(id={}, key=<redacted>)", self.id_hex())
    }
}

/// The configured keys: the first seals, every one opens.
#[derive(Clone, Debug)]
pub struct KeyRing {
    keys: Vec<CookieKey>,
}

impl KeyRing {
    /// Builds a ring from keys in the configured text form, first one sealing.
    pub fn parse<S: AsRef<str>>(texts: &[S]) -> Result<Self, KeyError> {
        let keys = texts
            .iter()
            .map(|t| CookieKey::parse(t.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Err(KeyError::Empty);
        }
        for (i, key) in keys.iter().enumerate() {
            if keys[..i].iter().any(|k| k.id == key.id) {
                return Err(KeyError::Duplicate);
            }
        }
        Ok(Self { keys })
    }

    /// The key that seals new values.
    pub fn current(&self) -> &CookieKey {
        // Invariant: `parse` refuses an empty ring, and no other constructor exists.
        &self.keys[0]
    }

    /// The key with this id, if it is in the ring.
    pub fn find(&self, id: &[u8]) -> Option<&CookieKey> {
        self.keys.iter().find(|k| k.id == id)
    }

    /// Every key, sealing key first.
    pub fn keys(&self) -> &[CookieKey] {
        &self.keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_and_differ() {
        let a = CookieKey::generate_text();
        let b = CookieKey::generate_text();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert_ne!(
            CookieKey::parse(&a).map(|k| k.id()),
            CookieKey::parse(&b).map(|k| k.id())
        );
    }

    #[test]
    fn standard_base64_with_padding_is_accepted() {
        let bytes: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(97) ^ 0x5c);
        let key = STANDARD.encode(bytes);
        assert!(key.ends_with('='));
        let url = URL_SAFE_NO_PAD.encode(bytes);
        assert_eq!(
            CookieKey::parse(&key).map(|k| k.id()),
            CookieKey::parse(&url).map(|k| k.id())
        );
    }

    #[test]
    fn wrong_keys_are_refused_with_a_reason() {
        assert_eq!(
            CookieKey::parse("not base64 !!").err(),
            Some(KeyError::NotBase64)
        );
        assert_eq!(
            CookieKey::parse(&URL_SAFE_NO_PAD.encode([1u8; 16])).err(),
            Some(KeyError::WrongLength(16))
        );
        assert_eq!(KeyRing::parse::<&str>(&[]).err(), Some(KeyError::Empty));
        let k = CookieKey::generate_text();
        assert_eq!(KeyRing::parse(&[&k, &k]).err(), Some(KeyError::Duplicate));
    }

    #[test]
    fn debug_never_shows_key_material() {
        let text = CookieKey::generate_text();
        let ring = KeyRing::parse(&[&text]).expect("valid key");
        let debug = format!("{ring:?}");
        assert!(debug.contains("<redacted>"));
        assert!(!debug.contains(&text));
        let bytes = URL_SAFE_NO_PAD.decode(&text).expect("base64");
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert!(!debug.contains(&hex[..8]));
    }

    #[test]
    fn weak_keys_are_refused_with_a_reason_but_never_the_key() {
        let weak = |bytes: [u8; 32]| CookieKey::parse(&URL_SAFE_NO_PAD.encode(bytes)).err();
        assert_eq!(weak([0; 32]), Some(KeyError::Published));
        assert_eq!(
            CookieKey::parse("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").err(),
            Some(KeyError::Published)
        );
        assert_eq!(
            weak([0xAB; 32]),
            Some(KeyError::Weak("all its bytes are the same"))
        );
        assert!(matches!(
            weak(std::array::from_fn(|i| i as u8)),
            Some(KeyError::Weak(_))
        ));
        assert!(matches!(
            weak(std::array::from_fn(|i| 200u8.wrapping_sub(3 * i as u8))),
            Some(KeyError::Weak(_))
        ));
        assert!(matches!(
            weak(std::array::from_fn(|i| [0xde, 0xad, 0xbe, 0xef][i % 4])),
            Some(KeyError::Weak(_))
        ));
        let mut text = [0u8; 32];
        text.copy_from_slice(b"correct horse battery staple 123");
        assert!(matches!(weak(text), Some(KeyError::Weak(_))));
        for e in [weak([0; 32]), weak([0xAB; 32]), weak(text)] {
            let message = e.map(|e| e.to_string()).unwrap_or_default();
            assert!(message.contains("keygen"), "{message}");
            assert!(!message.contains("AAAA") && !message.contains("correct"));
        }
        // A ring with one weak key among good ones is refused too.
        let good = CookieKey::generate_text();
        assert_eq!(
            KeyRing::parse(&[good.as_str(), &URL_SAFE_NO_PAD.encode([9u8; 32])]).err(),
            Some(KeyError::Weak("all its bytes are the same"))
        );
    }

    #[test]
    fn generated_keys_are_never_called_weak() {
        for _ in 0..2000 {
            let key = CookieKey::generate_text();
            assert!(CookieKey::parse(&key).is_ok());
        }
    }

    /// Every key-shaped string (43 or 44 base64 characters that decode to 32 bytes) committed in
    /// the examples and docs is refused, so a copied example never starts a server.
    #[test]
    fn keys_printed_in_the_repository_are_refused() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = vec![root.join("README.md"), root.join("Dockerfile")];
        let mut dirs = vec![
            root.join("examples"),
            root.join("docs"),
            root.join("scripts"),
        ];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                } else {
                    files.push(path);
                }
            }
        }
        let mut checked = 0;
        for file in files {
            let Ok(bytes) = std::fs::read(&file) else {
                continue;
            };
            let text = String::from_utf8_lossy(&bytes);
            let tokens = text.split(|c: char| {
                !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '+' | '/' | '='))
            });
            // snake_case identifiers (metric names) are not keys: a random key has no upper-case
            // letter with probability (37/64)^43, about 2^-34; the
            // known example keys have one.
            let identifier = |t: &str| {
                t.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            };
            for token in tokens.filter(|t| (t.len() == 43 || t.len() == 44) && !identifier(t)) {
                let decoded = [URL_SAFE_NO_PAD, URL_SAFE, STANDARD, STANDARD_NO_PAD]
                    .iter()
                    .find_map(|engine| engine.decode(token).ok());
                if decoded.is_some_and(|d| d.len() == 32) {
                    checked += 1;
                    assert!(
                        CookieKey::parse(token).is_err(),
                        "{} prints a usable cookie key; list its SHA-256 in PUBLISHED_KEY_DIGESTS",
                        file.display()
                    );
                }
            }
        }
        assert!(
            checked >= 1,
            "the example key in examples/config.toml was not found"
        );
    }
}
