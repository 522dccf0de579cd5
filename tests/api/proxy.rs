//! The API proxy against a real upstream that verifies the provider's JWT access tokens.

use crate::helpers::*;
use crate::upstream::{Upstream, API_AUDIENCE, PAT_HEADER};
use awc::http::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use token_handler::crypto::{CookieKey, Purpose};
use token_handler::session::AccessTokenCookie;

fn jwt_provider(extra: Value) -> Value {
    let mut config = json!({"jwtAccessTokens": {"audience": API_AUDIENCE}});
    if let (Some(c), Some(e)) = (config.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    config
}

struct Setup {
    op: TestProvider,
    app: TestApp,
    browser: Browser,
}

async fn setup(provider: Value) -> Setup {
    setup_with(provider, |config| config).await
}

/// As [`setup`], with the configuration adjusted.
async fn setup_with(provider: Value, adjust: impl FnOnce(TestConfig) -> TestConfig) -> Setup {
    let op = TestProvider::start_with(jwt_provider(provider)).await;
    let upstream = Upstream::start(&op.issuer).await;
    let app = TestApp::spawn_with(&adjust(
        TestConfig::new(&op.issuer).proxy_to(&upstream.address),
    ))
    .await;
    let mut browser = app.browser();
    let resp = browser.login("pat").await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    Setup { op, app, browser }
}

/// Our own Set-Cookie headers in a response (the upstream sets cookies of its own).
fn ours(resp: &Resp) -> Vec<&String> {
    resp.set_cookies
        .iter()
        .filter(|c| base_name(c).starts_with("th-"))
        .collect()
}

fn header_values(echo: &Value, name: &str) -> Vec<String> {
    echo["headers"][name]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The upstream's JSON echo in a raw HTTP response.
fn echo_of(response: &str) -> Value {
    response
        .split_once("\r\n\r\n")
        .and_then(|(_, body)| serde_json::from_str(body).ok())
        .unwrap_or_else(|| panic!("no JSON echo in {response}"))
}

#[actix_web::test]
async fn proxied_calls_carry_the_bearer_token_and_nothing_of_ours() {
    let Setup {
        app, mut browser, ..
    } = setup(json!({})).await;
    let at: AccessTokenCookie = app.unseal(Purpose::AccessToken, &browser.jar.value("th-at"));
    browser.jar.store("other=1; Path=/", "/");
    let resp = browser
        .raw(
            Method::GET,
            "/api/orders/7?x=1&y=%20",
            None,
            &[
                ("authorization", "Basic c3B5OnNweQ=="),
                ("x-forwarded-for", "10.0.0.1"),
                ("accept", "application/json"),
                ("user-agent", "spa-test/1.0"),
            ],
        )
        .await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    let echo = &resp.body;
    // The client's own User-Agent, once (not joined by the HTTP client's default).
    assert_eq!(header_values(echo, "user-agent"), ["spa-test/1.0"]);
    assert_eq!(echo["sub"], "pat");
    assert_eq!(echo["path"], "/api/orders/7");
    assert_eq!(echo["query"], "x=1&y=%20");
    assert_eq!(
        header_values(echo, "authorization"),
        [format!("Bearer {}", at.token.expose())]
    );
    assert_eq!(header_values(echo, "cookie"), ["other=1"]);
    assert!(
        header_values(echo, "x-th-csrf").is_empty(),
        "CSRF header forwarded"
    );
    assert_eq!(header_values(echo, "x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(header_values(echo, "x-forwarded-proto"), ["http"]);
    assert_eq!(header_values(echo, "accept"), ["application/json"]);
    assert!(!header_values(echo, "x-forwarded-host").is_empty());
    // Hop-by-hop headers, including those the Connection header names, stop here (sent raw:
    // client libraries write their own Connection header).
    let request = format!(
        "GET /api/orders HTTP/1.1\r\nHost: x\r\nCookie: {}\r\nConnection: close, x-secret\r\nX-Secret: 1\r\nTE: trailers\r\nKeep-Alive: timeout=5\r\n\r\n",
        browser.jar.header_for("/api/orders")
    );
    let (status, text) = raw_http(&app.address, request.into_bytes()).await;
    assert_eq!(status, 200, "{text}");
    let lower = text.to_ascii_lowercase();
    assert!(
        !lower.contains("x-secret"),
        "Connection-listed header forwarded: {text}"
    );
    assert!(!lower.contains("\"te\""), "TE forwarded: {text}");
    // A GET sent without a body (no Content-Length, no Transfer-Encoding) goes on without one.
    let raw_echo = echo_of(&text);
    assert!(
        header_values(&raw_echo, "content-length").is_empty(),
        "{raw_echo}"
    );
    assert!(
        header_values(&raw_echo, "transfer-encoding").is_empty(),
        "{raw_echo}"
    );
    // A POST sent without a body goes on with an explicit zero length (RFC 9110 §8.6).
    let request = format!(
        "POST /api/orders HTTP/1.1\r\nHost: x\r\nCookie: {}\r\nx-th-csrf: {}\r\nConnection: close\r\n\r\n",
        browser.jar.header_for("/api/orders"),
        browser.csrf.as_deref().expect("csrf")
    );
    let (status, post_text) = raw_http(&app.address, request.into_bytes()).await;
    assert_eq!(status, 200, "{post_text}");
    let post_echo = echo_of(&post_text);
    assert_eq!(
        header_values(&post_echo, "content-length"),
        ["0"],
        "{post_echo}"
    );
    assert!(
        !lower.contains("keep-alive\":"),
        "Keep-Alive forwarded: {text}"
    );
    // The upstream's attempt to overwrite our cookie is dropped; its own cookie passes.
    assert!(resp.cookies_named("th-at").is_empty());
    assert_eq!(resp.cookies_named("upstream-session").len(), 1);
    // CORS is ours, not the upstream's wildcard.
    assert_eq!(
        resp.header("access-control-allow-origin").as_deref(),
        Some(SPA_ORIGIN)
    );
    assert_eq!(
        resp.header("access-control-allow-credentials").as_deref(),
        Some("true")
    );
}

#[actix_web::test]
async fn answers_come_back_with_the_upstreams_headers_and_nothing_invented() {
    let Setup {
        app, mut browser, ..
    } = setup(json!({})).await;
    // A 304 updates the browser's cached copy with the headers it carries (RFC 9111 §4.3.4): a
    // Content-Type the upstream never sent would replace the cached one.
    let resp = browser
        .raw(
            Method::GET,
            "/api/not-modified",
            None,
            &[("if-none-match", "\"v1\"")],
        )
        .await;
    assert_eq!(resp.status, 304);
    assert_eq!(resp.header("etag").as_deref(), Some("\"v1\""));
    assert_eq!(resp.header("content-type"), None);
    // A redirect to the upstream's own address points back through the route (the browser
    // cannot reach the upstream); other locations pass as sent.
    let resp = browser.raw(Method::GET, "/api/redirect", None, &[]).await;
    assert_eq!(resp.status, 302);
    assert_eq!(
        resp.header("location").as_deref(),
        Some("/api/orders/1?from=redirect")
    );
    for elsewhere in ["https://login.example.test/x", "/api/relative"] {
        let resp = browser
            .raw(
                Method::GET,
                &format!("/api/redirect?to={elsewhere}"),
                None,
                &[],
            )
            .await;
        assert_eq!(resp.status, 302);
        assert_eq!(resp.header("location").as_deref(), Some(elsewhere));
    }
    app.assert_alive().await;
}

#[actix_web::test]
async fn unsafe_methods_need_the_csrf_header_and_bodies_arrive_whole() {
    let Setup {
        app, mut browser, ..
    } = setup(json!({})).await;
    let body = "x".repeat(100_000);
    let resp = browser
        .raw(
            Method::POST,
            "/api/orders",
            Some(body.clone().into_bytes()),
            &[],
        )
        .await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    assert_eq!(resp.body["body_bytes"], 100_000);
    // curl sends `Expect: 100-continue` with bodies over 1 MB. token-handler answers the 100
    // itself; the upstream gets the body without the expectation.
    let request = format!(
        "PUT /api/orders HTTP/1.1\r\nHost: x\r\nCookie: {}\r\nx-th-csrf: {}\r\nContent-Length: 2000000\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n{}",
        browser.jar.header_for("/api/orders"),
        browser.csrf.as_deref().expect("csrf"),
        "y".repeat(2_000_000)
    );
    let (_, text) = raw_http(&app.address, request.into_bytes()).await;
    let last = text.trim_start_matches("HTTP/1.1 100 Continue\r\n\r\n");
    assert!(last.starts_with("HTTP/1.1 200"), "{text}");
    let echo = echo_of(last);
    assert_eq!(echo["body_bytes"], 2_000_000);
    assert!(header_values(&echo, "expect").is_empty(), "{echo}");
    // With no body to send, the HTTP client would refuse the expectation outright (a 502).
    let request = format!(
        "GET /api/orders HTTP/1.1\r\nHost: x\r\nCookie: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
        browser.jar.header_for("/api/orders"),
    );
    let (_, text) = raw_http(&app.address, request.into_bytes()).await;
    let last = text.trim_start_matches("HTTP/1.1 100 Continue\r\n\r\n");
    assert!(last.starts_with("HTTP/1.1 200"), "{text}");
    for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
        let mut no_csrf = browser.clone();
        no_csrf.csrf = None;
        let resp = no_csrf
            .raw(method.clone(), "/api/orders", Some(b"{}".to_vec()), &[])
            .await;
        assert_eq!(resp.status, 401, "{method}");
        assert_eq!(resp.code(), "unauthorized_request");
        assert_eq!(
            resp.header("access-control-allow-origin").as_deref(),
            Some(SPA_ORIGIN)
        );
    }
    // A foreign Origin is refused even on GET; a look-alike origin too.
    for origin in [
        "https://evil.example",
        "https://www.example.test.evil.example",
    ] {
        let mut foreign = browser.clone();
        foreign.origin = Some(origin.into());
        let resp = foreign.raw(Method::GET, "/api/orders", None, &[]).await;
        assert_eq!(resp.status, 401, "{origin}");
        assert!(resp.header("access-control-allow-origin").is_none());
    }
    // A preflight is answered by us, never forwarded.
    let resp = browser
        .raw(
            Method::OPTIONS,
            "/api/orders",
            None,
            &[
                ("access-control-request-method", "PUT"),
                (
                    "access-control-request-headers",
                    "content-type, x-th-csrf, x-request-id",
                ),
            ],
        )
        .await;
    assert_eq!(resp.status, 204);
    assert!(resp
        .header("access-control-allow-headers")
        .is_some_and(|h| h.contains("x-request-id")));
    app.assert_alive().await;
}

#[actix_web::test]
async fn requests_without_a_session_or_route_get_json_errors() {
    let Setup { app, .. } = setup(json!({})).await;
    let mut stranger = app.browser();
    let resp = stranger.raw(Method::GET, "/api/orders", None, &[]).await;
    assert_eq!(resp.status, 401);
    assert_eq!(resp.code(), "unauthorized_request");
    let resp = stranger.raw(Method::GET, "/nothing-here", None, &[]).await;
    assert_eq!(resp.status, 404);
    assert_eq!(resp.code(), "not_found");
    let resp = stranger.raw(Method::GET, "/apiary", None, &[]).await;
    assert_eq!(resp.status, 404);
}

#[actix_web::test]
async fn own_bearer_tokens_pass_only_where_the_route_allows_them() {
    let Setup { app, browser, .. } = setup(json!({})).await;
    let at: AccessTokenCookie = app.unseal(Purpose::AccessToken, &browser.jar.value("th-at"));
    let bearer = format!("Bearer {}", at.token.expose());
    let mut mobile = app.browser();
    mobile.origin = None;
    let resp = mobile
        .raw(
            Method::GET,
            "/mobile/orders",
            None,
            &[("authorization", &bearer)],
        )
        .await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    assert_eq!(resp.body["path"], "/orders", "strip_prefix");
    assert_eq!(
        header_values(&resp.body, "authorization"),
        std::slice::from_ref(&bearer)
    );
    // Without allow_bearer, a client's own Authorization header is never forwarded.
    let resp = mobile
        .raw(
            Method::GET,
            "/api/orders",
            None,
            &[("authorization", &bearer)],
        )
        .await;
    assert_eq!(resp.status, 401);
    assert_eq!(resp.code(), "unauthorized_request");
    // With a session cookie, the cookie's token wins over a client-sent header.
    let mut both = browser.clone();
    let resp = both
        .raw(
            Method::GET,
            "/api/orders",
            None,
            &[("authorization", "Bearer forged")],
        )
        .await;
    assert_eq!(resp.status, 200);
    assert_eq!(header_values(&resp.body, "authorization"), [bearer]);
}

#[actix_web::test]
async fn upstream_failures_say_which_side_failed() {
    let Setup {
        app, mut browser, ..
    } = setup(json!({})).await;
    let resp = browser.raw(Method::GET, "/down/x", None, &[]).await;
    assert_eq!(resp.status, 502, "{:?}", resp.body);
    assert_eq!(resp.code(), "upstream_unavailable");
    let start = Instant::now();
    let resp = browser.raw(Method::GET, "/api/slow", None, &[]).await;
    assert_eq!(resp.status, 504, "{:?}", resp.body);
    assert_eq!(resp.code(), "upstream_timeout");
    assert!(start.elapsed() < Duration::from_millis(2500));
    // The upstream's own 401 passes through unchanged.
    let resp = browser
        .raw(Method::GET, "/api/unauthorized", None, &[])
        .await;
    assert_eq!(resp.status, 401);
    assert_eq!(resp.body["error"], "upstream says no");
    assert_eq!(
        resp.header("www-authenticate").as_deref(),
        Some("Bearer error=\"insufficient_scope\"")
    );
    assert!(
        resp.cookies_named("th-at").is_empty(),
        "cookies must survive an upstream 401"
    );
    app.assert_alive().await;
}

#[actix_web::test]
async fn server_sent_events_are_flushed_as_they_arrive() {
    let Setup { app, browser, .. } = setup(json!({})).await;
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(20))
        .finish();
    let start = Instant::now();
    let mut resp = client
        .get(format!("{}/api/sse", app.address))
        .insert_header(("cookie", browser.jar.header_for("/api/sse")))
        .send()
        .await
        .expect("sse");
    assert_eq!(resp.status().as_u16(), 200);
    use futures_util::StreamExt;
    let first = resp.next().await.expect("a first event").expect("bytes");
    let first_at = start.elapsed();
    assert_eq!(&first[..], b"data: first\n\n");
    assert!(
        first_at < Duration::from_millis(2000),
        "first event after {first_at:?}"
    );
    let second = resp.next().await.expect("a second event").expect("bytes");
    assert_eq!(&second[..], b"data: second\n\n");
    assert!(start.elapsed() >= Duration::from_millis(2900));
}

#[actix_web::test]
async fn an_expired_access_token_is_refreshed_transparently() {
    let Setup {
        op,
        app,
        mut browser,
    } = setup_with(json!({"accessTokenTtl": 3}), |c| c.refresh_ahead("1s")).await;
    let first = browser.raw(Method::GET, "/api/orders", None, &[]).await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    assert!(
        first.cookies_named("th-at").is_empty(),
        "no refresh was due yet"
    );
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let second = browser.raw(Method::GET, "/api/orders", None, &[]).await;
    assert_eq!(second.status, 200, "{:?}", second.body);
    assert_ne!(
        first.body["token_jti"], second.body["token_jti"],
        "the same token was forwarded"
    );
    assert_eq!(
        second.cookies_named("th-at").len(),
        1,
        "new access-token cookie"
    );
    assert!(
        !second.cookies_named("th-auth").is_empty(),
        "refresh-token cookie rewritten"
    );
    assert_eq!(op.stats().await["refresh_grants"], 1);
    let third = browser.raw(Method::GET, "/api/orders", None, &[]).await;
    assert_eq!(third.body["token_jti"], second.body["token_jti"]);
    assert_eq!(op.stats().await["refresh_grants"], 1);
    drop(app);
}

#[actix_web::test]
async fn fifty_parallel_calls_at_expiry_cause_one_refresh_grant() {
    let Setup { op, app, browser } =
        setup(json!({"tokenEndpointDelayMs": 300, "rotateRefreshToken": true})).await;
    let before = op.stats().await["refresh_grants"].as_i64().unwrap_or(-1);
    assert_eq!(before, 0);
    // Our clock moves to 250 s into the 300 s token: inside the 60 s refresh-ahead window.
    app.state.clock.advance(250);
    let calls = (0..50).map(|_| {
        let mut b = browser.clone();
        async move { b.raw(Method::GET, "/api/orders", None, &[]).await }
    });
    let results = futures_util::future::join_all(calls).await;
    let mut jtis = std::collections::HashSet::new();
    for r in &results {
        assert_eq!(r.status, 200, "{:?}", r.body);
        jtis.insert(r.body["token_jti"].to_string());
    }
    let stats = op.stats().await;
    assert_eq!(
        stats["refresh_grants"], 1,
        "refresh grants at the provider: {stats}"
    );
    assert_eq!(
        stats["grant_errors"], 0,
        "replayed refresh tokens at the provider: {stats}"
    );
    assert_eq!(jtis.len(), 1, "every call carried the one new token");
    assert!(results.iter().all(|r| !r.cookies_named("th-at").is_empty()));
}

/// Short-lived tokens (5 s, under the default 60 s refresh-ahead window) and rotation with reuse
/// detection: twenty calls that still carry the old cookies arrive over two seconds, not at once.
/// The first refreshes; every later one must get that result, never redeem the spent refresh
/// token again (the provider would revoke the grant), and no call fails.
#[actix_web::test]
async fn stragglers_over_two_seconds_never_replay_a_rotated_refresh_token() {
    let Setup { op, app, browser } =
        setup(json!({"accessTokenTtl": 5, "rotateRefreshToken": true})).await;
    // Right after login a 5 s token is not due: the window is capped at half its lifetime.
    let mut fresh = browser.clone();
    let resp = fresh.raw(Method::GET, "/api/orders", None, &[]).await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    assert!(
        ours(&resp).is_empty(),
        "refreshed at once: {:?}",
        resp.set_cookies
    );
    assert_eq!(op.stats().await["refresh_grants"], 0);

    // Past its expiry by our clock: every call must be served with a refreshed token.
    app.state.clock.advance(6);
    let calls = (0..20u64).map(|i| {
        let mut b = browser.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(i * 100)).await;
            b.raw(Method::GET, "/api/orders", None, &[]).await
        }
    });
    let results = futures_util::future::join_all(calls).await;
    let failed: Vec<_> = results
        .iter()
        .filter(|r| r.status != 200)
        .map(|r| (r.status, r.body.clone()))
        .collect();
    let stats = op.stats().await;
    assert!(
        failed.is_empty(),
        "failed calls: {failed:?}; provider: {stats}"
    );
    assert_eq!(stats["refresh_grants"], 1, "provider: {stats}");
    assert_eq!(stats["grant_errors"], 0, "replayed refresh tokens: {stats}");
}

