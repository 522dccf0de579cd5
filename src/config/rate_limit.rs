//! `[rate_limit]`: how fast one client address may start and end logins.

use super::de::usize_or_text;
use super::ConfigError;
use serde::Deserialize;
use std::num::NonZeroU32;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawRateLimit {
    #[serde(deserialize_with = "usize_or_text")]
    login_per_minute: usize,
    #[serde(deserialize_with = "usize_or_text")]
    login_burst: usize,
}

impl Default for RawRateLimit {
    fn default() -> Self {
        Self {
            // Generous: `login/end` runs on every page load of the SPA, and many users can share
            // one address (an office NAT, carrier-grade NAT). The limit is against floods.
            login_per_minute: 600,
            login_burst: 100,
        }
    }
}

/// How many `login/start` (and, separately, `login/end`) calls one client address may make:
/// `per_minute` on average, up to `burst` at once (a token bucket).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginRate {
    pub per_minute: NonZeroU32,
    pub burst: NonZeroU32,
}

impl TryFrom<RawRateLimit> for Option<LoginRate> {
    type Error = ConfigError;

    /// `login_per_minute = 0` turns the limits off; otherwise both must fit a `NonZeroU32`.
    fn try_from(raw: RawRateLimit) -> Result<Self, ConfigError> {
        let count = |key: &str, n: usize| {
            u32::try_from(n)
                .ok()
                .and_then(NonZeroU32::new)
                .ok_or_else(|| ConfigError::new(key, "must be between 1 and 4294967295"))
        };
        Ok(match raw.login_per_minute {
            0 => None,
            n => Some(LoginRate {
                per_minute: count("rate_limit.login_per_minute", n)?,
                burst: count("rate_limit.login_burst", raw.login_burst)?,
            }),
        })
    }
}
