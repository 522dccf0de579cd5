//! Route access rules against the real provider and upstream: `auth` modes (public and optional
//! routes), allowed `methods`, and `identity_headers` (never spoofable by the client).

use crate::helpers::*;
use crate::upstream::{Upstream, API_AUDIENCE, ASSERTION_HEADER};
use awc::http::Method;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{decode, decode_header, DecodingKey, Validation};
use serde_json::{json, Value};

struct Setup {
    _op: TestProvider,
    app: TestApp,
    /// Signed in as `pat`.
    browser: Browser,
}

/// Routes: `/open/public` (auth none, with an identity header to strip), `/open/maybe` (auth
/// optional, identity headers), `/api` (required, GET and POST only, identity headers).
async fn setup() -> Setup {
    let op = TestProvider::start_with(json!({"jwtAccessTokens": {"audience": API_AUDIENCE}})).await;
    let upstream = Upstream::start(&op.issuer).await;
    let up = upstream.address.as_str();
    let identity = [("x-user-sub", "sub"), ("X-User-Email", "email")];
    let config = TestConfig::new(&op.issuer)
        .route(
            RouteConfig::new("/open/public", up)
                .auth("none")
                .identity_headers(&identity[..1]),
        )
        .route(
            RouteConfig::new("/open/maybe", up)
                .auth("optional")
                .identity_headers(&identity),
        )
        .route(
            RouteConfig::new("/api", up)
                .methods(&["GET", "POST"])
                .identity_headers(&identity),
        );
    let app = TestApp::spawn_with(&config).await;
    let mut browser = app.browser();
    let resp = browser.login("pat").await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    Setup {
        _op: op,
        app,
        browser,
    }
}

