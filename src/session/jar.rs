//! The session jar: the one way in and out of the session cookies.
//!
//! It holds what every open and seal needs together (the cookie policy for names, paths and
//! attributes; the sealer with its key ring; the clock that says whether a sealed value has
//! expired; the session and login lifetimes), so handlers, the proxy and the refresh policy take
//! the jar rather than the whole application state, and never pair a policy with the wrong
//! sealer or "now". A request's cookies are read once ([`SessionJar::read`]) and that view is
//! passed to every open. Every open of a session cookie also checks the session's idle and
//! absolute clocks ([`super::lifetime`]), so a session past either is `session_expired` at
//! every endpoint, whichever cookie it reads.

use super::lifetime::{Ended, Lifetimes, SessionTimes};
use super::{
    access_token_expiry, AccessTokenCookie, CsrfCookie, IdTokenCookie, LoginState, NewSession,
    Received, RefreshTokenCookie, Sealed,
};
use crate::clock::Clock;
use crate::cookies::{login_flow_id, CookieKind, CookiePolicy, RequestCookies, MAX_PENDING_LOGINS};
use crate::crypto::{Opens, SealError, Sealer};
use crate::error::ApiError;
use actix_web::cookie::Cookie;
use actix_web::http::header::HeaderMap;
use std::sync::Arc;
use std::time::Duration;

/// Why a session cookie did not open: the seal refused it, or its session is over.
enum Closed {
    Seal(SealError),
    Ended(Ended),
}

/// Cookie policy, sealer and clock: everything needed to open and write session cookies.
///
/// A browser may hold a session with several providers at once: the application's jar holds
/// the default provider's session under today's names, and one jar per other provider
/// ([`SessionJar::for_provider`]) holds that provider's under its own names
/// ([`CookiePolicy::for_provider`]). All share the sealer, the clock and the lifetimes.
#[derive(Debug)]
pub struct SessionJar {
    policy: CookiePolicy,
    sealer: Arc<Sealer>,
    clock: Clock,
    /// The idle and absolute lifetimes of sessions, and whether their cookies persist.
    lifetimes: Lifetimes,
    /// How long a login in progress may take (`cookies.login_timeout`).
    login_timeout: i64,
    /// The provider whose session this jar's names hold: a session cookie sealed for another
    /// provider does not open here (a cookie renamed to another provider's name would otherwise
    /// hand that provider's token to this one's routes). `None`: a jar built without providers
    /// (unit tests), which opens any.
    provider: Option<String>,
    /// Whether this is the default provider's jar (the application's): routes that name no
    /// provider use its session.
    default: bool,
    /// The jars of the other providers, in configuration order (only in the application's jar).
    others: Vec<SessionJar>,
}

impl SessionJar {
    pub fn new(
        policy: CookiePolicy,
        sealer: Sealer,
        clock: Clock,
        lifetimes: Lifetimes,
        login_timeout: Duration,
    ) -> Self {
        Self {
            policy,
            sealer: Arc::new(sealer),
            clock,
            lifetimes,
            login_timeout: login_timeout.as_secs() as i64,
            provider: None,
            default: true,
            others: Vec::new(),
        }
    }

    /// A jar for a reloaded configuration ([`crate::reload`]): `policy` (its routes' cookie
    /// paths), this jar's sealer and clock, so the key ring and its rotation outlive the reload.
    /// Lifetimes and names are the `[cookies]` section's, which a reload does not change.
    pub fn succeeding(&self, policy: CookiePolicy) -> Self {
        Self {
            policy,
            sealer: Arc::clone(&self.sealer),
            clock: self.clock.clone(),
            lifetimes: self.lifetimes,
            login_timeout: self.login_timeout,
            provider: None,
            default: true,
            others: Vec::new(),
        }
    }