/// A straggler that picks up another request's refresh result 20 s after the grant gets cookies
/// that say the access token expires when the grant said, not 20 s later.
#[actix_web::test]
async fn a_shared_refresh_result_keeps_its_grants_expiry() {
    let Setup { op, app, browser } = setup(json!({"rotateRefreshToken": true})).await;
    let (mut first, mut straggler) = (browser.clone(), browser);
    app.state.clock.advance(250);
    let resp = first.raw(Method::GET, "/api/orders", None, &[]).await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    app.state.clock.advance(20);
    let shared = straggler.raw(Method::GET, "/api/orders", None, &[]).await;
    assert_eq!(shared.status, 200, "{:?}", shared.body);
    assert_eq!(
        shared.body["token_jti"], resp.body["token_jti"],
        "not shared"
    );
    let sealed = |r: &Resp| -> AccessTokenCookie {
        let written = r.cookies_named("th-at");
        assert_eq!(written.len(), 1, "{:?}", r.set_cookies);
        app.unseal(Purpose::AccessToken, written[0].value())
    };
    let (granted, picked_up) = (sealed(&resp), sealed(&shared));
    assert_eq!(picked_up.expires_at, granted.expires_at);
    assert_eq!(picked_up.received_at, granted.received_at);
    assert_eq!(op.stats().await["refresh_grants"], 1);
}

