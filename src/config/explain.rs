//! `token-handler check --explain`: the effective configuration, key by key, with where each
//! value came from (the default, the file, or an environment variable) and every secret
//! redacted.
//!
//! An operator debugging a deployment needs to know which of three layers won, and must be able
//! to paste the answer into a ticket: so secrets (cookie keys, client secrets, passwords, private
//! keys, headers and parameters sent to the token endpoint) print as `<redacted>` with their
//! source, never their value. The list of keys and their defaults is read from the configuration
//! reference itself (docs/configuration.md, embedded at build time): `config::reference` tests
//! that its tables list exactly the keys the parser accepts, so this list cannot drift either.

use super::{env, ConfigError, ENV_PREFIX};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

const REFERENCE: &str = include_str!("../../docs/configuration.md");

/// What stands for a secret in the output.
pub const REDACTED: &str = "<redacted>";

/// A row of the reference's key tables: its section, whether the section is a list of tables,
/// the key, its default as documented, and whether the row says the key is deprecated.
pub(super) struct DocKey {
    pub section: String,
    pub list: bool,
    pub key: String,
    pub default: String,
    pub deprecated: bool,
}

/// The rows of the `| Key | Type | Default | … |` tables under `## [section]` headings (`## [[routes]]
/// (API proxy)` is a list of tables; any other `##` heading ends a section), in the docs' order.
/// The one reader of those tables: `check --explain` takes keys and defaults from it, and the
/// `config::reference` test compares its keys with what the parser accepts.
pub(super) fn documented_rows(doc: &str) -> Vec<DocKey> {
    let mut keys = Vec::new();
    let mut section: Option<(String, bool)> = None;
    let mut in_table = false;
    for line in doc.lines() {
        let line = line.trim();
        if let Some(heading) = line.strip_prefix("## ") {
            section = heading
                .split_whitespace()
                .next()
                .filter(|w| w.starts_with('['))
                .map(|w| {
                    (
                        w.trim_matches(|c| c == '[' || c == ']').to_string(),
                        w.starts_with("[["),
                    )
                });
            in_table = false;
            continue;
        }
        if !line.starts_with('|') {
            in_table = false;
            continue;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let first = cells.get(1).copied().unwrap_or("");
        if first == "Key" {
            in_table = true;
            continue;
        }
        let (Some((name, list)), true) = (&section, in_table) else {
            continue;
        };
        if let Some(key) = first.strip_prefix('`').and_then(|k| k.strip_suffix('`')) {
            keys.push(DocKey {
                section: name.clone(),
                list: *list,
                key: key.to_string(),
                default: cells.get(3).copied().unwrap_or("").replace('`', ""),
                deprecated: line.contains("| Deprecated"),
            });
        }
    }
    keys
}

/// The keys of the embedded reference.
fn documented() -> Vec<DocKey> {
    documented_rows(REFERENCE)
}

/// Whether a key holds a secret. File paths and key ids do not; the values of the maps sent to
/// the token endpoint may (an API key in a header), so they are redacted too.
fn is_secret(key: &str) -> bool {
    if key.ends_with("_file") || key.ends_with("_id") {
        return false;
    }
    key == "keys"
        || key.contains("secret")
        || key.contains("password")
        || key.contains("private_key")
        || key == "token_request_headers"
        || key == "extra_token_params"
}

/// Where a value came from.
enum Source<'a> {
    Default,
    File(&'a Path),
    Env(&'a str, bool),
}

impl std::fmt::Display for Source<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Default => write!(f, "default"),
            Source::File(p) => write!(f, "file {}", p.display()),
            Source::Env(name, false) => write!(f, "environment {name}"),
            Source::Env(name, true) => write!(f, "environment {name} (overrides the file)"),
        }
    }
}

/// A value as printed: secrets redacted, and a map's entry names kept (its values redacted).
fn show(key: &str, value: &toml::Value) -> String {
    if !is_secret(key) {
        return value.to_string();
    }
    match value {
        toml::Value::Table(t) if !t.is_empty() => {
            let names: Vec<String> = t.keys().map(|k| format!("{k} = {REDACTED}")).collect();
            format!("{{ {} }}", names.join(", "))
        }
        _ => REDACTED.to_string(),
    }
}

/// The `(section, index, key)` an environment variable sets, found by overlaying it alone.
fn env_target(
    name: &str,
    value: &str,
) -> Result<Option<(String, Option<usize>, String)>, ConfigError> {
    let mut table = toml::Table::new();
    env::overlay(&mut table, [(name.to_string(), value.to_string())])?;
    for (section, inner) in table {
        match inner {
            toml::Value::Table(t) => {
                if let Some(key) = t.keys().next() {
                    return Ok(Some((section, None, key.clone())));
                }
            }
            toml::Value::Array(list) => {
                if let Some(key) = list
                    .last()
                    .and_then(|e| e.as_table()?.keys().next().cloned())
                {
                    return Ok(Some((section, Some(list.len() - 1), key)));
                }
            }
            _ => {}
        }
    }
    Ok(None)
}

