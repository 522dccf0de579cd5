//! Operations: health, request ids, graceful shutdown, key rotation without restart, logs.

use crate::helpers::*;
use crate::upstream::{Upstream, API_AUDIENCE};
use awc::http::Method;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::json;
use std::time::{Duration, Instant};
use token_handler::crypto::CookieKey;

async fn get_json(url: &str) -> (u16, serde_json::Value) {
    let mut resp = awc::Client::default()
        .get(url)
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(serde_json::Value::Null))
}

#[actix_web::test]
async fn liveness_and_readiness() {
    let op = TestProvider::start().await;
    let app = TestApp::spawn(&op.issuer).await;
    let (status, body) = get_json(&format!("{}/health/live", app.address)).await;
    assert_eq!((status, body), (200, json!({"status": "ok"})));
    // Discovery runs in the background from the start: ready within moments.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = get_json(&format!("{}/health/ready", app.address)).await;
        if status == 200 {
            assert_eq!(
                body,
                json!({"status": "ready", "providers": {"default": "ready"}})
            );
            break;
        }
        assert!(Instant::now() < deadline, "never ready: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A provider that is down: live, but not ready.
    let down = TestApp::spawn(&format!("http://127.0.0.1:{}", free_port())).await;
    let (status, _) = get_json(&format!("{}/health/live", down.address)).await;
    assert_eq!(status, 200);
    let (status, body) = get_json(&format!("{}/health/ready", down.address)).await;
    assert_eq!(status, 503);
    assert_eq!(
        body,
        json!({"status": "not_ready", "providers": {"default": "unavailable"}})
    );
}

#[actix_web::test]
async fn request_ids_are_kept_or_made_and_passed_upstream() {
    let op = TestProvider::start_with(json!({"jwtAccessTokens": {"audience": API_AUDIENCE}})).await;
    let upstream = Upstream::start(&op.issuer).await;
    let app = TestApp::spawn_with(&TestConfig::new(&op.issuer).proxy_to(&upstream.address)).await;
    let mut browser = app.browser();
    assert_eq!(browser.login("rid").await.status, 200);
    let resp = browser
        .raw(
            Method::GET,
            "/api/x",
            None,
            &[("x-request-id", "abc-123.req")],
        )
        .await;
    assert_eq!(resp.header("x-request-id").as_deref(), Some("abc-123.req"));
    assert_eq!(resp.body["headers"]["x-request-id"], json!(["abc-123.req"]));
    let resp = browser
        .raw(
            Method::GET,
            "/api/x",
            None,
            &[("x-request-id", "bad id\twith spaces")],
        )
        .await;
    let made = resp.header("x-request-id").expect("a request id");
    assert_eq!(made.len(), 22);
    assert_eq!(resp.body["headers"]["x-request-id"], json!([made]));
    let resp = browser
        .post("/login/end", r#"{"pageUrl":"https://www.example.test/"}"#)
        .await;
    assert!(resp.header("x-request-id").is_some());
}

#[actix_web::test]
async fn sigterm_finishes_in_flight_requests_then_exits_zero() {
    let op = TestProvider::start_with(json!({"jwtAccessTokens": {"audience": API_AUDIENCE}})).await;
    let upstream = Upstream::start(&op.issuer).await;
    let config = TestConfig::new(&op.issuer)
        .shutdown_grace("10s")
        .route(RouteConfig::new("/api", &upstream.address));
    let mut app = ProcessApp::start(&config).await;
    let mut browser = Browser::new(&app.address);
    assert_eq!(browser.login("slow").await.status, 200);
    // The upstream takes 3 s to answer /api/slow.
    let mut slow = browser.clone();
    let in_flight =
        actix_web::rt::spawn(
            async move { slow.raw(Method::GET, "/api/slow", None, &[]).await.status },
        );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stopped_at = Instant::now();
    app.signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // No longer accepting new connections.
    assert!(
        tokio::net::TcpStream::connect(app.address.trim_start_matches("http://"))
            .await
            .is_err(),
        "still accepting after SIGTERM"
    );
    assert_eq!(
        in_flight.await.expect("join"),
        200,
        "the in-flight request was cut"
    );
    let status = app
        .wait_exit(Duration::from_secs(15))
        .await
        .expect("exited");
    assert!(status.success(), "{status:?}\n{}", app.log());
    assert!(stopped_at.elapsed() < Duration::from_secs(10));
}

fn key_id_of(sealed: &str) -> [u8; 4] {
    let raw = URL_SAFE_NO_PAD.decode(sealed).expect("base64url");
    [raw[1], raw[2], raw[3], raw[4]]
}

#[actix_web::test]
async fn keys_rotate_on_sighup_without_logging_anyone_out() {
    let op = TestProvider::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = dir.path().join("keys");
    let (old, new) = (CookieKey::generate_text(), CookieKey::generate_text());
    let old_id = CookieKey::parse(&old).expect("key").id();
    let new_id = CookieKey::parse(&new).expect("key").id();
    std::fs::write(&keys, format!("{old}\n")).expect("write keys");
    let config = TestConfig::new(&op.issuer).keys_file(&keys);
    let app = ProcessApp::start_in(&config, dir, "info").await;
    let mut browser = Browser::new(&app.address);
    assert_eq!(browser.login("rotating").await.status, 200);
    assert_eq!(key_id_of(&browser.jar.value("th-at")), old_id);
    let stolen_copy = browser.clone();

    // Step 1: the new key is listed, unseal-only.
    std::fs::write(&keys, format!("{old}\n{new}\n")).expect("write keys");
    app.signal("HUP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let resp = browser.get("/userInfo").await;
    assert_eq!(resp.status, 200);
    assert!(
        resp.set_cookies.is_empty(),
        "re-sealed with a key that is not yet current"
    );

    // Step 2: the new key seals; cookies sealed with the old one are re-sealed as they are used.
    std::fs::write(&keys, format!("{new}\n{old}\n")).expect("write keys");
    app.signal("HUP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let resp = browser.get("/userInfo").await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    assert_eq!(
        key_id_of(&browser.jar.value("th-at")),
        new_id,
        "{:?}",
        resp.set_cookies
    );
    assert_eq!(key_id_of(&browser.jar.value("th-csrf")), new_id);
    // The refresh-token cookie is re-sealed where it is sent (the refresh endpoint).
    assert_eq!(browser.post("/refresh", "").await.status, 204);
    let auth: Vec<_> = browser
        .jar
        .named("th-auth")
        .iter()
        .map(|c| key_id_of(c.value()))
        .collect();
    assert!(auth.iter().all(|id| *id == new_id), "{auth:?}");

    // Step 3: the old key is dropped. The user is still signed in; copies sealed with the old
    // key no longer open.
    std::fs::write(&keys, format!("{new}\n")).expect("write keys");
    app.signal("HUP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(browser.get("/userInfo").await.status, 200);
    assert_eq!(browser.get("/claims").await.status, 200);
    let mut thief = stolen_copy;
    assert_eq!(thief.get("/userInfo").await.status, 401);

    // An invalid keys file is refused and the running keys stay.
    std::fs::write(&keys, "not-a-key\n").expect("write keys");
    app.signal("HUP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(browser.get("/userInfo").await.status, 200);
    let log = app.log();
    assert!(log.contains("cookie keys reloaded"), "{log}");
    assert!(log.contains("the keys file is invalid"), "{log}");
    assert!(
        !log.contains(&new) && !log.contains(&old),
        "a key was logged"
    );
}

#[actix_web::test]
async fn prometheus_metrics_on_their_own_listener() {
    let op = TestProvider::start().await;
    let app = TestApp::spawn_with(&TestConfig::new(&op.issuer).metrics()).await;
    let mut browser = app.browser();
    assert_eq!(browser.login("metered").await.status, 200);
    assert_eq!(browser.post("/refresh", "").await.status, 204);
    let mut tampered = browser.clone();
    tampered.jar.set_value(
        "th-at",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    );
    assert_eq!(tampered.get("/userInfo").await.status, 401);

    let metrics_address = app.metrics_address.clone().expect("metrics listener");
    let mut resp = awc::Client::default()
        .get(format!("{metrics_address}/metrics"))
        .send()
        .await
        .expect("metrics");
    assert_eq!(resp.status().as_u16(), 200);
    let text = String::from_utf8(resp.body().await.expect("body").to_vec()).expect("utf8");
    for expected in [
        "token_handler_http_requests_total{route=\"/oauth-agent/login/end\",status=\"200\"}",
        "token_handler_http_requests_total{route=\"/oauth-agent/refresh\",status=\"204\"}",
        "token_handler_http_request_duration_seconds_bucket{",
        "token_handler_refreshes_total{outcome=\"ok\"}",
        "token_handler_unseal_failures_total{cookie=\"__Host-th-at\",reason=\"invalid\",key_id=\"unknown\"}",
        "token_handler_provider_request_duration_seconds_count{endpoint=\"token endpoint\"}",
        "token_handler_cookie_bytes_count{cookie=\"__Secure-th-id\"}",
    ] {
        assert!(text.contains(expected), "missing {expected} in:\n{text}");
    }
    // Not on the public port.
    let (status, _) = get_json(&format!("{}/metrics", app.address)).await;
    assert_eq!(status, 404);
}

#[actix_web::test]
async fn a_provider_outage_and_restart_need_no_token_handler_restart() {
    let op = TestProvider::start().await;
    let port: u16 = op
        .issuer
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    let app = TestApp::spawn(&op.issuer).await;
    let mut browser = app.browser();
    assert_eq!(browser.login("outage").await.status, 200);
    op.stop().await;

    // During the outage, calls that need the provider get JSON errors, quickly, never a 500, and
    // the session is not thrown away. (login/start still answers from cached metadata.)
    for (method, path) in [("GET", "/userInfo"), ("POST", "/refresh")] {
        let started = Instant::now();
        let resp = if method == "GET" {
            browser.get(path).await
        } else {
            browser.post(path, "").await
        };
        assert!(
            (502..=504).contains(&resp.status),
            "{path}: {} {:?}",
            resp.status,
            resp.body
        );
        assert!(resp.body["code"].is_string(), "{path}: {:?}", resp.body);
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "{path} took {:?}",
            started.elapsed()
        );
    }
    assert!(
        !browser.jar.named("th-auth").is_empty(),
        "the outage cleared the session"
    );

    // The provider comes back (at the same address, with fresh state and new keys): new logins
    // work again without restarting token-handler.
    let back = TestProvider::start_on(json!({}), port).await;
    assert_eq!(back.issuer, op_issuer(port));
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut fresh = app.browser();
    loop {
        let resp = fresh.post("/login/start", "").await;
        if resp.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never recovered: {:?}",
            resp.body
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let resp = fresh.login("after-outage").await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    assert_eq!(fresh.get("/userInfo").await.body["sub"], "after-outage");
}

fn op_issuer(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

/// Completes a login against a provider started with `provider_config` and a 1 s provider
/// timeout; the code exchange must fail with 502 well before a slow endpoint answers.
async fn login_end_is_cut_off_at_one_second(provider_config: serde_json::Value) {
    let op = TestProvider::start_with(provider_config).await;
    let config = TestConfig::new(&op.issuer).provider(|p| p.timeout("1s"));
    let app = TestApp::spawn_with(&config).await;
    let mut browser = app.browser();
    let url = browser.start_login("").await;
    let callback = provider_login(&url, "patient").await;
    let started = Instant::now();
    let resp = browser.end_login(&callback).await;
    let took = started.elapsed();
    assert_eq!(resp.status, 502, "{:?}", resp.body);
    assert_eq!(resp.code(), "authorization_server_error");
    assert!(
        took < Duration::from_millis(2500),
        "answered after {took:?}"
    );
    app.assert_alive().await;
}

#[actix_web::test]
async fn a_slow_provider_is_cut_off_at_the_timeout() {
    login_end_is_cut_off_at_one_second(json!({"tokenEndpointDelayMs": 8000})).await;
}

#[actix_web::test]
async fn a_slow_jwks_endpoint_is_cut_off_at_the_timeout_retries_included() {
    // One timeout for all tries together: three tries of 1 s each would take over 3 s.
    login_end_is_cut_off_at_one_second(json!({"jwksDelayMs": 8000})).await;
}

#[actix_web::test]
async fn a_changed_keys_file_is_picked_up_without_a_signal() {
    let op = TestProvider::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = dir.path().join("keys");
    let (old, new) = (CookieKey::generate_text(), CookieKey::generate_text());
    std::fs::write(&keys, format!("{old}\n")).expect("write keys");
    let config = TestConfig::new(&op.issuer).keys_file(&keys);
    let app = ProcessApp::start_in(&config, dir, "info").await;
    let mut browser = Browser::new(&app.address);
    assert_eq!(browser.login("polled").await.status, 200);
    std::fs::write(&keys, format!("{new}\n{old}\n")).expect("write keys");
    // The file is checked every 10 s.
    let deadline = Instant::now() + Duration::from_secs(25);
    let new_id = CookieKey::parse(&new).expect("key").id();
    loop {
        assert_eq!(browser.get("/userInfo").await.status, 200);
        if key_id_of(&browser.jar.value("th-at")) == new_id {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the changed keys file was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(app.log().contains("cookie keys reloaded"));
}