#[actix_web::test]
async fn a_failed_refresh_never_costs_a_working_session() {
    let Setup {
        op,
        app,
        mut browser,
    } = setup(json!({})).await;
    let first = browser.raw(Method::GET, "/api/orders", None, &[]).await;
    assert_eq!(first.status, 200);
    app.state.clock.advance(250);

    // The provider fails the refresh: the call goes on with the current token.
    op.fail_token_endpoint(503, 1).await;
    let resp = browser.raw(Method::GET, "/api/orders", None, &[]).await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    assert_eq!(resp.body["token_jti"], first.body["token_jti"]);
    assert!(
        ours(&resp).is_empty(),
        "cookies changed after a failed refresh"
    );

    // The refresh token is revoked: still fine while the access token lives.
    let rt: token_handler::session::RefreshTokenCookie =
        app.unseal(Purpose::RefreshToken, &browser.jar.value("th-auth"));
    op.revoke_directly(rt.token.expose()).await;
    let resp = browser.raw(Method::GET, "/api/orders", None, &[]).await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    assert!(ours(&resp).is_empty());

    // Expired access token plus rejected refresh token: the session is over.
    app.state.clock.advance(100);
    let resp = browser.raw(Method::GET, "/api/orders", None, &[]).await;
    assert_eq!(resp.status, 401, "{:?}", resp.body);
    assert_eq!(resp.code(), "session_expired");
    let left: Vec<_> = browser
        .jar
        .all()
        .iter()
        .filter(|c| base_name(c.name()).starts_with("th-"))
        .collect();
    assert!(left.is_empty(), "cookies left: {left:?}");
}

