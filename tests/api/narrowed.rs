//! Narrowed per-route tokens against the real provider: each API gets a JWT issued for it alone
//! (RFC 8707 resource indicators, RFC 8693 token exchange), verified by its upstream against the
//! provider's JWKS; the session's broad token reaches none of them, a refusal forwards nothing,
//! and the narrowed cookie is reused, refreshed once for many calls, bound to its session and
//! cleared at logout.

use crate::helpers::*;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use awc::http::Method;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{decode, decode_header, DecodingKey, Validation};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use token_handler::crypto::Purpose;
use token_handler::session::AccessTokenCookie;

pub(crate) const ORDERS: &str = "https://orders.example.test";
pub(crate) const BILLING: &str = "https://billing.example.test";
/// A resource the provider does not know: every narrowing to it is refused (`invalid_target`).
const UNKNOWN: &str = "https://unknown.example.test";

/// A resource server that accepts only JWTs for its own audience, verified against the
/// provider's JWKS (issuer, audience, expiry), and remembers every token it was sent.
#[derive(Clone)]
pub(crate) struct Api {
    pub(crate) address: String,
    /// Every `Authorization` value received, accepted or not.
    seen: Arc<Mutex<Vec<String>>>,
    /// Every `Cookie` header received.
    cookies: Arc<Mutex<Vec<String>>>,
    calls: Arc<AtomicUsize>,
}

struct ApiState {
    issuer: String,
    audience: String,
    jwks: JwkSet,
    seen: Arc<Mutex<Vec<String>>>,
    cookies: Arc<Mutex<Vec<String>>>,
    calls: Arc<AtomicUsize>,
}

async fn api_echo(req: HttpRequest, state: web::Data<ApiState>) -> HttpResponse {
    state.calls.fetch_add(1, Ordering::SeqCst);
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    state.seen.lock().unwrap().push(auth.clone());
    for cookie in req.headers().get_all("cookie") {
        let text = cookie.to_str().unwrap_or("<binary>").to_string();
        state.cookies.lock().unwrap().push(text);
    }
    let verified = (|| {
        let token = auth.strip_prefix("Bearer ").ok_or("no bearer token")?;
        let header = decode_header(token).map_err(|e| e.to_string())?;
        let kid = header.kid.ok_or("no kid")?;
        let jwk = state.jwks.find(&kid).ok_or("unknown kid")?;
        let key = DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&state.issuer]);
        validation.set_audience(&[&state.audience]);
        validation.leeway = 0;
        decode::<Value>(token, &key, &validation)
            .map(|d| d.claims)
            .map_err(|e| e.to_string())
    })();
    match verified {
        Ok(claims) => HttpResponse::Ok().json(json!({
            "aud": claims["aud"],
            "sub": claims["sub"],
            "jti": claims["jti"],
            "scope": claims["scope"],
            "exp": claims["exp"],
        })),
        Err(reason) => {
            HttpResponse::Unauthorized().json(json!({"error": "invalid_token", "reason": reason}))
        }
    }
}

impl Api {
    pub(crate) async fn start(issuer: &str, audience: &str) -> Self {
        let jwks: JwkSet = awc::Client::default()
            .get(format!("{issuer}/jwks"))
            .send()
            .await
            .expect("jwks")
            .json()
            .await
            .expect("jwks json");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let cookies = Arc::new(Mutex::new(Vec::new()));
        let calls = Arc::new(AtomicUsize::new(0));
        let state = web::Data::new(ApiState {
            issuer: issuer.to_string(),
            audience: audience.to_string(),
            jwks,
            seen: seen.clone(),
            cookies: cookies.clone(),
            calls: calls.clone(),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .default_service(web::to(api_echo))
        })
        .workers(1)
        .listen(listener)
        .expect("listen")
        .run();
        actix_web::rt::spawn(server);
        Self {
            address: format!("http://127.0.0.1:{port}"),
            seen,
            cookies,
            calls,
        }
    }