    /// This jar for the default provider `default`, with a jar for each of the `others` (their
    /// session cookies named with `_<id>`).
    pub fn with_providers<'p>(
        mut self,
        default: &str,
        others: impl IntoIterator<Item = &'p str>,
    ) -> Self {
        self.provider = Some(default.to_string());
        self.others = others
            .into_iter()
            .filter(|id| *id != default)
            .map(|id| SessionJar {
                policy: self.policy.for_provider(id),
                sealer: Arc::clone(&self.sealer),
                clock: self.clock.clone(),
                lifetimes: self.lifetimes,
                login_timeout: self.login_timeout,
                provider: Some(id.to_string()),
                default: false,
                others: Vec::new(),
            })
            .collect();
        self
    }

    /// The jar that holds this provider's session: this one for the default provider (or when
    /// the jar was built without providers), `None` for an id that is not configured.
    pub fn for_provider(&self, id: &str) -> Option<&SessionJar> {
        match &self.provider {
            None => Some(self),
            Some(own) if own == id => Some(self),
            Some(_) => self
                .others
                .iter()
                .find(|j| j.provider.as_deref() == Some(id)),
        }
    }

    /// Every provider's jar: this one (the default provider's) first, then the others in
    /// configuration order.
    pub fn provider_jars(&self) -> impl Iterator<Item = &SessionJar> {
        std::iter::once(self).chain(self.others.iter())
    }

    /// The provider whose session this jar holds (`None` for a jar built without providers).
    pub fn provider_id(&self) -> Option<&str> {
        self.provider.as_deref()
    }

    /// The jar of the session a request that names no provider uses: the default provider's
    /// when the request carries its access-token cookie; else the first other provider's whose
    /// access-token cookie it carries (a browser signed in with one non-default provider only,
    /// as every browser was before sessions with several providers); else the default's.
    pub fn default_for(&self, headers: &HeaderMap) -> &SessionJar {
        if self.others.is_empty() || self.read(headers).has(CookieKind::AccessToken) {
            return self;
        }
        self.others
            .iter()
            .find(|j| j.read(headers).has(CookieKind::AccessToken))
            .unwrap_or(self)
    }

    /// The jar of the session a request asks for: the named provider's (an unknown id is the
    /// SPA's mistake: 400), or [`SessionJar::default_for`] when it names none.
    pub fn requested(
        &self,
        id: Option<&str>,
        headers: &HeaderMap,
    ) -> Result<&SessionJar, ApiError> {
        match id {
            None => Ok(self.default_for(headers)),
            Some(id) => self.for_provider(id).ok_or_else(|| {
                ApiError::InvalidRequest(format!(
                    "no identity provider is configured with the id `{}`",
                    crate::oauth::http::safe_code(id)
                ))
            }),
        }
    }

    /// Names, paths and attributes of the cookies.
    pub fn policy(&self) -> &CookiePolicy {
        &self.policy
    }

    /// The key ring's holder (key rotation replaces its ring).
    pub fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    /// The clock the jar checks sealed expiry with.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The idle and absolute lifetimes of sessions.
    pub fn lifetimes(&self) -> &Lifetimes {
        &self.lifetimes
    }

    /// Our cookies in a request, read once.
    pub fn read<'r>(&self, headers: &'r HeaderMap) -> RequestCookies<'r> {
        self.policy.read(headers)
    }

    /// Unseals this kind's cookie, reporting how it failed. `Ok(None)` when the request has
    /// none. A value split over several cookies is reassembled first and opens only whole. When
    /// a request carries several cookies of the name (another path, or one planted by a sibling
    /// subdomain), the first that opens wins; planted ones cannot open
    /// ([`RequestCookies::sealed_values`] bounds how many combinations are tried).
    pub fn unseal<T: Opens>(
        &self,
        cookies: &RequestCookies<'_>,
        kind: CookieKind,
    ) -> Result<Option<T>, SealError> {
        let now = self.clock.now();
        let mut result = Ok(None);
        for value in cookies.sealed_values(kind) {
            let value = value.as_ref();
            match self.sealer.unseal(kind.purpose(), now, value) {
                Ok(v) => return Ok(Some(v)),
                Err(e) => {
                    self.count_unseal_failure(kind, value, &e);
                    result = Err(e)
                }
            }
        }
        result
    }

    /// [`SessionJar::unseal`], then the session's clocks: a cookie that opens but whose session
    /// is past its idle or absolute lifetime is refused as [`Closed::Ended`].
    fn unseal_session<T: Sealed>(
        &self,
        cookies: &RequestCookies<'_>,
        kind: CookieKind,
    ) -> Result<Option<T>, Closed> {
        let Some(value) = self.unseal::<T>(cookies, kind).map_err(Closed::Seal)? else {
            return Ok(None);
        };
        if let (Some(own), Some(sealed)) = (&self.provider, value.provider()) {
            if own != sealed {
                // Authentic, but another provider's session under this one's names (renamed,
                // or written before sessions were named per provider): refused like any
                // value that is not this cookie's.
                tracing::warn!(
                    cookie = %self.policy.name(kind),
                    "a session cookie holds another provider's session than its name says; refused"
                );
                return Err(Closed::Seal(SealError::Invalid));
            }
        }
        let times = value.times().unwrap_or_default();
        match self.lifetimes.ended(times, self.clock.now()) {
            None => Ok(Some(value)),
            Some(Ended::Idle) if self.kept_alive_by_csrf(cookies, &value) => Ok(Some(value)),
            Some(ended) => Err(Closed::Ended(ended)),
        }
    }

    /// Whether an access-token cookie past its idle time belongs to a browser session that is
    /// still active: its CSRF cookie (one per browser, renewed by calls to any provider's routes)
    /// opens, is of the same session, and is not idle. Without it, a user busy with one
    /// provider's APIs would find the session with another provider ended for idleness. Only
    /// read on this rare path; the next renewal re-seals the access-token cookie.
    fn kept_alive_by_csrf<T: Sealed>(&self, cookies: &RequestCookies<'_>, value: &T) -> bool {
        let Some(sid) = value.sid() else {
            return false;
        };
        let Ok(Some(csrf)) = self.unseal::<CsrfCookie>(cookies, CookieKind::Csrf) else {
            return false;
        };
        csrf.sid == *sid
            && self
                .lifetimes
                .ended(csrf.times().unwrap_or_default(), self.clock.now())
                .is_none()
    }

    /// Opens a session cookie the request may lack: `Ok(None)` when none was sent. A cookie
    /// that was sent but cannot be opened is an error, never taken for "none": a tampered
    /// ID-token cookie is not "no ID token", and a broken refresh-token cookie is not "no refresh
    /// token". Past its sealed expiry, or its session past its idle or absolute lifetime →
    /// `session_expired` (whose answers clear every cookie); altered, truncated, swapped or
    /// sealed with a key no longer configured → `unauthorized_request`.
    pub fn open<T: Sealed>(
        &self,
        cookies: &RequestCookies<'_>,
        kind: CookieKind,
    ) -> Result<Option<T>, ApiError> {
        match self.unseal_session(cookies, kind) {
            Ok(v) => Ok(v),
            Err(closed @ (Closed::Ended(_) | Closed::Seal(SealError::Expired))) => {
                // A session cookie's sealed expiry is its session's absolute end (or, sealed by
                // an earlier release, its old lifetime); a login's is its timeout.
                let reason = match closed {
                    Closed::Ended(ended) => Some(ended),
                    _ if kind != CookieKind::Login => Some(Ended::Absolute),
                    _ => None,
                };
                if let Some(reason) = reason {
                    tracing::info!(reason = reason.label(), "session over; cookies cleared");
                    crate::metrics::METRICS
                        .sessions_expired
                        .get_or_create(&crate::metrics::ReasonLabel {
                            reason: reason.label(),
                        })
                        .inc();
                }
                Err(ApiError::SessionExpired)
            }
            Err(Closed::Seal(_)) => Err(ApiError::Unauthorized(
                "a session cookie could not be read (it was altered, or sealed with a key that is no longer configured); sign in again",
            )),
        }
    }

    /// Opens a session cookie the request cannot do without: as [`SessionJar::open`], and none
    /// sent → `unauthorized_request`.
    pub fn open_required<T: Sealed>(
        &self,
        cookies: &RequestCookies<'_>,
        kind: CookieKind,
    ) -> Result<T, ApiError> {
        self.open(cookies, kind)?.ok_or_else(|| match &self.provider {
            Some(provider) => ApiError::NoSession {
                provider: provider.clone(),
            },
            None => ApiError::Unauthorized(
                "no session cookie was sent; sign in first (and send requests with credentials included)",
            ),
        })
    }

    /// The cookie when it opens, `None` when it was not sent or cannot be opened: only for
    /// callers that must go on either way (logout clears what it cannot read; a login cookie
    /// that does not open is no login in progress).
    pub fn readable<T: Sealed>(&self, cookies: &RequestCookies<'_>, kind: CookieKind) -> Option<T> {
        self.unseal_session(cookies, kind).unwrap_or(None)
    }

    /// Seals a token response into the session cookies. Each opens until the session's absolute
    /// end (`absolute_lifetime` after `started_at`, which a refresh carries over and never
    /// moves); the access-token and CSRF cookies start the idle clock anew (a login or refresh
    /// answers a request of the user's).
    pub fn seal(&self, session: NewSession<'_>) -> Result<Vec<Cookie<'static>>, ApiError> {
        self.seal_at(session, self.clock.now())
    }

    /// [`SessionJar::seal`] as of `now` (the jar's clock, read by the caller), so an answer that
    /// reports when the session ends (`login/end`) tells exactly the times the cookies carry,
    /// not ones a second later.
    pub fn seal_at(
        &self,
        session: NewSession<'_>,
        now: i64,
    ) -> Result<Vec<Cookie<'static>>, ApiError> {
        let started_at = session.started_at.unwrap_or(now);
        let until = self.lifetimes.absolute_end(started_at);
        let received = session.received.unwrap_or_else(|| Received {
            at: now,
            expires_at: access_token_expiry(session.tokens, now),
        });
        let mut out = self.policy.seal(
            &self.sealer,
            CookieKind::AccessToken,
            until,
            &AccessTokenCookie {
                provider: session.provider.into(),
                token: session.tokens.access_token.clone(),
                expires_at: received.expires_at,
                received_at: received.at,
                sid: session.sid.clone(),
                started_at: Some(started_at),
                active_at: Some(now),
                sub: session.sub.as_deref().map(Into::into),
                op_sid: session.op_sid.as_deref().map(Into::into),
            },
        )?;
        let refresh = session
            .tokens
            .refresh_token
            .clone()
            .or(session.previous_refresh_token);
        if let Some(token) = refresh {
            out.extend(self.policy.seal(
                &self.sealer,
                CookieKind::RefreshToken,
                until,
                &RefreshTokenCookie {
                    provider: session.provider.to_string(),
                    token,
                    sub: session.sub.clone(),
                    sid: session.sid.clone(),
                    started_at: Some(started_at),
                    op_sid: session.op_sid.clone(),
                },
            )?);
        }
        if let Some(id_token) = &session.tokens.id_token {
            out.extend(self.policy.seal(
                &self.sealer,
                CookieKind::IdToken,
                until,
                &IdTokenCookie {
                    provider: session.provider.to_string(),
                    token: id_token.clone(),
                    sid: session.sid.clone(),
                    started_at: Some(started_at),
                },
            )?);
        }
        if let Some(csrf) = session.csrf {
            out.extend(self.policy.seal(
                &self.sealer,
                CookieKind::Csrf,
                until,
                &CsrfCookie {
                    token: csrf.clone(),
                    sid: session.sid.clone(),
                    started_at: Some(started_at),
                    active_at: Some(now),
                },
            )?);
        }
        self.persist(&mut out, started_at, now)?;
        Ok(out)
    }

    /// Whether `name` is (a chunk of) this jar's refresh-token cookie.
    pub fn is_refresh_cookie(&self, name: &str) -> bool {
        let rt = self.policy.name(CookieKind::RefreshToken);
        name.strip_prefix(rt)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
    }

    /// The refresh-token cookie re-sealed with `token`, everything else as it was: for a grant
    /// other than the session's own refresh that rotated the refresh token (a resource-indicator
    /// grant for a narrowed route token, RFC 8707 §2.2), so the session keeps the live one.
    pub fn reseal_refresh_token(
        &self,
        rt: &RefreshTokenCookie,
        token: crate::secret::Token,
    ) -> Result<Vec<Cookie<'static>>, ApiError> {
        let now = self.clock.now();
        let started_at = self.lifetimes.started(rt.times().unwrap_or_default(), now);
        let mut out = self.policy.seal(
            &self.sealer,
            CookieKind::RefreshToken,
            self.lifetimes.absolute_end(started_at),
            &RefreshTokenCookie {
                token,
                started_at: Some(started_at),
                ..rt.clone()
            },
        )?;
        self.persist(&mut out, started_at, now)?;
        Ok(out)
    }

    /// Whether a request at the jar's now should renew the idle clock of the session whose
    /// cookies tell these times ([`Lifetimes::renewal_due`]).
    pub fn renewal_due(&self, times: SessionTimes) -> bool {
        self.lifetimes.renewal_due(times, self.clock.now())
    }

    /// Renews the idle clock: the access-token and CSRF cookies (the ones at `cookies.path`,
    /// sent with every call) re-sealed as they are, with `active_at` now. The session's start
    /// and absolute end do not move; a session sealed before the clocks gets its start (now).
    /// `csrf` is `None` only when the request carries no CSRF cookie; it must be the same
    /// session's as `at` (the caller checks).
    pub fn renew(
        &self,
        at: &AccessTokenCookie,
        csrf: Option<&CsrfCookie>,
    ) -> Result<Vec<Cookie<'static>>, ApiError> {
        let now = self.clock.now();
        let mut times = at.times().unwrap_or_default();
        if let Some(csrf) = csrf {
            times = times.merge(csrf.times().unwrap_or_default());
        }
        let started_at = self.lifetimes.started(times, now);
        let until = self.lifetimes.absolute_end(started_at);
        let mut out = self.policy.seal(
            &self.sealer,
            CookieKind::AccessToken,
            until,
            &AccessTokenCookie {
                provider: at.provider.clone(),
                token: at.token.clone(),
                expires_at: at.expires_at,
                received_at: at.received_at,
                sid: at.sid.clone(),
                started_at: Some(started_at),
                active_at: Some(now),
                sub: at.sub.clone(),
                op_sid: at.op_sid.clone(),
            },
        )?;
        if let Some(csrf) = csrf {
            out.extend(self.policy.seal(
                &self.sealer,
                CookieKind::Csrf,
                until,
                &CsrfCookie {
                    token: csrf.token.clone(),
                    sid: csrf.sid.clone(),
                    started_at: Some(started_at),
                    active_at: Some(now),
                },
            )?);
        }
        self.persist(&mut out, started_at, now)?;
        Ok(out)
    }

    /// With `cookies.persistent`, gives every session cookie a `Max-Age` of the absolute
    /// lifetime left, so the browser keeps it across restarts, and never longer than the session
    /// can last. The chunks were cut with room for the attribute
    /// ([`crate::cookies::MAX_AGE_ROOM`]).
    fn persist(
        &self,
        cookies: &mut [Cookie<'static>],
        started_at: i64,
        now: i64,
    ) -> Result<(), ApiError> {
        let Some(max_age) = self.lifetimes.max_age(started_at, now) else {
            return Ok(());
        };
        for c in cookies.iter_mut() {
            c.set_max_age(actix_web::cookie::time::Duration::seconds(max_age));
            let size = c.to_string().len();
            if size > crate::cookies::MAX_COOKIE_BYTES {
                // Chunks keep room for the attribute (`MAX_AGE_ROOM`): a bug if reached.
                tracing::error!(cookie = %c.name(), size, "cookie too large for browsers");
                return Err(ApiError::Internal);
            }
        }
        Ok(())
    }

    /// Seals a login in progress into its own flow's cookie (named from its state,
    /// [`login_flow_id`]), opening until `login_timeout` after it started.
    pub fn seal_login(&self, login: &LoginState) -> Result<Vec<Cookie<'static>>, ApiError> {
        let expires = login.issued_at.saturating_add(self.login_timeout);
        let flow = login_flow_id(login.state.expose());
        self.policy
            .seal_login_flow(&self.sealer, &flow, expires, login)
    }

    /// The login in progress that a callback with this `state` answers: the cookie of the flow
    /// named from the state, or, for a login started before per-flow cookies (a rolling
    /// upgrade), the old single `-login` cookie. Either way the sealed state must equal the
    /// callback's, compared in constant time (RFC 6749 §10.12): the name only says where to
    /// look. A cookie that does not open (expired, altered, planted by a sibling subdomain) is
    /// no login in progress.
    pub fn find_login(&self, cookies: &RequestCookies<'_>, state: &str) -> LoginLookup {
        let open = |value: &str| self.open_login_value(value);
        let flow = login_flow_id(state);
        let flow_values = cookies
            .login_flows()
            .iter()
            .filter(|(f, _)| *f == flow)
            .map(|(_, v)| *v);
        for value in flow_values {
            if let Some(login) = open(value).filter(|l| l.state.ct_eq(state)) {
                return LoginLookup::Found {
                    login,
                    remove: self.policy.clear_login_flow(&flow),
                };
            }
        }
        // The pre-upgrade single login cookie (never split: login cookies fit one cookie).
        let old_values = cookies.sealed_values(CookieKind::Login);
        for value in &old_values {
            if let Some(login) = open(value).filter(|l| l.state.ct_eq(state)) {
                return LoginLookup::Found {
                    login,
                    remove: self.policy.clear(CookieKind::Login),
                };
            }
        }
        let pending = cookies
            .login_flows()
            .iter()
            .map(|(_, v)| *v)
            .chain(old_values.iter().map(|v| v.as_ref()))
            .any(|v| open(v).is_some());
        if pending {
            LoginLookup::OtherLogins
        } else {
            LoginLookup::NoLogin
        }
    }

    /// One login cookie's value opened, `None` when it does not open (counted in the unseal
    /// failure metric under the login cookie's name, as any other cookie).
    fn open_login_value(&self, value: &str) -> Option<LoginState> {
        let kind = CookieKind::Login;
        let e = match self.sealer.unseal(kind.purpose(), self.clock.now(), value) {
            Ok(login) => return Some(login),
            Err(e) => e,
        };
        self.count_unseal_failure(kind, value, &e);
        None
    }

    /// Counts a value that did not open, by the kind's base name (one series per kind, whatever
    /// the flow or chunk), why, and the listed key it names (never an id an attacker made up).
    fn count_unseal_failure(&self, kind: CookieKind, value: &str, error: &SealError) {
        crate::metrics::METRICS
            .unseal_failures
            .get_or_create(&crate::metrics::UnsealLabels {
                cookie: self.policy.name(kind).to_string(),
                reason: match error {
                    SealError::Expired => "expired",
                    _ => "invalid",
                },
                key_id: self
                    .sealer
                    .listed_key_id(value)
                    .unwrap_or_else(|| "unknown".into()),
            })
            .inc();
    }

    /// Cookies that remove the oldest logins in progress, so that with the one being started
    /// at most [`MAX_PENDING_LOGINS`] remain: a page that starts logins in a loop cannot grow
    /// the Cookie header without limit. Cookies that do not open (expired, altered, sealed with
    /// an unknown key) go first, then the longest-running ones by their sealed `issued_at`.
    /// Below the bound nothing is removed, not even unreadable cookies: one sealed by another
    /// replica with a key this one does not have yet is still a live login. The old single
    /// `-login` cookie (at most one, from before per-flow cookies) is not counted; it expires
    /// within `login_timeout`.
    pub fn prune_logins(&self, cookies: &RequestCookies<'_>) -> Vec<Cookie<'static>> {
        self.prune_logins_to(cookies, MAX_PENDING_LOGINS)
    }

    fn prune_logins_to(&self, cookies: &RequestCookies<'_>, max: usize) -> Vec<Cookie<'static>> {
        // One entry per flow id (a name can be sent twice: another path, or a planted copy):
        // the newest `issued_at` among its values that open, `None` when none opens.
        let mut flows: Vec<(&str, Option<i64>)> = Vec::new();
        for (flow, value) in cookies.login_flows() {
            let issued = self.open_login_value(value).map(|l| l.issued_at);
            match flows.iter_mut().find(|(f, _)| f == flow) {
                Some(entry) => entry.1 = entry.1.max(issued),
                None => flows.push((flow, issued)),
            }
        }
        let keep = max.saturating_sub(1);
        if flows.len() <= keep {
            return Vec::new();
        }
        // `None` sorts before any `Some`: unreadable first, then oldest (stable for ties).
        flows.sort_by_key(|(_, issued)| *issued);
        let excess = flows.len() - keep;
        tracing::info!(
            dropped = excess,
            limit = max,
            "too many logins in progress; the oldest are dropped"
        );
        flows[..excess]
            .iter()
            .flat_map(|(flow, _)| self.policy.clear_login_flow(flow))
            .collect()
    }

    /// Cookies that remove this kind at every path it is written at.
    pub fn clear(&self, kind: CookieKind) -> Vec<Cookie<'static>> {
        self.policy.clear(kind)
    }

    /// Cookies that remove every token-handler cookie everywhere: every provider's session
    /// (when called on the application's jar), the CSRF and login cookies.
    pub fn clear_all(&self) -> Vec<Cookie<'static>> {
        let mut out = self.policy.clear_all();
        out.extend(self.others.iter().flat_map(|j| j.policy.clear_session()));
        out
    }

    /// Cookies that remove this jar's provider's session cookies only (access, refresh and ID
    /// token at every path they are written at, and the narrowed tokens of the routes that use
    /// its session): a logout from one provider. The narrowed tokens go too, or a later login
    /// with this provider in the same browser (same session id) as another user could be
    /// forwarded the previous user's.
    pub fn clear_session(&self) -> Vec<Cookie<'static>> {
        let mut out = self.policy.clear_session();
        out.extend(
            self.policy
                .clear_narrowed_of(|route_provider| match route_provider {
                    None => self.default,
                    Some(id) => self.provider.as_deref().is_none_or(|own| own == id),
                }),
        );
        out
    }

    /// Whether the request carries the session of a provider other than `ended`'s, and the
    /// browser's session they share is still live (its CSRF cookie opens: past the idle or
    /// absolute lifetime, which every provider's session shares, none remains). Called on the
    /// application's jar.
    pub fn others_remain(&self, ended: &SessionJar, headers: &HeaderMap) -> bool {
        let other = self.provider_jars().any(|j| {
            j.provider_id() != ended.provider_id() && j.read(headers).has(CookieKind::AccessToken)
        });
        other
            && self
                .readable::<CsrfCookie>(&self.read(headers), CookieKind::Csrf)
                .is_some()
    }

    /// The answer to a session found over (`session_expired`) at the provider whose jar is
    /// `ended` (called on the application's jar): while the request carries another provider's
    /// live session, the error names the provider ([`ApiError::ProviderSessionExpired`]) and
    /// only that provider's cookies are removed, so the others (and the CSRF cookie they share)
    /// keep working; else `error` as it is, and every cookie removed ([`SessionJar::clear_all`]).
    pub fn session_over(
        &self,
        ended: &SessionJar,
        headers: &HeaderMap,
        error: ApiError,
    ) -> (ApiError, Vec<Cookie<'static>>) {
        if !self.others_remain(ended, headers) {
            return (error, self.clear_all());
        }
        let error = match (error, ended.provider_id()) {
            (ApiError::SessionExpired, Some(id)) => ApiError::ProviderSessionExpired {
                provider: id.to_string(),
            },
            (error, _) => error,
        };
        (error, ended.clear_session())
    }

    /// As [`SessionJar::clear_all`], plus the cookie of every login flow this request carried
    /// (their names are only known from the request; browsers send them to the login path only,
    /// elsewhere they expire with their short Max-Age).
    pub fn clear_all_sent(&self, cookies: &RequestCookies<'_>) -> Vec<Cookie<'static>> {
        let mut out = self.clear_all();
        out.extend(self.policy.clear_login_flows(cookies));
        out
    }
}

