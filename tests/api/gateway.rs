//! Forward auth behind a real nginx (`auth_request`), end to end: the browser signs in through
//! nginx, nginx asks token-handler's forward-auth listener (`/auth`) for every API call and
//! copies the Authorization header (and refreshed cookies) it answers with. The public listener
//! never serves forward auth: its answer carries the token.

use crate::helpers::*;
use crate::upstream::{Upstream, API_AUDIENCE};
use awc::http::Method;
use serde_json::json;
use token_handler::crypto::CookieKey;

/// The nginx configuration documented in docs/gateways.md, with test addresses filled in.
pub fn nginx_conf(
    dir: &str,
    port: u16,
    token_handler: &str,
    forward_auth: &str,
    upstream: &str,
) -> String {
    let slots: String = (1..=8)
        .map(|i| {
            format!(
                "      auth_request_set $th_cookie_{i} $upstream_http_x_token_handler_set_cookie_{i};\n      add_header Set-Cookie $th_cookie_{i} always;\n"
            )
        })
        .collect();
    let preamble = nginx_preamble(dir);
    format!(
        r#"{preamble}
  # token-handler's answers carry several sealed cookies (about 6 KB of headers at login):
  # more than nginx's default 4-8 KB header buffer.
  proxy_buffer_size 32k;
  proxy_buffers 8 32k;
  server {{
    listen 127.0.0.1:{port};

    # The OAuth Agent endpoints, on the SPA's origin.
    location /oauth-agent/ {{
      proxy_pass {token_handler};
    }}

    # An API behind nginx, authorized by token-handler.
    location /gw/ {{
      auth_request /_token_handler_auth;
      auth_request_set $th_authorization $upstream_http_authorization;
      proxy_set_header Authorization $th_authorization;
{slots}      proxy_pass {upstream}/api/;
    }}

    location = /_token_handler_auth {{
      internal;
      proxy_pass {forward_auth}/auth;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Original-Method $request_method;
      proxy_set_header X-Original-URI $request_uri;
    }}
  }}
}}
"#
    )
}

#[actix_web::test]
async fn nginx_auth_request_with_the_forward_auth_endpoint() {
    let op = TestProvider::start_with(json!({"jwtAccessTokens": {"audience": API_AUDIENCE}})).await;
    let upstream = Upstream::start(&op.issuer).await;
    let app = TestApp::spawn_with(&TestConfig::new(&op.issuer).forward_auth(&["/gw"])).await;
    let forward_auth = app
        .forward_auth_address
        .clone()
        .expect("forward-auth listener");
    let nginx = Nginx::start(|dir, port| {
        nginx_conf(dir, port, &app.address, &forward_auth, &upstream.address)
    })
    .await;

    // Sign in through nginx, as the SPA on nginx's origin would.
    let mut browser = Browser::new(&nginx.address);
    let resp = browser.login("gateway-user").await;
    assert_eq!(resp.status, 200, "{:?} {}", resp.body, nginx.log());
    assert!(
        browser
            .jar
            .named("th-auth")
            .iter()
            .any(|c| c.path() == Some("/gw")),
        "the refresh-token cookie must reach the gateway's API path"
    );

    let first = browser
        .raw(Method::GET, "/gw/orders?page=2", None, &[])
        .await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    assert_eq!(first.body["sub"], "gateway-user");
    assert_eq!(first.body["path"], "/api/orders");
    assert_eq!(first.body["query"], "page=2");

    // No session: nginx refuses with the 401 token-handler gave.
    let mut stranger = Browser::new(&nginx.address);
    assert_eq!(
        stranger
            .raw(Method::GET, "/gw/orders", None, &[])
            .await
            .status,
        401
    );

    // CSRF applies to the original method.
    let mut no_csrf = browser.clone();
    no_csrf.csrf = None;
    assert_eq!(
        no_csrf
            .raw(Method::POST, "/gw/orders", Some(b"{}".to_vec()), &[])
            .await
            .status,
        401
    );
    let post = browser
        .raw(Method::POST, "/gw/orders", Some(b"{}".to_vec()), &[])
        .await;
    assert_eq!(post.status, 200, "{:?}", post.body);

    // A refresh through the gateway: nginx hands the new cookies to the browser.
    app.state.clock.advance(250);
    let refreshed = browser.raw(Method::GET, "/gw/orders", None, &[]).await;
    assert_eq!(refreshed.status, 200, "{:?}", refreshed.body);
    assert_ne!(refreshed.body["token_jti"], first.body["token_jti"]);
    assert_eq!(
        refreshed.cookies_named("th-at").len(),
        1,
        "{:?}",
        refreshed.set_cookies
    );
    assert!(
        refreshed.cookies_named("th-auth").len() >= 3,
        "{:?}",
        refreshed.set_cookies
    );
    let again = browser.raw(Method::GET, "/gw/orders", None, &[]).await;
    assert_eq!(again.body["token_jti"], refreshed.body["token_jti"]);
    assert_eq!(op.stats().await["refresh_grants"], 1);
}

