//! The whole OAuth Agent flow against a real `oidc-provider`.

use crate::helpers::*;
use awc::http::Method;
use serde_json::{json, Value};
use token_handler::crypto::Purpose;
use token_handler::session::{AccessTokenCookie, RefreshTokenCookie};

fn assert_no_store(resp: &Resp) {
    assert_eq!(resp.header("cache-control").as_deref(), Some("no-store"));
}

#[actix_web::test]
async fn login_start_builds_a_pkce_authorization_request_and_a_login_cookie() {
    let op = TestProvider::start().await;
    let app = TestApp::spawn(&op.issuer).await;
    let mut browser = app.browser();
    let resp = browser
        .post(
            "/login/start",
            r#"{"extraParams":[{"key":"ui_locales","value":"fr en"},{"key":"login_hint","value":"a+b@example.test"}]}"#,
        )
        .await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    assert_no_store(&resp);
    let url = resp.body["authorizationRequestUrl"].as_str().expect("url");
    assert!(url.starts_with(&format!("{}/auth?", op.issuer)), "{url}");
    for (name, want) in [
        ("response_type", Some("code")),
        ("client_id", Some("spa-client")),
        ("redirect_uri", Some(REDIRECT_URI)),
        ("scope", Some("openid profile email offline_access")),
        ("code_challenge_method", Some("S256")),
        ("ui_locales", Some("fr en")),
        ("login_hint", Some("a+b@example.test")),
    ] {
        assert_eq!(query_param(url, name).as_deref(), want, "{name}");
    }
    for name in ["state", "nonce", "code_challenge"] {
        assert_eq!(query_param(url, name).map(|v| v.len()), Some(43), "{name}");
    }
    // encodeURIComponent: space is %20, + is %2B, @ is %40.
    assert!(url.contains("ui_locales=fr%20en"), "{url}");
    assert!(url.contains("login_hint=a%2Bb%40example.test"), "{url}");

    // The login has a cookie of its own, named from its state.
    let state = query_param(url, "state").expect("state");
    let login = resp.login_cookies();
    assert_eq!(login.len(), 1);
    assert_eq!(base_name(login[0].name()), login_cookie_name(&state));
    let text = login[0].to_string();
    for attr in [
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
        "Path=/oauth-agent/login",
        "Max-Age=600",
    ] {
        assert!(text.contains(attr), "{text} lacks {attr}");
    }
    // The verifier travels sealed: the challenge's preimage is nowhere in clear.
    assert!(!login[0].value().contains(&state));
}

#[actix_web::test]
async fn a_full_login_sets_sealed_cookies_at_their_paths_and_the_spa_sees_no_token() {
    let op = TestProvider::start().await;
    let app = TestApp::spawn(&op.issuer).await;
    let mut browser = app.browser();
    let resp = browser.login("alice").await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    assert_no_store(&resp);
    assert_eq!(resp.body["handled"], true);
    assert_eq!(resp.body["isLoggedIn"], true);
    let csrf = resp.body["csrf"].as_str().expect("csrf");
    assert_eq!(csrf.len(), 43);
    let body_text = resp.body.to_string();
    assert!(
        !body_text.contains("eyJ"),
        "a token leaked into JSON: {body_text}"
    );

    let paths = |name: &str| -> Vec<String> {
        let mut p: Vec<String> = resp
            .cookies_named(name)
            .iter()
            .filter(|c| !c.value().is_empty())
            .map(|c| c.path().unwrap_or("").to_string())
            .collect();
        p.sort();
        p
    };
    assert_eq!(paths("th-at"), ["/"]);
    assert_eq!(paths("th-csrf"), ["/"]);
    assert_eq!(
        paths("th-auth"),
        ["/oauth-agent/logout", "/oauth-agent/refresh"]
    );
    assert_eq!(
        paths("th-id"),
        [
            "/oauth-agent/claims",
            "/oauth-agent/logout",
            "/oauth-agent/userInfo"
        ]
    );
    // The login cookie is cleared at the path it was set with.
    let login = resp.login_cookies();
    assert_eq!(login.len(), 1);
    assert!(base_name(login[0].name()).starts_with("th-login-"));
    assert_eq!(login[0].path(), Some("/oauth-agent/login"));
    assert_eq!(login[0].value(), "");

    for sc in &resp.set_cookies {
        assert!(
            sc.contains("HttpOnly") && sc.contains("Secure") && sc.contains("SameSite=Strict"),
            "{sc}"
        );
        assert!(!sc.contains("eyJ"), "a JWT in clear in {sc}");
        assert!(sc.len() <= 4096);
    }
    // The sealed access token is the provider's token for alice.
    let at: AccessTokenCookie = app.unseal(Purpose::AccessToken, &browser.jar.value("th-at"));
    assert!(at.expires_at.is_some());
    assert_eq!(&*at.provider, "default");
    assert_eq!(op.stats().await["authorization_code_grants"], 1);
}

