//! The two clocks of a session: idle and absolute.
//!
//! A refresh grant used to be the only thing that moved a session's end (its cookies opened for
//! `session_lifetime` after they were written), so an active user whose access token outlived the
//! lifetime was logged out, while a refresh token that never expires (Google) gave a session
//! without end. Two clocks replace it, both sealed into the cookies, so no store is needed:
//!
//! - **absolute**: the moment of login (`started_at`) is sealed into every session cookie and
//!   carried over by every refresh and renewal; `absolute_lifetime` after it the session is over,
//!   whatever the activity. It is also the sealed expiry of every session cookie, so even a
//!   cookie no code path checks stops opening then.
//! - **idle**: the moment of the last renewal (`active_at`) is sealed into the access-token and
//!   CSRF cookies, the ones at `cookies.path` (Path `/`) that every API call and every agent
//!   call carries. The refresh-token cookie is path-scoped and never sent on API calls, so it
//!   cannot hold a clock that API calls renew; `/refresh` instead requires the CSRF cookie, whose
//!   idle clock it checks before any grant, so an idle session cannot be revived through it.
//!
//! Renewing rewrites two cookies, so it happens at most once per [`Lifetimes::renew_after`] (a
//! quarter of `idle_timeout`): an idle session ends between ¾ and all of `idle_timeout` after
//! its last request, and a busy SPA gets a `Set-Cookie` at most four times per idle period
//! instead of on every proxied call.
//!
//! Cookies sealed by a release before these clocks carry neither time (both `None`): such a
//! session is taken to start, and to have been active, at the first request this release sees,
//! and that request stamps both into the cookies it rewrites (it is due for renewal at once).
//! The cookie's own sealed expiry (the old `session_lifetime` after it was written) still
//! applies until then, so a rolling upgrade logs nobody out, and every session alive at the
//! upgrade ends at the latest `absolute_lifetime` after its first request to the new release.

use crate::config::CookieConfig;
use serde::Serialize;

/// When a session started and was last active (Unix seconds, our clock), as sealed in one of its
/// cookies. `None`: not carried by this cookie (the idle clock lives in the Path `/` cookies
/// only), or sealed before the clocks existed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionTimes {
    pub started_at: Option<i64>,
    pub active_at: Option<i64>,
}

impl SessionTimes {
    /// The times of one session as told by two of its cookies: the earliest start (an older copy
    /// of a cookie can only move the end closer), the latest activity that was sealed.
    pub fn merge(self, other: SessionTimes) -> SessionTimes {
        SessionTimes {
            started_at: earliest(self.started_at, other.started_at),
            active_at: self.active_at.max(other.active_at),
        }
    }
}

fn earliest(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Which clock ended a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Idle,
    Absolute,
}

impl Ended {
    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Ended::Idle => "idle",
            Ended::Absolute => "absolute",
        }
    }
}

/// When a session will end (Unix seconds, our clock): what `GET /session` and `login/end` tell
/// the SPA, so it can warn before a forced sign-in. Times only: nothing here is a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionEnd {
    /// The earlier of the two below: when the session ends if nothing else happens.
    pub expires_at: i64,
    /// When the session ends without another request (renewed by requests).
    pub idle_expires_at: i64,
    /// When the session ends whatever happens.
    pub absolute_expires_at: i64,
}

/// `cookies.idle_timeout`, `cookies.absolute_lifetime` and `cookies.persistent`, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    pub idle: i64,
    pub absolute: i64,
    pub persistent: bool,
}

impl Lifetimes {
    pub fn new(config: &CookieConfig) -> Self {
        let secs = |d: std::time::Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        Self {
            idle: secs(config.idle_timeout),
            absolute: secs(config.absolute_lifetime),
            persistent: config.persistent,
        }
    }

    /// How long after its last renewal the idle clock is renewed again: a quarter of the idle
    /// timeout (at least a second).
    pub fn renew_after(&self) -> i64 {
        (self.idle / 4).max(1)
    }

    /// The start of a session as written now: its sealed start, or `now` for a new session or
    /// one sealed before the clocks existed.
    pub fn started(&self, times: SessionTimes, now: i64) -> i64 {
        times.started_at.unwrap_or(now)
    }

    /// When a session that started at `started_at` ends whatever happens: the sealed expiry of
    /// every cookie written for it.
    pub fn absolute_end(&self, started_at: i64) -> i64 {
        started_at.saturating_add(self.absolute)
    }

