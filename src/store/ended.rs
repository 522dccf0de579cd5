//! The list of ended sessions, shared by every replica through the store: what a back-channel
//! logout (OIDC Back-Channel Logout 1.0 §2.7) and `sessions revoke` write, and what every request
//! that uses a session checks.
//!
//! Cookies are stateless: a session that was sealed stays valid until its own clocks end it, so
//! "this user logged out at the provider" or "sign this user out everywhere" can only be
//! enforced by a list every replica reads. The list holds marks, never tokens:
//!
//! - `ended:sid:<hash of provider and sid>`: the provider's session `sid` is over; every session
//!   sealed with it is ended, whenever it started (a new login gets a new `sid`).
//! - `ended:sub:<hash of provider and sub>` = when (Unix seconds, our clock): every session of
//!   that user at that provider that started at or before then is ended; later logins are not.
//!
//! Keys are SHA-256 hashes, so the store learns no user or session id. Each mark expires after
//! the sessions' absolute lifetime (`cookies.absolute_lifetime`): by then every session it could
//! match has ended by its own clock. The `jti` of each accepted logout token is kept (SET NX) for
//! as long as such a token is accepted at all, so a replay is refused on every replica.
//!
//! The proxy must stay fast, so each replica keeps the answer for a session for
//! `[store] revocation_cache` (a few seconds): a logout takes effect on other replicas within that
//! time, at once on the replica that received it. When the store does not answer, `[store]
//! on_error` decides: `open` (the default) lets the request through, logging a warning and
//! counting `token_handler_logout_check_failures_total`; `closed` refuses it with 401
//! `unauthorized_request` without clearing the cookies, so the session works again once the
//! store is back. docs/security.md weighs the two.

use crate::cookies::{CookieKind, RequestCookies};
use crate::error::ApiError;
use crate::session::{AccessTokenCookie, RefreshTokenCookie, SessionJar};
use crate::store::Store;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A key of the list: a fixed kind (`ended-sid`, `ended-sub`, `logout-jti`) and a hash.
pub type Key = (&'static str, String);

/// What the list needs from the store. The store's own errors are opaque here: only whether it
/// answered matters.
pub trait MarkStore {
    /// `SET key value EX ttl`.
    fn set(
        &self,
        key: &Key,
        value: i64,
        ttl: Duration,
    ) -> impl std::future::Future<Output = Result<(), String>>;
    /// `SET key 1 NX EX ttl`: `true` when the key was new.
    fn set_new(
        &self,
        key: &Key,
        ttl: Duration,
    ) -> impl std::future::Future<Output = Result<bool, String>>;
    /// `DEL key`.
    fn delete(&self, key: &Key) -> impl std::future::Future<Output = Result<(), String>>;
    /// `MGET keys…`, values parsed as integers (`None`: absent or not a number).
    fn get_many(
        &self,
        keys: &[Key],
    ) -> impl std::future::Future<Output = Result<Vec<Option<i64>>, String>>;
}

/// The shared store, with every command bounded by `store.command_timeout` and counted in
/// `token_handler_store_errors_total{op}` when it fails ([`Store::query`]).
impl MarkStore for Store {
    async fn set(&self, key: &Key, value: i64, ttl: Duration) -> Result<(), String> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key(key.0, &key.1))
            .arg(value)
            .arg("EX")
            .arg(ttl.as_secs().max(1));
        self.query::<()>("ended_mark", cmd)
            .await
            .map_err(|e| e.to_string())
    }

    async fn set_new(&self, key: &Key, ttl: Duration) -> Result<bool, String> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key(key.0, &key.1))
            .arg(1)
            .arg("NX")
            .arg("EX")
            .arg(ttl.as_secs().max(1));
        // `OK` when set, nil when the key existed.
        self.query::<Option<String>>("logout_jti", cmd)
            .await
            .map(|r| r.is_some())
            .map_err(|e| e.to_string())
    }

    async fn delete(&self, key: &Key) -> Result<(), String> {
        let mut cmd = redis::cmd("DEL");
        cmd.arg(self.key(key.0, &key.1));
        self.query::<i64>("logout_jti", cmd)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    async fn get_many(&self, keys: &[Key]) -> Result<Vec<Option<i64>>, String> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut cmd = redis::cmd("MGET");
        for key in keys {
            cmd.arg(self.key(key.0, &key.1));
        }
        self.query::<Vec<Option<i64>>>("ended_check", cmd)
            .await
            .map_err(|e| e.to_string())
    }
}

