//! Refresh coordination: one refresh grant per session per replica, however many requests need it.
//!
//! An SPA that fires ten API calls as its access token expires must not send ten refresh grants:
//! with rotating refresh tokens the provider accepts the first and, seeing the old token again,
//! revokes the whole grant (RFC 9700 §4.14.2), logging the user out. So requests that carry the
//! same refresh token share one in-flight grant (single flight, keyed by a hash of the token),
//! and its result is kept for [`RESULT_TTL`] so stragglers still holding the old cookie get the
//! same new tokens instead of replaying the old refresh token. A straggler never sends a
//! redeemed, rotated refresh token again, not even when the shared result has itself come due:
//! it then continues from the refresh token that result produced ([`MAX_CHAIN`] steps at most).
//!
//! Across replicas, with a store (`[store]`), the grant itself is coordinated once more
//! ([`crate::store::refresh`]): after this replica's single flight, the replicas take turns on
//! the refresh token in the store and share the result; without a store, or when it fails, each
//! replica stands alone.
//!
//! A narrowing grant (a refresh-token grant with `resource`, RFC 8707 §2.2) redeems the same
//! refresh token under another key; both spend it through [`Refresher::spend`]: a turn on the
//! token on this replica ([`Rotations`]), then the store's lock on it, so no two grants on any
//! replica redeem one refresh token, and none redeems a rotated one.
//!
//! Three layers: [`SingleFlight`] shares grants and keeps results, knowing nothing of tokens;
//! [`Refresher`] (here) keys it by refresh token and performs the grant; [`usable_access_token`]
//! decides when a request's access token needs one, and what a failure costs the session.

mod policy;
mod rotations;
mod single_flight;
mod spend;

pub use policy::{usable_access_token, Denied, TokenSource, Usable};
pub use rotations::{Rotations, Turn};
pub use single_flight::{Flown, Freshness, SingleFlight};
pub use spend::Found;

use crate::clock::Clock;
use crate::crypto::Sealer;
use crate::oauth::error_code::OAuthErrorCode;
use crate::oauth::http::CallError;
use crate::oauth::token::{self, TokenResponse};
use crate::oauth::Provider;
use crate::secret::Token;
use crate::session::{
    access_token_expiry, refresh_due, NewSession, Received, RefreshTokenCookie, SessionId,
};
use crate::store::refresh::{hash_hex, Spent};
use crate::store::Store;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;

/// How long a refresh result is shared with requests that still carry the old refresh token.
pub const RESULT_TTL: Duration = Duration::from_secs(30);

/// Why a grant was not made: another replica holds the refresh token and the store stopped
/// answering before its result came ([`crate::store::refresh::Coordinated::Busy`]).
pub const BUSY: &str =
    "another replica is redeeming the refresh token and the shared store does not answer; try again";

/// How many shared results a request follows, each from the refresh token the previous one
/// produced, before it settles for the last (a bound, not a number ever reached in practice).
pub const MAX_CHAIN: usize = 3;

/// New tokens from a refresh grant, with the session's subject.
#[derive(Debug)]
pub struct Refreshed {
    pub tokens: TokenResponse,
    pub sub: Option<String>,
    /// The provider's session id the session keeps ([`NewSession::op_sid`]).
    pub op_sid: Option<String>,
    /// Expiry of the new access token, by our clock.
    pub expires_at: Option<i64>,
    /// When the grant answered, by our clock.
    pub received_at: i64,
    /// The refresh token the session keeps: the rotated one, or the one redeemed when the
    /// provider did not rotate it.
    pub refresh_token: Token,
}

