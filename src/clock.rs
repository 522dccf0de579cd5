//! The one source of "now" for expiry and refresh decisions.
//!
//! Every time-dependent check (sealed-cookie expiry, token expiry, ID-token `iat`/`exp`) reads
//! this clock, so tests can move time forward instead of sleeping, and nothing mixes clocks.
//! Waiting for a moment on this clock ([`Clock::sleep_until`]) wakes when the clock is moved, so
//! a timer that a real sleep would hold for minutes ends as soon as a test advances the clock.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;

/// The longest a [`Clock::sleep_until`] sleeps before it reads the clock again, so a jump of the
/// wall clock (NTP, a suspended VM) delays a deadline by this much at most.
const RECHECK: Duration = Duration::from_secs(60);

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
    /// Wakes every [`Clock::sleep_until`] when the offset moves.
    advanced: Arc<Notify>,
}

impl Clock {
    /// Seconds since the Unix epoch.
    pub fn now(&self) -> i64 {
        system_now() + self.offset.load(Ordering::Relaxed)
    }

    /// Moves this clock (and every clone of it) forward, for tests of expiry.
    pub fn advance(&self, seconds: i64) {
        self.offset.fetch_add(seconds, Ordering::Relaxed);
        self.advanced.notify_waiters();
    }

    /// Returns once [`Clock::now`] has reached `at` (Unix seconds). Sleeps the real time left
    /// (never more than a minute between readings), and wakes early when the clock is advanced.
    pub async fn sleep_until(&self, at: i64) {
        loop {
            // Registered before reading the clock, so an advance in between is not missed.
            let advanced = self.advanced.notified();
            tokio::pin!(advanced);
            advanced.as_mut().enable();
            let left = at.saturating_sub(self.now());
            if left <= 0 {
                return;
            }
            let wait = Duration::from_secs(left.unsigned_abs()).min(RECHECK);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = advanced => {}
            }
        }
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

    #[tokio::test]
    async fn a_sleep_until_ends_when_the_clock_is_advanced_past_it() {
        let clock = Clock::default();
        let at = clock.now() + 3600;
        let sleeper = tokio::spawn({
            let clock = clock.clone();
            async move { clock.sleep_until(at).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!sleeper.is_finished(), "woke before its time");
        clock.advance(1800);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!sleeper.is_finished(), "woke at half its time");
        clock.advance(1800);
        tokio::time::timeout(Duration::from_secs(2), sleeper)
            .await
            .expect("the sleep saw the clock move")
            .expect("the sleeper ran");
        // A moment already passed (or far past any overflow) returns at once.
        tokio::time::timeout(Duration::from_secs(1), clock.sleep_until(i64::MIN))
            .await
            .expect("a past moment does not wait");
    }
}
