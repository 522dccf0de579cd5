//! Hostile requests sent raw, the way no client library would: none reaches the upstream, none
//! is a 5xx, and the service answers normally afterwards.

use crate::helpers::*;
use crate::upstream::{Upstream, API_AUDIENCE};
use serde_json::json;

#[actix_web::test]
async fn malformed_requests_never_reach_the_upstream() {
    let op = TestProvider::start_with(json!({"jwtAccessTokens": {"audience": API_AUDIENCE}})).await;
    let upstream = Upstream::start(&op.issuer).await;
    let app = TestApp::spawn_with(&TestConfig::new(&op.issuer).proxy_to(&upstream.address)).await;
    let mut browser = app.browser();
    assert_eq!(browser.login("target").await.status, 200);
    let cookies = browser.jar.header_for("/api/x");
    let get = |path: &str, extra: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: t\r\nCookie: {cookies}\r\nConnection: close\r\n{extra}\r\n")
            .into_bytes()
    };
    // A sanity request with the same cookies succeeds, so refusals below are about the input.
    let (status, text) = raw_http(&app.address, get("/api/ok", "")).await;
    assert_eq!(status, 200, "{text}");

    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("dot segments", get("/api/../oauth-agent/claims", "")),
        ("encoded dot segments", get("/api/%2e%2e/admin", "")),
        ("mixed-case encoded dots", get("/api/%2E./admin", "")),
        ("encoded slash", get("/api/a%2F..%2Fadmin", "")),
        ("encoded backslash", get("/api/a%5c..%5cadmin", "")),
        ("encoded NUL", get("/api/a%00b", "")),
        ("obs-fold continuation line", get("/api/x", "X-Test: a\r\n folded: b\r\n")),
        ("bare CR in a header value", get("/api/x", "X-Test: a\rInjected: b\r\n")),
        ("NUL in a header value", get("/api/x", "X-Test: a\0b\r\n")),
        ("oversized header", get("/api/x", &format!("X-Big: {}\r\n", "a".repeat(70 * 1024)))),
        (
            "too many headers",
            get("/api/x", &(0..200).map(|i| format!("X-H{i}: v\r\n")).collect::<String>()),
        ),
        (
            "conflicting lengths (request smuggling)",
            b"POST /api/x HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\nGET /api/y HTTP/1.1\r\n\r\n".to_vec(),
        ),
    ];
    cases.push((
        "a lying origin",
        get(
            "/api/x",
            "Origin: https://www.example.test.evil.example\r\n",
        ),
    ));
    for (label, request) in cases {
        let (status, text) = raw_http(&app.address, request).await;
        assert!(
            (400..500).contains(&status),
            "{label}: expected a 4xx, got {status}: {}",
            text.chars().take(300).collect::<String>()
        );
        assert!(!text.contains("\"sub\""), "{label}: reached the upstream");
    }
    app.assert_alive().await;
    let (status, _) = raw_http(&app.address, get("/api/ok", "")).await;
    assert_eq!(status, 200);
}
