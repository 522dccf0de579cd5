//! The paths tutorials use (issue 14): OIDC discovery, then RFC 8414 metadata, then configured
//! endpoints; configured endpoints only; HS256 ID tokens; token-request headers and parameters.
//!
//! The real provider only serves OIDC discovery, so Debian's nginx stands in front of it at
//! the issuer's address and answers the two well-known URLs as each case needs (passed through,
//! 404, 503, a mismatched issuer, or held open by a loopback socket that never answers: the one
//! failure nginx cannot produce by itself), passing every other request to the provider. The
//! provider publishes nginx's address as its issuer (`publicIssuer`), so the whole login runs
//! through it.

use crate::helpers::*;
use serde_json::{json, Value};
use std::time::Duration;
use token_handler::oauth::metadata::MetadataSource;

/// What nginx answers at one well-known URL.
#[derive(Clone, Copy, Debug, PartialEq)]
enum WellKnown {
    /// The provider's own metadata document.
    Serve,
    NotFound,
    Unavailable,
    /// Accepts the connection and never answers (a timeout).
    Hang,
    /// A 200 metadata document naming another issuer.
    OtherIssuer,
}

/// A loopback socket that accepts connections and never answers; stops on drop.
struct BlackHole {
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl BlackHole {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("address").port();
        let task = actix_web::rt::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        Self { port, task }
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The real provider behind nginx, whose address (plus `path`) is the issuer.
struct Fronted {
    op: TestProvider,
    nginx: Nginx,
    _hole: BlackHole,
}

impl Fronted {
    async fn start(path: &str, oidc: WellKnown, rfc8414: WellKnown, mut op_config: Value) -> Self {
        let port = free_port();
        let op_port = free_port();
        let issuer = format!("http://127.0.0.1:{port}{path}");
        op_config["publicIssuer"] = json!(issuer);
        let op = TestProvider::start_on(op_config, op_port).await;
        assert_eq!(op.issuer, issuer);
        let hole = BlackHole::start().await;
        let upstream = format!("http://127.0.0.1:{op_port}");
        let rule = |answer: WellKnown, uri: &str| match answer {
            WellKnown::Serve => {
                format!("proxy_pass {upstream}{uri}; proxy_set_header Host $http_host;")
            }
            WellKnown::NotFound => "return 404;".to_string(),
            WellKnown::Unavailable => "return 503;".to_string(),
            WellKnown::Hang => format!(
                "proxy_pass http://127.0.0.1:{}; proxy_read_timeout 60s;",
                hole.port
            ),
            WellKnown::OtherIssuer => format!(
                r#"default_type application/json; return 200 '{{"issuer":"http://127.0.0.1:{port}/elsewhere","authorization_endpoint":"{issuer}/auth","token_endpoint":"{issuer}/token","jwks_uri":"{issuer}/jwks"}}';"#
            ),
        };
        // RFC 8414 §3.1: the well-known segment goes between the host and the issuer's path.
        // Served from the provider's OIDC document, which has the same members and issuer.
        let oidc_rule = rule(oidc, "");
        let rfc8414_rule = rule(rfc8414, &format!("{path}/.well-known/openid-configuration"));
        let nginx = Nginx::start_at(port, |dir, port| {
            format!(
                r#"{preamble}
  server {{
    listen 127.0.0.1:{port};
    location = {path}/.well-known/openid-configuration {{ {oidc_rule} }}
    location = /.well-known/oauth-authorization-server{path} {{ {rfc8414_rule} }}
    location / {{ proxy_pass {upstream}; proxy_set_header Host $http_host; }}
  }}
}}
"#,
                preamble = nginx_preamble(dir)
            )
        })
        .await;
        Self {
            op,
            nginx,
            _hole: hole,
        }
    }

    fn issuer(&self) -> &str {
        &self.op.issuer
    }
}

/// The test provider's `spa-client` at `issuer`, with every endpoint configured by hand
/// (oidc-provider's paths).
fn with_configured_endpoints(config: ProviderConfig, issuer: &str) -> ProviderConfig {
    config
        .authorization_endpoint(&format!("{issuer}/auth"))
        .token_endpoint(&format!("{issuer}/token"))
        .userinfo_endpoint(&format!("{issuer}/me"))
        .jwks_uri(&format!("{issuer}/jwks"))
        .revocation_endpoint(&format!("{issuer}/token/revocation"))
        .end_session_endpoint(&format!("{issuer}/session/end"))
}

/// Where the app's default provider got its endpoints.
async fn source(app: &TestApp) -> MetadataSource {
    app.state
        .providers
        .default_provider()
        .metadata(&awc::Client::default())
        .await
        .expect("metadata")
        .source
}

