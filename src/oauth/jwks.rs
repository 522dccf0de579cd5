//! The provider's signing keys (JWKS), cached.
//!
//! An ID token whose `kid` we do not know triggers one refetch (providers rotate keys), at most
//! once per [`MIN_REFETCH`]. ID tokens only ever reach us in answers from the provider's own
//! token endpoint, so an unknown kid means the provider rotated (or restarted with new keys);
//! the interval only keeps a misbehaving provider from making every login refetch. Keys of types or algorithms we cannot use are skipped, not
//! fatal, because real JWKS documents mix signing and encryption keys.

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use url::Url;

use super::http::send_json;
use crate::clock::Clock;

/// Smallest interval between two JWKS fetches caused by unknown key ids.
pub const MIN_REFETCH: Duration = Duration::from_secs(1);
/// Keys are fetched again after this long even when every kid is known, so a key the provider
/// withdrew (after a compromise, say) stops being trusted.
pub const JWKS_TTL: Duration = Duration::from_secs(3600);

/// Why no key was found. Only [`KeyError::Unavailable`] is the provider's problem (502); the
/// others refuse the ID token.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The JWKS could not be fetched.
    #[error("{0}")]
    Unavailable(String),
    /// The token names a key the provider does not publish.
    #[error("the ID token's signing key is not in the provider's JWKS")]
    NotPublished,
    /// No key id, and more than one key could have signed the token.
    #[error("the ID token names no key id and the JWKS has several candidate keys")]
    Ambiguous,
    /// The published key cannot be used.
    #[error("unusable JWK: {0}")]
    Unusable(jsonwebtoken::errors::Error),
}

/// The keys and when they were fetched. Their age ([`JWKS_TTL`]) is measured with the
/// application's [`Clock`], so tests move time instead of sleeping; the one-second interval
/// between fetches ([`MIN_REFETCH`]) is finer than the clock's seconds and is paired with a
/// real sleep, so it is measured with [`Instant`].
#[derive(Debug)]
pub struct JwksCache {
    clock: Clock,
    keys: RwLock<Arc<Vec<Jwk>>>,
    /// When the keys were last fetched successfully (Unix seconds, by the clock).
    fetched_at: Mutex<Option<i64>>,
    /// When a fetch was last tried.
    tried_at: Mutex<Option<Instant>>,
}

impl JwksCache {
    pub fn new(clock: Clock) -> Self {
        Self {
            clock,
            keys: RwLock::default(),
            fetched_at: Mutex::default(),
            tried_at: Mutex::default(),
        }
    }

    /// Whether the keys must be fetched before use: never fetched, or fetched [`JWKS_TTL`] ago.
    fn expired(&self) -> bool {
        let ttl = i64::try_from(JWKS_TTL.as_secs()).unwrap_or(i64::MAX);
        let now = self.clock.now();
        self.fetched_at
            .lock()
            .map(|at| at.is_none_or(|at| now.saturating_sub(at) >= ttl))
            .unwrap_or(true)
    }

    /// Replaces the keys with a freshly fetched set.
    fn store(&self, keys: Vec<Jwk>) {
        if let Ok(mut slot) = self.keys.write() {
            *slot = Arc::new(keys);
        }
        if let Ok(mut at) = self.fetched_at.lock() {
            *at = Some(self.clock.now());
        }
    }