#[actix_web::test]
async fn a_provider_outage_is_a_502_not_a_logout() {
    let Setup {
        op,
        app,
        mut browser,
    } = setup(json!({})).await;
    app.state.clock.advance(400);
    op.stop().await;
    let resp = browser.raw(Method::GET, "/api/orders", None, &[]).await;
    assert_eq!(resp.status, 502, "{:?}", resp.body);
    assert_eq!(resp.code(), "authorization_server_error");
    assert!(ours(&resp).is_empty());
    assert!(!browser.jar.named("th-auth").is_empty());
}

#[actix_web::test]
async fn websockets_pass_through_authenticated_where_enabled() {
    use futures_util::{SinkExt, StreamExt};
    let Setup { app, browser, .. } = setup(json!({})).await;
    let ws_url = format!("{}/api/ws", app.address.replacen("http", "ws", 1));
    let cookies = browser.jar.header_for("/api/ws");
    let client = awc::Client::default();

    let (resp, mut framed) = client
        .ws(&ws_url)
        .origin(SPA_ORIGIN)
        .protocols(["chat.v1"])
        .set_header("cookie", cookies.as_str())
        .set_header("user-agent", "spa-test/1.0")
        .header("x-tag", "a")
        .header("x-tag", "b")
        .connect()
        .await
        .expect("handshake through the proxy");
    assert_eq!(resp.status().as_u16(), 101);
    assert_eq!(
        resp.headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok()),
        Some("chat.v1")
    );
    framed
        .send(awc::ws::Message::Text("hello".into()))
        .await
        .expect("send");
    match framed.next().await {
        Some(Ok(awc::ws::Frame::Text(t))) => assert_eq!(&t[..], b"pat: hello"),
        other => panic!("unexpected frame: {other:?}"),
    }
    // The handshake reached the upstream with the client's User-Agent alone, every value of a
    // repeated header, and none of our cookies.
    framed
        .send(awc::ws::Message::Text("headers".into()))
        .await
        .expect("send");
    let handshake: Value = match framed.next().await {
        Some(Ok(awc::ws::Frame::Text(t))) => serde_json::from_slice(&t).expect("JSON"),
        other => panic!("unexpected frame: {other:?}"),
    };
    assert_eq!(
        handshake["user-agent"],
        json!(["spa-test/1.0"]),
        "{handshake}"
    );
    assert_eq!(handshake["x-tag"], json!(["a", "b"]), "{handshake}");
    assert!(handshake.get("cookie").is_none(), "{handshake}");
    framed
        .send(awc::ws::Message::Close(None))
        .await
        .expect("close");

    // Cross-site WebSocket hijacking: no Origin, a foreign Origin, or no cookie is refused.
    let refused = |origin: Option<&'static str>, with_cookie: bool| {
        let mut req = client.ws(&ws_url);
        if let Some(o) = origin {
            req = req.origin(o);
        }
        if with_cookie {
            req = req.set_header("cookie", cookies.as_str());
        }
        req.connect()
    };
    for (origin, with_cookie) in [
        (None, true),
        (Some("https://evil.example"), true),
        (Some(SPA_ORIGIN), false),
    ] {
        match refused(origin, with_cookie).await {
            Err(awc::error::WsClientError::InvalidResponseStatus(status)) => {
                assert_eq!(status.as_u16(), 401, "{origin:?} {with_cookie}")
            }
            Err(e) => panic!("{origin:?}: unexpected error {e}"),
            Ok(_) => panic!("{origin:?} {with_cookie}: the upgrade went through"),
        }
    }
    // A route without `websocket = true` never upgrades.
    let plain = format!("{}/api/other", app.address.replacen("http", "ws", 1));
    let result = client
        .ws(&plain)
        .origin(SPA_ORIGIN)
        .set_header("cookie", browser.jar.header_for("/api/other").as_str())
        .connect()
        .await;
    assert!(result.is_err(), "a plain route upgraded a WebSocket");
    app.assert_alive().await;
}

