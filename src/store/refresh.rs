//! Refresh coordination across replicas: one grant per refresh token, whichever replica the
//! browser's parallel calls reach.
//!
//! With refresh-token rotation and reuse detection (RFC 9700 §4.14.2), two replicas redeeming
//! the same refresh token end the session: the provider sees the old token again and revokes
//! the grant. Per-replica single flight ([`crate::refresh`]) cannot prevent that when a load
//! balancer spreads one user's calls. So, after the replica's own single flight and before the
//! grant, a replica takes a lock in the store, `SET NX PX`, keyed by the SHA-256 of the provider
//! and refresh token (never the token). The winner redeems and stores the result, sealed with
//! the cookie key ([`Purpose::SharedRefresh`]), under the same hash for
//! [`RESULT_TTL`](crate::refresh::RESULT_TTL); a replica that lost waits, polling, for that
//! result and reuses it instead of redeeming the token again.
//!
//! A narrowing grant (a refresh-token grant with `resource`, RFC 8707 §2.2) spends the same
//! refresh token, so it takes the same lock ([`crate::refresh::Refresher::spend`]). What it
//! shares is less: only the refresh token it was rotated into ([`Shared::Rotated`]), for a
//! replica that still holds the spent one to continue from; the narrowed access token stays
//! with the replica that asked for it.
//!
//! The store can only make things better: any store error ends the coordination and the replica
//! goes on alone (per-replica single flight, as without a store), with a warning and
//! `token_handler_store_errors_total{op}`. A sealed result names the hash it was stored under,
//! so a value moved to another key in the store (by whoever can write to it) does not open
//! for another session.

use super::{Store, StoreError};
use crate::crypto::{Purpose, Sealer};
use crate::oauth::token::TokenResponse;
use crate::refresh::{Refreshed, RESULT_TTL};
use crate::secret::Token;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;

/// What another replica's spending of a refresh token left in the store.
pub enum Shared {
    /// A refresh: its whole result, which a replica holding the same token may use as its own.
    Refreshed(Box<Refreshed>),
    /// A narrowing: the refresh token it was rotated into (the one spent must not be sent again).
    Rotated(Token),
}

impl Shared {
    /// The refresh token the session continues with after this spend.
    pub fn refresh_token(&self) -> &Token {
        match self {
            Shared::Refreshed(r) => &r.refresh_token,
            Shared::Rotated(t) => t,
        }
    }
}

/// What this replica's grant spent a refresh token into, to share with the others.
pub enum Spent<'a> {
    /// A refresh: shared whole.
    Refreshed(&'a Refreshed),
    /// A narrowing: only the refresh token the session keeps.
    Rotated(&'a Token),
}

impl Spent<'_> {
    /// The refresh token the session keeps after this grant.
    pub fn kept(&self) -> &Token {
        match self {
            Spent::Refreshed(r) => &r.refresh_token,
            Spent::Rotated(t) => t,
        }
    }
}

/// What the coordination produced for one refresh token.
pub enum Coordinated<T> {
    /// Another replica's grant, shared through the store.
    Shared(Shared),
    /// This replica performed the grant (it held the lock).
    Granted(T),
    /// Another replica holds the lock, and neither its result nor the lock came in time (the
    /// store stopped answering, or kept answering "locked"): the token may be spent by now, so
    /// it must not be redeemed here (RFC 9700 §4.14.2). The caller fails this grant instead.
    Busy,
}

/// A spend as stored: every field of [`Refreshed`] for a refresh; for a narrowing, no access
/// token and only `kept_refresh_token`. Plus the key it was stored for.
#[derive(Clone, Serialize, Deserialize)]
struct SharedResult {
    /// The hex hash of the store key: a value moved to another key is refused.
    key: String,
    /// `None`: a narrowing's spend ([`Shared::Rotated`]).
    #[serde(default)]
    access_token: Option<Token>,
    token_type: Option<String>,
    expires_in: Option<i64>,
    refresh_token: Option<Token>,
    id_token: Option<Token>,
    kept_refresh_token: Token,
    sub: Option<String>,
    /// The provider's session id (`sid`), so a replica that reuses the result keeps it sealed.
    #[serde(default)]
    op_sid: Option<String>,
    expires_at: Option<i64>,
    received_at: i64,
}

