//! Cookie sealing: AES-256-GCM authenticated encryption with a key ring.
//!
//! Tokens leave token-handler only inside sealed cookies, so everything rests on this module:
//! a sealed value must be unreadable and unforgeable without a key, must not be movable from one
//! cookie to another, and must stop working after its own expiry even if a browser (or a thief)
//! keeps it. Operators rotate keys without logging anyone out, so every listed key can open but
//! only the first seals.

mod keys;
mod opened;
mod seal;

pub use keys::{CookieKey, KeyError, KeyRing};
pub use seal::{Opens, Purpose, SealError, Sealer, MAX_PLAINTEXT_LEN, MAX_SEALED_LEN};
