//! docs/troubleshooting.md checked against the error codes: every stable code `ApiError::code`
//! returns (read from src/error.rs) and every code docs/openapi.yaml names has a row in the
//! troubleshooting table, so a new code cannot ship without telling developers what to check.

use std::collections::BTreeSet;

const ERRORS: &str = include_str!("error.rs");
const OPENAPI: &str = include_str!("../docs/openapi.yaml");
const TROUBLESHOOTING: &str = include_str!("../docs/troubleshooting.md");

/// The string literals of `ApiError::code`'s match arms (`ApiError::X => "code",`).
fn error_rs_codes() -> BTreeSet<String> {
    let body = ERRORS
        .split("pub fn code(&self)")
        .nth(1)
        .and_then(|rest| rest.split("\n    }\n").next())
        .unwrap_or_else(|| panic!("src/error.rs has no `pub fn code(&self)`"));
    body.lines()
        .filter(|l| l.trim_start().starts_with("ApiError::"))
        .filter_map(|l| l.split("=> \"").nth(1)?.split('"').next())
        .map(str::to_string)
        .collect()
}

/// The codes openapi.yaml names: `code: x` in examples, and `` `x` (NNN `` in the error prose.
fn openapi_codes() -> BTreeSet<String> {
    let word = |s: &str| {
        let w: String = s
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
            .collect();
        (w.len() > 2).then_some(w)
    };
    let mut codes: BTreeSet<String> = OPENAPI.split("code: ").skip(1).filter_map(word).collect();
    for piece in OPENAPI.split('`').collect::<Vec<_>>().windows(2) {
        let (name, after) = (piece[0], piece[1]);
        let status = after.strip_prefix(" (").and_then(|s| s.chars().next());
        if status.is_some_and(|c| c.is_ascii_digit()) && word(name).as_deref() == Some(name) {
            codes.insert(name.to_string());
        }
    }
    codes
}

/// The codes with a row in the troubleshooting table (`` | `code` | ``).
fn documented() -> BTreeSet<String> {
    TROUBLESHOOTING
        .lines()
        .filter_map(|l| l.strip_prefix("| `")?.split('`').next())
        .map(str::to_string)
        .collect()
}

#[test]
fn every_error_code_has_a_troubleshooting_line() {
    let from_code = error_rs_codes();
    let from_openapi = openapi_codes();
    // Guards against a vacuous pass (a parse gone wrong finds nothing).
    for code in [
        "unauthorized_request",
        "session_expired",
        "too_many_requests",
    ] {
        assert!(
            from_code.contains(code),
            "{code} not found in src/error.rs: {from_code:?}"
        );
    }
    for code in ["token_expired", "upstream_timeout", "access_denied"] {
        assert!(
            from_openapi.contains(code),
            "{code} not found in openapi.yaml: {from_openapi:?}"
        );
    }
    let documented = documented();
    let missing: Vec<_> = from_code
        .union(&from_openapi)
        .filter(|c| !documented.contains(*c))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/troubleshooting.md has no line for these error codes: {missing:?}"
    );
}
