//! Provider metadata: OpenID Connect Discovery, then RFC 8414 authorization-server metadata,
//! then the configured endpoints, in that order, with configured endpoints taking precedence.
//!
//! Each step is tried when the one before it fails in any way: a 404 (the provider has no such
//! document), a 5xx, a timeout, a refused connection, or a body that is not a metadata
//! document (a catch-all page answering 200). Providers from tutorials have only one of the
//! two documents, or none (plain OAuth 2.0). A document that is fetched but names another
//! issuer is not a failure to fall past: it is refused (below). Configured endpoints override
//! what discovery says, and when discovery fails they are enough on their own (authorization
//! and token endpoints at least); `discovery = false` skips both documents. A provider that is down does not
//! stop the service: a background task keeps retrying with backoff, and meanwhile requests for
//! that provider fail at once with a clear error instead of each waiting for a timeout. The discovered `issuer` must equal
//! the configured one (OIDC Discovery §4.3): otherwise a compromised or misrouted discovery
//! document could point us at an attacker's token endpoint and keys.

use super::http::{send_json, CallError};
use crate::clock::Clock;
use crate::config::ProviderConfig;
use serde::Deserialize;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use url::Url;

/// How long discovered metadata is used before it is fetched again.
const METADATA_TTL: Duration = Duration::from_secs(3600);

/// The endpoints token-handler uses, resolved from discovery and configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderMetadata {
    /// The exact issuer string ID tokens must carry.
    pub issuer: String,
    pub authorization_endpoint: Url,
    pub token_endpoint: Url,
    pub userinfo_endpoint: Option<Url>,
    pub jwks_uri: Option<Url>,
    pub end_session_endpoint: Option<Url>,
    pub revocation_endpoint: Option<Url>,
    /// True when discovery answered; false when only configured endpoints are in use.
    pub discovered: bool,
    /// Which step of the fallback gave the endpoints.
    pub source: MetadataSource,
    /// The provider promises `iss` in every authorization response (RFC 9207 §3), so a
    /// response without it is refused.
    pub iss_in_response: bool,
    /// RFC 9126 pushed authorization request endpoint.
    pub par_endpoint: Option<Url>,
    /// The provider accepts authorization requests only through PAR (RFC 9126 §5).
    pub par_required: bool,
}

/// Where a provider's endpoints came from, in the order the sources are tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataSource {
    /// `<issuer>/.well-known/openid-configuration` (OIDC Discovery §4).
    OpenIdDiscovery,
    /// `/.well-known/oauth-authorization-server<issuer path>` (RFC 8414 §3.1).
    AuthorizationServerMetadata,
    /// The endpoints in the configuration only.
    Configured,
}

impl std::fmt::Display for MetadataSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MetadataSource::OpenIdDiscovery => "OpenID Connect discovery",
            MetadataSource::AuthorizationServerMetadata => "RFC 8414 authorization server metadata",
            MetadataSource::Configured => "configured endpoints",
        })
    }
}

#[derive(Deserialize)]
struct DiscoveryDocument {
    issuer: String,
    authorization_endpoint: Option<String>,
    token_endpoint: Option<String>,
    userinfo_endpoint: Option<String>,
    jwks_uri: Option<String>,
    end_session_endpoint: Option<String>,
    revocation_endpoint: Option<String>,
    pushed_authorization_request_endpoint: Option<String>,
    #[serde(default)]
    require_pushed_authorization_requests: bool,
    #[serde(default)]
    authorization_response_iss_parameter_supported: bool,
}

