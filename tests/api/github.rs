//! A plain OAuth 2.0 provider that answers like GitHub, with the `github` preset: no discovery,
//! no ID token, no `expires_in`, a token endpoint that answers a form unless asked for JSON, and
//! a user API (`/user`) with a numeric `id` and `login` instead of `sub`. GitHub itself is not
//! reachable from the tests, so an in-process stand-in answers as its documentation shows
//! (<https://docs.github.com/en/apps/oauth-apps/building-oauth-apps/authorizing-oauth-apps>,
//! <https://docs.github.com/en/rest/users/users#get-the-authenticated-user>).

use crate::helpers::*;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use awc::http::Method;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use token_handler::crypto::Purpose;
use token_handler::session::AccessTokenCookie;

const CLIENT_ID: &str = "Iv1.standin0123456";
const CLIENT_SECRET: &str = "standin-secret";

/// What the stand-in saw and issued.
#[derive(Default)]
struct Seen {
    /// Authorization code → redirect_uri it was issued for.
    codes: HashMap<String, String>,
    tokens: Vec<String>,
    /// The `Accept` header of each token request.
    token_accepts: Vec<String>,
    /// Each token request's form, client secret and code verifier left out.
    token_forms: Vec<HashMap<String, String>>,
    /// The paths of `/user…` requests that carried an issued token.
    api_calls: Vec<String>,
}

struct GitHubStandIn {
    base: String,
    seen: Arc<Mutex<Seen>>,
}

fn form(bytes: &[u8]) -> HashMap<String, String> {
    url::form_urlencoded::parse(bytes).into_owned().collect()
}

impl GitHubStandIn {
    /// Starts the stand-in; `/user` answers `user` to a valid token, `/user/emails` the
    /// `emails` list (`None`: 404, as GitHub answers a token without the `user:email` scope).
    async fn start(user: Value, emails: Option<Value>) -> Self {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let state = seen.clone();
        let server = HttpServer::new(move || {
            let (state, user, emails) = (state.clone(), user.clone(), emails.clone());
            App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
                let (state, user, emails) = (state.clone(), user.clone(), emails.clone());
                async move { answer(&req, &body, &state, &user, emails.as_ref()) }
            }))
        })
        .workers(1)
        .listen(listener)
        .expect("listen")
        .run();
        actix_web::rt::spawn(server);
        Self {
            base: format!("http://127.0.0.1:{port}"),
            seen,
        }
    }

    /// The `github` preset, its endpoints pointed at the stand-in, and a route to its API.
    fn config(&self) -> TestConfig {
        TestConfig::with_providers([ProviderConfig::new("github", &self.base, CLIENT_ID)
            .preset("github")
            .client_secret(CLIENT_SECRET)
            .authorization_endpoint(&format!("{}/login/oauth/authorize", self.base))
            .token_endpoint(&format!("{}/login/oauth/access_token", self.base))
            .userinfo_endpoint(&format!("{}/user", self.base))
            .userinfo_emails_endpoint(&format!("{}/user/emails", self.base))])
        .route(RouteConfig::new("/github", &self.base).strip_prefix())
    }
}

