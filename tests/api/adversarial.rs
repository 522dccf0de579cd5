//! Hostile and broken input. Each case checks the answer, that nothing is a 5xx, and that the
//! service still answers afterwards.

use crate::helpers::*;
use awc::http::Method;
use serde_json::json;

async fn logged_in(op: &TestProvider) -> (TestApp, Browser) {
    let app = TestApp::spawn(&op.issuer).await;
    let mut browser = app.browser();
    let resp = browser.login("mallory-target").await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    (app, browser)
}

#[actix_web::test]
async fn origin_rules() {
    let op = TestProvider::start().await;
    let (app, mut browser) = logged_in(&op).await;
    for origin in [
        None,
        Some("https://evil.example"),
        Some("https://www.example.test.evil.example"),
        Some("http://www.example.test"),
        Some("null"),
    ] {
        browser.origin = origin.map(String::from);
        for path in ["/login/start", "/refresh", "/logout", "/login/end"] {
            let resp = browser.post(path, "").await;
            assert_eq!(resp.status, 401, "{origin:?} {path}: {:?}", resp.body);
            assert_eq!(resp.code(), "unauthorized_request");
            assert!(resp.header("access-control-allow-origin").is_none());
        }
    }
    // GETs: a foreign Origin is refused; no Origin (a same-origin GET) is fine.
    browser.origin = Some("https://evil.example".into());
    assert_eq!(browser.get("/userInfo").await.status, 401);
    browser.origin = None;
    assert_eq!(browser.get("/userInfo").await.status, 200);
    browser.origin = Some(SPA_ORIGIN.into());
    assert_eq!(browser.get("/claims").await.status, 200);
    app.assert_alive().await;
}

#[actix_web::test]
async fn csrf_rules() {
    let op = TestProvider::start().await;
    let (app, mut browser) = logged_in(&op).await;
    let good = browser.csrf.clone();
    for csrf in [
        None,
        Some(String::new()),
        Some("wrong".to_string()),
        good.as_ref().map(|g| format!("{g}x")),
    ] {
        browser.csrf = csrf.clone();
        for path in ["/refresh", "/logout"] {
            let resp = browser.post(path, "").await;
            assert_eq!(resp.status, 401, "{csrf:?} {path}: {:?}", resp.body);
            assert_eq!(resp.code(), "unauthorized_request");
        }
    }
    // Another session's CSRF value is useless here.
    let mut other = app.browser();
    assert_eq!(other.login("someone-else").await.status, 200);
    browser.csrf = other.csrf.clone();
    assert_eq!(browser.post("/refresh", "").await.status, 401);
    // Nothing was refreshed or revoked by the refused requests.
    let stats = op.stats().await;
    assert_eq!(stats["refresh_grants"], 0);
    assert_eq!(stats["revocations"], 0);
    browser.csrf = good;
    assert_eq!(browser.post("/refresh", "").await.status, 204);
    app.assert_alive().await;
}