/// What a callback's `state` finds among the logins in progress ([`SessionJar::find_login`]).
#[derive(Debug)]
pub enum LoginLookup {
    /// The login this callback answers, and the cookies that remove it once it is over.
    Found {
        login: LoginState,
        remove: Vec<Cookie<'static>>,
    },
    /// Other logins are in progress, none with this state: left as they are, so a callback with
    /// a forged or stale state cannot end another tab's login.
    OtherLogins,
    /// No login in progress that opens.
    NoLogin,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::id_token::StepUp;
    use crate::secret::{random_token, Token};
    use crate::session::SessionId;
    use actix_web::http::header::{self, HeaderValue};

    fn jar() -> SessionJar {
        let toml = crate::config::test_toml("", crate::config::TEST_PROVIDER);
        let config = crate::config::Config::from_toml(&toml, Vec::new()).expect("valid");
        SessionJar::new(
            CookiePolicy::for_config(&config),
            Sealer::new(config.cookies.keys.clone()),
            Clock::default(),
            crate::session::Lifetimes::new(&config.cookies),
            Duration::from_secs(600),
        )
    }

    fn login(state: &str, issued_at: i64) -> LoginState {
        LoginState {
            provider: "default".into(),
            state: Token::new(state),
            nonce: random_token(),
            verifier: random_token(),
            issued_at,
            step_up: StepUp::default(),
            return_to: None,
        }
    }