#[actix_web::test]
async fn page_loads_after_login_report_the_session_and_reloading_the_callback_is_harmless() {
    let op = TestProvider::start().await;
    let app = TestApp::spawn(&op.issuer).await;
    let mut browser = app.browser();
    let url = browser.start_login("").await;
    let callback = provider_login(&url, "bob").await;
    let first = browser.end_login(&callback).await;
    assert_eq!(first.status, 200);
    let csrf = first.body["csrf"].clone();

    let plain = browser
        .post(
            "/login/end",
            &json!({"pageUrl": "https://www.example.test/orders?x=1"}).to_string(),
        )
        .await;
    assert_eq!(plain.status, 200);
    // (When the session ends is tested in sessions.rs.)
    let mut body = plain.body.clone();
    for key in ["expiresAt", "idleExpiresAt", "absoluteExpiresAt"] {
        assert!(body[key].is_i64(), "{key}: {:?}", plain.body);
        body.as_object_mut().expect("object").remove(key);
    }
    assert_eq!(
        body,
        json!({"handled": false, "isLoggedIn": true, "csrf": csrf})
    );

    let reload = browser.end_login(&callback).await;
    assert_eq!(reload.status, 200, "{:?}", reload.body);
    assert_eq!(reload.body["handled"], false);
    assert_eq!(reload.body["isLoggedIn"], true);

    let mut stranger = app.browser();
    let anonymous = stranger
        .post(
            "/login/end",
            &json!({"pageUrl": "https://www.example.test/"}).to_string(),
        )
        .await;
    assert_eq!(
        anonymous.body,
        json!({"handled": false, "isLoggedIn": false})
    );
    // Exactly one code redemption happened.
    assert_eq!(op.stats().await["authorization_code_grants"], 1);
}

#[actix_web::test]
async fn user_info_and_claims_describe_the_user() {
    let op = TestProvider::start().await;
    let app = TestApp::spawn(&op.issuer).await;
    let mut browser = app.browser();
    assert_eq!(browser.login("carol").await.status, 200);

    let info = browser.get("/userInfo").await;
    assert_eq!(info.status, 200, "{:?}", info.body);
    assert_no_store(&info);
    assert_eq!(info.body["sub"], "carol");
    assert_eq!(info.body["email"], "carol@example.test");
    assert_eq!(info.body["name"], "Test User carol");

    let claims = browser.get("/claims").await;
    assert_eq!(claims.status, 200, "{:?}", claims.body);
    assert_eq!(claims.body["sub"], "carol");
    assert_eq!(claims.body["iss"], Value::String(op.issuer.clone()));
    assert_eq!(claims.body["aud"], "spa-client");
    assert!(claims.body["exp"].is_i64());
}