/// Logs in, reads /userInfo and refreshes: the endpoints found are the provider's real ones.
async fn full_flow(app: &TestApp, case: &str, log: &dyn Fn() -> String) {
    let mut browser = app.browser();
    let resp = browser.login("fallback-user").await;
    assert_eq!(resp.status, 200, "{case}: {:?} {}", resp.body, log());
    assert_eq!(
        browser.get("/userInfo").await.body["sub"],
        "fallback-user",
        "{case}"
    );
    assert_eq!(browser.post("/refresh", "").await.status, 204, "{case}");
}

#[actix_web::test]
async fn rfc8414_metadata_when_oidc_discovery_fails_in_any_way() {
    use WellKnown::*;
    for (path, oidc, rfc8414, expected) in [
        (
            "",
            NotFound,
            Serve,
            MetadataSource::AuthorizationServerMetadata,
        ),
        // An issuer with a path: /.well-known/oauth-authorization-server/tenant1.
        (
            "/tenant1",
            NotFound,
            Serve,
            MetadataSource::AuthorizationServerMetadata,
        ),
        (
            "",
            Unavailable,
            Serve,
            MetadataSource::AuthorizationServerMetadata,
        ),
        ("", Hang, Serve, MetadataSource::AuthorizationServerMetadata),
        // OIDC discovery comes first: RFC 8414 is never needed when it answers.
        (
            "/tenant1",
            Serve,
            Unavailable,
            MetadataSource::OpenIdDiscovery,
        ),
    ] {
        let case = format!("{path} {oidc:?} then {rfc8414:?}");
        let front = Fronted::start(path, oidc, rfc8414, json!({})).await;
        let config = TestConfig::new(front.issuer()).provider(|p| p.timeout("1s"));
        let app = TestApp::spawn_with(&config).await;
        full_flow(&app, &case, &|| front.nginx.log()).await;
        assert_eq!(source(&app).await, expected, "{case}");
    }
}

#[actix_web::test]
async fn configured_endpoints_when_no_discovery_answers() {
    use WellKnown::*;
    // A provider with no discovery at all, one that fails with 503, one that hangs.
    for (oidc, rfc8414) in [
        (NotFound, NotFound),
        (Unavailable, Hang),
        (Hang, Unavailable),
    ] {
        let case = format!("{oidc:?} then {rfc8414:?}");
        let front = Fronted::start("", oidc, rfc8414, json!({})).await;
        let issuer = front.issuer().to_string();
        let config = TestConfig::new(&issuer)
            .provider(|p| with_configured_endpoints(p.timeout("1s"), &issuer));
        let app = TestApp::spawn_with(&config).await;
        full_flow(&app, &case, &|| front.nginx.log()).await;
        assert_eq!(source(&app).await, MetadataSource::Configured, "{case}");
    }

    // Nothing answers and nothing is configured: the provider is unavailable, clearly.
    let front = Fronted::start("", NotFound, NotFound, json!({})).await;
    let app = TestApp::spawn(front.issuer()).await;
    let resp = app.browser().post("/login/start", "").await;
    assert_eq!(resp.status, 503, "{:?}", resp.body);
    assert_eq!(resp.code(), "provider_unavailable");

    // A document naming another issuer is refused (RFC 8414 §3.3, OIDC Discovery §4.3), not
    // fallen past: the configured endpoints are not used to paper over it.
    let front = Fronted::start("", NotFound, OtherIssuer, json!({})).await;
    let issuer = front.issuer().to_string();
    let config =
        TestConfig::new(&issuer).provider(|p| with_configured_endpoints(p.timeout("1s"), &issuer));
    let app = TestApp::spawn_with(&config).await;
    let resp = app.browser().post("/login/start", "").await;
    assert_eq!(resp.status, 503, "{:?}", resp.body);
    assert_eq!(resp.code(), "provider_unavailable");
}

#[actix_web::test]
async fn configured_endpoints_only_login_refresh_and_logout_with_revocation() {
    // The provider serves discovery, but `discovery = false` never asks for it.
    let op = TestProvider::start().await;
    let config = TestConfig::new(&op.issuer)
        .provider(|p| with_configured_endpoints(p.discovery(false), &op.issuer));
    let app = TestApp::spawn_with(&config).await;
    let mut browser = app.browser();
    let resp = browser.login("by-hand").await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    assert_eq!(source(&app).await, MetadataSource::Configured);
    assert_eq!(browser.get("/claims").await.body["sub"], "by-hand");
    assert_eq!(browser.get("/userInfo").await.body["sub"], "by-hand");
    assert_eq!(browser.post("/refresh", "").await.status, 204);
    let logout = browser.post("/logout", "").await;
    assert_eq!(logout.status, 200, "{:?}", logout.body);
    let url = logout.body["url"].as_str().unwrap_or_default();
    assert!(
        url.starts_with(&format!("{}/session/end", op.issuer)),
        "{url}"
    );
    let stats = op.stats().await;
    assert_eq!(stats["authorization_code_grants"], 1, "{stats}");
    assert_eq!(stats["refresh_grants"], 1, "{stats}");
    assert_eq!(stats["userinfo_requests"], 1, "{stats}");
    assert!(stats["revoked_tokens"].as_i64() >= Some(1), "{stats}");
}

