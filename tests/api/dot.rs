//! The provider tests against a second, independent implementation: django-oauth-toolkit
//! (Python, PyPI) with OpenID Connect enabled, started from `tests/providers/dot/serve.py` in
//! the virtual environment `tests/providers/dot/install.sh` makes (scripts/test.sh runs it).
//!
//! Each client authentication method django-oauth-toolkit supports (`client_secret_basic`,
//! `client_secret_post`, a public client with `none`; it has no `private_key_jwt`) goes through
//! login (its own login form, and its consent page for `post-client`), `/claims`, `/userInfo`,
//! a proxied call to a resource server that introspects the token at the provider, refresh
//! (django-oauth-toolkit rotates refresh tokens) and logout, where the provider's introspection
//! endpoint must then call both tokens inactive. What the provider taught us is in
//! docs/providers.md, "Providers the suite runs against".

use crate::helpers::*;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Value};
use std::process::Stdio;
use std::time::Duration;
use token_handler::crypto::Purpose;
use token_handler::session::{AccessTokenCookie, RefreshTokenCookie};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};

/// The confidential client the provider-side checks (introspection, direct refresh) use.
const INTROSPECTOR: (&str, &str) = ("basic-client", "basic-secret");

/// A running django-oauth-toolkit. Killed by PID on drop; it also exits by itself when our end
/// of its stdin closes and after a maximum lifetime. Its database lives in `_dir`.
pub struct DotProvider {
    child: Child,
    _stdin: ChildStdin,
    _dir: tempfile::TempDir,
    /// `http://127.0.0.1:<port>/o`, as its discovery document names it.
    pub issuer: String,
}

impl DotProvider {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Starts with these extra environment variables (see serve.py).
    pub async fn start_with(env: &[(&str, &str)]) -> Self {
        let python = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/providers/dot/.venv/bin/python"
        );
        assert!(
            std::path::Path::new(python).exists(),
            "{python} is missing: run `bash tests/providers/dot/install.sh` (scripts/test.sh \
             does), which installs django-oauth-toolkit from PyPI into that virtual environment"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let mut child = Command::new(python)
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/providers/dot/serve.py"
            ))
            .env("PORT", "0")
            .env("DOT_DIR", dir.path())
            .env("MAX_LIFETIME_SECONDS", "300")
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start tests/providers/dot/serve.py");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        tokio::time::timeout(
            Duration::from_secs(30),
            BufReader::new(stdout).read_line(&mut line),
        )
        .await
        .expect("django-oauth-toolkit did not start within 30 s")
        .expect("read the provider's issuer line");
        let issuer = serde_json::from_str::<Value>(&line)
            .unwrap_or_else(|_| panic!("django-oauth-toolkit did not start: {line:?}"))["issuer"]
            .as_str()
            .expect("issuer")
            .to_string();
        Self {
            child,
            _stdin: stdin,
            _dir: dir,
            issuer,
        }
    }

    /// An endpoint under the issuer (`/token/`, `/revoke_token/`, …).
    pub fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }

    async fn get_json(&self, path: &str) -> Value {
        let origin = self.issuer.trim_end_matches("/o");
        awc::Client::default()
            .get(format!("{origin}{path}"))
            .send()
            .await
            .expect("test endpoint")
            .json()
            .await
            .expect("json")
    }

    /// Counters of successful requests (`/test/stats`).
    pub async fn stats(&self) -> Value {
        self.get_json("/test/stats").await
    }

    /// How the last token or revocation request authenticated the client.
    pub async fn last_client_auth(&self) -> Value {
        self.get_json("/test/last-client-auth").await
    }

    /// RFC 7662 introspection at the provider: whether it still honours `token`.
    pub async fn introspect(&self, token: &str) -> Value {
        introspect(&self.endpoint("/introspect/"), token).await
    }

    /// A refresh grant made directly at the provider, bypassing token-handler.
    pub async fn refresh_directly(&self, client: (&str, &str), token: &str) -> (u16, Value) {
        let mut resp = awc::Client::default()
            .post(self.endpoint("/token/"))
            .basic_auth(client.0, client.1)
            .send_form(&[("grant_type", "refresh_token"), ("refresh_token", token)])
            .await
            .expect("token request");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }
}