fn values(echo: &Value, name: &str) -> Vec<String> {
    echo["headers"][name]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[actix_web::test]
async fn a_public_route_gets_no_token_and_none_of_our_cookies() {
    // `_op` is kept: the provider stops when it is dropped.
    let Setup {
        _op,
        app,
        mut browser,
    } = setup().await;
    browser.jar.store("other=1; Path=/", "/");
    let resp = browser
        .raw(
            Method::GET,
            "/open/public/items?x=1",
            None,
            &[("authorization", "Bearer client-token")],
        )
        .await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    let echo = &resp.body;
    assert_eq!(echo["path"], "/open/public/items");
    assert_eq!(echo["sub"], Value::Null);
    assert!(values(echo, "authorization").is_empty(), "{echo}");
    assert_eq!(values(echo, "cookie"), ["other=1"]);
    assert!(values(echo, "x-th-csrf").is_empty());
    // Nothing of the session is written either.
    assert!(resp
        .set_cookies
        .iter()
        .all(|c| !base_name(c).starts_with("th-")));
    // And without any session.
    let resp = app
        .browser()
        .raw(Method::GET, "/open/public/x", None, &[])
        .await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    assert_eq!(resp.body["sub"], Value::Null);
    app.assert_alive().await;
}

#[actix_web::test]
async fn an_optional_route_forwards_the_session_when_there_is_one() {
    // `_op` is kept: the provider stops when it is dropped.
    let Setup {
        _op,
        app,
        mut browser,
    } = setup().await;
    let resp = browser.raw(Method::GET, "/open/maybe/x", None, &[]).await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    assert_eq!(resp.body["sub"], "pat");
    assert_eq!(values(&resp.body, "authorization").len(), 1);
    assert_eq!(values(&resp.body, "x-user-sub"), ["pat"]);

    let mut anonymous = app.browser();
    let resp = anonymous
        .raw(Method::POST, "/open/maybe/x", Some(b"{}".to_vec()), &[])
        .await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    assert_eq!(resp.body["sub"], Value::Null);
    assert!(values(&resp.body, "authorization").is_empty());
    assert!(values(&resp.body, "x-user-sub").is_empty());
    // The same URL answers differently with a session: no cache may mix the two.
    let vary: Vec<&str> = resp
        .headers
        .get_all("vary")
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert!(vary.contains(&"Cookie"), "{vary:?}");

    // A session that is sent but cannot be used is refused, not downgraded to anonymous.
    browser.jar.set_value("th-at", "not-a-sealed-value");
    let resp = browser.raw(Method::GET, "/open/maybe/x", None, &[]).await;
    assert_eq!(resp.status, 401, "{:?}", resp.body);
    assert_eq!(resp.code(), "unauthorized_request");
    app.assert_alive().await;
}

#[actix_web::test]
async fn csrf_is_enforced_on_public_and_optional_routes_when_a_session_cookie_is_sent() {
    // `_op` is kept: the provider stops when it is dropped.
    let Setup {
        _op,
        app,
        mut browser,
    } = setup().await;
    let csrf = browser.csrf.take();
    for path in ["/open/public/transfer", "/open/maybe/transfer"] {
        // A hostile page riding the session: our cookies, no CSRF header.
        let resp = browser
            .raw(Method::POST, path, Some(b"{}".to_vec()), &[])
            .await;
        assert_eq!(resp.status, 401, "{path}: {:?}", resp.body);
        assert_eq!(resp.code(), "unauthorized_request", "{path}");
        let resp = browser
            .raw(
                Method::DELETE,
                path,
                None,
                &[("x-th-csrf", "not-the-value")],
            )
            .await;
        assert_eq!(resp.status, 401, "{path}: {:?}", resp.body);
        // Safe methods need no CSRF header.
        let resp = browser.raw(Method::GET, path, None, &[]).await;
        assert_eq!(resp.status, 200, "{path}: {:?}", resp.body);
    }
    // The SPA itself, with the CSRF value, passes.
    browser.csrf = csrf;
    let resp = browser
        .raw(
            Method::POST,
            "/open/public/transfer",
            Some(b"{}".to_vec()),
            &[],
        )
        .await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    assert_eq!(resp.body["sub"], Value::Null);
    // Without any session cookie there is no session to ride: no CSRF header needed.
    let resp = app
        .browser()
        .raw(
            Method::POST,
            "/open/public/transfer",
            Some(b"{}".to_vec()),
            &[],
        )
        .await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    app.assert_alive().await;
}

#[actix_web::test]
async fn methods_outside_the_route_list_get_405_with_allow() {
    // `_op` is kept: the provider stops when it is dropped.
    let Setup {
        _op,
        app,
        mut browser,
    } = setup().await;
    for method in [Method::DELETE, Method::PUT, Method::PATCH] {
        let resp = browser.raw(method.clone(), "/api/items/7", None, &[]).await;
        assert_eq!(resp.status, 405, "{method}: {:?}", resp.body);
        assert_eq!(resp.code(), "method_not_allowed");
        assert_eq!(
            resp.header("allow").as_deref(),
            Some("GET, HEAD, POST, OPTIONS")
        );
    }
    // Refused before any session check: an anonymous caller learns the same.
    let resp = app
        .browser()
        .raw(Method::DELETE, "/api/items/7", None, &[])
        .await;
    assert_eq!(resp.status, 405);
    for method in [Method::GET, Method::HEAD] {
        let resp = browser.raw(method.clone(), "/api/items/7", None, &[]).await;
        assert_eq!(resp.status, 200, "{method}");
    }
    let resp = browser
        .raw(Method::POST, "/api/items", Some(b"{}".to_vec()), &[])
        .await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    // The CORS preflight is still answered.
    let resp = browser
        .raw(
            Method::OPTIONS,
            "/api/items/7",
            None,
            &[("access-control-request-method", "DELETE")],
        )
        .await;
    assert_eq!(resp.status, 204);
    app.assert_alive().await;
}

#[actix_web::test]
async fn identity_headers_arrive_and_the_clients_copies_never_do() {
    // `_op` is kept: the provider stops when it is dropped.
    let Setup {
        _op,
        app,
        mut browser,
    } = setup().await;
    let spoof = [
        ("x-user-sub", "admin"),
        ("X-User-Email", "admin@example.test"),
    ];
    let resp = browser.raw(Method::GET, "/api/me", None, &spoof).await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    assert_eq!(values(&resp.body, "x-user-sub"), ["pat"]);
    assert_eq!(values(&resp.body, "x-user-email"), ["pat@example.test"]);

    // Anonymous calls get no identity, and the client's is stripped all the same: on an
    // optional route without a session, and on a public route with or without one.
    let mut anonymous = app.browser();
    for (who, path) in [
        (&mut anonymous, "/open/maybe/me"),
        (&mut browser, "/open/public/me"),
    ] {
        let resp = who.raw(Method::GET, path, None, &spoof).await;
        assert_eq!(resp.status, 200, "{path}: {:?}", resp.body);
        assert!(values(&resp.body, "x-user-sub").is_empty(), "{path}");
    }
    let resp = anonymous
        .raw(Method::GET, "/open/public/me", None, &spoof)
        .await;
    assert!(values(&resp.body, "x-user-sub").is_empty());
    // The public route does not name x-user-email: it passes as sent there.
    assert_eq!(values(&resp.body, "x-user-email"), ["admin@example.test"]);

    // An ID-token cookie of another session is refused, never paired with this token.
    let mut other = app.browser();
    assert_eq!(other.login("eve").await.status, 200);
    let eve_id = other.jar.value("th-id");
    browser.jar.set_value("th-id", &eve_id);
    let resp = browser.raw(Method::GET, "/api/me", None, &[]).await;
    assert_eq!(resp.status, 401, "{:?}", resp.body);
    app.assert_alive().await;
}

#[actix_web::test]
async fn a_signed_assertion_verifies_against_the_jwks_on_the_metrics_listener() {
    let op = TestProvider::start_with(json!({"jwtAccessTokens": {"audience": API_AUDIENCE}})).await;
    let upstream = Upstream::start(&op.issuer).await;
    let config = TestConfig::new(&op.issuer)
        .metrics()
        .route(RouteConfig::new("/api", &upstream.address).assertion_header("X-TH-Assertion"))
        .route(
            RouteConfig::new("/api/other", "http://127.0.0.1:9").assertion_header("x-th-assertion"),
        )
        .route(RouteConfig::new("/verified", &upstream.address).assertion_header(ASSERTION_HEADER));
    let app = TestApp::spawn_with(&config).await;
    let metrics = app.metrics_address.as_deref().expect("metrics listener");
    let jwks_url = format!("{metrics}/jwks");
    let issuer = format!("{SPA_ORIGIN}{BASE}");
    upstream.trust_assertions(&jwks_url, &issuer);
    let mut browser = app.browser();
    assert_eq!(browser.login("pat").await.status, 200);
    let resp = browser
        .raw(
            Method::GET,
            "/api/me",
            None,
            &[("x-th-assertion", "forged")],
        )
        .await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    let sent = values(&resp.body, "x-th-assertion");
    assert_eq!(sent.len(), 1, "{sent:?}");
    let assertion = &sent[0];
    assert_ne!(assertion, "forged");

    // What an API does: fetch the key set from the internal listener, verify.
    let jwks: JwkSet = awc::Client::default()
        .get(&jwks_url)
        .send()
        .await
        .expect("jwks")
        .json()
        .await
        .expect("jwks json");
    let kid = decode_header(assertion).expect("header").kid.expect("kid");
    let jwk = jwks.find(&kid).expect("the assertion's key is published");
    let audience = format!("{}/", upstream.address);
    let mut validation = Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&[&audience]);
    validation.set_issuer(&[&issuer]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    let claims: Value = decode(
        assertion,
        &DecodingKey::from_jwk(jwk).expect("key"),
        &validation,
    )
    .expect("the assertion verifies")
    .claims;
    assert_eq!(claims["sub"], "pat");
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        60
    );
    // Another route's upstream would refuse it: the audience is this route's.
    validation.set_audience(&["http://127.0.0.1:9/"]);
    assert!(decode::<Value>(
        assertion,
        &DecodingKey::from_jwk(jwk).expect("key"),
        &validation
    )
    .is_err());
    // The key set is not served on the public listener.
    let resp = browser.raw(Method::GET, "/jwks", None, &[]).await;
    assert_eq!(resp.status, 404);

    // The upstream's own verdict: it fetches the key set from the metrics listener and verifies
    // the assertion (ES256, `iss`, `aud` = its URL, `exp`) before answering.
    let resp = browser
        .raw(
            Method::GET,
            "/verified/me",
            None,
            &[(ASSERTION_HEADER, "forged")],
        )
        .await;
    assert_eq!(resp.status, 200, "the upstream refused: {:?}", resp.body);
    assert_eq!(resp.body["sub"], "pat");
    assert_eq!(resp.body["claims"]["iss"], issuer.as_str());
    // A caller that reaches the upstream without the proxy cannot pass: no assertion, or one
    // with the right claims and `kid` signed with another key, is refused by the upstream.
    let direct = |assertion: Option<String>| {
        let url = format!("{}/verified/me", upstream.address);
        async move {
            let mut req = awc::Client::default().get(url);
            if let Some(a) = assertion {
                req = req.insert_header((ASSERTION_HEADER, a));
            }
            let mut resp = req.send().await.expect("upstream");
            let body: Value = resp.json().await.expect("upstream json");
            (resp.status().as_u16(), body)
        }
    };
    let (status, body) = direct(None).await;
    assert_eq!(status, 401, "{body}");
    let other_key = p256::SecretKey::from_slice(&rand::random::<[u8; 32]>()).expect("a key");
    let der = p256::pkcs8::EncodePrivateKey::to_pkcs8_der(&other_key).expect("der");
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(kid.clone());
    let forged = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_ec_der(der.as_bytes()),
    )
    .expect("forged assertion");
    let (status, body) = direct(Some(forged)).await;
    assert_eq!(status, 401, "a forged assertion was accepted: {body}");
    assert_eq!(body["error"], "invalid_assertion");
    // The genuine assertion the proxy sent still verifies there (it is bound to this upstream
    // by `aud` and lives 60 s), so the refusals above are the forgery's, not the setup's.
    let (status, body) = direct(Some(assertion.clone())).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["sub"], "pat");
    app.assert_alive().await;
}
