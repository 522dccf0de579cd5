//! The per-request values opened lately, so a session's next proxied call skips decoding,
//! decrypting and parsing the very same bytes again (issue 17, docs/benchmarks.md).
//!
//! Every proxied request opens the access-token cookie (or its route's narrowed-token cookie):
//! base64url decoding and AES-256-GCM over the whole value, about 1.5 KB for a typical JWT and
//! 22 KB for a 16 KB token, then its JSON; and a session sends the same bytes on call after
//! call until its token is refreshed. Here a sealed text maps to its sealed expiry and the
//! typed value its plaintext parsed to (the parse is a pure function of the plaintext).
//!
//! Why a hit answers exactly what opening would:
//! - An entry is made only after the value authenticated under the ring's key and parsed:
//!   nothing an attacker sends without a key can enter, and a value that fails to open is never
//!   cached.
//! - A hit needs the same purpose, the same type and the same sealed text, compared whole (the
//!   hash only finds the candidate: it covers the last characters, which encode the GCM tag),
//!   so it is the value the same bytes decrypt and parse to.
//! - The expiry sealed with it and every session check after it run on a hit as on a miss:
//!   only the decoding, the decryption and the parse are skipped.
//! - An entry is bound to the key ring that opened it. Replacing the ring (a key removed by a
//!   reload or a changed keys file) empties the cache, and an entry a request made with the
//!   previous ring after that is never served: the current ring must be the entry's.
//! - Bounded: at most [`MAX_BYTES`] in all, each entry charged its sealed text and twice its
//!   plaintext (the typed value, and the token's header form made from it later, see
//!   [`crate::secret::Token::header_value`]); when the next entry would not fit, the cache is
//!   emptied (each session's next call makes its entry again).
//!
//! The plaintext tokens it holds are the ones the proxy forwards anyway; they stay in memory a
//! while longer (until evicted), never anywhere else.

use super::keys::KeyRing;
use super::seal::Purpose;
use std::any::Any;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, Weak};

/// The most bytes held, as charged (a sealed text and twice its plaintext): about 1,000 sessions
/// with 1 KB access tokens, or 75 with 16 KB ones.
pub const MAX_BYTES: usize = 4 * 1024 * 1024;
/// How much of a sealed text's end is hashed: 32 base64url characters, the last 22 of which
/// encode the 16-byte tag (a value's MAC, different for every sealing).
const HASHED_TAIL: usize = 32;

/// Lately opened values; see the module docs. Its `Debug` shows how many, never what.
///
/// Hashed with foldhash, seeded per process, rather than std's SipHash: the table is asked on
/// every proxied request, and SipHash spent some 500 instructions of each on the key and then
/// again on the key's `u64` (issue 17). Only values that opened are kept, so what is hashed
/// into the table is text we sealed.
#[derive(Default)]
pub struct Opened {
    hasher: foldhash::fast::RandomState,
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    entries: HashMap<u64, Entry, foldhash::fast::RandomState>,
    bytes: usize,
}

struct Entry {
    purpose: Purpose,
    /// The ring that opened it; a `Weak` so an old ring is not kept alive by its entries (and
    /// its address not reused while one still points at it).
    ring: Weak<KeyRing>,
    sealed: Arc<str>,
    /// The expiry sealed with the value (Unix seconds), checked on every hit.
    exp: i64,
    /// What the plaintext parsed to; served only as the type it was made as.
    value: Arc<dyn Any + Send + Sync>,
    /// What this entry counts against [`MAX_BYTES`].
    charged: usize,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (entries, bytes) = self
            .table
            .lock()
            .map_or((0, 0), |t| (t.entries.len(), t.bytes));
        f.debug_struct("Opened")
            .field("entries", &entries)
            .field("bytes", &bytes)
            .finish()
    }
}

impl Opened {
    /// Whether values of this purpose are worth keeping: the ones opened on every proxied
    /// request. The others are opened at refresh, logout or the agent endpoints, once or
    /// rarely.
    pub fn keeps(purpose: Purpose) -> bool {
        matches!(purpose, Purpose::AccessToken | Purpose::NarrowedToken)
    }

    fn key(&self, purpose: Purpose, sealed: &str) -> u64 {
        let tail = &sealed.as_bytes()[sealed.len().saturating_sub(HASHED_TAIL)..];
        self.hasher.hash_one((purpose, sealed.len(), tail))
    }