#[actix_web::test]
async fn refresh_rewrites_the_cookies_with_new_tokens() {
    let op = TestProvider::start().await;
    let app = TestApp::spawn(&op.issuer).await;
    let mut browser = app.browser();
    assert_eq!(browser.login("dave").await.status, 200);
    let before: AccessTokenCookie = app.unseal(Purpose::AccessToken, &browser.jar.value("th-at"));

    let resp = browser.post("/refresh", "").await;
    assert_eq!(resp.status, 204, "{:?}", resp.body);
    assert_no_store(&resp);
    let after: AccessTokenCookie = app.unseal(Purpose::AccessToken, &browser.jar.value("th-at"));
    assert_ne!(before.token, after.token, "the access token did not change");
    assert_eq!(op.stats().await["refresh_grants"], 1);
    // The refresh-token cookie is rewritten at both its paths.
    let mut auth_paths: Vec<_> = resp
        .cookies_named("th-auth")
        .iter()
        .map(|c| c.path().unwrap_or("").to_string())
        .collect();
    auth_paths.sort();
    assert_eq!(auth_paths, ["/oauth-agent/logout", "/oauth-agent/refresh"]);

    let info = browser.get("/userInfo").await;
    assert_eq!(info.status, 200);
    assert_eq!(info.body["sub"], "dave");
}

#[actix_web::test]
async fn refresh_with_rotation_keeps_the_newest_refresh_token() {
    let op = TestProvider::start_with(json!({"rotateRefreshToken": true})).await;
    let app = TestApp::spawn(&op.issuer).await;
    let mut browser = app.browser();
    assert_eq!(browser.login("erin").await.status, 200);
    let first: RefreshTokenCookie =
        app.unseal(Purpose::RefreshToken, &browser.jar.value("th-auth"));
    assert_eq!(browser.post("/refresh", "").await.status, 204);
    let second: RefreshTokenCookie =
        app.unseal(Purpose::RefreshToken, &browser.jar.value("th-auth"));
    assert_ne!(first.token, second.token);
    assert_eq!(browser.post("/refresh", "").await.status, 204);
    assert_eq!(op.stats().await["refresh_grants"], 2);
}

#[actix_web::test]
async fn an_expired_access_token_is_token_expired_until_refreshed() {
    let op = TestProvider::start().await;
    let app = TestApp::spawn(&op.issuer).await;
    let mut browser = app.browser();
    assert_eq!(browser.login("frank").await.status, 200);
    // The provider's access tokens live 300 s; move our clock past that.
    app.state.clock.advance(301);
    let expired = browser.get("/userInfo").await;
    assert_eq!(expired.status, 401);
    assert_eq!(expired.code(), "token_expired");
    assert_eq!(browser.post("/refresh", "").await.status, 204);
    let info = browser.get("/userInfo").await;
    assert_eq!(info.status, 200, "{:?}", info.body);
}

#[actix_web::test]
async fn a_rejected_refresh_token_ends_the_session_and_clears_every_cookie() {
    let op = TestProvider::start().await;
    let app = TestApp::spawn(&op.issuer).await;
    let mut browser = app.browser();
    assert_eq!(browser.login("grace").await.status, 200);
    let rt: RefreshTokenCookie = app.unseal(Purpose::RefreshToken, &browser.jar.value("th-auth"));
    op.revoke_directly(rt.token.expose()).await;

    let resp = browser.post("/refresh", "").await;
    assert_eq!(resp.status, 401, "{:?}", resp.body);
    assert_eq!(resp.code(), "session_expired");
    assert!(
        browser.jar.all().is_empty(),
        "cookies left: {:?}",
        browser.jar.all()
    );
    let load = browser
        .post(
            "/login/end",
            &json!({"pageUrl": "https://www.example.test/"}).to_string(),
        )
        .await;
    assert_eq!(load.body["isLoggedIn"], false);
}