impl Drop for DotProvider {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

async fn introspect(endpoint: &str, token: &str) -> Value {
    awc::Client::default()
        .post(endpoint)
        .basic_auth(INTROSPECTOR.0, INTROSPECTOR.1)
        .send_form(&[("token", token)])
        .await
        .expect("introspection")
        .json()
        .await
        .expect("introspection json")
}

/// `&amp;` and friends in an attribute value, as Django escapes them.
fn html_unescape(value: &str) -> String {
    value
        .replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The value of attribute `name` in one HTML tag.
fn attribute(tag: &str, name: &str) -> Option<String> {
    let start = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    let end = tag[start..].find('"')? + start;
    Some(html_unescape(&tag[start..end]))
}

/// The first form of a page: its action (`""` when it has none) and its named inputs.
fn parse_form(html: &str) -> (String, Vec<(String, String)>) {
    let form = html
        .split("<form")
        .nth(1)
        .unwrap_or_else(|| panic!("no form on the provider's page: {html}"));
    let open = &form[..form.find('>').expect("form tag")];
    let action = attribute(open, "action").unwrap_or_default();
    let inputs = form
        .split("<input")
        .skip(1)
        .filter_map(|rest| {
            let tag = &rest[..rest.find('>')?];
            Some((attribute(tag, "name")?, attribute(tag, "value")?))
        })
        .collect();
    (action, inputs)
}

/// Signs `user` in at django-oauth-toolkit like a person: its login form (any password), then
/// its consent page when the client has one, pressing "Authorize". Returns the URL the provider
/// redirected to and the provider's cookies (its session).
async fn dot_login(authorization_url: &str, user: &str) -> (String, Jar) {
    let client = awc::Client::builder()
        .disable_redirects()
        .timeout(Duration::from_secs(20))
        .finish();
    let mut jar = Jar::default();
    let mut url = authorization_url.to_string();
    let mut form: Option<String> = None;
    for _ in 0..12 {
        if url.starts_with(REDIRECT_URI) {
            return (url, jar);
        }
        let path = url::Url::parse(&url).expect("url").path().to_string();
        let mut req = match &form {
            Some(_) => client.post(&url),
            None => client.get(&url),
        };
        let cookies = jar.header_for(&path);
        if !cookies.is_empty() {
            req = req.insert_header(("cookie", cookies));
        }
        let mut resp = match form.take() {
            Some(body) => {
                req.insert_header(("content-type", "application/x-www-form-urlencoded"))
                    .send_body(body)
                    .await
            }
            None => req.send().await,
        }
        .expect("provider request");
        for sc in resp.headers().get_all("set-cookie") {
            jar.store(sc.to_str().expect("ascii"), &path);
        }
        if resp.status().is_redirection() {
            let location = resp.headers().get("location").expect("Location");
            url = url::Url::parse(&url)
                .and_then(|b| b.join(location.to_str().expect("location")))
                .expect("valid Location")
                .to_string();
            continue;
        }
        let html = String::from_utf8_lossy(&resp.body().await.expect("page")).to_string();
        assert_eq!(resp.status().as_u16(), 200, "provider page: {html}");
        let (action, inputs) = parse_form(&html);
        let mut body = url::form_urlencoded::Serializer::new(String::new());
        body.extend_pairs(&inputs);
        if html.contains("name=\"username\"") {
            body.append_pair("username", user);
            body.append_pair("password", "any");
        } else {
            assert!(
                inputs.iter().any(|(k, _)| k == "allow"),
                "neither a login nor a consent page: {html}"
            );
        }
        form = Some(body.finish());
        url = url::Url::parse(&url)
            .and_then(|b| b.join(&action))
            .expect("form action")
            .to_string();
    }
    panic!("django-oauth-toolkit did not redirect back to the SPA");
}

/// One GET at the provider with its cookies: the status and the Location.
async fn provider_get(url: &str, jar: &mut Jar) -> (u16, String) {
    let path = url::Url::parse(url).expect("url").path().to_string();
    let mut req = awc::Client::builder().disable_redirects().finish().get(url);
    let cookies = jar.header_for(&path);
    if !cookies.is_empty() {
        req = req.insert_header(("cookie", cookies));
    }
    let mut resp = req.send().await.expect("provider request");
    for sc in resp.headers().get_all("set-cookie") {
        jar.store(sc.to_str().expect("ascii"), &path);
    }
    let location = resp
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .map(String::from);
    let body = resp.body().await.unwrap_or_default();
    let status = resp.status().as_u16();
    (
        status,
        location.unwrap_or_else(|| String::from_utf8_lossy(&body).to_string()),
    )
}

/// A resource server of the provider: introspects the bearer token there (RFC 7662) and answers
/// what it learnt, so a proxied call shows the provider accepted the token token-handler sent.
async fn start_resource_server(introspection_endpoint: String) -> String {
    async fn handle(req: HttpRequest, endpoint: web::Data<String>) -> HttpResponse {
        let token = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match token {
            Some(token) => {
                let answer = introspect(&endpoint, token).await;
                if answer["active"] == true {
                    HttpResponse::Ok().json(json!({"path": req.path(), "introspection": answer}))
                } else {
                    HttpResponse::Unauthorized().json(answer)
                }
            }
            None => HttpResponse::Unauthorized().finish(),
        }
    }
    let endpoint = web::Data::new(introspection_endpoint);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(endpoint.clone())
            .default_service(web::to(handle))
    })
    .workers(1)
    .listen(listener)
    .expect("listen")
    .run();
    actix_web::rt::spawn(server);
    format!("http://127.0.0.1:{port}")
}

