//! Several providers, every client authentication method, PAR, plain OAuth 2.0 sessions and
//! extra parameters, against real `oidc-provider` instances.

use crate::helpers::*;
use serde_json::{json, Value};
use token_handler::crypto::Purpose;
use token_handler::session::AccessTokenCookie;

/// Client metadata for the test provider, registered with the SPA's redirect URI.
fn client(id: &str, extra: Value) -> Value {
    let mut c = json!({
        "client_id": id,
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "redirect_uris": [REDIRECT_URI],
        "post_logout_redirect_uris": [REDIRECT_URI],
    });
    if let (Some(c), Some(e)) = (c.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    c
}

/// A `[[providers]]` entry for `issuer`. Every provider here shares the SPA's redirect URI,
/// so each must require `iss` (RFC 9700 §4.4); the test provider sends it.
fn provider(id: &str, issuer: &str, client_id: &str) -> ProviderConfig {
    ProviderConfig::new(id, issuer, client_id).require_iss()
}

/// The test provider's `spa-client` (client_secret_basic, no PAR) as provider `id`.
fn spa_client(id: &str, issuer: &str) -> ProviderConfig {
    ProviderConfig::spa_client(id, issuer).require_iss()
}

async fn login_with(browser: &mut Browser, provider: &str, user: &str) -> Resp {
    let url = browser
        .start_login(&json!({"provider": provider}).to_string())
        .await;
    let callback = provider_login(&url, user).await;
    browser.end_login(&callback).await
}

#[actix_web::test]
async fn two_providers_each_session_talks_to_its_own() {
    let a = TestProvider::start().await;
    let b = TestProvider::start().await;
    let config =
        TestConfig::with_providers([spa_client("a", &a.issuer), spa_client("b", &b.issuer)]);
    let app = TestApp::spawn_with(&config).await;
    let mut alice = app.browser();
    let mut bob = app.browser();
    assert_eq!(login_with(&mut alice, "a", "alice").await.status, 200);
    assert_eq!(login_with(&mut bob, "b", "bob").await.status, 200);
    // The default (first) provider is used without a choice.
    let url = app.browser().start_login("").await;
    assert!(url.starts_with(&a.issuer), "{url}");

    assert_eq!(
        alice.get("/claims").await.body["iss"],
        Value::String(a.issuer.clone())
    );
    assert_eq!(
        bob.get("/claims").await.body["iss"],
        Value::String(b.issuer.clone())
    );
    assert_eq!(alice.get("/userInfo").await.body["sub"], "alice");
    assert_eq!(bob.get("/userInfo").await.body["sub"], "bob");
    assert_eq!(a.stats().await["userinfo_requests"], 1);
    assert_eq!(b.stats().await["userinfo_requests"], 1);

    assert_eq!(bob.post("/refresh", "").await.status, 204);
    assert_eq!(a.stats().await["refresh_grants"], 0);
    assert_eq!(b.stats().await["refresh_grants"], 1);

    assert_eq!(alice.post("/logout", "").await.status, 200);
    assert!(a.stats().await["revocations"].as_i64() >= Some(1));
    assert_eq!(b.stats().await["revocations"], 0);
    // Bob's session is untouched by Alice's logout at the other provider.
    assert_eq!(bob.get("/userInfo").await.status, 200);
}

#[actix_web::test]
async fn every_client_authentication_method_logs_in_and_refreshes() {
    let keys: Value = serde_json::from_slice(
        &std::process::Command::new("node")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/oidc/client-keys.mjs"
            ))
            .arg("ES256")
            .output()
            .expect("node client-keys.mjs")
            .stdout,
    )
    .expect("key JSON");
    let dir = tempfile::tempdir().expect("tempdir");
    let pem = dir.path().join("client.pem");
    std::fs::write(&pem, keys["private_key_pem"].as_str().expect("pem")).expect("write pem");
    let op = TestProvider::start_with(json!({"clients": [
        client("basic-client", json!({"client_secret": "basic-secret", "token_endpoint_auth_method": "client_secret_basic"})),
        client("post-client", json!({"client_secret": "post-secret", "token_endpoint_auth_method": "client_secret_post"})),
        client("jwt-client", json!({"token_endpoint_auth_method": "private_key_jwt", "token_endpoint_auth_signing_alg": "ES256", "jwks": {"keys": [keys["public_jwk"].clone()]}})),
        client("public-client", json!({"token_endpoint_auth_method": "none"})),
    ]}))
    .await;
    let kid = keys["kid"].as_str().expect("kid");
    let config = TestConfig::with_providers([
        provider("basic", &op.issuer, "basic-client").client_secret("basic-secret"),
        provider("post", &op.issuer, "post-client")
            .client_auth("client_secret_post")
            .client_secret("post-secret"),
        provider("jwt", &op.issuer, "jwt-client")
            .client_auth("private_key_jwt")
            .private_key(&pem, kid),
        provider("public", &op.issuer, "public-client").client_auth("none"),
        // FAPI 2.0 / RFC 7523bis: the issuer as the assertion's audience.
        provider("jwt-iss", &op.issuer, "jwt-client")
            .client_auth("private_key_jwt")
            .private_key(&pem, kid)
            .client_assertion_audience("issuer"),
    ]);
    let app = TestApp::spawn_with(&config).await;
    let token_endpoint = format!("{}/token", op.issuer);
    for (id, client_id, method, aud) in [
        ("basic", "basic-client", "client_secret_basic", None),
        ("post", "post-client", "client_secret_post", None),
        (
            "jwt",
            "jwt-client",
            "private_key_jwt",
            Some(&token_endpoint),
        ),
        ("public", "public-client", "none", None),
        ("jwt-iss", "jwt-client", "private_key_jwt", Some(&op.issuer)),
    ] {
        let mut browser = app.browser();
        let resp = login_with(&mut browser, id, &format!("user-{id}")).await;
        assert_eq!(resp.status, 200, "{id}: {:?}", resp.body);
        let refreshed = browser.post("/refresh", "").await;
        assert_eq!(refreshed.status, 204, "{id}: {:?}", refreshed.body);
        let last: Value = awc::Client::default()
            .get(format!("{}/test/last-client-auth", op.issuer))
            .send()
            .await
            .expect("last-client-auth")
            .json()
            .await
            .expect("json");
        assert_eq!(last["method"], method, "{id}: {last}");
        assert_eq!(last["client_id"], client_id, "{id}: {last}");
        assert_eq!(
            last["assertion_aud"].as_str(),
            aud.map(String::as_str),
            "{id}: {last}"
        );
        // PAR (the default, auto) used the same method: the URL carried only a request_uri.
        assert_eq!(
            browser.get("/userInfo").await.body["sub"],
            format!("user-{id}")
        );
    }
    assert_eq!(op.stats().await["refresh_grants"], 5);
}

