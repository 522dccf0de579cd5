//! The configuration reference (docs/configuration.md) checked against the parser.
//!
//! The accepted keys are not listed by hand anywhere: they are read from serde itself. Every
//! `Raw…` type denies unknown fields, and serde's error for an unknown field lists the fields
//! the type expects ("unknown field `x`, expected one of `a`, `b`"). Feeding the parser a
//! field no section has therefore yields the top-level sections, and, one level down, each
//! section's keys. The documented keys come from the reference's tables: the first column of
//! each `| Key |` table under a `## [section]` or `## [[section]]` heading. A key added to the
//! code without a line in the docs, or documented but refused, fails the test with the diff.
//!
//! Tables whose own keys are free (`[providers.extra_auth_params]`, `extra_token_params`,
//! `token_request_headers`, `userinfo_claims`) are maps, not structs: their entries are values
//! the operator chooses, documented in prose, and not part of this check.

use super::RawConfig;
use serde::Deserialize;
use std::collections::BTreeSet;

const REFERENCE: &str = include_str!("../../docs/configuration.md");

/// A name no section or key has.
const PROBE: &str = "zz_not_a_configuration_key";

/// The field names listed in serde's unknown-field error for `value`, or `None` when the error
/// is another one (for example a type error: the section is a list of tables, not a table).
fn expected_fields(value: toml::Value) -> Option<BTreeSet<String>> {
    let message = match RawConfig::deserialize(value) {
        Ok(_) => panic!("a configuration with `{PROBE}` was accepted"),
        Err(e) => e.message().to_string(),
    };
    let rest = message.strip_prefix(&format!("unknown field `{PROBE}`, "))?;
    if rest == "there are no fields" {
        return Some(BTreeSet::new());
    }
    let list = rest
        .strip_prefix("expected one of ")
        .or_else(|| rest.strip_prefix("expected "))
        .unwrap_or_else(|| panic!("unexpected serde message: {message}"));
    // "`a`, `b`, `c`" (one of), "`a` or `b`" (two), "`a`" (one).
    Some(
        list.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect(),
    )
}

fn probe_table() -> toml::Value {
    let mut t = toml::Table::new();
    t.insert(PROBE.into(), toml::Value::Integer(1));
    toml::Value::Table(t)
}

fn config_with(section: &str, value: toml::Value) -> toml::Value {
    let mut t = toml::Table::new();
    t.insert(section.into(), value);
    toml::Value::Table(t)
}

/// Every `section.key` the parser accepts, `providers.id` style for lists of tables.
fn accepted_keys() -> BTreeSet<String> {
    let sections = expected_fields(probe_table()).expect("the top level denies unknown fields");
    let mut keys = BTreeSet::new();
    for section in sections {
        // A section is either a table (`[server]`) or a list of tables (`[[providers]]`): the
        // probe as a table gives a type error for a list, so try the list form then.
        let fields = expected_fields(config_with(&section, probe_table()))
            .or_else(|| {
                expected_fields(config_with(
                    &section,
                    toml::Value::Array(vec![probe_table()]),
                ))
            })
            .unwrap_or_else(|| panic!("section `{section}` does not deny unknown fields"));
        assert!(!fields.is_empty(), "section `{section}` accepts no keys");
        keys.extend(fields.into_iter().map(|key| format!("{section}.{key}")));
    }
    keys
}

/// Every `section.key` in the reference's key tables.
fn documented_keys(doc: &str) -> BTreeSet<String> {
    key_rows(doc).into_iter().map(|(key, _)| key).collect()
}

/// The documented keys whose row says "Deprecated": accepted, but no example should use them.
fn deprecated_keys(doc: &str) -> BTreeSet<String> {
    key_rows(doc)
        .into_iter()
        .filter(|(_, deprecated)| *deprecated)
        .map(|(key, _)| key)
        .collect()
}

/// Each row of the reference's key tables as (`section.key`, deprecated), read by the one reader
/// of those tables ([`super::explain::documented_rows`]).
fn key_rows(doc: &str) -> Vec<(String, bool)> {
    super::explain::documented_rows(doc)
        .into_iter()
        .map(|d| (format!("{}.{}", d.section, d.key), d.deprecated))
        .collect()
}

