//! `[store]`: an optional Redis (or Valkey) server shared by the replicas.
//!
//! Off by default: without it every replica keeps what it must remember (refresh results) in its
//! own memory, as it always has. With it, replicas coordinate refresh grants across each other
//! (`src/store/`). The password comes from a file only, never from the TOML or the URL, so
//! neither a config dump nor `ps` shows it; the validated type's Debug never prints it.

use super::de::duration;
use super::{read_secret_file, ConfigError, SecretFile};
use secrecy::SecretString;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;
use url::Url;

use crate::store::ended::OnError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawStore {
    url: String,
    password_file: Option<PathBuf>,
    #[serde(deserialize_with = "duration")]
    connect_timeout: Duration,
    #[serde(deserialize_with = "duration")]
    command_timeout: Duration,
    key_prefix: String,
    // The list of ended sessions (src/store/ended.rs).
    #[serde(deserialize_with = "duration")]
    revocation_cache: Duration,
    on_error: OnError,
    admin_listen: String,
}

impl Default for RawStore {
    fn default() -> Self {
        Self {
            url: String::new(),
            password_file: None,
            connect_timeout: Duration::from_secs(2),
            // A store that answers slower than this is treated as failed for that command:
            // the request goes on without it (per-replica coordination) rather than waiting.
            command_timeout: Duration::from_millis(500),
            key_prefix: "th:".into(),
            revocation_cache: Duration::from_secs(2),
            on_error: OnError::Open,
            admin_listen: String::new(),
        }
    }
}

/// Where the shared store is and how long to wait for it.
#[derive(Clone)]
pub struct StoreConfig {
    /// `redis://host:port/db` or `rediss://` (TLS), without a password.
    pub url: Url,
    /// From `store.password_file` (Redis `AUTH`; with a username in the URL, ACL `AUTH user pass`).
    pub password: Option<SecretString>,
    pub connect_timeout: Duration,
    /// The longest one command may take before the store counts as failed for it.
    pub command_timeout: Duration,
    /// Prepended to every key, so several deployments can share one server.
    pub key_prefix: String,
    /// How long each replica keeps its answer to "was this session ended?".
    pub revocation_cache: Duration,
    /// What a store that does not answer means for that check.
    pub on_error: OnError,
    /// `host:port` of the admin listener (`POST /sessions/revoke`); `None`: off.
    pub admin_listen: Option<String>,
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("url", &self.url.as_str())
            .field("password", &self.password.as_ref().map(|_| "[redacted]"))
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .field("key_prefix", &self.key_prefix)
            .field("revocation_cache", &self.revocation_cache)
            .field("on_error", &self.on_error)
            .field("admin_listen", &self.admin_listen)
            .finish()
    }
}