#[actix_web::test]
async fn pushed_authorization_requests() {
    let op = TestProvider::start_with(json!({"clients": [
        client("par-client", json!({"client_secret": "par-secret", "require_pushed_authorization_requests": true})),
    ]}))
    .await;
    for mode in ["auto", "required"] {
        let config = TestConfig::with_providers([provider("default", &op.issuer, "par-client")
            .client_secret("par-secret")
            .par(mode)]);
        let app = TestApp::spawn_with(&config).await;
        let mut browser = app.browser();
        let body = json!({"extraParams": [{"key": "ui_locales", "value": "fr en"}]});
        let url = browser.start_login(&body.to_string()).await;
        let parsed = url::Url::parse(&url).expect("url");
        let names: Vec<String> = parsed.query_pairs().map(|(k, _)| k.into_owned()).collect();
        assert_eq!(names, ["client_id", "request_uri"], "{mode}: {url}");
        let callback = provider_login(&url, "par-user").await;
        let resp = browser.end_login(&callback).await;
        assert_eq!(resp.status, 200, "{mode}: {:?}", resp.body);
        let last = last_authorization(&op).await;
        assert_eq!(last["pushed"], true, "{last}");
        assert_eq!(last["ui_locales"], "fr en", "{last}");
        assert_eq!(last["code_challenge_method"], "S256", "{last}");
    }
}

