//! OpenTelemetry traces (issue 18): the real binary exports to an OTLP/HTTP receiver started
//! here on loopback, which decodes the protobuf the way a collector would.
//!
//! The binary runs in its own process because the tracing subscriber is global: the in-process
//! apps of the other tests run with traces off, which [`without_telemetry_a_clients_traceparent_is_relayed_as_it_came`]
//! checks.

use crate::helpers::*;
use crate::upstream::{Upstream, API_AUDIENCE};
use actix_web::{web, App, HttpResponse, HttpServer};
use awc::http::Method;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use token_handler::crypto::{KeyRing, Purpose, Sealer};
use token_handler::session::{AccessTokenCookie, RefreshTokenCookie};

/// The incoming trace: a W3C Trace Context example (Trace Context §3.2).
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

type Received = Arc<Mutex<Vec<Span>>>;

/// A minimal OTLP/HTTP collector: `POST /v1/traces` with an `ExportTraceServiceRequest` in
/// protobuf; every span received is kept.
struct Receiver {
    address: String,
    spans: Received,
}

impl Receiver {
    async fn start() -> Self {
        let spans: Received = Arc::default();
        let store = web::Data::new(spans.clone());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(store.clone())
                .app_data(web::PayloadConfig::new(16 * 1024 * 1024))
                .route("/v1/traces", web::post().to(receive))
        })
        .workers(1)
        .listen(listener)
        .expect("listen")
        .run();
        actix_web::rt::spawn(server);
        Self {
            address: format!("http://127.0.0.1:{port}"),
            spans,
        }
    }

    fn spans(&self) -> Vec<Span> {
        self.spans.lock().expect("lock").clone()
    }
}

async fn receive(
    req: actix_web::HttpRequest,
    body: web::Bytes,
    store: web::Data<Received>,
) -> HttpResponse {
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert_eq!(content_type, "application/x-protobuf");
    let export = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf export");
    let mut spans = store.lock().expect("lock");
    for resource in export.resource_spans {
        let service = format!("{:?}", resource.resource);
        assert!(service.contains("token-handler"), "service.name: {service}");
        for scope in resource.scope_spans {
            spans.extend(scope.spans);
        }
    }
    HttpResponse::Ok()
        .content_type("application/x-protobuf")
        .body(ExportTraceServiceResponse::default().encode_to_vec())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes.iter().find(|a| a.key == key).map(|a| {
        use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
        match a.value.as_ref().and_then(|v| v.value.as_ref()) {
            Some(V::StringValue(s)) => s.clone(),
            Some(V::IntValue(i)) => i.to_string(),
            other => format!("{other:?}"),
        }
    })
}

/// The one span of `spans` named `name` whose parent is `parent`.
fn child<'a>(spans: &'a [Span], name: &str, parent: &[u8]) -> &'a Span {
    let found: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name == name && s.parent_span_id == parent)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one `{name}` span under {}: {:#?}",
        hex(parent),
        spans
            .iter()
            .map(|s| (&s.name, hex(&s.parent_span_id)))
            .collect::<Vec<_>>()
    );
    found[0]
}

/// Config and process for the traced app; the cookie key is known so the test can open the
/// cookies and learn the tokens no span may carry.
async fn traced_app(op: &TestProvider, upstream: &Upstream, otlp: &str, key: &str) -> ProcessApp {
    let config = TestConfig::new(&op.issuer)
        .key(key)
        .proxy_to(&upstream.address)
        .telemetry(otlp)
        .json_logs();
    ProcessApp::start_in(&config, tempfile::tempdir().expect("tempdir"), "info").await
}

