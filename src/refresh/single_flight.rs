//! A single flight with a short memory: callers that ask for the same key at the same time share
//! one grant, and callers that come shortly after share its result.
//!
//! It knows nothing of tokens or HTTP: a key names the grant, a freshness function says what a
//! finished result is still worth to a caller, and a grant future produces a new one. What makes
//! it fit refresh tokens that rotate (RFC 9700 §4.14.2) is [`Freshness::Spent`]: a result whose
//! input must never be granted again is kept for the stragglers that still hold that input, and
//! when it has come due they go on from the input it produced (at most `max_chain` steps).
//!
//! Results are kept for `ttl` on tokio's clock, so tests move time with a paused runtime.
//! Failures are shared by the callers in flight with them, never by later ones.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::OnceCell;
use tokio::time::Instant;

/// A grant's result, shared by every caller that joined it.
pub type Outcome<V, E> = Result<Arc<V>, E>;

/// What a finished, successful result is worth to a caller that looks it up with `input`.
#[derive(Debug, PartialEq, Eq)]
pub enum Freshness<I> {
    /// Still good: hand it out.
    Fresh,
    /// Come due, and the input that produced it may be granted again: replace it.
    Stale,
    /// Come due, and the input that produced it is spent: never grant it again, go on from the
    /// input the result produced.
    Spent(I),
}

struct Flight<V, E> {
    started: Instant,
    cell: Arc<OnceCell<Outcome<V, E>>>,
}

/// What a caller got: the outcome, and how many of its steps used another caller's grant.
#[derive(Debug)]
pub struct Flown<V, E> {
    pub outcome: Outcome<V, E>,
    /// Steps that joined a grant in flight or a kept result instead of performing one.
    pub joined: usize,
}

impl<V, E> Flown<V, E> {
    /// Whether any of the result came from another caller's grant.
    pub fn shared(&self) -> bool {
        self.joined > 0
    }
}

/// The table of grants in flight and results kept, by key.
pub struct SingleFlight<K, V, E> {
    ttl: Duration,
    max_chain: usize,
    flights: Mutex<HashMap<K, Flight<V, E>>>,
}

impl<K, V, E> std::fmt::Debug for SingleFlight<K, V, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SingleFlight({} flights)", self.table().len())
    }
}

impl<K, V, E> SingleFlight<K, V, E> {
    /// Results are kept for `ttl`; a caller follows at most `max_chain` spent results.
    pub fn new(ttl: Duration, max_chain: usize) -> Self {
        Self {
            ttl,
            max_chain: max_chain.max(1),
            flights: Mutex::new(HashMap::new()),
        }
    }

