//! Sessions against the real provider: how long they last and what the SPA can know of it.

use crate::helpers::*;
use crate::upstream::{Upstream, API_AUDIENCE};
use awc::http::Method;
use serde_json::{json, Value};
use token_handler::crypto::Purpose;
use token_handler::session::{AccessTokenCookie, CsrfCookie, RefreshTokenCookie};

// ---------------------------------------------------------------------------------------------
// Session lifetime: idle and absolute (issue 13, part 3).

const HOUR: i64 = 3600;

/// A provider whose JWT access tokens the upstream checks, whose ID tokens outlive the hours
/// these tests move our clock by (a refreshed ID token's `exp` is checked against our clock),
/// and whose access tokens live `access_token_ttl` seconds.
async fn provider(access_token_ttl: i64) -> TestProvider {
    TestProvider::start_with(json!({
        "jwtAccessTokens": {"audience": API_AUDIENCE},
        "accessTokenTtl": access_token_ttl,
        "idTokenTtl": 7 * 24 * HOUR,
    }))
    .await
}

struct Signed {
    op: TestProvider,
    app: TestApp,
    browser: Browser,
    /// The `login/end` answer.
    login: Resp,
}

/// Signed in through the proxy's app with `adjust`ed configuration (defaults: 8 h idle, 24 h
/// absolute, browser-session cookies).
async fn signed_in(access_token_ttl: i64, adjust: impl FnOnce(TestConfig) -> TestConfig) -> Signed {
    let op = provider(access_token_ttl).await;
    let upstream = Upstream::start(&op.issuer).await;
    let app = TestApp::spawn_with(&adjust(
        TestConfig::new(&op.issuer).proxy_to(&upstream.address),
    ))
    .await;
    let mut browser = app.browser();
    let login = browser.login("sam").await;
    assert_eq!(login.status, 200, "{:?}", login.body);
    Signed {
        op,
        app,
        browser,
        login,
    }
}

async fn api_call(browser: &mut Browser) -> Resp {
    browser.raw(Method::GET, "/api/items", None, &[]).await
}