/// What a failing store means for the logout check (`[store] on_error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Serve the request: a session that was ended stays usable while the store is down.
    #[default]
    Open,
    /// Refuse the request (401, cookies kept): no session is usable while the store is down.
    Closed,
}

/// Which session a request uses, as its cookies tell it: the provider, the user and the
/// provider's session (sealed at login), and when it started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRef {
    /// Shared text, as in the access-token value it is read from on every proxied request.
    pub provider: std::sync::Arc<str>,
    pub sub: Option<std::sync::Arc<str>>,
    pub op_sid: Option<std::sync::Arc<str>>,
    pub started_at: Option<i64>,
}

impl SessionRef {
    /// The session of the request's access-token cookie, else of its refresh-token cookie
    /// (`/refresh` from a client that sends only that one). `None` when neither opens, or the
    /// session was sealed without `sub` and `sid` (a plain OAuth 2.0 provider, or a cookie from
    /// before they were sealed): nothing could have ended it by this list.
    pub fn of(jar: &SessionJar, cookies: &RequestCookies<'_>) -> Option<Self> {
        let found =
            if let Some(at) = jar.readable::<AccessTokenCookie>(cookies, CookieKind::AccessToken) {
                SessionRef {
                    provider: at.provider,
                    sub: at.sub,
                    op_sid: at.op_sid,
                    started_at: at.started_at,
                }
            } else {
                let rt = jar.readable::<RefreshTokenCookie>(cookies, CookieKind::RefreshToken)?;
                SessionRef {
                    provider: rt.provider.into(),
                    sub: rt.sub.map(Into::into),
                    op_sid: rt.op_sid.map(Into::into),
                    started_at: rt.started_at,
                }
            };
        (found.sub.is_some() || found.op_sid.is_some()).then_some(found)
    }
}

/// The marks the store holds for one session: when its `sid` and its `sub` were ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Marks {
    sid: Option<i64>,
    sub: Option<i64>,
}

impl Marks {
    /// Whether these marks end a session that started at `started_at`: a `sid` mark always; a
    /// `sub` mark when the session started at or before it (a session without a sealed start is
    /// taken as older).
    fn end(self, started_at: Option<i64>) -> bool {
        self.sid.is_some()
            || self
                .sub
                .is_some_and(|at| started_at.is_none_or(|s| s <= at))
    }
}