    /// The table. Every change to it is a single map operation, so one left behind by a
    /// panicking thread is still consistent and is used as it is.
    fn table(&self) -> MutexGuard<'_, HashMap<K, Flight<V, E>>> {
        self.flights.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<K: Hash + Eq + Clone, V, E: Clone> SingleFlight<K, V, E> {
    /// Drops the kept result for `key`, so no later caller picks it up.
    pub fn forget(&self, key: &K) {
        self.table().remove(key);
    }

    /// The result for `input`: joined when a grant for its key is in flight or kept, granted
    /// here otherwise. A joined result that is [`Freshness::Spent`] is followed to the input it
    /// produced, up to `max_chain` steps in all.
    pub async fn run<I, Fut>(
        &self,
        input: I,
        key: impl Fn(&I) -> K,
        freshness: impl Fn(&I, &V) -> Freshness<I>,
        grant: impl Fn(I) -> Fut,
    ) -> Flown<V, E>
    where
        I: Clone,
        Fut: Future<Output = Outcome<V, E>>,
    {
        let mut input = input;
        let mut joined = 0;
        let mut step = 1;
        loop {
            let (outcome, performed) = self.step(&input, key(&input), &freshness, &grant).await;
            if !performed {
                joined += 1;
            }
            if let (Ok(value), false) = (&outcome, performed) {
                if step < self.max_chain {
                    // Made for an earlier caller and come due since: the input it replaced is
                    // spent, so go on from the one it produced.
                    if let Freshness::Spent(next) = freshness(&input, value) {
                        input = next;
                        step += 1;
                        continue;
                    }
                }
            }
            return Flown { outcome, joined };
        }
    }

    /// One step: the grant for `key`, performed here or shared. Returns whether it was performed
    /// here.
    async fn step<I, Fut>(
        &self,
        input: &I,
        key: K,
        freshness: &impl Fn(&I, &V) -> Freshness<I>,
        grant: &impl Fn(I) -> Fut,
    ) -> (Outcome<V, E>, bool)
    where
        I: Clone,
        Fut: Future<Output = Outcome<V, E>>,
    {
        let cell = {
            let mut flights = self.table();
            flights.retain(|_, f| f.started.elapsed() < self.ttl);
            // A finished result that has come due is replaced only when its input may be granted
            // again; a spent one is kept: whoever still holds its input must never send it again.
            let replace = flights.get(&key).is_some_and(|f| match f.cell.get() {
                Some(Ok(v)) => matches!(freshness(input, v), Freshness::Stale),
                Some(Err(_)) => true,
                None => false,
            });
            if replace {
                flights.remove(&key);
            }
            flights
                .entry(key.clone())
                .or_insert_with(|| Flight {
                    started: Instant::now(),
                    cell: Arc::new(OnceCell::new()),
                })
                .cell
                .clone()
        };
        let mut performed = false;
        let outcome = cell
            .get_or_init(|| {
                performed = true;
                grant(input.clone())
            })
            .await
            .clone();
        if outcome.is_err() {
            // Failures are shared by the callers in flight with them, never by later ones.
            let mut flights = self.table();
            if flights
                .get(&key)
                .is_some_and(|f| Arc::ptr_eq(&f.cell, &cell))
            {
                flights.remove(&key);
            }
        }
        (outcome, performed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::time::{advance, sleep};

    const TTL: Duration = Duration::from_secs(30);
    /// How long a fake grant takes, and how long its result stays fresh.
    const GRANT_TIME: Duration = Duration::from_secs(1);
    const LIFETIME: Duration = Duration::from_secs(5);

    /// A grant's result: the input to use next (another one when the grant rotates), and when
    /// the result comes due.
    #[derive(Debug)]
    struct Value {
        next: String,
        due_at: Instant,
    }

    /// A fake grant that records every input it was performed with.
    #[derive(Default)]
    struct Fake {
        granted: Mutex<Vec<String>>,
        rotate: bool,
        fail: AtomicBool,
    }

    type Table = SingleFlight<String, Value, String>;

    impl Fake {
        fn rotating() -> Self {
            Self {
                rotate: true,
                ..Self::default()
            }
        }

        async fn grant(&self, input: String) -> Outcome<Value, String> {
            sleep(GRANT_TIME).await;
            self.granted.lock().expect("lock").push(input.clone());
            if self.fail.load(Ordering::SeqCst) {
                return Err(format!("refused {input}"));
            }
            let next = if self.rotate {
                format!("{input}+")
            } else {
                input
            };
            Ok(Arc::new(Value {
                next,
                due_at: Instant::now() + LIFETIME,
            }))
        }

        fn freshness(input: &String, v: &Value) -> Freshness<String> {
            if Instant::now() < v.due_at {
                Freshness::Fresh
            } else if v.next != *input {
                Freshness::Spent(v.next.clone())
            } else {
                Freshness::Stale
            }
        }

        async fn run(&self, table: &Table, input: &str) -> Flown<Value, String> {
            table
                .run(
                    input.to_string(),
                    |i| i.clone(),
                    Self::freshness,
                    |i| self.grant(i),
                )
                .await
        }

        fn granted(&self) -> Vec<String> {
            self.granted.lock().expect("lock").clone()
        }
    }

    fn next(flown: &Flown<Value, String>) -> &str {
        &flown.outcome.as_ref().expect("a result").next
    }

    #[tokio::test(start_paused = true)]
    async fn callers_at_the_same_time_share_one_grant() {
        let (table, fake) = (Table::new(TTL, 3), Fake::rotating());
        let (a, b, c) = tokio::join!(
            fake.run(&table, "rt"),
            fake.run(&table, "rt"),
            fake.run(&table, "other")
        );
        let mut granted = fake.granted();
        granted.sort();
        assert_eq!(granted, ["other", "rt"]);
        assert_eq!((a.joined, b.joined, c.joined), (0, 1, 0));
        assert!(!a.shared() && b.shared());
        assert_eq!((next(&a), next(&b)), ("rt+", "rt+"));
    }

    #[tokio::test(start_paused = true)]
    async fn stragglers_get_the_kept_result_until_it_expires() {
        let (table, fake) = (Table::new(TTL, 3), Fake::rotating());
        fake.run(&table, "rt").await;
        advance(Duration::from_secs(3)).await;
        let straggler = fake.run(&table, "rt").await;
        assert_eq!((straggler.joined, next(&straggler)), (1, "rt+"));
        assert_eq!(fake.granted().len(), 1);
        // Past the TTL the result is gone, even a spent one: `rt` is granted anew (and the
        // provider, not this table, has the last word on it).
        advance(TTL).await;
        let later = fake.run(&table, "rt").await;
        assert_eq!(later.joined, 0);
        assert_eq!(fake.granted(), ["rt", "rt"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_due_result_is_replaced_when_its_input_may_be_granted_again() {
        let (table, fake) = (Table::new(TTL, 3), Fake::default());
        fake.run(&table, "rt").await;
        advance(LIFETIME).await;
        let after = fake.run(&table, "rt").await;
        assert_eq!(after.joined, 0);
        assert_eq!(fake.granted(), ["rt", "rt"]);
    }

    #[tokio::test(start_paused = true)]
    async fn stragglers_never_grant_a_spent_input_again_but_follow_the_chain() {
        let (table, fake) = (Table::new(TTL, 3), Fake::rotating());
        assert_eq!(next(&fake.run(&table, "rt").await), "rt+");
        // The result for `rt` has come due; `rt` itself is spent (rotated into `rt+`).
        advance(LIFETIME + GRANT_TIME).await;
        let b = fake.run(&table, "rt").await;
        assert_eq!(fake.granted(), ["rt", "rt+"], "rt is never granted twice");
        assert_eq!((b.joined, next(&b)), (1, "rt++"));
        // A later straggler with `rt` follows both kept results without a grant.
        let c = fake.run(&table, "rt").await;
        assert_eq!((c.joined, next(&c)), (2, "rt++"));
        assert_eq!(fake.granted().len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_chain_stops_after_max_chain_steps() {
        let (table, fake) = (Table::new(TTL, 2), Fake::rotating());
        fake.run(&table, "rt").await;
        advance(LIFETIME + GRANT_TIME).await;
        fake.run(&table, "rt+").await;
        // Both kept results have come due: `rt` → `rt+` → (would be) `rt++`.
        advance(LIFETIME + GRANT_TIME).await;
        let d = fake.run(&table, "rt").await;
        assert_eq!((d.joined, next(&d)), (2, "rt++"));
        assert_eq!(fake.granted(), ["rt", "rt+"]);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_are_shared_in_flight_but_not_with_later_callers() {
        let (table, fake) = (Table::new(TTL, 3), Fake::default());
        fake.fail.store(true, Ordering::SeqCst);
        let (a, b) = tokio::join!(fake.run(&table, "rt"), fake.run(&table, "rt"));
        assert_eq!(fake.granted().len(), 1);
        assert_eq!(a.outcome.expect_err("refused"), "refused rt");
        assert_eq!(
            (b.joined, b.outcome.expect_err("shared")),
            (1, "refused rt".into())
        );
        // The next caller, well within the TTL, tries again, and may succeed.
        fake.fail.store(false, Ordering::SeqCst);
        let c = fake.run(&table, "rt").await;
        assert_eq!((c.joined, next(&c)), (0, "rt"));
        assert_eq!(fake.granted().len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_forgotten_result_is_not_handed_out() {
        let (table, fake) = (Table::new(TTL, 3), Fake::default());
        fake.run(&table, "rt").await;
        table.forget(&"rt".to_string());
        assert_eq!(fake.run(&table, "rt").await.joined, 0);
        assert_eq!(fake.granted().len(), 2);
    }
}
