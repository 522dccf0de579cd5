//! Rate limits on starting and ending logins, per client address.
//!
//! `login/start` seals a cookie and may push an authorization request to the provider (PAR);
//! `login/end` redeems a code at the provider's token endpoint. Unlimited, either lets one client
//! spend our CPU and the provider's patience (providers rate-limit the *client*, so one abuser
//! could lock every user out). Each client address gets a token bucket per endpoint
//! (`[rate_limit] login_per_minute`, `login_burst`); past it the answer is `429
//! too_many_requests` with `Retry-After` (RFC 6585 §4), before any work.
//!
//! The client address is the connecting peer, unless that peer is one of
//! `server.trusted_proxies`: then it is the nearest `X-Forwarded-For` entry that is not itself a
//! trusted proxy (the one the outermost trusted proxy appended), so a client cannot pick its own
//! address by sending the header. IPv6 addresses count per /64, the block one host usually
//! gets. The buckets live in memory (per replica) and are swept every [`SWEEP`], so memory
//! stays bounded by the addresses seen within about a minute.

use crate::config::{LoginRate, ServerConfig};
use crate::error::ApiError;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderMap};
use actix_web::middleware::Next;
use actix_web::{web, ResponseError};
use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

/// How often buckets that have refilled are dropped.
pub const SWEEP: Duration = Duration::from_secs(60);

/// The rate-limited endpoints; each has its own bucket per address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LoginStep {
    Start,
    End,
}

/// The per-address login limiter; does nothing when `[rate_limit] login_per_minute = 0`.
pub struct LoginLimiter {
    limiter: Option<DefaultKeyedRateLimiter<(LoginStep, IpAddr)>>,
}

impl std::fmt::Debug for LoginLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginLimiter")
            .field("on", &self.limiter.is_some())
            .finish()
    }
}

impl LoginLimiter {
    pub fn new(rate: Option<LoginRate>) -> Self {
        Self {
            limiter: rate
                .map(|r| RateLimiter::keyed(Quota::per_minute(r.per_minute).allow_burst(r.burst))),
        }
    }

    /// Takes one call from this address's bucket, or says how long until one is available.
    pub fn check(&self, step: LoginStep, client: IpAddr) -> Result<(), Duration> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        limiter
            .check_key(&(step, bucket_address(client)))
            .map_err(|not_until| not_until.wait_time_from(limiter.clock().now()))
    }

    /// Drops the buckets that are full again (indistinguishable from new ones).
    pub fn sweep(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// How many addresses are tracked (for tests and debugging).
    pub fn tracked(&self) -> usize {
        self.limiter.as_ref().map_or(0, |l| l.len())
    }
}

/// The address a bucket is kept for: IPv4 as is (IPv4-mapped IPv6 counts as IPv4), IPv6 by /64.
fn bucket_address(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

/// One `X-Forwarded-For` element: an address, possibly with a port (`1.2.3.4:5`, `[::1]:5`).
fn parse_forwarded(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))
}

/// The client's address: the peer, or, when the peer is a trusted proxy, the nearest
/// `X-Forwarded-For` entry (right to left) that is not a trusted proxy. An entry that does not
/// parse stops the walk at the last address known to be good.
pub fn client_address(peer: IpAddr, headers: &HeaderMap, server: &ServerConfig) -> IpAddr {
    let mut client = peer;
    if !server.trusts(peer) {
        return client;
    }
    let lines: Vec<&str> = headers
        .get_all(header::X_FORWARDED_FOR)
        .filter_map(|v| v.to_str().ok())
        .collect();
    for entry in lines.iter().rev().flat_map(|l| l.rsplit(',')) {
        match parse_forwarded(entry) {
            Some(ip) => {
                client = ip;
                if !server.trusts(ip) {
                    break;
                }
            }
            None => break,
        }
    }
    client
}

/// Middleware for `login/start` and `login/end` (and the server-side `GET /login` and
/// callback, which count as them): 429 with `Retry-After` past the limit.
pub async fn limit_login(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let state = crate::state::of(req.request());
    // The server-side callback redeems a code as login/end does, so it shares that bucket.
    let is_callback = state
        .as_ref()
        .and_then(|s| s.config.server.callback_path.as_deref())
        .is_some_and(|p| p == req.path());
    let step = if req.path().ends_with("/login/end") || is_callback {
        LoginStep::End
    } else {
        LoginStep::Start
    };
    if let (Some(state), Some(peer)) = (state, req.peer_addr()) {
        let client = client_address(peer.ip(), req.headers(), &state.config.server);
        if let Err(wait) = state.login_limiter.check(step, client) {
            let retry_after_secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let error = ApiError::TooManyRequests {
                retry_after_secs: retry_after_secs.max(1),
            };
            tracing::info!(?step, %client, "login rate limit reached");
            return Ok(req
                .into_response(error.error_response())
                .map_into_right_body());
        }
    }
    Ok(next.call(req).await?.map_into_left_body())
}

