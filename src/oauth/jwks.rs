//! The provider's signing keys (JWKS), cached.
//!
//! An ID token whose `kid` we do not know triggers one refetch (providers rotate keys), but at
//! most once per [`MIN_REFETCH`]: otherwise anyone could make us hammer the provider by sending
//! tokens with made-up key ids. Keys of types or algorithms we cannot use are skipped, not
//! fatal, because real JWKS documents mix signing and encryption keys.

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use url::Url;

use super::http::send_json;

/// Smallest interval between two JWKS fetches caused by unknown key ids.
pub const MIN_REFETCH: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
pub struct JwksCache {
    keys: RwLock<Arc<Vec<Jwk>>>,
    last_fetch: Mutex<Option<Instant>>,
}

impl JwksCache {
    /// The key to verify a token with this `kid` and algorithm.
    pub async fn key_for(
        &self,
        client: &awc::Client,
        jwks_uri: &Url,
        timeout: Duration,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<DecodingKey, String> {
        if let Some(key) = self.find(kid, alg) {
            return key;
        }
        if !self.may_fetch() {
            return Err("the ID token's signing key is not in the provider's JWKS".into());
        }
        let value = send_json(
            client.get(jwks_uri.as_str()).timeout(timeout).send(),
            "jwks_uri",
        )
        .await
        .map_err(|e| format!("the provider's JWKS could not be fetched: {e}"))?;
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
        if let Ok(mut slot) = self.keys.write() {
            *slot = Arc::new(keys);
        }
        self.find(kid, alg).unwrap_or_else(|| {
            Err("the ID token's signing key is not in the provider's JWKS".into())
        })
    }

    fn may_fetch(&self) -> bool {
        let Ok(mut last) = self.last_fetch.lock() else {
            return false;
        };
        match *last {
            Some(at) if at.elapsed() < MIN_REFETCH => false,
            _ => {
                *last = Some(Instant::now());
                true
            }
        }
    }

    fn find(&self, kid: Option<&str>, alg: Algorithm) -> Option<Result<DecodingKey, String>> {
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
                    return Some(Err(
                        "the ID token names no key id and the JWKS has several candidate keys"
                            .into(),
                    ));
                }
                first
            }
        };
        Some(DecodingKey::from_jwk(jwk).map_err(|e| format!("unusable JWK: {e}")))
    }
}
