//! The optional store shared by the replicas: Redis, or Valkey (same protocol).
//!
//! Cookies stay the sessions' only home; the store holds what several replicas must agree on
//! and a cookie cannot carry: who is redeeming a refresh token right now, and the result to
//! share (`refresh.rs`). Keys are hashes, never tokens; values that carry tokens are sealed
//! with the cookie key before they leave the process (docs/security.md, "Shared store").
//!
//! A store is a dependency that can fail, and nothing it does may turn a working request into
//! a failed one: every command is bounded by `store.command_timeout`, and a failure is an
//! error the caller handles by going on without the store (counted in
//! `token_handler_store_errors_total{op}` and logged without any key or value). The connection
//! is made lazily and re-made after a failure, so a store that starts later, or comes back
//! after a restart, is picked up without restarting token-handler.

pub mod ended;
pub mod refresh;

use crate::config::StoreConfig;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, FromRedisValue, IntoConnectionInfo};
use secrecy::ExposeSecret;
use std::sync::Arc;
use std::time::Duration;

/// Why a store command produced no answer. The message is the client's, which names neither
/// keys nor values.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the store did not answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Redis(#[from] redis::RedisError),
    #[error("the store is not configured correctly: {0}")]
    Setup(String),
}

/// A cloneable handle on the shared store: one multiplexed connection (re-made when lost), a
/// key prefix, and a bound on each command.
#[derive(Clone)]
pub struct Store {
    conn: ConnectionManager,
    prefix: Arc<str>,
    timeout: Duration,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// A handle on the configured store. Connects lazily (on the first command), so a store that
    /// is down at startup does not stop the service; must be called inside a tokio runtime.
    pub fn connect(config: &StoreConfig) -> Result<Self, StoreError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(StoreError::Setup("no async runtime to connect from".into()));
        }
        let mut info = config.url.as_str().into_connection_info()?;
        if let Some(password) = &config.password {
            let settings = info
                .redis_settings()
                .clone()
                .set_password(password.expose_secret());
            info = info.set_redis_settings(settings);
        }
        let client = redis::Client::open(info)?;
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.command_timeout))
            // Reconnect quickly and give up quickly: a request never waits for a reconnection
            // (its command has its own bound), and the next command starts another attempt.
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        Ok(Self {
            conn: ConnectionManager::new_lazy_with_config(client, manager)?,
            prefix: Arc::from(config.key_prefix.as_str()),
            timeout: config.command_timeout,
        })
    }

    /// The store's key for `kind` (a fixed word) and `id` (a hash or other non-secret name).
    pub fn key(&self, kind: &str, id: &str) -> String {
        format!("{}{kind}:{id}", self.prefix)
    }

    /// Runs one command, bounded by `store.command_timeout`. A failure is counted under `op`
    /// (`token_handler_store_errors_total{op}`); the caller decides what it costs.
    pub async fn query<T: FromRedisValue>(
        &self,
        op: &'static str,
        cmd: Cmd,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn.clone();
        let result = match tokio::time::timeout(self.timeout, cmd.query_async::<T>(&mut conn)).await
        {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(StoreError::Redis(e)),
            Err(_) => Err(StoreError::Timeout(self.timeout)),
        };
        if result.is_err() {
            crate::metrics::METRICS
                .store_errors
                .get_or_create(&crate::metrics::OpLabel { op })
                .inc();
        }
        result
    }

    /// How long a caller whose safety depends on the store's answer (the refresh-token lock,
    /// [`refresh::Coordination::run`]) retries a store that fails before taking it for down:
    /// four command timeouts, so a stall (a loaded machine, a failover) is not an outage.
    pub fn patience(&self) -> Duration {
        self.timeout * 4
    }

    /// Whether the store answers (`PING`), for `token-handler check` and readiness reports.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let _: String = self.query("ping", redis::cmd("PING")).await?;
        Ok(())
    }
}