fn hashed(kind: &'static str, provider: &str, value: &str) -> Key {
    let digest = Sha256::new()
        .chain_update(provider.as_bytes())
        .chain_update([0u8])
        .chain_update(value.as_bytes())
        .finalize();
    (kind, hex(&digest))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The store key remembering a logout token's `jti` (a hash of issuer and `jti`).
pub fn jti_key(iss: &str, jti: &str) -> Key {
    (
        "logout-jti",
        hex(&crate::oauth::logout_token::SeenJtis::hash(iss, jti)),
    )
}

/// The cached answer for one session: its marks, or that the store did not answer.
#[derive(Debug, Clone, Copy)]
struct Cached {
    at: Instant,
    marks: Result<Marks, ()>,
}

/// The per-replica side of the list: the answer cache and the policy on store failure.
#[derive(Debug)]
pub struct EndedSessions {
    cache: Mutex<HashMap<[u8; 32], Cached>>,
    cache_for: Duration,
    on_error: OnError,
    /// How long a mark is kept: the sessions' absolute lifetime, plus the clock leeway.
    mark_ttl: Duration,
    /// `jti`s of logout tokens this replica accepted.
    pub jtis: crate::oauth::logout_token::SeenJtis,
}

impl EndedSessions {
    /// Entries kept in the answer cache before the stale ones are dropped (and, if none is, all).
    pub const MAX_CACHED: usize = 100_000;

    pub fn new(cache_for: Duration, on_error: OnError, absolute_lifetime: Duration) -> Self {
        Self {
            cache: Mutex::default(),
            cache_for,
            on_error,
            mark_ttl: absolute_lifetime.saturating_add(Duration::from_secs(60)),
            jtis: Default::default(),
        }
    }

    /// The list as `[store]` configures it; `None` without a store.
    pub fn for_config(config: &crate::config::Config) -> Option<Self> {
        config.store.as_ref().map(|s| {
            Self::new(
                s.revocation_cache,
                s.on_error,
                config.cookies.absolute_lifetime,
            )
        })
    }

    fn cache_key(session: &SessionRef) -> [u8; 32] {
        Sha256::new()
            .chain_update(session.provider.as_bytes())
            .chain_update([0u8])
            .chain_update(session.sub.as_deref().unwrap_or("").as_bytes())
            .chain_update([0u8])
            .chain_update(session.op_sid.as_deref().unwrap_or("").as_bytes())
            .finalize()
            .into()
    }

    /// Whether `session` may be used: `Err(session_expired)` when it was ended; when the store
    /// does not answer, as `on_error` says.
    pub async fn check(
        &self,
        store: &impl MarkStore,
        session: &SessionRef,
    ) -> Result<(), ApiError> {
        let key = Self::cache_key(session);
        let cached = self
            .cache
            .lock()
            .ok()
            .and_then(|c| c.get(&key).copied())
            .filter(|c| c.at.elapsed() < self.cache_for);
        let marks = match cached {
            Some(c) => c.marks,
            None => {
                // Boxed: the store's round trip is the rare case (once per session per
                // `revocation_cache`), and its future would enlarge every checked request's.
                let marks = Box::pin(self.fetch(store, session)).await;
                if let Ok(mut cache) = self.cache.lock() {
                    if cache.len() >= Self::MAX_CACHED {
                        let cache_for = self.cache_for;
                        cache.retain(|_, c| c.at.elapsed() < cache_for);
                        if cache.len() >= Self::MAX_CACHED {
                            cache.clear();
                        }
                    }
                    cache.insert(
                        key,
                        Cached {
                            at: Instant::now(),
                            marks,
                        },
                    );
                }
                marks
            }
        };
        match marks {
            Ok(m) if m.end(session.started_at) => {
                tracing::info!(provider = %session.provider, "session ended by a logout; cookies cleared");
                crate::metrics::METRICS
                    .sessions_expired
                    .get_or_create(&crate::metrics::ReasonLabel { reason: "logout" })
                    .inc();
                Err(ApiError::SessionExpired)
            }
            Ok(_) => Ok(()),
            Err(()) => match self.on_error {
                OnError::Open => Ok(()),
                OnError::Closed => Err(ApiError::Unauthorized(
                    "the session could not be checked against the list of ended sessions (the store is unavailable); retry shortly",
                )),
            },
        }
    }

    async fn fetch(&self, store: &impl MarkStore, session: &SessionRef) -> Result<Marks, ()> {
        let keys = [
            session
                .op_sid
                .as_deref()
                .map(|s| hashed("ended-sid", &session.provider, s)),
            session
                .sub
                .as_deref()
                .map(|s| hashed("ended-sub", &session.provider, s)),
        ];
        let wanted: Vec<Key> = keys.iter().flatten().cloned().collect();
        let values = store.get_many(&wanted).await.map_err(|reason| {
            crate::metrics::METRICS.logout_check_failures.inc();
            tracing::warn!(
                %reason,
                on_error = ?self.on_error,
                "the store did not answer the logout check; sessions are {} until it does",
                match self.on_error {
                    OnError::Open => "served unchecked (on_error = open)",
                    OnError::Closed => "refused (on_error = closed)",
                }
            );
        })?;
        let mut values = values.into_iter();
        let mut marks = Marks::default();
        if keys[0].is_some() {
            marks.sid = values.next().flatten();
        }
        if keys[1].is_some() {
            marks.sub = values.next().flatten();
        }
        Ok(marks)
    }

    /// Forgets every cached answer: after this replica wrote a mark, its own requests see it
    /// at once.
    fn forget_cached(&self) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.clear();
        }
    }

    /// Ends the provider session `sid` (every session sealed with it).
    pub async fn end_sid(
        &self,
        store: &impl MarkStore,
        provider: &str,
        sid: &str,
        now: i64,
    ) -> Result<(), String> {
        let r = store
            .set(&hashed("ended-sid", provider, sid), now, self.mark_ttl)
            .await;
        self.forget_cached();
        r
    }

    /// Ends every session of `sub` at `provider` that started at or before `now`.
    pub async fn end_sub(
        &self,
        store: &impl MarkStore,
        provider: &str,
        sub: &str,
        now: i64,
    ) -> Result<(), String> {
        let r = store
            .set(&hashed("ended-sub", provider, sub), now, self.mark_ttl)
            .await;
        self.forget_cached();
        r
    }
}