async fn last_authorization(op: &TestProvider) -> Value {
    awc::Client::default()
        .get(format!("{}/test/last-authorization", op.issuer))
        .send()
        .await
        .expect("last-authorization")
        .json()
        .await
        .expect("json")
}

#[actix_web::test]
async fn extra_parameters_arrive_exactly_and_others_are_refused() {
    let op = TestProvider::start().await;
    let config = TestConfig::with_providers([spa_client("default", &op.issuer)
        .auth_param("access_type", "offline")
        .auth_param("prompt", "consent")]);
    let app = TestApp::spawn_with(&config).await;
    let mut browser = app.browser();
    let claims = r#"{"id_token":{"auth_time":{"essential":true}}}"#;
    let body = json!({"extraParams": [
        {"key": "ui_locales", "value": "fr-CA fr"},
        {"key": "login_hint", "value": "a+b@example.test"},
        {"key": "claims", "value": claims},
    ]});
    let url = browser.start_login(&body.to_string()).await;
    let callback = provider_login(&url, "params").await;
    assert_eq!(browser.end_login(&callback).await.status, 200);
    let last = last_authorization(&op).await;
    assert_eq!(last["pushed"], false);
    assert_eq!(last["ui_locales"], "fr-CA fr");
    assert_eq!(last["login_hint"], "a+b@example.test");
    assert_eq!(last["claims"], claims);
    assert_eq!(
        last["access_type"], "offline",
        "static parameters are sent: {last}"
    );
    assert_eq!(last["prompt"], "consent", "{last}");

    // A configured parameter is the operator's: the SPA may not replace it (step-up downgrade).
    for key in ["prompt", "access_type"] {
        let body = json!({"extraParams": [{"key": key, "value": "none"}]});
        let resp = browser.post("/login/start", &body.to_string()).await;
        assert_eq!(resp.status, 400, "{key}: {:?}", resp.body);
        assert_eq!(resp.code(), "invalid_request");
        assert!(resp.login_cookies().is_empty());
    }

    for key in ["foo", "redirect", "response_mode", "client_secret"] {
        let body = json!({"extraParams": [{"key": key, "value": "x"}]});
        let resp = browser.post("/login/start", &body.to_string()).await;
        assert_eq!(resp.status, 400, "{key}");
        assert_eq!(resp.code(), "invalid_request");
    }
}

#[actix_web::test]
async fn a_plain_oauth2_session_without_an_id_token() {
    let op = TestProvider::start().await;
    let config = TestConfig::with_providers([provider("default", &op.issuer, "spa-client")
        .client_secret("spa-secret")
        .scope("profile email offline_access")]);
    let app = TestApp::spawn_with(&config).await;
    let mut browser = app.browser();
    let resp = browser.login("plain").await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    assert_eq!(resp.body["isLoggedIn"], true);
    assert!(
        browser.jar.named("th-id").is_empty(),
        "no ID token, no -id cookie"
    );
    let at: AccessTokenCookie = app.unseal(Purpose::AccessToken, &browser.jar.value("th-at"));
    assert!(!at.token.expose().is_empty());
    let claims = browser.get("/claims").await;
    assert_eq!(claims.status, 404, "{:?}", claims.body);
    assert_eq!(claims.code(), "no_id_token");
    assert_eq!(browser.post("/refresh", "").await.status, 204);
    let logout = browser.post("/logout", "").await;
    assert_eq!(logout.status, 200);
    assert!(logout.body["url"]
        .as_str()
        .is_some_and(|u| !u.contains("id_token_hint")));
}