impl SharedResult {
    fn new(key: &str, spent: &Spent<'_>) -> Self {
        let r = match spent {
            Spent::Refreshed(r) => r,
            Spent::Rotated(kept) => {
                return Self {
                    key: key.to_string(),
                    access_token: None,
                    token_type: None,
                    expires_in: None,
                    refresh_token: None,
                    id_token: None,
                    kept_refresh_token: (*kept).clone(),
                    sub: None,
                    op_sid: None,
                    expires_at: None,
                    received_at: 0,
                }
            }
        };
        Self {
            key: key.to_string(),
            access_token: Some(r.tokens.access_token.clone()),
            token_type: r.tokens.token_type.clone(),
            expires_in: r.tokens.expires_in,
            refresh_token: r.tokens.refresh_token.clone(),
            id_token: r.tokens.id_token.clone(),
            kept_refresh_token: r.refresh_token.clone(),
            sub: r.sub.clone(),
            op_sid: r.op_sid.clone(),
            expires_at: r.expires_at,
            received_at: r.received_at,
        }
    }

    fn into_shared(self) -> Shared {
        let Some(access_token) = self.access_token else {
            return Shared::Rotated(self.kept_refresh_token);
        };
        Shared::Refreshed(Box::new(Refreshed {
            tokens: TokenResponse {
                access_token,
                token_type: self.token_type,
                expires_in: self.expires_in,
                refresh_token: self.refresh_token,
                id_token: self.id_token,
                // Only a token exchange answers with one; a refresh grant's is not kept.
                issued_token_type: None,
            },
            sub: self.sub,
            op_sid: self.op_sid,
            expires_at: self.expires_at,
            received_at: self.received_at,
            refresh_token: self.kept_refresh_token,
        }))
    }
}

/// Deletes the lock only when it still holds our value: a lock that expired during a slow grant
/// and was taken by another replica is not ours to release.
const RELEASE: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

/// How often a replica that lost the race looks for the winner's result, and retries a store
/// that failed.
const POLL_FIRST: Duration = Duration::from_millis(20);
const POLL_MAX: Duration = Duration::from_millis(100);

/// The coordination for one refresh token, identified by `hash` (hex SHA-256 of provider and
/// token). `lock_for` bounds the winner's grant (the lock's expiry) and so the losers' wait.
/// `now` is our clock (Unix seconds), for the sealed result's expiry.
pub struct Coordination<'a> {
    pub store: &'a Store,
    pub sealer: &'a Sealer,
    pub hash: &'a str,
    pub lock_for: Duration,
    pub now: i64,
}

/// What one look at the store found, in [`Coordination::run`].
enum Look {
    /// Another replica's result.
    Shared(Shared),
    /// The lock is ours (its value).
    Locked(String),
    /// Another replica holds the lock.
    Busy,
}

