//! A configured provider together with its cached metadata and keys.

use super::bound::CallBound;
use super::http::CallError;
use super::id_token::{self, Expected, IdTokenClaims, StepUp};
use super::jwks::{JwksCache, KeyError};
use super::metadata::{MetadataCache, ProviderMetadata};
use super::token;
use crate::clock::Clock;
use crate::config::{ProviderConfig, UserInfoMethod};
use crate::error::ApiError;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug)]
pub struct Provider {
    pub config: ProviderConfig,
    /// Shared with the provider that succeeds this one in a reload, when their discovery
    /// settings are the same ([`Provider::succeeding`]).
    metadata: Arc<MetadataCache>,
    jwks: Arc<JwksCache>,
    /// Set once the userinfo endpoint answered a POST with 405: every later call uses GET at
    /// once, so a provider without POST costs one extra request per process, not per call.
    userinfo_post_refused: AtomicBool,
    /// `max_concurrent_calls`: the slots for calls to this provider's endpoints.
    calls: CallBound,
}

impl Provider {
    /// A provider whose caches age by `clock`, the application's one notion of "now".
    pub fn new(config: ProviderConfig, clock: Clock) -> Self {
        // Not ready until its metadata loads: the gauge shows the provider from the start.
        crate::metrics::METRICS.set_provider_ready(&config.id, false);
        Self {
            metadata: Arc::new(MetadataCache::new(clock.clone())),
            jwks: Arc::new(JwksCache::new(clock)),
            userinfo_post_refused: AtomicBool::new(false),
            calls: CallBound::new(config.max_concurrent_calls),
            config,
        }
    }

    /// The provider a reloaded configuration makes of `config` ([`crate::reload`]). It takes
    /// over `previous`'s discovered metadata and JWKS when both discover alike (same issuer,
    /// discovery switch and configured endpoints), so a reload that changes, say, the client
    /// secret or the scope neither empties the caches nor makes the provider unready; anything
    /// else about the provider (credentials, parameters, timeouts) is the new configuration's.
    pub fn succeeding(config: ProviderConfig, clock: Clock, previous: Option<&Provider>) -> Self {
        let Some(old) = previous.filter(|old| same_discovery(&old.config, &config)) else {
            return Self::new(config, clock);
        };
        let refused = old.userinfo_post_refused.load(Ordering::Relaxed)
            && old.config.endpoints.userinfo_endpoint == config.endpoints.userinfo_endpoint;
        Self {
            metadata: Arc::clone(&old.metadata),
            jwks: Arc::clone(&old.jwks),
            userinfo_post_refused: AtomicBool::new(refused),
            calls: CallBound::new(config.max_concurrent_calls),
            config,
        }
    }

    /// The bound on calls in flight to this provider (issue 17): every token, PAR, revocation
    /// and userinfo call holds one of its slots while it runs.
    pub fn calls(&self) -> &CallBound {
        &self.calls
    }

    /// The method the next userinfo request uses: the configured one, or GET once the
    /// endpoint refused POST.
    pub fn userinfo_method(&self) -> UserInfoMethod {
        if self.userinfo_post_refused.load(Ordering::Relaxed) {
            UserInfoMethod::Get
        } else {
            self.config.userinfo_method
        }
    }

    /// Calls the userinfo endpoint (OIDC Core §5.3.1) with [`Provider::userinfo_method`]. A
    /// POST answered with 405 (RFC 9110 §15.5.6: the resource does not support the method) is
    /// retried once with GET, which every userinfo endpoint must support, and GET is
    /// remembered for this provider.
    pub async fn userinfo(
        &self,
        client: &awc::Client,
        endpoint: &url::Url,
        access_token: &crate::secret::Token,
    ) -> Result<serde_json::Value, CallError> {
        let method = self.userinfo_method();
        let _slot = self.calls.acquire().await;
        match token::userinfo(client, &self.config, endpoint, access_token, method).await {
            Err(CallError::Rejected { status: 405, .. }) if method == UserInfoMethod::Post => {
                tracing::info!(provider = %self.config.id, "the userinfo endpoint refused POST (405); using GET for this provider from now on (set userinfo_method = \"get\" to skip the first try)");
                self.userinfo_post_refused.store(true, Ordering::Relaxed);
                token::userinfo(
                    client,
                    &self.config,
                    endpoint,
                    access_token,
                    UserInfoMethod::Get,
                )
                .await
            }
            other => other,
        }
    }

