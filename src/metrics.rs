//! Prometheus metrics, served on their own listener (`[metrics] listen`, off by default) so they
//! are never reachable through the public port.
//!
//! Label values are bounded: routes are the configured endpoint and proxy-route names (never
//! raw request paths), key ids only of listed keys, cookie names from our fixed set. A client
//! cannot grow the series count.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::LazyLock;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

/// Why a session ended by its own clocks: `idle` or `absolute`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UnsealLabels {
    pub cookie: String,
    pub reason: &'static str,
    pub key_id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabel {
    pub endpoint: String,
}

/// A configured provider's id (from the configuration, so the label set is bounded).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabel {
    pub provider: String,
}

/// A shared-store operation (a fixed word from src/store/, e.g. `refresh_lock`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabel {
    pub op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CookieLabel {
    pub cookie: String,
}

/// Every metric token-handler exports.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: Family<RouteLabel, Histogram>,
    pub refreshes: Family<OutcomeLabel, Counter>,
    pub sessions_expired: Family<ReasonLabel, Counter>,
    pub unseal_failures: Family<UnsealLabels, Counter>,
    pub provider_duration: Family<EndpointLabel, Histogram>,
    pub cookie_bytes: Family<CookieLabel, Histogram>,
    pub cookie_chunks: Family<CookieLabel, Histogram>,
    pub provider_ready: Family<ProviderLabel, Gauge>,
    pub store_errors: Family<OpLabel, Counter>,
    /// Logout checks the store did not answer (`[store] on_error` decided the request).
    pub logout_check_failures: Counter,
    /// Configuration reloads by result (`applied`, `refused`; [`crate::reload`]).
    pub config_reloads: Family<ResultLabel, Counter>,
    /// When the running configuration was loaded (start or the last applied reload).
    pub config_loaded_at: Gauge,
}

/// A reload's result: `applied` or `refused`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

fn latency() -> Histogram {
    // 0.5 ms to ~16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("token_handler");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "Requests answered, by route and status",
            requests.clone(),
        );
        let request_duration = Family::<RouteLabel, Histogram>::new_with_constructor(latency);
        registry.register(
            "http_request_duration_seconds",
            "Time to the response head, by route",
            request_duration.clone(),
        );
        let refreshes = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "refreshes",
            "Refresh attempts by outcome: ok, coalesced, shared (another replica's grant, through the store), invalid_grant, rejected, provider_error",
            refreshes.clone(),
        );
        let sessions_expired = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "sessions_expired",
            "Requests refused with session_expired because the session's idle or absolute lifetime had passed, by reason",
            sessions_expired.clone(),
        );
        let unseal_failures = Family::<UnsealLabels, Counter>::default();
        registry.register(
            "unseal_failures",
            "Cookies that did not open, by cookie, reason and key id",
            unseal_failures.clone(),
        );
        let provider_duration = Family::<EndpointLabel, Histogram>::new_with_constructor(latency);
        registry.register(
            "provider_request_duration_seconds",
            "Calls to identity providers, by endpoint",
            provider_duration.clone(),
        );
        let cookie_bytes = Family::<CookieLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(64.0, 2.0, 8))
        });
        registry.register(
            "cookie_bytes",
            "Size of each Set-Cookie written, by cookie",
            cookie_bytes.clone(),
        );
        let cookie_chunks = Family::<CookieLabel, Histogram>::new_with_constructor(|| {
            // One bucket per chunk count, 1 to cookies::MAX_CHUNKS.
            Histogram::new((1..=crate::cookies::MAX_CHUNKS).map(|n| n as f64))
        });
        registry.register(
            "cookie_chunks",
            "Cookies each sealed value was split into when written, by cookie kind",
            cookie_chunks.clone(),
        );
        let provider_ready = Family::<ProviderLabel, Gauge>::default();
        registry.register(
            "provider_ready",
            "1 while a provider's metadata is loaded (logins with it can start), else 0, by provider id",
            provider_ready.clone(),
        );
        let store_errors = Family::<OpLabel, Counter>::default();
        registry.register(
            "store_errors",
            "Shared-store commands that failed or timed out, by operation (the request went on without the store)",
            store_errors.clone(),
        );
        let logout_check_failures = Counter::default();
        registry.register(
            "logout_check_failures",
            "Checks of a session against the list of ended sessions that the store did not answer ([store] on_error decided)",
            logout_check_failures.clone(),
        );
        let config_reloads = Family::<ResultLabel, Counter>::default();
        registry.register(
            "config_reloads",
            "Configuration reloads (SIGHUP, a changed configuration or secret file), by result: applied, or refused (invalid, or a change that needs a restart; the running configuration stayed)",
            config_reloads.clone(),
        );
        let config_loaded_at = Gauge::default();
        registry.register(
            "config_loaded_timestamp_seconds",
            "Unix time the running configuration was loaded: at start, or by the last applied reload",
            config_loaded_at.clone(),
        );
        Self {
            config_reloads,
            config_loaded_at,
            logout_check_failures,
            registry,
            requests,
            request_duration,
            refreshes,
            sessions_expired,
            unseal_failures,
            provider_duration,
            cookie_bytes,
            cookie_chunks,
            provider_ready,
            store_errors,
        }
    }

    /// Records whether `provider`'s metadata is loaded (`token_handler_provider_ready`).
    pub fn set_provider_ready(&self, provider: &str, ready: bool) {
        self.provider_ready
            .get_or_create(&ProviderLabel {
                provider: provider.to_string(),
            })
            .set(i64::from(ready));
    }

    /// Counts a configuration reload and, when applied, records its time.
    pub fn record_reload(&self, applied: bool) {
        let result = if applied { "applied" } else { "refused" };
        self.config_reloads
            .get_or_create(&ResultLabel { result })
            .inc();
        if applied {
            self.record_config_loaded();
        }
    }

    /// Records that the running configuration was loaded now (`config_loaded_timestamp_seconds`).
    pub fn record_config_loaded(&self) {
        // An operator's timestamp, compared with the monitoring system's clock, not a test's.
        self.config_loaded_at.set(crate::clock::system_now());
    }

    /// Drops a provider a reload removed from `provider_ready` (no series for what is not
    /// configured).
    pub fn forget_provider(&self, provider: &str) {
        self.provider_ready.remove(&ProviderLabel {
            provider: provider.to_string(),
        });
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            tracing::error!("metrics could not be encoded");
        }
        out
    }
}