impl Coordination<'_> {
    fn result_key(&self) -> String {
        self.store.key("refresh-result", self.hash)
    }

    fn lock_key(&self) -> String {
        self.store.key("refresh-lock", self.hash)
    }

    /// Another replica's result for this token, if one is stored and opens for this key.
    async fn stored(&self) -> Result<Option<Shared>, StoreError> {
        stored(self.store, self.sealer, self.hash, self.now).await
    }

    /// Stores the winner's result for the other replicas, for [`RESULT_TTL`].
    pub async fn share(&self, spent: &Spent<'_>) -> Result<(), StoreError> {
        let sealed = seal(self.sealer, self.hash, self.now, spent)
            .map_err(|e| StoreError::Setup(e.to_string()))?;
        let _: () = self
            .store
            .query(
                "refresh_result_set",
                redis::cmd("SET")
                    .arg(self.result_key())
                    .arg(sealed)
                    .arg("PX")
                    .arg(RESULT_TTL.as_millis() as u64)
                    .clone(),
            )
            .await?;
        Ok(())
    }

    /// Takes the lock with `value` (`SET NX PX`); whether this replica holds it. When an earlier
    /// attempt failed (`maybe_ours`: the store may have taken it and its answer been lost), a
    /// lock found taken is looked at: holding our value, it is ours.
    async fn lock(&self, value: &str, maybe_ours: bool) -> Result<bool, StoreError> {
        let taken: Option<String> = self
            .store
            .query(
                "refresh_lock",
                redis::cmd("SET")
                    .arg(self.lock_key())
                    .arg(value)
                    .arg("NX")
                    .arg("PX")
                    .arg(self.lock_for.as_millis().max(1) as u64)
                    .clone(),
            )
            .await?;
        if taken.is_some() {
            return Ok(true);
        }
        if !maybe_ours {
            return Ok(false);
        }
        let holder: Option<String> = self
            .store
            .query(
                "refresh_lock_get",
                redis::cmd("GET").arg(self.lock_key()).clone(),
            )
            .await?;
        Ok(holder.as_deref() == Some(value))
    }

    async fn release(&self, value: &str) -> Result<(), StoreError> {
        let _: i64 = self
            .store
            .query(
                "refresh_unlock",
                redis::cmd("EVAL")
                    .arg(RELEASE)
                    .arg(1)
                    .arg(self.lock_key())
                    .arg(value)
                    .clone(),
            )
            .await?;
        Ok(())
    }

    /// One look: another replica's result, else the lock.
    async fn look(&self, value: &str, maybe_ours: bool) -> Result<Look, StoreError> {
        if let Some(r) = self.stored().await? {
            return Ok(Look::Shared(r));
        }
        if !self.lock(value, maybe_ours).await? {
            return Ok(Look::Busy);
        }
        // The winner may have stored its result and released the lock between our look and our
        // lock: look once more before redeeming. Unanswered, the lock is given back (the next
        // look tries again): redeeming without knowing could replay the token.
        match self.stored().await {
            Ok(None) => Ok(Look::Locked(value.to_string())),
            Ok(Some(r)) => {
                let _ = self.release(value).await;
                Ok(Look::Shared(r))
            }
            Err(e) => {
                let _ = self.release(value).await;
                Err(e)
            }
        }
    }

    /// Runs `grant` here if this replica wins the lock, or waits for the winner's result.
    ///
    /// A store that fails is not at once a store that is down: on a loaded machine a command
    /// can miss its `store.command_timeout` while the store is fine, on every replica at once,
    /// and a replica that then redeemed the token alone would replay it (the provider revokes
    /// the grant, RFC 9700 §4.14.2). So a failing store is retried for [`Store::patience`]
    /// before the error is returned (the caller grants alone, as without a store); and once
    /// another replica was seen holding the lock, the token is never redeemed here without the
    /// lock: the wait goes on until that lock has expired (`lock_for`), and ends in
    /// [`Coordinated::Busy`] when neither its result nor the lock comes. A result that could not
    /// be shared is retried the same way, then only logged: the grant's outcome stands.
    pub async fn run<T, Fut>(
        &self,
        grant: impl FnOnce() -> Fut,
        shareable: impl Fn(&T) -> Option<Spent<'_>>,
    ) -> Result<Coordinated<T>, StoreError>
    where
        Fut: Future<Output = T>,
    {
        let started = Instant::now();
        // The lock expires after `lock_for`, so by then a waiting replica takes it itself; the
        // deadline only guards against a store that keeps answering "locked".
        let deadline = started + self.lock_for * 2 + Duration::from_secs(1);
        let patience = self.store.patience();
        let value = crate::secret::random_token().expose().to_string();
        let mut maybe_ours = false;
        let mut busy_since: Option<Instant> = None;
        let mut failing_since: Option<Instant> = None;
        let mut poll = POLL_FIRST;
        loop {
            match self.look(&value, maybe_ours).await {
                Ok(Look::Shared(r)) => return Ok(Coordinated::Shared(r)),
                Ok(Look::Locked(value)) => {
                    let outcome = grant().await;
                    if let Some(spent) = shareable(&outcome) {
                        self.share_patiently(&spent, patience).await;
                    }
                    // Released on failure too, so another replica may try; on success the
                    // stored result answers first.
                    if let Err(e) = self.release(&value).await {
                        tracing::warn!(error = %e, "refresh lock not released; it expires by itself");
                    }
                    return Ok(Coordinated::Granted(outcome));
                }
                Ok(Look::Busy) => {
                    failing_since = None;
                    busy_since.get_or_insert_with(Instant::now);
                }
                Err(e) => {
                    // The lock may have been taken with our value and the answer lost.
                    maybe_ours = true;
                    if failing_since.is_none() {
                        tracing::warn!(error = %e, ?patience, "the store did not answer about a refresh token; trying again");
                    }
                    let failing = *failing_since.get_or_insert_with(Instant::now);
                    match busy_since {
                        Some(since) if since.elapsed() >= self.lock_for => {
                            tracing::warn!(error = %e, "the store stopped answering while another replica held the refresh token: not redeemed here");
                            return Ok(Coordinated::Busy);
                        }
                        Some(_) => {}
                        None if failing.elapsed() >= patience => return Err(e),
                        None => {}
                    }
                }
            }
            if Instant::now() >= deadline {
                tracing::warn!("the refresh lock stayed taken past its expiry: not redeemed here");
                return Ok(Coordinated::Busy);
            }
            tokio::time::sleep(poll).await;
            poll = (poll * 2).min(POLL_MAX);
        }
    }

    /// [`Coordination::share`], retried for `patience` while the store fails: a replica that
    /// does not find the result takes the lock once it is released and redeems the token again.
    async fn share_patiently(&self, spent: &Spent<'_>, patience: Duration) {
        let started = Instant::now();
        let mut poll = POLL_FIRST;
        loop {
            match self.share(spent).await {
                Ok(()) => return,
                Err(e) if started.elapsed() >= patience => {
                    tracing::warn!(error = %e, "refresh result not shared through the store; other replicas may redeem the same refresh token");
                    return;
                }
                Err(_) => {
                    tokio::time::sleep(poll).await;
                    poll = (poll * 2).min(POLL_MAX);
                }
            }
        }
    }
}

