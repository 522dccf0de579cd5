//! Cookie keys and the key ring.
//!
//! A key id is derived from the key itself (a truncated SHA-256), not from its position in the
//! list, so an operator can reorder, add and drop keys without invalidating cookies sealed with
//! the keys that remain. The id is public (it travels in every cookie); deriving it with a
//! domain-separation label from a 256-bit random key reveals nothing about the key.

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
        let key = STANDARD.encode([7u8; 32]);
        assert!(key.ends_with('='));
        let url = URL_SAFE_NO_PAD.encode([7u8; 32]);
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
        let text = URL_SAFE_NO_PAD.encode([0xABu8; 32]);
        let ring = KeyRing::parse(&[&text]).expect("valid key");
        let debug = format!("{ring:?}");
        assert!(debug.contains("<redacted>"));
        assert!(!debug.contains(&text));
        assert!(!debug.to_lowercase().contains("abab"));
    }
}
