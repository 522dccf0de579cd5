//! The sealed-value wire format.
//!
//! `base64url(version ‖ key id ‖ nonce ‖ ciphertext ‖ tag)`, no padding, where the plaintext
//! is `exp ‖ JSON(value)`: the expiry as 8 big-endian bytes (Unix seconds), then the value.
//! JSON keeps the payload self-describing, so a field added in a later release (with a serde
//! default) still opens cookies written by replicas that run the previous one.
//!
//! Two versions: `1` encrypts the plaintext as it is, `2` encrypts its raw DEFLATE (RFC 1951)
//! compression. A value of 2.5 KiB or more is compressed when that makes it shorter (a JWT
//! shrinks by about a quarter, which can save a whole cookie chunk), except the values opened
//! on every proxied request, compressed only past 20 KiB ([`COMPRESS_PER_REQUEST_FROM`]). The
//! version byte is bound into the associated data, so a `2` edited into a `1` (or back) fails
//! authentication. Values written
//! before compression existed (version 1) still open: rolling upgrades keep their sessions.
//! Decompression happens only after the tag was verified, so only we can have produced what is
//! inflated, and even that is capped at [`MAX_PLAINTEXT_LEN`].
//!
//! - A fresh random 96-bit nonce per seal (NIST SP 800-38D §8.2.2: random nonces are safe for far
//!   more than 2^32 seals per key, which key rotation keeps us well under).
//! - The associated data binds the format version, the cookie's purpose and the key id, so a
//!   value cut from the `-auth` cookie and pasted into `-at` fails authentication, as does a
//!   value whose key-id byte was edited to point at another key.
//! - The expiry is inside the ciphertext and checked after decryption: a browser that ignores
//!   Max-Age, or a thief who copies a cookie, gains nothing past it.
//! - Every failure before a successful decryption is the same opaque [`SealError::Invalid`], so
//!   the error says nothing an attacker could use to tell a bad key from a flipped byte.

use super::keys::{KeyRing, KEY_ID_LEN};
use super::opened::Opened;
use aes_gcm::aead::AeadInOut;
use aes_gcm::{Nonce, Tag};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::{Arc, RwLock};

/// The plaintext is encrypted as it is.
const VERSION_PLAIN: u8 = 1;
/// The plaintext is DEFLATE-compressed, then encrypted.
const VERSION_DEFLATE: u8 = 2;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = 1 + KEY_ID_LEN + NONCE_LEN;
const EXP_LEN: usize = 8;
/// Larger inputs are refused before decoding: it bounds the work an attacker can make us do per
/// cookie. A value may be split over up to `cookies::MAX_CHUNKS` cookies of 4096 bytes, so the
/// reassembled value can reach 32 KiB; nothing larger is ever written.
pub const MAX_SEALED_LEN: usize = 32 * 1024;
/// The largest plaintext sealed or opened, compressed or not: a value that inflates past it is
/// refused (a "zip bomb" would need our key, but the cap holds whatever goes wrong).
pub const MAX_PLAINTEXT_LEN: usize = 64 * 1024;
/// Plaintexts shorter than this are sealed as they are: they fit one cookie anyway (2.5 KiB
/// seals to about 3.4 KB), and inflating costs every proxied request a few microseconds, more
/// than the whole unseal of a typical session (docs/benchmarks.md). Larger values are near or
/// past one cookie's capacity, where compression saves whole chunks.
const COMPRESS_FROM: usize = 2560;
/// Values opened on every proxied request (the access token, a route's narrowed token) are
/// compressed only from this size, where they would no longer fit their cookies otherwise (20
/// KiB seals to about 27 KB: 7 of the 8 cookies a value may take). Inflating costs such a
/// request several times what decoding and decrypting the same bytes cost: a 16 KB token took
/// ~4× as long to open as its size predicts, against ~25% of its Cookie header saved
/// (docs/benchmarks.md, issue 17). The other cookies are opened at refresh, logout or the
/// agent endpoints only, and stay compressed from [`COMPRESS_FROM`].
const COMPRESS_PER_REQUEST_FROM: usize = 20 * 1024;
/// DEFLATE level: 6 is zlib's default balance; sealing happens at login and refresh, not per
/// request.
const DEFLATE_LEVEL: u8 = 6;