    pub(crate) fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

struct Setup {
    op: TestProvider,
    app: TestApp,
    /// The upstream of `/session`, a route with the session's own token.
    session: crate::upstream::Upstream,
    orders: Api,
    billing: Api,
    exchanged: Api,
    refused: Api,
}

/// The provider knows two APIs and exchanges tokens; four routes: two by resource indicator,
/// one by token exchange (by audience name), one to a resource the provider refuses.
async fn setup(provider: Value, adjust: impl FnOnce(TestConfig) -> TestConfig) -> Setup {
    let mut config = json!({
        "narrowing": {
            "resources": {ORDERS: {}, BILLING: {}},
            "tokenExchange": true,
            "audiences": {"billing-api": BILLING},
        },
    });
    if let (Some(c), Some(e)) = (config.as_object_mut(), provider.as_object()) {
        c.extend(e.clone());
    }
    let op = TestProvider::start_with(config).await;
    let orders = Api::start(&op.issuer, ORDERS).await;
    let billing = Api::start(&op.issuer, BILLING).await;
    let exchanged = Api::start(&op.issuer, BILLING).await;
    let refused = Api::start(&op.issuer, UNKNOWN).await;
    let session = crate::upstream::Upstream::start(&op.issuer).await;
    let config = TestConfig::new(&op.issuer)
        .route(RouteConfig::new("/session", &session.address))
        .route(
            RouteConfig::new("/orders", &orders.address)
                .token("resource")
                .resource(ORDERS),
        )
        .route(
            RouteConfig::new("/billing", &billing.address)
                .token("resource")
                .resource(BILLING)
                .scope("openid profile"),
        )
        .route(
            RouteConfig::new("/exchanged", &exchanged.address)
                .token("exchange")
                .audience("billing-api"),
        )
        .route(
            RouteConfig::new("/refused", &refused.address)
                .token("resource")
                .resource(UNKNOWN),
        );
    let app = TestApp::spawn_with(&adjust(config)).await;
    Setup {
        op,
        app,
        session,
        orders,
        billing,
        exchanged,
        refused,
    }
}

async fn signed_in(app: &TestApp, user: &str) -> Browser {
    let mut browser = app.browser();
    let resp = browser.login(user).await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    browser
}

/// The narrowed cookie's name (without `__Secure-`) for a route.
fn nt(route: &str) -> String {
    format!("th-nt-{}", token_handler::cookies::route_key(route))
}

async fn stat(op: &TestProvider, name: &str) -> i64 {
    op.stats().await[name].as_i64().unwrap_or(0)
}

fn session_token(app: &TestApp, browser: &Browser) -> String {
    let at: AccessTokenCookie = app.unseal(Purpose::AccessToken, &browser.jar.value("th-at"));
    at.token.expose().to_string()
}

#[actix_web::test]
async fn each_route_gets_a_token_for_its_own_api_and_never_the_sessions() {
    let s = setup(json!({}), |c| c).await;
    let mut browser = signed_in(&s.app, "ann").await;
    let broad = format!("Bearer {}", session_token(&s.app, &browser));

    let first = browser.raw(Method::GET, "/orders/7", None, &[]).await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    assert_eq!(first.body["aud"], ORDERS, "{:?}", first.body);
    assert_eq!(first.body["sub"], "ann");
    let billing = browser
        .raw(Method::GET, "/billing/invoices", None, &[])
        .await;
    assert_eq!(billing.status, 200, "{:?}", billing.body);
    assert_eq!(billing.body["aud"], BILLING, "{:?}", billing.body);
    // The route's narrower scope, not the session's.
    assert_eq!(billing.body["scope"], "openid profile");

    // Each API saw only tokens for itself (its verification passed on every call), and never
    // the session's token.
    for api in [&s.orders, &s.billing] {
        assert!(!api.seen().is_empty());
        assert!(
            !api.seen().contains(&broad),
            "the session's token reached an API"
        );
    }
    assert!(s
        .orders
        .seen()
        .iter()
        .all(|t| !s.billing.seen().contains(t)));

    // The narrowed token lives in its own cookie at its route's path, sealed, HttpOnly, Secure.
    let set = first.cookies_named(&nt("/orders"));
    assert_eq!(set.len(), 1, "{:?}", first.set_cookies);
    let c = &set[0];
    assert_eq!(c.name(), format!("__Secure-{}", nt("/orders")));
    assert_eq!(c.path(), Some("/orders"));
    assert_eq!(c.http_only(), Some(true));
    assert_eq!(c.secure(), Some(true));
    assert!(!c
        .value()
        .contains(first.body["jti"].as_str().unwrap_or("-")));
    assert!(c.max_age().is_none(), "a browser-session cookie");

    // Reused: the second call makes no grant and forwards the same token.
    assert_eq!(stat(&s.op, "resource_grants").await, 2);
    let second = browser.raw(Method::GET, "/orders/8", None, &[]).await;
    assert_eq!(second.status, 200, "{:?}", second.body);
    assert_eq!(second.body["jti"], first.body["jti"]);
    assert!(second.cookies_named(&nt("/orders")).is_empty());
    assert_eq!(stat(&s.op, "resource_grants").await, 2);
    // Our narrowed cookie never reaches the upstream, nor does a chunk of it; other cookies do.
    browser.jar.store(
        &format!("__Secure-{}.1=chunk; Path=/orders; Secure", nt("/orders")),
        "/orders",
    );
    browser.jar.store("app=1; Path=/", "/");
    let third = browser.raw(Method::GET, "/orders/9", None, &[]).await;
    assert_eq!(third.status, 200, "{:?}", third.body);
    let sent = s.orders.cookies.lock().unwrap().clone();
    assert!(sent.iter().any(|c| c.contains("app=1")), "{sent:?}");
    assert!(
        sent.iter()
            .all(|c| !c.contains("-nt-") && !c.contains("th-")),
        "{sent:?}"
    );
}

#[actix_web::test]
async fn a_token_exchange_route_gets_an_exchanged_token_for_its_audience() {
    let s = setup(json!({}), |c| c).await;
    let mut browser = signed_in(&s.app, "eve").await;
    let broad = format!("Bearer {}", session_token(&s.app, &browser));
    let first = browser.raw(Method::GET, "/exchanged/x", None, &[]).await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    assert_eq!(first.body["aud"], BILLING);
    assert_eq!(first.body["sub"], "eve");
    assert!(!s.exchanged.seen().contains(&broad));
    let last = s.op.stats().await;
    assert_eq!(last["token_exchange_grants"], 1, "{last}");
    // The exchange sent the session's token as its subject (RFC 8693 §2.1) and authenticated
    // the client as the provider is configured to.
    let get = |path: &'static str| {
        let url = format!("{}{path}", s.op.issuer);
        async move {
            awc::Client::default()
                .get(url)
                .send()
                .await
                .expect("test endpoint")
                .json::<Value>()
                .await
                .expect("json")
        }
    };
    let request = get("/test/last-token-request").await;
    let params = &request["params"];
    assert_eq!(
        request["grant_type"],
        "urn:ietf:params:oauth:grant-type:token-exchange"
    );
    assert_eq!(
        format!("Bearer {}", params["subject_token"].as_str().unwrap_or("")),
        broad
    );
    assert_eq!(
        params["subject_token_type"],
        "urn:ietf:params:oauth:token-type:access_token"
    );
    assert_eq!(params["audience"], "billing-api");
    let auth = get("/test/last-client-auth").await;
    assert_eq!(
        (auth["endpoint"].as_str(), auth["method"].as_str()),
        (Some("token"), Some("client_secret_basic")),
        "{auth}"
    );
    let second = browser.raw(Method::POST, "/exchanged/y", None, &[]).await;
    assert_eq!(second.status, 200, "{:?}", second.body);
    assert_eq!(second.body["jti"], first.body["jti"]);
    assert_eq!(stat(&s.op, "token_exchange_grants").await, 1);
}