    /// The user's primary verified address from `userinfo_emails_endpoint`, or `None` when
    /// there is none or the call fails in any way (a token without GitHub's `user:email` scope
    /// is refused there): the address only adds to `/userInfo`, so its absence is no error.
    pub async fn primary_email(
        &self,
        client: &awc::Client,
        access_token: &crate::secret::Token,
    ) -> Option<String> {
        let endpoint = self.config.userinfo_emails_endpoint.as_ref()?;
        let _slot = self.calls.acquire().await;
        match token::userinfo(
            client,
            &self.config,
            endpoint,
            access_token,
            UserInfoMethod::Get,
        )
        .await
        {
            Ok(list) => super::userinfo_claims::primary_verified_email(&list),
            Err(e) => {
                tracing::info!(provider = %self.config.id, error = %e, "the emails endpoint gave no address; /userInfo answers without one");
                None
            }
        }
    }

    pub fn id(&self) -> &str {
        &self.config.id
    }

    /// The provider's endpoints; 503 `provider_unavailable` while neither discovery nor
    /// configuration provides them.
    pub async fn metadata(&self, client: &awc::Client) -> Result<Arc<ProviderMetadata>, ApiError> {
        self.metadata
            .get(client, &self.config)
            .await
            .map_err(|reason| {
                tracing::warn!(provider = %self.config.id, %reason, "provider metadata unavailable");
                ApiError::ProviderNotReady(format!(
                    "the identity provider `{}` is unavailable: its metadata could not be loaded (token-handler keeps retrying; `token-handler check` shows why)",
                    self.config.id
                ))
            })
    }

    /// Whether this provider's metadata is loaded (readiness).
    pub fn is_ready(&self) -> bool {
        self.metadata.is_ready()
    }

    /// Whether readiness waits for this provider (`required`, by default the default provider).
    pub fn is_required(&self) -> bool {
        self.config.required
    }

    /// Keeps this provider's metadata loaded: retries with exponential backoff (1 s doubling to
    /// 60 s) while it fails, and refreshes it hourly once loaded. Runs until the server stops.
    pub async fn keep_discovered(&self, client: &awc::Client) {
        let mut backoff = Duration::from_secs(1);
        loop {
            match self.metadata.refresh(client, &self.config).await {
                Ok(_) => {
                    backoff = Duration::from_secs(1);
                    // Before the cache's TTL runs out, so requests never wait for a refetch.
                    actix_web::rt::time::sleep(Duration::from_secs(50 * 60)).await;
                }
                Err(reason) => {
                    tracing::warn!(provider = %self.config.id, %reason, retry_in_s = backoff.as_secs(), "discovery failed");
                    actix_web::rt::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                }
            }
        }
    }

    /// Validates an ID token this provider issued. Failures are `authorization_error` (the
    /// token is not acceptable) or 502 (the keys could not be fetched).
    pub async fn verify_id_token(
        &self,
        client: &awc::Client,
        metadata: &ProviderMetadata,
        token: &str,
        nonce: Option<&crate::secret::Token>,
        subject: Option<&str>,
        now: i64,
    ) -> Result<IdTokenClaims, ApiError> {
        self.verify(client, metadata, token, nonce, subject, None, now)
            .await
    }