    /// The Cookie header a browser sends back for these Set-Cookies.
    fn header_of(cookies: &[Cookie<'static>]) -> HeaderMap {
        let text = cookies
            .iter()
            .map(|c| format!("{}={}", c.name(), c.value()))
            .collect::<Vec<_>>()
            .join("; ");
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_str(&text).expect("header"),
        );
        headers
    }

    fn removed_names(cookies: &[Cookie<'static>]) -> Vec<String> {
        cookies
            .iter()
            .filter(|c| c.max_age() == Some(actix_web::cookie::time::Duration::ZERO))
            .map(|c| c.name().to_string())
            .collect()
    }

    #[test]
    fn each_login_has_its_own_cookie_named_from_its_state() {
        let jar = jar();
        let now = jar.clock().now();
        let a = jar.seal_login(&login("state-a", now)).expect("seal");
        let b = jar.seal_login(&login("state-b", now)).expect("seal");
        assert_eq!(a.len(), 1);
        assert_eq!(
            a[0].name(),
            format!("__Secure-th-login-{}", login_flow_id("state-a"))
        );
        assert_ne!(a[0].name(), b[0].name());
        assert_eq!(a[0].path(), Some("/oauth-agent/login"));
        assert_eq!(
            a[0].max_age(),
            Some(actix_web::cookie::time::Duration::seconds(600))
        );
        let both: Vec<_> = a.into_iter().chain(b).collect();
        let headers = header_of(&both);
        let cookies = jar.read(&headers);
        for state in ["state-a", "state-b"] {
            match jar.find_login(&cookies, state) {
                LoginLookup::Found { login, remove } => {
                    assert!(login.state.ct_eq(state));
                    // Removing it removes exactly this flow's cookie, at its path.
                    assert_eq!(
                        removed_names(&remove),
                        [format!("__Secure-th-login-{}", login_flow_id(state))]
                    );
                    assert_eq!(remove[0].path(), Some("/oauth-agent/login"));
                }
                other => panic!("{state}: {other:?}"),
            }
        }
        assert!(matches!(
            jar.find_login(&cookies, "state-c"),
            LoginLookup::OtherLogins
        ));
        assert!(matches!(
            jar.find_login(&jar.read(&HeaderMap::new()), "state-a"),
            LoginLookup::NoLogin
        ));
    }

    #[test]
    fn a_cookie_under_another_flows_name_does_not_answer_its_callback() {
        // A's sealed login copied under B's name: the name finds it, the sealed state refuses.
        let jar = jar();
        let now = jar.clock().now();
        let mut a = jar.seal_login(&login("state-a", now)).expect("seal");
        a[0].set_name(jar.policy().login_flow_name(&login_flow_id("state-b")));
        let headers = header_of(&a);
        assert!(matches!(
            jar.find_login(&jar.read(&headers), "state-b"),
            LoginLookup::OtherLogins
        ));
    }

    #[test]
    fn a_login_started_before_the_upgrade_still_completes() {
        // The old single `-login` cookie, as written before per-flow cookies.
        let jar = jar();
        let now = jar.clock().now();
        let old = jar
            .policy()
            .seal(
                jar.sealer(),
                CookieKind::Login,
                now + 600,
                &login("state-old", now),
            )
            .expect("seal");
        assert_eq!(old[0].name(), "__Secure-th-login");
        let headers = header_of(&old);
        let cookies = jar.read(&headers);
        assert!(cookies.login_flows().is_empty());
        match jar.find_login(&cookies, "state-old") {
            LoginLookup::Found { remove, .. } => {
                assert_eq!(removed_names(&remove), ["__Secure-th-login"])
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            jar.find_login(&cookies, "state-new"),
            LoginLookup::OtherLogins
        ));
    }

    #[test]
    fn ending_one_providers_session_removes_its_routes_narrowed_tokens_and_no_others() {
        let route = |path: &str, provider: &str| {
            format!(
                "[[routes]]\npath = \"{path}\"\nupstream = \"http://127.0.0.1:9\"\ntoken = \"resource\"\nresource = \"https://r.example\"\n{provider}"
            )
        };
        let drive = crate::config::TEST_PROVIDER
            .replace("\"default\"", "\"drive\"")
            .replace("login.example.com", "drive.example.com")
            .replace("www.example.com/", "www.example.com/drive");
        let toml = crate::config::test_toml(
            "",
            &format!(
                "{}{drive}{}{}{}",
                crate::config::TEST_PROVIDER,
                route("/orders", ""),
                route("/profile", "provider = \"default\"\n"),
                route("/files", "provider = \"drive\"\n"),
            ),
        );
        let config = crate::config::Config::from_toml(&toml, Vec::new()).expect("valid");
        let jar = SessionJar::new(
            CookiePolicy::for_config(&config),
            Sealer::new(config.cookies.keys.clone()),
            Clock::default(),
            crate::session::Lifetimes::new(&config.cookies),
            Duration::from_secs(600),
        )
        .with_providers("default", ["default", "drive"]);
        let narrowed_paths = |cookies: Vec<Cookie<'static>>| {
            let mut paths: Vec<String> = cookies
                .iter()
                .filter(|c| c.name().starts_with("__Secure-th-nt-"))
                .filter_map(|c| c.path().map(str::to_string))
                .collect();
            paths.sort();
            paths.dedup();
            paths
        };
        let drive = jar.for_provider("drive").expect("drive jar");
        // Named alike whichever provider's session the route uses, and ours (never forwarded).
        let files = drive.policy().narrowed_name("/files");
        assert_eq!(files, jar.policy().narrowed_name("/files"));
        assert!(files.starts_with("__Secure-th-nt-"), "{files}");
        assert!(drive.policy().is_ours(&files));
        // A later login with drive as someone else must not find the last user's `/files` token.
        assert_eq!(narrowed_paths(drive.clear_session()), ["/files"]);
        assert_eq!(narrowed_paths(jar.clear_session()), ["/orders", "/profile"]);
        assert_eq!(
            narrowed_paths(jar.clear_all()),
            ["/files", "/orders", "/profile"]
        );
    }