#[actix_web::test]
async fn logout_revokes_clears_every_cookie_and_returns_the_end_session_url() {
    let op = TestProvider::start().await;
    let app = TestApp::spawn(&op.issuer).await;
    let mut browser = app.browser();
    assert_eq!(browser.login("heidi").await.status, 200);
    let rt: RefreshTokenCookie = app.unseal(Purpose::RefreshToken, &browser.jar.value("th-auth"));
    let cookie_names: Vec<String> = browser
        .jar
        .all()
        .iter()
        .map(|c| c.name().to_string())
        .collect();
    assert!(cookie_names.len() >= 6, "{cookie_names:?}");

    let resp = browser.post("/logout", "").await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    assert_no_store(&resp);
    let url = resp.body["url"].as_str().expect("url");
    assert!(
        url.starts_with(&format!("{}/session/end?", op.issuer)),
        "{url}"
    );
    assert_eq!(query_param(url, "client_id").as_deref(), Some("spa-client"));
    assert_eq!(
        query_param(url, "post_logout_redirect_uri").as_deref(),
        Some(REDIRECT_URI)
    );
    assert!(query_param(url, "id_token_hint").is_some_and(|t| t.starts_with("eyJ")));

    assert!(
        browser.jar.all().is_empty(),
        "cookies left: {:?}",
        browser.jar.all()
    );
    let (status, body) = op.refresh_directly(rt.token.expose()).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_grant");
    assert!(op.stats().await["revoked_tokens"].as_i64() >= Some(1));

    // After logout every endpoint sees a signed-out browser.
    let info = browser.get("/userInfo").await;
    assert_eq!(info.status, 401);
    assert_eq!(info.code(), "unauthorized_request");
}

#[actix_web::test]
async fn front_channel_errors_carry_the_providers_code() {
    let op = TestProvider::start().await;
    let app = TestApp::spawn(&op.issuer).await;
    for (error, status) in [("access_denied", 400), ("login_required", 401)] {
        let mut browser = app.browser();
        let url = browser.start_login("").await;
        let state = query_param(&url, "state").expect("state");
        let resp = browser
            .end_login(&format!(
                "https://www.example.test/?error={error}&error_description=The+user+said+no&state={state}"
            ))
            .await;
        assert_eq!(resp.status, status, "{:?}", resp.body);
        assert_eq!(resp.code(), error);
        assert_eq!(resp.body["message"], "The user said no");
        assert!(
            browser.jar.login_cookies().is_empty(),
            "login cookie not cleared"
        );
    }
    // The real provider's own error path: the user aborts at the provider.
    let mut browser = app.browser();
    let url = browser.start_login("").await;
    let abort = aborted_login(&url).await;
    let resp = browser.end_login(&abort).await;
    assert_eq!(resp.status, 400, "{:?}", resp.body);
    assert_eq!(resp.code(), "access_denied");
    app.assert_alive().await;
}

/// Opens the provider's login page and presses its cancel link.
async fn aborted_login(authorization_url: &str) -> String {
    let client = awc::Client::builder().disable_redirects().finish();
    let mut jar = Jar::default();
    let mut url = authorization_url.to_string();
    for step in 0..6 {
        if url.starts_with(REDIRECT_URI) {
            return url;
        }
        let path = url::Url::parse(&url).expect("url").path().to_string();
        let path = if step == 1 {
            format!("{path}/abort")
        } else {
            path
        };
        let target = if step == 1 {
            format!("{url}/abort")
        } else {
            url.clone()
        };
        let mut req = client.get(&target);
        let cookies = jar.header_for(&path);
        if !cookies.is_empty() {
            req = req.insert_header(("cookie", cookies));
        }
        let resp = req.send().await.expect("provider");
        for sc in resp.headers().get_all("set-cookie") {
            jar.store(sc.to_str().expect("ascii"), &path);
        }
        let location = resp
            .headers()
            .get("location")
            .expect("Location")
            .to_str()
            .expect("redirect")
            .to_string();
        url = url::Url::parse(&target)
            .and_then(|b| b.join(&location))
            .expect("url")
            .to_string();
    }
    panic!("no redirect back to the SPA");
}

