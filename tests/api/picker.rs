//! Choosing a provider (issue 14 part 3): `GET /providers`, an exclusive provider, and
//! server-side logins (`GET /login` and the callback token-handler completes itself).

use crate::helpers::*;
use serde_json::json;

/// Two providers of the test provider, sharing the SPA's redirect URI (so both require `iss`).
fn two_providers(issuer: &str) -> [ProviderConfig; 2] {
    [
        ProviderConfig::spa_client("default", issuer)
            .display_name("Example ID")
            .require_iss(),
        ProviderConfig::spa_client("other", issuer).require_iss(),
    ]
}

#[actix_web::test]
async fn providers_are_listed_with_display_names_and_nothing_secret() {
    let provider = TestProvider::start().await;
    let app =
        TestApp::spawn_with(&TestConfig::with_providers(two_providers(&provider.issuer))).await;
    let mut browser = app.browser();
    let resp = browser.get("/providers").await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    assert_eq!(
        resp.body,
        json!({
            "default": "default",
            "providers": [
                {"id": "default", "displayName": "Example ID"},
                {"id": "other", "displayName": "other"},
            ]
        })
    );
    let text = resp.body.to_string();
    for secret in ["spa-secret", "spa-client", &provider.issuer, "example.test"] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    assert!(resp.set_cookies.is_empty());
    assert_eq!(
        resp.header("access-control-allow-origin").as_deref(),
        Some(SPA_ORIGIN)
    );

    // The Origin rules of every agent endpoint: none (a same-origin GET) is fine, another
    // site's is refused, and so is a request the browser marks as sent by another site.
    browser.origin = None;
    assert_eq!(browser.get("/providers").await.status, 200);
    let from_elsewhere = browser
        .request(
            awc::http::Method::GET,
            "/providers",
            None,
            &[("sec-fetch-site", "cross-site")],
        )
        .await;
    assert_eq!(from_elsewhere.status, 401);
    browser.origin = Some("https://evil.example".into());
    let evil = browser.get("/providers").await;
    assert_eq!(evil.status, 401);
    assert_eq!(evil.code(), "unauthorized_request");
    browser.origin = Some(SPA_ORIGIN.into());
    assert_eq!(browser.post("/providers", "").await.status, 405);
    app.assert_alive().await;
}

#[actix_web::test]
async fn an_exclusive_provider_is_the_only_one_listed_and_allowed() {
    let provider = TestProvider::start().await;
    let [first, second] = two_providers(&provider.issuer);
    let app = TestApp::spawn_with(&TestConfig::with_providers([
        first,
        second.display_name("Other ID").exclusive(),
    ]))
    .await;
    let mut browser = app.browser();
    let resp = browser.get("/providers").await;
    assert_eq!(
        resp.body,
        json!({"default": "other", "providers": [{"id": "other", "displayName": "Other ID"}]})
    );

    let refused = browser
        .post("/login/start", &json!({"provider": "default"}).to_string())
        .await;
    assert_eq!(refused.status, 400, "{:?}", refused.body);
    assert_eq!(refused.code(), "invalid_request");
    assert!(
        refused.body["message"]
            .as_str()
            .unwrap_or("")
            .contains("`other`"),
        "{:?}",
        refused.body
    );
    assert!(refused.login_cookies().is_empty());

    // Without a provider, the exclusive one; by its id, too; and the login completes with it.
    let url = browser.start_login("{}").await;
    let login = app.unseal::<serde_json::Value>(
        token_handler::crypto::Purpose::Login,
        browser.jar.login_cookies()[0].value(),
    );
    assert_eq!(login["provider"], "other");
    browser
        .start_login(&json!({"provider": "other"}).to_string())
        .await;
    let callback = provider_login(&url, "alice").await;
    let end = browser.end_login(&callback).await;
    assert_eq!(end.status, 200, "{:?}", end.body);
    assert_eq!(end.body["isLoggedIn"], true);
    app.assert_alive().await;
}

/// Where the test provider sends server-side logins back: token-handler's callback, as the
/// provider knows it (the browser then loads it on token-handler's address).
const CALLBACK_ORIGIN: &str = "https://th.example.test";
const CALLBACK_PATH: &str = "/oauth-agent/login/callback";

fn callback_uri() -> String {
    format!("{CALLBACK_ORIGIN}{CALLBACK_PATH}")
}

