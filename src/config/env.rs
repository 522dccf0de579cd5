//! The environment overlay: `TOKEN_HANDLER__<SECTION>__<KEY>` sets `<section>.<key>` of the
//! TOML table before it is read, and `TOKEN_HANDLER__PROVIDERS__<INDEX>__<KEY>` (or `ROUTES`)
//! an entry of a list. Values go in as strings; the readers in [`super::de`] accept them where
//! TOML would have a boolean, a number or a list. A name that fits neither form is an error,
//! so a typo does not silently leave the file's value in force.

use super::ConfigError;

/// The prefix of every environment variable that overrides a configuration key.
pub const ENV_PREFIX: &str = "TOKEN_HANDLER__";

/// The configuration's lists of tables, addressed by index from the environment.
const LISTS: [&str; 2] = ["providers", "routes"];

/// Sets in `table` every key named by a variable of `env` that starts with [`ENV_PREFIX`].
pub(super) fn overlay(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    for (name, value) in env {
        if let Some(rest) = name.strip_prefix(ENV_PREFIX) {
            apply_env(table, &name, rest, value)?;
        }
    }
    Ok(())
}

/// Sets one key from an environment variable: `SECTION__KEY`, `PROVIDERS__0__KEY`.
fn apply_env(
    table: &mut toml::Table,
    name: &str,
    rest: &str,
    value: String,
) -> Result<(), ConfigError> {
    let parts: Vec<String> = rest.split("__").map(|p| p.to_ascii_lowercase()).collect();
    let bad = || {
        ConfigError::new(
            name,
            "environment overrides are TOKEN_HANDLER__<SECTION>__<KEY>, or TOKEN_HANDLER__PROVIDERS__<INDEX>__<KEY> and TOKEN_HANDLER__ROUTES__<INDEX>__<KEY> for list entries",
        )
    };
    match parts.as_slice() {
        [section, key] if !LISTS.contains(&section.as_str()) && !key.is_empty() => {
            let entry = table
                .entry(section.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let section = entry.as_table_mut().ok_or_else(bad)?;
            section.insert(key.clone(), toml::Value::String(value));
        }
        [section, index, key] if LISTS.contains(&section.as_str()) && !key.is_empty() => {
            let index: usize = index.parse().map_err(|_| bad())?;
            if index > 64 {
                return Err(bad());
            }
            let entry = table
                .entry(section.clone())
                .or_insert_with(|| toml::Value::Array(Vec::new()));
            let list = entry.as_array_mut().ok_or_else(bad)?;
            while list.len() <= index {
                list.push(toml::Value::Table(toml::Table::new()));
            }
            let provider = list[index].as_table_mut().ok_or_else(bad)?;
            provider.insert(key.clone(), toml::Value::String(value));
        }
        _ => return Err(bad()),
    }
    Ok(())
}
