//! The request edge (issue 11): preflight caps, fetch metadata, weak keys, secret-file modes
//! and login rate limits, each through the real server or binary.

use crate::helpers::*;
use crate::upstream::{Upstream, API_AUDIENCE};
use awc::http::Method;
use serde_json::json;
use token_handler::crypto::CookieKey;

/// A preflight with a ~112 KB `Access-Control-Request-Headers` of distinct names (the review's
/// CPU-burning request) is refused with 400 before any work, on the agent endpoints and on a
/// proxied route, and the server still answers. Without the caps this took seconds of CPU and
/// answered 204.
#[actix_web::test]
async fn a_huge_preflight_is_refused_and_the_server_still_answers() {
    let op = TestProvider::start().await;
    let app = TestApp::spawn_with(
        &TestConfig::new(&op.issuer).proxy_to(&format!("http://127.0.0.1:{}", free_port())),
    )
    .await;
    let names: Vec<String> = (0..13_000).map(|i| format!("x-h{i}")).collect();
    let requested = names.join(",");
    assert!(requested.len() > 100_000);
    for path in ["/oauth-agent/login/start", "/api/orders"] {
        let request = format!(
            "OPTIONS {path} HTTP/1.1\r\nHost: t\r\nOrigin: {SPA_ORIGIN}\r\nAccess-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: {requested}\r\nConnection: close\r\n\r\n"
        );
        let (status, text) = raw_http(&app.address, request.into_bytes()).await;
        assert_eq!(status, 400, "{path}: {}", &text[..text.len().min(400)]);
        assert!(text.contains("\"invalid_request\""), "{path}: {text}");
        assert!(!text.contains("x-h12999"), "the names were echoed: {text}");
    }
    // A normal preflight still gets its CORS answer.
    let mut browser = app.browser();
    let resp = browser
        .request(
            Method::OPTIONS,
            "/login/start",
            None,
            &[
                ("access-control-request-method", "POST"),
                ("access-control-request-headers", "Content-Type, X-Trace"),
            ],
        )
        .await;
    assert_eq!(resp.status, 204);
    assert_eq!(
        resp.header("access-control-allow-headers").as_deref(),
        Some("content-type, x-th-csrf, x-trace")
    );
    let (status, _) = raw_http(
        &app.address,
        b"GET /health/live HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".to_vec(),
    )
    .await;
    assert_eq!(status, 200);
    app.assert_alive().await;
}

/// Fetch metadata: a GET the browser marks `cross-site` or `same-site` (a sibling subdomain, or
/// any site when cookies are `SameSite=Lax`) carries our cookies but no Origin; it is refused
/// unless its Origin is trusted. `same-origin`, `none` and no header pass.
#[actix_web::test]
async fn requests_from_other_sites_need_a_trusted_origin() {
    let op = TestProvider::start_with(json!({"jwtAccessTokens": {"audience": API_AUDIENCE}})).await;
    let upstream = Upstream::start(&op.issuer).await;
    let app = TestApp::spawn_with(&TestConfig::new(&op.issuer).proxy_to(&upstream.address)).await;
    let mut browser = app.browser();
    assert_eq!(browser.login("sofia").await.status, 200);

    let mut page = browser.clone();
    page.origin = None;
    for site in ["cross-site", "same-site"] {
        let resp = page
            .raw(
                Method::GET,
                "/api/orders",
                None,
                &[("sec-fetch-site", site)],
            )
            .await;
        assert_eq!(resp.status, 401, "{site}: {:?}", resp.body);
        assert_eq!(resp.code(), "unauthorized_request");
        let resp = page
            .request(Method::GET, "/userInfo", None, &[("sec-fetch-site", site)])
            .await;
        assert_eq!(resp.status, 401, "{site} on userInfo: {:?}", resp.body);
    }
    for site in ["same-origin", "none"] {
        let resp = page
            .raw(
                Method::GET,
                "/api/orders",
                None,
                &[("sec-fetch-site", site)],
            )
            .await;
        assert_eq!(resp.status, 200, "{site}: {:?}", resp.body);
    }
    let resp = page.raw(Method::GET, "/api/orders", None, &[]).await;
    assert_eq!(resp.status, 200, "no header: {:?}", resp.body);
    // Our SPA on another site (CORS) sends its trusted Origin and passes.
    let resp = browser
        .raw(
            Method::GET,
            "/api/orders",
            None,
            &[("sec-fetch-site", "cross-site")],
        )
        .await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    assert_eq!(resp.body["path"], "/api/orders", "{:?}", resp.body);
    app.assert_alive().await;
}