/// A client's WebSocket connection (awc's `Framed`, whose crate is not a dependency here).
trait WsFramed:
    futures_util::Sink<awc::ws::Message, Error = awc::error::WsProtocolError>
    + futures_util::Stream<Item = Result<awc::ws::Frame, awc::error::WsProtocolError>>
    + Unpin
{
}

impl<T> WsFramed for T where
    T: futures_util::Sink<awc::ws::Message, Error = awc::error::WsProtocolError>
        + futures_util::Stream<Item = Result<awc::ws::Frame, awc::error::WsProtocolError>>
        + Unpin
{
}

/// A WebSocket through the proxy with the browser's cookies, checked to echo.
async fn open_websocket(app: &TestApp, browser: &Browser) -> impl WsFramed {
    use futures_util::{SinkExt, StreamExt};
    let (resp, mut framed) = awc::Client::default()
        .ws(format!("{}/api/ws", app.address.replacen("http", "ws", 1)))
        .origin(SPA_ORIGIN)
        .set_header("cookie", browser.jar.header_for("/api/ws").as_str())
        .connect()
        .await
        .expect("handshake through the proxy");
    assert_eq!(resp.status().as_u16(), 101);
    framed
        .send(awc::ws::Message::Text("hello".into()))
        .await
        .expect("send");
    match framed.next().await {
        Some(Ok(awc::ws::Frame::Text(t))) => assert_eq!(&t[..], b"pat: hello"),
        other => panic!("unexpected frame: {other:?}"),
    }
    framed
}

