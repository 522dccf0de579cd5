//! How configuration values are read, whether they come from TOML or from the environment.
//!
//! TOML has booleans, integers and arrays; environment variables are only text (see
//! [`super::env`]). Each reader here accepts both, and refuses bad text with a message that says
//! what was expected, in the operator's words rather than serde's ("`12 parsecs` is not a
//! duration like \"30s\" or \"10m\"", not "invalid value: string, expected a duration"): the
//! key is added by `serde_path_to_error`, so every message still names it.

use serde::de::{self, Deserializer};
use serde::Deserialize;
use std::time::Duration;

/// Environment values are strings; TOML has real booleans. Accept both.
pub(super) fn bool_or_text<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum B {
        Bool(bool),
        Text(String),
    }
    match B::deserialize(d)? {
        B::Bool(b) => Ok(b),
        B::Text(t) => match t.trim() {
            "true" => Ok(true),
            "false" => Ok(false),
            other => Err(de::Error::custom(format!(
                "expected true or false, found `{other}`"
            ))),
        },
    }
}

/// As [`bool_or_text`], for a key whose default depends on others.
pub(super) fn opt_bool_or_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    bool_or_text(d).map(Some)
}

/// Environment values are strings; TOML has real integers. Accept both.
pub(super) fn usize_or_text<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum N {
        Num(usize),
        Text(String),
    }
    match N::deserialize(d)? {
        N::Num(n) => Ok(n),
        N::Text(t) => t
            .trim()
            .parse()
            .map_err(|_| de::Error::custom(format!("expected a whole number, found `{t}`"))),
    }
}

/// Environment values are strings; a list there is comma-separated.
pub(super) fn list_or_text<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum L {
        List(Vec<String>),
        Text(String),
    }
    Ok(match L::deserialize(d)? {
        L::List(l) => l,
        L::Text(t) => t
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
    })
}

/// As [`list_or_text`], for a list whose absence means something else than an empty list.
pub(super) fn opt_list_or_text<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<String>>, D::Error> {
    list_or_text(d).map(Some)
}

/// A humantime duration (`"30s"`, `"10m"`, `"1h 30m"`) longer than zero: every timeout and
/// lifetime in the configuration, where zero would mean "never works".
pub(super) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    let d = parse_duration(&text, "\"30s\" or \"10m\"").map_err(de::Error::custom)?;
    if d.is_zero() {
        return Err(de::Error::custom("must be longer than zero"));
    }
    Ok(d)
}

/// An optional duration, longer than zero when given (a key that must be told apart from its
/// default, such as a deprecated alias).
pub(super) fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

/// A humantime duration that may be zero (`proxy.refresh_ahead = "0s"`: refresh only once
/// expired).
pub(super) fn duration_or_zero<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    parse_duration(&text, "\"60s\"").map_err(de::Error::custom)
}

fn parse_duration(text: &str, example: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("`{text}` is not a duration like {example}: {e}"))
}

/// A configuration enum written as one of a few lowercase words, compared without regard to
/// case (`"Strict"` is `strict`); anything else is refused with the list of words, e.g.
/// "`relaxed` is not one of strict, lax, none".
macro_rules! word_enum {
    ($ty:ty { $($word:literal => $variant:expr),+ $(,)? }) => {
        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                match text.to_ascii_lowercase().as_str() {
                    $($word => Ok($variant),)+
                    _ => Err(serde::de::Error::custom(format!(
                        "`{text}` is not one of {}",
                        [$($word),+].join(", ")
                    ))),
                }
            }
        }
    };
}
pub(super) use word_enum;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{LogFormat, SameSite};

    #[derive(Deserialize, Debug)]
    struct Sample {
        #[serde(deserialize_with = "duration")]
        timeout: Duration,
        #[serde(deserialize_with = "duration_or_zero")]
        ahead: Duration,
        same_site: SameSite,
        format: LogFormat,
    }

    fn sample(timeout: &str, ahead: &str, same_site: &str) -> Result<Sample, String> {
        toml::from_str::<Sample>(&format!(
            "timeout = \"{timeout}\"\nahead = \"{ahead}\"\nsame_site = \"{same_site}\"\nformat = \"JSON\""
        ))
        .map_err(|e| e.message().to_string())
    }

    #[test]
    fn durations_and_words_read_as_operators_write_them() {
        let s = sample(" 1h 30m ", "0s", "Lax").expect("valid");
        assert_eq!(s.timeout, Duration::from_secs(5400));
        assert_eq!(s.ahead, Duration::ZERO);
        assert_eq!((s.same_site, s.format), (SameSite::Lax, LogFormat::Json));
        assert_eq!(
            sample("0s", "1s", "lax").expect_err("zero"),
            "must be longer than zero"
        );
        let e = sample("soon", "1s", "lax").expect_err("not a duration");
        assert!(
            e.starts_with("`soon` is not a duration like \"30s\""),
            "{e}"
        );
        let e = sample("1s", "1s", "relaxed").expect_err("not a word");
        assert_eq!(e, "`relaxed` is not one of strict, lax, none");
    }
}