/// A proxied call whose access token had expired, with the caller's `traceparent`: the request
/// span continues the caller's trace, the unsealing, the refresh grant with its provider call,
/// and the upstream call are its children, the upstream receives a `traceparent` naming the
/// upstream span, the JSON log lines carry the trace id, and no exported attribute or event
/// holds a token, cookie value or authorization code. The spans arrive because the app flushes
/// them when it stops.
#[actix_web::test]
async fn a_refreshed_proxied_call_is_one_trace_from_the_client_to_the_upstream() {
    let receiver = Receiver::start().await;
    let op = TestProvider::start_with(json!({
        "jwtAccessTokens": {"audience": API_AUDIENCE},
        "accessTokenTtl": 2,
    }))
    .await;
    let upstream = Upstream::start(&op.issuer).await;
    let key = token_handler::crypto::CookieKey::generate_text();
    let mut app = traced_app(&op, &upstream, &receiver.address, &key).await;

    let mut browser = Browser::new(&app.address);
    let authorization_url = browser.start_login("").await;
    let callback = provider_login(&authorization_url, "pat").await;
    let code = query_param(&callback, "code").expect("a code");
    let resp = browser.end_login(&callback).await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    let sealer = Sealer::new(KeyRing::parse(&[key.as_str()]).expect("key"));
    let now = token_handler::clock::Clock::default().now();
    let old_at: AccessTokenCookie = sealer
        .unseal(Purpose::AccessToken, now, &browser.jar.value("th-at"))
        .expect("unseal");
    let old_rt: RefreshTokenCookie = sealer
        .unseal(Purpose::RefreshToken, now, &browser.jar.value("th-auth"))
        .expect("unseal");
    let mut cookie_values: Vec<String> = browser
        .jar
        .all()
        .iter()
        .map(|c| c.value().to_string())
        .collect();

    tokio::time::sleep(Duration::from_millis(2500)).await;
    let traceparent = format!("00-{TRACE_ID}-{CALLER_SPAN}-01");
    let resp = browser
        .raw(
            Method::GET,
            "/api/orders?secret-query=1",
            None,
            &[
                ("traceparent", traceparent.as_str()),
                ("tracestate", "vendor=abc"),
            ],
        )
        .await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    assert!(
        !resp.cookies_named("th-at").is_empty(),
        "the call refreshed"
    );
    let sent = resp.body["headers"]["traceparent"][0]
        .as_str()
        .expect("the upstream received a traceparent")
        .to_string();
    assert_eq!(resp.body["headers"]["tracestate"][0], "vendor=abc");
    let new_bearer = resp.body["headers"]["authorization"][0]
        .as_str()
        .expect("bearer")
        .trim_start_matches("Bearer ")
        .to_string();
    let new_rt: RefreshTokenCookie = sealer
        .unseal(Purpose::RefreshToken, now, &browser.jar.value("th-auth"))
        .expect("unseal");
    cookie_values.extend(browser.jar.all().iter().map(|c| c.value().to_string()));

    app.signal("TERM");
    assert!(
        app.wait_exit(Duration::from_secs(15)).await.is_some(),
        "stops"
    );
    let spans = receiver.spans();

    // The trace: the caller's id, parent ids intact from the caller to the upstream.
    let trace: Vec<Span> = spans
        .iter()
        .filter(|s| hex(&s.trace_id) == TRACE_ID)
        .cloned()
        .collect();
    let caller = (0..8)
        .map(|i| u8::from_str_radix(&CALLER_SPAN[2 * i..2 * i + 2], 16).expect("hex"))
        .collect::<Vec<u8>>();
    let request = child(&trace, "GET /api", &caller);
    assert_eq!(request.kind, SpanKind::Server as i32);
    assert_eq!(attribute(request, "path").as_deref(), Some("/api/orders"));
    assert_eq!(
        attribute(request, "http.response.status_code").as_deref(),
        Some("200")
    );
    let unsealed: Vec<_> = trace
        .iter()
        .filter(|s| s.name == "unseal" && s.parent_span_id == request.span_id)
        .filter_map(|s| attribute(s, "cookie"))
        .collect();
    assert_eq!(unsealed, ["access_token", "refresh_token"]);
    let refresh = child(&trace, "refresh", &request.span_id);
    assert_eq!(attribute(refresh, "provider").as_deref(), Some("default"));
    let provider = child(&trace, "provider call", &refresh.span_id);
    assert_eq!(provider.kind, SpanKind::Client as i32);
    assert_eq!(
        attribute(provider, "endpoint").as_deref(),
        Some("token endpoint")
    );
    let upstream_span = child(&trace, "upstream", &request.span_id);
    assert_eq!(upstream_span.kind, SpanKind::Client as i32);
    assert_eq!(attribute(upstream_span, "route").as_deref(), Some("/api"));
    // The upstream's parent is our upstream span, in the caller's trace (Trace Context §3.2).
    assert_eq!(
        sent,
        format!("00-{TRACE_ID}-{}-01", hex(&upstream_span.span_id))
    );
    for span in &trace {
        assert!(
            span.start_time_unix_nano <= span.end_time_unix_nano && span.end_time_unix_nano > 0,
            "{} ended",
            span.name
        );
    }

    // The login's own spans were exported too (code redemption with its provider call).
    assert!(spans
        .iter()
        .any(|s| s.name == "POST /oauth-agent/login/end"));

    // Nothing secret in any attribute or event of any span.
    let secrets = [
        code.clone(),
        old_at.token.expose().to_string(),
        old_rt.token.expose().to_string(),
        new_bearer.clone(),
        new_rt.token.expose().to_string(),
        "secret-query".to_string(),
        "spa-secret".to_string(),
    ]
    .into_iter()
    .chain(cookie_values.into_iter().filter(|v| v.len() > 8));
    let exported = spans
        .iter()
        .map(|s| format!("{} {:?} {:?}", s.name, s.attributes, s.events))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        exported.len() > 1000,
        "attributes were exported: {exported}"
    );
    for secret in secrets {
        assert!(
            !exported.contains(&secret),
            "a span carries a secret ({}…): {exported}",
            &secret[..6.min(secret.len())]
        );
    }
    assert!(
        !exported.to_ascii_lowercase().contains("bearer"),
        "{exported}"
    );

    // JSON log lines carry the trace id.
    let log = app.log();
    let line = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["span"]["path"] == "/api/orders" && l["message"] == "request")
        .unwrap_or_else(|| panic!("the request's log line: {log}"));
    assert_eq!(line["span"]["trace_id"], TRACE_ID, "{line}");
}

