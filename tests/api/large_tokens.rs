//! Large tokens: sessions whose tokens need several cookies (issue 13 part 1), against the real
//! provider, the proxy and nginx.

// ---------------------------------------------------------------------------------------------
// Large tokens: cookie chunking (issue 13 part 1)
// ---------------------------------------------------------------------------------------------
//
// The test provider's `bigTokens` option issues opaque access and refresh tokens of a given
// length and pads ID tokens with a random claim: random base64url text compresses no better than
// real tokens do, so these sessions really need several cookies.

mod chunking {
    use crate::helpers::*;
    use crate::upstream::Upstream;
    use awc::http::Method;
    use serde_json::{json, Value};
    use token_handler::crypto::CookieKey;

    /// A provider whose access and ID tokens have at least `bytes` characters (refresh tokens
    /// `refresh` characters).
    async fn big_provider(bytes: usize, refresh: usize) -> TestProvider {
        TestProvider::start_with(json!({
            "bigTokens": {"accessToken": bytes, "idToken": bytes, "refreshToken": refresh}
        }))
        .await
    }

    /// Our cookies in the browser's jar as `(name without prefix, path)`, sorted.
    fn our_cookies(browser: &Browser) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = browser
            .jar
            .all()
            .iter()
            .filter(|c| base_name(c.name()).starts_with("th-"))
            .map(|c| {
                (
                    base_name(c.name()).to_string(),
                    c.path().unwrap_or("").to_string(),
                )
            })
            .collect();
        out.sort();
        out
    }

    /// The chunks past the first that the jar holds (`th-at.1`, …).
    fn chunks(browser: &Browser) -> Vec<(String, String)> {
        our_cookies(browser)
            .into_iter()
            .filter(|(name, _)| name.contains('.'))
            .collect()
    }

    /// How many cookies the jar holds for one kind at one path.
    fn count(browser: &Browser, kind: &str, path: &str) -> usize {
        our_cookies(browser)
            .iter()
            .filter(|(n, p)| (n == kind || n.starts_with(&format!("{kind}."))) && p == path)
            .count()
    }

    #[actix_web::test]
    async fn a_16_kb_session_works_end_to_end_and_logout_leaves_no_chunk() {
        let op = big_provider(16 * 1024, 6000).await;
        let upstream = Upstream::start(&op.issuer).await;
        let app = TestApp::spawn_with(
            &TestConfig::new(&op.issuer)
                .route(RouteConfig::new("/api", &upstream.address))
                .metrics(),
        )
        .await;
        let mut browser = app.browser();
        let resp = browser.login("alice").await;
        assert_eq!(resp.status, 200, "{:?}", resp.body);
        for sc in &resp.set_cookies {
            assert!(sc.len() <= 4096, "{} bytes: {}", sc.len(), &sc[..40]);
        }
        // 16 KB of token is 4 or more cookies of each kind, at each of the kind's paths.
        let at = count(&browser, "th-at", "/");
        assert!((4..=8).contains(&at), "{:?}", our_cookies(&browser));
        // The ID token is compressed (it is opened by a few endpoints only), the access token
        // not (it is opened on every proxied request: docs/benchmarks.md).
        let id = count(&browser, "th-id", "/oauth-agent/claims");
        assert!((4..=at).contains(&id), "{:?}", our_cookies(&browser));
        assert_eq!(count(&browser, "th-id", "/oauth-agent/logout"), id);
        for path in ["/oauth-agent/refresh", "/oauth-agent/logout", "/api"] {
            assert_eq!(count(&browser, "th-auth", path), 2, "{path}");
        }

        let claims = browser.get("/claims").await;
        assert_eq!(claims.status, 200, "{:?}", claims.body);
        assert_eq!(claims.body["sub"], "alice");
        assert!(claims.body["pad"].as_str().map_or(0, str::len) >= 12 * 1024);
        let info = browser.get("/userInfo").await;
        assert_eq!(info.status, 200, "{:?}", info.body);
        assert_eq!(info.body["sub"], "alice");

        // The upstream receives the whole token (and introspects it: a cut token is inactive).
        let echo = |resp: &Resp| {
            let auth = resp.body["headers"]["authorization"][0]
                .as_str()
                .unwrap_or("")
                .to_string();
            (resp.body["sub"].clone(), auth.len())
        };
        let api = browser.raw(Method::GET, "/api/echo", None, &[]).await;
        assert_eq!(api.status, 200, "{:?}", api.body);
        assert_eq!(
            echo(&api),
            (Value::from("alice"), "Bearer ".len() + 16 * 1024)
        );

        let refreshed = browser.post("/refresh", "").await;
        assert_eq!(refreshed.status, 204, "{:?}", refreshed.body);
        let api = browser.raw(Method::GET, "/api/echo", None, &[]).await;
        assert_eq!(api.status, 200, "{:?}", api.body);
        assert_eq!(
            echo(&api),
            (Value::from("alice"), "Bearer ".len() + 16 * 1024)
        );
        assert_eq!(browser.get("/claims").await.status, 200);
        assert_eq!(op.stats().await["refresh_grants"], 1);

        // Chunk counts are measured, by cookie name only.
        let metrics = awc::Client::default()
            .get(format!(
                "{}/metrics",
                app.metrics_address.as_deref().expect("metrics")
            ))
            .send()
            .await
            .expect("metrics")
            .body()
            .await
            .expect("body");
        let metrics = String::from_utf8_lossy(&metrics);
        assert!(
            metrics.contains("token_handler_cookie_chunks_count{cookie=\"__Host-th-at\"}"),
            "{metrics}"
        );

        let logout = browser.post("/logout", "").await;
        assert_eq!(logout.status, 200, "{:?}", logout.body);
        assert_eq!(our_cookies(&browser), Vec::<(String, String)>::new());
        assert_eq!(browser.get("/userInfo").await.status, 401);
    }

    #[actix_web::test]
    async fn a_small_login_after_a_12_kb_one_leaves_no_stale_chunk() {
        let big = big_provider(12 * 1024, 6000).await;
        let small = TestProvider::start().await;
        let upstream = Upstream::start_many(&[&big.issuer, &small.issuer]).await;
        let scope = "openid profile email offline_access";
        // One provider, `p`, whose tokens shrink between two logins: two replicas sharing the
        // cookie key, the second configured with a provider that issues small tokens. (A login
        // with another provider would add a session of its own, under other names.)
        let key = CookieKey::generate_text();
        let config = |issuer: &str| {
            TestConfig::with_providers([ProviderConfig::spa_client("p", issuer)
                .scope(scope)
                .require_iss()])
            .route(RouteConfig::new("/api", &upstream.address))
            .key(&key)
        };
        let app = TestApp::spawn_with(&config(&big.issuer)).await;
        let mut browser = app.browser();
        assert_eq!(browser.login("alice").await.status, 200);
        assert!(chunks(&browser).len() > 10, "{:?}", our_cookies(&browser));

        // Signing in again, with small tokens this time.
        let app = TestApp::spawn_with(&config(&small.issuer)).await;
        let mut browser = {
            let mut next = app.browser();
            next.jar = browser.jar.clone();
            next.csrf = browser.csrf.clone();
            next
        };
        let url = browser.start_login("").await;
        let callback = provider_login(&url, "bob").await;
        let resp = browser.end_login(&callback).await;
        assert_eq!(resp.status, 200, "{:?}", resp.body);
        // Whatever login/end could see (the access token's chunks, at `/`) is gone at once.
        assert_eq!(
            count(&browser, "th-at", "/"),
            1,
            "{:?}",
            our_cookies(&browser)
        );
        // The refresh and ID tokens' chunks live at paths login/end does not see: the count in
        // the new first chunk keeps them out of every reassembly, and the first request at
        // their path sweeps them away, at every path of their kind.
        let info = browser.get("/userInfo").await;
        assert_eq!(info.body["sub"], "bob", "{:?}", info.body);
        let claims = browser.get("/claims").await;
        assert_eq!(claims.status, 200, "{:?}", claims.body);
        assert_eq!(claims.body["sub"], "bob");
        assert!(chunks(&browser)
            .iter()
            .all(|(name, _)| name.starts_with("th-auth.")));
        let api = browser.raw(Method::GET, "/api/echo", None, &[]).await;
        assert_eq!(api.status, 200, "{:?}", api.body);
        assert_eq!(api.body["sub"], "bob");
        assert_eq!(chunks(&browser), Vec::<(String, String)>::new());
        // What the browser keeps: one cookie per kind and path.
        let kept = our_cookies(&browser);
        assert_eq!(
            kept,
            [
                ("th-at", "/"),
                ("th-auth", "/api"),
                ("th-auth", "/oauth-agent/logout"),
                ("th-auth", "/oauth-agent/refresh"),
                ("th-csrf", "/"),
                ("th-id", "/oauth-agent/claims"),
                ("th-id", "/oauth-agent/logout"),
                ("th-id", "/oauth-agent/userInfo"),
            ]
            .map(|(n, p)| (n.to_string(), p.to_string()))
        );
        assert_eq!(browser.post("/refresh", "").await.status, 204);
    }

    #[actix_web::test]
    async fn a_chunk_from_another_session_reordered_or_dropped_is_401() {
        let op = big_provider(12 * 1024, 100).await;
        let app = TestApp::spawn(&op.issuer).await;
        let mut alice = app.browser();
        let mut mallory = app.browser();
        assert_eq!(alice.login("alice").await.status, 200);
        assert_eq!(mallory.login("mallory").await.status, 200);
        assert!(count(&alice, "th-at", "/") >= 3);
        assert_eq!(alice.get("/userInfo").await.status, 200);

        let tampered = |change: &dyn Fn(&mut Browser)| {
            let mut b = alice.clone();
            change(&mut b);
            b
        };
        let theirs = mallory.jar.value("th-at.1");
        let first = alice.jar.value("th-at.1");
        let second = alice.jar.value("th-at.2");
        let cases: Vec<(&str, Browser)> = vec![
            (
                "another session's chunk",
                tampered(&|b| b.jar.set_value("th-at.1", &theirs)),
            ),
            (
                "two chunks exchanged",
                tampered(&|b| {
                    b.jar.set_value("th-at.1", &second);
                    b.jar.set_value("th-at.2", &first);
                }),
            ),
            (
                "a chunk dropped",
                tampered(&|b| {
                    b.jar
                        .store("__Host-th-at.2=; Path=/; Secure; Max-Age=0", "/")
                }),
            ),
        ];
        for (case, mut browser) in cases {
            let resp = browser.get("/userInfo").await;
            assert_eq!(resp.status, 401, "{case}: {:?}", resp.body);
            assert_eq!(resp.code(), "unauthorized_request", "{case}");
        }
        assert_eq!(alice.get("/userInfo").await.status, 200);
        app.assert_alive().await;
    }

    #[actix_web::test]
    async fn a_chunked_session_is_resealed_whole_when_the_key_rotates() {
        use token_handler::crypto::{CookieKey, KeyRing};
        let op = big_provider(12 * 1024, 100).await;
        let (old, new) = (CookieKey::generate_text(), CookieKey::generate_text());
        let app = TestApp::spawn_with(&TestConfig::new(&op.issuer).key(&old)).await;
        let mut browser = app.browser();
        assert_eq!(browser.login("alice").await.status, 200);
        let before = count(&browser, "th-at", "/");
        assert!(before >= 3);
        let sealer = app.state.jar.sealer();
        sealer.replace_ring(KeyRing::parse(&[new.as_str(), old.as_str()]).expect("ring"));
        // Any request re-seals what it carries with the new key, every chunk of it.
        let resp = browser.get("/userInfo").await;
        assert_eq!(resp.status, 200, "{:?}", resp.body);
        let resealed = resp.cookies_named("th-at").len()
            + (1..before)
                .map(|i| resp.cookies_named(&format!("th-at.{i}")).len())
                .sum::<usize>();
        assert_eq!(resealed, before, "{:?}", resp.set_cookies);
        // The old key can go: the session still opens.
        sealer.replace_ring(KeyRing::parse(&[new.as_str()]).expect("ring"));
        let resp = browser.get("/userInfo").await;
        assert_eq!(resp.status, 200, "{:?}", resp.body);
        assert_eq!(resp.body["sub"], "alice");
    }

    #[actix_web::test]
    async fn a_token_too_large_for_any_browser_is_a_422_that_shows_no_token() {
        let op = big_provider(48 * 1024, 100).await;
        let app = TestApp::spawn(&op.issuer).await;
        let mut browser = app.browser();
        let resp = browser.login("alice").await;
        assert_eq!(resp.status, 422, "{:?}", resp.body);
        assert_eq!(resp.code(), "session_too_large");
        let message = resp.body["message"].as_str().unwrap_or("");
        assert!(message.len() < 300, "{message}");
        assert!(message.contains("th-at"), "{message}");
        // No session was written, and the login cookie is gone.
        assert!(browser.jar.named("th-at").is_empty());
        assert!(browser.jar.named("th-login").is_empty());
        app.assert_alive().await;
    }

    /// nginx in front, with the header buffers docs/deployment.md gives for large sessions, or
    /// (`documented = false`) with nginx's defaults.
    fn nginx_conf(dir: &str, port: u16, app: &str, documented: bool) -> String {
        let buffers = if documented {
            "large_client_header_buffers 4 64k;\n    proxy_buffer_size 128k;\n    proxy_buffers 8 128k;\n    proxy_busy_buffers_size 256k;"
        } else {
            ""
        };
        let preamble = nginx_preamble(dir);
        let app = app.trim_start_matches("http://");
        format!(
            r#"{preamble}
  server {{
    listen 127.0.0.1:{port};
    {buffers}
    location / {{
      proxy_pass http://{app};
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
"#
        )
    }

    #[actix_web::test]
    async fn a_12_kb_session_through_nginx_needs_the_documented_header_buffers() {
        let op = big_provider(12 * 1024, 6000).await;
        let app = TestApp::spawn(&op.issuer).await;
        let lb = Nginx::start(|dir, port| nginx_conf(dir, port, &app.address, true)).await;
        let plain = Nginx::start(|dir, port| nginx_conf(dir, port, &app.address, false)).await;

        let mut browser = Browser::new(&lb.address);
        let resp = browser.login("alice").await;
        assert_eq!(resp.status, 200, "{:?} {}", resp.body, lb.log());
        assert!(count(&browser, "th-at", "/") >= 3);
        let claims = browser.get("/claims").await;
        assert_eq!(claims.status, 200, "{}", lb.log());
        assert_eq!(claims.body["sub"], "alice");
        assert_eq!(browser.get("/userInfo").await.status, 200);
        assert_eq!(browser.post("/refresh", "").await.status, 204);

        // With nginx's defaults (8 KB per header line), the same browser is refused.
        let mut defaults = Browser::new(&plain.address);
        defaults.jar = browser.jar.clone();
        defaults.csrf = browser.csrf.clone();
        let refused = defaults.get("/claims").await;
        assert_eq!(refused.status, 400, "{:?}", refused.headers);

        let logout = browser.post("/logout", "").await;
        assert_eq!(logout.status, 200, "{}", lb.log());
        assert!(chunks(&browser).is_empty(), "{:?}", our_cookies(&browser));
    }
}
