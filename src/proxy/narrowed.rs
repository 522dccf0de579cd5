//! Narrowed route tokens: a route whose API needs its own, least-privilege token gets one, and
//! never the session's broader token.
//!
//! A route with `token = "resource"` or `"exchange"` ([`Narrowing`]) forwards a token the
//! provider issued for that API alone ([`crate::oauth::narrow`]). The token is cached in a
//! sealed cookie of its own, `-nt-<route key>` at the route's path (chunked like the session
//! cookies), so the next call costs no grant. That cookie is:
//!
//! - bound to its session, route and narrowing: the session id, the route key and a fingerprint
//!   of what was asked are sealed inside and compared on every read, so it never serves another
//!   session (a copy planted next to someone else's cookies), another route, or a route whose
//!   configuration has changed since;
//! - refreshed ahead of expiry with the main token's rules (`proxy.refresh_ahead`, never before
//!   half its lifetime), through a [`SingleFlight`] keyed by a hash of provider, session, route
//!   and narrowing (not by any token): many calls at once make one grant;
//! - cleared with its provider's session ([`crate::session::SessionJar::clear_session`]).
//!
//! When the provider refuses the narrowing the call fails (`403 insufficient_scope`, or `502` /
//! `401 session_expired`): forwarding the broad token instead is exactly what the operator
//! configured the route to prevent.

use crate::config::{NarrowKind, Narrowing, RouteConfig};
use crate::cookies::{chunk_count, request_cookies, route_key, CookieKind, RequestCookies};
use crate::cookies::{MAX_CHUNKS, MAX_COOKIE_BYTES};
use crate::crypto::{Purpose, SealError};
use crate::error::{error_with_cookies, ApiError};
use crate::oauth::metadata::ProviderMetadata;
use crate::oauth::narrow::{self, NarrowFailure, Subject};
use crate::oauth::token::TokenResponse;
use crate::refresh::{Found, Freshness, SingleFlight, Usable, RESULT_TTL};
use crate::secret::Token;
use crate::session::{
    access_token_expiry, same_session, RefreshTokenCookie, SessionId, SessionJar,
};
use crate::state::AppState;
use crate::store::refresh::Spent;
use actix_web::cookie::Cookie;
use actix_web::http::header::HeaderMap;
use actix_web::HttpResponse;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// How many copies of a narrowed cookie's first chunk are tried (other paths, or planted by a
/// sibling subdomain): each costs a decryption.
const MAX_TRIES: usize = 4;

/// What the narrowed-token cookie holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct NarrowedCookie {
    /// The session it was issued for ([`SessionId`]).
    sid: SessionId,
    /// The route's key ([`route_key`]): a value moved under another route's name does not open
    /// there.
    route: String,
    /// What was asked for ([`target_id`]): a changed `resource`, `audience`, `scope`, kind or
    /// provider makes the cached token stale at once.
    target: String,
    token: Token,
    /// Unix seconds by our clock; `None` when the provider said neither `expires_in` nor `exp`.
    expires_at: Option<i64>,
    received_at: i64,
}

/// A narrowing grant's result, shared by the requests that joined it.
#[derive(Debug)]
pub struct Narrowed {
    token: Token,
    expires_at: Option<i64>,
    received_at: i64,
    /// The refresh token a resource grant rotated the session's into, when it did: the session
    /// must keep it (RFC 9700 §4.14.2), the one redeemed is spent.
    rotated: Option<Token>,
}

/// The per-replica coordination of narrowing grants: one per session, route and narrowing at a
/// time, its result shared for [`RESULT_TTL`] with the calls that come before its cookie does.
#[derive(Debug)]
pub struct Narrower {
    flights: SingleFlight<[u8; 32], Narrowed, NarrowFailure>,
}

impl Default for Narrower {
    fn default() -> Self {
        Self {
            // A subject token is never spent by a narrowing (a rotated refresh token is written
            // back to the session), so no chain is followed.
            flights: SingleFlight::new(RESULT_TTL, 1),
        }
    }
}

/// What a grant starts from: the subject token (the session's refresh or access token).
#[derive(Clone)]
struct Input {
    subject: Token,
}