    /// The key to verify a token with this `kid` and algorithm.
    pub async fn key_for(
        &self,
        client: &awc::Client,
        jwks_uri: &Url,
        timeout: Duration,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<DecodingKey, KeyError> {
        if !self.expired() {
            if let Some(key) = self.find(kid, alg) {
                return key;
            }
        }
        if let Err(wait) = self.may_fetch() {
            // A fetch just happened: wait out the interval once, then look again (another
            // request may have fetched meanwhile) before fetching ourselves.
            actix_web::rt::time::sleep(wait).await;
            if let Some(key) = self.find(kid, alg) {
                return key;
            }
            if self.may_fetch().is_err() {
                return Err(KeyError::NotPublished);
            }
        }
        // Fetching keys is safe to repeat: two more tries, 200 ms then 400 ms apart, all of them
        // within the provider's one timeout, like any other call to it.
        let deadline = Instant::now() + timeout;
        let mut fetched = Err(KeyError::Unavailable(
            "the provider's JWKS could not be fetched in time".into(),
        ));
        for (attempt, pause) in [0u64, 200, 400].into_iter().enumerate() {
            let pause = Duration::from_millis(pause);
            // A retry needs some of the timeout left after its pause.
            if Instant::now() + pause >= deadline {
                break;
            }
            if !pause.is_zero() {
                actix_web::rt::time::sleep(pause).await;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            fetched = send_json(
                client.get(jwks_uri.as_str()).timeout(left).send(),
                "jwks_uri",
            )
            .await
            .map_err(|e| {
                KeyError::Unavailable(format!("the provider's JWKS could not be fetched: {e}"))
            });
            if fetched.is_ok() {
                break;
            }
            tracing::warn!(attempt = attempt + 1, "JWKS fetch failed");
        }
        let value = match fetched {
            Ok(v) => v,
            // Serve the keys we have rather than fail while the provider is down.
            Err(e) => return self.find(kid, alg).unwrap_or(Err(e)),
        };
        let keys: Vec<Jwk> = value
            .get("keys")
            .and_then(|k| k.as_array())
            .map(|keys| {
                keys.iter()
                    .filter_map(|k| serde_json::from_value::<Jwk>(k.clone()).ok())
                    .collect()
            })
            .unwrap_or_default();
        tracing::debug!(count = keys.len(), "fetched JWKS");
        self.store(keys);
        self.find(kid, alg).unwrap_or(Err(KeyError::NotPublished))
    }

    /// Rate limit for fetches: at most one attempt per [`MIN_REFETCH`]; `Err` says how long
    /// until the next one may start.
    fn may_fetch(&self) -> Result<(), Duration> {
        let Ok(mut tried) = self.tried_at.lock() else {
            return Err(MIN_REFETCH);
        };
        match *tried {
            Some(at) if at.elapsed() < MIN_REFETCH => Err(MIN_REFETCH - at.elapsed()),
            _ => {
                *tried = Some(Instant::now());
                Ok(())
            }
        }
    }

    fn find(&self, kid: Option<&str>, alg: Algorithm) -> Option<Result<DecodingKey, KeyError>> {
        let keys = self.keys.read().ok()?.clone();
        let usable = |k: &&Jwk| {
            let alg_ok = k
                .common
                .key_algorithm
                .map(|ka| ka.to_string() == format!("{alg:?}"))
                .unwrap_or(true);
            let use_ok = !matches!(
                k.common.public_key_use,
                Some(jsonwebtoken::jwk::PublicKeyUse::Encryption)
            );
            alg_ok && use_ok
        };
        let jwk = match kid {
            Some(kid) => keys
                .iter()
                .filter(usable)
                .find(|k| k.common.key_id.as_deref() == Some(kid))?,
            None => {
                let mut candidates = keys.iter().filter(usable).filter(|k| {
                    DecodingKey::from_jwk(k)
                        .map(|d| d.family() == alg.family())
                        .unwrap_or(false)
                });
                let first = candidates.next()?;
                if candidates.next().is_some() {
                    return Some(Err(KeyError::Ambiguous));
                }
                first
            }
        };
        Some(DecodingKey::from_jwk(jwk).map_err(KeyError::Unusable))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_expire_after_their_ttl_by_the_injected_clock() {
        let clock = Clock::default();
        let cache = JwksCache::new(clock.clone());
        assert!(cache.expired(), "never fetched");
        cache.store(Vec::new());
        assert!(!cache.expired());
        let ttl = JWKS_TTL.as_secs() as i64;
        // Margins of seconds: the wall clock under the offset keeps ticking.
        clock.advance(ttl - 10);
        assert!(!cache.expired(), "still fresh");
        clock.advance(20);
        assert!(cache.expired(), "a withdrawn key must stop being trusted");
        cache.store(Vec::new());
        assert!(!cache.expired(), "fresh again after a fetch");
    }
}