    /// Whether, and by which clock, the session these times belong to is over at `now`. The
    /// absolute clock is checked first: it is the one no activity can move.
    pub fn ended(&self, times: SessionTimes, now: i64) -> Option<Ended> {
        if times
            .started_at
            .is_some_and(|s| self.absolute_end(s) <= now)
        {
            return Some(Ended::Absolute);
        }
        if times
            .active_at
            .is_some_and(|a| a.saturating_add(self.idle) <= now)
        {
            return Some(Ended::Idle);
        }
        None
    }

    /// Whether a request at `now` should rewrite the idle clock: a quarter of the idle timeout
    /// has passed since it was last written, or it was never written (older cookies).
    pub fn renewal_due(&self, times: SessionTimes, now: i64) -> bool {
        match (times.started_at, times.active_at) {
            (Some(_), Some(active)) => now.saturating_sub(active) >= self.renew_after(),
            _ => true,
        }
    }

    /// When the session ends, by each clock. Times not sealed (older cookies) count from `now`,
    /// as the next renewal will write them.
    pub fn end(&self, times: SessionTimes, now: i64) -> SessionEnd {
        let absolute = self.absolute_end(self.started(times, now));
        let idle = times.active_at.unwrap_or(now).saturating_add(self.idle);
        SessionEnd {
            expires_at: idle.min(absolute),
            idle_expires_at: idle,
            absolute_expires_at: absolute,
        }
    }

