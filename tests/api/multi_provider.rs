//! Several providers in one browser (issue 15, "Which provider"): `login/start` with a provider
//! adds its session beside the others, each route forwards its own provider's token, `/userInfo`
//! and `/claims` take `?provider=`, and `logout` ends one provider's session or all of them.

use crate::helpers::*;
use crate::redis::RedisServer;
use crate::upstream::Upstream;
use awc::http::Method;
use serde_json::{json, Value};
use token_handler::crypto::Purpose;
use token_handler::session::RefreshTokenCookie;

/// Two test providers: `main` (the default, first) and `drive`, each its own oidc-provider,
/// and an upstream that trusts both, behind `/main-api` (no provider: the default's session) and
/// `/drive-api` (`provider = "drive"`).
struct TwoProviders {
    main: TestProvider,
    drive: TestProvider,
    app: TestApp,
}

async fn two_providers() -> TwoProviders {
    two_providers_with(json!({}), |c| c).await
}

/// As [`two_providers`], both started with `options`, and the configuration `tweak`ed.
async fn two_providers_with(
    options: Value,
    tweak: impl FnOnce(TestConfig) -> TestConfig,
) -> TwoProviders {
    let main = TestProvider::start_with(options.clone()).await;
    let drive = TestProvider::start_with(options).await;
    let upstream = Upstream::start_many(&[&main.issuer, &drive.issuer]).await;
    let config = TestConfig::with_providers([
        ProviderConfig::spa_client("main", &main.issuer).require_iss(),
        ProviderConfig::spa_client("drive", &drive.issuer).require_iss(),
    ])
    .route(RouteConfig::new("/main-api", &upstream.address))
    .route(RouteConfig::new("/drive-api", &upstream.address).provider("drive"));
    let app = TestApp::spawn_with(&tweak(config)).await;
    TwoProviders { main, drive, app }
}

async fn login_with(browser: &mut Browser, provider: &str, user: &str) -> Resp {
    let url = browser
        .start_login(&json!({"provider": provider}).to_string())
        .await;
    let callback = provider_login(&url, user).await;
    browser.end_login(&callback).await
}

async fn call(browser: &mut Browser, method: Method, path: &str) -> Resp {
    let body = (method == Method::POST).then(|| b"{}".to_vec());
    browser.raw(method, path, body, &[]).await
}

/// Whether the upstream saw `user`'s token from `issuer`.
fn token_of(resp: &Resp, issuer: &str, user: &str) -> bool {
    resp.status == 200 && resp.body["iss"] == issuer && resp.body["sub"] == user
}

