//! `[telemetry]`: where OpenTelemetry traces go, off unless an OTLP endpoint is configured.
//!
//! Off is the default so that a deployment without a collector keeps today's behaviour exactly:
//! no trace context is made up, and a client's `traceparent` reaches the upstream unchanged.
//! The standard variables (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `OTEL_EXPORTER_OTLP_ENDPOINT`,
//! `OTEL_SERVICE_NAME`) are read as defaults under this section's keys, so the usual operator
//! habits (a collector's address injected by the platform) work without a configuration file,
//! and `OTEL_SDK_DISABLED=true` turns traces off whatever is configured.

use super::ConfigError;
use serde::{de, Deserialize, Deserializer};
use url::Url;

/// The OTLP/HTTP path of the trace signal, appended to a base endpoint (OTLP exporter spec,
/// "Endpoint URLs for OTLP/HTTP").
const TRACES_PATH: &str = "v1/traces";

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawTelemetry {
    otlp_endpoint: String,
    service_name: String,
    #[serde(deserialize_with = "ratio_or_text")]
    sample_ratio: Option<f64>,
}

/// Where and how traces are exported.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetryConfig {
    /// The full OTLP/HTTP traces URL (`…/v1/traces`).
    pub traces_endpoint: Url,
    /// `service.name` of every span.
    pub service_name: String,
    /// The share of new traces recorded (0.0 to 1.0); a trace continued from an incoming
    /// `traceparent` follows its sampled flag.
    pub sample_ratio: f64,
}

impl RawTelemetry {
    /// The validated section, with the standard `OTEL_*` variables of `env` as defaults. `None`
    /// when no endpoint is set anywhere: telemetry is off.
    pub(super) fn validate(
        self,
        env: &[(String, String)],
    ) -> Result<Option<TelemetryConfig>, ConfigError> {
        let var = |name: &str| {
            env.iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        // The SDK's own off switch (OpenTelemetry SDK environment variables, "General").
        if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        let configured = self.otlp_endpoint.trim();
        // The OTLP spec: a per-signal endpoint is used as is, a base endpoint gets the path.
        let (key, text, append) = if !configured.is_empty() {
            ("telemetry.otlp_endpoint", configured.to_string(), true)
        } else if let Some(v) = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", v, false)
        } else if let Some(v) = var("OTEL_EXPORTER_OTLP_ENDPOINT") {
            ("OTEL_EXPORTER_OTLP_ENDPOINT", v, true)
        } else {
            return Ok(None);
        };
        let mut url =
            Url::parse(&text).map_err(|e| ConfigError::new(key, format!("`{text}`: {e}")))?;
        if url.scheme() != "http" {
            return Err(ConfigError::new(
                key,
                format!("`{text}` must be an http:// URL: the OTLP exporter is built without TLS; send traces to a collector or agent on the node or in the cluster network"),
            ));
        }
        // Credentials in the URL would reach the log with every export error.
        if !url.username().is_empty() || url.password().is_some() {
            return Err(ConfigError::new(
                key,
                "must not carry credentials: export errors are logged with the endpoint",
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(ConfigError::new(
                key,
                format!("`{text}` must not have a query or fragment"),
            ));
        }
        if append {
            let path = url.path().trim_end_matches('/').to_string();
            url.set_path(&format!("{path}/{TRACES_PATH}"));
        }
        let service_name = match self.service_name.trim() {
            "" => var("OTEL_SERVICE_NAME").unwrap_or_else(|| "token-handler".to_string()),
            name => name.to_string(),
        };
        let sample_ratio = self.sample_ratio.unwrap_or(1.0);
        if !(0.0..=1.0).contains(&sample_ratio) {
            return Err(ConfigError::new(
                "telemetry.sample_ratio",
                "must be between 0.0 and 1.0",
            ));
        }
        Ok(Some(TelemetryConfig {
            traces_endpoint: url,
            service_name,
            sample_ratio,
        }))
    }
}

/// A number, or (from the environment) its text.
fn ratio_or_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum N {
        Float(f64),
        Int(i64),
        Text(String),
    }
    match N::deserialize(d)? {
        N::Float(f) => Ok(Some(f)),
        N::Int(i) => Ok(Some(i as f64)),
        N::Text(t) => t
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| de::Error::custom(format!("expected a number, found `{t}`"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(endpoint: &str) -> RawTelemetry {
        RawTelemetry {
            otlp_endpoint: endpoint.into(),
            ..Default::default()
        }
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn off_unless_an_endpoint_is_set() {
        assert_eq!(raw("").validate(&[]).expect("valid"), None);
    }

    #[test]
    fn otel_sdk_disabled_turns_traces_off() {
        let off = env(&[("OTEL_SDK_DISABLED", "TRUE")]);
        assert_eq!(
            raw("http://collector:4318").validate(&off).expect("valid"),
            None
        );
        let on = env(&[("OTEL_SDK_DISABLED", "false")]);
        assert!(raw("http://collector:4318")
            .validate(&on)
            .expect("valid")
            .is_some());
    }

    #[test]
    fn the_configured_endpoint_wins_and_gets_the_signal_path() {
        let c = raw("http://collector:4318/")
            .validate(&env(&[(
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "http://other:4318",
            )]))
            .expect("valid")
            .expect("on");
        assert_eq!(
            c.traces_endpoint.as_str(),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(c.service_name, "token-handler");
        assert_eq!(c.sample_ratio, 1.0);
    }

    #[test]
    fn standard_variables_are_defaults() {
        let c = raw("")
            .validate(&env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://agent:4318/otlp"),
                ("OTEL_SERVICE_NAME", "bff"),
            ]))
            .expect("valid")
            .expect("on");
        assert_eq!(
            c.traces_endpoint.as_str(),
            "http://agent:4318/otlp/v1/traces"
        );
        assert_eq!(c.service_name, "bff");
        let c = raw("")
            .validate(&env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://agent:4318"),
                (
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    "http://agent:4318/traces",
                ),
            ]))
            .expect("valid")
            .expect("on");
        assert_eq!(c.traces_endpoint.as_str(), "http://agent:4318/traces");
    }

    #[test]
    fn bad_endpoints_and_ratios_are_refused_by_name() {
        let e = raw("https://collector:4318")
            .validate(&[])
            .expect_err("no TLS");
        assert_eq!(e.key, "telemetry.otlp_endpoint");
        assert!(e.message.contains("http://"), "{e}");
        let e = raw("")
            .validate(&env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "not a url")]))
            .expect_err("bad");
        assert_eq!(e.key, "OTEL_EXPORTER_OTLP_ENDPOINT");
        let e = raw("http://user:pw@collector:4318")
            .validate(&[])
            .expect_err("credentials");
        assert!(!e.to_string().contains("pw"), "{e}");
        let e = RawTelemetry {
            sample_ratio: Some(1.5),
            ..raw("http://c:4318")
        }
        .validate(&[])
        .expect_err("ratio");
        assert_eq!(e.key, "telemetry.sample_ratio");
    }
}