#[actix_web::test]
async fn the_proxy_forwards_each_sessions_token_from_its_own_provider() {
    let a = TestProvider::start_with(
        json!({"jwtAccessTokens": {"audience": crate::upstream::API_AUDIENCE}}),
    )
    .await;
    let b = TestProvider::start_with(
        json!({"jwtAccessTokens": {"audience": crate::upstream::API_AUDIENCE}}),
    )
    .await;
    let upstream = crate::upstream::Upstream::start_many(&[&a.issuer, &b.issuer]).await;
    let config =
        TestConfig::with_providers([spa_client("a", &a.issuer), spa_client("b", &b.issuer)])
            .route(RouteConfig::new("/api", &upstream.address));
    let app = TestApp::spawn_with(&config).await;
    let mut alice = app.browser();
    let mut bob = app.browser();
    assert_eq!(login_with(&mut alice, "a", "alice").await.status, 200);
    assert_eq!(login_with(&mut bob, "b", "bob").await.status, 200);
    let seen_a = alice.raw(awc::http::Method::GET, "/api/x", None, &[]).await;
    let seen_b = bob.raw(awc::http::Method::GET, "/api/x", None, &[]).await;
    assert_eq!(
        seen_a.body["iss"],
        Value::String(a.issuer.clone()),
        "{:?}",
        seen_a.body
    );
    assert_eq!(
        seen_b.body["iss"],
        Value::String(b.issuer.clone()),
        "{:?}",
        seen_b.body
    );
    assert_eq!(seen_a.body["sub"], "alice");
    assert_eq!(seen_b.body["sub"], "bob");
}

#[actix_web::test]
async fn a_provider_that_is_down_does_not_stop_the_others() {
    let up = TestProvider::start().await;
    let down = format!("http://127.0.0.1:{}", free_port());
    let config = TestConfig::with_providers([
        provider("down", &down, "spa-client").client_secret("spa-secret"),
        spa_client("up", &up.issuer),
    ]);
    let app = TestApp::spawn_with(&config).await;
    let mut browser = app.browser();
    let resp = browser
        .post("/login/start", &json!({"provider": "down"}).to_string())
        .await;
    assert_eq!(resp.status, 503, "{:?}", resp.body);
    assert_eq!(resp.code(), "provider_unavailable");
    assert!(resp.body["message"]
        .as_str()
        .unwrap_or("")
        .contains("`down`"));
    let resp = login_with(&mut browser, "up", "still-works").await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    assert_eq!(browser.get("/userInfo").await.body["sub"], "still-works");
}

/// The operator's step-up: `acr_values`, `max_age` and `prompt` configured for a provider.
fn step_up(id: &str, issuer: &str) -> ProviderConfig {
    spa_client(id, issuer)
        .auth_param("acr_values", "urn:mfa")
        .auth_param("max_age", "600")
        .auth_param("prompt", "login")
}

#[actix_web::test]
async fn a_configured_step_up_cannot_be_downgraded_and_is_checked_on_the_id_token() {
    let acr = json!(["urn:pwd", "urn:mfa"]);
    // A provider that can only do passwords, and one that does what was asked.
    let weak = TestProvider::start_with(json!({"acrValues": acr, "loginAcr": "urn:pwd"})).await;
    let strong = TestProvider::start_with(json!({"acrValues": acr, "loginAcr": "urn:mfa"})).await;
    let config = TestConfig::with_providers([
        step_up("weak", &weak.issuer),
        step_up("strong", &strong.issuer),
    ]);
    let app = TestApp::spawn_with(&config).await;

    // OIDC Core §3.1.2.1 parameters the operator set: the SPA cannot replace them.
    let mut browser = app.browser();
    for (key, value) in [
        ("acr_values", "urn:pwd"),
        ("prompt", "none"),
        ("max_age", "999999"),
    ] {
        let body = json!({"provider": "strong", "extraParams": [{"key": key, "value": value}]});
        let resp = browser.post("/login/start", &body.to_string()).await;
        assert_eq!(resp.status, 400, "{key}: {:?}", resp.body);
        assert_eq!(resp.code(), "invalid_request");
        assert!(resp.body["message"]
            .as_str()
            .is_some_and(|m| m.contains("configuration")));
        assert!(resp.login_cookies().is_empty());
    }

    // The provider authenticated with a lower acr than configured (§3.1.3.7 item 12): refused,
    // with a generic message, and the login is over.
    let resp = login_with(&mut browser, "weak", "alice").await;
    assert_eq!(resp.status, 400, "{:?}", resp.body);
    assert_eq!(resp.code(), "authorization_error");
    assert!(
        !resp.body["message"]
            .as_str()
            .unwrap_or("acr")
            .contains("acr"),
        "the reason is logged, not sent: {:?}",
        resp.body
    );
    assert!(browser.jar.login_cookies().is_empty());
    assert!(browser.jar.named("th-at").is_empty());
    let last = last_authorization(&weak).await;
    assert_eq!(last["acr_values"], "urn:mfa", "{last}");
    assert_eq!(last["max_age"], "600", "{last}");
    assert_eq!(last["prompt"], "login", "{last}");

    // The provider did what was asked: signed in, acr and auth_time are there.
    let resp = login_with(&mut browser, "strong", "alice").await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    let claims = browser.get("/claims").await;
    assert_eq!(claims.body["acr"], "urn:mfa", "{:?}", claims.body);
    assert!(claims.body["auth_time"].is_i64(), "{:?}", claims.body);
}

