//! What headers cross the proxy, in each direction.
//!
//! Toward the upstream: no hop-by-hop headers (RFC 9110 §7.6.1), none of our cookies, not our
//! CSRF header, not the client's own Authorization (we set it), no `Expect` (answered here),
//! `X-Forwarded-*` that we write ourselves rather than believe from the client, and none of the
//! headers that would make the upstream route, re-method or re-attribute the request
//! ([`INSTRUCTING_REQUEST_HEADERS`]). Back to the client: no hop-by-hop headers, no CORS headers
//! (we decide CORS), no instructions to a front server ([`is_instructing_response_header`]), and
//! no Set-Cookie that a browser would store under one of our names. A route's `allow_headers`
//! lets named instructing headers through, in either direction.

use crate::config::{is_instructing_response_header, INSTRUCTING_REQUEST_HEADERS};
use crate::cookies::{CookiePolicy, RequestCookies};
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// As `HeaderName`s: every header of every proxied request and response is looked up here, and
/// names compare faster than their text (the standard ones by a tag).
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
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
    HOP_BY_HOP.contains(name) || listed.iter().any(|l| l == name.as_str())
}

/// The request headers to send upstream (before Authorization and X-Forwarded-* are added). The
/// values of one name come one after another, in the order the client sent them.
///
/// `cookies` is `incoming`'s Cookie header as read by the policy: all but our cookies go up.
///
/// `token_header` is the route's header for the token: when it is not `Authorization`, the
/// client's value for it never goes up, whether we set the token or not (a client must not pick
/// the token an upstream trusts). The client's `Authorization` is still dropped unless
/// `keep_authorization` (a mobile client's own bearer), so no client credential travels
/// alongside ours.
pub fn upstream_request_headers(
    incoming: &HeaderMap,
    cookies: &RequestCookies<'_>,
    policy: &CookiePolicy,
    keep_authorization: bool,
    allowed: &[HeaderName],
    token_header: &HeaderName,
) -> Vec<(HeaderName, HeaderValue)> {
    let listed = connection_listed(incoming);
    let csrf = policy.csrf_header();
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
            || n.starts_with("x-forwarded-")
            || (INSTRUCTING_REQUEST_HEADERS.contains(&n) && !allowed.contains(name))
            || (n == "authorization" && !keep_authorization)
            || (name == token_header && n != "authorization")
            || n == "cookie"
        {
            continue;
        }
        out.push((name.clone(), value.clone()));
    }
    // Pairs the cookie crate cannot parse are not ours: they pass as sent.
    if let Some(cookie) = cookies.foreign_header() {
        out.push((header::COOKIE, cookie));
    }
    out
}

/// Whether an upstream response header goes back to the client.
pub fn keep_response_header(
    name: &HeaderName,
    value: &HeaderValue,
    listed: &[String],
    policy: &CookiePolicy,
    allowed: &[HeaderName],
) -> bool {
    let n = name.as_str();
    if is_hop_by_hop(name, listed)
        || name == header::CONTENT_LENGTH
        || n.starts_with("access-control-")
    {
        return false;
    }
    if is_instructing_response_header(n) && !allowed.contains(name) {
        return false;
    }
    if n == "set-cookie" {
        return match stored_cookie_name(value) {
            Some(stored) => !looks_ours(policy, stored),
            None => false,
        };
    }
    true
}