/// Why a provider's metadata could not be loaded. The text is for the log and for
/// `token-handler check`; a request is told only that the provider is not ready.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    #[error("this provider has no discovery")]
    NoDiscovery,
    /// Discovery failed and the configuration names too few endpoints to do without it.
    #[error("{0}; configure authorization_endpoint and token_endpoint to run without discovery")]
    NoEndpoints(Box<MetadataError>),
    /// OIDC Discovery §4.3.
    #[error("discovery names issuer `{discovered}` but the configuration says `{configured}`; they must be the same")]
    IssuerMismatch {
        discovered: String,
        configured: String,
    },
    #[error("discovery gave an unusable {name}: {message}")]
    UnusableEndpoint { name: String, message: String },
    #[error("discovery gave {name} `{url}`, which does not use https; only an issuer on loopback may name http endpoints")]
    NotHttps { name: String, url: String },
    #[error("discovery has no {0}; configure one")]
    MissingEndpoint(&'static str),
    /// The document could not be fetched (an error status, a timeout, no connection) or is
    /// not a metadata document.
    #[error("{reason}")]
    Fetch { reason: String },
    /// Both well-known URLs failed.
    #[error("{0}; {1}")]
    BothFailed(Box<MetadataError>, Box<MetadataError>),
}

/// The discovery URL for an issuer (OIDC Discovery §4: the issuer's path is kept).
pub fn discovery_url(issuer: &str) -> String {
    format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    )
}

/// The RFC 8414 §3.1 metadata URL: the well-known segment goes between host and path.
pub fn authorization_server_metadata_url(issuer: &str) -> Option<String> {
    let url = Url::parse(issuer).ok()?;
    let path = url.path().trim_end_matches('/');
    let mut origin = url.origin().ascii_serialization();
    origin.push_str("/.well-known/oauth-authorization-server");
    origin.push_str(path);
    Some(origin)
}