/// What a sealed value is for. Part of the associated data: a value sealed for one purpose never
/// opens as another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Purpose {
    Login,
    AccessToken,
    RefreshToken,
    IdToken,
    Csrf,
    /// A token narrowed for one route's API (`-nt-<route key>`).
    NarrowedToken,
    /// A refresh result shared between replicas through the store (`src/store/refresh.rs`):
    /// never a cookie, and no cookie value opens as one.
    SharedRefresh,
}

impl Purpose {
    /// The plaintext size from which values of this purpose are compressed.
    fn compress_from(self) -> usize {
        match self {
            Purpose::AccessToken | Purpose::NarrowedToken => COMPRESS_PER_REQUEST_FROM,
            _ => COMPRESS_FROM,
        }
    }

    fn label(self) -> &'static [u8] {
        match self {
            Purpose::Login => b"login",
            Purpose::AccessToken => b"at",
            Purpose::RefreshToken => b"auth",
            Purpose::IdToken => b"id",
            Purpose::Csrf => b"csrf",
            Purpose::NarrowedToken => b"nt",
            Purpose::SharedRefresh => b"store-refresh",
        }
    }
}

/// Why a value did not open.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    /// Not ours, tampered with, moved from another cookie, or sealed with a key no longer listed.
    /// Deliberately one variant.
    #[error("the sealed value is invalid")]
    Invalid,
    /// Authentic, but past the expiry sealed into it.
    #[error("the sealed value has expired")]
    Expired,
    /// The value could not be serialized (a bug, never caused by input).
    #[error("the value could not be encoded")]
    Encode,
    /// The value is larger than any cookie could carry ([`MAX_PLAINTEXT_LEN`]).
    #[error("the value is too large to seal")]
    TooLarge,
}

/// What can be opened: a value parsed from its plaintext that [`super::opened`] can keep and
/// hand out again (a copy per request).
pub trait Opens: DeserializeOwned + Clone + Send + Sync + 'static {}

impl<T: DeserializeOwned + Clone + Send + Sync + 'static> Opens for T {}

/// Seals and opens values with a key ring that can be replaced while the server runs (key
/// rotation without restart).
#[derive(Debug)]
pub struct Sealer {
    ring: RwLock<Arc<KeyRing>>,
    /// The access- and narrowed-token values opened lately ([`super::opened`]).
    opened: Opened,
}

impl Sealer {
    pub fn new(ring: KeyRing) -> Self {
        Self {
            ring: RwLock::new(Arc::new(ring)),
            opened: Opened::default(),
        }
    }