/// The test provider with its `spa-client` allowed to return to the SPA and to the callback.
async fn provider_with_callback() -> TestProvider {
    let uris = json!([REDIRECT_URI, callback_uri()]);
    TestProvider::start_with(json!({"clients": [{
        "client_id": "spa-client",
        "client_secret": "spa-secret",
        "token_endpoint_auth_method": "client_secret_basic",
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "redirect_uris": uris,
        "post_logout_redirect_uris": uris,
    }]}))
    .await
}

/// Server-side logins on: `server` returns to the callback, `spa` to the SPA.
fn server_login_config(issuer: &str) -> TestConfig {
    TestConfig::with_providers([
        ProviderConfig::spa_client("server", issuer)
            .scope("openid profile email offline_access")
            .redirect_uris(&callback_uri()),
        ProviderConfig::spa_client("spa", issuer),
    ])
    .server_login(
        CALLBACK_PATH,
        &["/", "/done", "https://www.example.test/account?tab=1"],
    )
}

/// A browser following links: no Origin header (browsers send none on GET navigations).
fn navigating(app: &TestApp) -> Browser {
    let mut browser = app.browser();
    browser.origin = None;
    browser
}

fn encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// `GET /login?…`; on a 302, the provider's URL.
async fn get_login(browser: &mut Browser, query: &str) -> Resp {
    browser.get(&format!("/login?{query}")).await
}

/// Loads the provider's redirect to the callback in the browser, as a navigation the provider
/// started (cross-site).
async fn load_callback(browser: &mut Browser, callback: &str) -> Resp {
    let path = callback
        .strip_prefix(CALLBACK_ORIGIN)
        .expect("a redirect to the callback");
    browser
        .raw(
            awc::http::Method::GET,
            path,
            None,
            &[
                ("sec-fetch-site", "cross-site"),
                ("sec-fetch-mode", "navigate"),
            ],
        )
        .await
}

#[actix_web::test]
async fn a_server_side_login_ends_at_an_allowed_return_to_with_session_cookies() {
    let provider = provider_with_callback().await;
    let app = TestApp::spawn_with(&server_login_config(&provider.issuer)).await;
    let mut browser = navigating(&app);

    let start = get_login(
        &mut browser,
        &format!("provider=server&return_to={}", encode("/done")),
    )
    .await;
    assert_eq!(start.status, 302, "{:?}", start.body);
    let location = start.header("location").expect("Location");
    assert!(location.starts_with(&provider.issuer), "{location}");
    assert_eq!(query_param(&location, "redirect_uri"), Some(callback_uri()));
    assert!(query_param(&location, "code_challenge").is_some());
    let login_cookies = browser.jar.login_cookies();
    assert_eq!(login_cookies.len(), 1);
    assert_eq!(login_cookies[0].path(), Some("/oauth-agent/login"));
    let sealed: serde_json::Value = app.unseal(
        token_handler::crypto::Purpose::Login,
        login_cookies[0].value(),
    );
    assert_eq!(sealed["return_to"], "https://www.example.test/done");

    let callback = provider_login_to(&location, "alice", &callback_uri()).await;
    let done = load_callback(&mut browser, &callback).await;
    assert_eq!(done.status, 303, "{:?}", done.body);
    assert_eq!(
        done.header("location").as_deref(),
        Some("https://www.example.test/done")
    );
    assert_eq!(
        done.header("referrer-policy").as_deref(),
        Some("no-referrer")
    );
    assert_eq!(done.header("cache-control").as_deref(), Some("no-store"));
    for kind in ["th-at", "th-csrf", "th-auth", "th-id"] {
        assert!(!done.cookies_named(kind).is_empty(), "{kind} not set");
    }
    assert!(
        browser.jar.login_cookies().is_empty(),
        "the login cookie stays"
    );

    // The session works for the SPA's calls, and the page load at login/end sees it.
    browser.origin = Some(SPA_ORIGIN.into());
    let user = browser.get("/userInfo").await;
    assert_eq!(user.status, 200, "{:?}", user.body);
    assert_eq!(user.body["sub"], "alice");
    let page = browser.end_login("https://www.example.test/done").await;
    assert_eq!(page.body["isLoggedIn"], true);

    // The same response again: its login is over, so there is nothing to complete.
    browser.origin = None;
    let replay = load_callback(&mut browser, &callback).await;
    assert_eq!(replay.status, 401, "{:?}", replay.body);
    assert!(replay.header("location").is_none());

    // No return_to: the first configured target.
    let mut other = navigating(&app);
    let start = get_login(&mut other, "provider=server").await;
    assert_eq!(start.status, 302);
    let callback = provider_login_to(
        &start.header("location").expect("Location"),
        "bob",
        &callback_uri(),
    )
    .await;
    let done = load_callback(&mut other, &callback).await;
    assert_eq!(
        done.header("location").as_deref(),
        Some("https://www.example.test/")
    );
    app.assert_alive().await;
}