fn same_issuer(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

/// A discovered endpoint: https, unless the issuer itself is on loopback (development and
/// tests). The loopback exception of configured endpoints does not extend to discovery: a
/// remote https issuer's document naming `http://127.0.0.1:…` would send the client secret,
/// codes and tokens in clear to whatever listens on the machine running token-handler (a
/// sidecar, another tenant's process), on the word of a document fetched over the network.
fn endpoint(
    name: &str,
    text: Option<String>,
    issuer_is_loopback: bool,
) -> Result<Option<Url>, MetadataError> {
    text.map(|t| {
        let url = crate::config::parse_provider_url(name, &t).map_err(|e| {
            MetadataError::UnusableEndpoint {
                name: name.to_string(),
                message: e.message,
            }
        })?;
        if url.scheme() != "https" && !issuer_is_loopback {
            return Err(MetadataError::NotHttps {
                name: name.to_string(),
                url: t,
            });
        }
        Ok(url)
    })
    .transpose()
}

/// Whether the configured issuer is on loopback, so its discovery may name http endpoints.
fn issuer_is_loopback(issuer: &str) -> bool {
    Url::parse(issuer.trim()).is_ok_and(|u| crate::config::is_loopback(&u))
}

/// Fetches discovery and merges configured overrides.
pub async fn discover(
    client: &awc::Client,
    config: &ProviderConfig,
) -> Result<ProviderMetadata, MetadataError> {
    let discovered = if config.discovery {
        fetch_discovery(client, config).await
    } else {
        Err(MetadataError::NoDiscovery)
    };
    let o = &config.endpoints;
    match discovered {
        Ok((mut doc, source)) => {
            if source == MetadataSource::OpenIdDiscovery
                && doc.revocation_endpoint.is_none()
                && o.revocation_endpoint.is_none()
            {
                doc.revocation_endpoint = revocation_from_rfc8414(client, config).await;
            }
            from_document(config, doc, source)
        }
        Err(reason) => match (&o.authorization_endpoint, &o.token_endpoint) {
            (Some(authorization), Some(token)) => {
                if config.discovery {
                    tracing::warn!(provider = %config.id, %reason, "discovery failed; using the configured endpoints");
                }
                Ok(ProviderMetadata {
                    issuer: config.issuer.clone(),
                    authorization_endpoint: authorization.clone(),
                    token_endpoint: token.clone(),
                    userinfo_endpoint: o.userinfo_endpoint.clone(),
                    jwks_uri: o.jwks_uri.clone(),
                    end_session_endpoint: o.end_session_endpoint.clone(),
                    revocation_endpoint: o.revocation_endpoint.clone(),
                    par_endpoint: o.pushed_authorization_request_endpoint.clone(),
                    par_required: false,
                    discovered: false,
                    source: MetadataSource::Configured,
                    iss_in_response: false,
                })
            }
            _ => Err(MetadataError::NoEndpoints(Box::new(reason))),
        },
    }
}

/// Discovered metadata merged with the configured endpoints (which win). The document must
/// name the configured issuer (OIDC Discovery §4.3), and its endpoints must use https unless
/// the issuer is on loopback.
fn from_document(
    config: &ProviderConfig,
    doc: DiscoveryDocument,
    source: MetadataSource,
) -> Result<ProviderMetadata, MetadataError> {
    if !same_issuer(&doc.issuer, &config.issuer) {
        return Err(MetadataError::IssuerMismatch {
            discovered: doc.issuer,
            configured: config.issuer.clone(),
        });
    }
    let o = &config.endpoints;
    let loopback = issuer_is_loopback(&config.issuer);
    let pick = |name: &str, configured: &Option<Url>, found: Option<String>| match configured {
        Some(u) => Ok(Some(u.clone())),
        None => endpoint(name, found, loopback),
    };
    Ok(ProviderMetadata {
        authorization_endpoint: pick(
            "authorization_endpoint",
            &o.authorization_endpoint,
            doc.authorization_endpoint,
        )?
        .ok_or(MetadataError::MissingEndpoint("authorization_endpoint"))?,
        token_endpoint: pick("token_endpoint", &o.token_endpoint, doc.token_endpoint)?
            .ok_or(MetadataError::MissingEndpoint("token_endpoint"))?,
        userinfo_endpoint: pick(
            "userinfo_endpoint",
            &o.userinfo_endpoint,
            doc.userinfo_endpoint,
        )?,
        jwks_uri: pick("jwks_uri", &o.jwks_uri, doc.jwks_uri)?,
        end_session_endpoint: pick(
            "end_session_endpoint",
            &o.end_session_endpoint,
            doc.end_session_endpoint,
        )?,
        revocation_endpoint: pick(
            "revocation_endpoint",
            &o.revocation_endpoint,
            doc.revocation_endpoint,
        )?,
        par_endpoint: pick(
            "pushed_authorization_request_endpoint",
            &o.pushed_authorization_request_endpoint,
            doc.pushed_authorization_request_endpoint,
        )?,
        par_required: doc.require_pushed_authorization_requests,
        issuer: doc.issuer,
        discovered: true,
        source,
        iss_in_response: doc.authorization_response_iss_parameter_supported,
    })
}

/// OpenID Connect discovery first; when it fails in any way (404, 5xx, timeout, no
/// connection, not a metadata document), RFC 8414 metadata at its own URL (§3.1: the
/// well-known segment goes between the host and the issuer's path).
async fn fetch_discovery(
    client: &awc::Client,
    config: &ProviderConfig,
) -> Result<(DiscoveryDocument, MetadataSource), MetadataError> {
    let oidc = discovery_url(&config.issuer);
    let first = match fetch_document(client, config, &oidc).await {
        Ok(doc) => return Ok((doc, MetadataSource::OpenIdDiscovery)),
        Err(reason) => reason,
    };
    let Some(rfc8414) = authorization_server_metadata_url(&config.issuer) else {
        return Err(first);
    };
    tracing::info!(provider = %config.id, reason = %first, "no OpenID Connect discovery; trying RFC 8414 metadata");
    match fetch_document(client, config, &rfc8414).await {
        Ok(doc) => Ok((doc, MetadataSource::AuthorizationServerMetadata)),
        Err(second) => Err(MetadataError::BothFailed(Box::new(first), Box::new(second))),
    }
}

/// The revocation endpoint of the RFC 8414 document, for a provider whose OpenID discovery
/// document names none (django-oauth-toolkit publishes it only there): without it logout would
/// revoke nothing. The document must name the same issuer; any failure means "none" (logout
/// then clears cookies without revoking, as for a provider without revocation), and the
/// endpoint is checked like every discovered one when the metadata is assembled.
async fn revocation_from_rfc8414(client: &awc::Client, config: &ProviderConfig) -> Option<String> {
    let url = authorization_server_metadata_url(&config.issuer)?;
    match fetch_document(client, config, &url).await {
        Ok(doc) if same_issuer(&doc.issuer, &config.issuer) => doc.revocation_endpoint,
        Ok(_) => {
            tracing::info!(provider = %config.id, "the RFC 8414 document names another issuer; its revocation endpoint is not used");
            None
        }
        Err(reason) => {
            tracing::debug!(provider = %config.id, %reason, "no RFC 8414 document to take a revocation endpoint from");
            None
        }
    }
}

/// One metadata document, within the provider's timeout.
async fn fetch_document(
    client: &awc::Client,
    config: &ProviderConfig,
    url: &str,
) -> Result<DiscoveryDocument, MetadataError> {
    let value = send_json(client.get(url).timeout(config.timeout).send(), "discovery")
        .await
        .map_err(|e| match e {
            CallError::Unavailable(m) => MetadataError::Fetch {
                reason: format!("{m} ({url})"),
            },
            CallError::Rejected { status, .. } => MetadataError::Fetch {
                reason: format!("metadata at {url} answered {status}"),
            },
        })?;
    serde_json::from_value(value).map_err(|e| MetadataError::Fetch {
        reason: format!("the metadata document at {url} is not valid: {e}"),
    })
}

/// After a failed fetch, requests fail at once for this long instead of each retrying (the
/// background task keeps trying).
const FAIL_FAST: Duration = Duration::from_secs(5);

/// Discovered metadata, cached for [`METADATA_TTL`] and served stale when a refetch fails.
/// Ages are measured with the application's [`Clock`], so tests move time instead of sleeping.
#[derive(Debug)]
pub struct MetadataCache {
    clock: Clock,
    /// The metadata and when it was fetched (Unix seconds).
    current: RwLock<Option<(Arc<ProviderMetadata>, i64)>>,
    /// When the last fetch failed (Unix seconds), and why.
    last_failure: RwLock<Option<(i64, MetadataError)>>,
}

/// What the cache can answer without fetching.
enum Cached {
    /// Fresh metadata, or the answer to give while a recent failure is fresh.
    Answer(Result<Arc<ProviderMetadata>, MetadataError>),
    /// Nothing usable: fetch now.
    Fetch,
}

/// Whether something stored at `at` is at least `ttl` old at `now` (saturating: a clock
/// moved back keeps an entry rather than overflowing).
fn older_than(at: i64, ttl: Duration, now: i64) -> bool {
    now.saturating_sub(at) >= i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX)
}

