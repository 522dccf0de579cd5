//! Readiness by required providers (issue 18 item 2): one unreachable secondary provider keeps
//! no replica out of the Service; it is reported in the body and the metrics, its logins answer
//! 503 `provider_unavailable`, and it turns ready without a restart once it answers.

use crate::helpers::*;
use crate::upstream::Upstream;
use awc::http::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

async fn get_json(url: &str) -> (u16, Value) {
    let mut resp = awc::Client::default()
        .get(url)
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn get_text(url: &str) -> String {
    let mut resp = awc::Client::default()
        .get(url)
        .send()
        .await
        .expect("request");
    String::from_utf8(resp.body().await.expect("body").to_vec()).expect("utf8")
}

/// Polls `/health/ready` until it answers `want`, returning the body.
async fn ready_until(app: &TestApp, want: (u16, Value), within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let got = get_json(&format!("{}/health/ready", app.address)).await;
        if got == want {
            return got.1;
        }
        assert!(Instant::now() < deadline, "readiness stayed {got:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Both providers share the SPA's redirect URI, so both require `iss` (RFC 9700 §4.4).
fn spa(id: &str, issuer: &str) -> ProviderConfig {
    ProviderConfig::spa_client(id, issuer).require_iss()
}

#[actix_web::test]
async fn an_unreachable_secondary_provider_does_not_take_readiness_down() {
    let op = TestProvider::start().await;
    let upstream = Upstream::start(&op.issuer).await;
    let port = free_port();
    let late_issuer = format!("http://127.0.0.1:{port}");
    let config = TestConfig::with_providers([
        spa("rd-primary", &op.issuer),
        spa("rd-secondary", &late_issuer),
    ])
    .metrics()
    .proxy_to(&upstream.address);
    let app = TestApp::spawn_with(&config).await;

    // Ready with the default provider alone; the other is reported, without URLs or reasons.
    ready_until(
        &app,
        (
            200,
            json!({"status": "ready", "providers": {"rd-primary": "ready", "rd-secondary": "unavailable"}}),
        ),
        Duration::from_secs(10),
    )
    .await;
    let metrics = format!("{}/metrics", app.metrics_address.clone().expect("metrics"));
    let text = get_text(&metrics).await;
    for line in [
        "token_handler_provider_ready{provider=\"rd-primary\"} 1",
        "token_handler_provider_ready{provider=\"rd-secondary\"} 0",
    ] {
        assert!(text.contains(line), "missing {line} in:\n{text}");
    }

    // The default provider's login and the proxy work; the other's login is a clear 503.
    let mut browser = app.browser();
    let resp = browser.login("ready-user").await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    let resp = browser.raw(Method::GET, "/api/orders", None, &[]).await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    assert_eq!(resp.body["sub"], "ready-user");
    let resp = app
        .browser()
        .post(
            "/login/start",
            &json!({"provider": "rd-secondary"}).to_string(),
        )
        .await;
    assert_eq!(resp.status, 503, "{:?}", resp.body);
    assert_eq!(resp.code(), "provider_unavailable");
    assert!(!resp.body.to_string().contains(&port.to_string()));

    // The provider comes up later: the background discovery picks it up, no restart needed.
    let late = TestProvider::start_on(json!({}), port).await;
    assert_eq!(late.issuer, late_issuer);
    ready_until(
        &app,
        (
            200,
            json!({"status": "ready", "providers": {"rd-primary": "ready", "rd-secondary": "ready"}}),
        ),
        Duration::from_secs(40),
    )
    .await;
    assert!(get_text(&metrics)
        .await
        .contains("token_handler_provider_ready{provider=\"rd-secondary\"} 1"));
    let url = app
        .browser()
        .start_login(&json!({"provider": "rd-secondary"}).to_string())
        .await;
    assert!(url.starts_with(&late_issuer), "{url}");
}

#[actix_web::test]
async fn a_provider_marked_required_holds_readiness_until_it_loads() {
    let op = TestProvider::start().await;
    let port = free_port();
    let late_issuer = format!("http://127.0.0.1:{port}");
    let config = TestConfig::with_providers([
        spa("rq-primary", &op.issuer),
        spa("rq-secondary", &late_issuer).required(true),
    ]);
    let app = TestApp::spawn_with(&config).await;
    let not_ready = (
        503,
        json!({"status": "not_ready", "providers": {"rq-primary": "ready", "rq-secondary": "unavailable"}}),
    );
    ready_until(&app, not_ready.clone(), Duration::from_secs(10)).await;
    // Still not ready a moment later: the default provider alone is not enough.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        get_json(&format!("{}/health/ready", app.address)).await,
        not_ready
    );

    let _late = TestProvider::start_on(json!({}), port).await;
    ready_until(
        &app,
        (
            200,
            json!({"status": "ready", "providers": {"rq-primary": "ready", "rq-secondary": "ready"}}),
        ),
        Duration::from_secs(40),
    )
    .await;
}