    #[test]
    fn a_providers_session_opens_only_in_its_own_jar_and_stays_alive_with_the_browsers() {
        let jar = jar().with_providers("default", ["default", "drive"]);
        let drive = jar.for_provider("drive").expect("drive jar");
        assert_eq!(drive.provider_id(), Some("drive"));
        assert_eq!(
            drive.policy().name(CookieKind::AccessToken),
            "__Host-th-at_drive"
        );
        assert!(jar.for_provider("nope").is_none());
        let now = jar.clock().now();
        let old = now - jar.lifetimes().idle - 10;
        let tokens: crate::oauth::token::TokenResponse =
            serde_json::from_value(serde_json::json!({"access_token": "at", "expires_in": 300}))
                .expect("tokens");
        let seal = |j: &SessionJar, provider, sid: &SessionId, csrf: Option<&Token>, at: i64| {
            j.seal_at(
                NewSession {
                    provider,
                    sid,
                    tokens: &tokens,
                    previous_refresh_token: None,
                    sub: None,
                    op_sid: None,
                    csrf,
                    received: None,
                    started_at: Some(old),
                },
                at,
            )
            .expect("seal")
        };
        let open_drive = |cookies: &[Cookie<'static>]| -> Result<AccessTokenCookie, ApiError> {
            let headers = header_of(cookies);
            drive.open_required(&drive.read(&headers), CookieKind::AccessToken)
        };
        let sid = SessionId::new();
        let csrf = random_token();
        // Drive's access-token cookie last renewed past the idle timeout; the browser's CSRF
        // cookie renewed now by calls to the default provider's routes.
        let drive_idle = seal(drive, "drive", &sid, None, old);
        let default_now = seal(&jar, "default", &sid, Some(&csrf), now);
        let both: Vec<Cookie<'static>> = drive_idle.iter().chain(&default_now).cloned().collect();
        assert_eq!(&*open_drive(&both).expect("kept alive").provider, "drive");
        // Alone, or with another session's CSRF cookie: idle is idle.
        let alone = open_drive(&drive_idle);
        assert!(matches!(alone, Err(ApiError::SessionExpired)), "{alone:?}");
        let other = seal(&jar, "default", &SessionId::new(), Some(&csrf), now);
        let spliced: Vec<Cookie<'static>> = drive_idle.iter().chain(&other).cloned().collect();
        let spliced = open_drive(&spliced);
        assert!(
            matches!(spliced, Err(ApiError::SessionExpired)),
            "{spliced:?}"
        );
        // The default provider's session renamed to drive's names: refused, never opened.
        let renamed: Vec<Cookie<'static>> = default_now
            .iter()
            .cloned()
            .map(|mut c| {
                if c.name() == "__Host-th-at" {
                    c.set_name("__Host-th-at_drive");
                }
                c
            })
            .collect();
        let renamed = open_drive(&renamed);
        assert!(
            matches!(renamed, Err(ApiError::Unauthorized(_))),
            "{renamed:?}"
        );
        // None sent: the error names the provider.
        let none = open_drive(&[]);
        assert!(
            matches!(&none, Err(ApiError::NoSession { provider }) if provider == "drive"),
            "{none:?}"
        );
    }