fn answer(
    req: &HttpRequest,
    body: &[u8],
    state: &Mutex<Seen>,
    user: &Value,
    emails: Option<&Value>,
) -> HttpResponse {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let mut seen = state.lock().unwrap();
    match req.path() {
        // The user signs in and approves at once: straight back with a code.
        "/login/oauth/authorize" => {
            let q = form(req.query_string().as_bytes());
            assert_eq!(q.get("client_id").map(String::as_str), Some(CLIENT_ID));
            let code = format!("code-{}", seen.codes.len());
            let redirect = q.get("redirect_uri").cloned().unwrap_or_default();
            seen.codes.insert(code.clone(), redirect.clone());
            let mut to = url::Url::parse(&redirect).expect("redirect_uri");
            to.query_pairs_mut()
                .append_pair("code", &code)
                .append_pair("state", q.get("state").map(String::as_str).unwrap_or(""));
            HttpResponse::Found()
                .insert_header(("location", to.to_string()))
                .finish()
        }
        "/login/oauth/access_token" => {
            let mut f = form(body);
            seen.token_accepts.push(header("accept"));
            let good = f.get("client_id").map(String::as_str) == Some(CLIENT_ID)
                && f.remove("client_secret").as_deref() == Some(CLIENT_SECRET)
                && f.get("code")
                    .and_then(|c| seen.codes.remove(c))
                    .is_some_and(|r| f.get("redirect_uri") == Some(&r));
            f.remove("code_verifier");
            seen.token_forms.push(f);
            // GitHub answers errors with 200 too.
            let mut answer = vec![("error", "bad_verification_code".to_string())];
            if good {
                let token = format!("gho_standin{}", seen.tokens.len());
                seen.tokens.push(token.clone());
                // No expires_in, no refresh_token, no id_token: an OAuth App's token.
                answer = vec![
                    ("access_token", token),
                    ("scope", "read:user,user:email".to_string()),
                    ("token_type", "bearer".to_string()),
                ];
            }
            if header("accept").contains("application/json") {
                let map: serde_json::Map<String, Value> = answer
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), Value::String(v)))
                    .collect();
                HttpResponse::Ok().json(map)
            } else {
                let text = url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(answer)
                    .finish();
                HttpResponse::Ok()
                    .content_type("application/x-www-form-urlencoded; charset=utf-8")
                    .body(text)
            }
        }
        path if path.starts_with("/user") => {
            // GitHub takes `token <t>` or `Bearer <t>`.
            let auth = header("authorization");
            let token = auth
                .strip_prefix("Bearer ")
                .or_else(|| auth.strip_prefix("token "));
            if !token.is_some_and(|t| seen.tokens.iter().any(|k| k == t)) {
                return HttpResponse::Unauthorized().json(json!({
                    "message": "Bad credentials",
                    "documentation_url": "https://docs.github.com/rest",
                    "status": "401"
                }));
            }
            seen.api_calls.push(path.to_string());
            match (path, emails) {
                ("/user", _) => HttpResponse::Ok().json(user.clone()),
                ("/user/emails", Some(list)) => HttpResponse::Ok().json(list.clone()),
                _ => HttpResponse::NotFound().json(json!({"message": "Not Found"})),
            }
        }
        _ => HttpResponse::NotFound().json(json!({"message": "Not Found"})),
    }
}

/// GitHub's `/user` for a user who keeps their email private (`email: null`).
fn octocat() -> Value {
    json!({
        "login": "octocat",
        "id": 583231,
        "node_id": "MDQ6VXNlcjU4MzIzMQ==",
        "avatar_url": "https://avatars.githubusercontent.com/u/583231?v=4",
        "html_url": "https://github.com/octocat",
        "type": "User",
        "site_admin": false,
        "name": "The Octocat",
        "company": "@github",
        "email": null,
        "created_at": "2011-01-25T18:44:36Z"
    })
}

/// GitHub's `/user/emails`: the primary verified address, and others.
fn octocat_emails() -> Value {
    json!([
        {"email": "old@example.com", "primary": false, "verified": true, "visibility": null},
        {"email": "octocat@github.com", "primary": true, "verified": true, "visibility": "private"},
        {"email": "unverified@example.com", "primary": false, "verified": false, "visibility": null}
    ])
}

/// Signs in through the stand-in; returns the browser, logged in.
async fn login(app: &TestApp, gh: &GitHubStandIn) -> Browser {
    let mut browser = app.browser();
    let url = browser.start_login("").await;
    assert!(
        url.starts_with(&format!("{}/login/oauth/authorize?", gh.base)),
        "{url}"
    );
    assert_eq!(
        query_param(&url, "nonce"),
        None,
        "plain OAuth 2.0: no nonce"
    );
    assert_eq!(
        query_param(&url, "scope").as_deref(),
        Some("read:user user:email")
    );
    let callback = provider_login(&url, "octocat").await;
    let resp = browser.end_login(&callback).await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    assert_eq!(resp.body["isLoggedIn"], true);
    browser
}