impl RawStore {
    /// `None` when `url` is empty (the store is off); the password file is recorded in
    /// `secret_files` so its mode is checked like the others.
    pub(super) fn validate(
        self,
        secret_files: &mut Vec<SecretFile>,
    ) -> Result<Option<StoreConfig>, ConfigError> {
        let text = self.url.trim();
        if text.is_empty() {
            if self.password_file.is_some() {
                return Err(ConfigError::new(
                    "store.password_file",
                    "is set but store.url is not: set the store's URL too, or remove it",
                ));
            }
            return Ok(None);
        }
        // The URL itself is not echoed: it might carry a password we are about to refuse.
        let url = Url::parse(text).map_err(|e| {
            ConfigError::new(
                "store.url",
                format!("not a URL like redis://host:6379: {e}"),
            )
        })?;
        if !matches!(url.scheme(), "redis" | "rediss") {
            return Err(ConfigError::new(
                "store.url",
                format!(
                    "scheme `{}` is not supported: use redis:// or rediss:// (TLS)",
                    url.scheme()
                ),
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(ConfigError::new("store.url", "names no host"));
        }
        if url.password().is_some() {
            return Err(ConfigError::new(
                "store.url",
                "must not carry a password (it would show in config dumps and logs): put it in a file and set store.password_file",
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(ConfigError::new(
                "store.url",
                "must have no query or fragment: redis://host:port/db",
            ));
        }
        // What the client itself refuses (a database that is not a number, say), refused here,
        // where the key can be named, rather than at startup.
        if let Err(e) = redis::IntoConnectionInfo::into_connection_info(url.as_str()) {
            return Err(ConfigError::new(
                "store.url",
                format!("not usable as a Redis URL: {e}"),
            ));
        }
        let password = match self.password_file {
            None => None,
            Some(path) => {
                let text = read_secret_file("store.password_file", &path)?
                    .trim()
                    .to_string();
                if text.is_empty() {
                    return Err(ConfigError::new("store.password_file", "is empty"));
                }
                secret_files.push(SecretFile {
                    key: "store.password_file".into(),
                    path,
                });
                Some(SecretString::from(text))
            }
        };
        if self
            .key_prefix
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(ConfigError::new(
                "store.key_prefix",
                "must not contain spaces or control characters",
            ));
        }
        Ok(Some(StoreConfig {
            url,
            password,
            connect_timeout: self.connect_timeout,
            command_timeout: self.command_timeout,
            key_prefix: self.key_prefix,
            revocation_cache: self.revocation_cache,
            on_error: self.on_error,
            admin_listen: Some(self.admin_listen.trim().to_string()).filter(|a| !a.is_empty()),
        }))
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{test_toml, Config, TEST_PROVIDER};

    fn parse(store: &str) -> Result<Config, crate::config::ConfigError> {
        Config::from_toml(
            &test_toml("", &format!("{TEST_PROVIDER}\n[store]\n{store}\n")),
            Vec::new(),
        )
    }

    #[test]
    fn the_store_is_off_by_default() {
        let c = Config::from_toml(&test_toml("", TEST_PROVIDER), Vec::new()).expect("valid");
        assert!(c.store.is_none());
        assert!(parse("url = \"\"").expect("valid").store.is_none());
    }

    #[test]
    fn store_urls_are_redis_without_a_password() {
        let c = parse("url = \"rediss://cache.internal:6380/2\"\nkey_prefix = \"app1:\"")
            .expect("valid");
        let store = c.store.expect("on");
        assert_eq!(store.url.scheme(), "rediss");
        assert_eq!(store.key_prefix, "app1:");
        assert_eq!(store.command_timeout.as_millis(), 500);
        for (text, why) in [
            ("url = \"http://cache:6379\"", "scheme"),
            ("url = \"redis://user:hunter2@cache:6379\"", "password_file"),
            ("url = \"not a url\"", "redis://"),
            ("url = \"redis://cache:6379/0?x=1\"", "query"),
            ("url = \"redis://cache:6379/notadb\"", "Redis URL"),
            ("password_file = \"/nonexistent\"", "store.url"),
        ] {
            let e = parse(text).expect_err(text);
            assert!(e.key.starts_with("store."), "{text}: {e}");
            assert!(e.to_string().contains(why), "{text}: {e}");
            assert!(!e.to_string().contains("hunter2"), "{e}");
        }
    }

    #[test]
    fn the_password_comes_from_a_file_and_never_shows_in_debug() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("redis-password");
        std::fs::write(&file, "s3cret-redis-pass\n").expect("write");
        let c = parse(&format!(
            "url = \"redis://cache:6379\"\npassword_file = {:?}",
            file.display().to_string()
        ))
        .expect("valid");
        let store = c.store.as_ref().expect("on");
        {
            use secrecy::ExposeSecret;
            let password = store.password.as_ref().expect("password");
            assert_eq!(password.expose_secret(), "s3cret-redis-pass");
        }
        let debug = format!("{c:?}");
        assert!(!debug.contains("s3cret-redis-pass"), "{debug}");
        assert!(debug.contains("redacted"), "{debug}");
        assert!(c
            .secret_files
            .iter()
            .any(|f| f.key == "store.password_file"));
    }
}