#[actix_web::test]
async fn hs256_id_tokens_only_when_configured() {
    // OIDC Core §10.1: the client secret is the HMAC key; 64 bytes is enough for HS512 too.
    const SECRET: &str = "hs-client-secret-hs-client-secret-hs-client-secret-hs-client-sec";
    let client = |id: &str, alg: &str| {
        json!({
            "client_id": id,
            "client_secret": SECRET,
            "id_token_signed_response_alg": alg,
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "redirect_uris": [REDIRECT_URI],
            "post_logout_redirect_uris": [REDIRECT_URI],
        })
    };
    let op = TestProvider::start_with(
        json!({"clients": [client("hs-client", "HS256"), client("rs-client", "RS256")]}),
    )
    .await;
    let provider = |id: &str, client_id: &str| {
        ProviderConfig::new(id, &op.issuer, client_id)
            .client_secret(SECRET)
            .par("off")
            .require_iss()
    };
    let config = TestConfig::with_providers([
        provider("hs", "hs-client").id_token_signing_alg("HS256"),
        // The same client without the setting: HMAC is never accepted by default.
        provider("default-algs", "hs-client"),
        // Pinned to RS256: the HS256 token is refused.
        provider("pinned-rs", "hs-client").id_token_signing_alg("RS256"),
        // Configured for HS256: the provider's RS256 tokens are refused.
        provider("hs-but-rs", "rs-client").id_token_signing_alg("HS256"),
        provider("rs", "rs-client").id_token_signing_alg("RS256"),
    ]);
    let app = TestApp::spawn_with(&config).await;
    let login = |provider: &'static str| {
        let mut browser = app.browser();
        async move {
            let url = browser
                .start_login(&json!({"provider": provider}).to_string())
                .await;
            let callback = provider_login(&url, "hmac-user").await;
            let resp = browser.end_login(&callback).await;
            (browser, resp)
        }
    };
    for accepted in ["hs", "rs"] {
        let (mut browser, resp) = login(accepted).await;
        assert_eq!(resp.status, 200, "{accepted}: {:?}", resp.body);
        assert_eq!(browser.get("/claims").await.body["sub"], "hmac-user");
        // The refreshed ID token is signed the same way, and checked the same way.
        assert_eq!(browser.post("/refresh", "").await.status, 204, "{accepted}");
    }
    for refused in ["default-algs", "pinned-rs", "hs-but-rs"] {
        let (browser, resp) = login(refused).await;
        assert_eq!(resp.status, 400, "{refused}: {:?}", resp.body);
        assert_eq!(resp.code(), "authorization_error", "{refused}");
        assert!(browser.jar.named("th-at").is_empty(), "{refused}");
    }
}

#[actix_web::test]
async fn token_request_headers_and_parameters_reach_the_token_endpoint() {
    let op = TestProvider::start().await;
    let config = TestConfig::new(&op.issuer).provider(|p| {
        p.token_header("x-api-key", "api-key-123")
            .token_header("X-Tenant", "blue")
            .token_param("audience", "https://api.example.test")
    });
    let app = TestApp::spawn_with(&config).await;
    let last = || async {
        awc::Client::default()
            .get(format!("{}/test/last-token-request", op.issuer))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .expect("last-token-request")
            .json::<Value>()
            .await
            .expect("json")
    };
    let mut browser = app.browser();
    assert_eq!(browser.login("headers").await.status, 200);
    assert_eq!(browser.post("/refresh", "").await.status, 204);
    // Both grants carry both; checked after each.
    let refresh = last().await;
    assert_eq!(refresh["grant_type"], "refresh_token", "{refresh}");
    let mut browser = app.browser();
    assert_eq!(browser.login("headers-2").await.status, 200);
    let code = last().await;
    assert_eq!(code["grant_type"], "authorization_code", "{code}");
    for seen in [refresh, code] {
        assert_eq!(seen["status"], 200, "{seen}");
        assert_eq!(seen["headers"]["x-api-key"], "api-key-123", "{seen}");
        assert_eq!(seen["headers"]["x-tenant"], "blue", "{seen}");
        assert_eq!(
            seen["params"]["audience"], "https://api.example.test",
            "{seen}"
        );
    }
}