impl Refreshed {
    /// What the session's cookies become: the new tokens, the refresh token kept
    /// ([`Refreshed::refresh_token`]), the same subject, session id and start (`started_at`,
    /// from the request's cookies: a refresh never moves the absolute end), and the CSRF value
    /// to re-seal when given.
    pub fn session<'a>(
        &'a self,
        provider: &'a str,
        sid: &'a SessionId,
        csrf: Option<&'a Token>,
        started_at: Option<i64>,
    ) -> NewSession<'a> {
        NewSession {
            provider,
            sid,
            tokens: &self.tokens,
            previous_refresh_token: Some(self.refresh_token.clone()),
            sub: self.sub.clone(),
            op_sid: self.op_sid.clone(),
            csrf,
            // The grant's time, not the time of the request that picked the result up.
            received: Some(Received {
                at: self.received_at,
                expires_at: self.expires_at,
            }),
            started_at,
        }
    }

    /// Whether the grant issued another refresh token than `redeemed` (rotation).
    pub fn rotated_from(&self, redeemed: &Token) -> bool {
        !self.refresh_token.ct_eq(redeemed.expose())
    }
}

/// Why a refresh produced no tokens. Shared by every request that joined the grant, hence
/// `Clone` and plain messages; what each failure costs the request is decided in one place
/// (`From<RefreshFailure> for Denied`).
#[derive(Debug, Clone)]
pub enum RefreshFailure {
    /// The provider refused the grant; `invalid_grant` means the refresh token is dead.
    Rejected(OAuthErrorCode),
    /// The provider could not be reached or answered 5xx.
    Unavailable(String),
    /// The provider answered, but with an ID token we must not accept.
    BadIdToken(String),
}

impl RefreshFailure {
    /// Whether the refresh token is dead (RFC 6749 §5.2 `invalid_grant`: invalid, expired or
    /// revoked), so the session cannot go on.
    pub fn ends_session(&self) -> bool {
        matches!(self, RefreshFailure::Rejected(OAuthErrorCode::InvalidGrant))
    }
}

impl From<CallError> for RefreshFailure {
    fn from(e: CallError) -> Self {
        match e {
            CallError::Rejected { error, .. } => RefreshFailure::Rejected(error),
            CallError::Unavailable(m) => RefreshFailure::Unavailable(m),
        }
    }
}

type Outcome = single_flight::Outcome<Refreshed, RefreshFailure>;

/// The per-replica refresh coordination: one grant per refresh token, shared ([`SingleFlight`]).
#[derive(Debug)]
pub struct Refresher {
    flights: SingleFlight<[u8; 32], Refreshed, RefreshFailure>,
    clock: Clock,
    /// `proxy.refresh_ahead` in seconds: how early before expiry a token is refreshed.
    ahead: i64,
    /// The store the replicas coordinate grants through (`[store]`); `None`: this replica alone.
    store: Option<Store>,
    /// Turns on each refresh token, shared with narrowing grants ([`Refresher::turn`]).
    rotations: Rotations,
}

/// The table key: a hash, so the table holds no refresh token in the clear.
fn flight_key(provider: &str, refresh_token: &Token) -> [u8; 32] {
    Sha256::new()
        .chain_update(provider.as_bytes())
        .chain_update([0u8])
        .chain_update(refresh_token.expose().as_bytes())
        .finalize()
        .into()
}

impl Refresher {
    pub fn new(clock: Clock, refresh_ahead: Duration) -> Self {
        Self {
            flights: SingleFlight::new(RESULT_TTL, MAX_CHAIN),
            clock,
            ahead: refresh_ahead.as_secs() as i64,
            store: None,
            rotations: Rotations::default(),
        }
    }

