//! `/userInfo` against the real provider: the method it is asked with, what an access token
//! issued for an API gets, and the codes that tell an SPA whether refreshing helps. An
//! in-process stub stands in for the failures oidc-provider cannot produce (a 405 for POST, a
//! response about another user).

use crate::helpers::*;
use crate::upstream::API_AUDIENCE;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};

/// A provider counter that is absent until it first counts (`userinfo_get`, `userinfo_post`).
fn count(stats: &Value, key: &str) -> i64 {
    stats[key].as_i64().unwrap_or(0)
}

/// What an SPA written for the OAuth Agent does with `/userInfo` on a page load: on
/// `401 token_expired` it refreshes and retries once. Returns the final answer and whether it
/// refreshed.
async fn page_load(browser: &mut Browser) -> (Resp, bool) {
    let first = browser.get("/userInfo").await;
    if first.status == 401 && first.code() == "token_expired" {
        let refreshed = browser.post("/refresh", "").await;
        assert_eq!(refreshed.status, 204, "{:?}", refreshed.body);
        return (browser.get("/userInfo").await, true);
    }
    (first, false)
}

#[actix_web::test]
async fn userinfo_is_asked_with_post_by_default_and_with_get_when_configured() {
    let op = TestProvider::start().await;
    let app = TestApp::spawn(&op.issuer).await;
    let mut browser = app.browser();
    assert_eq!(browser.login("poster").await.status, 200);
    let info = browser.get("/userInfo").await;
    assert_eq!(info.status, 200, "{:?}", info.body);
    assert_eq!(info.body["sub"], "poster");
    assert_eq!(info.body["email"], "poster@example.test");
    let stats = op.stats().await;
    assert_eq!(
        (
            count(&stats, "userinfo_post"),
            count(&stats, "userinfo_get")
        ),
        (1, 0),
        "{stats}"
    );
    assert_eq!(stats["userinfo_requests"], 1, "answered: {stats}");

    let config = TestConfig::new(&op.issuer).provider(|p| p.userinfo(None, Some("get"), None));
    let app = TestApp::spawn_with(&config).await;
    let mut browser = app.browser();
    assert_eq!(browser.login("getter").await.status, 200);
    assert_eq!(browser.get("/userInfo").await.body["sub"], "getter");
    let stats = op.stats().await;
    assert_eq!(
        (
            count(&stats, "userinfo_post"),
            count(&stats, "userinfo_get")
        ),
        (1, 1),
        "{stats}"
    );
    assert_eq!(stats["userinfo_requests"], 2, "answered: {stats}");
}

/// One request as the stub saw it.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    method: String,
    bearer: bool,
    content_type: String,
    body_len: usize,
}

/// A userinfo endpoint that answers POST with 405 (Allow: GET) and GET with `{"sub": sub}`.
struct UserInfoStub {
    endpoint: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl UserInfoStub {
    async fn start(sub: &str) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (log, sub) = (seen.clone(), sub.to_string());
        let server = HttpServer::new(move || {
            let (log, sub) = (log.clone(), sub.clone());
            App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
                let (log, sub) = (log.clone(), sub.clone());
                async move {
                    let header = |name: &str| {
                        req.headers()
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string()
                    };
                    log.lock().unwrap().push(Seen {
                        method: req.method().to_string(),
                        bearer: header("authorization").starts_with("Bearer ")
                            && header("authorization").len() > "Bearer ".len(),
                        content_type: header("content-type"),
                        body_len: body.len(),
                    });
                    if req.method() == actix_web::http::Method::POST {
                        return HttpResponse::MethodNotAllowed()
                            .insert_header(("allow", "GET"))
                            .finish();
                    }
                    HttpResponse::Ok().json(json!({"sub": sub, "name": "From the stub"}))
                }
            }))
        })
        .workers(1)
        .listen(listener)
        .expect("listen")
        .run();
        actix_web::rt::spawn(server);
        Self {
            endpoint: format!("http://127.0.0.1:{port}/userinfo"),
            seen,
        }
    }

    fn methods(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.method.clone())
            .collect()
    }
}