    /// Validates the ID token of a login: as [`Provider::verify_id_token`], plus the
    /// operator's step-up requirements the login was started with.
    pub async fn verify_login_id_token(
        &self,
        client: &awc::Client,
        metadata: &ProviderMetadata,
        token: &str,
        nonce: &crate::secret::Token,
        step_up: &StepUp,
        now: i64,
    ) -> Result<IdTokenClaims, ApiError> {
        self.verify(
            client,
            metadata,
            token,
            Some(nonce),
            None,
            Some(step_up),
            now,
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn verify(
        &self,
        client: &awc::Client,
        metadata: &ProviderMetadata,
        token: &str,
        nonce: Option<&crate::secret::Token>,
        subject: Option<&str>,
        step_up: Option<&StepUp>,
        now: i64,
    ) -> Result<IdTokenClaims, ApiError> {
        // The reason goes to the log only: the client gets one stable code and message, so a
        // caller cannot probe which check an ID token failed.
        let reject = |reason: &dyn std::fmt::Display| {
            tracing::warn!(provider = %self.config.id, %reason, "ID token rejected");
            ApiError::AuthorizationError(ID_TOKEN_REJECTED.to_string())
        };
        // The configuration, never the token's header, says which algorithms and which key:
        // the client secret for HS256/384/512 (OIDC Core §10.1), else the provider's JWKS.
        let signing = &self.config.id_token_signing;
        let (alg, kid) = id_token::header(token, signing).map_err(|e| reject(&e))?;
        let key = match signing.client_secret_key() {
            Some(key) => key,
            None => {
                self.jwks_key(client, metadata, kid.as_deref(), alg, &reject)
                    .await?
            }
        };
        id_token::verify(
            token,
            alg,
            &key,
            &Expected {
                issuer: &metadata.issuer,
                client_id: &self.config.client_id,
                nonce,
                subject,
                step_up,
                now,
            },
        )
        .map_err(|e| reject(&e))
    }
}

impl Provider {
    /// The key for an asymmetrically signed ID token, from the provider's JWKS.
    async fn jwks_key(
        &self,
        client: &awc::Client,
        metadata: &ProviderMetadata,
        kid: Option<&str>,
        alg: jsonwebtoken::Algorithm,
        reject: &dyn Fn(&dyn std::fmt::Display) -> ApiError,
    ) -> Result<jsonwebtoken::DecodingKey, ApiError> {
        let jwks_uri = metadata
            .jwks_uri
            .as_ref()
            .ok_or_else(|| reject(&"the provider publishes no jwks_uri; configure one"))?;
        self.jwks
            .key_for(client, jwks_uri, self.config.timeout, kid, alg)
            .await
            .map_err(|e| match e {
                KeyError::Unavailable(reason) => {
                    tracing::warn!(provider = %self.config.id, %reason, "JWKS unavailable");
                    ApiError::ProviderUnavailable(format!(
                        "the identity provider `{}` is unavailable: its signing keys could not be fetched",
                        self.config.id
                    ))
                }
                refused => reject(&refused),
            })
    }
}

impl Provider {
    /// Validates a back-channel Logout Token this provider issued (OIDC Back-Channel Logout 1.0
    /// §2.6), with the same key rules as its ID tokens (§2.4: signed like them). `Err` carries
    /// the reason for the log; the caller answers the provider `invalid_request` whatever it is.
    pub async fn verify_logout_token(
        &self,
        client: &awc::Client,
        metadata: &ProviderMetadata,
        token: &str,
        now: i64,
    ) -> Result<super::logout_token::LogoutClaims, String> {
        use super::logout_token;
        let signing = &self.config.id_token_signing;
        let (alg, kid) = logout_token::header(token, signing).map_err(|e| e.to_string())?;
        let key = match signing.client_secret_key() {
            Some(key) => key,
            None => {
                let reject = |reason: &dyn std::fmt::Display| {
                    ApiError::AuthorizationError(reason.to_string())
                };
                self.jwks_key(client, metadata, kid.as_deref(), alg, &reject)
                    .await
                    .map_err(|e| e.to_string())?
            }
        };
        logout_token::verify(
            token,
            alg,
            &key,
            &logout_token::Expected {
                issuer: &metadata.issuer,
                client_id: &self.config.client_id,
                now,
            },
        )
        .map_err(|e| e.to_string())
    }

    /// Whether a token claiming this issuer and these audiences could be this provider's: its
    /// issuer (as discovered) and our client id among the audiences. Only chooses which
    /// provider verifies a logout token; nothing is trusted before [`Self::verify_logout_token`].
    pub fn may_have_issued(&self, metadata: &ProviderMetadata, iss: &str, aud: &[String]) -> bool {
        metadata.issuer == iss && aud.contains(&self.config.client_id)
    }
}

/// What the client is told when an ID token is refused, whatever the reason (logged).
pub const ID_TOKEN_REJECTED: &str =
    "the identity provider's ID token was not accepted; the token-handler log says why";

/// Whether two configurations of a provider fetch the same metadata and keys: their caches can
/// be shared.
fn same_discovery(a: &ProviderConfig, b: &ProviderConfig) -> bool {
    a.issuer == b.issuer
        && a.discovery == b.discovery
        && format!("{:?}", a.endpoints) == format!("{:?}", b.endpoints)
}

/// Every configured provider; the first is the default. Each is shared (`Arc`) so that its
/// discovery task ([`Provider::keep_discovered`]) can hold it ([`crate::reload`]).
#[derive(Debug)]
pub struct Providers(Vec<Arc<Provider>>);

impl Providers {
    pub fn new(configs: &[ProviderConfig], clock: &Clock) -> Self {
        Self(
            configs
                .iter()
                .map(|c| Arc::new(Provider::new(c.clone(), clock.clone())))
                .collect(),
        )
    }

    /// The providers of a reloaded configuration, each succeeding the one with its id here
    /// ([`Provider::succeeding`]).
    pub fn succeeding(&self, configs: &[ProviderConfig], clock: &Clock) -> Self {
        Self(
            configs
                .iter()
                .map(|c| {
                    let old = self.get(&c.id);
                    Arc::new(Provider::succeeding(c.clone(), clock.clone(), old))
                })
                .collect(),
        )
    }

    /// The providers as shared handles, for tasks that outlive a request (discovery).
    pub fn shared(&self) -> impl Iterator<Item = &Arc<Provider>> {
        self.0.iter()
    }

    /// The default provider: the exclusive one when one is marked so, else the first.
    pub fn default_provider(&self) -> &Provider {
        // Invariant: configuration validation refuses an empty provider list.
        self.exclusive().unwrap_or(&*self.0[0])
    }

    /// The provider marked `exclusive`, the only one logins may use (at most one, checked
    /// when the configuration is loaded).
    pub fn exclusive(&self) -> Option<&Provider> {
        self.iter().find(|p| p.config.exclusive)
    }

    /// The providers a user may sign in with: the exclusive one alone, else every one, the
    /// default first.
    pub fn offered(&self) -> Vec<&Provider> {
        match self.exclusive() {
            Some(only) => vec![only],
            None => self.iter().collect(),
        }
    }

    /// The provider a login asks for: the default one when it names none. An unknown id, or
    /// another than the exclusive one, is the SPA's mistake, not ours: 400 `invalid_request`,
    /// naming the one allowed.
    pub fn requested(&self, id: Option<&str>) -> Result<&Provider, ApiError> {
        let provider = match id {
            None => self.default_provider(),
            Some(id) => self.get(id).ok_or_else(|| {
                ApiError::InvalidRequest(format!(
                    "no identity provider is configured with the id `{}`",
                    super::http::safe_code(id)
                ))
            })?,
        };
        match self.exclusive() {
            Some(only) if only.id() != provider.id() => Err(ApiError::InvalidRequest(format!(
                "logins must use the identity provider `{}`: it is the only one allowed",
                only.id()
            ))),
            _ => Ok(provider),
        }
    }

    /// The provider with this id.
    pub fn get(&self, id: &str) -> Option<&Provider> {
        self.iter().find(|p| p.id() == id)
    }

    /// The provider a session's cookie names. One removed from the configuration since the
    /// cookie was written makes the session unusable; that is not a server error.
    pub fn for_session(&self, id: &str) -> Result<&Provider, ApiError> {
        self.get(id).ok_or(ApiError::Unauthorized(
            "the session belongs to an identity provider that is no longer configured",
        ))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Provider> {
        self.0.iter().map(|p| &**p)
    }
}