#[test]
fn configuration_reference_matches_the_parser() {
    let accepted = accepted_keys();
    let documented = documented_keys(REFERENCE);
    let undocumented: Vec<_> = accepted.difference(&documented).collect();
    let refused: Vec<_> = documented.difference(&accepted).collect();
    assert!(
        undocumented.is_empty() && refused.is_empty(),
        "docs/configuration.md and the parser disagree:\n  \
         accepted by the parser but not in the reference's tables: {undocumented:?}\n  \
         in the reference's tables but refused by the parser: {refused:?}"
    );
}

#[test]
fn the_key_probe_reads_serde_and_the_docs() {
    // Guards against the check passing vacuously (both sides empty, or a parse gone wrong).
    let accepted = accepted_keys();
    for key in [
        "server.listen",
        "cookies.keys_file",
        "providers.client_id",
        "routes.upstream",
        "rate_limit.login_burst",
    ] {
        assert!(accepted.contains(key), "{key} not found in {accepted:?}");
    }
    let doc = "## [a]\n\n| Key | Type |\n| --- | --- |\n| `x` | bool |\n\n| Problem | Message |\n| --- | --- |\n| `no` | y |\n\n## [[b]] (list)\n\n| Key |\n| --- |\n| `y` |\n\n## Other\n\n| Key |\n| --- |\n| `z` |\n";
    let found: Vec<_> = documented_keys(doc).into_iter().collect();
    assert_eq!(found, ["a.x", "b.y"]);
}

/// The docs and examples a reader copies configuration from: `docs/*.md`, `README.md` and the
/// text files under `examples/`, found at test time so a new page is covered without a list.
fn copied_from() -> Vec<(String, String)> {
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            if path.is_dir() && name != "node_modules" && name != "target" {
                walk(&path, out);
            } else if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("md" | "toml" | "yaml" | "yml" | "sh" | "env")
            ) {
                out.push(path);
            }
        }
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut paths = vec![root.join("README.md")];
    walk(&root.join("docs"), &mut paths);
    walk(&root.join("examples"), &mut paths);
    paths.sort();
    paths
        .into_iter()
        .filter_map(|p| {
            let text = std::fs::read_to_string(&p).ok()?;
            let shown = p.strip_prefix(root).unwrap_or(&p).display().to_string();
            Some((shown, text))
        })
        .collect()
}

/// The `section.key`s a TOML document sets (one level into each section: deeper tables such as
/// `[providers.extra_auth_params]` are values).
fn toml_keys(doc: &toml::Table) -> Vec<String> {
    let mut keys = Vec::new();
    for (section, value) in doc {
        let tables: Vec<&toml::Table> = match value {
            toml::Value::Table(t) => vec![t],
            toml::Value::Array(a) => a.iter().filter_map(toml::Value::as_table).collect(),
            _ => {
                keys.push(section.clone());
                continue;
            }
        };
        for table in tables {
            keys.extend(table.keys().map(|key| format!("{section}.{key}")));
        }
    }
    keys
}