#[actix_web::test]
async fn one_browser_holds_a_session_with_each_provider_and_each_route_gets_its_own_token() {
    let TwoProviders { main, drive, app } = two_providers().await;
    let mut browser = app.browser();
    let resp = login_with(&mut browser, "main", "alice").await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    let csrf = browser.csrf.clone().expect("csrf");

    // The drive route before any drive login: 401, naming the provider to sign in with.
    for method in [Method::GET, Method::POST] {
        let resp = call(&mut browser, method, "/drive-api/files").await;
        assert_eq!(resp.status, 401, "{:?}", resp.body);
        assert_eq!(resp.code(), "unauthorized_request");
        assert_eq!(resp.body["provider"], "drive");
    }
    let resp = browser.get("/userInfo?provider=drive").await;
    assert_eq!(
        (resp.status, resp.body["provider"].clone()),
        (401, "drive".into())
    );

    // The drive login adds a session; the main one is untouched, the CSRF value is the same.
    let resp = login_with(&mut browser, "drive", "bob").await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    assert_eq!(browser.csrf.as_deref(), Some(csrf.as_str()));
    assert!(resp
        .set_cookies
        .iter()
        .all(|c| !c.starts_with("__Host-th-at=") && !c.starts_with("__Secure-th-auth=")));
    for name in [
        "__Host-th-at",
        "__Host-th-at_drive",
        "__Secure-th-auth_drive",
        "__Secure-th-id_drive",
        "__Host-th-csrf",
    ] {
        assert!(browser.jar.all().iter().any(|c| c.name() == name), "{name}");
    }

    // Each route gets its own provider's token, for reads and writes.
    for method in [Method::GET, Method::POST] {
        let resp = call(&mut browser, method.clone(), "/main-api/x").await;
        assert!(token_of(&resp, &main.issuer, "alice"), "{:?}", resp.body);
        let resp = call(&mut browser, method, "/drive-api/x").await;
        assert!(token_of(&resp, &drive.issuer, "bob"), "{:?}", resp.body);
        // None of our cookies reach the upstream, whichever provider they belong to.
        let sent = resp.body["headers"]["cookie"].to_string();
        assert!(!sent.contains("th-"), "{sent}");
    }

    // userInfo and claims: the default provider's session, or the one asked for.
    assert_eq!(browser.get("/userInfo").await.body["sub"], "alice");
    assert_eq!(
        browser.get("/userInfo?provider=main").await.body["sub"],
        "alice"
    );
    assert_eq!(
        browser.get("/userInfo?provider=drive").await.body["sub"],
        "bob"
    );
    assert_eq!(
        browser.get("/claims?provider=drive").await.body["iss"],
        Value::from(drive.issuer.as_str())
    );
    assert_eq!(
        browser.get("/claims").await.body["iss"],
        Value::from(main.issuer.as_str())
    );
    let resp = browser.get("/userInfo?provider=nope").await;
    assert_eq!((resp.status, resp.code()), (400, "invalid_request"));
    let session = browser.get("/session").await;
    assert_eq!(session.body["isLoggedIn"], true);
    assert_eq!(session.body["providers"], json!(["main", "drive"]));

    // A refresh of the drive session goes to the drive provider only.
    assert_eq!(
        browser.post("/refresh?provider=drive", "").await.status,
        204
    );
    assert_eq!(drive.stats().await["refresh_grants"], 1);
    assert_eq!(main.stats().await["refresh_grants"], 0);
    let resp = call(&mut browser, Method::GET, "/drive-api/x").await;
    assert!(token_of(&resp, &drive.issuer, "bob"), "{:?}", resp.body);

    // Logging out of drive ends its session only: its tokens revoked, its cookies cleared
    // with the names and paths they were set with; the main session goes on.
    let resp = browser
        .post("/logout", &json!({"provider": "drive"}).to_string())
        .await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    assert!(resp.body["url"]
        .as_str()
        .is_some_and(|u| u.starts_with(&drive.issuer)));
    assert!(drive.stats().await["revocations"].as_i64() >= Some(1));
    assert_eq!(main.stats().await["revocations"], 0);
    assert!(!resp.set_cookies.is_empty());
    for removal in &resp.set_cookies {
        let name = removal.split('=').next().unwrap_or_default();
        assert!(name.ends_with("_drive"), "{removal}");
    }
    assert!(browser
        .jar
        .all()
        .iter()
        .all(|c| !c.name().contains("_drive")));
    let resp = call(&mut browser, Method::GET, "/drive-api/x").await;
    assert_eq!(
        (resp.status, resp.body["provider"].clone()),
        (401, "drive".into())
    );
    let resp = call(&mut browser, Method::POST, "/main-api/x").await;
    assert!(token_of(&resp, &main.issuer, "alice"), "{:?}", resp.body);
    assert_eq!(browser.get("/userInfo").await.body["sub"], "alice");
    assert_eq!(
        browser.get("/session").await.body["providers"],
        json!(["main"])
    );

    // Signed in with drive again, then logged out of everything: every session ends.
    assert_eq!(login_with(&mut browser, "drive", "bob").await.status, 200);
    let resp = call(&mut browser, Method::GET, "/drive-api/x").await;
    assert!(token_of(&resp, &drive.issuer, "bob"), "{:?}", resp.body);
    let resp = browser.post("/logout", "").await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    assert!(main.stats().await["revocations"].as_i64() >= Some(1));
    let ours: Vec<&str> = browser
        .jar
        .all()
        .iter()
        .map(|c| c.name())
        .filter(|n| n.contains("th-"))
        .collect();
    assert!(ours.is_empty(), "{ours:?}");
    for path in ["/main-api/x", "/drive-api/x"] {
        assert_eq!(call(&mut browser, Method::GET, path).await.status, 401);
    }
    app.assert_alive().await;
}