#[actix_web::test]
async fn a_refused_narrowing_is_403_insufficient_scope_and_nothing_is_forwarded() {
    let s = setup(json!({}), |c| c).await;
    let mut browser = signed_in(&s.app, "ann").await;
    let resp = browser.raw(Method::GET, "/refused/x", None, &[]).await;
    assert_eq!(resp.status, 403, "{:?}", resp.body);
    assert_eq!(resp.body["code"], "insufficient_scope");
    assert!(
        resp.body["message"]
            .as_str()
            .is_some_and(|m| m.contains("invalid_target")),
        "{:?}",
        resp.body
    );
    assert_eq!(
        s.refused.calls.load(Ordering::SeqCst),
        0,
        "forwarded anyway"
    );
    assert!(resp.cookies_named(&nt("/refused")).is_empty());
    // The session is intact: other routes still work.
    let ok = browser.raw(Method::GET, "/orders", None, &[]).await;
    assert_eq!(ok.status, 200, "{:?}", ok.body);
}

#[actix_web::test]
async fn a_failing_provider_is_502_and_nothing_is_forwarded() {
    let s = setup(json!({}), |c| c).await;
    let mut browser = signed_in(&s.app, "ann").await;
    s.op.fail_token_endpoint(503, 1).await;
    let resp = browser.raw(Method::GET, "/billing/x", None, &[]).await;
    assert_eq!(resp.status, 502, "{:?}", resp.body);
    assert_eq!(resp.body["code"], "authorization_server_error");
    assert_eq!(
        s.billing.calls.load(Ordering::SeqCst),
        0,
        "forwarded anyway"
    );
    // The provider is back: the next call narrows.
    let ok = browser.raw(Method::GET, "/billing/x", None, &[]).await;
    assert_eq!(ok.status, 200, "{:?}", ok.body);
}

