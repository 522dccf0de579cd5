//! Live reload of the configuration (issue 18 item 3): SIGHUP, a changed file and
//! `Reloader::reload` apply trusted origins, routes, providers and secrets atomically; an
//! invalid configuration, or one that changes a restart-only key, is refused and the running one
//! stays; a request under way finishes on the configuration it started with.

use crate::helpers::*;
use crate::upstream::{Upstream, API_AUDIENCE};
use actix_web::web;
use awc::http::Method;
use serde_json::json;
use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};
use token_handler::config::Config;
use token_handler::metrics::{ResultLabel, METRICS};
use token_handler::reload::{ReloadError, Reloader};
use token_handler::startup::Application;
use token_handler::state::LiveState;

/// token-handler in this test, started from a configuration FILE so that reloads read it.
struct FileApp {
    address: String,
    reloader: Reloader,
    live: web::Data<LiveState>,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl FileApp {
    /// Starts from `config`; the file is checked for changes every `poll`.
    async fn start(config: &TestConfig, poll: Duration) -> Self {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
            )
            .with_test_writer()
            .try_init();
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.toml");
        std::fs::write(&path, config.toml()).expect("write config");
        let loaded = Config::load(Some(&path)).expect("valid test config");
        let app = Application::build(loaded)
            .expect("bind")
            .with_config_file(path.clone(), poll);
        let address = format!("http://127.0.0.1:{}", app.port());
        let (reloader, live) = (app.reloader(), app.live());
        actix_web::rt::spawn(app.run_until_stopped());
        Self {
            address,
            reloader,
            live,
            path,
            _dir: dir,
        }
    }

    /// Replaces the file whole (as a ConfigMap update does), with `config` on the same port
    /// setting (`127.0.0.1:0`: the listener is not rebound).
    fn write(&self, text: &str) {
        let next = self.path.with_extension("next");
        std::fs::write(&next, text).expect("write config");
        std::fs::rename(&next, &self.path).expect("replace config");
    }

    fn browser(&self) -> Browser {
        Browser::new(&self.address)
    }
}

fn reloads(result: &'static str) -> u64 {
    METRICS
        .config_reloads
        .get_or_create(&ResultLabel { result })
        .get()
}

async fn jwt_provider() -> TestProvider {
    TestProvider::start_with(json!({"jwtAccessTokens": {"audience": API_AUDIENCE}})).await
}

/// `GET path` (outside the agent's base path) with the browser's session.
async fn call(browser: &mut Browser, path: &str) -> Resp {
    browser.raw(Method::GET, path, None, &[]).await
}

/// Waits until `check` holds (the file watcher's next look), at most 10 s.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: not seen within 10 s");
}

fn upstream_port(resp: &Resp) -> String {
    resp.body["headers"]["host"][0]
        .as_str()
        .unwrap_or_default()
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .to_string()
}

