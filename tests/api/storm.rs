//! Issue 17: a refresh storm never stampedes the provider, and what a login costs us.
//!
//! Many sessions whose access tokens expire at the same moment all need a refresh grant at
//! once. `max_concurrent_calls` bounds the calls in flight to the provider; the calls beyond it
//! wait, none is refused. The provider counts the token requests in flight itself
//! (tests/oidc/inflight.mjs, each answer held back by `tokenDelayMs` so they overlap). The two
//! ignored tests are the benchmark's storm and login cost (scripts/bench-proxy.sh runs them in
//! release); they print figures and assert only correctness, never time.

use crate::helpers::*;
use crate::upstream::{Upstream, API_AUDIENCE};
use awc::http::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

async fn inflight(op: &TestProvider, reset: bool) -> Value {
    let client = awc::Client::default();
    let url = format!("{}/test/inflight", op.issuer);
    if reset {
        let resp = client
            .post(format!("{url}/reset"))
            .send()
            .await
            .expect("reset");
        assert_eq!(resp.status().as_u16(), 204);
        return Value::Null;
    }
    client
        .get(url)
        .send()
        .await
        .expect("inflight")
        .json()
        .await
        .expect("inflight json")
}

/// A provider with JWT access tokens the upstream verifies, and `extra` settings.
fn provider_config(extra: Value) -> Value {
    let mut config = json!({"jwtAccessTokens": {"audience": API_AUDIENCE}});
    if let (Some(c), Some(e)) = (config.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    config
}

/// `sessions` browsers signed in, `parallel` at a time.
async fn sign_in(app: &TestApp, sessions: usize, parallel: usize) -> Vec<Browser> {
    let mut browsers = Vec::with_capacity(sessions);
    for batch in (0..sessions).collect::<Vec<_>>().chunks(parallel) {
        let logins = batch.iter().map(|i| {
            let mut browser = app.browser();
            async move {
                let resp = browser.login(&format!("storm-{i}")).await;
                assert_eq!(resp.status, 200, "login {i}: {:?}", resp.body);
                browser
            }
        });
        browsers.extend(futures_util::future::join_all(logins).await);
    }
    browsers
}

/// Every browser makes `calls` proxied calls at once; returns each call's status and duration.
async fn storm(browsers: &[Browser], calls: usize) -> Vec<(u16, Duration, Value)> {
    let all = browsers.iter().flat_map(|browser| {
        (0..calls).map(move |_| {
            let mut b = browser.clone();
            async move {
                let started = Instant::now();
                let resp = b.raw(Method::GET, "/api/orders", None, &[]).await;
                (resp.status, started.elapsed(), resp.body)
            }
        })
    });
    futures_util::future::join_all(all).await
}

/// 16 sessions expire together and each makes 3 calls at once, with a bound of 3: the provider
/// never sees more than 3 token requests in flight, yet every call succeeds and each session
/// is refreshed exactly once. Without the bound the provider saw all 16 at once.
#[actix_web::test]
async fn a_refresh_storm_never_exceeds_the_providers_bound_and_no_call_fails() {
    let op = TestProvider::start_with(provider_config(json!({"tokenDelayMs": 40}))).await;
    let upstream = Upstream::start(&op.issuer).await;
    let app = TestApp::spawn_with(
        &TestConfig::new(&op.issuer)
            .proxy_to(&upstream.address)
            .provider(|p| p.max_concurrent_calls(3)),
    )
    .await;
    let browsers = sign_in(&app, 16, 4).await;
    let before = op.stats().await["refresh_grants"].as_u64().unwrap_or(0);
    inflight(&op, true).await;

    // The provider's access tokens live 300 s: every session is past its expiry at once.
    app.state.clock.advance(301);
    let results = storm(&browsers, 3).await;
    let failed: Vec<_> = results
        .iter()
        .filter(|(status, ..)| *status != 200)
        .map(|(status, _, body)| (status, body))
        .collect();
    let seen = inflight(&op, false).await;
    let stats = op.stats().await;
    assert!(
        failed.is_empty(),
        "failed calls: {failed:?}; provider: {stats}"
    );
    assert_eq!(
        stats["refresh_grants"].as_u64().unwrap_or(0) - before,
        16,
        "one grant per session: {stats}"
    );
    let max = seen["max"].as_u64().unwrap_or(u64::MAX);
    assert!(
        max <= 3,
        "the provider saw {max} token requests at once: {seen}"
    );
    assert!(
        max >= 2,
        "the calls never overlapped, the test proves nothing: {seen}"
    );
    assert_eq!(seen["requests"], 16, "{seen}");
    app.assert_alive().await;
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The benchmark's refresh storm (scripts/bench-proxy.sh; STORM_SESSIONS, default 50, and
/// STORM_CALLS, default 5): every session's token expires at once and each makes that many calls
/// in parallel, with the default bound (`max_concurrent_calls` = 32). Prints the grants, the
/// most token requests the provider saw at once, the storm's duration and the calls' p99.
///
/// Not 1,000 sessions by default: the test provider keeps grants in oidc-provider's development
/// store, an LRU of 1,000 entries (about 6 per session), which evicts refresh tokens beyond
/// ~160 sessions (`invalid_grant`, refresh token not found), and it exits after 300 s.
#[actix_web::test]
#[ignore = "a benchmark: run with scripts/bench-proxy.sh"]
async fn storm_benchmark() {
    let sessions = env_usize("STORM_SESSIONS", 50);
    let calls = env_usize("STORM_CALLS", 5);
    let op = TestProvider::start_with(provider_config(json!({}))).await;
    let upstream = Upstream::start(&op.issuer).await;
    let app = TestApp::spawn_with(&TestConfig::new(&op.issuer).proxy_to(&upstream.address)).await;
    let browsers = sign_in(&app, sessions, 16).await;
    let before = op.stats().await["refresh_grants"].as_u64().unwrap_or(0);
    inflight(&op, true).await;

    app.state.clock.advance(301);
    let started = Instant::now();
    let results = storm(&browsers, calls).await;
    let duration = started.elapsed();
    let failed = results.iter().filter(|(status, ..)| *status != 200).count();
    let stats = op.stats().await;
    let seen = inflight(&op, false).await;
    let grants = stats["refresh_grants"].as_u64().unwrap_or(0) - before;
    let mut times: Vec<Duration> = results.iter().map(|(_, d, _)| *d).collect();
    times.sort();
    let p99 = times[(times.len() * 99).div_ceil(100).saturating_sub(1)];
    println!(
        "storm: {sessions} sessions x {calls} calls: {grants} refresh grants, {failed} failed calls, at most {} token requests in flight at the provider (bound 32), {:.2} s, p99 {:.0} ms",
        seen["max"],
        duration.as_secs_f64(),
        p99.as_secs_f64() * 1000.0
    );
    assert_eq!(failed, 0, "{stats}");
    assert_eq!(grants, sessions as u64, "{stats}");
}

/// CPU time of token-handler's server threads in this process, in microseconds: under the
/// test's actix System each worker is an arbiter thread, `actix-rt|system:N|arbiter:M` (15
/// characters survive in `comm`: `actix-rt|system`), and connections are accepted on
/// `actix-server acceptor`. The test's own client and the provider calls made by
/// `run_until_stopped` run on the test's thread, whose CPU is not counted. (Outside an actix
/// System the workers would be `actix-server worker N`, which the same prefix test covers.)
fn worker_cpu_micros() -> u64 {
    let mut nanos = 0;
    let mut threads = 0;
    for task in std::fs::read_dir("/proc/self/task")
        .expect("tasks")
        .flatten()
    {
        let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if !(name.starts_with("actix-rt|system") || name.starts_with("actix-server")) {
            continue;
        }
        // The first field of schedstat: time spent on a CPU, in nanoseconds (stat's utime and
        // stime count 10 ms ticks, too coarse for a few hundred logins).
        let schedstat = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
        threads += 1;
        nanos += schedstat
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    // A filter that finds no thread would report 0 µs per login (it once did).
    assert!(
        threads > 0,
        "no token-handler server thread found in /proc/self/task"
    );
    nanos / 1000
}

/// The benchmark's login cost (scripts/bench-proxy.sh; LOGINS, default 200): CPU on
/// token-handler's side per complete login, `login/start` + `login/end` (code redemption and
/// ID-token verification with the JWKS already cached), against the real provider.
#[actix_web::test]
#[ignore = "a benchmark: run with scripts/bench-proxy.sh"]
async fn login_cost_benchmark() {
    let logins = env_usize("LOGINS", 200);
    let op = TestProvider::start().await;
    // Every login comes from one address: in a release build the default limit (a burst of 100
    // limited requests, two per login) refuses the benchmark's logins.
    let app =
        TestApp::spawn_with(&TestConfig::new(&op.issuer).login_rate_limit(1_000_000, 1_000_000))
            .await;
    // Discovery and the JWKS are fetched by the first logins.
    sign_in(&app, 5, 1).await;
    let before = worker_cpu_micros();
    sign_in(&app, logins, 1).await;
    let spent = worker_cpu_micros() - before;
    println!(
        "login: {} µs of token-handler CPU per login (login/start + login/end, cached JWKS), {logins} logins",
        spent / logins as u64
    );
}