#[actix_web::test]
async fn callback_state_mismatch_replay_and_code_replay() {
    let op = TestProvider::start().await;
    let app = TestApp::spawn(&op.issuer).await;

    // State mismatch: the login cookie says one state, the URL another.
    let mut browser = app.browser();
    let url = browser.start_login("").await;
    let callback = provider_login(&url, "victim").await;
    let code = query_param(&callback, "code").expect("code");
    let forged = format!("https://www.example.test/?code={code}&state=forged");
    let resp = browser.end_login(&forged).await;
    assert_eq!(resp.status, 400, "{:?}", resp.body);
    assert_eq!(resp.code(), "invalid_request");
    assert_eq!(op.stats().await["authorization_code_grants"], 0);

    // A callback replayed in a browser without the login cookie (a login CSRF attempt).
    let mut attacker = app.browser();
    let resp = attacker.end_login(&callback).await;
    assert_eq!(resp.status, 401, "{:?}", resp.body);
    assert_eq!(resp.code(), "unauthorized_request");
    assert!(attacker.jar.all().is_empty());

    // A used code replayed in a new login of its own: the provider refuses it.
    let mut first = app.browser();
    let url = first.start_login("").await;
    let callback = provider_login(&url, "alice").await;
    assert_eq!(first.end_login(&callback).await.status, 200);
    let used_code = query_param(&callback, "code").expect("code");
    let mut second = app.browser();
    let url = second.start_login("").await;
    let state = query_param(&url, "state").expect("state");
    let resp = second
        .end_login(&format!(
            "https://www.example.test/?code={used_code}&state={state}&iss={}",
            url::form_urlencoded::byte_serialize(op.issuer.as_bytes()).collect::<String>()
        ))
        .await;
    assert_eq!(resp.status, 400, "{:?}", resp.body);
    assert_eq!(resp.code(), "authorization_error");
    assert!(second.jar.named("th-at").is_empty());

    // RFC 9207: this provider promises `iss`, so a callback without it is refused, and one
    // naming another issuer too (a mix-up attack).
    let mut third = app.browser();
    let url = third.start_login("").await;
    let callback = provider_login(&url, "alice").await;
    let without_iss: String = callback.split("&iss=").next().unwrap_or("").to_string();
    let resp = third.end_login(&without_iss).await;
    assert_eq!(resp.status, 400, "{:?}", resp.body);
    let mut fourth = app.browser();
    let url = fourth.start_login("").await;
    let callback = provider_login(&url, "alice").await;
    let mixed_up = format!(
        "{}&iss=https%3A%2F%2Fevil.example",
        callback.split("&iss=").next().unwrap_or("")
    );
    let resp = fourth.end_login(&mixed_up).await;
    assert_eq!(resp.status, 400, "{:?}", resp.body);
    assert_eq!(op.stats().await["authorization_code_grants"], 1);
    app.assert_alive().await;
}

#[actix_web::test]
async fn extra_params_cannot_override_protocol_parameters() {
    let op = TestProvider::start().await;
    let app = TestApp::spawn(&op.issuer).await;
    let mut browser = app.browser();
    for key in [
        "redirect_uri",
        "state",
        "client_id",
        "code_challenge_method",
        "scope",
        "nonce",
        "response_type",
        "code_challenge",
        "request_uri",
        "request",
        "access_type",
        "redirect",
    ] {
        let body = json!({"extraParams": [{"key": key, "value": "https://evil.example/"}]});
        let resp = browser.post("/login/start", &body.to_string()).await;
        assert_eq!(resp.status, 400, "{key}: {:?}", resp.body);
        assert_eq!(resp.code(), "invalid_request");
        assert!(resp.login_cookies().is_empty());
    }
    let resp = browser
        .post("/login/start", &json!({"provider": "nope"}).to_string())
        .await;
    assert_eq!(resp.status, 400);
    app.assert_alive().await;
}

