//! Ending sessions through the shared store (issue 16): OIDC Back-Channel Logout 1.0 from the
//! real provider (oidc-provider's `backchannelLogout`), `sessions revoke` (CLI and the admin
//! listener), and what a stopped store does to the check (`[store] on_error`). Every store is
//! a real `redis-server` started on loopback and stopped by PID.

use crate::helpers::*;
use crate::redis::RedisServer;
use crate::upstream::Upstream;
use actix_web::{web, App, HttpResponse, HttpServer};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The test provider's client, registered for back-channel logout at `logout_uri`.
fn provider_config(logout_uri: &str) -> Value {
    json!({
        "backchannelLogout": true,
        "clients": [{
            "client_id": "spa-client",
            "client_secret": "spa-secret",
            "token_endpoint_auth_method": "client_secret_basic",
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "redirect_uris": [REDIRECT_URI],
            "post_logout_redirect_uris": [REDIRECT_URI],
            "backchannel_logout_uri": logout_uri,
            "backchannel_logout_session_required": true,
        }],
    })
}

/// Where the provider delivers logout tokens: relays each to the replica set in `target` and
/// answers with its status, keeping the token (so the test can replay it).
struct Relay {
    address: String,
    target: Arc<Mutex<Option<String>>>,
    tokens: Arc<Mutex<Vec<String>>>,
}

impl Relay {
    fn start() -> Self {
        let target: Arc<Mutex<Option<String>>> = Arc::default();
        let tokens: Arc<Mutex<Vec<String>>> = Arc::default();
        let (t, k) = (target.clone(), tokens.clone());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = format!("http://{}", listener.local_addr().expect("addr"));
        let server = HttpServer::new(move || {
            let (t, k) = (t.clone(), k.clone());
            App::new().default_service(web::to(move |body: web::Bytes| {
                let (t, k) = (t.clone(), k.clone());
                async move {
                    let token = url::form_urlencoded::parse(&body)
                        .find(|(n, _)| n == "logout_token")
                        .map(|(_, v)| v.into_owned())
                        .expect("a logout_token");
                    k.lock().expect("lock").push(token.clone());
                    let target = t.lock().expect("lock").clone().expect("a target replica");
                    let status = post_logout_token(&target, &token).await.0;
                    HttpResponse::build(
                        actix_web::http::StatusCode::from_u16(status).expect("status"),
                    )
                    .finish()
                }
            }))
        })
        .workers(1)
        .listen(listener)
        .expect("listen")
        .run();
        actix_web::rt::spawn(server);
        Self {
            address,
            target,
            tokens,
        }
    }
}

/// `POST <base>/backchannel-logout` as the provider sends it.
async fn post_logout_token(app: &str, token: &str) -> (u16, Value, Option<String>) {
    let mut resp = awc::Client::default()
        .post(format!("{app}{BASE}/backchannel-logout"))
        .send_form(&[("logout_token", token)])
        .await
        .expect("backchannel-logout");
    let status = resp.status().as_u16();
    let cache = resp
        .headers()
        .get("cache-control")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let body = resp.json::<Value>().await.unwrap_or(Value::Null);
    (status, body, cache)
}

