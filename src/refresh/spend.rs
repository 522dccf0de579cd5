//! Spending a session's refresh token: the one path every grant that redeems it takes, the
//! session's own refresh and a route's resource narrowing (a refresh-token grant with
//! `resource`, RFC 8707 §2.2), on whichever replica.
//!
//! With rotation and reuse detection (RFC 9700 §4.14.2) a refresh token is redeemed once: a
//! second redemption, from any replica, revokes the grant and logs the user out. So a grant
//! first takes its turn on the token on this replica ([`super::Rotations`]: one grant at a
//! time, and a token this replica saw rotated is followed to the newest), then, with a store,
//! the store's lock on that token ([`Coordination`]). The replica that holds the lock redeems
//! the token and stores, sealed under its hash, what the spend produced: a refresh its whole
//! result, a narrowing the refresh token it was rotated into ([`Spent`]). A replica that finds
//! such a record learns the token is spent: it records the rotation in its own turn table (so
//! its later grants and its cookies go straight to the newer token) and goes on from the newer
//! token, taking the lock on that one; a refresh may instead use another replica's refresh
//! result as its own ([`Found`]). Every grant takes the locks in the same order (this replica's
//! turn, then the store's lock on the same token), so no two grants wait on each other.
//!
//! A store that fails ends the coordination of that grant, which goes on alone (this replica's
//! turn still holds), as a refresh always did: the store can only make things better.

use super::rotations::MAX_FOLLOW;
use super::{flight_key, Refreshed, Refresher, Turn};
use crate::crypto::Sealer;
use crate::oauth::Provider;
use crate::secret::Token;
use crate::store::refresh::{hash_hex, stored, Coordinated, Coordination, Shared, Spent};
use std::future::Future;
use std::time::Duration;

/// What a grant makes of another replica's refresh result for the token it was about to redeem.
pub enum Found<T> {
    /// Use it as this grant's own outcome (a refresh whose result is still fresh).
    Take(T),
    /// The token is spent: go on from the refresh token the result carries.
    Follow,
    /// The result did not rotate the token (the provider does not rotate): redeeming it again
    /// is safe, here, without waiting for the store.
    Alone,
}

impl Refresher {
    /// Redeems `token` of `provider` with `grant`, once across this replica and, with a store,
    /// across replicas: `grant` gets the token to redeem, which is the newest of its chain
    /// (another grant may have rotated the caller's). `found` says what another replica's
    /// refresh result is to this caller; `spent` what this grant's outcome spent the token into
    /// (`None`: a failure, nothing spent), recorded here and shared through the store; `busy`
    /// the failure this grant ends in when another replica holds the token and the store
    /// stopped answering before its result came ([`Coordinated::Busy`]: redeeming it here
    /// could replay it).
    #[allow(clippy::too_many_arguments)]
    pub async fn spend<T, Fut>(
        &self,
        provider: &Provider,
        sealer: &Sealer,
        token: &Token,
        mut found: impl FnMut(&Token, Refreshed) -> Found<T>,
        grant: impl Fn(Token) -> Fut,
        spent: impl Fn(&T) -> Option<Spent<'_>>,
        busy: impl FnOnce() -> T,
    ) -> T
    where
        Fut: Future<Output = T>,
    {
        // The lock outlives a grant that uses its whole time (the token call and a JWKS fetch,
        // each bounded by the provider's timeout), so no second replica redeems meanwhile.
        let lock_for = provider.config.timeout * 2 + Duration::from_secs(1);
        let mut token = token.clone();
        let mut step = 0;
        loop {
            let turn = self.turn(provider.id(), &token).await;
            let redeemed = turn.token().clone();
            // A chain longer than any real one (a bound, not a number reached): redeem alone.
            let Some(store) = self.store.as_ref().filter(|_| step < MAX_FOLLOW) else {
                return alone(turn, &grant, &spent).await;
            };
            let hash = hash_hex(&flight_key(provider.id(), &redeemed));
            let coordination = Coordination {
                store,
                sealer,
                hash: &hash,
                lock_for,
                now: self.clock.now(),
            };
            let outcome = coordination
                .run(
                    || grant(redeemed.clone()),
                    |outcome| shareable(&spent, outcome, &redeemed),
                )
                .await;
            let shared = match outcome {
                Ok(Coordinated::Granted(outcome)) => {
                    record(turn, &outcome, &spent);
                    return outcome;
                }
                Ok(Coordinated::Shared(shared)) => shared,
                Ok(Coordinated::Busy) => return busy(),
                Err(e) => {
                    tracing::warn!(provider = %provider.id(), error = %e, "store unavailable: refreshing without cross-replica coordination");
                    let outcome = grant(redeemed.clone()).await;
                    // Told once the store answers again, the other replicas follow this rotation
                    // instead of redeeming the spent token.
                    if let Some(s) = shareable(&spent, &outcome, &redeemed) {
                        if coordination.share(&s).await.is_err() {
                            tracing::debug!("refresh result not shared after a store failure");
                        }
                    }
                    record(turn, &outcome, &spent);
                    return outcome;
                }
            };
            step += 1;
            let next = shared.refresh_token().clone();
            match shared {
                Shared::Rotated(_) => {}
                Shared::Refreshed(r) => match found(&redeemed, *r) {
                    Found::Take(outcome) => {
                        turn.done(&next);
                        return outcome;
                    }
                    Found::Follow => {}
                    Found::Alone => return alone(turn, &grant, &spent).await,
                },
            }
            // Spent elsewhere: this replica's later grants follow to `next` without asking the
            // store, and the next turn is on `next`.
            turn.done(&next);
            token = next;
        }
    }