/// Past the refresh-ahead point of both tokens (250 s into 300 s tokens), twenty calls at once:
/// one refresh of the session, one narrowing grant, every call forwards the one new token.
#[actix_web::test]
async fn twenty_calls_at_expiry_make_one_narrowing_grant() {
    let s = setup(json!({"tokenEndpointDelayMs": 200}), |c| c).await;
    let browser = signed_in(&s.app, "ann").await;
    let mut first = browser.clone();
    let before = first.raw(Method::GET, "/orders", None, &[]).await;
    assert_eq!(before.status, 200, "{:?}", before.body);
    let mut browser = first;
    assert_eq!(stat(&s.op, "resource_grants").await, 1);

    s.app.state.clock.advance(250);
    let calls = (0..20).map(|_| {
        let mut b = browser.clone();
        async move { b.raw(Method::GET, "/orders", None, &[]).await }
    });
    let results = futures_util::future::join_all(calls).await;
    let mut jtis = std::collections::HashSet::new();
    for r in &results {
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert_eq!(r.body["aud"], ORDERS);
        jtis.insert(r.body["jti"].to_string());
    }
    let stats = s.op.stats().await;
    assert_eq!(stats["resource_grants"], 2, "{stats}");
    assert_eq!(stats["grant_errors"], 0, "{stats}");
    assert_eq!(
        jtis.len(),
        1,
        "every call carried the one new narrowed token"
    );
    assert!(!jtis.contains(&before.body["jti"].to_string()));
    assert!(results
        .iter()
        .all(|r| r.cookies_named(&nt("/orders")).len() == 1));
    // The refreshed cookie is used from then on.
    let resp = browser.raw(Method::GET, "/orders", None, &[]).await;
    let _ = &results;
    assert_eq!(resp.status, 200);
    assert!(jtis.contains(&resp.body["jti"].to_string()));
    assert_eq!(stat(&s.op, "resource_grants").await, 2);
}

#[actix_web::test]
async fn a_narrowed_cookie_serves_only_its_own_session() {
    let s = setup(json!({}), |c| c).await;
    let mut ann = signed_in(&s.app, "ann").await;
    let resp = ann.raw(Method::GET, "/orders", None, &[]).await;
    assert_eq!(resp.body["sub"], "ann");
    let stolen = resp.cookies_named(&nt("/orders"))[0].clone();

    // Ann's narrowed cookie planted next to Bob's session cookies.
    let mut bob = signed_in(&s.app, "bob").await;
    bob.jar.store(&stolen.to_string(), "/orders");
    assert_eq!(bob.jar.value(&nt("/orders")), stolen.value());
    let resp = bob.raw(Method::GET, "/orders", None, &[]).await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    assert_eq!(
        resp.body["sub"], "bob",
        "another session's narrowed token was used"
    );
    assert_eq!(stat(&s.op, "resource_grants").await, 2);
    // And replaced by Bob's own.
    assert_ne!(bob.jar.value(&nt("/orders")), stolen.value());

    // Moved under another route's name, a narrowed cookie does not open there either.
    let mut moved = ann.clone();
    moved.jar.store(
        &format!(
            "__Secure-{}={}; Path=/billing; Secure; HttpOnly",
            nt("/billing"),
            stolen.value()
        ),
        "/billing",
    );
    let resp = moved.raw(Method::GET, "/billing", None, &[]).await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    assert_eq!(resp.body["aud"], BILLING);
}

#[actix_web::test]
async fn logout_clears_every_narrowed_cookie() {
    let s = setup(json!({}), |c| c).await;
    let mut browser = signed_in(&s.app, "ann").await;
    for path in ["/orders", "/billing", "/exchanged"] {
        let resp = browser.raw(Method::GET, path, None, &[]).await;
        assert_eq!(resp.status, 200, "{path}: {:?}", resp.body);
        assert_eq!(browser.jar.named(&nt(path)).len(), 1, "{path}");
    }
    let resp = browser.post("/logout", "").await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    for path in ["/orders", "/billing", "/exchanged", "/refused"] {
        let removal = resp
            .cookies_named(&nt(path))
            .into_iter()
            .find(|c| c.path() == Some(path))
            .unwrap_or_else(|| panic!("no removal of {path}'s narrowed cookie"));
        assert_eq!(
            removal.max_age(),
            Some(actix_web::cookie::time::Duration::ZERO)
        );
        assert!(browser.jar.named(&nt(path)).is_empty(), "{path}");
    }
}

