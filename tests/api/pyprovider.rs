//! What the tests against the Python providers share (django-oauth-toolkit in `dot.rs`,
//! django-oidc-provider in `dop.rs`): starting a Django project from `tests/providers/<name>/`
//! in the virtual environment `tests/providers/install.sh` makes (scripts/test.sh runs it),
//! signing in through a Django login form and consent page like a person, and a resource server
//! that introspects the bearer token at the provider (RFC 7662).

use crate::helpers::*;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Value};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};

/// A client of the provider and its secret.
pub type Client<'a> = (&'a str, &'a str);

/// A running Python provider (`tests/providers/<name>/serve.py`). Killed by PID on drop; it also
/// exits by itself when our end of its stdin closes and after a maximum lifetime. Its database
/// lives in `_dir`.
pub struct PythonProvider {
    child: Child,
    _stdin: ChildStdin,
    _dir: tempfile::TempDir,
    /// The issuer, as its discovery document names it.
    pub issuer: String,
    /// The token endpoint's and the introspection endpoint's paths under the issuer.
    paths: (&'static str, &'static str),
    /// The confidential client the provider-side checks (introspection, direct refresh) use.
    introspector: Client<'static>,
}

impl PythonProvider {
    /// Starts `tests/providers/<name>/serve.py` with these extra environment variables. `paths`
    /// are the token and introspection endpoints under the issuer, `introspector` the client
    /// that may introspect every test client's tokens.
    pub async fn start(
        name: &str,
        env: &[(&str, &str)],
        paths: (&'static str, &'static str),
        introspector: Client<'static>,
    ) -> Self {
        let python = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/providers/.venv/bin/python"
        );
        assert!(
            std::path::Path::new(python).exists(),
            "{python} is missing: run `bash tests/providers/install.sh` (scripts/test.sh does), \
             which installs the Python test providers from PyPI into that virtual environment"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let mut child = Command::new(python)
            .arg(format!(
                "{}/tests/providers/{name}/serve.py",
                env!("CARGO_MANIFEST_DIR")
            ))
            .env("PORT", "0")
            .env("DATA_DIR", dir.path())
            .env("MAX_LIFETIME_SECONDS", "300")
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start tests/providers/{name}/serve.py: {e}"));
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        tokio::time::timeout(
            Duration::from_secs(30),
            BufReader::new(stdout).read_line(&mut line),
        )
        .await
        .unwrap_or_else(|_| panic!("tests/providers/{name} did not start within 30 s"))
        .expect("read the provider's issuer line");
        let issuer = serde_json::from_str::<Value>(&line)
            .unwrap_or_else(|_| panic!("tests/providers/{name} did not start: {line:?}"))["issuer"]
            .as_str()
            .expect("issuer")
            .to_string();
        Self {
            child,
            _stdin: stdin,
            _dir: dir,
            issuer,
            paths,
            introspector,
        }
    }

    /// An endpoint under the issuer.
    pub fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }

    /// The introspection endpoint and its client, for [`start_resource_server`].
    pub fn introspection(&self) -> (String, Client<'static>) {
        (self.endpoint(self.paths.1), self.introspector)
    }

    async fn get_json(&self, path: &str) -> Value {
        let origin = url::Url::parse(&self.issuer).expect("issuer").origin();
        awc::Client::default()
            .get(format!("{}{path}", origin.ascii_serialization()))
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

    /// How the last token (or revocation) request authenticated the client.
    pub async fn last_client_auth(&self) -> Value {
        self.get_json("/test/last-client-auth").await
    }

    /// RFC 7662 introspection at the provider: whether it still honours `token`.
    pub async fn introspect(&self, token: &str) -> Value {
        let (endpoint, client) = self.introspection();
        introspect(&endpoint, client, token).await
    }

    /// A refresh grant made directly at the provider, bypassing token-handler.
    pub async fn refresh_directly(&self, client: Client<'_>, token: &str) -> (u16, Value) {
        let mut resp = awc::Client::default()
            .post(self.endpoint(self.paths.0))
            .basic_auth(client.0, client.1)
            .send_form(&[("grant_type", "refresh_token"), ("refresh_token", token)])
            .await
            .expect("token request");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }
}

impl Drop for PythonProvider {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

async fn introspect(endpoint: &str, client: Client<'_>, token: &str) -> Value {
    awc::Client::default()
        .post(endpoint)
        .basic_auth(client.0, client.1)
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

/// Signs `user` in at a Django provider like a person: its login form (any password), then its
/// consent page when the client has one, pressing "Authorize" (the input named `allow`, in both
/// django-oauth-toolkit and django-oidc-provider). Returns the URL the provider redirected to
/// and the provider's cookies (its session).
pub async fn django_login(authorization_url: &str, user: &str) -> (String, Jar) {
    let answer = |html: &str| {
        let (action, inputs) = parse_form(html);
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
        (action, body.finish())
    };
    follow_provider_pages(authorization_url, REDIRECT_URI, answer).await
}

/// One GET at the provider with its cookies: the status and the Location (or the body).
pub async fn provider_get(url: &str, jar: &mut Jar) -> (u16, String) {
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
pub async fn start_resource_server(op: &PythonProvider) -> String {
    async fn handle(req: HttpRequest, at: web::Data<(String, Client<'static>)>) -> HttpResponse {
        let token = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match token {
            Some(token) => {
                let answer = introspect(&at.0, at.1, token).await;
                if answer["active"] == true {
                    HttpResponse::Ok().json(json!({"path": req.path(), "introspection": answer}))
                } else {
                    HttpResponse::Unauthorized().json(answer)
                }
            }
            None => HttpResponse::Unauthorized().finish(),
        }
    }
    let at = web::Data::new(op.introspection());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(at.clone())
            .default_service(web::to(handle))
    })
    .workers(1)
    .listen(listener)
    .expect("listen")
    .run();
    actix_web::rt::spawn(server);
    format!("http://127.0.0.1:{port}")
}