#[actix_web::test]
async fn get_login_refuses_every_return_to_not_configured() {
    let provider = provider_with_callback().await;
    let app = TestApp::spawn_with(&server_login_config(&provider.issuer)).await;
    let mut browser = navigating(&app);
    for (i, evil) in [
        "//evil.example",
        "//evil.example/done",
        "///evil.example",
        "/\\evil.example",
        "\\\\evil.example",
        "/\t/evil.example",
        "https://evil.example",
        "https://evil.example/done",
        "http://www.example.test/done",
        "https://www.example.test@evil.example/done",
        "https://www.example.test:443@evil.example/",
        "https://user@www.example.test/done",
        "https://www.example.test.evil.example/done",
        "https:evil.example",
        "javascript:alert(document.cookie)",
        "data:text/html,<script>alert(1)</script>",
        "/%2F%2Fevil.example",
        "%2F%2Fevil.example",
        "/%5Cevil.example",
        "/done/../../evil.example",
        "/done#@evil.example",
        "/done?next=https://evil.example",
        "/account?tab=2",
        "",
    ]
    .iter()
    .enumerate()
    {
        // Once percent-encoded as a browser would, and once encoded twice.
        for query in [
            format!("provider=server&return_to={}", encode(evil)),
            format!("provider=server&return_to={}", encode(&encode(evil))),
        ] {
            let resp = get_login(&mut browser, &query).await;
            assert_eq!(resp.status, 400, "case {i} {evil:?}: {:?}", resp.body);
            assert_eq!(resp.code(), "invalid_request", "{evil:?}");
            assert!(resp.header("location").is_none(), "{evil:?}");
            assert!(resp.login_cookies().is_empty(), "{evil:?}");
        }
    }
    // Two return_to: refused, whichever comes first.
    let twice = get_login(
        &mut browser,
        &format!("return_to=%2F&return_to={}", encode("https://evil.example")),
    )
    .await;
    assert_eq!(twice.status, 400);
    // The configured ones pass, and are what the login returns to.
    for (ok, sealed) in [
        ("/", "https://www.example.test/"),
        ("https://www.example.test", "https://www.example.test/"),
        ("/done", "https://www.example.test/done"),
        (
            "https://www.example.test/account?tab=1",
            "https://www.example.test/account?tab=1",
        ),
    ] {
        let mut fresh = navigating(&app);
        let resp = get_login(&mut fresh, &format!("return_to={}", encode(ok))).await;
        assert_eq!(resp.status, 302, "{ok}: {:?}", resp.body);
        let login: serde_json::Value = app.unseal(
            token_handler::crypto::Purpose::Login,
            fresh.jar.login_cookies()[0].value(),
        );
        assert_eq!(login["return_to"], sealed);
    }
    app.assert_alive().await;
}

#[actix_web::test]
async fn get_login_refuses_what_is_not_a_server_side_login() {
    let provider = provider_with_callback().await;
    let app = TestApp::spawn_with(&server_login_config(&provider.issuer)).await;
    let mut browser = navigating(&app);
    // A provider that returns to the SPA cannot be completed here.
    let spa = get_login(&mut browser, "provider=spa").await;
    assert_eq!(spa.status, 400, "{:?}", spa.body);
    assert!(spa.body["message"]
        .as_str()
        .unwrap_or("")
        .contains("login/start"));
    let unknown = get_login(&mut browser, "provider=nope").await;
    assert_eq!(unknown.status, 400);
    // Not a navigation: a script or an image of another page.
    let fetched = browser
        .request(
            awc::http::Method::GET,
            "/login?provider=server",
            None,
            &[("sec-fetch-mode", "no-cors")],
        )
        .await;
    assert_eq!(fetched.status, 400);
    // Another site's script (an Origin that is not trusted).
    browser.origin = Some("https://evil.example".into());
    assert_eq!(get_login(&mut browser, "provider=server").await.status, 401);
    assert!(browser.jar.login_cookies().is_empty());
    browser.origin = None;
    assert_eq!(browser.post("/login", "").await.status, 405);
    app.assert_alive().await;
}