/// A `[[providers]]` entry for one of the provider's clients. They share the SPA's redirect URI,
/// so each requires `iss` (RFC 9207), which django-oauth-toolkit sends when configured to.
/// Its OIDC discovery document names no revocation endpoint (only its RFC 8414 document does):
/// none is configured, so logout revokes only because token-handler takes it from there.
fn dot_provider(op: &DotProvider, id: &str, client_id: &str) -> ProviderConfig {
    ProviderConfig::new(id, &op.issuer, client_id)
        .require_iss()
        .scope("openid profile email")
}

/// Each client authentication method, through the whole life of a session.
#[actix_web::test]
async fn each_client_authentication_method_through_a_whole_session() {
    let op = DotProvider::start().await;
    let api = start_resource_server(op.endpoint("/introspect/")).await;
    let config = TestConfig::with_providers([
        dot_provider(&op, "basic", "basic-client").client_secret("basic-secret"),
        dot_provider(&op, "post", "post-client")
            .client_auth("client_secret_post")
            .client_secret("post-secret"),
        dot_provider(&op, "public", "public-client").client_auth("none"),
        // The issuer as an operator might copy it, with a trailing slash.
        ProviderConfig::new("slash", &format!("{}/", op.issuer), "basic-client")
            .require_iss()
            .scope("openid profile email")
            .client_secret("basic-secret"),
    ])
    .route(RouteConfig::new("/api", &api));
    let app = TestApp::spawn_with(&config).await;

    let cases = [
        ("basic", "basic-client", "client_secret_basic"),
        ("post", "post-client", "client_secret_post"),
        ("public", "public-client", "none"),
    ];
    for (round, (id, client_id, method)) in cases.into_iter().enumerate() {
        let user = format!("user-{id}");
        let mut browser = app.browser();
        let url = browser
            .start_login(&json!({"provider": id}).to_string())
            .await;
        assert!(url.starts_with(&op.endpoint("/authorize/?")), "{url}");
        assert_eq!(
            query_param(&url, "code_challenge_method").as_deref(),
            Some("S256")
        );
        let (callback, mut provider_jar) = dot_login(&url, &user).await;
        assert_eq!(
            query_param(&callback, "iss").as_ref(),
            Some(&op.issuer),
            "{callback}"
        );
        let resp = browser.end_login(&callback).await;
        assert_eq!(resp.status, 200, "{id}: {:?}", resp.body);
        assert_eq!(resp.body["isLoggedIn"], true);
        let last = op.last_client_auth().await;
        assert_eq!(last["grant_type"], "authorization_code", "{id}: {last}");
        assert_eq!(last["method"], method, "{id}: {last}");
        assert_eq!(last["client_id"], client_id, "{id}: {last}");

        // The ID token: django-oauth-toolkit's subject is the user's database key.
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
        assert_eq!(proxied.body["introspection"]["username"], user.as_str());

        // Refresh: django-oauth-toolkit rotates the refresh token and revokes the old one.
        let rt1: RefreshTokenCookie =
            app.unseal(Purpose::RefreshToken, &browser.jar.value("th-auth"));
        let at1: AccessTokenCookie = app.unseal(Purpose::AccessToken, &browser.jar.value("th-at"));
        let refreshed = browser.post("/refresh", "").await;
        assert_eq!(refreshed.status, 204, "{id}: {:?}", refreshed.body);
        let last = op.last_client_auth().await;
        assert_eq!(last["grant_type"], "refresh_token", "{id}: {last}");
        assert_eq!(last["method"], method, "{id}: {last}");
        let rt2: RefreshTokenCookie =
            app.unseal(Purpose::RefreshToken, &browser.jar.value("th-auth"));
        let at2: AccessTokenCookie = app.unseal(Purpose::AccessToken, &browser.jar.value("th-at"));
        assert_ne!(
            rt1.token, rt2.token,
            "{id}: the refresh token was not rotated"
        );
        assert_ne!(at1.token, at2.token);
        assert_eq!(op.introspect(at1.token.expose()).await["active"], false);
        assert_eq!(browser.get("/userInfo").await.body["sub"], sub.as_str());
        assert_eq!(
            browser
                .raw(awc::http::Method::GET, "/api/orders", None, &[])
                .await
                .status,
            200
        );
        assert_eq!(browser.get("/claims").await.body["sub"], sub.as_str());

        // Logout: both tokens revoked at the provider, with the same client authentication.
        let logout = browser.post("/logout", "").await;
        assert_eq!(logout.status, 200, "{id}: {:?}", logout.body);
        let last = op.last_client_auth().await;
        assert_eq!(last["endpoint"], "/o/revoke_token/", "{id}: {last}");
        assert_eq!(last["method"], method, "{id}: {last}");
        assert!(browser.jar.all().is_empty(), "{:?}", browser.jar.all());
        assert_eq!(op.introspect(at2.token.expose()).await["active"], false);
        assert_eq!(op.introspect(rt2.token.expose()).await["active"], false);
        if method != "none" {
            let (status, body) = op
                .refresh_directly((client_id, &format!("{id}-secret")), rt2.token.expose())
                .await;
            assert_eq!(status, 400, "{id}: {body}");
            assert_eq!(body["error"], "invalid_grant");
        }
        let url = logout.body["url"].as_str().expect("url");
        assert!(url.starts_with(&op.endpoint("/logout/?")), "{url}");
        assert_eq!(query_param(url, "client_id").as_deref(), Some(client_id));
        assert!(query_param(url, "id_token_hint").is_some(), "{url}");
        // RP-initiated logout: the browser goes there, and the provider's session ends too,
        // although the ID token's grant was revoked just before.
        let (status, location) = provider_get(url, &mut provider_jar).await;
        assert_eq!(status, 302, "{id}: {location}");
        assert_eq!(location, REDIRECT_URI, "{id}");
        let mut browser = app.browser();
        let again = browser
            .start_login(&json!({"provider": id}).to_string())
            .await;
        let (status, location) = provider_get(&again, &mut provider_jar).await;
        assert_eq!(status, 302, "{id}");
        assert!(location.starts_with("/accounts/login/"), "{id}: {location}");
    }
    let stats = op.stats().await;
    assert_eq!(stats["authorization_code_grants"], 3, "{stats}");
    assert_eq!(stats["refresh_grants"], 3, "{stats}");
    assert_eq!(stats["userinfo_requests"], 6, "{stats}");

    // A configured issuer with one trailing slash finds the same document; the tokens and the
    // RFC 9207 `iss` carry the issuer as discovered, without it.
    let mut browser = app.browser();
    let url = browser
        .start_login(&json!({"provider": "slash"}).to_string())
        .await;
    let (callback, _) = dot_login(&url, "user-basic").await;
    let resp = browser.end_login(&callback).await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    let claims = browser.get("/claims").await;
    assert_eq!(claims.body["iss"], Value::String(op.issuer.clone()));
}