/// The check of every request that uses a session (the proxy, forward auth, and the agent
/// endpoints [`agent_check`] covers): `Err(session_expired)` when the session was ended, whose
/// answer clears the cookies. Without a store, or for a session sealed without `sub` and `sid`,
/// nothing to check.
pub async fn check_request(
    state: &crate::state::AppState,
    jar: &SessionJar,
    cookies: &RequestCookies<'_>,
) -> Result<(), ApiError> {
    let Some((store, ended)) = state.ended_sessions() else {
        return Ok(());
    };
    let Some(session) = SessionRef::of(jar, cookies) else {
        return Ok(());
    };
    ended.check(store, &session).await
}

/// The agent endpoints that use a session and are checked against the list; login, logout and
/// the provider picker are not (a user whose session was ended must be able to sign out and
/// in again).
const CHECKED_ENDPOINTS: [&str; 4] = ["/userInfo", "/claims", "/refresh", "/session"];

/// [`check_request`] in front of the agent endpoints that use a session. Mounted inside the
/// agent scope's `clear_ended`, which clears the cookies of a `session_expired` answer.
pub async fn agent_check(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<
    actix_web::dev::ServiceResponse<actix_web::body::EitherBody<impl actix_web::body::MessageBody>>,
    actix_web::Error,
> {
    let state = crate::state::of(req.request());
    if let Some(state) = state.filter(|s| s.ended_sessions().is_some()) {
        let base = state.config.server.base_path.as_str();
        let checked = req
            .path()
            .strip_prefix(base)
            .is_some_and(|p| CHECKED_ENDPOINTS.contains(&p));
        if checked {
            // The session of the provider the request names (`?provider=`), as the endpoint
            // will read it; a bad or unknown one is the endpoint's to answer.
            let requested = crate::routes::provider_param(req.request())
                .and_then(|id| state.jar.requested(id.as_deref(), req.headers()));
            let outcome = match requested {
                Ok(jar) => check_request(&state, jar, &jar.read(req.headers())).await,
                Err(_) => Ok(()),
            };
            if let Err(e) = outcome {
                // With the error attached, so that `clear_ended` clears the cookies.
                return Ok(req.error_response(e).map_into_right_body());
            }
        }
    }
    Ok(next.call(req).await?.map_into_left_body())
}

/// `token-handler sessions revoke`: ends every session of `sub` at `provider` through the
/// configured store. Returns `store.revocation_cache`, the longest a replica may take to see it.
pub async fn revoke_from_cli(
    config: &crate::config::Config,
    provider: &str,
    sub: &str,
) -> Result<Duration, String> {
    let store_config = config.store.as_ref().ok_or(
        "no [store] is configured: without a shared store, sessions live only in their cookies and cannot be ended before their own lifetimes (docs/security.md)",
    )?;
    let store = Store::connect(store_config).map_err(|e| e.to_string())?;
    let ended = EndedSessions::for_config(config).ok_or("no [store] is configured")?;
    ended
        .end_sub(&store, provider, sub, crate::clock::system_now())
        .await?;
    Ok(store_config.revocation_cache)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    /// The store in memory, for unit tests; `down` makes every call fail.
    #[derive(Default)]
    pub struct MemoryStore {
        pub values: Mutex<HashMap<String, i64>>,
        pub down: AtomicBool,
        pub reads: AtomicUsize,
    }

    fn name(key: &Key) -> String {
        format!("{}:{}", key.0, key.1)
    }

    impl MarkStore for MemoryStore {
        async fn set(&self, key: &Key, value: i64, _ttl: Duration) -> Result<(), String> {
            if self.down.load(Ordering::SeqCst) {
                return Err("down".into());
            }
            self.values.lock().expect("lock").insert(name(key), value);
            Ok(())
        }
        async fn set_new(&self, key: &Key, _ttl: Duration) -> Result<bool, String> {
            if self.down.load(Ordering::SeqCst) {
                return Err("down".into());
            }
            let mut v = self.values.lock().expect("lock");
            if v.contains_key(&name(key)) {
                return Ok(false);
            }
            v.insert(name(key), 1);
            Ok(true)
        }
        async fn delete(&self, key: &Key) -> Result<(), String> {
            self.values.lock().expect("lock").remove(&name(key));
            Ok(())
        }
        async fn get_many(&self, keys: &[Key]) -> Result<Vec<Option<i64>>, String> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            if self.down.load(Ordering::SeqCst) {
                return Err("down".into());
            }
            let v = self.values.lock().expect("lock");
            Ok(keys.iter().map(|k| v.get(&name(k)).copied()).collect())
        }
    }

    fn session(sub: &str, sid: Option<&str>, started_at: i64) -> SessionRef {
        SessionRef {
            provider: "op".into(),
            sub: Some(sub.into()),
            op_sid: sid.map(Into::into),
            started_at: Some(started_at),
        }
    }

    fn ended(cache_for: u64, on_error: OnError) -> EndedSessions {
        EndedSessions::new(
            Duration::from_secs(cache_for),
            on_error,
            Duration::from_secs(3600),
        )
    }

    #[actix_web::test]
    async fn a_sid_mark_ends_exactly_that_provider_session() {
        let store = MemoryStore::default();
        let list = ended(0, OnError::Open);
        let a = session("alice", Some("sid-1"), 100);
        let b = session("alice", Some("sid-2"), 100);
        list.end_sid(&store, "op", "sid-1", 200)
            .await
            .expect("mark");
        assert!(matches!(
            list.check(&store, &a).await,
            Err(ApiError::SessionExpired)
        ));
        assert!(list.check(&store, &b).await.is_ok(), "another session");
        // The same sid at another provider is another session.
        let mut other = a.clone();
        other.provider = "other".into();
        assert!(list.check(&store, &other).await.is_ok());
    }

    #[actix_web::test]
    async fn a_sub_mark_ends_sessions_started_until_then_not_later_logins() {
        let store = MemoryStore::default();
        let list = ended(0, OnError::Open);
        list.end_sub(&store, "op", "alice", 200)
            .await
            .expect("mark");
        for s in [
            session("alice", Some("x"), 150),
            session("alice", None, 200),
        ] {
            assert!(matches!(
                list.check(&store, &s).await,
                Err(ApiError::SessionExpired)
            ));
        }
        assert!(list
            .check(&store, &session("alice", None, 201))
            .await
            .is_ok());
        assert!(list.check(&store, &session("bob", None, 100)).await.is_ok());
        // No sealed start: taken as older than the mark.
        let mut unknown = session("alice", None, 0);
        unknown.started_at = None;
        assert!(list.check(&store, &unknown).await.is_err());
    }

    #[actix_web::test]
    async fn keys_are_hashes_never_ids() {
        let store = MemoryStore::default();
        let list = ended(0, OnError::Open);
        list.end_sub(&store, "op", "alice@example.com", 1)
            .await
            .expect("mark");
        list.end_sid(&store, "op", "the-sid", 1)
            .await
            .expect("mark");
        for key in store.values.lock().expect("lock").keys() {
            assert!(!key.contains("alice") && !key.contains("the-sid"), "{key}");
        }
    }

    #[actix_web::test]
    async fn answers_are_cached_per_replica_for_the_configured_time() {
        let store = MemoryStore::default();
        let list = ended(60, OnError::Open);
        let a = session("alice", Some("sid-1"), 100);
        for _ in 0..5 {
            assert!(list.check(&store, &a).await.is_ok());
        }
        assert_eq!(store.reads.load(Ordering::SeqCst), 1, "one store read");
        // Another replica writes the mark: this one still serves its cached answer…
        store
            .values
            .lock()
            .expect("lock")
            .insert(name(&hashed("ended-sid", "op", "sid-1")), 200);
        assert!(list.check(&store, &a).await.is_ok());
        // …while a mark written through this replica is seen at once.
        list.end_sub(&store, "op", "bob", 200).await.expect("mark");
        assert!(list.check(&store, &a).await.is_err());
    }

    #[actix_web::test]
    async fn a_failing_store_fails_open_or_closed_as_configured_and_recovers() {
        let store = MemoryStore::default();
        let a = session("alice", Some("sid-1"), 100);
        store.down.store(true, Ordering::SeqCst);
        let open = ended(0, OnError::Open);
        assert!(open.check(&store, &a).await.is_ok());
        let closed = ended(0, OnError::Closed);
        match closed.check(&store, &a).await {
            Err(e @ ApiError::Unauthorized(_)) => {
                // Not session_expired: the cookies are kept for when the store is back.
                assert_eq!(e.code(), "unauthorized_request")
            }
            other => panic!("{other:?}"),
        }
        store.down.store(false, Ordering::SeqCst);
        assert!(closed.check(&store, &a).await.is_ok(), "recovered");
    }
}