/// Sweeps the buckets every [`SWEEP`] until the server stops.
pub async fn sweep(live: web::Data<crate::state::LiveState>) {
    loop {
        actix_web::rt::time::sleep(SWEEP).await;
        // The current limiter: a reload that changes the rate replaces it.
        live.current().login_limiter.sweep();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::IpNet;
    use actix_web::http::header::{HeaderName, HeaderValue};
    use std::num::NonZeroU32;

    fn server(trusted: &[&str]) -> ServerConfig {
        ServerConfig {
            listen: "127.0.0.1:0".into(),
            base_path: crate::config::BasePath::parse("/oauth-agent").expect("valid"),
            workers: None,
            shutdown_grace: Duration::from_secs(1),
            trusted_proxies: trusted
                .iter()
                .map(|t| IpNet::parse(t).expect("valid"))
                .collect(),
            connect_timeout: Duration::from_secs(1),
            callback_path: None,
        }
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(
                HeaderName::from_static("x-forwarded-for"),
                HeaderValue::from_str(v).expect("valid"),
            );
        }
        h
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let s = server(&["10.0.0.0/8"]);
        let chain = xff(&["198.51.100.1, 203.0.113.9, 10.0.0.7"]);
        // An untrusted peer's header is ignored.
        assert_eq!(client_address(ip("192.0.2.1"), &chain, &s), ip("192.0.2.1"));
        // A trusted peer: the nearest entry that is not a trusted proxy; spoofed entries to its
        // left are not reached.
        assert_eq!(
            client_address(ip("10.0.0.1"), &chain, &s),
            ip("203.0.113.9")
        );
        // Several header lines form one list; ports are ignored.
        let lines = xff(&["198.51.100.1", "203.0.113.9:4711, [2001:db8::1]:80"]);
        assert_eq!(
            client_address(ip("10.0.0.1"), &lines, &s),
            ip("2001:db8::1")
        );
        // Garbage stops the walk at the last good address; no header means the peer.
        let bad = xff(&["203.0.113.9, junk, 10.0.0.8"]);
        assert_eq!(client_address(ip("10.0.0.1"), &bad, &s), ip("10.0.0.8"));
        assert_eq!(
            client_address(ip("10.0.0.1"), &HeaderMap::new(), &s),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn buckets_are_per_address_per_step_and_ipv6_per_64() {
        let rate = LoginRate {
            per_minute: NonZeroU32::new(1).expect("non-zero"),
            burst: NonZeroU32::new(2).expect("non-zero"),
        };
        let limiter = LoginLimiter::new(Some(rate));
        let a = ip("203.0.113.1");
        assert!(limiter.check(LoginStep::Start, a).is_ok());
        assert!(limiter.check(LoginStep::Start, a).is_ok());
        let wait = limiter.check(LoginStep::Start, a).expect_err("limited");
        assert!(wait > Duration::from_secs(50), "{wait:?}");
        assert!(limiter.check(LoginStep::End, a).is_ok());
        assert!(limiter.check(LoginStep::Start, ip("203.0.113.2")).is_ok());
        assert!(limiter
            .check(LoginStep::Start, ip("2001:db8:1:2::1"))
            .is_ok());
        assert!(limiter
            .check(LoginStep::Start, ip("2001:db8:1:2::ffff"))
            .is_ok());
        assert!(limiter
            .check(LoginStep::Start, ip("2001:db8:1:2:aaaa::1"))
            .is_err());
        assert!(limiter
            .check(LoginStep::Start, ip("::ffff:203.0.113.1"))
            .is_err());
        assert!(limiter.tracked() >= 4);
    }

    #[test]
    fn sweeping_forgets_addresses_whose_buckets_refilled() {
        let rate = LoginRate {
            per_minute: NonZeroU32::new(60_000).expect("non-zero"),
            burst: NonZeroU32::new(1).expect("non-zero"),
        };
        let limiter = LoginLimiter::new(Some(rate));
        for i in 0..100u8 {
            assert!(limiter
                .check(LoginStep::Start, IpAddr::from([192, 0, 2, i]))
                .is_ok());
        }
        assert_eq!(limiter.tracked(), 100);
        // One call per millisecond refills a bucket of one within a few milliseconds.
        std::thread::sleep(Duration::from_millis(20));
        limiter.sweep();
        assert_eq!(limiter.tracked(), 0);
    }

    #[test]
    fn no_rate_means_no_limit() {
        let limiter = LoginLimiter::new(None);
        for _ in 0..1000 {
            assert!(limiter.check(LoginStep::Start, ip("203.0.113.1")).is_ok());
        }
        limiter.sweep();
        assert_eq!(limiter.tracked(), 0);
    }
}