    /// The ring in use now.
    pub fn ring(&self) -> Arc<KeyRing> {
        match self.ring.read() {
            Ok(r) => r.clone(),
            // A writer panicked mid-swap; the Arc it left is still a whole ring.
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the ring (SIGHUP or a changed keys file).
    pub fn replace_ring(&self, ring: KeyRing) {
        match self.ring.write() {
            Ok(mut r) => *r = Arc::new(ring),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(ring),
        }
        // Entries name the ring that opened them and would never be served again; this frees
        // them now.
        self.opened.clear();
    }

    /// The id (hex) of the listed key a value names in its header, if any: for metrics, never
    /// an id an attacker made up (that would grow the series without bound).
    pub fn listed_key_id(&self, sealed: &str) -> Option<String> {
        self.ring()
            .find(&sealed_key_id(sealed)?)
            .map(|k| k.id_hex())
    }

    /// Whether a sealed value (or just its start: the first chunk of a split value) names the
    /// current key: then [`Sealer::reseal`] has nothing to do, and a split value need not even
    /// be reassembled to find that out.
    pub fn names_current_key(&self, sealed: &str) -> bool {
        let Some(id) = sealed_key_id(sealed) else {
            return false;
        };
        // Asked for every cookie of every request: the ring is read in place, not cloned out.
        match self.ring.read() {
            Ok(ring) => ring.current().id() == id,
            Err(poisoned) => poisoned.into_inner().current().id() == id,
        }
    }

    /// When `sealed` was sealed by a listed key other than the current one, the same plaintext
    /// sealed with the current key; `None` when it already is current (or does not open). This
    /// moves live sessions onto a new key as they are used, so the old key can be dropped.
    pub fn reseal(&self, purpose: Purpose, now: i64, sealed: &str) -> Option<String> {
        let ring = self.ring();
        // Runs on every request for every cookie: look at the key id before decoding the whole
        // value.
        if sealed_key_id(sealed)? == ring.current().id() {
            return None;
        }
        // The same cap as unsealing, before any decoding: an attacker's 100 KB cookie carrying
        // an old key id must not cost a decode on every request.
        if sealed.len() > MAX_SEALED_LEN {
            return None;
        }
        let raw = URL_SAFE_NO_PAD.decode(sealed).ok()?;
        let plaintext = Self::open_raw(&ring, purpose, raw).ok()?;
        let exp = i64::from_be_bytes(plaintext.get(..EXP_LEN)?.try_into().ok()?);
        if now >= exp {
            return None;
        }
        self.seal_raw(&ring, purpose, &plaintext).ok()
    }

    /// Seals `value` for `purpose` with the current key; it opens until `expires_at` (Unix
    /// seconds).
    pub fn seal<T: Serialize>(
        &self,
        purpose: Purpose,
        expires_at: i64,
        value: &T,
    ) -> Result<String, SealError> {
        let mut plaintext = Vec::with_capacity(256);
        plaintext.extend_from_slice(&expires_at.to_be_bytes());
        serde_json::to_writer(&mut plaintext, value).map_err(|_| SealError::Encode)?;
        self.seal_raw(&self.ring(), purpose, &plaintext)
    }

    /// Seals a plaintext (`exp ‖ JSON`) with the ring's current key, compressed when that makes
    /// it shorter.
    fn seal_raw(
        &self,
        ring: &KeyRing,
        purpose: Purpose,
        plaintext: &[u8],
    ) -> Result<String, SealError> {
        if plaintext.len() > MAX_PLAINTEXT_LEN {
            return Err(SealError::TooLarge);
        }
        if plaintext.len() >= purpose.compress_from() {
            let deflated = miniz_oxide::deflate::compress_to_vec(plaintext, DEFLATE_LEVEL);
            if deflated.len() < plaintext.len() {
                return encrypt(ring, VERSION_DEFLATE, purpose, &deflated);
            }
        }
        encrypt(ring, VERSION_PLAIN, purpose, plaintext)
    }

    /// Opens a value sealed for `purpose` by any key in the ring, if it has not expired at `now`.
    /// The access- and narrowed-token values a session sends call after call are kept opened
    /// and parsed ([`super::opened`]): a value already opened is only checked for expiry.
    pub fn unseal<T: Opens>(
        &self,
        purpose: Purpose,
        now: i64,
        sealed: &str,
    ) -> Result<T, SealError> {
        if sealed.len() > MAX_SEALED_LEN {
            return Err(SealError::Invalid);
        }
        let ring = self.ring();
        let keeps = Opened::keeps(purpose);
        if keeps {
            if let Some((exp, value)) = self.opened.get::<T>(&ring, purpose, sealed) {
                return if now >= exp {
                    Err(SealError::Expired)
                } else {
                    Ok(value)
                };
            }
        }
        let plaintext = Self::decode_and_open(&ring, purpose, sealed)?;
        // Authentic from here on: only we could have written this plaintext.
        let (exp, json) = plaintext.split_at(EXP_LEN);
        let exp = i64::from_be_bytes(exp.try_into().map_err(|_| SealError::Invalid)?);
        if now >= exp {
            return Err(SealError::Expired);
        }
        let value: T = serde_json::from_slice(json).map_err(|_| SealError::Invalid)?;
        if keeps {
            self.opened
                .put(&ring, purpose, sealed, exp, value.clone(), plaintext.len());
        }
        Ok(value)
    }

    /// Decodes, authenticates and decrypts a sealed text; returns the plaintext (`exp ‖ JSON`).
    fn decode_and_open(
        ring: &KeyRing,
        purpose: Purpose,
        sealed: &str,
    ) -> Result<Vec<u8>, SealError> {
        let raw = URL_SAFE_NO_PAD
            .decode(sealed)
            .map_err(|_| SealError::Invalid)?;
        Self::open_raw(ring, purpose, raw)
    }

    /// Authenticates and decrypts a decoded value; returns the plaintext (`exp ‖ JSON`).
    fn open_raw(ring: &KeyRing, purpose: Purpose, mut raw: Vec<u8>) -> Result<Vec<u8>, SealError> {
        let version = *raw.first().ok_or(SealError::Invalid)?;
        if raw.len() < HEADER_LEN + TAG_LEN || !matches!(version, VERSION_PLAIN | VERSION_DEFLATE) {
            return Err(SealError::Invalid);
        }
        let key = ring
            .find(&raw[1..1 + KEY_ID_LEN])
            .ok_or(SealError::Invalid)?;
        let aad = associated_data(version, purpose, &key.id());
        let nonce =
            Nonce::try_from(&raw[1 + KEY_ID_LEN..HEADER_LEN]).map_err(|_| SealError::Invalid)?;
        let tag_at = raw.len() - TAG_LEN;
        let tag = Tag::try_from(&raw[tag_at..]).map_err(|_| SealError::Invalid)?;
        key.cipher
            .decrypt_inout_detached(&nonce, &aad, raw[HEADER_LEN..tag_at].as_mut().into(), &tag)
            .map_err(|_| SealError::Invalid)?;
        raw.truncate(tag_at);
        raw.drain(..HEADER_LEN);
        // Authentic from here on: only a holder of the key wrote these bytes.
        let plaintext = if version == VERSION_DEFLATE {
            miniz_oxide::inflate::decompress_to_vec_with_limit(&raw, MAX_PLAINTEXT_LEN)
                .map_err(|_| SealError::Invalid)?
        } else {
            raw
        };
        if plaintext.len() < EXP_LEN || plaintext.len() > MAX_PLAINTEXT_LEN {
            return Err(SealError::Invalid);
        }
        Ok(plaintext)
    }
}

/// Encrypts `body` (the plaintext, compressed for [`VERSION_DEFLATE`]) under the ring's current
/// key as a value of this version.
fn encrypt(
    ring: &KeyRing,
    version: u8,
    purpose: Purpose,
    body: &[u8],
) -> Result<String, SealError> {
    let key = ring.current();
    let plaintext = body;
    let mut nonce = [0u8; NONCE_LEN];
    rand::rng().fill_bytes(&mut nonce);
    // One buffer, encrypted in place: header, then plaintext (turned into ciphertext), then
    // the tag.
    let mut buf = Vec::with_capacity(HEADER_LEN + plaintext.len() + TAG_LEN);
    buf.push(version);
    buf.extend_from_slice(&key.id());
    buf.extend_from_slice(&nonce);
    buf.extend_from_slice(plaintext);
    let aad = associated_data(version, purpose, &key.id());
    let tag = key
        .cipher
        .encrypt_inout_detached(&Nonce::from(nonce), &aad, buf[HEADER_LEN..].as_mut().into())
        .map_err(|_| SealError::Encode)?;
    buf.extend_from_slice(&tag);
    Ok(URL_SAFE_NO_PAD.encode(buf))
}

/// The key id a sealed value names, from its first 8 characters alone (they decode to the
/// version, the key id and a nonce byte).
fn sealed_key_id(sealed: &str) -> Option<[u8; KEY_ID_LEN]> {
    let mut head = [0u8; 6];
    let len = URL_SAFE_NO_PAD
        .decode_slice(sealed.get(..8)?, &mut head)
        .ok()?;
    head.get(1..1 + KEY_ID_LEN)
        .filter(|_| len == head.len())?
        .try_into()
        .ok()
}

/// `token-handler/<version>/<purpose>/<key id>`: version 1 is exactly what releases before
/// compression bound, so their values still open.
fn associated_data(version: u8, purpose: Purpose, key_id: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(32);
    aad.extend_from_slice(b"token-handler/");
    aad.push(b'0' + version);
    aad.push(b'/');
    aad.extend_from_slice(purpose.label());
    aad.push(b'/');
    aad.extend_from_slice(key_id);
    aad
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::CookieKey;

    const NOW: i64 = 1_700_000_000;

    fn sealer_with(keys: &[&str]) -> Sealer {
        Sealer::new(KeyRing::parse(keys).expect("valid keys"))
    }

    fn fresh() -> (Sealer, String) {
        let key = CookieKey::generate_text();
        (sealer_with(&[&key]), key)
    }

    fn token_2k() -> String {
        "x".repeat(2048)
    }

    /// `len` random base64url characters: about as compressible as a JWT's signature (DEFLATE's
    /// Huffman coding gets them to 6 bits a character, no better).
    fn random_b64(len: usize) -> String {
        let mut bytes = vec![0u8; len * 3 / 4 + 3];
        rand::rng().fill_bytes(&mut bytes);
        URL_SAFE_NO_PAD.encode(bytes)[..len].to_string()
    }

    /// A value sealed exactly as releases before compression did (version 1, no version in
    /// the associated data's place but the literal `1`), written out here so the format is
    /// pinned independently of the sealing code.
    fn seal_v1_like_before(s: &Sealer, purpose_label: &[u8], exp: i64, json: &str) -> String {
        let ring = s.ring();
        let key = ring.current();
        let nonce = [7u8; NONCE_LEN];
        let mut buf = vec![1u8];
        buf.extend_from_slice(&key.id());
        buf.extend_from_slice(&nonce);
        buf.extend_from_slice(&exp.to_be_bytes());
        buf.extend_from_slice(json.as_bytes());
        let mut aad = b"token-handler/1/".to_vec();
        aad.extend_from_slice(purpose_label);
        aad.push(b'/');
        aad.extend_from_slice(&key.id());
        let tag = key
            .cipher
            .encrypt_inout_detached(&Nonce::from(nonce), &aad, buf[HEADER_LEN..].as_mut().into())
            .expect("encrypt");
        buf.extend_from_slice(&tag);
        URL_SAFE_NO_PAD.encode(buf)
    }

    #[test]
    fn values_sealed_before_compression_existed_still_open() {
        let (s, _) = fresh();
        let json = format!("\"{}\"", token_2k());
        let old = seal_v1_like_before(&s, b"at", NOW + 60, &json);
        let v: String = s.unseal(Purpose::AccessToken, NOW, &old).expect("open");
        assert_eq!(v, token_2k());
        // And they are moved to the current format by a reseal like any other value.
        assert!(s.unseal::<String>(Purpose::IdToken, NOW, &old).is_err());
    }

    #[test]
    fn compressible_values_are_compressed_and_the_version_is_authenticated() {
        let (s, _) = fresh();
        let jwt_like = format!(
            "{}.{}",
            "eyJhbGciOiJSUzI1NiJ9".repeat(100),
            random_b64(1000)
        );
        let sealed = s.seal(Purpose::IdToken, NOW + 60, &jwt_like).expect("seal");
        let raw = URL_SAFE_NO_PAD.decode(&sealed).expect("b64");
        assert_eq!(raw[0], VERSION_DEFLATE);
        assert!(raw.len() < jwt_like.len() * 3 / 4, "{} bytes", raw.len());
        let v: String = s.unseal(Purpose::IdToken, NOW, &sealed).expect("open");
        assert_eq!(v, jwt_like);
        // Values opened on every proxied request stay uncompressed until they would not fit
        // their cookies otherwise.
        let version = |purpose, v: &str| {
            let sealed = s.seal(purpose, NOW + 60, &v).expect("seal");
            let opened: String = s.unseal(purpose, NOW, &sealed).expect("open");
            assert_eq!(opened, v);
            URL_SAFE_NO_PAD.decode(&sealed).expect("b64")[0]
        };
        for purpose in [Purpose::AccessToken, Purpose::NarrowedToken] {
            assert_eq!(version(purpose, &jwt_like), VERSION_PLAIN);
            assert_eq!(version(purpose, &random_b64(16 * 1024)), VERSION_PLAIN);
            assert_eq!(version(purpose, &random_b64(21 * 1024)), VERSION_DEFLATE);
        }
        let sealed = s
            .seal(Purpose::RefreshToken, NOW + 60, &jwt_like)
            .expect("seal");
        let raw = URL_SAFE_NO_PAD.decode(&sealed).expect("b64");
        assert_eq!(raw[0], VERSION_DEFLATE);
        // The version byte is bound into the associated data: claiming "not compressed" (or an
        // unknown version) fails like any other edit.
        for version in [VERSION_PLAIN, 0, 3, 255] {
            let mut bad = raw.clone();
            bad[0] = version;
            let res: Result<String, _> =
                s.unseal(Purpose::RefreshToken, NOW, &URL_SAFE_NO_PAD.encode(&bad));
            assert_eq!(res, Err(SealError::Invalid), "version {version}");
        }
        // Values that fit one cookie anyway stay version 1 (random base64url text does compress:
        // 6 bits a byte).
        for v in ["short".to_string(), "x".repeat(2000)] {
            let sealed = s.seal(Purpose::AccessToken, NOW + 60, &v).expect("seal");
            assert_eq!(
                URL_SAFE_NO_PAD.decode(&sealed).expect("b64")[0],
                VERSION_PLAIN
            );
        }
    }

    #[test]
    fn an_authentic_value_that_inflates_past_the_limit_is_refused() {
        let (s, _) = fresh();
        let mut bomb = NOW.to_be_bytes().to_vec();
        bomb.resize(MAX_PLAINTEXT_LEN + 1, b'a');
        let deflated = miniz_oxide::deflate::compress_to_vec(&bomb, 6);
        assert!(deflated.len() < 1024);
        let sealed =
            encrypt(&s.ring(), VERSION_DEFLATE, Purpose::AccessToken, &deflated).expect("seal");
        let res: Result<String, _> = s.unseal(Purpose::AccessToken, NOW, &sealed);
        assert_eq!(res, Err(SealError::Invalid));
        // Just under the limit opens (the cap is not off by one).
        bomb.truncate(MAX_PLAINTEXT_LEN - 2);
        bomb.splice(8..9, *b"\"");
        bomb.push(b'"');
        bomb[..8].copy_from_slice(&(NOW + 60).to_be_bytes());
        let deflated = miniz_oxide::deflate::compress_to_vec(&bomb, 6);
        let sealed =
            encrypt(&s.ring(), VERSION_DEFLATE, Purpose::AccessToken, &deflated).expect("seal");
        let v: String = s.unseal(Purpose::AccessToken, NOW, &sealed).expect("open");
        assert_eq!(v.len() + 8 + 2, bomb.len());
        assert_eq!(bomb.len(), MAX_PLAINTEXT_LEN - 1);
        // Sealing refuses what could not be opened.
        assert_eq!(
            s.seal(
                Purpose::AccessToken,
                NOW + 60,
                &random_b64(MAX_PLAINTEXT_LEN)
            ),
            Err(SealError::TooLarge)
        );
    }

    #[test]
    fn round_trip() {
        let (s, _) = fresh();
        let sealed = s
            .seal(Purpose::AccessToken, NOW + 60, &token_2k())
            .expect("seal");
        let opened: String = s.unseal(Purpose::AccessToken, NOW, &sealed).expect("open");
        assert_eq!(opened, token_2k());
    }

    #[test]
    fn every_seal_uses_a_fresh_nonce() {
        let (s, _) = fresh();
        let a = s.seal(Purpose::Csrf, NOW + 60, &"same").expect("seal");
        let b = s.seal(Purpose::Csrf, NOW + 60, &"same").expect("seal");
        assert_ne!(a, b);
        let raw_a = URL_SAFE_NO_PAD.decode(&a).expect("b64");
        let raw_b = URL_SAFE_NO_PAD.decode(&b).expect("b64");
        assert_ne!(
            raw_a[1 + KEY_ID_LEN..HEADER_LEN],
            raw_b[1 + KEY_ID_LEN..HEADER_LEN]
        );
    }

    #[test]
    fn the_plaintext_is_not_visible() {
        let (s, _) = fresh();
        let sealed = s
            .seal(
                Purpose::AccessToken,
                NOW + 60,
                &"eyJhbGciOiJSUzI1NiJ9.secret",
            )
            .expect("seal");
        let raw = URL_SAFE_NO_PAD.decode(&sealed).expect("b64");
        assert!(!String::from_utf8_lossy(&raw).contains("secret"));
    }

    #[test]
    fn any_flipped_byte_fails_opaquely() {
        let (s, _) = fresh();
        let sealed = s.seal(Purpose::IdToken, NOW + 60, &"id").expect("seal");
        let raw = URL_SAFE_NO_PAD.decode(&sealed).expect("b64");
        for i in 0..raw.len() {
            let mut bad = raw.clone();
            bad[i] ^= 0x01;
            let res: Result<String, _> =
                s.unseal(Purpose::IdToken, NOW, &URL_SAFE_NO_PAD.encode(&bad));
            assert_eq!(res, Err(SealError::Invalid), "byte {i}");
        }
    }

    #[test]
    fn truncation_and_garbage_fail_opaquely() {
        let (s, _) = fresh();
        let sealed = s.seal(Purpose::IdToken, NOW + 60, &"id").expect("seal");
        for len in [0, 1, 5, 20, sealed.len() - 1] {
            let res: Result<String, _> = s.unseal(Purpose::IdToken, NOW, &sealed[..len]);
            assert_eq!(res, Err(SealError::Invalid), "length {len}");
        }
        for junk in ["%%%", "a b", &"A".repeat(MAX_SEALED_LEN + 1)] {
            let res: Result<String, _> = s.unseal(Purpose::IdToken, NOW, junk);
            assert_eq!(res, Err(SealError::Invalid));
        }
    }

    #[test]
    fn a_value_moved_to_another_cookie_fails() {
        let (s, _) = fresh();
        let sealed = s
            .seal(Purpose::RefreshToken, NOW + 60, &"rt")
            .expect("seal");
        for other in [
            Purpose::Login,
            Purpose::AccessToken,
            Purpose::IdToken,
            Purpose::Csrf,
            Purpose::SharedRefresh,
        ] {
            let res: Result<String, _> = s.unseal(other, NOW, &sealed);
            assert_eq!(res, Err(SealError::Invalid), "{other:?}");
        }
    }

    #[test]
    fn an_unknown_key_fails() {
        let (a, _) = fresh();
        let (b, _) = fresh();
        let sealed = a.seal(Purpose::Csrf, NOW + 60, &"v").expect("seal");
        let res: Result<String, _> = b.unseal(Purpose::Csrf, NOW, &sealed);
        assert_eq!(res, Err(SealError::Invalid));
    }

    #[test]
    fn editing_the_key_id_to_another_listed_key_fails() {
        let k1 = CookieKey::generate_text();
        let k2 = CookieKey::generate_text();
        let s = sealer_with(&[&k1, &k2]);
        let sealed = s.seal(Purpose::Csrf, NOW + 60, &"v").expect("seal");
        let mut raw = URL_SAFE_NO_PAD.decode(&sealed).expect("b64");
        let other = s.ring().keys()[1].id();
        raw[1..1 + KEY_ID_LEN].copy_from_slice(&other);
        let res: Result<String, _> = s.unseal(Purpose::Csrf, NOW, &URL_SAFE_NO_PAD.encode(&raw));
        assert_eq!(res, Err(SealError::Invalid));
    }

    #[test]
    fn a_rotated_ring_opens_values_sealed_with_older_keys() {
        let old = CookieKey::generate_text();
        let new = CookieKey::generate_text();
        let before = sealer_with(&[&old]);
        let sealed_old = before
            .seal(Purpose::AccessToken, NOW + 60, &"t")
            .expect("seal");
        // Step 1 of the runbook: the new key is listed but does not seal yet.
        let step1 = sealer_with(&[&old, &new]);
        // Step 2: the new key seals; the old one still opens.
        let step2 = sealer_with(&[&new, &old]);
        for s in [&step1, &step2] {
            let v: String = s
                .unseal(Purpose::AccessToken, NOW, &sealed_old)
                .expect("open");
            assert_eq!(v, "t");
        }
        let sealed_new = step2
            .seal(Purpose::AccessToken, NOW + 60, &"t")
            .expect("seal");
        let v: String = step1
            .unseal(Purpose::AccessToken, NOW, &sealed_new)
            .expect("open");
        assert_eq!(v, "t");
        // Step 3: the old key is dropped; what it sealed no longer opens.
        let step3 = sealer_with(&[&new]);
        let res: Result<String, _> = step3.unseal(Purpose::AccessToken, NOW, &sealed_old);
        assert_eq!(res, Err(SealError::Invalid));
    }

    #[test]
    fn values_sealed_with_an_older_key_are_resealed_with_the_current_one() {
        let old = CookieKey::generate_text();
        let new = CookieKey::generate_text();
        let s = sealer_with(&[&old]);
        let sealed = s.seal(Purpose::AccessToken, NOW + 60, &"t").expect("seal");
        assert_eq!(
            s.reseal(Purpose::AccessToken, NOW, &sealed),
            None,
            "already current"
        );
        s.replace_ring(KeyRing::parse(&[&new, &old]).expect("ring"));
        let resealed = s
            .reseal(Purpose::AccessToken, NOW, &sealed)
            .expect("resealed with the new key");
        // Same value, same expiry, and it opens once the old key is gone.
        s.replace_ring(KeyRing::parse(&[&new]).expect("ring"));
        let v: String = s
            .unseal(Purpose::AccessToken, NOW, &resealed)
            .expect("open");
        assert_eq!(v, "t");
        assert_eq!(
            s.unseal::<String>(Purpose::AccessToken, NOW + 60, &resealed),
            Err(SealError::Expired)
        );
        // Resealing never crosses purposes.
        s.replace_ring(KeyRing::parse(&[&new, &old]).expect("ring"));
        assert_eq!(s.reseal(Purpose::RefreshToken, NOW, &sealed), None);
        // Nor touches a value over the unsealing cap, even one an older key really sealed.
        let big = sealer_with(&[&old])
            .seal(Purpose::AccessToken, NOW + 60, &random_b64(40_000))
            .expect("seal");
        assert!(big.len() > MAX_SEALED_LEN);
        assert_eq!(s.reseal(Purpose::AccessToken, NOW, &big), None);
    }

    #[test]
    fn expiry_is_enforced_after_decryption() {
        let (s, _) = fresh();
        let sealed = s.seal(Purpose::Login, NOW + 600, &"v").expect("seal");
        let ok: Result<String, _> = s.unseal(Purpose::Login, NOW + 599, &sealed);
        assert!(ok.is_ok());
        let res: Result<String, _> = s.unseal(Purpose::Login, NOW + 600, &sealed);
        assert_eq!(res, Err(SealError::Expired));
    }

    #[test]
    fn debug_of_a_sealer_is_redacted() {
        let (s, key) = fresh();
        let sealed = s
            .seal(Purpose::AccessToken, NOW + 60, &"eyJ.secret-token")
            .expect("seal");
        let _: String = s.unseal(Purpose::AccessToken, NOW, &sealed).expect("open");
        let debug = format!("{s:?}");
        assert!(!debug.contains(&key));
        assert!(debug.contains("<redacted>"));
        // The values opened lately are counted, never shown.
        assert!(debug.contains("entries: 1"), "{debug}");
        assert!(!debug.contains("secret-token") && !debug.contains(&sealed[..20]));
    }

    /// A value opened again comes from [`super::Opened`] (issue 17); these are the checks a hit
    /// must still pass, each against a value the cache holds.
    #[test]
    fn a_value_opened_before_is_still_checked_like_a_new_one() {
        let old = CookieKey::generate_text();
        let new = CookieKey::generate_text();
        let s = sealer_with(&[&old]);
        let sealed = s
            .seal(Purpose::AccessToken, NOW + 60, &random_b64(16_000))
            .expect("seal");
        let first: String = s.unseal(Purpose::AccessToken, NOW, &sealed).expect("open");
        let again: String = s.unseal(Purpose::AccessToken, NOW, &sealed).expect("open");
        assert_eq!(first, again);
        // Kept parsed as one type, asked as another: parsed as that one; then kept as a
        // `String` again, so each check below meets a value the cache holds.
        let as_json: serde_json::Value =
            s.unseal(Purpose::AccessToken, NOW, &sealed).expect("open");
        assert_eq!(as_json, serde_json::Value::String(first.clone()));
        let _: String = s.unseal(Purpose::AccessToken, NOW, &sealed).expect("open");
        // Its sealed expiry.
        assert_eq!(
            s.unseal::<String>(Purpose::AccessToken, NOW + 60, &sealed),
            Err(SealError::Expired)
        );
        // Its purpose: the same text as another cookie's value.
        assert_eq!(
            s.unseal::<String>(Purpose::NarrowedToken, NOW, &sealed),
            Err(SealError::Invalid)
        );
        // Its bytes: any other text of the same length and end (the cache hashes the end).
        let mut edited = sealed.clone().into_bytes();
        edited[30] = if edited[30] == b'A' { b'B' } else { b'A' };
        let edited = String::from_utf8(edited).expect("text");
        assert_eq!(
            s.unseal::<String>(Purpose::AccessToken, NOW, &edited),
            Err(SealError::Invalid)
        );
        // Its key: once the key that sealed it is no longer in the ring, it no longer opens.
        s.replace_ring(KeyRing::parse(&[&new]).expect("ring"));
        assert_eq!(
            s.unseal::<String>(Purpose::AccessToken, NOW, &sealed),
            Err(SealError::Invalid)
        );
    }
}
