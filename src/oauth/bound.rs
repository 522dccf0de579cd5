//! The bound on concurrent calls to one provider (issue 17, `max_concurrent_calls`).
//!
//! Refresh is single-flight per session, but nothing stops many sessions from needing a refresh
//! at the same moment: 1,000 access tokens issued in the same minute expire in the same minute,
//! and every one of them would open its own connection to the token endpoint. An identity
//! provider under such a stampede slows down or sheds load for every client it serves, so each
//! provider gets a counting semaphore shared by all workers: a call beyond the bound waits for
//! a free slot (fair, first come first served) instead of being refused. The wait comes before
//! the call: each call's own `timeout` starts when it is sent, so a queued call is never cut
//! short by its time in the queue.

use std::sync::Arc;
use tokio::sync::{Semaphore, SemaphorePermit};

/// Slots for calls to one provider, shared by every worker of the process.
#[derive(Debug, Clone)]
pub struct CallBound(Arc<Semaphore>);

impl CallBound {
    /// `limit` calls at once; 0 is refused by configuration and taken as 1 here.
    pub fn new(limit: usize) -> Self {
        Self(Arc::new(Semaphore::new(
            limit.clamp(1, Semaphore::MAX_PERMITS),
        )))
    }

    /// Waits for a slot; the call holds it until the returned permit is dropped.
    pub async fn acquire(&self) -> CallSlot<'_> {
        // The semaphore is never closed, so `acquire` cannot fail (`None` is unreachable).
        CallSlot {
            _permit: self.0.acquire().await.ok(),
        }
    }

    /// Slots free right now (tests and metrics).
    pub fn available(&self) -> usize {
        self.0.available_permits()
    }
}

/// A held slot; dropping it lets the next waiting call go.
#[derive(Debug)]
pub struct CallSlot<'a> {
    _permit: Option<SemaphorePermit<'a>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_call_beyond_the_bound_waits_until_a_slot_is_freed() {
        let bound = CallBound::new(2);
        let a = bound.acquire().await;
        let _b = bound.acquire().await;
        assert_eq!(bound.available(), 0);
        let waiting = bound.acquire();
        tokio::pin!(waiting);
        assert!(futures_util::FutureExt::now_or_never(waiting.as_mut()).is_none());
        drop(a);
        let _c = waiting.await;
        assert_eq!(bound.available(), 0);
    }

    #[test]
    fn zero_is_taken_as_one() {
        assert_eq!(CallBound::new(0).available(), 1);
    }
}
