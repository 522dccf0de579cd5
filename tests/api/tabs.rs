//! Several tabs signing in at once (issue 13, part 2): each login flow has a cookie of its own,
//! named from its state, so one tab's `login/start` no longer overwrites another's login, and
//! `login/end` finishes exactly the flow its callback's state names.

use crate::helpers::*;

/// The login cookies the browser holds, by unprefixed name, sorted.
fn login_names(browser: &Browser) -> Vec<String> {
    let mut names: Vec<String> = browser
        .jar
        .login_cookies()
        .iter()
        .map(|c| base_name(c.name()).to_string())
        .collect();
    names.sort();
    names
}

/// The login cookies a response removes (Max-Age=0), by unprefixed name, sorted.
fn removed_logins(resp: &Resp) -> Vec<String> {
    let mut names: Vec<String> = resp
        .login_cookies()
        .iter()
        .filter(|c| c.max_age().is_some_and(|m| m.is_zero()))
        .map(|c| base_name(c.name()).to_string())
        .collect();
    names.sort();
    names
}

#[actix_web::test]
async fn five_interleaved_logins_all_complete_each_removing_only_its_own_cookie() {
    let op = TestProvider::start().await;
    let app = TestApp::spawn(&op.issuer).await;
    let mut browser = app.browser();
    // Five tabs start a login before any finishes.
    let mut flows = Vec::new();
    for tab in 0..5 {
        let url = browser.start_login("").await;
        let state = query_param(&url, "state").expect("state");
        flows.push((tab, url, state));
    }
    let mut pending: Vec<String> = flows.iter().map(|(_, _, s)| login_cookie_name(s)).collect();
    pending.sort();
    assert_eq!(login_names(&browser), pending, "one cookie per flow");
    // Each signs in at the provider, and they come back in another order.
    for &i in &[3, 0, 4, 1, 2] {
        let (tab, url, state) = &flows[i];
        let user = format!("tab{tab}");
        let callback = provider_login(url, &user).await;
        let resp = browser.end_login(&callback).await;
        assert_eq!(resp.status, 200, "tab {tab}: {:?}", resp.body);
        assert_eq!(resp.body["handled"], true);
        assert_eq!(resp.body["isLoggedIn"], true);
        // Exactly this flow's cookie goes; the others stay.
        let own = login_cookie_name(state);
        assert_eq!(
            removed_logins(&resp),
            std::slice::from_ref(&own),
            "tab {tab}"
        );
        pending.retain(|n| *n != own);
        assert_eq!(login_names(&browser), pending, "tab {tab}");
        // The session is the one this tab just signed in.
        let claims = browser.get("/claims").await;
        assert_eq!(claims.status, 200, "{:?}", claims.body);
        assert_eq!(claims.body["sub"], user.as_str());
    }
    assert!(browser.jar.login_cookies().is_empty());
    assert_eq!(op.stats().await["authorization_code_grants"], 5);
    // The last session works everywhere, including a refresh (POST with its CSRF value).
    assert_eq!(browser.post("/refresh", "").await.status, 204);
    let info = browser.get("/userInfo").await;
    assert_eq!(info.status, 200, "{:?}", info.body);
    assert_eq!(info.body["sub"], "tab2");
}