#[actix_web::test]
async fn a_github_like_session_answers_normalised_user_info() {
    let gh = GitHubStandIn::start(octocat(), Some(octocat_emails())).await;
    let app = TestApp::spawn_with(&gh.config()).await;
    let mut browser = login(&app, &gh).await;
    {
        let seen = gh.seen.lock().unwrap();
        assert_eq!(seen.token_accepts, ["application/json"], "JSON, not a form");
        let f = &seen.token_forms[0];
        assert_eq!(f["grant_type"], "authorization_code");
        assert_eq!(f["redirect_uri"], REDIRECT_URI);
    }
    assert!(browser.jar.named("th-id").is_empty(), "no ID token");
    let at: AccessTokenCookie = app.unseal(Purpose::AccessToken, &browser.jar.value("th-at"));
    assert_eq!(at.expires_at, None, "GitHub sends no expires_in");
    let token = at.token.expose().to_string();

    let claims = browser.get("/claims").await;
    assert_eq!(claims.status, 404, "{:?}", claims.body);
    assert_eq!(claims.code(), "no_id_token");

    let info = browser.get("/userInfo").await;
    assert_eq!(info.status, 200, "{:?}", info.body);
    assert_eq!(
        info.body["sub"], "583231",
        "a numeric id becomes a string sub"
    );
    assert_eq!(info.body["preferred_username"], "octocat");
    assert_eq!(info.body["name"], "The Octocat");
    assert_eq!(
        info.body["email"], "octocat@github.com",
        "a private email: the primary verified one from /user/emails"
    );
    assert_eq!(info.body["email_verified"], true);
    assert_eq!(info.body["picture"], octocat()["avatar_url"]);
    assert_eq!(info.body["profile"], "https://github.com/octocat");
    assert_eq!(info.body["login"], "octocat", "GitHub's own fields stay");
    assert_eq!(info.body["id"], 583231);
    assert!(!info.body.to_string().contains(&token), "never a token");

    // The proxy carries the session's token to GitHub's API.
    let api = browser.raw(Method::GET, "/github/user", None, &[]).await;
    assert_eq!(api.status, 200, "{:?}", api.body);
    assert_eq!(api.body["login"], "octocat");
    assert_eq!(
        gh.seen.lock().unwrap().api_calls,
        ["/user", "/user/emails", "/user"]
    );

    let logout = browser.post("/logout", "").await;
    assert_eq!(logout.status, 200, "{:?}", logout.body);
    assert_eq!(logout.body["url"], REDIRECT_URI, "no end-session endpoint");
    assert_eq!(browser.get("/userInfo").await.status, 401);
    app.assert_alive().await;
}

#[actix_web::test]
async fn missing_or_odd_user_fields_are_null_never_a_server_error() {
    // No id, a name that is an object: mapped claims are null, the answer is still 200.
    // No /user/emails answer either (a token without `user:email`): email stays null.
    let gh = GitHubStandIn::start(json!({"login": "ghost", "name": {"first": "G"}}), None).await;
    let app = TestApp::spawn_with(&gh.config()).await;
    let mut browser = login(&app, &gh).await;
    let info = browser.get("/userInfo").await;
    assert_eq!(info.status, 200, "{:?}", info.body);
    assert_eq!(info.body["sub"], Value::Null);
    assert_eq!(info.body["name"], Value::Null);
    assert_eq!(info.body["email"], Value::Null);
    assert_eq!(info.body["preferred_username"], "ghost");
    assert!(info.body.get("email_verified").is_none());
    app.assert_alive().await;
}

#[actix_web::test]
async fn a_configured_mapping_replaces_the_presets() {
    let gh = GitHubStandIn::start(octocat(), None).await;
    let config = gh
        .config()
        .provider(|p| p.userinfo_claims(&[("sub", "node_id"), ("nickname", "login")]));
    let app = TestApp::spawn_with(&config).await;
    let mut browser = login(&app, &gh).await;
    let info = browser.get("/userInfo").await;
    assert_eq!(info.status, 200, "{:?}", info.body);
    assert_eq!(info.body["sub"], "MDQ6VXNlcjU4MzIzMQ==");
    assert_eq!(info.body["nickname"], "octocat");
    assert!(
        info.body.get("preferred_username").is_none(),
        "not mapped: {:?}",
        info.body
    );
}
