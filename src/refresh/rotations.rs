//! One grant at a time per refresh token, and never a rotated one redeemed again.
//!
//! Two kinds of grant redeem the session's refresh token: the session's own refresh
//! ([`super::Refresher`]) and a route's resource-indicator narrowing (a refresh-token grant with
//! `resource`, RFC 8707 §2.2; [`crate::proxy::narrowed`]). Each has its own single flight, keyed
//! differently (by refresh token, by session and route), so on their own two of them can redeem
//! the same refresh token at the same instant: two resource routes called together, or a
//! narrowing racing the session's refresh. A provider that rotates refresh tokens with reuse
//! detection (RFC 9700 §4.14.2) takes the second redemption for a stolen token's replay and
//! revokes the whole grant: the user is logged out.
//!
//! So every such grant on this replica first takes its [`Turn`] on the refresh token: a per-key
//! async lock (the key is the refresher's hash of provider and token, so the table holds no
//! refresh token in the clear as a key), and under it the table says whether that token was
//! already rotated, and into what. A grant whose token was rotated follows the chain to the
//! newest token (each step under that token's own lock, at most [`MAX_FOLLOW`] steps) and
//! redeems that one; after its grant it records its own rotation before releasing the lock. The
//! next grant in line therefore never sees a spent token. Records are kept [`RESULT_TTL`], as
//! long as the refresher keeps its shared results: the window in which requests still carry
//! the old cookie. [`Rotations::newest`] lets the responses write the newest token known, so the
//! browser's refresh-token cookie does not fall back to a spent one.
//!
//! Why a lock table and not one more single flight: the grants differ (other `resource`, other
//! result), so they cannot share one result; they can only take turns. The table is bounded by
//! pruning entries that nobody holds and whose record has expired.
//!
//! This is per replica, and the first line. Across replicas, with a store, every such grant then
//! takes the store's lock on the same token ([`super::Refresher::spend`],
//! [`crate::store::refresh`]), and a rotation another replica made is recorded here as this
//! replica learns of it, so its later grants and cookies follow it too.

use super::RESULT_TTL;
use crate::secret::Token;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::OwnedMutexGuard;
use tokio::time::Instant;

/// How many rotations a grant follows before it redeems the token it reached: each grant on the
/// session adds one within [`RESULT_TTL`] (the session's refresh and one per resource route), so
/// a real chain is short; the bound only stops a loop.
pub const MAX_FOLLOW: usize = 16;

/// Entries kept before the table is pruned (then the bound doubles with the live entries).
const PRUNE_AT: usize = 1024;

/// The hash a refresh token is known by (the refresher's flight key).
pub type Key = [u8; 32];

#[derive(Debug)]
struct Entry {
    lock: Arc<tokio::sync::Mutex<()>>,
    /// The token this one was rotated into, and when.
    rotated: Option<(Token, Instant)>,
}

#[derive(Debug)]
struct Table {
    entries: HashMap<Key, Entry>,
    prune_at: usize,
}

/// The per-replica table of refresh-token turns and rotations.
#[derive(Debug)]
pub struct Rotations {
    table: Mutex<Table>,
}

impl Default for Rotations {
    fn default() -> Self {
        Self {
            table: Mutex::new(Table {
                entries: HashMap::new(),
                prune_at: PRUNE_AT,
            }),
        }
    }
}

/// The right to redeem [`Turn::token`] (the newest token of the chain) until dropped.
#[derive(Debug)]
pub struct Turn<'a> {
    rotations: &'a Rotations,
    key: Key,
    token: Token,
    _guard: OwnedMutexGuard<()>,
}

impl Turn<'_> {
    /// The refresh token to redeem: the caller's, or what it was rotated into since.
    pub fn token(&self) -> &Token {
        &self.token
    }

    /// Records that the grant left the session with `kept`; when that is another token than the
    /// one redeemed (rotation), the redeemed one is spent and later grants follow to `kept`.
    pub fn done(self, kept: &Token) {
        if kept.ct_eq(self.token.expose()) {
            return;
        }
        let mut table = self.rotations.lock();
        if let Some(e) = table.entries.get_mut(&self.key) {
            e.rotated = Some((kept.clone(), Instant::now()));
        }
    }
}

fn live(rotated: &Option<(Token, Instant)>) -> Option<&Token> {
    rotated
        .as_ref()
        .filter(|(_, at)| at.elapsed() < RESULT_TTL)
        .map(|(t, _)| t)
}