/// The explanation of the configuration in `path` (if any) overlaid by `env`, one line per key
/// (and per entry of `[[providers]]` and `[[routes]]`). The configuration is validated first:
/// an invalid one is the same error `run` and `check` give.
pub fn explain(
    path: Option<&Path>,
    env_vars: impl IntoIterator<Item = (String, String)>,
) -> Result<String, ConfigError> {
    let text = match path {
        Some(p) => std::fs::read_to_string(p).map_err(|e| {
            ConfigError::new("--config", format!("cannot read {}: {e}", p.display()))
        })?,
        None => String::new(),
    };
    let env_vars: Vec<(String, String)> = env_vars
        .into_iter()
        .filter(|(name, _)| name.starts_with(ENV_PREFIX))
        .collect();
    super::Config::from_toml(&text, env_vars.clone())?;

    let file: toml::Table =
        toml::from_str(&text).map_err(|e| ConfigError::new("config file", e.to_string()))?;
    let mut merged = file.clone();
    env::overlay(&mut merged, env_vars.clone())?;
    let mut from_env = BTreeMap::new();
    for (name, value) in &env_vars {
        if let Some(target) = env_target(name, value)? {
            from_env.insert(target, name.as_str());
        }
    }

    let lookup = |table: &toml::Table, section: &str, index: Option<usize>, key: &str| {
        let inner = table.get(section)?;
        let entry = match index {
            Some(i) => inner.as_array()?.get(i)?,
            None => inner,
        };
        entry.as_table()?.get(key).cloned()
    };

    let mut rows: Vec<(String, String, String)> = Vec::new();
    for doc in documented() {
        let indexes: Vec<Option<usize>> = if doc.list {
            let n = merged
                .get(&doc.section)
                .and_then(toml::Value::as_array)
                .map_or(0, Vec::len);
            (0..n).map(Some).collect()
        } else {
            vec![None]
        };
        for index in indexes {
            let name = match index {
                Some(i) => format!("{}[{i}].{}", doc.section, doc.key),
                None => format!("{}.{}", doc.section, doc.key),
            };
            let in_file = lookup(&file, &doc.section, index, &doc.key);
            let env_name = from_env.get(&(doc.section.clone(), index, doc.key.clone()));
            let (value, source) = match (lookup(&merged, &doc.section, index, &doc.key), env_name) {
                (Some(v), Some(var)) => (show(&doc.key, &v), Source::Env(var, in_file.is_some())),
                (Some(v), None) => match path {
                    Some(p) => (show(&doc.key, &v), Source::File(p)),
                    None => (show(&doc.key, &v), Source::Default),
                },
                // A deprecated key left unset is not part of the configuration.
                (None, _) if doc.deprecated => continue,
                (None, _) => (doc.default.clone(), Source::Default),
            };
            let source = match doc.deprecated {
                true => format!("{source} (deprecated: see docs/configuration.md)"),
                false => source.to_string(),
            };
            rows.push((name, value, source));
        }
    }

    let width = rows.iter().map(|(k, _, _)| k.len()).max().unwrap_or(0);
    let mut out = String::from(
        "# The effective configuration: key, value, and where it came from (secrets redacted).\n",
    );
    for (key, value, source) in rows {
        // Writing to a String cannot fail.
        let _ = writeln!(out, "{key:<width$} = {value}  # {source}");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_listed_with_its_source_and_no_secret() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.toml");
        let text = format!(
            "{}[providers.token_request_headers]\nx-api-key = \"header-secret-value\"\n",
            super::super::test_toml("idle_timeout = \"1h\"", super::super::TEST_PROVIDER).replace(
                "client_secret = \"s\"",
                "client_secret = \"file-secret-value\""
            )
        );
        std::fs::write(&path, &text).expect("write");
        let key = crate::crypto::CookieKey::generate_text();
        let env = vec![
            (
                "TOKEN_HANDLER__PROVIDERS__0__CLIENT_ID".to_string(),
                "env-client".to_string(),
            ),
            ("TOKEN_HANDLER__COOKIES__KEYS".to_string(), key.clone()),
            ("UNRELATED".to_string(), "x".to_string()),
        ];
        let out = explain(Some(&path), env).expect("explain");
        let file = format!("# file {}", path.display());
        let line = |key: &str| {
            out.lines()
                .find(|l| l.split_whitespace().next() == Some(key))
                .unwrap_or_else(|| panic!("no line for {key}:\n{out}"))
                .to_string()
        };
        assert!(line("cookies.idle_timeout").ends_with(&format!("= \"1h\"  {file}")));
        assert!(line("providers[0].client_secret").ends_with(&format!("= <redacted>  {file}")));
        assert!(line("providers[0].client_id").ends_with(
            "= \"env-client\"  # environment TOKEN_HANDLER__PROVIDERS__0__CLIENT_ID (overrides the file)"
        ));
        assert!(line("cookies.keys").ends_with(
            "= <redacted>  # environment TOKEN_HANDLER__COOKIES__KEYS (overrides the file)"
        ));
        assert!(line("providers[0].token_request_headers").contains("{ x-api-key = <redacted> }"));
        assert!(line("server.listen").ends_with("= \"127.0.0.1:8080\"  # default"));
        for secret in ["file-secret-value", "header-secret-value", key.as_str()] {
            assert!(!out.contains(secret), "{secret} printed:\n{out}");
        }
        // Every documented key of the single sections has a line.
        assert_eq!(
            out.lines().filter(|l| l.starts_with("server.")).count(),
            documented()
                .iter()
                .filter(|d| d.section == "server")
                .count()
        );
    }

    #[test]
    fn an_invalid_configuration_is_the_usual_error() {
        let err = explain(None, Vec::new()).expect_err("no provider, no key");
        assert!(!err.key.is_empty());
    }

    #[test]
    fn secret_keys_are_recognised() {
        for key in [
            "keys",
            "client_secret",
            "password",
            "private_key",
            "extra_token_params",
        ] {
            assert!(is_secret(key), "{key}");
        }
        for key in [
            "keys_file",
            "client_secret_file",
            "private_key_file",
            "private_key_id",
            "token_endpoint",
            "client_id",
        ] {
            assert!(!is_secret(key), "{key}");
        }
    }
}