#[actix_web::test]
async fn a_provider_that_refuses_post_is_asked_with_get_from_then_on() {
    let op = TestProvider::start().await;
    let stub = UserInfoStub::start("fallback").await;
    let config =
        TestConfig::new(&op.issuer).provider(|p| p.userinfo(Some(&stub.endpoint), None, None));
    let app = TestApp::spawn_with(&config).await;
    let mut browser = app.browser();
    assert_eq!(browser.login("fallback").await.status, 200);

    let info = browser.get("/userInfo").await;
    assert_eq!(info.status, 200, "{:?}", info.body);
    assert_eq!(info.body["name"], "From the stub");
    let seen = stub.seen.lock().unwrap().clone();
    // The POST the OAuth Agent sends: the token in the header, an empty form body.
    assert_eq!(
        seen,
        [
            Seen {
                method: "POST".into(),
                bearer: true,
                content_type: "application/x-www-form-urlencoded".into(),
                body_len: 0
            },
            Seen {
                method: "GET".into(),
                bearer: true,
                content_type: String::new(),
                body_len: 0
            },
        ]
    );
    // Remembered for the provider: POST is not tried again.
    assert_eq!(browser.get("/userInfo").await.status, 200);
    assert_eq!(app.browser().get("/userInfo").await.status, 401);
    assert_eq!(stub.methods(), ["POST", "GET", "GET"]);
}

#[actix_web::test]
async fn a_userinfo_response_about_another_user_is_not_used() {
    let op = TestProvider::start().await;
    let stub = UserInfoStub::start("mallory").await;
    let config = TestConfig::new(&op.issuer)
        .provider(|p| p.userinfo(Some(&stub.endpoint), Some("get"), None));
    let app = TestApp::spawn_with(&config).await;
    let mut browser = app.browser();
    assert_eq!(browser.login("alice").await.status, 200);
    // OIDC Core §5.3.2: the sub must be the ID token's.
    let info = browser.get("/userInfo").await;
    assert_eq!(info.status, 400, "{:?}", info.body);
    assert_eq!(info.code(), "authorization_error");
    assert!(
        !info.body.to_string().contains("mallory"),
        "{:?}",
        info.body
    );
    assert_eq!(stub.methods(), ["GET"]);
}

#[actix_web::test]
async fn an_api_audience_token_gets_the_users_claims_without_a_refresh_loop() {
    // Run 1 of the browser test: JWT access tokens for an API (RFC 8707 resource), which
    // oidc-provider's userinfo endpoint refuses ("token audience prevents accessing the
    // userinfo endpoint"), however often they are refreshed. The default configuration.
    let op = TestProvider::start_with(json!({"jwtAccessTokens": {"audience": API_AUDIENCE}})).await;
    let app = TestApp::spawn(&op.issuer).await;
    let mut browser = app.browser();
    assert_eq!(browser.login("alice").await.status, 200);
    for load in 1..=3 {
        let (info, refreshed) = page_load(&mut browser).await;
        assert_eq!(info.status, 200, "page load {load}: {:?}", info.body);
        assert!(!refreshed, "page load {load} refreshed");
        // The ID token's claims about the user, without those about the token.
        assert_eq!(info.body["sub"], "alice");
        assert_eq!(info.body["name"], "Test User alice");
        assert_eq!(info.body["email"], "alice@example.test");
        for protocol in ["aud", "nonce", "exp", "iat", "iss"] {
            assert!(
                info.body.get(protocol).is_none(),
                "{protocol}: {:?}",
                info.body
            );
        }
    }
    let stats = op.stats().await;
    assert_eq!(stats["refresh_grants"], 0, "{stats}");
    // The provider was asked every time (POST) and refused every time.
    assert_eq!(count(&stats, "userinfo_post"), 3, "{stats}");
    assert_eq!(stats["userinfo_requests"], 0, "{stats}");
}