    /// [`Refresher::newest`], then what the store knows: the newest refresh token that
    /// `refresh_token` is known to have been rotated into on any replica (within
    /// [`super::RESULT_TTL`]). What a response leaves in the refresh-token cookie, so the
    /// browser does not keep a token another replica spent meanwhile. A store error leaves this
    /// replica's answer.
    pub async fn newest_across(
        &self,
        provider: &str,
        refresh_token: &Token,
        sealer: &Sealer,
    ) -> Token {
        let mut token = self.newest(provider, refresh_token);
        let Some(store) = &self.store else {
            return token;
        };
        for _ in 0..MAX_FOLLOW {
            let hash = hash_hex(&flight_key(provider, &token));
            match stored(store, sealer, &hash, self.clock.now()).await {
                Ok(Some(shared)) if !shared.refresh_token().ct_eq(token.expose()) => {
                    token = self.newest(provider, shared.refresh_token());
                }
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(provider = %provider, error = %e, "store unavailable: the refresh-token cookie gets the newest token this replica knows");
                    break;
                }
            }
        }
        token
    }
}

/// The grant here, in this replica's turn only (no store, or none that answers).
async fn alone<T, Fut>(
    turn: Turn<'_>,
    grant: &impl Fn(Token) -> Fut,
    spent: &impl Fn(&T) -> Option<Spent<'_>>,
) -> T
where
    Fut: Future<Output = T>,
{
    let outcome = grant(turn.token().clone()).await;
    record(turn, &outcome, spent);
    outcome
}

/// What `outcome` spent `redeemed` into, to share: a narrowing that was not rotated spent
/// nothing.
fn shareable<'a, T>(
    spent: &impl Fn(&T) -> Option<Spent<'_>>,
    outcome: &'a T,
    redeemed: &Token,
) -> Option<Spent<'a>> {
    spent(outcome)
        .filter(|s| matches!(s, Spent::Refreshed(_)) || !s.kept().ct_eq(redeemed.expose()))
}

/// Records what the grant left the session with, then ends the turn.
fn record<T>(turn: Turn<'_>, outcome: &T, spent: &impl Fn(&T) -> Option<Spent<'_>>) {
    if let Some(s) = spent(outcome) {
        turn.done(s.kept());
    }
}