    /// Waits for this replica's turn to redeem `refresh_token` of `provider`: no other grant
    /// (the session's refresh or a narrowing) redeems it meanwhile, and when one already rotated
    /// it the turn is on the newest token of the chain ([`Rotations`]). Every grant that redeems
    /// a session's refresh token goes through here; [`Turn::done`] records what it was rotated
    /// into.
    pub async fn turn(&self, provider: &str, refresh_token: &Token) -> Turn<'_> {
        self.rotations
            .turn(refresh_token, |t| flight_key(provider, t))
            .await
    }

    /// The newest refresh token `refresh_token` is known to have been rotated into on this
    /// replica (within [`RESULT_TTL`]): what a response leaves in the refresh-token cookie, so a
    /// browser never keeps a spent one.
    pub fn newest(&self, provider: &str, refresh_token: &Token) -> Token {
        self.rotations
            .newest(refresh_token, |t| flight_key(provider, t))
    }

    /// Coordinates grants with the other replicas through `store` from now on.
    pub fn set_store(&mut self, store: Store) {
        self.store = Some(store);
    }

    /// Whether a token received at `received_at` and expiring at `expires_at` is due at `now`
    /// ([`refresh_due`] with `proxy.refresh_ahead`).
    pub fn due(&self, expires_at: Option<i64>, received_at: i64, now: i64) -> bool {
        refresh_due(expires_at, received_at, self.ahead, now)
    }

    /// Drops any shared result for this refresh token, so a copy of the old cookies cannot pick
    /// up tokens after the session ended (logout).
    pub fn forget(&self, provider: &str, refresh_token: &Token) {
        let key = flight_key(provider, refresh_token);
        self.flights.forget(&key);
        if let Some(store) = self.store.clone() {
            // In the background: logout does not wait for the store, and a failure only leaves
            // the shared result to expire by itself (RESULT_TTL).
            actix_web::rt::spawn(async move {
                let del = redis::cmd("DEL")
                    .arg(store.key("refresh-result", &hash_hex(&key)))
                    .clone();
                if let Err(e) = store.query::<i64>("refresh_result_del", del).await {
                    tracing::warn!(error = %e, "shared refresh result not deleted at logout; it expires by itself");
                }
            });
        }
    }

    /// Refreshes with `rt`, joining a grant already in flight (or just finished) for the same
    /// token. Returns the outcome and whether this call used another request's grant. `sealer`
    /// seals and opens results shared through the store (the cookie key ring, live).
    pub async fn refresh(
        &self,
        client: &awc::Client,
        provider: &Provider,
        rt: &RefreshTokenCookie,
        sealer: &Sealer,
    ) -> (Outcome, bool) {
        let flown = self
            .flights
            .run(
                rt.clone(),
                |rt| flight_key(provider.id(), &rt.token),
                |rt, r| self.freshness(rt, r),
                |rt| self.grant_across_replicas(client, provider, rt, sealer),
            )
            .await;
        if flown.joined > 0 {
            crate::metrics::METRICS
                .refreshes
                .get_or_create(&crate::metrics::OutcomeLabel {
                    outcome: "coalesced",
                })
                .inc_by(flown.joined as u64);
        }
        let shared = flown.shared();
        (flown.outcome, shared)
    }

    /// A kept result is good until it comes due; then, when its grant rotated the refresh token
    /// the caller holds, that token is spent and the caller goes on from the rotated one.
    fn freshness(&self, rt: &RefreshTokenCookie, r: &Refreshed) -> Freshness<RefreshTokenCookie> {
        if !self.due(r.expires_at, r.received_at, self.clock.now()) {
            Freshness::Fresh
        } else if r.rotated_from(&rt.token) {
            Freshness::Spent(RefreshTokenCookie {
                token: r.refresh_token.clone(),
                ..rt.clone()
            })
        } else {
            Freshness::Stale
        }
    }

    /// The grant, spent once across replicas ([`Refresher::spend`]): the result of another
    /// replica's grant for the same token when there is one (followed, as the single flight
    /// does, to the refresh token it produced once it has come due, and always past a
    /// narrowing's rotation), else a grant here.
    async fn grant_across_replicas(
        &self,
        client: &awc::Client,
        provider: &Provider,
        rt: RefreshTokenCookie,
        sealer: &Sealer,
    ) -> Outcome {
        let mut step = 1;
        self.spend(
            provider,
            sealer,
            &rt.token,
            |redeemed, r| {
                crate::metrics::METRICS
                    .refreshes
                    .get_or_create(&crate::metrics::OutcomeLabel { outcome: "shared" })
                    .inc();
                if !self.due(r.expires_at, r.received_at, self.clock.now()) {
                    Found::Take(Ok(Arc::new(r)))
                } else if !r.rotated_from(redeemed) {
                    // Come due, and the provider does not rotate: the same token may be redeemed
                    // again, here, without any reuse to detect.
                    Found::Alone
                } else if step < MAX_CHAIN {
                    step += 1;
                    Found::Follow
                } else {
                    Found::Take(Ok(Arc::new(r)))
                }
            },
            |token| {
                self.grant(
                    client,
                    provider,
                    RefreshTokenCookie {
                        token,
                        ..rt.clone()
                    },
                )
            },
            |outcome: &Outcome| outcome.as_ref().ok().map(|r| Spent::Refreshed(r)),
            || Err(RefreshFailure::Unavailable(BUSY.into())),
        )
        .await
    }

    /// The refresh grant itself, with the token [`Refresher::spend`] gave its turn to (the
    /// newest of its chain: a narrowing may have rotated the one the request carries), counted
    /// by its outcome.
    async fn grant(
        &self,
        client: &awc::Client,
        provider: &Provider,
        rt: RefreshTokenCookie,
    ) -> Outcome {
        let outcome = grant(&self.clock, client, provider, &rt).await;
        let label = match &outcome {
            Ok(_) => "ok",
            Err(f) if f.ends_session() => "invalid_grant",
            Err(RefreshFailure::Rejected(_)) | Err(RefreshFailure::BadIdToken(_)) => "rejected",
            Err(RefreshFailure::Unavailable(_)) => "provider_error",
        };
        crate::metrics::METRICS
            .refreshes
            .get_or_create(&crate::metrics::OutcomeLabel { outcome: label })
            .inc();
        outcome
    }
}

