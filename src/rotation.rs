//! Key rotation without restarts and without logouts.
//!
//! Two halves. The ring is re-read from `cookies.keys_file` on SIGHUP and whenever the file
//! changes (checked every [`POLL`]), so a Kubernetes Secret update reaches every replica without
//! a rollout. And every response re-seals, with the current key, each of our cookies the request
//! carried sealed with an older one, so live sessions move to the new key as they are used and
//! the old key can be dropped after `absolute_lifetime`, the longest any session cookie opens
//! (docs/deployment.md has the runbook).

use crate::cookies::{CookieKind, RequestCookies};
use crate::crypto::KeyRing;
use crate::session::SessionJar;
use crate::state::AppState;
use actix_web::cookie::Cookie;
use actix_web::dev::ServiceResponse;
use actix_web::http::header::{self, HeaderValue};
use actix_web::web;
use actix_web::HttpMessage;
use std::path::Path;
use std::time::Duration;

/// How often the keys file is checked for changes.
pub const POLL: Duration = Duration::from_secs(10);

/// The provider jars (by their place in [`SessionJar::provider_jars`], as bits) whose cookies
/// the handler already read and found to need nothing from [`reseal_after`]: every value names
/// the current key and no chunk is left over. The proxy reads the route's jar anyway, so the
/// Cookie header is scanned once per request instead of twice (issue 17). Only good while the
/// response writes none of our cookies: then [`reseal_after`] reads every jar itself.
#[derive(Clone, Copy, Debug, Default)]
pub struct QuietJars(u64);

/// Records in the request's extensions that `jar`'s cookies, as the handler read them, need
/// no re-seal and no chunk removal (when that is so).
pub fn note_read(
    req: &actix_web::HttpRequest,
    all: &SessionJar,
    jar: &SessionJar,
    cookies: &RequestCookies<'_>,
) {
    let Some(n) = all.provider_jars().position(|j| std::ptr::eq(j, jar)) else {
        return;
    };
    if n >= 64 || !is_quiet(n, jar, cookies) {
        return;
    }
    let mut ext = req.extensions_mut();
    let quiet = ext.get::<QuietJars>().copied().unwrap_or_default();
    ext.insert(QuietJars(quiet.0 | 1 << n));
}

/// Whether [`reseal_after`] has nothing to do for jar `n` when the response writes none of our
/// cookies: no value it would re-seal names an older key, and every chunk sent past the first
/// is below the count its first chunk announces (so none is stale).
fn is_quiet(n: usize, jar: &SessionJar, cookies: &RequestCookies<'_>) -> bool {
    let resealed =
        |kind| kind != CookieKind::Login && (n == 0 || CookieKind::SESSION.contains(&kind));
    cookies
        .all_heads()
        .all(|(kind, head)| !resealed(kind) || jar.sealer().names_current_key(head))
        && cookies.no_chunk_left_over()
}

/// After the handler: re-seals the request's cookies that were sealed with an older key (all
/// but the short-lived login cookie), unless the response writes that cookie itself; and
/// removes the chunks of a split cookie that the request carried but no value uses any more
/// ([`crate::cookies::stale_chunk_removals`]). A re-sealed value is split like any other, so a
/// chunked cookie is re-sealed whole. Every provider's session cookies are looked at (the
/// login and CSRF cookies, shared, with the first jar's), except the jars the handler found
/// quiet ([`note_read`]) when `writes_ours` is false. Returns whether it wrote a cookie.
pub fn reseal_after<B>(state: &AppState, res: &mut ServiceResponse<B>, writes_ours: bool) -> bool {
    let quiet = if writes_ours {
        QuietJars::default()
    } else {
        res.request()
            .extensions()
            .get::<QuietJars>()
            .copied()
            .unwrap_or_default()
    };
    let all = state.jar.provider_jars().count();
    if (0..all).all(|n| n < 64 && quiet.0 & 1 << n != 0) {
        return false;
    }
    // The request (an `Rc`) outlives the header edits below.
    let req = res.request().clone();
    let now = state.jar.clock().now();
    let looked_at = || {
        state
            .jar
            .provider_jars()
            .enumerate()
            .filter(|(n, _)| *n >= 64 || quiet.0 & 1 << n == 0)
    };
    let mut fresh: Vec<(&SessionJar, CookieKind, String)> = Vec::new();
    let mut chunked = false;
    for (n, jar) in looked_at() {
        let cookies = jar.read(req.headers());
        for kind in CookieKind::ALL {
            if n > 0 && !CookieKind::SESSION.contains(&kind) {
                continue;
            }
            chunked |= cookies.chunk_indexes(kind).next().is_some();
            // Most requests: every value names the current key; a split one is then not
            // reassembled here.
            if kind == CookieKind::Login
                || cookies
                    .heads(kind)
                    .all(|head| jar.sealer().names_current_key(head))
            {
                continue;
            }
            let resealed = cookies
                .sealed_values(kind)
                .iter()
                .find_map(|value| jar.sealer().reseal(kind.purpose(), now, value));
            if let Some(value) = resealed {
                fresh.push((jar, kind, value));
            }
        }
    }
    if fresh.is_empty() && !chunked {
        return false;
    }
    let mut written: Vec<Cookie<'static>> = res
        .headers()
        .get_all(header::SET_COOKIE)
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| Cookie::parse(v.to_string()).ok())
        .collect();
    let writes = |written: &[Cookie<'_>], jar: &SessionJar, kind: CookieKind| {
        written.iter().any(|c| {
            c.name()
                .strip_prefix(jar.policy().name(kind))
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
        })
    };
    let mut added = Vec::new();
    for (jar, kind, value) in fresh {
        if writes(&written, jar, kind) {
            continue;
        }
        match jar.policy().with_value(kind, &value) {
            Ok(cookies) => added.extend(cookies),
            Err(e) => {
                tracing::warn!(cookie = %jar.policy().name(kind), error = %e, "could not re-seal");
                continue;
            }
        }
        tracing::debug!(cookie = %jar.policy().name(kind), "re-sealed with the current key");
    }
    written.extend(added.iter().cloned());
    if chunked {
        for (_, jar) in looked_at() {
            let cookies = jar.read(req.headers());
            let stale = crate::cookies::stale_chunk_removals(jar.policy(), &cookies, &written);
            if !stale.is_empty() {
                tracing::debug!(count = stale.len(), "removing left-over cookie chunks");
            }
            added.extend(stale);
        }
    }
    let wrote = !added.is_empty();
    for cookie in added {
        if let Ok(v) = HeaderValue::from_str(&cookie.to_string()) {
            res.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    wrote
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
///
/// The ring and `keys_file` outlive configuration reloads ([`crate::reload`]): every snapshot's
/// jar shares one sealer, and a reload refuses another `keys_file`.
pub async fn watch_keys_file(live: web::Data<crate::state::LiveState>) {
    let Some(path) = live.current().config.cookies.keys_file.clone() else {
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
                let state = live.current();
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