/// A collector that is down costs no request anything: calls answer at once, the failed export
/// is logged, and the app still stops promptly (the last export gives up).
#[actix_web::test]
async fn a_collector_that_is_down_fails_no_request() {
    let op = TestProvider::start_with(json!({"jwtAccessTokens": {"audience": API_AUDIENCE}})).await;
    let upstream = Upstream::start(&op.issuer).await;
    let closed = format!("http://127.0.0.1:{}", free_port());
    let key = token_handler::crypto::CookieKey::generate_text();
    let mut app = traced_app(&op, &upstream, &closed, &key).await;
    let mut browser = Browser::new(&app.address);
    let resp = browser.login("pat").await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    let started = Instant::now();
    for _ in 0..20 {
        let resp = browser.raw(Method::GET, "/api/orders", None, &[]).await;
        assert_eq!(resp.status, 200, "{:?}", resp.body);
        // A fresh trace of ours, sampled.
        let sent = resp.body["headers"]["traceparent"][0]
            .as_str()
            .unwrap_or("");
        assert!(sent.starts_with("00-") && sent.ends_with("-01"), "{sent}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    app.signal("TERM");
    let stopped = Instant::now();
    assert!(
        app.wait_exit(Duration::from_secs(15)).await.is_some(),
        "stops"
    );
    assert!(
        stopped.elapsed() < Duration::from_secs(10),
        "{:?}",
        stopped.elapsed()
    );
    // Logged and carried on: the failed export is in the log, once per batch.
    let log = app.log();
    assert!(!log.contains("panicked"), "{log}");
    assert!(log.contains("BatchSpanProcessor.ExportError"), "{log}");
}

/// Traces off (no `[telemetry]`): no trace context is made up, and the client's own
/// `traceparent` reaches the upstream exactly as it came.
#[actix_web::test]
async fn without_telemetry_a_clients_traceparent_is_relayed_as_it_came() {
    let op = TestProvider::start_with(json!({"jwtAccessTokens": {"audience": API_AUDIENCE}})).await;
    let upstream = Upstream::start(&op.issuer).await;
    let app = TestApp::spawn_with(&TestConfig::new(&op.issuer).proxy_to(&upstream.address)).await;
    let mut browser = app.browser();
    assert_eq!(browser.login("pat").await.status, 200);
    let resp = browser.raw(Method::GET, "/api/orders", None, &[]).await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    assert!(
        resp.body["headers"]["traceparent"].is_null(),
        "{:?}",
        resp.body
    );
    let traceparent = format!("00-{TRACE_ID}-{CALLER_SPAN}-01");
    let resp = browser
        .raw(
            Method::GET,
            "/api/orders",
            None,
            &[("traceparent", traceparent.as_str())],
        )
        .await;
    assert_eq!(resp.body["headers"]["traceparent"][0], traceparent.as_str());
}