/// The `section.key` each `TOKEN_HANDLER__…` variable in `text` sets (placeholders such as
/// `TOKEN_HANDLER__<SECTION>__<KEY>` are skipped).
fn env_keys(text: &str) -> Vec<String> {
    text.match_indices(super::ENV_PREFIX)
        .filter_map(|(at, _)| {
            let rest = &text[at + super::ENV_PREFIX.len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            let parts: Vec<String> = rest[..end]
                .split("__")
                .filter(|p| p.parse::<usize>().is_err())
                .map(str::to_ascii_lowercase)
                .collect();
            (parts.len() == 2 && parts.iter().all(|p| !p.is_empty())).then(|| parts.join("."))
        })
        .collect()
}

#[test]
fn configuration_examples_use_only_accepted_keys() {
    let accepted = accepted_keys();
    let sections: BTreeSet<&str> = accepted
        .iter()
        .filter_map(|k| k.split('.').next())
        .collect();
    let deprecated = deprecated_keys(REFERENCE);
    assert!(deprecated.contains("cookies.session_lifetime"));
    let mut wrong = Vec::new();
    let mut checked = 0;
    for (file, text) in copied_from() {
        let mut found: Vec<(String, &str)> = Vec::new();
        if file.ends_with(".toml") {
            let doc: toml::Table = toml::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
            found.extend(toml_keys(&doc).into_iter().map(|k| (k, "TOML")));
        }
        // ```toml blocks; fragments that are not TOML on their own (placeholders) are skipped.
        for block in text.split("```toml").skip(1) {
            let block = block.split("```").next().unwrap_or("");
            if let Ok(doc) = toml::from_str::<toml::Table>(block) {
                let keys = toml_keys(&doc);
                // Only blocks that look like token-handler's file (a known section).
                if keys
                    .iter()
                    .any(|k| sections.contains(k.split('.').next().unwrap_or("")))
                {
                    found.extend(keys.into_iter().map(|k| (k, "TOML block")));
                }
            }
        }
        found.extend(env_keys(&text).into_iter().map(|k| (k, "environment")));
        for (key, form) in found {
            checked += 1;
            if !accepted.contains(&key) {
                wrong.push(format!(
                    "{file}: {form} sets `{key}`, which the parser refuses"
                ));
            } else if deprecated.contains(&key) {
                wrong.push(format!("{file}: {form} sets `{key}`, which is deprecated"));
            }
        }
    }
    assert!(checked > 50, "only {checked} example keys found");
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_unknown_key_sample_is_the_parsers_message() {
    // The reference quotes the message for an unknown key, list of valid keys included: that
    // list grows with every new key, so the sample is compared with the parser's own answer.
    let err = super::Config::from_toml("[web]\norigins = []\n", Vec::new())
        .expect_err("an unknown key is refused");
    let line = format!("token-handler: configuration error: {err}");
    assert!(
        REFERENCE.lines().any(|l| l == line),
        "docs/configuration.md should quote the unknown-key error as:\n{line}"
    );
}

#[test]
fn several_apis_example_loads() {
    // examples/several-apis.toml is the runnable form of "Calling several APIs": it must load
    // with the real parser and validation (secrets from the environment, as its header says),
    // and mean what the docs say it means.
    let text = include_str!("../../examples/several-apis.toml");
    let env = [
        (
            "TOKEN_HANDLER__COOKIES__KEYS".to_string(),
            crate::crypto::CookieKey::generate_text(),
        ),
        (
            "TOKEN_HANDLER__PROVIDERS__0__CLIENT_SECRET".to_string(),
            "login-secret".to_string(),
        ),
        (
            "TOKEN_HANDLER__PROVIDERS__1__CLIENT_SECRET".to_string(),
            "google-secret".to_string(),
        ),
        (
            "TOKEN_HANDLER__PROVIDERS__2__CLIENT_SECRET".to_string(),
            "onedrive-secret".to_string(),
        ),
    ];
    let config = super::Config::from_toml(text, env)
        .unwrap_or_else(|e| panic!("examples/several-apis.toml does not load: {e}"));
    let ids: Vec<&str> = config.providers.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, ["login", "google", "onedrive"]);
    let route = |path: &str| {
        config
            .proxy
            .routes
            .iter()
            .find(|r| r.path.as_str() == path)
            .unwrap_or_else(|| panic!("no route {path}"))
    };
    let catalog = route("/api/catalog");
    assert_eq!(catalog.token_header.as_str(), "x-pat-jwt");
    assert!(catalog.narrowing.is_some());
    assert!(route("/api/storage").narrowing.is_some());
    assert!(route("/api/billing").access.assertion_header.is_some());
    assert!(route("/api/status").narrowing.is_none());
    assert_eq!(route("/drive/google").provider.as_deref(), Some("google"));
    assert_eq!(
        route("/drive/onedrive").provider.as_deref(),
        Some("onedrive")
    );
}