/// The name under which a browser stores a `Set-Cookie` and later sends it back, or `None` when
/// the header cannot be read the way a browser reads it (so it is dropped rather than guessed
/// at).
///
/// RFC 6265bis §5.6: a cookie with a control character other than HTAB is ignored (a header
/// value cannot hold ASCII ones; C1 controls are refused here as well); the
/// name-value pair is the text before the first `;`; the name is what precedes its first `=`
/// (with none, the name is empty and the whole pair is the value); both are trimmed of spaces and
/// tabs. A nameless cookie goes back as its bare value (§5.8.3), which the server reads up to its
/// first `=` as a name: `=th-csrf=X` and `th-csrf=X` arrive alike. Bytes that are not UTF-8 are
/// refused outright: browsers decode them in different ways, so no one name can be checked.
fn stored_cookie_name(value: &HeaderValue) -> Option<&str> {
    let text = std::str::from_utf8(value.as_bytes()).ok()?;
    if text.chars().any(|c| c.is_control() && c != '\t') {
        return None;
    }
    let pair = text.split(';').next().unwrap_or("");
    let wsp: &[char] = &[' ', '\t'];
    let (name, value) = match pair.split_once('=') {
        Some((name, value)) => (name.trim_matches(wsp), value.trim_matches(wsp)),
        None => ("", pair.trim_matches(wsp)),
    };
    if !name.is_empty() {
        return Some(name);
    }
    Some(value.split('=').next().unwrap_or("").trim_matches(wsp))
}

/// Whether a browser would send a cookie of this name back to us under one of our names:
/// [`CookiePolicy::is_ours`] (our prefix in any case, bare or behind `__Host-`/`__Secure-` in any
/// case), also behind `__Host-Http-` (the prefix browsers now enforce for HttpOnly cookies),
/// which `is_ours` does not strip because we never issue it. Browsers compare names exactly but recognise those prefixes
/// case-insensitively; ignoring case errs towards dropping a cookie, never towards letting one of
/// ours be planted.
fn looks_ours(policy: &CookiePolicy, name: &str) -> bool {
    const HOST_HTTP: &str = "__Host-Http-";
    let behind_host_http = name
        .get(..HOST_HTTP.len())
        .filter(|head| head.eq_ignore_ascii_case(HOST_HTTP))
        .map(|_| &name[HOST_HTTP.len()..]);
    policy.is_ours(name) || behind_host_http.is_some_and(|rest| policy.is_ours(rest))
}

