//! Logging setup, the per-request span and log line, and OpenTelemetry traces.
//!
//! Each request runs in a span carrying its request id, method and path without the query
//! string (the callback's query holds the authorization code), so every log line a request
//! causes can be correlated. The id comes from a well-formed incoming `X-Request-Id` or is made
//! here; it is passed to the upstream and returned to the client. Never logged: headers,
//! cookies, bodies, tokens, codes, secrets, keys (docs/logging.md).
//!
//! Traces (`[telemetry]`, off by default) export the same spans over OTLP/HTTP: the request
//! span continues an incoming W3C `traceparent` (Trace Context §3), and child spans cover
//! unsealing, the refresh grant, the provider call and the upstream call, whose `traceparent`
//! names the child span as parent. Span attributes are the spans' declared fields, which hold
//! no token, cookie, code, query string or header value. Off, none of this costs anything on a
//! request beyond one atomic load: no span is made up and a client's `traceparent` is relayed
//! as it came.

use crate::config::{LogFormat, TelemetryConfig};
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tracing::{Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Whether traces are exported (set once by [`init`]); read on every request.
static TRACING: AtomicBool = AtomicBool::new(false);

/// How long one export may take before the batch is dropped: the exporter runs on its own
/// thread, so this bounds only how long a shutdown waits for an unreachable collector.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(3);

/// Whether OpenTelemetry traces are on.
pub fn tracing_enabled() -> bool {
    TRACING.load(Ordering::Relaxed)
}

/// The tracer provider while traces are on; [`Telemetry::shutdown`] flushes it.
#[must_use = "shut it down when the server stops, or the last spans are lost"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still queued and stops the exporter (at most [`EXPORT_TIMEOUT`] per
    /// batch). A collector that is down costs a log line, never the exit status.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            TRACING.store(false, Ordering::Relaxed);
            if let Err(e) = provider.shutdown() {
                tracing::warn!(error = %e, "flushing the last traces failed");
            }
        }
    }
}

/// Installs the global subscriber; `RUST_LOG` overrides the default `info` level of the log
/// lines. With `telemetry`, token-handler's own spans (and the events inside them) are also
/// exported, whatever `RUST_LOG` says. Call it outside any async runtime (the exporter's HTTP
/// client runs its own).
pub fn init(format: LogFormat, telemetry: Option<&TelemetryConfig>) -> Telemetry {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (otel, provider) = match telemetry.map(tracer_provider) {
        Some(Ok(provider)) => {
            let layer = tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("token-handler"))
                .with_threads(false)
                .with_filter(Targets::new().with_target("token_handler", tracing::Level::INFO));
            (Some(layer), Some(provider))
        }
        Some(Err(e)) => {
            eprintln!("token-handler: traces are off: the OTLP exporter could not be built: {e}");
            (None, None)
        }
        None => (None, None),
    };
    let fmt = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer().with_target(false).boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .with_target(false)
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
    };
    let installed = tracing_subscriber::registry()
        .with(otel)
        .with(fmt.with_filter(filter))
        .try_init()
        .is_ok();
    if installed && provider.is_some() {
        TRACING.store(true, Ordering::Relaxed);
    }
    Telemetry { provider }
}

/// The OTLP/HTTP (protobuf) exporter behind a batch processor on its own thread: spans are
/// queued (bounded; the excess is dropped) and sent in the background, so a slow or absent
/// collector never holds up a request.
fn tracer_provider(
    config: &TelemetryConfig,
) -> Result<SdkTracerProvider, opentelemetry_otlp::ExporterBuildError> {
    use opentelemetry_otlp::{Protocol, WithExportConfig};
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(config.traces_endpoint.as_str())
        .with_timeout(EXPORT_TIMEOUT)
        .build()?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(config.service_name.clone())
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        // A continued trace keeps its caller's decision (W3C Trace Context `sampled` flag).
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            config.sample_ratio,
        ))))
        .with_resource(resource)
        .build())
}

/// The request's headers, read by the W3C Trace Context propagator.
struct RequestHeaders<'a>(&'a HeaderMap);

impl Extractor for RequestHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

/// An outgoing request's headers, written by the propagator.
struct OutgoingHeaders<'a>(&'a mut HeaderMap);

impl Injector for OutgoingHeaders<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// Writes the current span's `traceparent` (and `tracestate`) into an outgoing request's
/// headers, replacing any the client sent: the receiver's parent is our span, in the same
/// trace. Nothing when traces are off (the client's own header, if any, is relayed as is).
pub fn inject(headers: &mut HeaderMap) {
    if !tracing_enabled() {
        return;
    }
    let context = Span::current().context();
    TraceContextPropagator::new().inject_context(&context, &mut OutgoingHeaders(headers));
}

/// As [`inject`], as a list (awc's WebSocket request has no header map to write into); empty
/// when traces are off.
pub fn trace_headers() -> Vec<(HeaderName, HeaderValue)> {
    if !tracing_enabled() {
        return Vec::new();
    }
    let mut headers = HeaderMap::new();
    inject(&mut headers);
    headers.into_iter().collect()
}

/// A child span, or no span at all when traces are off (so a request pays nothing for it).
macro_rules! child_span {
    ($name:literal $(, $($fields:tt)*)?) => {
        if tracing_enabled() {
            tracing::info_span!($name $(, $($fields)*)?)
        } else {
            Span::none()
        }
    };
}

/// Opening one sealed cookie (`cookie` names its kind, never its value).
pub fn unseal_span(cookie: &'static str) -> Span {
    child_span!("unseal", cookie)
}