    /// The expiry and the value `sealed` opened and parsed to under `ring` for `purpose`, if it
    /// is held as a `T`.
    pub fn get<T: Clone + 'static>(
        &self,
        ring: &Arc<KeyRing>,
        purpose: Purpose,
        sealed: &str,
    ) -> Option<(i64, T)> {
        let key = self.key(purpose, sealed);
        let (held, exp, value) = {
            let table = self.table.lock().ok()?;
            let entry = table.entries.get(&key)?;
            if entry.purpose != purpose || !std::ptr::eq(entry.ring.as_ptr(), Arc::as_ptr(ring)) {
                return None;
            }
            (entry.sealed.clone(), entry.exp, entry.value.clone())
        };
        // Compared outside the lock: up to 32 KiB.
        if *held != *sealed {
            return None;
        }
        value.downcast_ref::<T>().map(|v| (exp, v.clone()))
    }

    /// Keeps what `sealed` opened to under `ring`: its expiry `exp` and `value`, parsed from a
    /// plaintext of `plaintext_len` bytes.
    pub fn put<T: Send + Sync + 'static>(
        &self,
        ring: &Arc<KeyRing>,
        purpose: Purpose,
        sealed: &str,
        exp: i64,
        value: T,
        plaintext_len: usize,
    ) {
        let size = sealed.len() + 2 * plaintext_len;
        if size > MAX_BYTES {
            return;
        }
        let key = self.key(purpose, sealed);
        let entry = Entry {
            purpose,
            ring: Arc::downgrade(ring),
            sealed: Arc::from(sealed),
            exp,
            value: Arc::new(value),
            charged: size,
        };
        let Ok(mut table) = self.table.lock() else {
            return;
        };
        if table.bytes + size > MAX_BYTES {
            table.entries = HashMap::default();
            table.bytes = 0;
        }
        if let Some(old) = table.entries.insert(key, entry) {
            table.bytes -= old.charged;
        }
        table.bytes += size;
    }

    /// Forgets everything (the ring was replaced).
    pub fn clear(&self) {
        if let Ok(mut table) = self.table.lock() {
            *table = Table::default();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> Arc<KeyRing> {
        let key = crate::crypto::CookieKey::generate_text();
        Arc::new(KeyRing::parse(&[&key]).expect("ring"))
    }

    #[test]
    fn a_hit_needs_the_same_ring_purpose_type_and_text() {
        let (a, b) = (ring(), ring());
        let opened = Opened::default();
        let sealed = "x".repeat(100);
        opened.put(&a, Purpose::AccessToken, &sealed, 60, "v".to_string(), 10);
        assert_eq!(
            opened.get::<String>(&a, Purpose::AccessToken, &sealed),
            Some((60, "v".to_string()))
        );
        assert!(opened
            .get::<String>(&b, Purpose::AccessToken, &sealed)
            .is_none());
        assert!(opened
            .get::<String>(&a, Purpose::NarrowedToken, &sealed)
            .is_none());
        // Only as the type it was parsed to.
        assert!(opened
            .get::<u64>(&a, Purpose::AccessToken, &sealed)
            .is_none());
        // Same length, same hashed end, another text: found by the hash, refused by the
        // comparison.
        let other = format!("y{}", &sealed[1..]);
        assert!(opened
            .get::<String>(&a, Purpose::AccessToken, &other)
            .is_none());
        // An entry made with a ring that has since been replaced and dropped is never served,
        // even if a new ring is allocated where the old one was.
        let c = ring();
        opened.put(&c, Purpose::AccessToken, "c-value", 60, 1u8, 10);
        drop(c);
        for _ in 0..100 {
            let d = ring();
            assert!(opened
                .get::<u8>(&d, Purpose::AccessToken, "c-value")
                .is_none());
        }
    }

    #[test]
    fn it_holds_at_most_its_bound() {
        let r = ring();
        let opened = Opened::default();
        let size = 40 * 1024;
        for i in 0..(2 * MAX_BYTES / size) {
            let sealed = format!("{i:08}{}", "s".repeat(size / 2));
            opened.put(&r, Purpose::AccessToken, &sealed, 60, i, size / 4);
            let table = opened.table.lock().expect("lock");
            assert!(table.bytes <= MAX_BYTES, "{} bytes", table.bytes);
            let counted: usize = table.entries.values().map(|e| e.charged).sum();
            assert_eq!(counted, table.bytes);
            assert!(table
                .entries
                .values()
                .all(|e| e.charged == e.sealed.len() + 2 * (size / 4)));
        }
        // Larger than the whole bound: not kept.
        opened.clear();
        opened.put(&r, Purpose::AccessToken, "big", 60, 0u8, MAX_BYTES / 2);
        assert!(opened.get::<u8>(&r, Purpose::AccessToken, "big").is_none());
    }
}