/// Our own Set-Cookie headers in a response, by base name (`th-at`, …).
fn ours(resp: &Resp) -> Vec<String> {
    let mut names: Vec<String> = resp
        .set_cookies
        .iter()
        .filter_map(|s| actix_web::cookie::Cookie::parse(s.clone()).ok())
        .map(|c| base_name(c.name()).to_string())
        .filter(|n| n.starts_with("th-"))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Ours left in the browser (the upstream sets a cookie of its own).
fn ours_kept(browser: &Browser) -> Vec<String> {
    browser
        .jar
        .all()
        .iter()
        .map(|c| base_name(c.name()).to_string())
        .filter(|n| n.starts_with("th-"))
        .collect()
}

fn assert_session_over(resp: &Resp, browser: &Browser) {
    assert_eq!(resp.status, 401, "{:?}", resp.body);
    assert_eq!(resp.code(), "session_expired");
    assert!(
        ours_kept(browser).is_empty(),
        "cookies left: {:?}",
        ours_kept(browser)
    );
}

#[actix_web::test]
async fn the_absolute_lifetime_ends_a_session_despite_activity_and_refreshes() {
    let Signed {
        op,
        app,
        mut browser,
        ..
    } = signed_in(300, |c| c).await;
    let clock = &app.state.clock;
    let at: AccessTokenCookie = app.unseal(Purpose::AccessToken, &browser.jar.value("th-at"));
    let started = at.started_at.expect("a start");
    // Busy all day: a call every 3 hours (each one refreshes: the 5-minute token has expired),
    // and the SPA's own refreshes.
    for _ in 0..7 {
        clock.advance(3 * HOUR);
        let call = api_call(&mut browser).await;
        assert_eq!(call.status, 200, "{:?}", call.body);
        assert!(ours(&call).contains(&"th-auth".to_string()), "refreshed");
        assert_eq!(browser.post("/refresh", "").await.status, 204);
    }
    // Every refresh carried the start over; none moved it.
    let rt: RefreshTokenCookie = app.unseal(Purpose::RefreshToken, &browser.jar.value("th-auth"));
    assert_eq!(rt.started_at, Some(started));
    // (The SPA's refresh right after the proxy's shares its grant.)
    assert!(op.stats().await["refresh_grants"].as_i64().unwrap_or(0) >= 7);
    clock.advance(started + 24 * HOUR - 1 - clock.now());
    assert_eq!(api_call(&mut browser).await.status, 200);
    // 24 h after login: over, at the proxy and at every agent endpoint.
    let copy = browser.clone();
    clock.advance(1);
    let over = api_call(&mut browser).await;
    assert_session_over(&over, &browser);
    for (method, path) in [
        (Method::POST, "/refresh"),
        (Method::GET, "/userInfo"),
        (Method::GET, "/claims"),
        (Method::GET, "/session"),
        (Method::POST, "/login/end"),
    ] {
        let mut b = copy.clone();
        let body = json!({"pageUrl": "https://www.example.test/"}).to_string();
        let body = (method == Method::POST).then_some(body.as_str());
        let resp = b.request(method.clone(), path, body, &[]).await;
        assert_eq!(resp.code(), "session_expired", "{path}: {:?}", resp.body);
        assert!(ours_kept(&b).is_empty(), "{path} left {:?}", ours_kept(&b));
    }
}

#[actix_web::test]
async fn an_idle_session_ends_and_requests_renew_the_idle_clock() {
    let Signed {
        op: _op,
        app,
        mut browser,
        ..
    } = signed_in(30 * HOUR, TestConfig::metrics).await;
    let clock = &app.state.clock;
    let before = browser.clone();
    // A minute short of 8 idle hours: still signed in, and the call renews the idle clock.
    clock.advance(8 * HOUR - 60);
    let call = api_call(&mut browser).await;
    assert_eq!(call.status, 200, "{:?}", call.body);
    assert_eq!(ours(&call), ["th-at", "th-csrf"]);
    // A minute later the cookies as they were before that call are 8 hours idle: over, at the
    // proxy and at the agent endpoints, even those that read no Path=/ cookie of their own.
    clock.advance(60);
    let mut stale = before.clone();
    assert_session_over(&api_call(&mut stale).await, &stale);
    let mut stale = before.clone();
    assert_session_over(&stale.get("/claims").await, &stale);
    // The renewed session is not over, until 8 hours without a request.
    clock.advance(8 * HOUR - 120);
    let claims = browser.get("/claims").await;
    assert_eq!(claims.status, 200, "{:?}", claims.body);
    assert_eq!(ours(&claims), ["th-at", "th-csrf"]);
    clock.advance(8 * HOUR);
    assert_session_over(&api_call(&mut browser).await, &browser);

    let metrics = app.metrics_address.clone().expect("metrics listener");
    let mut resp = awc::Client::default()
        .get(format!("{metrics}/metrics"))
        .send()
        .await
        .expect("metrics");
    let text = String::from_utf8(resp.body().await.expect("body").to_vec()).expect("utf8");
    assert!(
        text.contains("token_handler_sessions_expired_total{reason=\"idle\"}"),
        "{text}"
    );
}

#[actix_web::test]
async fn renewal_rewrites_the_cookies_at_most_once_per_interval() {
    let Signed {
        op: _op,
        app,
        mut browser,
        ..
    } = signed_in(30 * HOUR, |c| c).await;
    let clock = &app.state.clock;
    let at: AccessTokenCookie = app.unseal(Purpose::AccessToken, &browser.jar.value("th-at"));
    let started = at.started_at.expect("a start");
    // A call every 30 minutes for 6 hours; with an 8 h idle timeout the clock is renewed once
    // 2 hours have passed since it was last written: at 2 h, 4 h and 6 h only.
    let mut renewed_at = Vec::new();
    let mut set_cookies = 0;
    for step in 1..=12 {
        clock.advance(HOUR / 2);
        let call = api_call(&mut browser).await;
        assert_eq!(call.status, 200, "{:?}", call.body);
        let written = ours(&call);
        set_cookies += call
            .set_cookies
            .iter()
            .filter(|c| base_name(c).starts_with("th-"))
            .count();
        if !written.is_empty() {
            assert_eq!(written, ["th-at", "th-csrf"], "only the Path=/ cookies");
            renewed_at.push(step);
        }
    }
    assert_eq!(renewed_at, [4, 8, 12]);
    assert_eq!(set_cookies, 6, "two cookies per renewal, none otherwise");
    // The renewal moved the idle clock, not the start.
    let at: AccessTokenCookie = app.unseal(Purpose::AccessToken, &browser.jar.value("th-at"));
    assert_eq!(at.started_at, Some(started));
    let active = at.active_at.expect("renewed");
    assert!(active >= started + 6 * HOUR && active < clock.now() + 1);
    let csrf: CsrfCookie = app.unseal(Purpose::Csrf, &browser.jar.value("th-csrf"));
    assert_eq!(csrf.active_at, Some(active));
    // Agent endpoints that count as activity renew too; session info does not.
    clock.advance(2 * HOUR);
    assert!(ours(&browser.get("/session").await).is_empty());
    assert_eq!(ours(&browser.get("/claims").await), ["th-at", "th-csrf"]);
}

#[actix_web::test]
async fn an_idle_session_cannot_be_revived_through_refresh() {
    let Signed {
        op,
        app,
        mut browser,
        ..
    } = signed_in(300, |c| c).await;
    app.state.clock.advance(8 * HOUR);
    let resp = browser.post("/refresh", "").await;
    assert_session_over(&resp, &browser);
    // Refused before any grant: the refresh token was never sent to the provider.
    assert_eq!(op.stats().await["refresh_grants"], 0);
}

#[actix_web::test]
async fn the_spa_can_read_when_the_session_ends_without_any_token() {
    let Signed {
        op: _op,
        app,
        mut browser,
        login,
    } = signed_in(300, |c| c.session_lifetimes("1h", "10h")).await;
    let clock = &app.state.clock;
    let now = clock.now();
    let ends = |body: &Value| {
        (
            body["expiresAt"].as_i64().expect("expiresAt"),
            body["idleExpiresAt"].as_i64().expect("idleExpiresAt"),
            body["absoluteExpiresAt"]
                .as_i64()
                .expect("absoluteExpiresAt"),
        )
    };
    // login/end tells it (allowing a second for the login's own time).
    let (exp, idle, absolute) = ends(&login.body);
    assert!(
        (now - 2..=now).contains(&(absolute - 10 * HOUR)),
        "{:?}",
        login.body
    );
    assert_eq!((exp, idle), (absolute - 9 * HOUR, absolute - 9 * HOUR));

    let info = browser.get("/session").await;
    assert_eq!(info.status, 200, "{:?}", info.body);
    assert_eq!(
        info.body,
        json!({"isLoggedIn": true, "expiresAt": exp, "idleExpiresAt": idle, "absoluteExpiresAt": absolute})
    );
    assert!(info.set_cookies.is_empty());
    // After activity the idle end moves, and a page load reports the renewed one.
    clock.advance(HOUR / 2);
    assert_eq!(api_call(&mut browser).await.status, 200);
    let page = browser
        .post(
            "/login/end",
            &json!({"pageUrl": "https://www.example.test/"}).to_string(),
        )
        .await;
    let at: AccessTokenCookie = app.unseal(Purpose::AccessToken, &browser.jar.value("th-at"));
    let renewed = at.active_at.expect("renewed");
    assert!(renewed >= now + HOUR / 2, "the call renewed the idle clock");
    let (_, idle_after, absolute_after) = ends(&page.body);
    assert_eq!((idle_after, absolute_after), (renewed + HOUR, absolute));
    assert_eq!(ends(&browser.get("/session").await.body), ends(&page.body));
    // Kept busy until near the absolute end, it is the earlier of the two.
    while clock.now() < absolute - HOUR / 2 {
        clock.advance(HOUR / 3);
        assert_eq!(api_call(&mut browser).await.status, 200);
    }
    let late = browser.get("/session").await;
    assert_eq!(late.body["expiresAt"], absolute, "{:?}", late.body);
    assert!(late.body["idleExpiresAt"].as_i64() > Some(absolute));

    // Signed out: no times. Another site: refused like every agent endpoint.
    let mut stranger = app.browser();
    assert_eq!(
        stranger.get("/session").await.body,
        json!({"isLoggedIn": false})
    );
    let mut foreign = browser.clone();
    foreign.origin = Some("https://evil.example".into());
    let refused = foreign.get("/session").await;
    assert_eq!(refused.status, 401, "{:?}", refused.body);
    assert!(refused.header("access-control-allow-origin").is_none());
    // Only the method it serves.
    assert_eq!(browser.post("/session", "").await.status, 405);
}

#[actix_web::test]
async fn persistent_cookies_last_the_absolute_lifetime_left() {
    let max_ages = |resp: &Resp| -> Vec<(String, Option<i64>)> {
        resp.set_cookies
            .iter()
            .filter_map(|s| actix_web::cookie::Cookie::parse(s.clone()).ok())
            .filter(|c| ["th-at", "th-csrf", "th-auth", "th-id"].contains(&base_name(c.name())))
            .map(|c| {
                (
                    base_name(c.name()).to_string(),
                    c.max_age().map(|m| m.whole_seconds()),
                )
            })
            .collect()
    };
    // Off by default: browser-session cookies.
    let Signed { op: _op, login, .. } = signed_in(300, |c| c).await;
    let written = max_ages(&login);
    assert!(written.len() >= 4, "{written:?}");
    assert!(written.iter().all(|(_, m)| m.is_none()), "{written:?}");

    let Signed {
        op: _op,
        app,
        mut browser,
        login,
    } = signed_in(300, TestConfig::persistent).await;
    let written = max_ages(&login);
    assert!(written.len() >= 4, "{written:?}");
    // The login's own second may pass between sealing and reading the clock.
    for (name, max_age) in &written {
        assert_eq!(*max_age, Some(24 * HOUR), "{name}");
    }
    app.state.clock.advance(HOUR);
    let refreshed = browser.post("/refresh", "").await;
    assert_eq!(refreshed.status, 204);
    for (name, max_age) in max_ages(&refreshed) {
        let m = max_age.unwrap_or_else(|| panic!("{name} has no Max-Age"));
        assert!((23 * HOUR - 5..=23 * HOUR).contains(&m), "{name}: {m}");
    }
}

/// Cookies sealed by the release before the clocks (no `started_at`, no `active_at`) keep
/// working through a rolling upgrade: the first request stamps them, and the session ends
/// `absolute_lifetime` after that request.
#[actix_web::test]
async fn cookies_from_before_the_clocks_are_stamped_by_their_first_request() {
    let Signed {
        op: _op,
        app,
        mut browser,
        ..
    } = signed_in(30 * HOUR, |c| c).await;
    let sealer = app.state.jar.sealer();
    let far = app.state.clock.now() + 12 * HOUR;
    for (name, purpose) in [
        ("th-at", Purpose::AccessToken),
        ("th-csrf", Purpose::Csrf),
        ("th-auth", Purpose::RefreshToken),
        ("th-id", Purpose::IdToken),
    ] {
        let mut value: Value = app.unseal(purpose, &browser.jar.value(name));
        let fields = value.as_object_mut().expect("object");
        fields.remove("started_at");
        fields.remove("active_at");
        let old = sealer.seal(purpose, far, &value).expect("seal");
        browser.jar.set_value(name, &old);
    }
    let clock = &app.state.clock;
    clock.advance(HOUR);
    let stamped_at = clock.now();
    let call = api_call(&mut browser).await;
    assert_eq!(call.status, 200, "{:?}", call.body);
    assert_eq!(ours(&call), ["th-at", "th-csrf"]);
    let at: AccessTokenCookie = app.unseal(Purpose::AccessToken, &browser.jar.value("th-at"));
    assert_eq!(
        (at.started_at, at.active_at),
        (Some(stamped_at), Some(stamped_at))
    );
    // A refresh keeps that start (the refresh-token cookie still has none).
    assert_eq!(browser.post("/refresh", "").await.status, 204);
    let rt: RefreshTokenCookie = app.unseal(Purpose::RefreshToken, &browser.jar.value("th-auth"));
    assert_eq!(rt.started_at, Some(stamped_at));
}

/// A gateway's forward-auth checks are activity too: the renewal comes back as `Set-Cookie` and
/// as the numbered headers nginx copies (docs/gateways.md), at most once per interval, and an
/// idle session is refused with its cookies cleared.
#[actix_web::test]
async fn forward_auth_renews_the_idle_clock_and_ends_idle_sessions() {
    let Signed {
        op: _op,
        app,
        browser,
        ..
    } = signed_in(30 * HOUR, |c| c.forward_auth(&["/gw"])).await;
    let address = app
        .forward_auth_address
        .clone()
        .expect("forward-auth listener");
    // The gateway forwards the browser's cookies for /gw/…; the check is asked at /auth.
    let mut gateway = Browser::new(&address);
    gateway.jar = browser.jar.clone();
    // Each check sends the cookies as they were at login (the gateway's browser keeps them).
    let check = |gateway: &Browser| {
        let mut gateway = gateway.clone();
        async move {
            gateway
                .raw(Method::GET, "/auth", None, &[("x-forwarded-method", "GET")])
                .await
        }
    };
    let clock = &app.state.clock;
    clock.advance(HOUR);
    let quiet = check(&gateway).await;
    assert_eq!(quiet.status, 200, "{:?}", quiet.body);
    assert!(ours(&quiet).is_empty(), "not due yet");
    clock.advance(HOUR);
    let renewed = check(&gateway).await;
    assert_eq!(renewed.status, 200, "{:?}", renewed.body);
    assert_eq!(ours(&renewed), ["th-at", "th-csrf"]);
    let numbered: Vec<String> = (1..=2)
        .filter_map(|i| renewed.header(&format!("x-token-handler-set-cookie-{i}")))
        .map(|v| base_name(v.split('=').next().unwrap_or("")).to_string())
        .collect();
    assert_eq!(numbered, ["th-at", "th-csrf"]);
    assert!(renewed.header("x-token-handler-set-cookie-3").is_none());
    // The cookies as they were before the renewal go idle 8 hours after the login.
    clock.advance(6 * HOUR);
    let idle = check(&gateway).await;
    assert_eq!(idle.status, 401, "{:?}", idle.body);
    assert_eq!(idle.code(), "session_expired");
    let cleared: Vec<String> = ours(&idle);
    assert!(cleared.contains(&"th-at".to_string()), "{cleared:?}");
    assert!(idle.header("authorization").is_none());
}