/// Counts one answered request and its time (`http_requests`, `http_request_duration_seconds`).
///
/// Every request pays for this, so each worker thread keeps the handles of the series it has
/// used (a counter and a histogram are shared handles to the registry's own series): after a
/// route's first request, recording it costs no label allocation, no hashing of a label set
/// and no lock on the family's map (issue 17). Labels stay bounded as before: `route` is one
/// of [`crate::state::AppState::route_label_ref`]'s values.
pub fn record_request(route: &str, status: u16, seconds: f64) {
    type Series = (Histogram, Vec<(u16, Counter)>);
    // foldhash rather than std's SipHash, and one lookup for a route seen before: the route
    // labels are ours (configuration), so there is nothing to defend against here.
    thread_local! {
        static SERIES: std::cell::RefCell<
            std::collections::HashMap<String, Series, foldhash::fast::RandomState>,
        > = std::cell::RefCell::default();
    }
    SERIES.with_borrow_mut(|series| {
        let (histogram, counters) = match series.get_mut(route) {
            Some(known) => known,
            None => {
                let histogram = METRICS
                    .request_duration
                    .get_or_create(&RouteLabel {
                        route: route.to_string(),
                    })
                    .clone();
                series
                    .entry(route.to_string())
                    .or_insert((histogram, Vec::new()))
            }
        };
        histogram.observe(seconds);
        match counters.iter().find(|(s, _)| *s == status) {
            Some((_, counter)) => {
                counter.inc();
            }
            None => {
                let counter = METRICS
                    .requests
                    .get_or_create(&RequestLabels {
                        route: route.to_string(),
                        status,
                    })
                    .clone();
                counter.inc();
                counters.push((status, counter));
            }
        }
    });
}

/// The process-wide metrics (one registry however many apps a test process starts).
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// `GET /metrics` on the metrics listener.
pub async fn serve() -> actix_web::HttpResponse {
    actix_web::HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(METRICS.render())
}
