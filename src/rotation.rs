//! Key rotation without restarts and without logouts.
//!
//! Two halves. The ring is re-read from `cookies.keys_file` on SIGHUP and whenever the file
//! changes (checked every [`POLL`]), so a Kubernetes Secret update reaches every replica without
//! a rollout. And every response re-seals, with the current key, each of our cookies the request
//! carried sealed with an older one, so live sessions move to the new key as they are used and
//! the old key can be dropped after `absolute_lifetime`, the longest any session cookie opens
//! (docs/deployment.md has the runbook).

use crate::cookies::CookieKind;
use crate::crypto::KeyRing;
use crate::state::AppState;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::Next;
use actix_web::web;
use std::path::Path;
use std::time::Duration;

/// How often the keys file is checked for changes.
pub const POLL: Duration = Duration::from_secs(10);

/// Re-seals the request's cookies that were sealed with an older key (all but the short-lived
/// login cookie), unless the response writes that cookie itself.
pub async fn reseal_cookies(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return next.call(req).await;
    };
    let jar = &state.jar;
    let now = jar.clock().now();
    let cookies = jar.read(req.headers());
    let mut fresh: Vec<(CookieKind, String)> = Vec::new();
    for kind in CookieKind::ALL {
        if kind == CookieKind::Login {
            continue;
        }
        let resealed = cookies
            .values(kind)
            .iter()
            .find_map(|value| jar.sealer().reseal(kind.purpose(), now, value));
        if let Some(value) = resealed {
            fresh.push((kind, value));
        }
    }
    let mut res = next.call(req).await?;
    if fresh.is_empty() {
        return Ok(res);
    }
    let written: Vec<String> = res
        .headers()
        .get_all(header::SET_COOKIE)
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split('=').next().map(|n| n.trim().to_string()))
        .collect();
    for (kind, value) in fresh {
        if written.iter().any(|w| w == jar.policy().name(kind)) {
            continue;
        }
        for cookie in jar.policy().with_value(kind, &value) {
            if let Ok(v) = HeaderValue::from_str(&cookie.to_string()) {
                res.headers_mut().append(header::SET_COOKIE, v);
            }
        }
        tracing::debug!(cookie = %jar.policy().name(kind), "re-sealed with the current key");
    }
    Ok(res)
}

/// Why a keys file was not loaded (the current keys stay in use).
#[derive(Debug, thiserror::Error)]
pub enum KeysFileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Invalid(#[from] crate::crypto::KeyError),
}

/// Reads and validates a keys file (the same rules as at startup).
pub fn read_ring(path: &Path) -> Result<KeyRing, KeysFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeysFileError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let keys: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    Ok(KeyRing::parse(&keys)?)
}

fn ids(ring: &KeyRing) -> String {
    ring.keys()
        .iter()
        .map(|k| k.id_hex())
        .collect::<Vec<_>>()
        .join(",")
}

/// Reloads the ring from `keys_file` on SIGHUP and when the file's contents change. A file that
/// does not parse is logged and ignored: the running ring stays.
pub async fn watch_keys_file(state: web::Data<AppState>) {
    let Some(path) = state.config.cookies.keys_file.clone() else {
        return;
    };
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; the keys file is still polled");
            None
        }
    };
    let mut last = std::fs::read(&path).ok();
    loop {
        let signalled = match hangup.as_mut() {
            Some(h) => tokio::select! {
                _ = h.recv() => true,
                _ = actix_web::rt::time::sleep(POLL) => false,
            },
            None => {
                actix_web::rt::time::sleep(POLL).await;
                false
            }
        };
        let current = std::fs::read(&path).ok();
        if !signalled && current == last {
            continue;
        }
        last = current;
        match read_ring(&path) {
            Ok(ring) => {
                let before = ids(&state.jar.sealer().ring());
                let after = ids(&ring);
                state.jar.sealer().replace_ring(ring);
                tracing::info!(%before, %after, signalled, "cookie keys reloaded");
            }
            Err(e) => {
                tracing::error!(error = %e, "the keys file is invalid; keeping the current keys")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::CookieKey;

    #[test]
    fn a_reloaded_keys_file_with_a_weak_key_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keys");
        let good = CookieKey::generate_text();
        std::fs::write(&path, format!("{good}\n")).expect("write");
        assert!(read_ring(&path).is_ok());
        let zero = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        std::fs::write(&path, format!("{good}\n{zero}\n")).expect("write");
        let e = read_ring(&path)
            .expect_err("the example key is refused")
            .to_string();
        assert!(e.contains("example key"), "{e}");
        assert!(!e.contains(zero), "{e}");
    }
}