#[actix_web::test]
async fn the_callback_refuses_responses_of_logins_this_browser_did_not_start() {
    let provider = provider_with_callback().await;
    let app = TestApp::spawn_with(&server_login_config(&provider.issuer)).await;

    // The attacker signs in as himself up to the provider's redirect, and stops there.
    let mut attacker = navigating(&app);
    let start = get_login(&mut attacker, "provider=server").await;
    let attackers_callback = provider_login_to(
        &start.header("location").expect("Location"),
        "mallory",
        &callback_uri(),
    )
    .await;

    // The victim has a login of her own in progress; the attacker's response is not hers.
    let mut victim = navigating(&app);
    let victims_start = get_login(&mut victim, "provider=server").await;
    assert_eq!(victims_start.status, 302);
    let refused = load_callback(&mut victim, &attackers_callback).await;
    assert_eq!(refused.status, 400, "{:?}", refused.body);
    assert_eq!(refused.code(), "invalid_request");
    assert!(refused.header("location").is_none());
    assert!(refused.cookies_named("th-at").is_empty());
    assert_eq!(victim.jar.login_cookies().len(), 1, "her own login stays");

    // A made-up state, a browser without any login, and no state at all.
    let made_up = load_callback(
        &mut victim,
        &format!(
            "{}?code=x&state=made-up&iss={}",
            callback_uri(),
            encode(&provider.issuer)
        ),
    )
    .await;
    assert_eq!(made_up.status, 400);
    let mut fresh = navigating(&app);
    let none = load_callback(&mut fresh, &attackers_callback).await;
    assert_eq!(none.status, 401, "{:?}", none.body);
    assert_eq!(none.code(), "unauthorized_request");
    assert!(none.cookies_named("th-at").is_empty());
    let no_state = load_callback(&mut victim, &format!("{}?code=x", callback_uri())).await;
    assert_eq!(no_state.status, 400);

    // The attacker's own browser still completes his login: the refusals were about binding.
    let done = load_callback(&mut attacker, &attackers_callback).await;
    assert_eq!(done.status, 303, "{:?}", done.body);
    app.assert_alive().await;
}

#[actix_web::test]
async fn a_failed_server_side_login_returns_with_an_error_code() {
    let provider = provider_with_callback().await;
    let app = TestApp::spawn_with(&server_login_config(&provider.issuer)).await;
    let mut browser = navigating(&app);
    let start = get_login(&mut browser, &format!("return_to={}", encode("/done"))).await;
    let state = query_param(&start.header("location").expect("Location"), "state").expect("state");
    let denied = load_callback(
        &mut browser,
        &format!(
            "{}?error=access_denied&state={}&iss={}",
            callback_uri(),
            encode(&state),
            encode(&provider.issuer)
        ),
    )
    .await;
    assert_eq!(denied.status, 303, "{:?}", denied.body);
    assert_eq!(
        denied.header("location").as_deref(),
        Some("https://www.example.test/done?error=access_denied")
    );
    assert!(denied.cookies_named("th-at").is_empty());
    assert!(
        browser.jar.login_cookies().is_empty(),
        "the failed login is over"
    );
}

#[actix_web::test]
async fn server_side_logins_share_the_login_rate_limits() {
    let provider = provider_with_callback().await;
    let app =
        TestApp::spawn_with(&server_login_config(&provider.issuer).login_rate_limit(1, 1)).await;
    let mut browser = navigating(&app);
    assert_eq!(get_login(&mut browser, "").await.status, 302);
    let limited = get_login(&mut browser, "").await;
    assert_eq!(limited.status, 429);
    assert!(limited.header("retry-after").is_some());
    // The callback counts as login/end: its own bucket, then limited too.
    let first = load_callback(&mut browser, &format!("{}?code=x&state=y", callback_uri())).await;
    assert_ne!(first.status, 429);
    let second = load_callback(&mut browser, &format!("{}?code=x&state=y", callback_uri())).await;
    assert_eq!(second.status, 429);
}