#[actix_web::test]
async fn a_refused_token_is_userinfo_refused_unless_it_is_expired() {
    let op = TestProvider::start_with(json!({"jwtAccessTokens": {"audience": API_AUDIENCE}})).await;
    let config = TestConfig::new(&op.issuer).provider(|p| p.userinfo(None, None, Some("provider")));
    let app = TestApp::spawn_with(&config).await;
    let mut browser = app.browser();
    assert_eq!(browser.login("bob").await.status, 200);

    // Valid by our clock, refused by the provider: refreshing would not help.
    for _ in 0..2 {
        let (info, refreshed) = page_load(&mut browser).await;
        assert_eq!(info.status, 403, "{:?}", info.body);
        assert_eq!(info.code(), "userinfo_refused");
        assert!(!refreshed);
    }
    assert_eq!(op.stats().await["refresh_grants"], 0);

    // In the token's last minute (300 s tokens) a provider 401 may be clock skew: the SPA
    // refreshes once, and the fresh token's refusal is userinfo_refused again.
    app.state.clock.advance(250);
    let (info, refreshed) = page_load(&mut browser).await;
    assert!(
        refreshed,
        "a token refused near its expiry is token_expired"
    );
    assert_eq!(info.status, 403, "{:?}", info.body);
    assert_eq!(info.code(), "userinfo_refused");
    let (info, refreshed) = page_load(&mut browser).await;
    assert!(!refreshed);
    assert_eq!(info.code(), "userinfo_refused");
    assert_eq!(op.stats().await["refresh_grants"], 1);

    // Expired by its sealed expiry: token_expired, without asking the provider.
    let asked = count(&op.stats().await, "userinfo_post");
    app.state.clock.advance(301);
    let expired = browser.get("/userInfo").await;
    assert_eq!(expired.status, 401, "{:?}", expired.body);
    assert_eq!(expired.code(), "token_expired");
    assert_eq!(count(&op.stats().await, "userinfo_post"), asked);
}

#[actix_web::test]
async fn the_id_token_source_answers_without_asking_the_provider() {
    let op = TestProvider::start().await;
    let config = TestConfig::new(&op.issuer).provider(|p| p.userinfo(None, None, Some("id_token")));
    let app = TestApp::spawn_with(&config).await;
    let mut browser = app.browser();
    assert_eq!(browser.login("carol").await.status, 200);
    let info = browser.get("/userInfo").await;
    assert_eq!(info.status, 200, "{:?}", info.body);
    assert_eq!(info.body["sub"], "carol");
    assert_eq!(info.body["name"], "Test User carol");
    assert!(info.body.get("nonce").is_none(), "{:?}", info.body);
    // Like /claims: what the session holds, whatever the access token's expiry.
    app.state.clock.advance(301);
    assert_eq!(browser.get("/userInfo").await.body["sub"], "carol");
    let stats = op.stats().await;
    assert_eq!(
        count(&stats, "userinfo_post") + count(&stats, "userinfo_get"),
        0,
        "{stats}"
    );
    // No session: still 401.
    assert_eq!(app.browser().get("/userInfo").await.status, 401);
}

#[actix_web::test]
async fn another_sessions_id_token_is_never_the_answer() {
    let op = TestProvider::start_with(json!({"jwtAccessTokens": {"audience": API_AUDIENCE}})).await;
    let app = TestApp::spawn(&op.issuer).await;
    let mut alice = app.browser();
    let mut bob = app.browser();
    assert_eq!(alice.login("alice").await.status, 200);
    assert_eq!(bob.login("bob").await.status, 200);
    // Bob's own ID-token cookie spliced into Alice's session (a planted cookie): the provider
    // refuses Alice's API-audience token, and the fallback must not answer with Bob's claims.
    let mut spliced = alice.clone();
    spliced.jar.set_value("th-id", &bob.jar.value("th-id"));
    let resp = spliced.get("/userInfo").await;
    assert_eq!(resp.status, 401, "{:?}", resp.body);
    assert_eq!(resp.code(), "unauthorized_request");
    assert_eq!(alice.get("/userInfo").await.body["sub"], "alice");
    assert_eq!(bob.get("/userInfo").await.body["sub"], "bob");
}