/// The fingerprint of a narrowing: provider, kind, resource, audience and scope, hashed.
fn target_id(provider: &str, n: &Narrowing) -> String {
    let kind = match n.kind {
        NarrowKind::Resource => "resource",
        NarrowKind::Exchange => "exchange",
    };
    let mut h = Sha256::new();
    for part in [
        provider,
        kind,
        n.resource.as_deref().unwrap_or(""),
        n.audience.as_deref().unwrap_or(""),
        n.scope.as_deref().unwrap_or(""),
    ] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    let mut id = URL_SAFE_NO_PAD.encode(h.finalize());
    id.truncate(22);
    id
}

/// The single-flight key: the session, route and narrowing, never a token.
fn flight_key(sid: &SessionId, route: &str, target: &str) -> [u8; 32] {
    let sid = serde_json::to_string(sid).unwrap_or_default();
    Sha256::new()
        .chain_update(sid.as_bytes())
        .chain_update([0u8])
        .chain_update(route.as_bytes())
        .chain_update([0u8])
        .chain_update(target.as_bytes())
        .finalize()
        .into()
}

/// The request's token for `route`: `usable` as it is for a session route; for a narrowed
/// route, the cached narrowed token, or a new one. On failure, the error response (carrying the
/// cookies `usable` already wrote: a refresh before the narrowing may have rotated the session's
/// refresh token, which the browser must keep).
pub async fn narrow(
    headers: &HeaderMap,
    cookies: &RequestCookies<'_>,
    route: &RouteConfig,
    usable: Usable,
    jar: &SessionJar,
    state: &AppState,
    client: &awc::Client,
) -> Result<Usable, HttpResponse> {
    let Some(narrowing) = &route.narrowing else {
        return Ok(usable);
    };
    // Boxed: only narrowed routes take this path, and its grant's future is large (see
    // `refresh::usable_access_token`).
    match Box::pin(narrowed(
        headers, cookies, route, narrowing, &usable, jar, state, client,
    ))
    .await
    {
        Ok((token, expires_at, written)) => {
            let mut out = usable;
            if written.iter().any(|c| jar.is_refresh_cookie(c.name())) {
                // The narrowing rotated the refresh token: its cookies replace the refresh's.
                out.cookies.retain(|c| !jar.is_refresh_cookie(c.name()));
            }
            out.cookies.extend(written);
            out.access_token = token;
            out.until = expires_at.map_or(out.until, |exp| exp.min(out.until));
            Ok(out)
        }
        Err(Refusal::SessionOver) => {
            let (error, cleared) = state
                .jar
                .session_over(jar, headers, ApiError::SessionExpired);
            let mut all = usable.cookies;
            all.extend(cleared);
            Err(error_with_cookies(error, all))
        }
        Err(Refusal::Error(e)) => Err(error_with_cookies(e, usable.cookies)),
    }
}

enum Refusal {
    SessionOver,
    Error(ApiError),
}

impl From<ApiError> for Refusal {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::SessionExpired => Refusal::SessionOver,
            e => Refusal::Error(e),
        }
    }
}

