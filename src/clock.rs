//! The one source of "now" for expiry and refresh decisions.
//!
//! Every time-dependent check (sealed-cookie expiry, token expiry, ID-token `iat`/`exp`) reads
//! this clock, so tests can move time forward instead of sleeping, and nothing mixes clocks.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// The system's wall clock in seconds since the Unix epoch, without any test offset.
///
/// For times another party checks against its own clock (a client assertion's `iat`/`exp`,
/// RFC 7523 §3), where moving time in a test must not change what the provider sees. Expiry and
/// refresh decisions use [`Clock::now`] instead.
pub fn system_now() -> i64 {
    // The one read of the system clock: clippy.toml bans `SystemTime::now` everywhere else so
    // that no expiry check can bypass `Clock`. (A host clock set before 1970 reads as 0.)
    #[allow(clippy::disallowed_methods)]
    let now = SystemTime::now();
    now.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Wall-clock seconds since the Unix epoch, plus an offset that only tests change.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    offset: Arc<AtomicI64>,
}

impl Clock {
    /// Seconds since the Unix epoch.
    pub fn now(&self) -> i64 {
        system_now() + self.offset.load(Ordering::Relaxed)
    }

    /// Moves this clock (and every clone of it) forward, for tests of expiry.
    pub fn advance(&self, seconds: i64) {
        self.offset.fetch_add(seconds, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advancing_moves_every_clone() {
        let a = Clock::default();
        let b = a.clone();
        let before = b.now();
        a.advance(3600);
        assert!(b.now() >= before + 3600);
    }
}