impl MetadataCache {
    pub fn new(clock: Clock) -> Self {
        Self {
            clock,
            current: RwLock::default(),
            last_failure: RwLock::default(),
        }
    }

    /// The cached metadata, fetching it when missing or older than [`METADATA_TTL`].
    pub async fn get(
        &self,
        client: &awc::Client,
        config: &ProviderConfig,
    ) -> Result<Arc<ProviderMetadata>, MetadataError> {
        match self.cached() {
            Cached::Answer(answer) => answer,
            Cached::Fetch => self.refresh(client, config).await,
        }
    }

    fn cached(&self) -> Cached {
        let now = self.clock.now();
        let cached = self.current.read().ok().and_then(|c| c.clone());
        if let Some((md, at)) = &cached {
            if !older_than(*at, METADATA_TTL, now) {
                return Cached::Answer(Ok(md.clone()));
            }
        }
        // Right after a failed fetch, answer at once: the stale copy when there is one, else
        // the failure. The background task keeps retrying.
        if let Some((at, reason)) = self.last_failure.read().ok().and_then(|f| f.clone()) {
            if !older_than(at, FAIL_FAST, now) {
                return Cached::Answer(match cached {
                    Some((md, _)) => Ok(md),
                    None => Err(reason),
                });
            }
        }
        Cached::Fetch
    }

    /// Fetches now, whatever the cache holds (the background task, and `get` when stale).
    pub async fn refresh(
        &self,
        client: &awc::Client,
        config: &ProviderConfig,
    ) -> Result<Arc<ProviderMetadata>, MetadataError> {
        let fetched = discover(client, config).await;
        self.store(fetched, &config.id)
    }