#[actix_web::test]
async fn reload_under_load_fails_no_request_and_applies_routes_origins_and_upstreams() {
    let op = jwt_provider().await;
    let (first, second) = (
        Upstream::start(&op.issuer).await,
        Upstream::start(&op.issuer).await,
    );
    let other_origin = "https://admin.example.test";
    // The clients call `login/end` as fast as they can: the login limit is not under test here.
    let unlimited = |c: TestConfig| c.login_rate_limit(1_000_000, 1_000_000);
    let config =
        unlimited(TestConfig::new(&op.issuer)).route(RouteConfig::new("/api", &first.address));
    let app = FileApp::start(&config, Duration::from_millis(100)).await;
    let applied_before = reloads("applied");

    let mut browsers = Vec::new();
    for n in 0..3 {
        let mut b = app.browser();
        assert_eq!(b.login(&format!("load{n}")).await.status, 200);
        browsers.push(b);
    }
    let mut probe = browsers[0].clone();
    assert_eq!(call(&mut probe, "/extra/1").await.status, 404);
    let mut stranger = app.browser();
    stranger.origin = Some(other_origin.to_string());
    let page = json!({"pageUrl": format!("{other_origin}/")}).to_string();
    assert_eq!(stranger.post("/login/end", &page).await.status, 401);

    // Clients call a proxied route and the agent endpoints without pause while the file
    // changes underneath.
    let stop = Rc::new(Cell::new(false));
    let failures: Rc<RefCell<Vec<String>>> = Rc::default();
    let done = Rc::new(Cell::new(0u32));
    let mut clients = Vec::new();
    for (n, mut browser) in browsers.into_iter().enumerate() {
        let (stop, failures, done) = (stop.clone(), failures.clone(), done.clone());
        clients.push(actix_web::rt::spawn(async move {
            let mut i = 0u32;
            while !stop.get() {
                let resp = match i % 3 {
                    0 => call(&mut browser, &format!("/api/orders/{n}-{i}")).await,
                    1 => browser.get("/userInfo").await,
                    _ => browser.end_login("https://www.example.test/").await,
                };
                if resp.status != 200 {
                    failures.borrow_mut().push(format!(
                        "client {n} call {i}: {} {}",
                        resp.status, resp.body
                    ));
                }
                i += 1;
                done.set(done.get() + 1);
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // 1: a route is added.
    let config = config.route(RouteConfig::new("/extra", &first.address));
    app.write(&config.toml());
    eventually("the added route", || {
        let mut b = probe.clone();
        async move { call(&mut b, "/extra/1").await.status == 200 }
    })
    .await;

    // 2: another trusted origin.
    let config = config.trusted_origins(&[SPA_ORIGIN, other_origin]);
    app.write(&config.toml());
    eventually("the added origin", || {
        let (mut b, page) = (stranger.clone(), page.clone());
        async move { b.post("/login/end", &page).await.status == 200 }
    })
    .await;

    // 3: the API moves to another upstream.
    let second_port = second
        .address
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .to_string();
    assert_ne!(
        upstream_port(&call(&mut probe, "/api/x").await),
        second_port
    );
    let moved = unlimited(TestConfig::new(&op.issuer))
        .trusted_origins(&[SPA_ORIGIN, other_origin])
        .route(RouteConfig::new("/api", &second.address))
        .route(RouteConfig::new("/extra", &first.address));
    // The same cookie key: the test configuration made a fresh one.
    let moved_text = with_key_of(&config, &moved);
    app.write(&moved_text);
    eventually("the moved upstream", || {
        let (mut b, port) = (probe.clone(), second_port.clone());
        async move { upstream_port(&call(&mut b, "/api/x").await) == port }
    })
    .await;

    // 4: through the handle, back and forth: the origin list and the upstream swap ten times
    // more while the clients go on.
    let back = with_key_of(
        &config,
        &unlimited(TestConfig::new(&op.issuer))
            .trusted_origins(&[other_origin, SPA_ORIGIN])
            .route(RouteConfig::new("/api", &first.address))
            .route(RouteConfig::new("/extra", &second.address)),
    );
    for round in 0..10 {
        app.write(if round % 2 == 0 { &back } else { &moved_text });
        let applied = app.reloader.reload("api").await.expect("applied");
        assert_eq!(applied.routes, 2);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    stop.set(true);
    for c in clients {
        c.await.expect("client");
    }
    eprintln!("reload under load: {} calls, none failed", done.get());
    let failures = failures.borrow();
    assert!(failures.is_empty(), "failed during reloads: {failures:#?}");
    assert!(done.get() >= 100, "only {} calls made", done.get());
    assert!(reloads("applied") >= applied_before + 13);
    assert_eq!(app.live.current().config.proxy.routes.len(), 2);
}

/// `new`'s TOML with `old`'s cookie key (each `TestConfig::new` makes a fresh one).
fn with_key_of(old: &TestConfig, new: &TestConfig) -> String {
    let key_line = |text: &str| {
        text.lines()
            .find(|l| l.starts_with("keys = "))
            .expect("keys line")
            .to_string()
    };
    let (old, new) = (old.toml(), new.toml());
    new.replace(&key_line(&new), &key_line(&old))
}

#[actix_web::test]
async fn an_invalid_or_restart_only_configuration_is_refused_and_the_running_one_stays() {
    let op = jwt_provider().await;
    let upstream = Upstream::start(&op.issuer).await;
    let config = TestConfig::new(&op.issuer).route(RouteConfig::new("/api", &upstream.address));
    // The watcher is left out (it would count the same refusals again).
    let app = FileApp::start(&config, Duration::from_secs(3600)).await;
    let mut browser = app.browser();
    assert_eq!(browser.login("steady").await.status, 200);
    let refused_before = reloads("refused");

    // Not TOML at all.
    app.write("[[routes]\npath = ");
    let e = app.reloader.reload("api").await.expect_err("refused");
    assert!(matches!(e, ReloadError::Invalid(_)), "{e}");
    // Valid TOML, an invalid route, next to a valid new one: neither is applied.
    let bad = config
        .clone()
        .route(RouteConfig::new("/extra", &upstream.address))
        .route(RouteConfig::new("/ftp", "ftp://127.0.0.1/"));
    app.write(&bad.toml());
    let e = app.reloader.reload("api").await.expect_err("refused");
    assert!(e.to_string().contains("routes["), "{e}");
    // A key only a restart changes, next to a route: refused whole, naming the key.
    let restart = config
        .clone()
        .route(RouteConfig::new("/extra", &upstream.address))
        .shutdown_grace("17s");
    app.write(&restart.toml());
    let e = app.reloader.reload("api").await.expect_err("refused");
    assert!(
        matches!(&e, ReloadError::NeedsRestart(keys) if keys == &["server.shutdown_grace"]),
        "{e}"
    );
    assert_eq!(reloads("refused"), refused_before + 3);

    // The running configuration still serves, and nothing of the refused ones does.
    assert_eq!(call(&mut browser, "/api/still").await.status, 200);
    assert_eq!(call(&mut browser, "/extra/1").await.status, 404);
    assert_eq!(browser.get("/userInfo").await.status, 200);
    assert_eq!(app.live.current().config.proxy.routes.len(), 1);

    // A valid file is applied again.
    app.write(
        &config
            .route(RouteConfig::new("/extra", &upstream.address))
            .toml(),
    );
    let applied = app.reloader.reload("api").await.expect("applied");
    assert_eq!(applied.routes_added, ["/extra"]);
    assert_eq!(call(&mut browser, "/extra/1").await.status, 200);
}

#[actix_web::test]
async fn a_request_under_way_finishes_on_the_configuration_it_started_with() {
    let op = jwt_provider().await;
    let upstream = Upstream::start(&op.issuer).await;
    let config = TestConfig::new(&op.issuer)
        .route(RouteConfig::new("/api", &upstream.address))
        .route(RouteConfig::new("/api/slow", &upstream.address).timeout("10s"));
    let app = FileApp::start(&config, Duration::from_secs(3600)).await;
    let mut browser = app.browser();
    assert_eq!(browser.login("patient").await.status, 200);

    // The upstream answers /api/slow after 3 s.
    let mut slow = browser.clone();
    let in_flight = actix_web::rt::spawn(async move { call(&mut slow, "/api/slow").await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let without = with_key_of(
        &config,
        &TestConfig::new(&op.issuer).route(RouteConfig::new("/other", &upstream.address)),
    );
    app.write(&without);
    let applied = app.reloader.reload("api").await.expect("applied");
    assert_eq!(applied.routes_removed.len(), 2, "{applied:?}");
    assert_eq!(call(&mut browser, "/api/slow").await.status, 404);

    let resp = in_flight.await.expect("in flight");
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    assert_eq!(resp.body, json!({"slow": true}));
}

#[actix_web::test]
async fn sighup_reloads_the_binary_s_configuration() {
    let op = jwt_provider().await;
    let upstream = Upstream::start(&op.issuer).await;
    let config = TestConfig::new(&op.issuer).route(RouteConfig::new("/api", &upstream.address));
    let dir = tempfile::tempdir().expect("tempdir");
    let app = ProcessApp::start_in(&config, dir, "info").await;
    let mut browser = Browser::new(&app.address);
    assert_eq!(browser.login("hangup").await.status, 200);
    assert_eq!(call(&mut browser, "/extra/1").await.status, 404);

    app.rewrite_config(&config.route(RouteConfig::new("/extra", &upstream.address)));
    app.signal("HUP");
    // Well before the file's own 10 s check.
    let start = Instant::now();
    let mut status = 0;
    while start.elapsed() < Duration::from_secs(5) {
        status = call(&mut browser, "/extra/1").await.status;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, 200, "{}", app.log());
    let log = app.log();
    let line = log
        .lines()
        .find(|l| l.contains("configuration reloaded"))
        .unwrap_or_else(|| panic!("no reload line in {log}"));
    assert!(line.contains("sighup"), "{line}");
    assert!(line.contains("/extra"), "{line}");
    assert_eq!(call(&mut browser, "/api/x").await.status, 200);
    assert_eq!(browser.get("/userInfo").await.status, 200);
}

#[actix_web::test]
async fn a_changed_secret_file_and_an_added_provider_apply_without_taking_readiness_down() {
    let op = TestProvider::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("client-secret");
    let write_secret = |value: &str| {
        let next = dir.path().join("client-secret.next");
        std::fs::write(&next, value).expect("write secret");
        std::fs::rename(&next, &secret).expect("replace secret");
    };
    write_secret("not-the-secret");
    let default = ProviderConfig::new("default", &op.issuer, "spa-client")
        .client_secret_file(&secret.display().to_string())
        .par("off")
        .require_iss();
    let config = TestConfig::with_providers([default.clone()]);
    let app = FileApp::start(&config, Duration::from_millis(100)).await;
    let resp = app.browser().login("secretive").await;
    assert_ne!(resp.status, 200, "a wrong client secret was accepted");

    // The secret file alone changes (a Kubernetes Secret update): read again, applied.
    let before = app.live.current().shared();
    write_secret("spa-secret");
    eventually("the reload of the changed secret file", || {
        let changed = !std::sync::Arc::ptr_eq(&before, &app.live.current().shared());
        async move { changed }
    })
    .await;
    assert_eq!(app.browser().login("secretive").await.status, 200);

    // A required provider that does not answer is added: the replica stays ready, the new
    // provider is reported unavailable until its discovery loads it.
    let late_issuer = format!("http://127.0.0.1:{}", free_port());
    let added = TestConfig::with_providers([
        default,
        ProviderConfig::spa_client("late", &late_issuer)
            .require_iss()
            .required(true),
    ]);
    app.write(&with_key_of(&config, &added));
    let applied = app.reloader.reload("api").await.expect("applied");
    assert!(
        applied.providers_added.is_empty() || applied.providers_added == ["late"],
        "{applied:?}"
    );
    let mut ready = awc::Client::default()
        .get(format!("{}/health/ready", app.address))
        .send()
        .await
        .expect("ready");
    assert_eq!(ready.status().as_u16(), 200);
    let body: serde_json::Value = ready.json().await.expect("json");
    assert_eq!(body["providers"]["late"], "unavailable", "{body}");
    assert_eq!(body["providers"]["default"], "ready", "{body}");
    assert_eq!(app.browser().login("secretive").await.status, 200);
}