/// A provider that rotates refresh tokens on every grant: the resource grant's new refresh
/// token replaces the session's (the one it redeemed is spent), so the session's own refresh
/// later redeems a live one and nothing is replayed.
#[actix_web::test]
async fn a_refresh_token_rotated_by_a_resource_grant_is_kept_by_the_session() {
    let s = setup(json!({"rotateRefreshToken": true}), |c| c).await;
    let mut browser = signed_in(&s.app, "ann").await;
    let before = browser.jar.value("th-auth");
    let resp = browser.raw(Method::GET, "/orders", None, &[]).await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    assert!(
        !resp.cookies_named("th-auth").is_empty(),
        "the rotated refresh token was not written back"
    );
    assert_ne!(browser.jar.value("th-auth"), before);
    // The session's own refresh, then another narrowing, all with live refresh tokens.
    s.app.state.clock.advance(250);
    let resp = browser.raw(Method::GET, "/billing", None, &[]).await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    let refreshed = browser.post("/refresh", "").await;
    assert_eq!(refreshed.status, 204, "{:?}", refreshed.body);
    let stats = s.op.stats().await;
    assert_eq!(
        stats["grant_errors"], 0,
        "a spent refresh token was replayed: {stats}"
    );
}

/// Rotation with reuse detection (RFC 9700 §4.14.2), and every grant that redeems the session's
/// refresh token due at once: the session's own refresh and two routes' resource grants (RFC
/// 8707 §2.2), ten calls each in parallel as the access token expires. They take turns on the
/// refresh token, each redeeming the newest one: the provider refuses none (a replay would
/// revoke the grant and end the session), no call is 401, and the browser's refresh-token
/// cookie ends with the newest token, even when the last response to arrive was answered from
/// a shared result older than the narrowings' rotations, so the session goes on.
#[actix_web::test]
async fn parallel_grants_on_one_rotating_refresh_token_take_turns() {
    use futures_util::stream::{FuturesUnordered, StreamExt};
    use token_handler::session::RefreshTokenCookie;

    let s = setup(
        json!({"rotateRefreshToken": true, "tokenEndpointDelayMs": 100, "idTokenTtl": 3600}),
        |c| c,
    )
    .await;
    let _ = &s.session;
    let mut browser = signed_in(&s.app, "ann").await;
    for path in ["/session", "/orders", "/billing"] {
        let resp = browser.raw(Method::GET, path, None, &[]).await;
        assert_eq!(resp.status, 200, "{path}: {:?}", resp.body);
    }

    for round in 0..2 {
        // The session's and both narrowed tokens expired (300 s).
        s.app.state.clock.advance(350);
        let before = browser.clone();
        let mut calls: FuturesUnordered<_> = ["/session", "/orders", "/billing"]
            .iter()
            .flat_map(|path| std::iter::repeat_n(*path, 10))
            .map(|path| {
                let mut b = browser.clone();
                async move { (path, b.raw(Method::GET, path, None, &[]).await) }
            })
            .collect();
        // As a browser does: each response's cookies land in the one jar as it arrives.
        while let Some((path, resp)) = calls.next().await {
            assert_eq!(resp.status, 200, "round {round}, {path}: {:?}", resp.body);
            for c in &resp.set_cookies {
                browser.jar.store(c, path);
            }
        }
        // A slow response, arriving last: a call with the cookies from before, answered from the
        // session refresh's shared result, whose refresh token the narrowings rotated since.
        let late = before.clone().raw(Method::GET, "/session", None, &[]).await;
        assert_eq!(late.status, 200, "round {round}: {:?}", late.body);
        for c in &late.set_cookies {
            browser.jar.store(c, "/session");
        }
        let stats = s.op.stats().await;
        assert_eq!(
            stats["grant_errors"], 0,
            "round {round}: a refresh token was redeemed twice: {stats}"
        );
        // The browser holds the newest refresh token this replica knows of.
        let rt: RefreshTokenCookie = s
            .app
            .unseal(Purpose::RefreshToken, &browser.jar.value("th-auth"));
        let newest = s.app.state.refresher.newest(&rt.provider, &rt.token);
        assert!(
            newest.ct_eq(rt.token.expose()),
            "round {round}: the refresh-token cookie kept a spent token"
        );
        // And the session goes on.
        for path in ["/session", "/orders", "/billing"] {
            let resp = browser.raw(Method::GET, path, None, &[]).await;
            assert_eq!(resp.status, 200, "round {round}, {path}: {:?}", resp.body);
        }
    }
    let refreshed = browser.post("/refresh", "").await;
    assert_eq!(refreshed.status, 204, "{:?}", refreshed.body);
    let stats = s.op.stats().await;
    assert_eq!(stats["grant_errors"], 0, "{stats}");
}