#[actix_web::test]
async fn a_configured_max_age_needs_a_recent_auth_time() {
    let op = TestProvider::start().await;
    let config =
        TestConfig::with_providers([spa_client("default", &op.issuer).auth_param("max_age", "60")]);
    let app = TestApp::spawn_with(&config).await;
    let mut browser = app.browser();
    let url = browser.start_login("").await;
    assert_eq!(query_param(&url, "max_age").as_deref(), Some("60"));
    let callback = provider_login(&url, "slow").await;
    // The user took longer than max_age (plus leeway) since authenticating (§3.1.3.7 item 13);
    // the ID token itself is still valid (it lives 300 s).
    app.state.clock.advance(200);
    let resp = browser.end_login(&callback).await;
    assert_eq!(resp.status, 400, "{:?}", resp.body);
    assert_eq!(resp.code(), "authorization_error");
    assert!(browser.jar.login_cookies().is_empty());
    app.state.clock.advance(-200);
    let resp = browser.login("quick").await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    assert!(browser.get("/claims").await.body["auth_time"].is_i64());
}

#[actix_web::test]
async fn without_iss_a_response_must_arrive_at_its_providers_redirect_uri() {
    const OTHER: &str = "https://www.example.test/other-idp";
    // A provider without RFC 9207: its responses never name it.
    let op = TestProvider::start_with(json!({"omitIss": true, "clients": [
        client("spa-client", json!({"client_secret": "spa-secret", "redirect_uris": [REDIRECT_URI, OTHER]})),
    ]}))
    .await;
    // Neither requires iss: each has its own redirect URI.
    let config = TestConfig::with_providers([
        ProviderConfig::spa_client("a", &op.issuer),
        ProviderConfig::new("b", &op.issuer, "spa-client")
            .client_secret("spa-secret")
            .redirect_uris(OTHER),
    ]);
    let app = TestApp::spawn_with(&config).await;

    // Each provider has its own redirect URI: no iss is needed.
    let mut browser = app.browser();
    let resp = login_with(&mut browser, "a", "alice").await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);

    // A login started with `a` whose response arrives at `b`'s redirect URI (RFC 9700 §4.4):
    // the code must not be redeemed at `a`.
    let mut browser = app.browser();
    let url = browser
        .start_login(&json!({"provider": "a"}).to_string())
        .await;
    let callback = provider_login(&url, "alice").await;
    assert!(query_param(&callback, "iss").is_none(), "{callback}");
    let at_other = callback.replacen(REDIRECT_URI, OTHER, 1);
    let grants = op.stats().await["authorization_code_grants"].clone();
    let resp = browser.end_login(&at_other).await;
    assert_eq!(resp.status, 400, "{:?}", resp.body);
    assert_eq!(resp.code(), "invalid_request");
    assert_eq!(op.stats().await["authorization_code_grants"], grants);
    assert!(browser.jar.login_cookies().is_empty());

    // require_iss: a response without iss is refused, whatever discovery says.
    let app = TestApp::spawn_with(&TestConfig::with_providers([spa_client("a", &op.issuer)])).await;
    let resp = login_with(&mut app.browser(), "a", "alice").await;
    assert_eq!(resp.status, 400, "{:?}", resp.body);
    assert_eq!(resp.code(), "invalid_request");
    assert_eq!(op.stats().await["authorization_code_grants"], grants);
}