/// Hop-by-hop names listed in a response's `Connection` header.
pub fn response_connection_listed(headers: &HeaderMap) -> Vec<String> {
    connection_listed(headers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn policy() -> CookiePolicy {
        let text = crate::config::test_toml("", crate::config::TEST_PROVIDER);
        let config = Config::from_toml(&text, Vec::new()).expect("valid");
        CookiePolicy::for_config(&config)
    }

    fn set_cookie(bytes: &[u8]) -> HeaderValue {
        HeaderValue::from_bytes(bytes).expect("a header value")
    }

    fn kept(state: &CookiePolicy, name: &str, value: &HeaderValue, allowed: &[HeaderName]) -> bool {
        let name = HeaderName::from_bytes(name.as_bytes()).expect("name");
        keep_response_header(&name, value, &[], state, allowed)
    }

    #[test]
    fn set_cookies_a_browser_would_store_under_our_names_are_dropped() {
        let state = policy();
        for planted in [
            &b"th-csrf=X; Path=/"[..],
            b"  th-at = X",
            b"\tth-at\t=X",
            b"=th-csrf=X; Path=/",
            b" = th-csrf=X",
            b"th-csrf",
            b"th-csrf; Path=/",
            b"TH-at=X",
            b"Th-Auth=X",
            // Browser-enforced prefixes are recognised in any case (RFC 6265bis §4.1.3).
            b"__host-th-at=X; Path=/; Secure",
            b"__Secure-TH-csrf=X",
            b"__HOST-Th-Auth=X",
            b"__SeCuRe-th-id=X; Path=/oauth-agent",
            b"__Host-Http-th-at=X",
            b"__host-http-TH-csrf=X",
            b"=__Host-th-csrf=X",
            // Not valid UTF-8, or a control character: no one reading to check.
            b"th-at=\xff\xfe",
            b"\xc3th-at=X",
            b"x=caf\xe9",
            b"ok=a\xc2\x85b",
        ] {
            assert!(
                !kept(&state, "set-cookie", &set_cookie(planted), &[]),
                "{}",
                String::from_utf8_lossy(planted)
            );
        }
        for foreign in [
            &b"upstream-session=1; Path=/"[..],
            b"th=1",
            b"thx-at=1",
            b"session=th-at=1",
            b"=upstream=1",
            b"flag",
            b"x=caf\xc3\xa9; Path=/",
            b"a=1;\tHttpOnly",
            b"__Host-upstream=1; Path=/; Secure",
            b"__secure-thx-at=1",
            b"__Host-th=1",
        ] {
            assert!(
                kept(&state, "set-cookie", &set_cookie(foreign), &[]),
                "{}",
                String::from_utf8_lossy(foreign)
            );
        }
    }

    #[test]
    fn browser_cookie_names_follow_rfc_6265bis() {
        let name = |b: &[u8]| stored_cookie_name(&set_cookie(b)).map(String::from);
        assert_eq!(name(b" a = 1 ; Path=/").as_deref(), Some("a"));
        assert_eq!(name(b"=b=2").as_deref(), Some("b"));
        assert_eq!(name(b"bare; Secure").as_deref(), Some("bare"));
        assert_eq!(name(b"a=b=c").as_deref(), Some("a"));
        assert_eq!(name(b"\xe2\x82\xac=1").as_deref(), Some("\u{20ac}"));
        assert_eq!(name(b"a=\xff"), None);
        assert_eq!(name(b"a=1\xc2\x9b"), None);
    }

    #[test]
    fn front_server_instructions_stay_behind_unless_the_route_allows_them() {
        let state = policy();
        let v = HeaderValue::from_static("/internal/secret.pdf");
        for name in [
            "x-accel-redirect",
            "x-accel-buffering",
            "x-accel-expires",
            "x-sendfile",
            "x-lighttpd-send-file",
        ] {
            assert!(!kept(&state, name, &v, &[]), "{name}");
        }
        assert!(kept(
            &state,
            "x-accel-other-thing",
            &v,
            &[HeaderName::from_static("x-accel-other-thing")]
        ));
        assert!(kept(&state, "x-accelerated", &v, &[]));
        assert!(kept(&state, "content-type", &v, &[]));
    }

    #[test]
    fn instructing_request_headers_stay_behind_unless_the_route_allows_them() {
        let state = policy();
        let mut incoming = HeaderMap::new();
        for name in INSTRUCTING_REQUEST_HEADERS {
            incoming.insert(
                HeaderName::from_static(name),
                HeaderValue::from_static("/admin"),
            );
        }
        incoming.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        let names = |allowed: &[HeaderName]| -> Vec<String> {
            upstream_request_headers(
                &incoming,
                &state.read(&incoming),
                &state,
                false,
                allowed,
                &header::AUTHORIZATION,
            )
            .into_iter()
            .map(|(n, _)| n.as_str().to_string())
            .collect()
        };
        assert_eq!(names(&[]), ["accept"]);
        let mut allowed = names(&[HeaderName::from_static("x-real-ip")]);
        allowed.sort();
        assert_eq!(allowed, ["accept", "x-real-ip"]);
    }

    #[test]
    fn a_routes_token_header_never_comes_from_the_client() {
        let state = policy();
        let mut incoming = HeaderMap::new();
        let pat = HeaderName::from_static("x-pat-jwt");
        incoming.insert(pat.clone(), HeaderValue::from_static("Bearer forged"));
        incoming.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer c"));
        let names = |keep: bool, token_header: &HeaderName| -> Vec<String> {
            let mut n: Vec<String> = upstream_request_headers(
                &incoming,
                &state.read(&incoming),
                &state,
                keep,
                &[],
                token_header,
            )
            .into_iter()
            .map(|(n, _)| n.as_str().to_string())
            .collect();
            n.sort();
            n
        };
        assert!(names(false, &pat).is_empty());
        assert_eq!(names(true, &pat), ["authorization"]);
        assert_eq!(names(false, &header::AUTHORIZATION), ["x-pat-jwt"]);
        assert_eq!(
            names(true, &header::AUTHORIZATION),
            ["authorization", "x-pat-jwt"]
        );
    }
}