/// What spending the refresh token known by `hash` produced, if a replica stored it and it
/// opens for that hash. Also how a replica learns, without waiting for any lock, the refresh
/// token another replica's grant rotated a spent one into.
pub async fn stored(
    store: &Store,
    sealer: &Sealer,
    hash: &str,
    now: i64,
) -> Result<Option<Shared>, StoreError> {
    let sealed: Option<String> = store
        .query(
            "refresh_result_get",
            redis::cmd("GET")
                .arg(store.key("refresh-result", hash))
                .clone(),
        )
        .await?;
    let Some(sealed) = sealed else {
        return Ok(None);
    };
    let opened = open(sealer, hash, now, &sealed);
    if opened.is_none() {
        tracing::warn!("a shared refresh result in the store does not open; ignored");
    }
    Ok(opened)
}

/// A result as stored: sealed for [`Purpose::SharedRefresh`], naming `hash`, opening until
/// [`RESULT_TTL`] from `now`.
fn seal(
    sealer: &Sealer,
    hash: &str,
    now: i64,
    spent: &Spent<'_>,
) -> Result<String, crate::crypto::SealError> {
    let expires_at = now + RESULT_TTL.as_secs() as i64;
    sealer.seal(
        Purpose::SharedRefresh,
        expires_at,
        &SharedResult::new(hash, spent),
    )
}