/// Signs `user` in through `browser`, keeping the provider's cookies (its session).
async fn login_keeping_provider_session(browser: &mut Browser, user: &str) -> Jar {
    let url = browser.start_login("").await;
    let answer = |html: &str| {
        let action = html
            .split("action=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("a form on the provider's page")
            .to_string();
        let body = if html.contains("name=\"prompt\" value=\"login\"") {
            format!("prompt=login&login={user}&password=any")
        } else {
            "prompt=consent".to_string()
        };
        (action, body)
    };
    let (callback, op_jar) = follow_provider_pages(&url, REDIRECT_URI, answer).await;
    let resp = browser.end_login(&callback).await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    op_jar
}

/// Signs out at the provider's end-session endpoint, as the user would on another site of the
/// same provider: its confirmation form, "yes, sign me out".
async fn logout_at_provider(op: &TestProvider, op_jar: Jar) {
    let answer = |html: &str| {
        let xsrf = html
            .split("name=\"xsrf\" value=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_else(|| panic!("a logout form: {html}"))
            .to_string();
        (
            "/session/end/confirm".to_string(),
            format!("xsrf={xsrf}&logout=yes"),
        )
    };
    let done = format!("{}/session/end/success", op.issuer);
    follow_provider_pages_with(&format!("{}/session/end", op.issuer), &done, op_jar, answer).await;
}

fn assert_ended(resp: &Resp, what: &str) {
    assert_eq!(resp.status, 401, "{what}: {:?}", resp.body);
    assert_eq!(resp.code(), "session_expired", "{what}");
    let cleared = resp
        .set_cookies
        .iter()
        .filter(|c| c.contains("Max-Age=0"))
        .count();
    assert!(
        cleared >= 4,
        "{what}: cookies not cleared: {:?}",
        resp.set_cookies
    );
}

#[actix_web::test]
async fn a_provider_logout_ends_the_session_on_every_replica_and_its_token_cannot_be_replayed() {
    let redis = RedisServer::start().await;
    let relay = Relay::start();
    let op = TestProvider::start_with(provider_config(&relay.address)).await;
    let config = TestConfig::new(&op.issuer)
        .store(&redis.url())
        .store_key("revocation_cache", "300ms");
    let a = TestApp::spawn_with(&config).await;
    let b = TestApp::spawn_with(&config).await;
    *relay.target.lock().expect("lock") = Some(a.address.clone());

    let mut on_a = a.browser();
    let op_jar = login_keeping_provider_session(&mut on_a, "alice").await;
    // The same browser's calls land on the other replica too (no stickiness).
    let mut on_b = Browser::new(&b.address);
    on_b.jar = on_a.jar.clone();
    on_b.csrf = on_a.csrf.clone();
    assert_eq!(on_a.get("/userInfo").await.status, 200);
    assert_eq!(on_b.get("/session").await.status, 200);
    // A second session of the same user at another browser (another provider session).
    let mut elsewhere = a.browser();
    login_keeping_provider_session(&mut elsewhere, "alice").await;

    logout_at_provider(&op, op_jar).await;
    let tokens = relay.tokens.lock().expect("lock").clone();
    assert_eq!(tokens.len(), 1, "the provider sent one logout token");
    // Past B's cache of its earlier answer.
    tokio::time::sleep(Duration::from_millis(400)).await;

    assert_ended(&on_b.clone().get("/session").await, "GET /session on B");
    assert_ended(&on_a.clone().get("/userInfo").await, "GET /userInfo on A");
    assert_ended(&on_b.clone().get("/claims").await, "GET /claims on B");
    assert_ended(
        &on_a.clone().post("/refresh", "").await,
        "POST /refresh on A",
    );
    // The other provider session of the same user goes on (the token named a sid).
    assert_eq!(elsewhere.get("/userInfo").await.status, 200);

    // The same token again, at either replica: refused as §2.8 says.
    for app in [&a, &b] {
        let (status, body, cache) = post_logout_token(&app.address, &tokens[0]).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"], "invalid_request", "{body}");
        assert_eq!(cache.as_deref(), Some("no-store"));
    }
    // A new login of the same user works.
    let mut again = b.browser();
    login_keeping_provider_session(&mut again, "alice").await;
    assert_eq!(again.get("/userInfo").await.status, 200);
    a.assert_alive().await;
    b.assert_alive().await;
}

#[actix_web::test]
async fn a_forged_or_malformed_logout_token_is_400_and_without_a_store_501() {
    let redis = RedisServer::start().await;
    let op = TestProvider::start().await;
    let app = TestApp::spawn_with(&TestConfig::new(&op.issuer).store(&redis.url())).await;
    for token in ["", "not-a-jwt", "eyJhbGciOiJub25lIn0.eyJpc3MiOiJ4In0."] {
        let (status, body, _) = post_logout_token(&app.address, token).await;
        assert_eq!(status, 400, "{token}: {body}");
        assert_eq!(body["error"], "invalid_request");
    }
    // Not form-encoded.
    let resp = awc::Client::default()
        .post(format!("{}{BASE}/backchannel-logout", app.address))
        .send_json(&json!({"logout_token": "x"}))
        .await
        .expect("post");
    assert_eq!(resp.status().as_u16(), 400);
    app.assert_alive().await;

    let stateless = TestApp::spawn(&op.issuer).await;
    let (status, body, _) = post_logout_token(&stateless.address, "a.b.c").await;
    assert_eq!(status, 501, "{body}");
    assert!(body["error_description"]
        .as_str()
        .is_some_and(|d| d.contains("[store]")));
}

#[actix_web::test]
async fn sessions_revoke_ends_every_session_of_the_user() {
    let redis = RedisServer::start().await;
    let op = TestProvider::start().await;
    let config = TestConfig::new(&op.issuer)
        .store(&redis.url())
        .forward_auth(&["/gw"])
        .store_key("revocation_cache", "200ms")
        .store_key("admin_listen", "127.0.0.1:0");
    let a = TestApp::spawn_with(&config).await;
    let b = TestApp::spawn_with(&config).await;
    let mut alice1 = a.browser();
    alice1.login("alice").await;
    let mut alice2 = b.browser();
    alice2.login("alice").await;
    let mut bob = a.browser();
    bob.login("bob").await;
    for br in [&mut alice1, &mut alice2, &mut bob] {
        assert_eq!(br.get("/userInfo").await.status, 200);
    }
    // Forward auth, as a gateway asks it for alice's API call.
    let gateway_auth = |cookies: String| {
        let mut gateway = Browser::new(&a.forward_auth_address.clone().expect("listener"));
        async move {
            gateway
                .raw(
                    awc::http::Method::GET,
                    "/auth",
                    None,
                    &[("cookie", &cookies), ("x-original-method", "GET")],
                )
                .await
        }
    };
    let alice_cookies = alice1.jar.header_for("/gw/orders");
    assert_eq!(gateway_auth(alice_cookies.clone()).await.status, 200);

    // The admin listener.
    let admin = a.admin_address.clone().expect("admin listener");
    let mut resp = awc::Client::default()
        .post(format!("{admin}/sessions/revoke"))
        .send_json(&json!({"provider": "default", "sub": "alice"}))
        .await
        .expect("revoke");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.json::<Value>().await.expect("json")["revoked"], true);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_ended(&gateway_auth(alice_cookies).await, "forward auth for alice");
    assert_ended(&alice1.get("/userInfo").await, "alice on A");
    assert_ended(&alice2.get("/session").await, "alice on B");
    assert_eq!(bob.get("/userInfo").await.status, 200, "another user");
    // An unknown provider is a clear 400.
    let resp = awc::Client::default()
        .post(format!("{admin}/sessions/revoke"))
        .send_json(&json!({"provider": "nope", "sub": "alice"}))
        .await
        .expect("revoke");
    assert_eq!(resp.status().as_u16(), 400);

    // A new login of alice after the revocation is not affected.
    let mut alice3 = b.browser();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    alice3.login("alice").await;
    assert_eq!(alice3.get("/userInfo").await.status, 200);

    // The command line, with the same configuration file.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config.toml()).expect("write");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_token-handler"))
        .args([
            "sessions",
            "revoke",
            "--provider",
            "default",
            "--sub",
            "bob",
            "--config",
        ])
        .arg(&path)
        .output()
        .await
        .expect("run");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_ended(&bob.get("/userInfo").await, "bob after the CLI");
    assert_eq!(alice3.get("/userInfo").await.status, 200);
}

#[actix_web::test]
async fn a_stopped_store_fails_open_or_closed_and_recovers() {
    let mut redis = RedisServer::start().await;
    let op = TestProvider::start().await;
    let upstream = Upstream::start(&op.issuer).await;
    let base = TestConfig::new(&op.issuer)
        .proxy_to(&upstream.address)
        .store(&redis.url())
        .store_key("revocation_cache", "200ms");
    let open = TestApp::spawn_with(&base.clone().store_key("on_error", "open")).await;
    let closed = TestApp::spawn_with(&base.clone().store_key("on_error", "closed")).await;
    let mut on_open = open.browser();
    on_open.login("alice").await;
    let mut on_closed = closed.browser();
    on_closed.login("alice").await;
    assert_eq!(on_open.get("/userInfo").await.status, 200);
    assert_eq!(on_closed.get("/userInfo").await.status, 200);

    let api = |b: &mut Browser| {
        let mut b = b.clone();
        async move {
            b.raw(awc::http::Method::GET, "/api/orders", None, &[])
                .await
        }
    };
    assert_eq!(api(&mut on_open).await.status, 200);
    assert_eq!(api(&mut on_closed).await.status, 200);

    redis.stop().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..5 {
        // The proxy path: never a 5xx while the store is down.
        let r = api(&mut on_open).await;
        assert_eq!(r.status, 200, "fail-open proxies: {:?}", r.body);
        let r = api(&mut on_closed).await;
        assert_eq!(r.status, 401, "fail-closed refuses: {:?}", r.body);
        let r = on_open.get("/userInfo").await;
        assert_eq!(r.status, 200, "fail-open serves: {:?}", r.body);
        let r = on_closed.get("/userInfo").await;
        assert_eq!(r.status, 401, "fail-closed refuses: {:?}", r.body);
        assert_eq!(r.code(), "unauthorized_request");
        assert!(
            !r.set_cookies.iter().any(|c| c.contains("Max-Age=0")),
            "fail-closed keeps the cookies: {:?}",
            r.set_cookies
        );
    }

    redis.start_again().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Recovery without restart: the same cookies work again on both.
    let mut recovered = false;
    for _ in 0..20 {
        if on_closed.get("/userInfo").await.status == 200 {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        recovered,
        "fail-closed did not recover when the store came back"
    );
    assert_eq!(api(&mut on_closed).await.status, 200);
    assert_eq!(on_open.get("/userInfo").await.status, 200);
}