/// The close frame the socket receives within `within`, skipping pings.
async fn close_within(
    framed: &mut impl WsFramed,
    within: Duration,
) -> Option<awc::ws::CloseReason> {
    use futures_util::StreamExt;
    let next_close = async {
        loop {
            match framed.next().await {
                Some(Ok(awc::ws::Frame::Close(reason))) => return reason,
                Some(Ok(awc::ws::Frame::Ping(_) | awc::ws::Frame::Pong(_))) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    };
    tokio::time::timeout(within, next_close)
        .await
        .unwrap_or_else(|_| panic!("the WebSocket was still open after {within:?}"))
}

/// Waits (up to 3 s) until the upstream has received a close frame saying the client went away
/// because its access token expired.
async fn assert_upstream_told_going_away(browser: &mut Browser) {
    let want = json!({"code": 1001, "reason": "access token expired"});
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let resp = browser.raw(Method::GET, "/api/ws-closes", None, &[]).await;
        assert_eq!(resp.status, 200, "{:?}", resp.body);
        if resp.body.as_array().is_some_and(|a| a.contains(&want)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the upstream was not closed: {:?}",
            resp.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn assert_session_expired(reason: Option<awc::ws::CloseReason>) {
    let reason = reason.expect("a close reason");
    assert_eq!(u16::from(reason.code), 4401, "{reason:?}");
    assert_eq!(
        reason.description.as_deref(),
        Some("session expired: reconnect")
    );
}

#[actix_web::test]
async fn websockets_close_when_their_access_token_expires() {
    use futures_util::{SinkExt, StreamExt};
    // Two sessions: one whose provider issues 3 s access tokens, one with the usual 300 s.
    let mut short = setup(json!({"accessTokenTtl": 3})).await;
    let mut long = setup(json!({})).await;
    let mut short_ws = open_websocket(&short.app, &short.browser).await;
    let mut long_ws = open_websocket(&long.app, &long.browser).await;

    // The 3 s token's socket is closed by us, in real time, with the documented code.
    let opened = Instant::now();
    assert_session_expired(close_within(&mut short_ws, Duration::from_secs(8)).await);
    assert!(
        opened.elapsed() >= Duration::from_millis(500),
        "{:?}",
        opened.elapsed()
    );
    // The upstream's side was closed too, saying why.
    assert_upstream_told_going_away(&mut short.browser).await;

    // The 300 s token's socket is still open and relaying, also once the app's clock is
    // within its token's lifetime...
    long.app.state.clock.advance(200);
    long_ws
        .send(awc::ws::Message::Text("still there".into()))
        .await
        .expect("send");
    match long_ws.next().await {
        Some(Ok(awc::ws::Frame::Text(t))) => assert_eq!(&t[..], b"pat: still there"),
        other => panic!("the long-lived socket did not answer: {other:?}"),
    }
    // ... and closed as soon as that clock passes the token's expiry.
    long.app.state.clock.advance(101);
    assert_session_expired(close_within(&mut long_ws, Duration::from_secs(3)).await);
    assert_upstream_told_going_away(&mut long.browser).await;

    // Reconnecting is how the SPA continues: the handshake refreshes like any proxied request.
    let mut again = open_websocket(&short.app, &short.browser).await;
    again
        .send(awc::ws::Message::Close(None))
        .await
        .expect("close");
    short.app.assert_alive().await;
    long.app.assert_alive().await;
}

#[actix_web::test]
async fn forwarded_headers_are_believed_only_from_trusted_proxies() {
    let op = TestProvider::start_with(jwt_provider(json!({}))).await;
    let upstream = Upstream::start(&op.issuer).await;
    let spoof = [
        ("x-forwarded-for", "10.9.8.7"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "www.example.test"),
    ];
    for (trusted, want_for, want_proto, want_host) in [
        (false, "127.0.0.1", "http", None),
        (
            true,
            "10.9.8.7, 127.0.0.1",
            "https",
            Some("www.example.test"),
        ),
    ] {
        let mut config = TestConfig::new(&op.issuer).proxy_to(&upstream.address);
        if trusted {
            config = config.trusted_proxies(&["127.0.0.0/8"]);
        }
        let app = TestApp::spawn_with(&config).await;
        let mut browser = app.browser();
        assert_eq!(browser.login("fwd").await.status, 200);
        let resp = browser.raw(Method::GET, "/api/x", None, &spoof).await;
        assert_eq!(resp.status, 200, "{:?}", resp.body);
        assert_eq!(
            header_values(&resp.body, "x-forwarded-for"),
            [want_for],
            "trusted={trusted}"
        );
        assert_eq!(
            header_values(&resp.body, "x-forwarded-proto"),
            [want_proto],
            "trusted={trusted}"
        );
        let host = header_values(&resp.body, "x-forwarded-host");
        match want_host {
            Some(h) => assert_eq!(host, [h]),
            None => assert_ne!(host, ["www.example.test"], "a spoofed host was believed"),
        }
    }
}

#[actix_web::test]
async fn paths_that_could_leave_their_route_are_refused_before_the_upstream() {
    let Setup {
        app, mut browser, ..
    } = setup(json!({})).await;
    let cookies = browser.jar.header_for("/api/orders");
    let get = |path: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: t\r\nCookie: {cookies}\r\nConnection: close\r\n\r\n")
            .into_bytes()
    };
    // Each reads as `/api/admin` (or above) to Tomcat, Jetty, Spring or IIS.
    for path in [
        "/api/orders/..;/admin",
        "/api/orders/%2e%2e;/admin",
        "/api/orders/..%3b/admin",
        "/api/orders/%252e%252e/admin",
        "/api/orders/%c0%ae%c0%ae/admin",
        "/api/orders/%u002e%u002e/admin",
        "/api/orders/a%252fb",
    ] {
        let (status, text) = raw_http(&app.address, get(path)).await;
        assert_eq!(status, 400, "{path}: {text}");
        let body: Value = text
            .split_once("\r\n\r\n")
            .and_then(|(_, b)| serde_json::from_str(b).ok())
            .unwrap_or_else(|| panic!("{path}: no JSON body in {text}"));
        assert_eq!(body["code"], "invalid_request", "{path}");
        assert!(!text.contains("\"sub\""), "{path} reached the upstream");
    }
    // The same session still reaches the upstream on an ordinary path.
    let resp = browser.raw(Method::GET, "/api/orders/7", None, &[]).await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    app.assert_alive().await;
}

/// A path on the upstream's `/api/respond` (under `prefix`) that answers with these headers.
fn respond_with(prefix: &str, headers: &[&[u8]]) -> String {
    use percent_encoding::{percent_encode, NON_ALPHANUMERIC};
    let query: Vec<String> = headers
        .iter()
        .map(|h| format!("h={}", percent_encode(h, NON_ALPHANUMERIC)))
        .collect();
    format!("{prefix}/respond?{}", query.join("&"))
}

/// The provider, the upstream and token-handler with one more route, `/allowed` (to the
/// upstream's `/api`, prefix stripped) that lets `X-Real-IP` in and `X-Accel-Buffering` out.
async fn setup_with_allowed_route() -> (TestProvider, TestApp, Browser) {
    let op = TestProvider::start_with(jwt_provider(json!({}))).await;
    let upstream = Upstream::start(&op.issuer).await;
    let allowed = RouteConfig::new("/allowed", &format!("{}/api", upstream.address))
        .strip_prefix()
        .allow_headers(&["X-Real-IP", "x-accel-buffering"]);
    let app = TestApp::spawn_with(
        &TestConfig::new(&op.issuer)
            .route(allowed)
            .proxy_to(&upstream.address),
    )
    .await;
    let mut browser = app.browser();
    assert_eq!(browser.login("pat").await.status, 200);
    (op, app, browser)
}

#[actix_web::test]
async fn headers_that_instruct_another_server_are_withheld_both_ways() {
    let (_op, app, mut browser) = setup_with_allowed_route().await;
    let to_upstream = [
        ("x-original-url", "/admin"),
        ("x-rewrite-url", "/admin"),
        ("x-http-method-override", "DELETE"),
        ("x-http-method", "DELETE"),
        ("x-method-override", "DELETE"),
        ("x-real-ip", "10.9.8.7"),
        ("true-client-ip", "10.9.8.7"),
        ("x-client-ip", "10.9.8.7"),
        ("forwarded", "for=10.9.8.7;host=admin.internal"),
        ("x-request-id", "kept"),
    ];
    let from_upstream: [&[u8]; 5] = [
        b"X-Accel-Redirect: /internal/secret.pdf",
        b"X-Accel-Buffering: no",
        b"X-Accel-Limit-Rate: 1",
        b"X-Sendfile: /etc/passwd",
        b"X-Kept: yes",
    ];
    let resp = browser
        .raw(
            Method::GET,
            &respond_with("/api", &from_upstream),
            None,
            &to_upstream,
        )
        .await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    for (name, _) in &to_upstream[..9] {
        assert!(
            header_values(&resp.body, name).is_empty(),
            "{name} reached the upstream"
        );
    }
    assert_eq!(header_values(&resp.body, "x-request-id"), ["kept"]);
    for name in [
        "x-accel-redirect",
        "x-accel-buffering",
        "x-accel-limit-rate",
        "x-sendfile",
    ] {
        assert!(resp.header(name).is_none(), "{name} reached the client");
    }
    assert_eq!(resp.header("x-kept").as_deref(), Some("yes"));

    // A route lets through exactly the names it lists, in either direction.
    let resp = browser
        .raw(
            Method::GET,
            &respond_with("/allowed", &from_upstream),
            None,
            &to_upstream,
        )
        .await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    assert_eq!(resp.body["path"], "/api/respond");
    assert_eq!(header_values(&resp.body, "x-real-ip"), ["10.9.8.7"]);
    assert!(header_values(&resp.body, "x-original-url").is_empty());
    assert!(header_values(&resp.body, "forwarded").is_empty());
    assert_eq!(resp.header("x-accel-buffering").as_deref(), Some("no"));
    assert!(resp.header("x-accel-redirect").is_none());
    assert!(resp.header("x-sendfile").is_none());

    // The WebSocket handshake follows the same rules.
    use futures_util::{SinkExt, StreamExt};
    let (_, mut framed) = awc::Client::default()
        .ws(format!("{}/api/ws", app.address.replacen("http", "ws", 1)))
        .origin(SPA_ORIGIN)
        .set_header("cookie", browser.jar.header_for("/api/ws").as_str())
        .set_header("x-original-url", "/admin")
        .set_header("x-real-ip", "10.9.8.7")
        .connect()
        .await
        .expect("handshake through the proxy");
    framed
        .send(awc::ws::Message::Text("headers".into()))
        .await
        .expect("send");
    let handshake: Value = match framed.next().await {
        Some(Ok(awc::ws::Frame::Text(t))) => serde_json::from_slice(&t).expect("JSON"),
        other => panic!("unexpected frame: {other:?}"),
    };
    assert!(handshake.get("x-original-url").is_none(), "{handshake}");
    assert!(handshake.get("x-real-ip").is_none(), "{handshake}");
    assert!(handshake.get("authorization").is_some(), "{handshake}");
    app.assert_alive().await;
}

#[actix_web::test]
async fn the_upstream_cannot_plant_a_cookie_a_browser_would_store_under_our_names() {
    let Setup {
        app, mut browser, ..
    } = setup(json!({})).await;
    let csrf_cookie = browser.jar.value("th-csrf");
    let planted: [&[u8]; 7] = [
        // Nameless: the browser sends it back as `th-csrf=planted`.
        b"Set-Cookie: =th-csrf=planted; Path=/",
        b"Set-Cookie:  = th-at=planted",
        // A value that is not ASCII hid the name from the old filter.
        b"Set-Cookie: th-at=planted-caf\xc3\xa9; Path=/",
        b"Set-Cookie: th-csrf=planted\xff; Path=/",
        b"Set-Cookie: TH-at=planted",
        b"Set-Cookie: th-auth=planted",
        b"Set-Cookie: upstream-own=1; Path=/",
    ];
    let resp = browser
        .raw(Method::GET, &respond_with("/api", &planted), None, &[])
        .await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    let set_cookies: Vec<&[u8]> = resp
        .headers
        .get_all("set-cookie")
        .map(|v| v.as_bytes())
        .collect();
    assert!(
        !set_cookies
            .iter()
            .any(|c| c.windows(7).any(|w| w == b"planted")),
        "{:?}",
        set_cookies
            .iter()
            .map(|c| String::from_utf8_lossy(c))
            .collect::<Vec<_>>()
    );
    assert_eq!(set_cookies, [&b"upstream-own=1; Path=/"[..]]);
    assert_eq!(browser.jar.value("th-csrf"), csrf_cookie);
    app.assert_alive().await;
}

#[actix_web::test]
async fn shared_caches_never_store_a_cookie_authenticated_answer() {
    let op = TestProvider::start_with(jwt_provider(json!({}))).await;
    let upstream = Upstream::start(&op.issuer).await;
    let key = CookieKey::generate_text();
    let app = TestApp::spawn_with(
        &TestConfig::new(&op.issuer)
            .key(&key)
            .proxy_to(&upstream.address),
    )
    .await;
    let mut browser = app.browser();
    assert_eq!(browser.login("pat").await.status, 200);
    let vary = |resp: &Resp| -> Vec<String> {
        resp.headers
            .get_all("vary")
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|v| v.trim().to_ascii_lowercase())
            .collect()
    };
    // RFC 9111 §3.5 keeps shared caches off responses to requests with Authorization, but the
    // browser's request carries a cookie: the answer is for this browser only.
    for (upstream_says, want) in [
        ("public, max-age=600", "private, max-age=600"),
        ("max-age=600, PUBLIC", "private, max-age=600"),
        ("s-maxage=600", "private, s-maxage=600"),
        ("private=\"x-a, x-b\", max-age=5", "private, max-age=5"),
        ("private, max-age=5", "private, max-age=5"),
    ] {
        let cache_control = format!("Cache-Control: {upstream_says}");
        let resp = browser
            .raw(
                Method::GET,
                &respond_with("/api", &[cache_control.as_bytes(), b"Vary: Accept"]),
                None,
                &[],
            )
            .await;
        assert_eq!(resp.status, 200, "{:?}", resp.body);
        assert_eq!(
            resp.header("cache-control").as_deref(),
            Some(want),
            "{upstream_says}"
        );
        let vary = vary(&resp);
        for name in ["accept", "cookie"] {
            assert!(vary.iter().any(|v| v == name), "{upstream_says}: {vary:?}");
        }
    }
    let resp = browser
        .raw(
            Method::GET,
            &respond_with("/api", &[b"Cache-Control: no-store"]),
            None,
            &[],
        )
        .await;
    assert_eq!(resp.header("cache-control").as_deref(), Some("no-store"));

    // A mobile client's own Bearer request is protected by RFC 9111 §3.5 already: as sent.
    let at: AccessTokenCookie = app.unseal(Purpose::AccessToken, &browser.jar.value("th-at"));
    let mut mobile = app.browser();
    mobile.origin = None;
    let resp = mobile
        .raw(
            Method::GET,
            &respond_with("/mobile/api", &[b"Cache-Control: public, max-age=600"]),
            None,
            &[("authorization", &format!("Bearer {}", at.token.expose()))],
        )
        .await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    assert_eq!(
        resp.header("cache-control").as_deref(),
        Some("public, max-age=600")
    );
    assert!(
        !vary(&resp).iter().any(|v| v == "cookie"),
        "{:?}",
        vary(&resp)
    );

    // After a key rotation, the next response re-seals the session's cookies: it is never stored.
    let new_key = CookieKey::generate_text();
    app.state.jar.sealer().replace_ring(
        token_handler::crypto::KeyRing::parse(&[new_key.as_str(), key.as_str()]).expect("ring"),
    );
    let resp = browser
        .raw(
            Method::GET,
            &respond_with("/api", &[b"Cache-Control: public, max-age=600"]),
            None,
            &[],
        )
        .await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    assert!(!resp.cookies_named("th-at").is_empty(), "not re-sealed");
    assert_eq!(resp.header("cache-control").as_deref(), Some("no-store"));
    app.assert_alive().await;
}

/// A route that takes its token in `x-pat-jwt: Bearer …` (Open Source Cloud's services): the
/// upstream's `/api`, prefix stripped, WebSockets and mobile bearers allowed.
async fn setup_with_pat_route() -> (TestProvider, TestApp, Browser) {
    let op = TestProvider::start_with(jwt_provider(json!({}))).await;
    let upstream = Upstream::start(&op.issuer).await;
    let pat = RouteConfig::new("/pat", &format!("{}/api", upstream.address))
        .strip_prefix()
        .websocket()
        .allow_bearer()
        .token_header("X-Pat-JWT")
        .token_format("Bearer {token}");
    let app = TestApp::spawn_with(
        &TestConfig::new(&op.issuer)
            .route(pat)
            .proxy_to(&upstream.address),
    )
    .await;
    let mut browser = app.browser();
    assert_eq!(browser.login("pat").await.status, 200);
    (op, app, browser)
}

#[actix_web::test]
async fn a_route_can_carry_the_token_in_its_own_header_which_clients_cannot_send() {
    use futures_util::{SinkExt, StreamExt};
    let (_op, app, mut browser) = setup_with_pat_route().await;
    let at: AccessTokenCookie = app.unseal(Purpose::AccessToken, &browser.jar.value("th-at"));
    let ours = format!("Bearer {}", at.token.expose());
    let forged = [
        (PAT_HEADER, "Bearer forged"),
        ("authorization", "Bearer client-sent"),
    ];
    // Proxied calls: our token in x-pat-jwt, once; the client's x-pat-jwt and Authorization
    // never arrive.
    let resp = browser.raw(Method::GET, "/pat/orders", None, &forged).await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    assert_eq!(resp.body["path"], "/api/orders");
    assert_eq!(
        header_values(&resp.body, PAT_HEADER),
        std::slice::from_ref(&ours)
    );
    assert!(header_values(&resp.body, "authorization").is_empty());

    // The WebSocket handshake alike.
    let (_, mut framed) = awc::Client::default()
        .ws(format!("{}/pat/ws", app.address.replacen("http", "ws", 1)))
        .origin(SPA_ORIGIN)
        .set_header("cookie", browser.jar.header_for("/pat/ws").as_str())
        .set_header(PAT_HEADER, "Bearer forged")
        .set_header("authorization", "Bearer client-sent")
        .connect()
        .await
        .expect("handshake through the proxy");
    framed
        .send(awc::ws::Message::Text("headers".into()))
        .await
        .expect("send");
    let handshake: Value = match framed.next().await {
        Some(Ok(awc::ws::Frame::Text(t))) => serde_json::from_slice(&t).expect("JSON"),
        other => panic!("unexpected frame: {other:?}"),
    };
    assert_eq!(handshake[PAT_HEADER], json!([ours]), "{handshake}");
    assert!(handshake.get("authorization").is_none(), "{handshake}");

    // A mobile client's own bearer passes as sent (allow_bearer), but never with an x-pat-jwt
    // of its choosing.
    let mut mobile = app.browser();
    mobile.origin = None;
    let resp = mobile
        .raw(
            Method::GET,
            "/pat/orders",
            None,
            &[(PAT_HEADER, "Bearer forged"), ("authorization", &ours)],
        )
        .await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    assert!(header_values(&resp.body, PAT_HEADER).is_empty());
    assert_eq!(
        header_values(&resp.body, "authorization"),
        std::slice::from_ref(&ours)
    );

    // Other routes keep `Authorization: Bearer` and pass a client's x-pat-jwt like any header.
    let resp = browser
        .raw(Method::GET, "/api/orders", None, &forged[..1])
        .await;
    assert_eq!(resp.status, 401, "the upstream checks x-pat-jwt first");
    let resp = browser.raw(Method::GET, "/api/orders", None, &[]).await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    assert_eq!(header_values(&resp.body, "authorization"), [ours]);
    app.assert_alive().await;
}
