//! `[log]`: how log lines are written (what is never written is in docs/security.md).

use super::de::word_enum;
use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawLog {
    pub(super) format: LogFormat,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

word_enum!(LogFormat {
    "text" => LogFormat::Text,
    "json" => LogFormat::Json,
});
