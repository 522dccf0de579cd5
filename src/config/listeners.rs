//! `[metrics]` and `[forward_auth]`: the extra listeners, each off unless given an address.
//!
//! Both serve what the public listener must not: Prometheus metrics, and forward-auth answers
//! that carry the access token, which no page may read.

use serde::Deserialize;

/// A section whose only key is the address of its own listener.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawListener {
    listen: String,
}

impl From<RawListener> for Option<String> {
    /// An empty `listen` turns the listener off.
    fn from(raw: RawListener) -> Self {
        match raw.listen.trim() {
            "" => None,
            addr => Some(addr.to_string()),
        }
    }
}