/// The forward-auth answer carries the access token, so same-origin JavaScript must not be able
/// to fetch it: the public listener has no such endpoint, configured or not, and the separate
/// listener refuses a request that does not name the original method (it would skip CSRF).
#[actix_web::test]
async fn forward_auth_is_never_on_the_public_listener() {
    let op = TestProvider::start().await;
    let key = CookieKey::generate_text();

    // Not configured: no listener, and 404 on the public one, signed in or not.
    let app = TestApp::spawn_with(&TestConfig::new(&op.issuer).key(&key)).await;
    assert!(app.forward_auth_address.is_none());
    let mut browser = app.browser();
    assert_eq!(browser.login("xss-victim").await.status, 200);
    let resp = browser
        .raw(
            Method::GET,
            "/oauth-agent/auth",
            None,
            &[("x-original-method", "GET")],
        )
        .await;
    assert_eq!(resp.status, 404, "{:?}", resp.body);
    assert_eq!(resp.code(), "not_found");
    assert!(resp.header("authorization").is_none());

    // Configured: still 404 on the public listener; served on its own.
    let config = TestConfig::new(&op.issuer).key(&key).forward_auth(&["/gw"]);
    let app = TestApp::spawn_with(&config).await;
    let mut browser = app.browser();
    assert_eq!(browser.login("xss-victim").await.status, 200);
    for path in ["/oauth-agent/auth", "/auth"] {
        let resp = browser
            .raw(Method::GET, path, None, &[("x-original-method", "GET")])
            .await;
        assert_eq!(resp.status, 404, "{path}: {:?}", resp.body);
        assert!(resp.header("authorization").is_none(), "{path}");
    }
    let cookies = browser.jar.header_for("/gw/orders");
    let mut gateway = Browser::new(&app.forward_auth_address.clone().expect("listener"));
    let ok = gateway
        .raw(
            Method::GET,
            "/auth",
            None,
            &[("cookie", &cookies), ("x-original-method", "GET")],
        )
        .await;
    assert_eq!(ok.status, 200, "{:?}", ok.body);
    assert!(ok
        .header("authorization")
        .is_some_and(|a| a.starts_with("Bearer ")));
    // No method, or one we do not know: refused, never taken for a GET (which skips CSRF).
    let refused = [
        vec![("cookie", cookies.as_str())],
        vec![("cookie", cookies.as_str()), ("x-original-method", "BREW")],
        vec![("cookie", cookies.as_str()), ("x-forwarded-method", "post")],
    ];
    for headers in refused {
        let resp = gateway.raw(Method::GET, "/auth", None, &headers).await;
        assert_eq!(resp.status, 401, "{headers:?}: {:?}", resp.body);
        assert_eq!(resp.code(), "unauthorized_request");
        assert!(resp.header("authorization").is_none());
    }
    app.assert_alive().await;
}