    /// Keeps a fetch's outcome: new metadata replaces the old; a failure is remembered for
    /// [`FAIL_FAST`] and the stale copy, if any, keeps being served.
    fn store(
        &self,
        fetched: Result<ProviderMetadata, MetadataError>,
        provider: &str,
    ) -> Result<Arc<ProviderMetadata>, MetadataError> {
        let now = self.clock.now();
        match fetched {
            Ok(md) => {
                let md = Arc::new(md);
                if let Ok(mut slot) = self.current.write() {
                    *slot = Some((md.clone(), now));
                }
                if let Ok(mut f) = self.last_failure.write() {
                    *f = None;
                }
                crate::metrics::METRICS.set_provider_ready(provider, true);
                Ok(md)
            }
            Err(reason) => {
                if let Ok(mut f) = self.last_failure.write() {
                    *f = Some((now, reason.clone()));
                }
                let cached = self.current.read().ok().and_then(|c| c.clone());
                match cached {
                    Some((md, _)) => {
                        tracing::warn!(%provider, %reason, "metadata refresh failed; serving the cached copy");
                        Ok(md)
                    }
                    None => {
                        crate::metrics::METRICS.set_provider_ready(provider, false);
                        Err(reason)
                    }
                }
            }
        }
    }

    /// Whether metadata is available (readiness).
    pub fn is_ready(&self) -> bool {
        self.current.read().map(|c| c.is_some()).unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A failed fetch with this reason (the cache tests only care that it failed).
    impl From<&str> for MetadataError {
        fn from(reason: &str) -> Self {
            MetadataError::Fetch {
                reason: reason.to_string(),
            }
        }
    }

    #[test]
    fn discovery_url_keeps_the_issuer_path() {
        assert_eq!(
            discovery_url("https://login.example.com/realms/a/"),
            "https://login.example.com/realms/a/.well-known/openid-configuration"
        );
        assert_eq!(
            discovery_url("https://login.example.com"),
            "https://login.example.com/.well-known/openid-configuration"
        );
    }

    #[test]
    fn rfc8414_inserts_the_well_known_segment_before_the_path() {
        assert_eq!(
            authorization_server_metadata_url("https://as.example.com/tenant1").as_deref(),
            Some("https://as.example.com/.well-known/oauth-authorization-server/tenant1")
        );
        assert_eq!(
            authorization_server_metadata_url("https://as.example.com").as_deref(),
            Some("https://as.example.com/.well-known/oauth-authorization-server")
        );
    }

    fn provider(issuer: &str) -> ProviderConfig {
        let toml = crate::config::test_toml(
            "",
            &format!("[[providers]]\nid = \"p\"\nissuer = \"{issuer}\"\nclient_id = \"c\"\nclient_secret = \"s\"\nredirect_uri = \"https://www.example.com/\"\n"),
        );
        let mut config = crate::config::Config::from_toml(&toml, Vec::new()).expect("valid");
        config.providers.remove(0)
    }

    fn from_document_oidc(
        config: &ProviderConfig,
        doc: DiscoveryDocument,
    ) -> Result<ProviderMetadata, MetadataError> {
        from_document(config, doc, MetadataSource::OpenIdDiscovery)
    }

    fn document(issuer: &str, endpoint_base: &str) -> DiscoveryDocument {
        serde_json::from_value(serde_json::json!({
            "issuer": issuer,
            "authorization_endpoint": format!("{endpoint_base}/authorize"),
            "token_endpoint": format!("{endpoint_base}/token"),
            "jwks_uri": format!("{endpoint_base}/jwks"),
        }))
        .expect("document")
    }

    #[test]
    fn a_remote_issuer_cannot_point_endpoints_at_loopback_over_http() {
        let config = provider("https://login.example.com");
        for base in [
            "http://127.0.0.1:9000",
            "http://localhost:9000",
            "http://[::1]:9000",
            "http://login.example.com",
        ] {
            let e = from_document_oidc(&config, document("https://login.example.com", base))
                .expect_err(base)
                .to_string();
            assert!(e.contains("https"), "{base}: {e}");
        }
        // One bad endpoint among good ones is enough to refuse the document.
        let mut doc = document("https://login.example.com", "https://login.example.com");
        doc.jwks_uri = Some("http://127.0.0.1:1/jwks".into());
        assert!(from_document_oidc(&config, doc).is_err());
        // https endpoints, even on loopback, are fine.
        let md = from_document_oidc(
            &config,
            document("https://login.example.com", "https://login.example.com"),
        )
        .expect("https endpoints");
        assert_eq!(
            md.token_endpoint.as_str(),
            "https://login.example.com/token"
        );
    }

    #[test]
    fn a_loopback_issuer_may_name_http_loopback_endpoints() {
        let config = provider("http://127.0.0.1:4000");
        let md = from_document_oidc(
            &config,
            document("http://127.0.0.1:4000", "http://127.0.0.1:4000"),
        )
        .expect("loopback issuer");
        assert_eq!(md.token_endpoint.as_str(), "http://127.0.0.1:4000/token");
        // Never http to a remote host, whatever the issuer.
        assert!(from_document_oidc(
            &config,
            document("http://127.0.0.1:4000", "http://login.example.com")
        )
        .is_err());
    }

    fn cached_issuer(cache: &MetadataCache) -> Option<Result<String, String>> {
        match cache.cached() {
            Cached::Answer(answer) => Some(
                answer
                    .map(|md| md.issuer.clone())
                    .map_err(|e| e.to_string()),
            ),
            Cached::Fetch => None,
        }
    }

    fn metadata(issuer: &str) -> ProviderMetadata {
        from_document_oidc(&provider(issuer), document(issuer, issuer)).expect("metadata")
    }

    #[test]
    fn metadata_expires_after_its_ttl_by_the_injected_clock() {
        let clock = Clock::default();
        let cache = MetadataCache::new(clock.clone());
        assert_eq!(cached_issuer(&cache), None, "empty: fetch");
        cache
            .store(Ok(metadata("https://a.example")), "p")
            .expect("stored");
        let ttl = METADATA_TTL.as_secs() as i64;
        // Margins of seconds: the wall clock under the offset keeps ticking.
        clock.advance(ttl - 10);
        assert_eq!(cached_issuer(&cache), Some(Ok("https://a.example".into())));
        clock.advance(20);
        assert_eq!(cached_issuer(&cache), None, "expired: fetch again");
        cache
            .store(Ok(metadata("https://b.example")), "p")
            .expect("stored");
        assert_eq!(cached_issuer(&cache), Some(Ok("https://b.example".into())));
    }

    #[test]
    fn a_failed_fetch_answers_at_once_until_fail_fast_passes() {
        let clock = Clock::default();
        let cache = MetadataCache::new(clock.clone());
        assert_eq!(cache.store(Err("down".into()), "p"), Err("down".into()));
        assert_eq!(cached_issuer(&cache), Some(Err("down".into())));
        clock.advance(FAIL_FAST.as_secs() as i64 + 2);
        assert_eq!(cached_issuer(&cache), None, "retry after FAIL_FAST");

        // With a copy cached, a failed refetch serves the stale copy, without refetching
        // during FAIL_FAST.
        cache
            .store(Ok(metadata("https://a.example")), "p")
            .expect("stored");
        clock.advance(METADATA_TTL.as_secs() as i64 + 10);
        assert_eq!(cached_issuer(&cache), None, "stale: fetch");
        let stale = cache.store(Err("down".into()), "p").expect("stale copy");
        assert_eq!(stale.issuer, "https://a.example");
        assert_eq!(cached_issuer(&cache), Some(Ok("https://a.example".into())));
        clock.advance(FAIL_FAST.as_secs() as i64 + 2);
        assert_eq!(cached_issuer(&cache), None);
    }

    #[test]
    fn issuers_compare_modulo_a_trailing_slash_only() {
        assert!(same_issuer("https://a.example/", "https://a.example"));
        assert!(!same_issuer("https://a.example", "https://a.example.evil"));
        assert!(!same_issuer("https://a.example/x", "https://a.example"));
    }
}