/// `check` and run both refuse the example key and a key of one repeated byte with exit code 2,
/// naming the problem and never the key.
#[test]
fn weak_cookie_keys_stop_check_and_run() {
    use base64::Engine;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.toml");
    let issuer = format!("http://127.0.0.1:{}", free_port());
    let repeated = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([0x5a; 32]);
    for (key, reason) in [
        ("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "example key"),
        (repeated.as_str(), "not random"),
    ] {
        std::fs::write(&path, TestConfig::new(&issuer).key(key).toml()).expect("write");
        for args in [vec!["check", "--config"], vec!["--config"]] {
            let (code, stderr) = run_bounded(&args, &path, dir.path());
            assert_eq!(code, Some(2), "{args:?}: {stderr}");
            assert!(stderr.contains("cookies.keys"), "{stderr}");
            assert!(stderr.contains(reason), "{stderr}");
            assert!(!stderr.contains(key), "the key was printed: {stderr}");
        }
    }
}

/// Runs the binary with `args` and the config path, for at most 10 s (a server that starts
/// when it should not is killed by its PID): its exit code (`None` when it had to be killed)
/// and its stderr.
fn run_bounded(
    args: &[&str],
    config: &std::path::Path,
    dir: &std::path::Path,
) -> (Option<i32>, String) {
    let log = dir.join("stderr.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_token-handler"))
        .args(args)
        .arg(config)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("run token-handler");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let code = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status.code();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    (code, std::fs::read_to_string(&log).unwrap_or_default())
}

/// A keys file that other users can read is named, with its mode and the fix, by `check` and
/// in the log at start; a private one is not.
#[actix_web::test]
async fn secret_files_others_can_read_are_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let issuer = format!("http://127.0.0.1:{}", free_port());
    for (mode, warned) in [(0o644, true), (0o600, false)] {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = dir.path().join("keys");
        std::fs::write(&keys, format!("{}\n", CookieKey::generate_text())).expect("write");
        std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(mode)).expect("chmod");
        let config = TestConfig::new(&issuer).keys_file(&keys);
        let path = dir.path().join("check.toml");
        std::fs::write(&path, config.toml()).expect("write");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_token-handler"))
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .expect("run check");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("cookie keys: 1"), "{stdout}");
        let line = format!("cookies.keys_file: {} has mode 0644", keys.display());
        assert_eq!(stdout.contains(&line), warned, "mode {mode:o}: {stdout}");
        assert_eq!(
            stdout.contains("chmod 600"),
            warned,
            "mode {mode:o}: {stdout}"
        );

        let app = ProcessApp::start_in(&config, dir, "warn").await;
        let log = app.log();
        assert_eq!(log.contains(&line), warned, "mode {mode:o}: {log}");
        assert_eq!(log.contains("chmod 600"), warned, "mode {mode:o}: {log}");
    }
}

/// `login/start` and `login/end` are limited per client address: past the burst, 429
/// `too_many_requests` with `Retry-After`, while another address still passes. Behind a trusted
/// proxy the address is the one it appended to `X-Forwarded-For`; from anyone else the header
/// is ignored, so a client cannot escape its bucket by inventing addresses.
#[actix_web::test]
async fn logins_are_rate_limited_per_client_address() {
    let op = TestProvider::start().await;
    let config = TestConfig::new(&op.issuer).login_rate_limit(2, 2);
    let behind_proxy = TestApp::spawn_with(&config.clone().trusted_proxies(&["127.0.0.1"])).await;
    let mut browser = behind_proxy.browser();
    let from = |ip: &'static str| [("x-forwarded-for", ip)];
    for _ in 0..2 {
        let resp = browser
            .request(Method::POST, "/login/start", Some(""), &from("203.0.113.7"))
            .await;
        assert_eq!(resp.status, 200, "{:?}", resp.body);
    }
    let resp = browser
        .request(Method::POST, "/login/start", Some(""), &from("203.0.113.7"))
        .await;
    assert_eq!(resp.status, 429, "{:?}", resp.body);
    assert_eq!(resp.code(), "too_many_requests");
    let retry: u64 = resp
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    assert!((1..=60).contains(&retry), "{retry}");
    // The SPA can read the error: CORS headers as on any agent response.
    assert_eq!(
        resp.header("access-control-allow-origin").as_deref(),
        Some(SPA_ORIGIN)
    );
    // Another client behind the same proxy has its own bucket, and login/end its own.
    let resp = browser
        .request(Method::POST, "/login/start", Some(""), &from("203.0.113.8"))
        .await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    let end = json!({"pageUrl": REDIRECT_URI}).to_string();
    let resp = browser
        .request(Method::POST, "/login/end", Some(&end), &from("203.0.113.7"))
        .await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);

    // Not behind a trusted proxy: the peer's address counts, whatever the client claims.
    let direct = TestApp::spawn_with(&config).await;
    let mut browser = direct.browser();
    let mut statuses = Vec::new();
    for spoofed in ["198.51.100.1", "198.51.100.2", "198.51.100.3"] {
        let resp = browser
            .request(Method::POST, "/login/start", Some(""), &from(spoofed))
            .await;
        statuses.push(resp.status);
    }
    assert_eq!(statuses, [200, 200, 429]);
    let health = awc::Client::default()
        .get(format!("{}/health/live", direct.address))
        .send()
        .await
        .expect("health");
    assert_eq!(health.status().as_u16(), 200);
}