/// Django's own server, without the middleware that sets Content-Length, ends each answer by
/// closing the connection (legal HTTP/1.1, RFC 9112 §6.3), and awc reads such a body as empty.
/// The operator is told exactly that, not that the discovery document is "not valid".
#[actix_web::test]
async fn answers_delimited_by_closing_the_connection_are_named_as_such() {
    let op = DotProvider::start_with(&[("DOT_CONTENT_LENGTH", "off")]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.toml");
    let config = TestConfig::with_providers([
        dot_provider(&op, "default", "basic-client").client_secret("basic-secret")
    ]);
    std::fs::write(&path, config.toml()).expect("write");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_token-handler"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .await
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("answered without Content-Length or chunked encoding"),
        "{stdout}"
    );
    let app = TestApp::spawn_with(&config).await;
    let resp = app.browser().post("/login/start", "").await;
    assert_eq!(resp.status, 503, "{:?}", resp.body);
    assert_eq!(resp.code(), "provider_unavailable");
}

/// django-oauth-toolkit without OpenID Connect: a plain OAuth 2.0 server with no OpenID
/// discovery (404), found through its RFC 8414 document, whose revocation endpoint is used at
/// logout with nothing configured but the issuer.
#[actix_web::test]
async fn a_plain_oauth2_server_found_through_its_rfc_8414_metadata() {
    let op = DotProvider::start_with(&[("DOT_OIDC", "off")]).await;
    let api = start_resource_server(op.endpoint("/introspect/")).await;
    let config =
        TestConfig::with_providers([ProviderConfig::new("default", &op.issuer, "basic-client")
            .client_secret("basic-secret")
            .scope("read")
            .require_iss()])
        .route(RouteConfig::new("/api", &api));
    let app = TestApp::spawn_with(&config).await;
    let mut browser = app.browser();
    let url = browser.start_login("").await;
    assert!(url.starts_with(&op.endpoint("/authorize/?")), "{url}");
    assert!(query_param(&url, "nonce").is_none(), "{url}");
    let (callback, _) = dot_login(&url, "plain").await;
    let resp = browser.end_login(&callback).await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    assert!(browser.jar.named("th-id").is_empty());
    let claims = browser.get("/claims").await;
    assert_eq!(claims.status, 404, "{:?}", claims.body);
    assert_eq!(claims.code(), "no_id_token");

    let proxied = browser
        .raw(awc::http::Method::GET, "/api/orders", None, &[])
        .await;
    assert_eq!(proxied.status, 200, "{:?}", proxied.body);
    assert_eq!(proxied.body["introspection"]["username"], "plain");

    assert_eq!(browser.post("/refresh", "").await.status, 204);
    let at: AccessTokenCookie = app.unseal(Purpose::AccessToken, &browser.jar.value("th-at"));
    let rt: RefreshTokenCookie = app.unseal(Purpose::RefreshToken, &browser.jar.value("th-auth"));
    let logout = browser.post("/logout", "").await;
    assert_eq!(logout.status, 200, "{:?}", logout.body);
    assert_eq!(logout.body["url"], REDIRECT_URI, "no end-session endpoint");
    assert_eq!(op.introspect(at.token.expose()).await["active"], false);
    assert_eq!(op.introspect(rt.token.expose()).await["active"], false);
    let stats = op.stats().await;
    assert_eq!(stats["refresh_grants"], 1, "{stats}");
    assert!(stats["revocations"].as_i64() >= Some(1), "{stats}");
}
