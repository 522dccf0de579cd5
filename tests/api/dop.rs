//! The provider tests against a third, independent implementation: django-oidc-provider
//! (Python, PyPI; not django-oauth-toolkit's code), started from `tests/providers/dop/serve.py`
//! in the virtual environment `tests/providers/install.sh` makes (scripts/test.sh runs it).
//!
//! Each client authentication method it supports (`client_secret_basic`, `client_secret_post`,
//! a public client with `none`; it has no `private_key_jwt`), and a client whose ID tokens it
//! signs with HS256 and the client secret, go through login (its login form, and its consent
//! page for `post-client` and the public client), `/claims`, `/userInfo`, a proxied call to a
//! resource server that introspects the token at the provider, refresh (it rotates both tokens)
//! and logout through its end-session endpoint. It has no revocation endpoint, so the tokens
//! outlive the session at the provider until they expire. What the provider taught us is in
//! docs/providers.md, "Providers the suite runs against".

use crate::helpers::*;
use crate::pyprovider::{django_login, provider_get, start_resource_server, PythonProvider};
use serde_json::{json, Value};
use token_handler::crypto::Purpose;
use token_handler::session::{AccessTokenCookie, RefreshTokenCookie};

/// The HS256 client's secret (tests/providers/dop/serve.py): at least 32 bytes (RFC 7518 §3.2).
const HS_SECRET: &str = "hs-secret-of-at-least-32-bytes-long!";

/// Starts django-oidc-provider; its issuer is `http://127.0.0.1:<port>/openid`.
async fn start_dop() -> PythonProvider {
    PythonProvider::start(
        "dop",
        &[],
        ("/token", "/introspect"),
        ("introspector", "introspector-secret"),
    )
    .await
}

/// A `[[providers]]` entry for one of the provider's clients, each with its own redirect URI:
/// django-oidc-provider does not send `iss` in the authorization response (RFC 9207), so
/// clients cannot share one (token-handler refuses that without `require_iss`).
fn dop_provider(op: &PythonProvider, id: &str, client_id: &str) -> ProviderConfig {
    ProviderConfig::new(id, &op.issuer, client_id)
        .scope("openid profile email")
        .redirect_uris(&format!("{REDIRECT_URI}{id}"))
}