#[actix_web::test]
async fn malformed_and_oversized_bodies() {
    let op = TestProvider::start().await;
    let app = TestApp::spawn(&op.issuer).await;
    let mut browser = app.browser();
    for (body, status, code) in [
        ("{not json", 400, "invalid_request"),
        ("[]", 400, "invalid_request"),
        (r#"{"extraParams": "x"}"#, 400, "invalid_request"),
        (r#"{"extraParams": [{"key": 1}]}"#, 400, "invalid_request"),
        ("   ", 200, ""),
        ("", 200, ""),
    ] {
        let resp = browser.post("/login/start", body).await;
        assert_eq!(resp.status, status, "{body:?}: {:?}", resp.body);
        assert_eq!(resp.code(), code);
    }
    for body in [
        r#"{"pageUrl": 5}"#,
        r#"{"pageUrl": "not a url"}"#,
        "{}",
        r#"{"pageUrl":"https://a.example/?code=1&code=2&state=s"}"#,
    ] {
        let resp = browser.post("/login/end", body).await;
        assert_eq!(resp.status, 400, "{body}: {:?}", resp.body);
        assert_eq!(resp.code(), "invalid_request");
    }
    // curl -d sends a form content type: still parsed as JSON.
    let resp = browser
        .request(
            Method::POST,
            "/login/start",
            Some("{}"),
            &[("content-type", "application/x-www-form-urlencoded")],
        )
        .await;
    assert_eq!(resp.status, 200);
    // Over 64 KiB, with and without a Content-Length.
    let big = format!(
        r#"{{"pageUrl": "https://www.example.test/?{}"}}"#,
        "a".repeat(70 * 1024)
    );
    let resp = browser.post("/login/end", &big).await;
    assert_eq!(resp.status, 413);
    assert_eq!(resp.code(), "request_too_large");
    app.assert_alive().await;
}

#[actix_web::test]
async fn tampered_swapped_and_foreign_cookies_are_one_opaque_401() {
    let op = TestProvider::start().await;
    let (app, browser) = logged_in(&op).await;
    let at = browser.jar.value("th-at");
    let auth = browser.jar.value("th-auth");
    let mut flipped = at.clone().into_bytes();
    let mid = flipped.len() / 2;
    flipped[mid] = if flipped[mid] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).expect("ascii");
    let other_app = TestApp::spawn(&op.issuer).await;
    let mut other = other_app.browser();
    assert_eq!(other.login("other").await.status, 200);
    let foreign = other.jar.value("th-at");

    for (label, value) in [
        ("flipped", flipped.as_str()),
        ("truncated", &at[..at.len() - 10]),
        (
            "refresh cookie moved into the access-token cookie",
            auth.as_str(),
        ),
        ("sealed by another deployment's key", foreign.as_str()),
        ("garbage", "%%%;;"),
    ] {
        let mut b = app.browser();
        b.jar = browser.jar.clone();
        b.jar.set_value("th-at", value);
        let resp = b.get("/userInfo").await;
        assert_eq!(resp.status, 401, "{label}: {:?}", resp.body);
        assert_eq!(resp.code(), "unauthorized_request", "{label}");
        let msg = resp.body["message"].as_str().unwrap_or("");
        assert!(
            !msg.contains(value),
            "{label}: the message echoes the cookie"
        );
    }
    app.assert_alive().await;
}

#[actix_web::test]
async fn unknown_paths_and_methods_are_json_errors() {
    let op = TestProvider::start().await;
    let app = TestApp::spawn(&op.issuer).await;
    let mut browser = app.browser();
    let resp = browser.get("/nope").await;
    assert_eq!(resp.status, 404);
    assert_eq!(resp.code(), "not_found");
    let resp = browser.raw(Method::GET, "/elsewhere", None, &[]).await;
    assert_eq!(resp.status, 404);
    assert_eq!(resp.code(), "not_found");
    let resp = browser.get("/login/start").await;
    assert_eq!(resp.status, 405);
    assert_eq!(resp.code(), "method_not_allowed");
    assert_eq!(resp.header("allow").as_deref(), Some("POST"));
    let resp = browser
        .request(Method::DELETE, "/userInfo", None, &[])
        .await;
    assert_eq!(resp.status, 405);
    app.assert_alive().await;
}

#[actix_web::test]
async fn header_injection_in_extra_params_stays_inside_the_url() {
    let op = TestProvider::start().await;
    let app = TestApp::spawn(&op.issuer).await;
    let mut browser = app.browser();
    // A name outside the allow-list, with CRLF in it, is refused outright.
    let body = json!({"extraParams": [{"key": "ui_locales\r\nSet-Cookie: x=y", "value": "fr"}]});
    let resp = browser.post("/login/start", &body.to_string()).await;
    assert_eq!(resp.status, 400, "{:?}", resp.body);
    assert!(!resp.body["message"].as_str().unwrap_or("").contains('\n'));
    // An allowed name with a hostile value stays one value inside the URL.
    let body = json!({"extraParams": [{"key": "ui_locales", "value": "a\r\nSet-Cookie: x=y&state=evil#frag"}]});
    let resp = browser.post("/login/start", &body.to_string()).await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    let url = resp.body["authorizationRequestUrl"].as_str().expect("url");
    assert!(!url.contains('\r') && !url.contains('\n') && !url.contains('#'));
    assert_eq!(url.matches("state=").count(), 1, "{url}");
    assert_eq!(
        query_param(url, "ui_locales").as_deref(),
        Some("a\r\nSet-Cookie: x=y&state=evil#frag")
    );
    assert!(resp.set_cookies.iter().all(|c| !c.contains("x=y")));
    app.assert_alive().await;
}

/// Two sessions of the same deployment: A's cookies with B's CSRF cookie and B's CSRF value (or
/// B's refresh token) are one session only in appearance. Every cookie carries its session's id,
/// and a request whose cookies disagree is refused, on the proxy, the agent and page loads.
#[actix_web::test]
async fn cookies_of_two_sessions_cannot_be_spliced() {
    let op = TestProvider::start().await;
    let upstream = crate::upstream::Upstream::start(&op.issuer).await;
    let app = TestApp::spawn_with(&TestConfig::new(&op.issuer).proxy_to(&upstream.address)).await;
    let mut a = app.browser();
    assert_eq!(a.login("alice").await.status, 200);
    let mut b = app.browser();
    assert_eq!(b.login("bob").await.status, 200);
    // Each alone works.
    let resp = a
        .raw(Method::POST, "/api/orders", Some(b"{}".to_vec()), &[])
        .await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);

    // A's access token, B's CSRF cookie and value.
    let mut spliced = a.clone();
    spliced.jar.set_value("th-csrf", &b.jar.value("th-csrf"));
    spliced.csrf = b.csrf.clone();
    let resp = spliced
        .raw(Method::POST, "/api/orders", Some(b"{}".to_vec()), &[])
        .await;
    assert_eq!(resp.status, 401, "proxy: {:?}", resp.body);
    assert_eq!(resp.code(), "unauthorized_request");
    let resp = spliced
        .post("/login/end", r#"{"pageUrl":"https://www.example.test/"}"#)
        .await;
    assert_eq!(resp.status, 401, "page load: {:?}", resp.body);
    assert!(resp.body["csrf"].is_null());

    // B's CSRF with A's refresh token: no refresh.
    let mut spliced = b.clone();
    spliced.jar.set_value("th-auth", &a.jar.value("th-auth"));
    let resp = spliced.post("/refresh", "").await;
    assert_eq!(resp.status, 401, "refresh: {:?}", resp.body);
    assert_eq!(resp.code(), "unauthorized_request");

    // A's access token with B's refresh token, when a refresh is due: no refresh either.
    app.state.clock.advance(280);
    let mut spliced = a.clone();
    spliced.jar.set_value("th-auth", &b.jar.value("th-auth"));
    let resp = spliced.raw(Method::GET, "/api/orders", None, &[]).await;
    assert_eq!(resp.status, 401, "proxied GET: {:?}", resp.body);
    assert_eq!(op.stats().await["refresh_grants"], 0);

    // Logout with B's CSRF in A's jar: everything is cleared, but A's tokens are not B's to
    // revoke, nor A's ID token B's to name in the end-session URL.
    let mut spliced = a.clone();
    spliced.jar.set_value("th-csrf", &b.jar.value("th-csrf"));
    spliced.csrf = b.csrf.clone();
    let resp = spliced.post("/logout", "").await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    let left: Vec<_> = spliced
        .jar
        .all()
        .iter()
        .filter(|c| base_name(c.name()).starts_with("th-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let url = resp.body["url"].as_str().unwrap_or("");
    assert!(query_param(url, "id_token_hint").is_none(), "{url}");
    assert_eq!(op.stats().await["revocations"], 0);
    app.assert_alive().await;
}

/// A sent ID-token cookie that cannot be opened is not "no ID token": 401, on /claims as
/// everywhere. 404 no_id_token stays for a session that really has none.
#[actix_web::test]
async fn a_broken_id_token_cookie_is_unauthorized_not_missing() {
    let op = TestProvider::start().await;
    let (app, browser) = logged_in(&op).await;
    let id = browser.jar.value("th-id");
    let at = browser.jar.value("th-at");
    let mut flipped = id.clone().into_bytes();
    let mid = flipped.len() / 2;
    flipped[mid] = if flipped[mid] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).expect("ascii");
    for (label, value) in [
        ("flipped", flipped.as_str()),
        ("truncated", &id[..id.len() / 2]),
        ("the access-token cookie moved here", at.as_str()),
    ] {
        let mut b = browser.clone();
        b.jar.set_value("th-id", value);
        let resp = b.get("/claims").await;
        assert_eq!(resp.status, 401, "{label}: {:?}", resp.body);
        assert_eq!(resp.code(), "unauthorized_request", "{label}");
    }
    let mut intact = browser.clone();
    assert_eq!(intact.get("/claims").await.status, 200);
    app.assert_alive().await;
}

/// A session whose cookies no longer open (its key was removed, or they were altered) can always
/// be cleared: logout answers 200, clears every cookie, and calls no provider.
#[actix_web::test]
async fn logout_clears_a_session_whose_cookies_cannot_be_opened() {
    let op = TestProvider::start().await;
    let (app, browser) = logged_in(&op).await;
    // The same cookies at a deployment that no longer has their key.
    let rekeyed = TestApp::spawn(&op.issuer).await;
    let mut stale = rekeyed.browser();
    stale.jar = browser.jar.clone();
    stale.csrf = browser.csrf.clone();
    assert_eq!(stale.get("/userInfo").await.status, 401);
    let resp = stale.post("/logout", "").await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    assert!(stale.jar.all().is_empty(), "left: {:?}", stale.jar.all());
    assert!(resp.body["url"]
        .as_str()
        .is_some_and(|u| !u.contains("id_token_hint")));
    assert_eq!(op.stats().await["revocations"], 0);
    // And at the original deployment, a readable session with a wrong CSRF value is still 401.
    let mut wrong = browser.clone();
    wrong.csrf = Some("wrong".into());
    assert_eq!(wrong.post("/logout", "").await.status, 401);
    app.assert_alive().await;
}

/// Whether a response clears the login's cookie (and the browser no longer holds any).
fn clears_login(resp: &Resp, browser: &Browser) -> bool {
    let cleared = resp
        .login_cookies()
        .iter()
        .any(|c| c.max_age().is_some_and(|m| m.is_zero()));
    cleared && browser.jar.login_cookies().is_empty()
}

#[actix_web::test]
async fn every_failed_callback_of_a_login_clears_it() {
    let op = TestProvider::start().await;
    let app = TestApp::spawn(&op.issuer).await;

    // A state but neither code nor error.
    let mut browser = app.browser();
    let url = browser.start_login("").await;
    let state = query_param(&url, "state").expect("state");
    let resp = browser
        .end_login(&format!("https://www.example.test/?state={state}"))
        .await;
    assert_eq!(resp.status, 400, "{:?}", resp.body);
    assert!(clears_login(&resp, &browser), "{:?}", resp.set_cookies);

    // An ID token refused (our clock is behind: "issued in the future"). The client learns
    // that it was refused, not why (the log says why).
    let mut browser = app.browser();
    let url = browser.start_login("").await;
    let callback = provider_login(&url, "alice").await;
    app.state.clock.advance(-1000);
    let resp = browser.end_login(&callback).await;
    app.state.clock.advance(1000);
    assert_eq!(resp.status, 400, "{:?}", resp.body);
    assert_eq!(resp.code(), "authorization_error");
    let message = resp.body["message"].as_str().unwrap_or("").to_string();
    assert!(
        !message.contains("future") && !message.contains("clock"),
        "{message}"
    );
    assert!(clears_login(&resp, &browser), "{:?}", resp.set_cookies);
    assert!(browser.jar.named("th-at").is_empty());

    // The provider goes away between its redirect and the code exchange.
    let mut browser = app.browser();
    let url = browser.start_login("").await;
    let callback = provider_login(&url, "bob").await;
    op.stop().await;
    let resp = browser.end_login(&callback).await;
    assert_eq!(resp.status, 502, "{:?}", resp.body);
    assert!(clears_login(&resp, &browser), "{:?}", resp.set_cookies);
    app.assert_alive().await;
}

#[actix_web::test]
async fn an_id_token_refused_at_refresh_says_so_without_the_reason() {
    let op = TestProvider::start().await;
    let (app, mut browser) = logged_in(&op).await;
    // The refreshed ID token looks issued in the future to our (moved) clock.
    app.state.clock.advance(-1000);
    let resp = browser.post("/refresh", "").await;
    app.state.clock.advance(1000);
    assert_eq!(resp.status, 400, "{:?}", resp.body);
    assert_eq!(resp.code(), "authorization_error");
    let message = resp.body["message"].as_str().unwrap_or("").to_string();
    assert!(
        !message.contains("future") && !message.contains("clock"),
        "{message}"
    );
    app.assert_alive().await;
}