    /// The `Max-Age` of session cookies written at `now` for a session that started at
    /// `started_at`: the absolute lifetime left when `cookies.persistent` is on, none (a
    /// browser-session cookie) otherwise.
    pub fn max_age(&self, started_at: i64, now: i64) -> Option<i64> {
        self.persistent
            .then(|| self.absolute_end(started_at).saturating_sub(now).max(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Lifetimes = Lifetimes {
        idle: 8 * 3600,
        absolute: 24 * 3600,
        persistent: false,
    };

    fn at(started: i64, active: i64) -> SessionTimes {
        SessionTimes {
            started_at: Some(started),
            active_at: Some(active),
        }
    }

    #[test]
    fn the_absolute_clock_ends_a_session_however_active() {
        // Active a second ago, but 24 h after login: over.
        assert_eq!(L.ended(at(0, 86_399), 86_400), Some(Ended::Absolute));
        assert_eq!(L.ended(at(0, 86_399), 86_399), None);
        // A refresh-token or ID-token cookie carries only the start.
        let start_only = SessionTimes {
            started_at: Some(0),
            active_at: None,
        };
        assert_eq!(L.ended(start_only, 86_400), Some(Ended::Absolute));
        assert_eq!(L.ended(start_only, 86_399), None);
    }

    #[test]
    fn the_idle_clock_ends_a_session_without_requests() {
        assert_eq!(L.ended(at(0, 1000), 1000 + 8 * 3600 - 1), None);
        assert_eq!(L.ended(at(0, 1000), 1000 + 8 * 3600), Some(Ended::Idle));
        // Both passed: absolute is reported.
        assert_eq!(L.ended(at(0, 0), 90_000), Some(Ended::Absolute));
        // Extreme values do not overflow.
        assert_eq!(L.ended(at(i64::MAX, i64::MAX), i64::MAX - 1), None);
        assert_eq!(L.ended(at(i64::MIN, 0), 0), Some(Ended::Absolute));
    }

    #[test]
    fn renewal_is_due_once_a_quarter_of_the_idle_timeout_has_passed() {
        assert_eq!(L.renew_after(), 2 * 3600);
        assert!(!L.renewal_due(at(0, 1000), 1000 + 2 * 3600 - 1));
        assert!(L.renewal_due(at(0, 1000), 1000 + 2 * 3600));
        // Cookies sealed before the clocks: due at once, so the first request stamps them.
        assert!(L.renewal_due(SessionTimes::default(), 0));
        // A one-second idle timeout still waits a second.
        let tiny = Lifetimes { idle: 1, ..L };
        assert!(!tiny.renewal_due(at(0, 5), 5));
    }

    /// A session sealed by the release before the clocks opens, is not ended by them, and is
    /// taken to start at the first request the new release sees.
    #[test]
    fn cookies_without_clocks_count_from_the_first_request_seen() {
        let old = SessionTimes::default();
        assert_eq!(L.ended(old, i64::MAX), None);
        let end = L.end(old, 5000);
        assert_eq!(end.absolute_expires_at, 5000 + 24 * 3600);
        assert_eq!(end.idle_expires_at, 5000 + 8 * 3600);
        assert_eq!(end.expires_at, end.idle_expires_at);
    }

    #[test]
    fn the_end_is_the_earlier_clock() {
        let end = L.end(at(0, 80_000), 80_000);
        assert_eq!(end.absolute_expires_at, 86_400);
        assert_eq!(end.idle_expires_at, 80_000 + 8 * 3600);
        assert_eq!(end.expires_at, 86_400);
    }

    #[test]
    fn merged_times_keep_the_earliest_start_and_latest_activity() {
        let a = at(100, 500);
        let b = SessionTimes {
            started_at: Some(50),
            active_at: None,
        };
        assert_eq!(a.merge(b), at(50, 500));
        assert_eq!(
            SessionTimes::default().merge(SessionTimes::default()),
            SessionTimes::default()
        );
    }

    #[test]
    fn persistent_cookies_live_for_the_absolute_lifetime_left() {
        assert_eq!(L.max_age(0, 100), None);
        let p = Lifetimes {
            persistent: true,
            ..L
        };
        assert_eq!(p.max_age(0, 0), Some(86_400));
        assert_eq!(p.max_age(0, 3600), Some(82_800));
        assert_eq!(p.max_age(0, 90_000), Some(0));
    }
}

/// The clocks as the jar applies them: on every open, on every write.
#[cfg(test)]
mod jar_tests {
    use crate::clock::Clock;
    use crate::config::{test_toml, Config, TEST_PROVIDER};
    use crate::cookies::{CookieKind, CookiePolicy};
    use crate::crypto::Sealer;
    use crate::error::ApiError;
    use crate::oauth::token::TokenResponse;
    use crate::secret::Token;
    use crate::session::{
        AccessTokenCookie, CsrfCookie, Lifetimes, NewSession, RefreshTokenCookie, SessionId,
        SessionJar,
    };
    use actix_web::cookie::Cookie;
    use actix_web::http::header::{HeaderMap, HeaderValue, COOKIE};
    use std::time::Duration;

    fn jar(cookies: &str) -> SessionJar {
        let config = Config::from_toml(&test_toml(cookies, TEST_PROVIDER), Vec::new())
            .expect("valid configuration");
        SessionJar::new(
            CookiePolicy::for_config(&config),
            Sealer::new(config.cookies.keys.clone()),
            Clock::default(),
            Lifetimes::new(&config.cookies),
            Duration::from_secs(600),
        )
    }

    /// A browser's Cookie header for these Set-Cookies (one value per name: paths do not
    /// matter here).
    fn headers(cookies: &[Cookie<'static>]) -> HeaderMap {
        let mut seen = std::collections::HashSet::new();
        let pairs: Vec<String> = cookies
            .iter()
            .filter(|c| seen.insert(c.name().to_string()))
            .map(|c| format!("{}={}", c.name(), c.value()))
            .collect();
        let mut h = HeaderMap::new();
        h.insert(
            COOKIE,
            HeaderValue::from_str(&pairs.join("; ")).expect("header"),
        );
        h
    }

    fn login(jar: &SessionJar, started_at: Option<i64>) -> Vec<Cookie<'static>> {
        let tokens: TokenResponse = serde_json::from_value(serde_json::json!({
            "access_token": "at", "expires_in": 300, "refresh_token": "rt"
        }))
        .expect("tokens");
        jar.seal(NewSession {
            provider: "default",
            sid: &SessionId::new(),
            tokens: &tokens,
            previous_refresh_token: None,
            sub: None,
            op_sid: None,
            csrf: Some(&Token::new("csrf")),
            received: None,
            started_at,
        })
        .expect("seal")
    }

    fn open<T: crate::session::Sealed>(
        jar: &SessionJar,
        cookies: &[Cookie<'static>],
        kind: CookieKind,
    ) -> Result<Option<T>, ApiError> {
        let h = headers(cookies);
        jar.open(&jar.read(&h), kind)
    }

    /// The error code opening this kind of cookie gives, if any.
    fn refused(jar: &SessionJar, cookies: &[Cookie<'static>], kind: CookieKind) -> Option<String> {
        let opened = match kind {
            CookieKind::AccessToken => open::<AccessTokenCookie>(jar, cookies, kind).map(|_| ()),
            CookieKind::Csrf => open::<CsrfCookie>(jar, cookies, kind).map(|_| ()),
            _ => open::<RefreshTokenCookie>(jar, cookies, kind).map(|_| ()),
        };
        opened.err().map(|e| e.code().to_string())
    }

    #[test]
    fn no_session_cookie_opens_past_either_clock() {
        let jar = jar("idle_timeout = \"2h\"\nabsolute_lifetime = \"3h\"");
        let cookies = login(&jar, None);
        jar.clock().advance(7199);
        let at: AccessTokenCookie = open(&jar, &cookies, CookieKind::AccessToken)
            .expect("opens")
            .expect("sent");
        // Idle: the Path=/ cookies refuse; the refresh-token cookie has no idle clock of its own
        // (its endpoint checks the CSRF cookie's).
        jar.clock().advance(1);
        for kind in [CookieKind::AccessToken, CookieKind::Csrf] {
            let refusal = refused(&jar, &cookies, kind);
            assert_eq!(refusal.as_deref(), Some("session_expired"), "{kind:?}");
        }
        assert_eq!(refused(&jar, &cookies, CookieKind::RefreshToken), None);
        // A renewal just before the idle end keeps it going, but not past the absolute end.
        jar.clock().advance(-1);
        let csrf: CsrfCookie = open(&jar, &cookies, CookieKind::Csrf)
            .expect("opens")
            .expect("sent");
        let renewed = jar.renew(&at, Some(&csrf)).expect("renew");
        assert_eq!(renewed.len(), 2);
        jar.clock().advance(3000);
        let again: AccessTokenCookie = open(&jar, &renewed, CookieKind::AccessToken)
            .expect("renewed opens")
            .expect("sent");
        assert_eq!(again.started_at, at.started_at);
        let started = at.started_at.expect("stamped at login");
        jar.clock().advance(started + 3 * 3600 - jar.clock().now());
        // The renewed idle clock still runs: it is the absolute one that ends the session.
        let times = crate::session::Sealed::times(&again).expect("times");
        assert_eq!(
            jar.lifetimes().ended(times, jar.clock().now()),
            Some(super::Ended::Absolute)
        );
        for (kind, cookies) in [
            (CookieKind::AccessToken, &renewed),
            (CookieKind::RefreshToken, &cookies),
        ] {
            let refusal = refused(&jar, cookies, kind);
            assert_eq!(refusal.as_deref(), Some("session_expired"), "{kind:?}");
        }
    }

    #[test]
    fn a_write_keeps_the_sessions_start_and_its_sealed_expiry() {
        let jar = jar("");
        let started = jar.clock().now() - 20 * 3600;
        let cookies = login(&jar, Some(started));
        let at: AccessTokenCookie = open(&jar, &cookies, CookieKind::AccessToken)
            .expect("opens")
            .expect("sent");
        assert_eq!(at.started_at, Some(started));
        assert_eq!(at.active_at, Some(jar.clock().now()));
        // Sealed to open until the absolute end, and not a second longer.
        let value = cookies
            .iter()
            .find(|c| c.name() == jar.policy().name(CookieKind::RefreshToken))
            .expect("refresh-token cookie")
            .value()
            .to_string();
        let purpose = CookieKind::RefreshToken.purpose();
        let end = started + 24 * 3600;
        let sealer = jar.sealer();
        assert!(sealer
            .unseal::<RefreshTokenCookie>(purpose, end - 1, &value)
            .is_ok());
        assert!(sealer
            .unseal::<RefreshTokenCookie>(purpose, end, &value)
            .is_err());
        // No Max-Age unless persistent.
        assert!(cookies.iter().all(|c| c.max_age().is_none()));
        let persistent = self::jar("persistent = true");
        let cookies = login(&persistent, Some(persistent.clock().now() - 3600));
        for c in &cookies {
            if c.name() != persistent.policy().name(CookieKind::Login) {
                assert_eq!(
                    c.max_age().map(|m| m.whole_seconds()),
                    Some(23 * 3600),
                    "{c}"
                );
            }
        }
    }
}
