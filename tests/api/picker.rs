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
