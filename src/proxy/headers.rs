//! What headers cross the proxy, in each direction.
//!
//! Toward the upstream: no hop-by-hop headers (RFC 9110 §7.6.1), none of our cookies, not our
//! CSRF header, not the client's own Authorization (we set it), no `Expect` (answered here), and
//! `X-Forwarded-*` that we write ourselves rather than believe from the client. Back to the
//! client: no hop-by-hop headers, no CORS headers (we decide CORS), and no Set-Cookie that would
//! overwrite ours.

use crate::cookies::request_cookies;
use crate::state::AppState;
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};

const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Headers named in `Connection` are hop-by-hop too.
fn connection_listed(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::CONNECTION)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

fn is_hop_by_hop(name: &HeaderName, listed: &[String]) -> bool {
    HOP_BY_HOP.contains(&name.as_str()) || listed.iter().any(|l| l == name.as_str())
}

/// The request headers to send upstream (before Authorization and X-Forwarded-* are added). The
/// values of one name come one after another, in the order the client sent them.
pub fn upstream_request_headers(
    incoming: &HeaderMap,
    state: &AppState,
    keep_authorization: bool,
) -> Vec<(HeaderName, HeaderValue)> {
    let listed = connection_listed(incoming);
    let csrf = state.cookies.csrf_header();
    let mut out = Vec::new();
    for (name, value) in incoming.iter() {
        let n = name.as_str();
        if is_hop_by_hop(name, &listed)
            || n == "host"
            || n == "content-length"
            // actix-web has already answered `Expect: 100-continue` to the client; upstream,
            // the expectation would cost a round trip, and awc refuses it on bodiless requests.
            || n == "expect"
            || n == csrf
            || n == "forwarded"
            || n.starts_with("x-forwarded-")
            || (n == "authorization" && !keep_authorization)
            || n == "cookie"
        {
            continue;
        }
        out.push((name.clone(), value.clone()));
    }
    if let Some(cookie) = foreign_cookies(incoming, state) {
        out.push((header::COOKIE, cookie));
    }
    out
}

/// The request's cookies minus ours (`<prefix>-*`), or `None` when nothing is left. Pairs the
/// cookie crate cannot parse are not ours: they pass as sent.
fn foreign_cookies(incoming: &HeaderMap, state: &AppState) -> Option<HeaderValue> {
    let mut kept = String::new();
    for pair in request_cookies(incoming) {
        // A pair starts with its name: only pairs that start like ours need parsing.
        let ours = state.cookies.is_ours(pair.text)
            && pair
                .name_value()
                .is_some_and(|(name, _)| state.cookies.is_ours(name));
        if ours {
            continue;
        }
        if !kept.is_empty() {
            kept.push_str("; ");
        }
        kept.push_str(pair.text);
    }
    if kept.is_empty() {
        return None;
    }
    HeaderValue::from_str(&kept).ok()
}

/// Whether an upstream response header goes back to the client.
pub fn keep_response_header(
    name: &HeaderName,
    value: &HeaderValue,
    listed: &[String],
    state: &AppState,
) -> bool {
    let n = name.as_str();
    if is_hop_by_hop(name, listed) || n == "content-length" || n.starts_with("access-control-") {
        return false;
    }
    if n == "set-cookie" {
        let cookie_name = value
            .to_str()
            .ok()
            .and_then(|v| v.split('=').next())
            .map(str::trim)
            .unwrap_or("");
        return !state.cookies.is_ours(cookie_name);
    }
    true
}

/// Hop-by-hop names listed in a response's `Connection` header.
pub fn response_connection_listed(headers: &HeaderMap) -> Vec<String> {
    connection_listed(headers)
}
