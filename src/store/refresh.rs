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
}

/// A spend as stored: every field of [`Refreshed`] for a refresh; for a narrowing, no access
/// token and only `kept_refresh_token`. Plus the key it was stored for.
#[derive(Serialize, Deserialize)]
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

/// How often a replica that lost the race looks for the winner's result.
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
    async fn share(&self, spent: &Spent<'_>) -> Result<(), StoreError> {
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

    /// Takes the lock (`SET NX PX`); `Some(value)` when this replica holds it.
    async fn lock(&self) -> Result<Option<String>, StoreError> {
        let value = crate::secret::random_token().expose().to_string();
        let taken: Option<String> = self
            .store
            .query(
                "refresh_lock",
                redis::cmd("SET")
                    .arg(self.lock_key())
                    .arg(&value)
                    .arg("NX")
                    .arg("PX")
                    .arg(self.lock_for.as_millis().max(1) as u64)
                    .clone(),
            )
            .await?;
        Ok(taken.map(|_| value))
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

    /// Runs `grant` here if this replica wins the lock, or waits for the winner's result. A
    /// store error before the grant is returned (the caller grants alone); one after it (the
    /// result could not be shared) is only logged: the grant's outcome stands.
    pub async fn run<T, Fut>(
        &self,
        grant: impl FnOnce() -> Fut,
        shareable: impl Fn(&T) -> Option<Spent<'_>>,
    ) -> Result<Coordinated<T>, StoreError>
    where
        Fut: Future<Output = T>,
    {
        // The lock expires after `lock_for`, so by then a waiting replica takes it itself; the
        // deadline only guards against a store that keeps answering "locked".
        let deadline = Instant::now() + self.lock_for * 2 + Duration::from_secs(1);
        let mut poll = POLL_FIRST;
        loop {
            if let Some(r) = self.stored().await? {
                return Ok(Coordinated::Shared(r));
            }
            if let Some(value) = self.lock().await? {
                // The winner may have stored its result and released the lock between our look
                // and our lock: look once more before redeeming.
                if let Some(r) = self.stored().await? {
                    let _ = self.release(&value).await;
                    return Ok(Coordinated::Shared(r));
                }
                let outcome = grant().await;
                if let Some(spent) = shareable(&outcome) {
                    if let Err(e) = self.share(&spent).await {
                        tracing::warn!(error = %e, "refresh result not shared through the store; other replicas may redeem the same refresh token");
                    }
                }
                // Released on failure too, so another replica may try; on success the stored
                // result answers first.
                if let Err(e) = self.release(&value).await {
                    tracing::warn!(error = %e, "refresh lock not released; it expires by itself");
                }
                return Ok(Coordinated::Granted(outcome));
            }
            if Instant::now() >= deadline {
                return Err(StoreError::Timeout(self.lock_for * 2));
            }
            tokio::time::sleep(poll).await;
            poll = (poll * 2).min(POLL_MAX);
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