/// A stored result, if it opens (listed key, not expired) and was stored for `hash`. Anything
/// else is treated as absent: a grant here is what would happen without a store.
fn open(sealer: &Sealer, hash: &str, now: i64, sealed: &str) -> Option<Shared> {
    match sealer.unseal::<SharedResult>(Purpose::SharedRefresh, now, sealed) {
        Ok(r) if r.key == hash => Some(r.into_shared()),
        _ => None,
    }
}

/// The store's name for a refresh token's coordination: the hex of its flight key.
pub fn hash_hex(key: &[u8; 32]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{CookieKey, KeyRing};

    fn refreshed() -> Refreshed {
        let tokens: TokenResponse = serde_json::from_value(serde_json::json!({
            "access_token": "at-2", "expires_in": 300, "refresh_token": "rt-2", "id_token": "id-2"
        }))
        .expect("token response");
        Refreshed {
            tokens,
            sub: Some("alice".into()),
            op_sid: Some("op-session".into()),
            expires_at: Some(1_300),
            received_at: 1_000,
            refresh_token: Token::new("rt-2"),
        }
    }

    fn sealer() -> Sealer {
        Sealer::new(KeyRing::parse(&[CookieKey::generate_text()]).expect("ring"))
    }

    #[test]
    fn a_shared_result_opens_only_for_its_own_hash_and_window() {
        let sealer = sealer();
        let (a, b) = (hash_hex(&[1; 32]), hash_hex(&[2; 32]));
        let sealed = seal(&sealer, &a, 1_000, &Spent::Refreshed(&refreshed())).expect("seal");
        assert!(!sealed.contains("rt-2") && !sealed.contains("at-2"));
        let Some(Shared::Refreshed(opened)) = open(&sealer, &a, 1_010, &sealed) else {
            panic!("does not open for its hash as a refresh result");
        };
        assert_eq!(opened.tokens.access_token.expose(), "at-2");
        assert_eq!(opened.refresh_token.expose(), "rt-2");
        assert_eq!(opened.expires_at, Some(1_300));
        assert_eq!(opened.received_at, 1_000);
        assert_eq!(opened.sub.as_deref(), Some("alice"));
        // Moved to another token's key in the store: refused.
        assert!(open(&sealer, &b, 1_010, &sealed).is_none());
        // Past the sharing window, or sealed with a key not listed here: refused.
        let late = 1_000 + RESULT_TTL.as_secs() as i64;
        assert!(open(&sealer, &a, late, &sealed).is_none());
        assert!(open(&self::sealer(), &a, 1_010, &sealed).is_none());
        // A cookie value never opens as a shared result.
        let cookie = sealer
            .seal(Purpose::AccessToken, 2_000, &"at-2")
            .expect("seal");
        assert!(open(&sealer, &a, 1_010, &cookie).is_none());
    }

    /// A narrowing shares only the refresh token it was rotated into: sealed, bound to the
    /// spent token's hash, and opening as such (never as a refresh result with an access token).
    #[test]
    fn a_narrowings_rotation_opens_only_as_a_rotation_for_its_own_hash() {
        let sealer = sealer();
        let (a, b) = (hash_hex(&[1; 32]), hash_hex(&[2; 32]));
        let kept = Token::new("rt-3");
        let sealed = seal(&sealer, &a, 1_000, &Spent::Rotated(&kept)).expect("seal");
        assert!(!sealed.contains("rt-3"));
        match open(&sealer, &a, 1_010, &sealed) {
            Some(Shared::Rotated(t)) => assert_eq!(t.expose(), "rt-3"),
            _ => panic!("a narrowing's rotation did not open as one"),
        }
        assert!(open(&sealer, &b, 1_010, &sealed).is_none());
        let late = 1_000 + RESULT_TTL.as_secs() as i64;
        assert!(open(&sealer, &a, late, &sealed).is_none());
    }
}