#[actix_web::test]
async fn a_session_cookie_renamed_to_another_providers_name_does_not_open() {
    let TwoProviders { main, drive, app } = two_providers().await;

    // Main's session under drive's names: the drive route must not forward main's token.
    let mut browser = app.browser();
    assert_eq!(login_with(&mut browser, "main", "alice").await.status, 200);
    let resp = call(&mut browser, Method::GET, "/main-api/x").await;
    assert!(token_of(&resp, &main.issuer, "alice"), "{:?}", resp.body);
    for name in ["__Host-th-at", "__Secure-th-auth", "__Secure-th-id"] {
        browser.jar.rename(name, &format!("{name}_drive"));
    }
    for method in [Method::GET, Method::POST] {
        let resp = call(&mut browser, method, "/drive-api/x").await;
        assert_eq!(resp.status, 401, "{:?}", resp.body);
        assert_eq!(resp.code(), "unauthorized_request");
    }
    let resp = browser.get("/userInfo?provider=drive").await;
    assert_eq!(resp.status, 401, "{:?}", resp.body);

    // Drive's session under the default names: the main route must not forward drive's token.
    let mut browser = app.browser();
    assert_eq!(login_with(&mut browser, "drive", "bob").await.status, 200);
    let resp = call(&mut browser, Method::GET, "/drive-api/x").await;
    assert!(token_of(&resp, &drive.issuer, "bob"), "{:?}", resp.body);
    for name in ["__Host-th-at", "__Secure-th-auth", "__Secure-th-id"] {
        browser.jar.rename(&format!("{name}_drive"), name);
    }
    let resp = call(&mut browser, Method::GET, "/main-api/x").await;
    assert_eq!(resp.status, 401, "{:?}", resp.body);
    let resp = browser.get("/userInfo").await;
    assert_eq!(resp.status, 401, "{:?}", resp.body);
    app.assert_alive().await;
}

#[actix_web::test]
async fn a_browser_signed_in_with_another_provider_only_keeps_working_without_naming_it() {
    // Before sessions per provider, a login with a non-default provider was the browser's one
    // session: routes and agent endpoints that name no provider still use it.
    let TwoProviders {
        main: _main,
        drive,
        app,
    } = two_providers().await;
    let mut browser = app.browser();
    assert_eq!(login_with(&mut browser, "drive", "bob").await.status, 200);
    let resp = call(&mut browser, Method::POST, "/main-api/x").await;
    assert!(token_of(&resp, &drive.issuer, "bob"), "{:?}", resp.body);
    assert_eq!(browser.get("/userInfo").await.body["sub"], "bob");
    assert_eq!(browser.get("/session").await.body["isLoggedIn"], true);
    let resp = browser
        .post("/login/end", &json!({"pageUrl": SPA_ORIGIN}).to_string())
        .await;
    assert_eq!(resp.body["isLoggedIn"], true, "{:?}", resp.body);
    // But the default provider's session, asked for by name, is not there.
    let resp = browser.get("/userInfo?provider=main").await;
    assert_eq!(
        (resp.status, resp.body["provider"].clone()),
        (401, "main".into())
    );
}

/// Alice's main session works: reads and writes through its route (the CSRF value kept), and
/// `/userInfo` without a provider; `after` names what came before, for the messages.
async fn main_goes_on(b: &mut Browser, issuer: &str, after: &str) {
    for method in [Method::GET, Method::POST] {
        let resp = call(b, method, "/main-api/x").await;
        assert!(token_of(&resp, issuer, "alice"), "{after}: {:?}", resp.body);
    }
    assert_eq!(b.get("/userInfo").await.body["sub"], "alice", "{after}");
}