/// The narrowed token, its expiry, and the cookies to write.
#[allow(clippy::too_many_arguments)]
async fn narrowed(
    headers: &HeaderMap,
    cookies: &RequestCookies<'_>,
    route: &RouteConfig,
    narrowing: &Narrowing,
    usable: &Usable,
    jar: &SessionJar,
    state: &AppState,
    client: &awc::Client,
) -> Result<(Token, Option<i64>, Vec<Cookie<'static>>), Refusal> {
    let now = jar.clock().now();
    let path = route.path.as_str();
    let name = jar.policy().narrowed_name(path);
    let key = route_key(path);
    let target = target_id(&usable.provider, narrowing);
    let sent = Sent::read(headers, &name);
    let cached = sent.open(state, now).filter(|c| {
        // Another session's, route's or narrowing's value is not an error: it is replaced.
        c.sid == usable.sid && c.route == key && c.target == target
    });
    if let Some(c) = &cached {
        if !state.refresher.due(c.expires_at, c.received_at, now) {
            return Ok((c.token.clone(), c.expires_at, Vec::new()));
        }
    }

    let provider = state.providers.for_session(&usable.provider)?;
    // The subject: the session's refresh token (the one this request's refresh produced, if
    // any), or its access token.
    let (subject, rt_cookie) = match narrowing.kind {
        NarrowKind::Resource => {
            let rt: RefreshTokenCookie = jar
                .open(cookies, CookieKind::RefreshToken)?
                .ok_or(ApiError::InsufficientScope(
                    "this API needs a token narrowed with the session's refresh token, and the session has none"
                        .into(),
                ))?;
            same_session(&usable.sid, &rt.sid)?;
            let token = usable
                .refreshed_token
                .clone()
                .unwrap_or_else(|| rt.token.clone());
            (token, Some(rt))
        }
        NarrowKind::Exchange => (usable.access_token.clone(), None),
    };
    let flown = state
        .narrower
        .flights
        .run(
            Input { subject },
            |_| flight_key(&usable.sid, &key, &target),
            |_, r: &Narrowed| {
                if state
                    .refresher
                    .due(r.expires_at, r.received_at, jar.clock().now())
                {
                    Freshness::Stale
                } else {
                    Freshness::Fresh
                }
            },
            |input: Input| grant(state, client, provider, narrowing, input),
        )
        .await;
    let result = match flown.outcome {
        Ok(r) => r,
        Err(failure) => {
            let expired = cached
                .as_ref()
                .is_some_and(|c| c.expires_at.is_some_and(|exp| exp <= now));
            if let (Some(c), false) = (&cached, expired) {
                tracing::warn!(
                    ?failure,
                    "narrowing ahead of expiry failed; continuing with the current narrowed token"
                );
                return Ok((c.token.clone(), c.expires_at, Vec::new()));
            }
            return Err(refusal(failure));
        }
    };
    tracing::debug!(route = %path, coalesced = flown.joined > 0, "narrowed token");
    let mut written = seal(
        state,
        &name,
        path,
        &key,
        &target,
        &usable.sid,
        &result,
        usable.until,
    )?;
    written.extend(sent.stale_removals(state, &name, path, &written));
    if let (Some(rotated), Some(rt)) = (&result.rotated, &rt_cookie) {
        // The newest token: a later grant may have rotated this result's already.
        let kept = state
            .refresher
            .newest_across(provider.id(), rotated, state.jar.sealer())
            .await;
        written.extend(jar.reseal_refresh_token(rt, kept)?);
    }
    Ok((result.token.clone(), result.expires_at, written))
}

/// What a failed narrowing tells the SPA.
fn refusal(failure: NarrowFailure) -> Refusal {
    match failure {
        NarrowFailure::SessionOver => Refusal::SessionOver,
        NarrowFailure::Refused(code) => Refusal::Error(ApiError::InsufficientScope(format!(
            "the identity provider refused a token for this API ({code}): this session may not call it"
        ))),
        NarrowFailure::Unavailable(m) => Refusal::Error(ApiError::ProviderUnavailable(m)),
    }
}

/// The narrowing grant itself.
async fn grant(
    state: &AppState,
    client: &awc::Client,
    provider: &crate::oauth::Provider,
    narrowing: &Narrowing,
    input: Input,
) -> Result<Arc<Narrowed>, NarrowFailure> {
    let metadata = provider
        .metadata(client)
        .await
        .map_err(|e| NarrowFailure::Unavailable(e.to_string()))?;
    let (tokens, kept) = match narrowing.kind {
        NarrowKind::Exchange => {
            let subject = Subject::AccessToken(&input.subject);
            (
                call(client, provider, &metadata, narrowing, subject).await?,
                None,
            )
        }
        // A resource grant spends the session's refresh token: it takes its turn on it with the
        // session's refresh and the other routes' resource grants, on this replica and, with a
        // store, across replicas, and redeems the newest token of the chain, never one another
        // grant already rotated (RFC 9700 §4.14.2; [`crate::refresh::Refresher::spend`]).
        // Another replica's refresh result only tells it which token that is.
        NarrowKind::Resource => {
            let (tokens, kept) = state
                .refresher
                .spend(
                    provider,
                    state.jar.sealer(),
                    &input.subject,
                    |redeemed, r| {
                        if r.rotated_from(redeemed) {
                            Found::Follow
                        } else {
                            Found::Alone
                        }
                    },
                    |token| resource_grant(client, provider, &metadata, narrowing, token),
                    |outcome: &Result<(TokenResponse, Token), NarrowFailure>| {
                        outcome.as_ref().ok().map(|(_, kept)| Spent::Rotated(kept))
                    },
                    || Err(NarrowFailure::Unavailable(crate::refresh::BUSY.into())),
                )
                .await?;
            (tokens, Some(kept))
        }
    };
    let now = state.clock.now();
    let rotated = kept.filter(|kept| !kept.ct_eq(input.subject.expose()));
    Ok(Arc::new(Narrowed {
        expires_at: access_token_expiry(&tokens, now),
        received_at: now,
        token: tokens.access_token,
        rotated,
    }))
}