#[actix_web::test]
async fn unknown_and_replayed_states_fail_as_before_and_remove_no_other_login() {
    let op = TestProvider::start().await;
    let app = TestApp::spawn(&op.issuer).await;
    let mut browser = app.browser();
    let url_a = browser.start_login("").await;
    let url_b = browser.start_login("").await;
    let state_b = query_param(&url_b, "state").expect("state");
    let callback_a = provider_login(&url_a, "alice").await;
    let callback_b = provider_login(&url_b, "bob").await;

    // A made-up state (with B's real code): the stable error of a state mismatch, B's code is
    // not redeemed, and neither pending login is touched.
    let code_b = query_param(&callback_b, "code").expect("code");
    let before = login_names(&browser);
    assert_eq!(before.len(), 2);
    let forged = browser
        .end_login(&format!(
            "https://www.example.test/?code={code_b}&state=forged"
        ))
        .await;
    assert_eq!(forged.status, 400, "{:?}", forged.body);
    assert_eq!(forged.code(), "invalid_request");
    assert!(
        forged.login_cookies().is_empty(),
        "{:?}",
        forged.set_cookies
    );
    assert_eq!(login_names(&browser), before);
    assert_eq!(op.stats().await["authorization_code_grants"], 0);

    // A finishes; replaying its callback while B is pending is the same error and leaves B.
    assert_eq!(browser.end_login(&callback_a).await.status, 200);
    let replay = browser.end_login(&callback_a).await;
    assert_eq!(replay.status, 400, "{:?}", replay.body);
    assert_eq!(replay.code(), "invalid_request");
    assert!(
        replay.login_cookies().is_empty(),
        "{:?}",
        replay.set_cookies
    );
    assert_eq!(login_names(&browser), [login_cookie_name(&state_b)]);
    assert_eq!(op.stats().await["authorization_code_grants"], 1);

    // B still completes; then replaying either callback is a harmless page load, as today.
    let resp = browser.end_login(&callback_b).await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    assert_eq!(resp.body["handled"], true);
    for callback in [&callback_a, &callback_b] {
        let again = browser.end_login(callback).await;
        assert_eq!(again.status, 200, "{:?}", again.body);
        assert_eq!(again.body["handled"], false);
        assert_eq!(again.body["isLoggedIn"], true);
    }
    // In a browser without the login (a login CSRF attempt): 401, as today.
    let mut stranger = app.browser();
    let resp = stranger.end_login(&callback_b).await;
    assert_eq!(resp.status, 401, "{:?}", resp.body);
    assert_eq!(resp.code(), "unauthorized_request");
    assert_eq!(op.stats().await["authorization_code_grants"], 2);
    app.assert_alive().await;
}

#[actix_web::test]
async fn at_most_five_logins_are_kept_and_the_oldest_is_dropped() {
    let op = TestProvider::start().await;
    let app = TestApp::spawn(&op.issuer).await;
    let mut browser = app.browser();
    let mut urls = Vec::new();
    for _ in 0..5 {
        urls.push(browser.start_login("").await);
        app.state.clock.advance(1);
    }
    let first_state = query_param(&urls[0], "state").expect("state");
    assert_eq!(browser.jar.login_cookies().len(), 5);
    // The sixth drops the first (the oldest), and only it.
    let resp = browser.post("/login/start", "").await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    urls.push(
        resp.body["authorizationRequestUrl"]
            .as_str()
            .expect("url")
            .to_string(),
    );
    assert_eq!(removed_logins(&resp), [login_cookie_name(&first_state)]);
    assert_eq!(browser.jar.login_cookies().len(), 5);
    // The dropped login can no longer finish; the newest can.
    let first = provider_login(&urls[0], "alice").await;
    let resp = browser.end_login(&first).await;
    assert_eq!(resp.status, 400, "{:?}", resp.body);
    assert_eq!(resp.code(), "invalid_request");
    let last = provider_login(&urls[5], "alice").await;
    let resp = browser.end_login(&last).await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    assert_eq!(browser.jar.login_cookies().len(), 4);

    // A page that starts logins in a loop: what the browser sends to the login path stays
    // bounded.
    let mut looping = app.browser();
    for _ in 0..20 {
        let resp = looping.post("/login/start", "").await;
        assert_eq!(resp.status, 200, "{:?}", resp.body);
        assert!(looping.jar.login_cookies().len() <= 5);
    }
    let header = looping.jar.header_for(&format!("{BASE}/login/start"));
    assert!(header.len() < 5 * 600, "{} bytes", header.len());
    app.assert_alive().await;
}

#[actix_web::test]
async fn a_login_started_before_the_upgrade_completes_with_the_old_cookie_name() {
    let op = TestProvider::start().await;
    let app = TestApp::spawn(&op.issuer).await;
    let mut browser = app.browser();
    let url = browser.start_login("").await;
    // What an older version wrote: the same sealed login under the single `-login` name.
    let flow = browser.jar.login_cookies()[0].name().to_string();
    // The flow id is base64url and may itself contain `-`: cut after `-login`, not at the last `-`.
    let end = flow.find("-login-").expect("flow name") + "-login".len();
    let old = flow[..end].to_string();
    browser.jar.rename(&flow, &old);
    assert_eq!(login_names(&browser), ["th-login"]);
    let callback = provider_login(&url, "alice").await;
    let resp = browser.end_login(&callback).await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    assert_eq!(resp.body["handled"], true);
    assert_eq!(removed_logins(&resp), ["th-login"]);
    assert!(browser.jar.login_cookies().is_empty());
    // And logout still clears the old name at the login path.
    let resp = browser.post("/logout", "").await;
    assert_eq!(resp.status, 200);
    assert!(removed_logins(&resp).contains(&"th-login".to_string()));
}