/// Each client authentication method (and HS256 ID tokens), through the whole life of a session.
#[actix_web::test]
async fn each_client_authentication_method_through_a_whole_session() {
    let op = start_dop().await;
    let api = start_resource_server(&op).await;
    let config = TestConfig::with_providers([
        dop_provider(&op, "basic", "basic-client").client_secret("basic-secret"),
        dop_provider(&op, "post", "post-client")
            .client_auth("client_secret_post")
            .client_secret("post-secret"),
        dop_provider(&op, "public", "public-client").client_auth("none"),
        // client_secret_post: its secret has a `!`, see the test below.
        dop_provider(&op, "hs", "hs-client")
            .client_auth("client_secret_post")
            .client_secret(HS_SECRET)
            .id_token_signing_alg("HS256"),
    ])
    .route(RouteConfig::new("/api", &api));
    let app = TestApp::spawn_with(&config).await;

    let cases = [
        (
            "basic",
            "basic-client",
            "client_secret_basic",
            "basic-secret",
        ),
        ("post", "post-client", "client_secret_post", "post-secret"),
        ("public", "public-client", "none", ""),
        ("hs", "hs-client", "client_secret_post", HS_SECRET),
    ];
    for (round, (id, client_id, method, secret)) in cases.into_iter().enumerate() {
        let user = format!("user-{id}");
        let redirect_uri = format!("{REDIRECT_URI}{id}");
        let mut browser = app.browser();
        let url = browser
            .start_login(&json!({"provider": id}).to_string())
            .await;
        assert!(url.starts_with(&op.endpoint("/authorize?")), "{url}");
        assert_eq!(
            query_param(&url, "code_challenge_method").as_deref(),
            Some("S256")
        );
        let (callback, mut provider_jar) = django_login(&url, &user).await;
        assert!(
            callback.starts_with(&format!("{redirect_uri}?")),
            "{callback}"
        );
        assert_eq!(query_param(&callback, "iss"), None, "{callback}");
        let resp = browser.end_login(&callback).await;
        assert_eq!(resp.status, 200, "{id}: {:?}", resp.body);
        assert_eq!(resp.body["isLoggedIn"], true);
        let last = op.last_client_auth().await;
        assert_eq!(last["grant_type"], "authorization_code", "{id}: {last}");
        assert_eq!(last["method"], method, "{id}: {last}");
        assert_eq!(last["client_id"], client_id, "{id}: {last}");

        // The ID token (the provider puts the standard claims in it when configured to); its
        // subject is the user's database key.
        let claims = browser.get("/claims").await;
        assert_eq!(claims.status, 200, "{id}: {:?}", claims.body);
        assert_eq!(claims.body["iss"], Value::String(op.issuer.clone()));
        assert_eq!(claims.body["aud"], client_id);
        assert_eq!(claims.body["preferred_username"], user.as_str());
        let sub = claims.body["sub"].as_str().expect("sub").to_string();
        assert_eq!(sub, (round + 1).to_string(), "{:?}", claims.body);

        let info = browser.get("/userInfo").await;
        assert_eq!(info.status, 200, "{id}: {:?}", info.body);
        assert_eq!(info.body["sub"], sub.as_str());
        assert_eq!(info.body["email"], format!("{user}@example.test"));
        assert_eq!(info.body["name"], format!("Test User {user}"));

        let proxied = browser
            .raw(awc::http::Method::GET, "/api/orders", None, &[])
            .await;
        assert_eq!(proxied.status, 200, "{id}: {:?}", proxied.body);
        assert_eq!(proxied.body["introspection"]["client_id"], client_id);
        assert_eq!(proxied.body["introspection"]["sub"], sub.as_str());

        // Refresh: a new access and refresh token, and a new ID token (without a nonce); the
        // old pair is deleted at once.
        let rt1: RefreshTokenCookie =
            app.unseal(Purpose::RefreshToken, &browser.jar.session_value("th-auth"));
        let at1: AccessTokenCookie =
            app.unseal(Purpose::AccessToken, &browser.jar.session_value("th-at"));
        let refreshed = browser.post("/refresh", "").await;
        assert_eq!(refreshed.status, 204, "{id}: {:?}", refreshed.body);
        let last = op.last_client_auth().await;
        assert_eq!(last["grant_type"], "refresh_token", "{id}: {last}");
        assert_eq!(last["method"], method, "{id}: {last}");
        let rt2: RefreshTokenCookie =
            app.unseal(Purpose::RefreshToken, &browser.jar.session_value("th-auth"));
        let at2: AccessTokenCookie =
            app.unseal(Purpose::AccessToken, &browser.jar.session_value("th-at"));
        assert_ne!(
            rt1.token, rt2.token,
            "{id}: the refresh token was not rotated"
        );
        assert_ne!(at1.token, at2.token);
        assert_eq!(op.introspect(at1.token.expose()).await["active"], false);
        if method != "none" {
            let (status, body) = op
                .refresh_directly((client_id, secret), rt1.token.expose())
                .await;
            assert_eq!(status, 400, "{id}: {body}");
            assert_eq!(body["error"], "invalid_grant");
        }
        assert_eq!(browser.get("/userInfo").await.body["sub"], sub.as_str());
        assert_eq!(
            browser
                .raw(awc::http::Method::GET, "/api/orders", None, &[])
                .await
                .status,
            200
        );
        let claims = browser.get("/claims").await;
        assert_eq!(claims.body["sub"], sub.as_str(), "{:?}", claims.body);

        // Logout: nothing to revoke with (no revocation endpoint), so the access token stays
        // active at the provider until it expires; the end-session URL ends its session.
        let logout = browser.post("/logout", "").await;
        assert_eq!(logout.status, 200, "{id}: {:?}", logout.body);
        assert!(browser.jar.all().is_empty(), "{:?}", browser.jar.all());
        assert_eq!(op.introspect(at2.token.expose()).await["active"], true);
        let url = logout.body["url"].as_str().expect("url");
        assert!(url.starts_with(&op.endpoint("/end-session?")), "{url}");
        assert!(query_param(url, "id_token_hint").is_some(), "{url}");
        assert_eq!(
            query_param(url, "post_logout_redirect_uri").as_deref(),
            Some(redirect_uri.as_str())
        );
        let (status, location) = provider_get(url, &mut provider_jar).await;
        assert_eq!(status, 302, "{id}: {location}");
        assert_eq!(location, redirect_uri, "{id}");
        let mut browser = app.browser();
        let again = browser
            .start_login(&json!({"provider": id}).to_string())
            .await;
        let (status, location) = provider_get(&again, &mut provider_jar).await;
        assert_eq!(status, 302, "{id}");
        assert!(location.starts_with("/accounts/login/"), "{id}: {location}");
    }
    let stats = op.stats().await;
    assert_eq!(stats["authorization_code_grants"], 4, "{stats}");
    assert_eq!(stats["refresh_grants"], 4, "{stats}");
    assert_eq!(stats["userinfo_requests"], 8, "{stats}");
    assert_eq!(stats["end_sessions"], 4, "{stats}");
}

/// django-oidc-provider does not form-decode the id and secret of HTTP Basic client
/// authentication (RFC 6749 §2.3.1 encodes them), so a secret with a `!` (sent as `%21`) is
/// refused with `invalid_client`. The SPA (and the operator reading its message) is told that
/// the client authentication failed, not that the code "may have expired".
#[actix_web::test]
async fn a_basic_secret_the_provider_does_not_decode_is_named_a_client_authentication_failure() {
    let op = start_dop().await;
    let config = TestConfig::with_providers([dop_provider(&op, "hs", "hs-client")
        .client_secret(HS_SECRET)
        .id_token_signing_alg("HS256")]);
    let app = TestApp::spawn_with(&config).await;
    let mut browser = app.browser();
    let url = browser.start_login("").await;
    let (callback, _) = django_login(&url, "someone").await;
    let resp = browser.end_login(&callback).await;
    let last = op.last_client_auth().await;
    assert_eq!(last["method"], "client_secret_basic", "{last}");
    assert_eq!(resp.status, 400, "{:?}", resp.body);
    assert_eq!(resp.code(), "authorization_error");
    let message = resp.body["message"].as_str().expect("message");
    assert!(
        message.contains("client authentication (invalid_client)"),
        "{message}"
    );
    assert!(!message.contains("expired"), "{message}");
    assert_eq!(op.stats().await["authorization_code_grants"], 0);
}