/// A resource grant with `refresh_token`, and the refresh token the session keeps after it:
/// the one issued (rotation), else the one redeemed (which is newer than the request's when the
/// spend followed a rotation).
async fn resource_grant(
    client: &awc::Client,
    provider: &crate::oauth::Provider,
    metadata: &ProviderMetadata,
    narrowing: &Narrowing,
    refresh_token: Token,
) -> Result<(TokenResponse, Token), NarrowFailure> {
    let subject = Subject::RefreshToken(&refresh_token);
    let tokens = call(client, provider, metadata, narrowing, subject).await?;
    let kept = tokens.refresh_token.clone().unwrap_or(refresh_token);
    Ok((tokens, kept))
}

/// One narrowing request at the token endpoint, logged and counted by its outcome.
async fn call(
    client: &awc::Client,
    provider: &crate::oauth::Provider,
    metadata: &ProviderMetadata,
    narrowing: &Narrowing,
    subject: Subject<'_>,
) -> Result<TokenResponse, NarrowFailure> {
    // A slot of the provider's bound on calls in flight, like every other grant (issue 17).
    let tokens = {
        let _slot = provider.calls().acquire().await;
        narrow::request(client, &provider.config, metadata, narrowing, subject).await
    };
    let label = match &tokens {
        Ok(_) => "ok",
        Err(NarrowFailure::Refused(_)) => "refused",
        Err(NarrowFailure::SessionOver) => "invalid_grant",
        Err(NarrowFailure::Unavailable(_)) => "provider_error",
    };
    tracing::info!(provider = %provider.id(), outcome = label, "narrowing grant");
    tokens
}

/// The cookies that carry a narrowed token at the route's path, split into chunks when one
/// cookie cannot carry it (`<n>.<part>`, as [`crate::cookies`] splits session values). No
/// `Max-Age`: a browser-session cookie whose sealed expiry is the token's own (or, without one,
/// the session token's usable end).
#[allow(clippy::too_many_arguments)]
fn seal(
    state: &AppState,
    name: &str,
    path: &str,
    key: &str,
    target: &str,
    sid: &SessionId,
    result: &Narrowed,
    session_until: i64,
) -> Result<Vec<Cookie<'static>>, ApiError> {
    let jar = &state.jar;
    let now = jar.clock().now();
    // The session's own lifetimes are enforced on every call by its access-token cookie (opened
    // first), and the session id inside ties this one to it.
    let expires = result.expires_at.unwrap_or(session_until).max(now + 1);
    let value = NarrowedCookie {
        sid: sid.clone(),
        route: key.to_string(),
        target: target.to_string(),
        token: result.token.clone(),
        expires_at: result.expires_at,
        received_at: result.received_at,
    };
    let too_large = || ApiError::SessionTooLarge {
        name: name.to_string(),
        limit: MAX_CHUNKS * MAX_COOKIE_BYTES,
    };
    let sealed = jar
        .sealer()
        .seal(Purpose::NarrowedToken, expires, &value)
        .map_err(|e| match e {
            SealError::TooLarge => too_large(),
            e => {
                tracing::error!(cookie = %name, error = %e, "sealing failed");
                ApiError::Internal
            }
        })?;
    let policy = jar.policy();
    let longest = format!("{name}.{}", MAX_CHUNKS - 1);
    let overhead = policy
        .cookie_at(&longest, String::new(), path)
        .to_string()
        .len();
    let budget = MAX_COOKIE_BYTES.saturating_sub(overhead);
    let parts: Vec<String> = if sealed.len() <= budget {
        vec![sealed]
    } else {
        // Room for the `<n>.` count on every chunk, so all chunks are cut alike.
        let size = budget.saturating_sub(2).max(1);
        let count = sealed.len().div_ceil(size);
        if count > MAX_CHUNKS {
            return Err(too_large());
        }
        sealed
            .as_bytes()
            .chunks(size)
            .enumerate()
            .map(|(i, part)| {
                // Sealed values are base64url: ASCII, so any byte boundary is a char boundary.
                let part = String::from_utf8_lossy(part);
                match i {
                    0 => format!("{count}.{part}"),
                    _ => part.into_owned(),
                }
            })
            .collect()
    };
    Ok(parts
        .into_iter()
        .enumerate()
        .map(|(i, part)| {
            let chunk = match i {
                0 => name.to_string(),
                i => format!("{name}.{i}"),
            };
            policy.cookie_at(&chunk, part, path)
        })
        .collect())
}