async fn grant(
    clock: &Clock,
    client: &awc::Client,
    provider: &Provider,
    rt: &RefreshTokenCookie,
) -> Outcome {
    let metadata = provider
        .metadata(client)
        .await
        .map_err(|e| RefreshFailure::Unavailable(e.to_string()))?;
    let tokens = {
        let _slot = provider.calls().acquire().await;
        token::refresh(client, &provider.config, &metadata, &rt.token).await?
    };
    let now = clock.now();
    // The provider's session id is the login's; a refreshed ID token restating it (OIDC Core
    // §12.2) names the same session, and one from a refresh-only session fills it in.
    let mut op_sid = rt.op_sid.clone();
    if let Some(id_token) = &tokens.id_token {
        let claims = provider
            .verify_id_token(
                client,
                &metadata,
                id_token.expose(),
                None,
                rt.sub.as_deref(),
                now,
            )
            .await
            .map_err(|e| RefreshFailure::BadIdToken(e.to_string()))?;
        op_sid = op_sid.or(claims.sid);
    }
    tracing::info!(provider = %provider.id(), "tokens refreshed");
    Ok(Arc::new(Refreshed {
        expires_at: access_token_expiry(&tokens, now),
        received_at: now,
        refresh_token: tokens
            .refresh_token
            .clone()
            .unwrap_or_else(|| rt.token.clone()),
        tokens,
        sub: rt.sub.clone(),
        op_sid,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flight_keys_separate_providers_and_tokens() {
        let a = flight_key("a", &Token::new("rt"));
        assert_ne!(a, flight_key("b", &Token::new("rt")));
        assert_ne!(a, flight_key("a", &Token::new("rt2")));
        assert_eq!(a, flight_key("a", &Token::new("rt")));
    }

    /// A shared result written 20 s after its grant: the cookie must say the access token
    /// expires when the grant said, not 20 s later.
    #[test]
    fn a_shared_result_is_sealed_with_its_grants_time() {
        use crate::cookies::{CookieKind, CookiePolicy};
        use crate::crypto::Sealer;
        use crate::session::{AccessTokenCookie, SessionJar};

        let toml = crate::config::test_toml("", crate::config::TEST_PROVIDER);
        let config = crate::config::Config::from_toml(&toml, Vec::new()).expect("valid");
        let clock = Clock::default();
        let jar = SessionJar::new(
            CookiePolicy::for_config(&config),
            Sealer::new(config.cookies.keys.clone()),
            clock.clone(),
            crate::session::Lifetimes::new(&config.cookies),
            Duration::from_secs(600),
        );
        let granted = clock.now() - 20;
        let tokens: TokenResponse = serde_json::from_value(serde_json::json!({
            "access_token": "at", "expires_in": 300, "refresh_token": "rt2"
        }))
        .expect("token response");
        let refreshed = Refreshed {
            expires_at: access_token_expiry(&tokens, granted),
            received_at: granted,
            refresh_token: Token::new("rt2"),
            tokens,
            sub: None,
            op_sid: None,
        };
        let sid = SessionId::new();
        let started = clock.now() - 3600;
        let cookies = jar
            .seal(refreshed.session("p", &sid, None, Some(started)))
            .expect("seal");
        let name = jar.policy().name(CookieKind::AccessToken).to_string();
        let value = cookies
            .iter()
            .find(|c| c.name() == name)
            .expect("access-token cookie")
            .value()
            .to_string();
        let at: AccessTokenCookie = jar
            .sealer()
            .unseal(CookieKind::AccessToken.purpose(), clock.now(), &value)
            .expect("unseal");
        assert_eq!(at.received_at, granted);
        assert_eq!(at.expires_at, Some(granted + 300));
        // The session's start is carried over; the idle clock starts at the write.
        assert_eq!(at.started_at, Some(started));
        assert_eq!(at.active_at, Some(clock.now()));
        // No ID token, no provider session: nothing for back-channel logout to match.
        assert_eq!((at.sub, at.op_sid), (None, None));
    }

    /// The provider's `sub` and `sid` sealed at login survive a refresh, in the access-token
    /// and refresh-token cookies, so a back-channel logout still finds the session.
    #[test]
    fn a_refresh_keeps_the_provider_session() {
        use crate::cookies::{CookieKind, CookiePolicy};
        use crate::crypto::Sealer;
        use crate::session::{AccessTokenCookie, SessionJar};

        let toml = crate::config::test_toml("", crate::config::TEST_PROVIDER);
        let config = crate::config::Config::from_toml(&toml, Vec::new()).expect("valid");
        let clock = Clock::default();
        let jar = SessionJar::new(
            CookiePolicy::for_config(&config),
            Sealer::new(config.cookies.keys.clone()),
            clock.clone(),
            crate::session::Lifetimes::new(&config.cookies),
            Duration::from_secs(600),
        );
        let tokens: TokenResponse = serde_json::from_value(serde_json::json!({
            "access_token": "at", "expires_in": 300, "refresh_token": "rt2"
        }))
        .expect("token response");
        let refreshed = Refreshed {
            expires_at: access_token_expiry(&tokens, clock.now()),
            received_at: clock.now(),
            refresh_token: Token::new("rt2"),
            tokens,
            sub: Some("alice".into()),
            op_sid: Some("op-session".into()),
        };
        let sid = SessionId::new();
        let cookies = jar
            .seal(refreshed.session("p", &sid, None, Some(clock.now())))
            .expect("seal");
        let value = |kind: CookieKind| {
            let name = jar.policy().name(kind).to_string();
            cookies
                .iter()
                .find(|c| c.name() == name)
                .expect("cookie")
                .value()
                .to_string()
        };
        let at: AccessTokenCookie = jar
            .sealer()
            .unseal(
                CookieKind::AccessToken.purpose(),
                clock.now(),
                &value(CookieKind::AccessToken),
            )
            .expect("unseal");
        assert_eq!(at.sub.as_deref(), Some("alice"));
        assert_eq!(at.op_sid.as_deref(), Some("op-session"));
        let rt: RefreshTokenCookie = jar
            .sealer()
            .unseal(
                CookieKind::RefreshToken.purpose(),
                clock.now(),
                &value(CookieKind::RefreshToken),
            )
            .expect("unseal");
        assert_eq!(rt.op_sid.as_deref(), Some("op-session"));
        // And the idle-clock renewal re-seals them too.
        let renewed = jar.renew(&at, None).expect("renew");
        let at2: AccessTokenCookie = jar
            .sealer()
            .unseal(
                CookieKind::AccessToken.purpose(),
                clock.now(),
                renewed[0].value(),
            )
            .expect("unseal");
        assert_eq!(at2.op_sid.as_deref(), Some("op-session"));
        assert_eq!(at2.sub.as_deref(), Some("alice"));
    }
}