/// The refresh of a session's tokens (shared with other requests or not).
pub fn refresh_span(provider: &str) -> Span {
    child_span!("refresh", provider)
}

/// One call to a provider endpoint (`endpoint` is its role, e.g. "token endpoint").
pub fn provider_span(endpoint: &str) -> Span {
    child_span!("provider call", otel.kind = "client", endpoint)
}

/// The call to the upstream of the route `route` (its configured path, not the request's).
pub fn upstream_span(method: &actix_web::http::Method, route: &str) -> Span {
    child_span!("upstream", otel.kind = "client", http.request.method = %method, route)
}

/// The request-id header.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// An incoming request id is kept only when it is short and plain, so it is safe in logs and
/// headers (the header value itself is reused: no copy); otherwise a fresh one is made.
fn request_id(req: &ServiceRequest) -> HeaderValue {
    req.headers()
        .get(&REQUEST_ID)
        .filter(|v| {
            let v = v.as_bytes();
            !v.is_empty()
                && v.len() <= 128
                && v.iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
        })
        .cloned()
        .unwrap_or_else(fresh_request_id)
}

/// 128 random bits as 22 base64url characters (the length the id always had), encoded
/// straight from 16 bytes into the header value: not a secret, so no 32-byte token is made
/// and cut, and no `String` is formatted (issue 17).
fn fresh_request_id() -> HeaderValue {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let mut text = [0u8; 22];
    match URL_SAFE_NO_PAD.encode_slice(rand::random::<[u8; 16]>(), &mut text) {
        // base64url is header-value text.
        Ok(22) => HeaderValue::from_bytes(&text).unwrap_or(HeaderValue::from_static("invalid")),
        _ => HeaderValue::from_static("invalid"),
    }
}

/// The metrics route label of every request of an app that serves one endpoint (the
/// forward-auth listener), set as app data.
pub struct RouteLabel(pub &'static str);

/// Runs the request in its span and logs one line when it completes (the side listeners; the
/// main listener does the same inside its one middleware, `crate::middleware`).
pub async fn log_request(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let log = RequestLog::begin(&mut req);
    let mut res = next.call(req).instrument(log.span.clone()).await?;
    log.finish(&mut res);
    Ok(res)
}

/// One request's id, span and start time, from [`RequestLog::begin`] (before the handler) to
/// [`RequestLog::finish`] (after it): the request's log line and metrics.
pub struct RequestLog {
    start: Instant,
    id: HeaderValue,
    /// The request's span; the handler runs in it.
    pub span: Span,
}

impl RequestLog {
    /// Gives the request its id (kept from the client when well-formed) and its span.
    pub fn begin(req: &mut ServiceRequest) -> Self {
        let start = Instant::now();
        let id = request_id(req);
        req.headers_mut().insert(REQUEST_ID, id.clone());
        // `request_id` keeps or makes only visible ASCII.
        let text = id.to_str().unwrap_or("invalid");
        let span = if tracing_enabled() {
            // The span is named before the handler runs, so the label is looked up here (only
            // when traces are on: a copy per request the metrics below avoid).
            let route = match req.app_data::<RouteLabel>() {
                Some(RouteLabel(label)) => label.to_string(),
                None => crate::state::of(req.request())
                    .map(|s| s.route_label(req.path()))
                    .unwrap_or_else(|| "unmatched".to_string()),
            };
            traced_request_span(req, text, &route)
        } else {
            tracing::info_span!(
                "request",
                request_id = %text,
                method = %req.method(),
                path = %req.path(),
            )
        };
        Self { start, id, span }
    }

    /// Returns the id to the client, counts the request and logs its line.
    pub fn finish<B>(self, res: &mut ServiceResponse<B>) {
        let Self { start, id, span } = self;
        res.headers_mut().insert(REQUEST_ID, id);
        let status = res.status().as_u16();
        // The label is read from the request the response carries: borrowed, never copied.
        let served = res.request();
        let state = crate::state::of(served);
        let route = match served.app_data::<RouteLabel>() {
            Some(RouteLabel(label)) => label,
            None => state
                .as_deref()
                .map_or("unmatched", |s| s.route_label_ref(served.path())),
        };
        let elapsed = start.elapsed();
        crate::metrics::record_request(route, status, elapsed.as_secs_f64());
        if tracing_enabled() {
            span.record("http.response.status_code", status);
        }
        // The line is built only when something listens at `info` (not with RUST_LOG=warn).
        if tracing::enabled!(tracing::Level::INFO) {
            span.in_scope(|| {
                tracing::info!(status, elapsed_ms = elapsed.as_millis() as u64, "request")
            });
        }
    }
}

/// The request span when traces are on: the same fields, a server span named after the route
/// (OpenTelemetry HTTP conventions: `{method} {route}`, the configured path, never the raw one),
/// continuing the caller's trace when its `traceparent` is well-formed (Trace Context §3.2;
/// a malformed one starts a new trace), and its trace id as a field, so log lines carry it.
fn traced_request_span(req: &ServiceRequest, id: &str, route: &str) -> Span {
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %req.method(),
        path = %req.path(),
        otel.name = %format!("{} {route}", req.method()),
        otel.kind = "server",
        trace_id = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
    );
    let parent = TraceContextPropagator::new().extract(&RequestHeaders(req.headers()));
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
    let trace_id = span.context().span().span_context().trace_id();
    span.record("trace_id", tracing::field::display(trace_id));
    span
}