/// The narrowed cookie's chunks as the request sent them: by chunk index, every copy in the
/// order sent.
struct Sent<'r> {
    chunks: Vec<Vec<&'r str>>,
}

impl<'r> Sent<'r> {
    fn read(headers: &'r HeaderMap, name: &str) -> Self {
        let mut chunks: Vec<Vec<&'r str>> = vec![Vec::new(); MAX_CHUNKS];
        for pair in request_cookies(headers) {
            // Only pairs that start with the name need parsing.
            if !pair.text.starts_with(name) {
                continue;
            }
            let Some((n, value)) = pair.name_value() else {
                continue;
            };
            let Some(rest) = n.strip_prefix(name) else {
                continue;
            };
            let index = match rest.strip_prefix('.') {
                None if rest.is_empty() => 0,
                Some(d) if !d.starts_with('0') && d.bytes().all(|b| b.is_ascii_digit()) => {
                    match d.parse::<usize>() {
                        Ok(i) if i < MAX_CHUNKS => i,
                        _ => continue,
                    }
                }
                _ => continue,
            };
            chunks[index].push(value);
        }
        Self { chunks }
    }

    /// The first value that opens (its chunks reassembled with the first copy of each).
    fn open(&self, state: &AppState, now: i64) -> Option<NarrowedCookie> {
        let sealer = state.jar.sealer();
        self.chunks[0].iter().take(MAX_TRIES).find_map(|first| {
            let (count, head) = chunk_count(first);
            let mut value = head.to_string();
            for copies in self.chunks.get(1..count)? {
                value.push_str(copies.first()?);
            }
            sealer.unseal(Purpose::NarrowedToken, now, &value).ok()
        })
    }

    /// Removals for chunks the request carried past those `written` uses.
    fn stale_removals(
        &self,
        state: &AppState,
        name: &str,
        path: &str,
        written: &[Cookie<'static>],
    ) -> Vec<Cookie<'static>> {
        let keep = written.len().max(1);
        (keep..MAX_CHUNKS)
            .filter(|i| !self.chunks[*i].is_empty())
            .map(|i| {
                let mut c =
                    state
                        .jar
                        .policy()
                        .cookie_at(&format!("{name}.{i}"), String::new(), path);
                c.make_removal();
                c
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_and_flight_keys_tell_narrowings_and_sessions_apart() {
        let n = |kind, resource: Option<&str>, scope: Option<&str>| Narrowing {
            kind,
            resource: resource.map(String::from),
            audience: None,
            scope: scope.map(String::from),
        };
        let a = n(NarrowKind::Resource, Some("https://a.example"), None);
        let t = target_id("p", &a);
        assert_eq!(t, target_id("p", &a.clone()));
        for other in [
            n(NarrowKind::Exchange, Some("https://a.example"), None),
            n(NarrowKind::Resource, Some("https://b.example"), None),
            n(
                NarrowKind::Resource,
                Some("https://a.example"),
                Some("read"),
            ),
        ] {
            assert_ne!(t, target_id("p", &other));
        }
        assert_ne!(t, target_id("q", &a));
        let (s1, s2) = (SessionId::new(), SessionId::new());
        assert_ne!(flight_key(&s1, "r", &t), flight_key(&s2, "r", &t));
        assert_ne!(flight_key(&s1, "r", &t), flight_key(&s1, "r2", &t));
        assert_eq!(flight_key(&s1, "r", &t), flight_key(&s1, "r", &t));
    }
}