#[actix_web::test]
async fn one_providers_session_ending_clears_its_cookies_and_leaves_the_others_working() {
    // ID tokens outlive the hours our clock moves by (a refreshed one's `exp` is checked
    // against our clock).
    let week = json!({"idTokenTtl": 7 * 24 * 3600});
    let TwoProviders { main, drive, app } = two_providers_with(week, |c| c).await;
    let mut browser = app.browser();
    assert_eq!(login_with(&mut browser, "main", "alice").await.status, 200);
    assert_eq!(login_with(&mut browser, "drive", "bob").await.status, 200);
    // Drive's provider ends the grant (the user withdrew consent there), and both access
    // tokens expire: main refreshes, drive's refresh token is refused.
    let rt: RefreshTokenCookie =
        app.unseal(Purpose::RefreshToken, &browser.jar.value("th-auth_drive"));
    drive.revoke_directly(rt.token.expose()).await;
    app.state.clock.advance(2 * 3600);
    let ours = |b: &Browser, provider: &str| -> Vec<String> {
        b.jar
            .all()
            .iter()
            .map(|c| base_name(c.name()).to_string())
            .filter(|n| n.starts_with("th-") && n.contains(provider))
            .collect()
    };
    // Wherever the end is found (the SPA's refresh, a call through the proxy), only drive's
    // cookies are removed: main's session, and the CSRF cookie they share, keep working.
    for (method, path) in [
        (Method::POST, "/refresh?provider=drive"),
        (Method::GET, "/drive-api/x"),
        (Method::POST, "/drive-api/x"),
    ] {
        let mut b = browser.clone();
        let resp = match path.starts_with("/drive-api") {
            true => call(&mut b, method, path).await,
            false => b.request(method, path, Some("{}"), &[]).await,
        };
        assert_eq!(resp.code(), "session_expired", "{path}: {:?}", resp.body);
        // Named, so the SPA signs in with drive again and keeps its CSRF value for main.
        assert_eq!(resp.body["provider"], "drive", "{path}: {:?}", resp.body);
        assert_eq!(ours(&b, "_drive"), Vec::<String>::new(), "{path}");
        assert!(
            resp.set_cookies
                .iter()
                .all(|c| c.contains("_drive") || c.contains("-nt-")),
            "{path} removed another session's cookies: {:?}",
            resp.set_cookies
        );
        main_goes_on(&mut b, &main.issuer, path).await;
        let resp = b.get("/userInfo?provider=drive").await;
        assert_eq!(resp.body["provider"], "drive", "{path}: {:?}", resp.body);
    }
    // When the session that ends is the browser's last, every cookie goes, the CSRF one too.
    let mut b = browser.clone();
    let resp = call(&mut b, Method::GET, "/main-api/x").await;
    assert!(token_of(&resp, &main.issuer, "alice"), "{:?}", resp.body);
    let resp = b.post("/refresh?provider=drive", "{}").await;
    assert_eq!(resp.code(), "session_expired", "{:?}", resp.body);
    let rt: RefreshTokenCookie = app.unseal(Purpose::RefreshToken, &b.jar.value("th-auth"));
    main.revoke_directly(rt.token.expose()).await;
    app.state.clock.advance(2 * 3600);
    let resp = call(&mut b, Method::GET, "/main-api/x").await;
    assert_eq!(resp.code(), "session_expired", "{:?}", resp.body);
    assert!(resp.body.get("provider").is_none(), "{:?}", resp.body);
    assert_eq!(ours(&b, ""), Vec::<String>::new());
    app.assert_alive().await;
}

#[actix_web::test]
async fn a_providers_session_ended_by_its_logout_leaves_the_others_working() {
    // The agent endpoints' and the proxy's ended-session check (`[store]`): `sessions revoke`
    // ends bob's drive session; alice's main session in the same browser goes on.
    let redis = RedisServer::start().await;
    let TwoProviders {
        main,
        drive: _drive,
        app,
    } = two_providers_with(json!({}), |c| {
        c.store(&redis.url())
            .store_key("revocation_cache", "200ms")
            .store_key("admin_listen", "127.0.0.1:0")
    })
    .await;
    let mut browser = app.browser();
    assert_eq!(login_with(&mut browser, "main", "alice").await.status, 200);
    assert_eq!(login_with(&mut browser, "drive", "bob").await.status, 200);
    let admin = app.admin_address.clone().expect("admin listener");
    let resp = awc::Client::default()
        .post(format!("{admin}/sessions/revoke"))
        .send_json(&json!({"provider": "drive", "sub": "bob"}))
        .await
        .expect("revoke");
    assert_eq!(resp.status().as_u16(), 200);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    for (method, path) in [
        (Method::GET, "/userInfo?provider=drive"),
        (Method::GET, "/session?provider=drive"),
        (Method::GET, "/drive-api/x"),
    ] {
        let mut b = browser.clone();
        let resp = match path.starts_with("/drive-api") {
            true => call(&mut b, method, path).await,
            false => b.request(method, path, None, &[]).await,
        };
        assert_eq!(resp.code(), "session_expired", "{path}: {:?}", resp.body);
        assert_eq!(resp.body["provider"], "drive", "{path}: {:?}", resp.body);
        let left: Vec<_> = b
            .jar
            .all()
            .iter()
            .filter(|c| c.name().contains("_drive"))
            .map(|c| c.name().to_string())
            .collect();
        assert!(left.is_empty(), "{path} left {left:?}");
        main_goes_on(&mut b, &main.issuer, path).await;
    }
    app.assert_alive().await;
}