impl Rotations {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // A poisoned table only means a panic elsewhere while holding it; its data stays valid.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for the turn on `token` (known by `key_of(token)`), following its rotations to the
    /// newest token, whose turn it returns.
    pub async fn turn(&self, token: &Token, key_of: impl Fn(&Token) -> Key) -> Turn<'_> {
        let mut token = token.clone();
        let mut step = 0;
        loop {
            let key = key_of(&token);
            let lock = {
                let mut table = self.lock();
                table.prune();
                table
                    .entries
                    .entry(key)
                    .or_insert_with(|| Entry {
                        lock: Arc::new(tokio::sync::Mutex::new(())),
                        rotated: None,
                    })
                    .lock
                    .clone()
            };
            let guard = lock.lock_owned().await;
            let next = {
                let table = self.lock();
                table
                    .entries
                    .get(&key)
                    .and_then(|e| live(&e.rotated))
                    .cloned()
            };
            match next {
                Some(next) if step < MAX_FOLLOW && !next.ct_eq(token.expose()) => {
                    drop(guard);
                    token = next;
                    step += 1;
                }
                _ => {
                    return Turn {
                        rotations: self,
                        key,
                        token,
                        _guard: guard,
                    }
                }
            }
        }
    }

    /// The newest token `token` is known to have been rotated into (itself when none): what a
    /// response should leave in the refresh-token cookie.
    pub fn newest(&self, token: &Token, key_of: impl Fn(&Token) -> Key) -> Token {
        let table = self.lock();
        let mut token = token.clone();
        for _ in 0..MAX_FOLLOW {
            match table
                .entries
                .get(&key_of(&token))
                .and_then(|e| live(&e.rotated))
            {
                Some(next) if !next.ct_eq(token.expose()) => token = next.clone(),
                _ => break,
            }
        }
        token
    }
}

impl Table {
    /// Drops entries nobody waits on whose record has expired, once the table has grown.
    fn prune(&mut self) {
        if self.entries.len() < self.prune_at {
            return;
        }
        self.entries
            .retain(|_, e| Arc::strong_count(&e.lock) > 1 || live(&e.rotated).is_some());
        self.prune_at = (self.entries.len() * 2).max(PRUNE_AT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    fn key(t: &Token) -> Key {
        Sha256::digest(t.expose().as_bytes()).into()
    }

    #[tokio::test]
    async fn a_grant_follows_rotations_to_the_newest_token() {
        let r = Rotations::default();
        let turn = r.turn(&Token::new("a"), key).await;
        assert_eq!(turn.token().expose(), "a");
        turn.done(&Token::new("b"));
        let turn = r.turn(&Token::new("a"), key).await;
        assert_eq!(turn.token().expose(), "b", "a spent token was handed out");
        turn.done(&Token::new("c"));
        assert_eq!(r.newest(&Token::new("a"), key).expose(), "c");
        assert_eq!(r.newest(&Token::new("x"), key).expose(), "x");
        // Not rotated: the same token stays the newest.
        let turn = r.turn(&Token::new("c"), key).await;
        turn.done(&Token::new("c"));
        assert_eq!(r.newest(&Token::new("a"), key).expose(), "c");
    }

    #[tokio::test]
    async fn grants_on_one_token_take_turns() {
        let r = Arc::new(Rotations::default());
        let first = r.turn(&Token::new("a"), key).await;
        let r2 = r.clone();
        let waiter = tokio::spawn(async move {
            let t = r2.turn(&Token::new("a"), key).await;
            t.token().expose().to_string()
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "a second grant ran during the first");
        first.done(&Token::new("b"));
        assert_eq!(waiter.await.expect("join"), "b");
    }

    #[tokio::test(start_paused = true)]
    async fn records_expire_and_the_table_is_pruned() {
        let r = Rotations::default();
        r.turn(&Token::new("a"), key).await.done(&Token::new("b"));
        tokio::time::advance(RESULT_TTL + std::time::Duration::from_secs(1)).await;
        assert_eq!(r.newest(&Token::new("a"), key).expose(), "a");
        for i in 0..PRUNE_AT + 1 {
            drop(r.turn(&Token::new(format!("t{i}")), key).await);
        }
        assert!(r.lock().entries.len() <= PRUNE_AT);
    }
}