#[actix_web::test]
async fn cors_preflights_answer_trusted_origins_only() {
    let op = TestProvider::start().await;
    let app = TestApp::spawn(&op.issuer).await;
    let mut browser = app.browser();
    let resp = browser
        .request(
            Method::OPTIONS,
            "/refresh",
            None,
            &[
                ("access-control-request-method", "POST"),
                ("access-control-request-headers", "x-th-csrf"),
            ],
        )
        .await;
    assert_eq!(resp.status, 204);
    assert_eq!(
        resp.header("access-control-allow-origin").as_deref(),
        Some(SPA_ORIGIN)
    );
    assert_eq!(
        resp.header("access-control-allow-credentials").as_deref(),
        Some("true")
    );
    assert!(resp
        .header("access-control-allow-methods")
        .is_some_and(|m| m.contains("POST")));
    assert!(resp
        .header("access-control-allow-headers")
        .is_some_and(|h| h.contains("x-th-csrf")));

    browser.origin = Some("https://evil.example".into());
    let foreign = browser
        .request(
            Method::OPTIONS,
            "/refresh",
            None,
            &[("access-control-request-method", "POST")],
        )
        .await;
    assert_eq!(foreign.status, 204);
    assert!(foreign.header("access-control-allow-origin").is_none());
    assert!(foreign.header("access-control-allow-credentials").is_none());

    // Actual responses, errors included, carry CORS headers for the trusted origin.
    browser.origin = Some(SPA_ORIGIN.into());
    let err = browser.get("/userInfo").await;
    assert_eq!(err.status, 401);
    assert_eq!(
        err.header("access-control-allow-origin").as_deref(),
        Some(SPA_ORIGIN)
    );
}

#[actix_web::test]
async fn an_unreachable_provider_is_a_503_with_a_clear_code() {
    // A port nothing listens on: bind, note the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let app = TestApp::spawn(&format!("http://127.0.0.1:{port}")).await;
    let mut browser = app.browser();
    let resp = browser.post("/login/start", "").await;
    assert_eq!(resp.status, 503, "{:?}", resp.body);
    assert_eq!(resp.code(), "provider_unavailable");
    // Failing fast while discovery retries in the background: no waiting for a timeout.
    let start = std::time::Instant::now();
    let again = browser.post("/login/start", "").await;
    assert_eq!(again.status, 503);
    assert!(start.elapsed() < std::time::Duration::from_millis(500));
    app.assert_alive().await;
}

#[actix_web::test]
async fn a_copy_of_the_cookies_is_useless_after_logout() {
    let op = TestProvider::start().await;
    let app = TestApp::spawn(&op.issuer).await;
    let mut browser = app.browser();
    assert_eq!(browser.login("ivan").await.status, 200);
    // A refresh leaves a shared result behind (for concurrent callers)...
    assert_eq!(browser.post("/refresh", "").await.status, 204);
    let mut thief = browser.clone();
    assert_eq!(browser.post("/logout", "").await.status, 200);
    // ...which logout must drop: the stolen jar cannot refresh any more.
    let resp = thief.post("/refresh", "").await;
    assert_eq!(resp.status, 401, "{:?}", resp.body);
    assert_eq!(resp.code(), "session_expired");
}

#[actix_web::test]
async fn an_unreachable_jwks_is_a_502_at_login() {
    let op = TestProvider::start().await;
    let jwks_uri = format!("http://127.0.0.1:{}/jwks", free_port());
    let config = TestConfig::new(&op.issuer).provider(|p| p.jwks_uri(&jwks_uri));
    let app = TestApp::spawn_with(&config).await;
    let mut browser = app.browser();
    let resp = browser.login("judy").await;
    assert_eq!(resp.status, 502, "{:?}", resp.body);
    assert_eq!(resp.code(), "authorization_server_error");
    assert!(browser.jar.named("th-at").is_empty());
    app.assert_alive().await;
}