    #[test]
    fn the_number_of_logins_in_progress_is_bounded_oldest_first() {
        let jar = jar();
        let now = jar.clock().now();
        // Started at now-50, now-40, …, now-10 (in a shuffled order).
        let started = [30, 10, 50, 20, 40];
        let mut sent: Vec<Cookie<'static>> = started
            .iter()
            .flat_map(|age| {
                jar.seal_login(&login(&format!("s{age}"), now - age))
                    .expect("seal")
            })
            .collect();
        let name = |age: i64| format!("__Secure-th-login-{}", login_flow_id(&format!("s{age}")));
        // Below the bound (four sent, the fifth being started): nothing goes.
        let four = header_of(&sent[..4]);
        assert!(jar.prune_logins(&jar.read(&four)).is_empty());
        // Five sent: the oldest goes, so that with the new one five remain.
        let five = header_of(&sent);
        assert_eq!(
            removed_names(&jar.prune_logins(&jar.read(&five))),
            [name(50)]
        );
        // An unreadable and an expired one go before any live one.
        let mut garbage = sent[0].clone();
        garbage.set_name(jar.policy().login_flow_name("garbage"));
        garbage.set_value("not-sealed");
        sent.push(garbage);
        sent.extend(jar.seal_login(&login("expired", now - 601)).expect("seal"));
        let seven = header_of(&sent);
        let removed = removed_names(&jar.prune_logins(&jar.read(&seven)));
        assert_eq!(removed.len(), 3, "{removed:?}");
        assert!(removed.contains(&"__Secure-th-login-garbage".to_string()));
        assert!(removed.contains(&format!("__Secure-th-login-{}", login_flow_id("expired"))));
        assert_eq!(removed[2], name(50));
        // Whatever a page does, what is kept stays at the bound.
        for max in 1..=6 {
            let kept = 7 - jar.prune_logins_to(&jar.read(&seven), max).len();
            assert_eq!(kept, max.saturating_sub(1).min(7), "max {max}");
        }
    }
}
