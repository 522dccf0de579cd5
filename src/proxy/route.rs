//! Which route a request belongs to, and what path it is forwarded to.
//!
//! Matching works on the raw request path, exactly as the upstream will receive it, and refuses
//! paths that could mean something else to the upstream than to us: dot segments (plain or
//! percent-encoded) and encoded slashes or backslashes could walk a request out of its route's
//! prefix once the upstream decodes them.

use crate::config::RouteConfig;
use crate::error::ApiError;
use actix_web::http::Uri;
use percent_encoding::percent_decode_str;

/// A request matched to a route.
#[derive(Debug)]
pub struct RouteMatch<'a> {
    pub route: &'a RouteConfig,
    /// The full upstream URL, query included.
    pub upstream_url: String,
}

/// The longest route whose prefix matches (routes are sorted longest first); `None` when none
/// does, `Some(Err)` when one does but the path is unsafe to forward.
pub fn match_route<'a>(
    routes: &'a [RouteConfig],
    uri: &Uri,
) -> Option<Result<RouteMatch<'a>, ApiError>> {
    let path = uri.path();
    let route = routes.iter().find(|r| r.path.matches(path))?;
    if let Err(e) = check_path(path) {
        return Some(Err(e));
    }
    let forwarded = if route.strip_prefix {
        match &path[route.path.as_str().len()..] {
            "" => "/",
            rest => rest,
        }
    } else {
        path
    };
    let base = route.upstream.as_str().trim_end_matches('/');
    // Pieces appended to a buffer of the final size (`format!` costs more, on every request).
    let query = uri.query();
    let mut upstream_url =
        String::with_capacity(base.len() + forwarded.len() + query.map_or(0, |q| q.len() + 1));
    upstream_url.push_str(base);
    upstream_url.push_str(forwarded);
    if let Some(q) = query {
        upstream_url.push('?');
        upstream_url.push_str(q);
    }
    Some(Ok(RouteMatch {
        route,
        upstream_url,
    }))
}

/// An upstream's redirect to its own address, as the browser must see it (what nginx's default
/// `proxy_redirect` does): the upstream's base URL becomes the route's path again, so
/// `http://orders:9001/v1/7` from a route `/api/orders` with `strip_prefix` becomes
/// `/api/orders/7`. `None` for any other location, which passes unchanged: relative ones already
/// resolve against the browser's URL, and other hosts are none of our business.
pub fn client_location(route: &RouteConfig, location: &str) -> Option<String> {
    let base = route.upstream.as_str().trim_end_matches('/');
    let rest = location.strip_prefix(base)?;
    if !(rest.is_empty() || rest.starts_with(['/', '?', '#'])) {
        // `http://api:9001` must not match `http://api:90012/...`.
        return None;
    }
    Some(match (route.strip_prefix, rest.starts_with('/')) {
        (true, _) => format!("{}{rest}", route.path.as_str()),
        (false, true) => rest.to_string(),
        (false, false) => format!("/{rest}"),
    })
}

/// How many times a segment is percent-decoded while looking for what a server might make of
/// it. Servers that decode twice exist (and Tomcat, Jetty, Spring and IIS have each shipped one);
/// a segment that still changes after this many rounds means nothing legitimate and is refused.
const MAX_DECODES: usize = 3;

/// Refuses a path that another server could read as leaving its route, whatever it does to it:
///
/// - a segment that is `.` or `..` (RFC 3986 §3.3, §5.2.4) as sent, after percent-decoding once,
///   twice or three times (double encoding: `%252e%252e`), or after cutting it at `;` (Tomcat,
///   Jetty and Spring drop path parameters before resolving: `..;/admin`, `%2e%2e%3b`);
/// - `\` anywhere, or an encoded `/`, `\` or NUL at any of those decoding levels (IIS treats `\`
///   as `/`, and many servers decode `%2f` after routing);
/// - bytes that are not UTF-8 once decoded: overlong forms such as `%c0%ae` are how older
///   decoders were led to a `.`;
/// - a `%` not followed by two hex digits (RFC 3986 §2.1): IIS reads `%u002e` as `.`.
///
/// Each segment is decoded at most [`MAX_DECODES`] times, so the work is linear in the path.
fn check_path(path: &str) -> Result<(), ApiError> {
    if is_plain(path) {
        return Ok(());
    }
    check_every_segment(path)
}

/// No `%`, no `\`, no segment that starts with a dot: nothing decodes, so no reading of the
/// path can differ from it, and [`check_every_segment`] would pass it. Most API paths are
/// plain, and this one scan is all they cost (issue 17); the property test
/// `plain_paths_pass_the_full_check` holds the shortcut to the full check.
fn is_plain(path: &str) -> bool {
    !path.starts_with('.')
        && memchr::memchr2(b'%', b'\\', path.as_bytes()).is_none()
        && !path.contains("/.")
}

/// The full check of [`check_path`]: every segment, as sent and decoded.
fn check_every_segment(path: &str) -> Result<(), ApiError> {
    let refuse = || {
        Err(ApiError::InvalidRequest(
            "the path has dot segments, encoded separators or invalid escapes, which are not forwarded"
                .into(),
        ))
    };
    if path.contains('\\') || !escapes_are_well_formed(path) {
        return refuse();
    }
    for raw in path.split('/') {
        let mut form = std::borrow::Cow::Borrowed(raw);
        for round in 0..=MAX_DECODES {
            if is_dot_segment(&form) || (round > 0 && form.contains(['/', '\\', '\0'])) {
                return refuse();
            }
            let decoded: std::borrow::Cow<'_, [u8]> = percent_decode_str(&form).into();
            if *decoded == *form.as_bytes() {
                break;
            }
            if round == MAX_DECODES {
                return refuse();
            }
            match String::from_utf8(decoded.into_owned()) {
                Ok(next) => form = std::borrow::Cow::Owned(next),
                Err(_) => return refuse(),
            }
        }
    }
    Ok(())
}

/// `.` or `..`, once any path parameters (`;…`) are cut off.
fn is_dot_segment(segment: &str) -> bool {
    let name = segment.split(';').next().unwrap_or(segment);
    name == "." || name == ".."
}

/// Every `%` starts a `%XX` escape (RFC 3986 §2.1).
fn escapes_are_well_formed(path: &str) -> bool {
    let bytes = path.as_bytes();
    bytes.iter().enumerate().all(|(i, &b)| {
        b != b'%'
            || bytes
                .get(i + 1..i + 3)
                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RoutePath;
    use std::time::Duration;

    fn route(path: &str, upstream: &str, strip: bool) -> RouteConfig {
        RouteConfig {
            path: RoutePath::parse(path).expect("path"),
            upstream: url::Url::parse(upstream).expect("url"),
            strip_prefix: strip,
            timeout: Duration::from_secs(1),
            allow_bearer: false,
            websocket: false,
            allow_headers: Vec::new(),
            token_header: actix_web::http::header::AUTHORIZATION,
            token_format: crate::config::TokenFormat::default(),
            access: crate::config::RouteAccess::default(),
            narrowing: None,
            provider: None,
        }
    }

    fn url_for(routes: &[RouteConfig], uri: &str) -> Option<Result<String, String>> {
        let uri: Uri = uri.parse().expect("uri");
        match_route(routes, &uri).map(|r| r.map(|m| m.upstream_url).map_err(|e| e.to_string()))
    }

    #[test]
    fn longest_prefix_wins_and_paths_are_rewritten() {
        let routes = vec![
            route("/api/orders", "http://orders:9002/v1", true),
            route("/api", "http://api:9001", false),
        ];
        assert_eq!(
            url_for(&routes, "/api/orders/7?x=1"),
            Some(Ok("http://orders:9002/v1/7?x=1".into()))
        );
        assert_eq!(
            url_for(&routes, "/api/orders"),
            Some(Ok("http://orders:9002/v1/".into()))
        );
        assert_eq!(
            url_for(&routes, "/api/users"),
            Some(Ok("http://api:9001/api/users".into()))
        );
        assert_eq!(url_for(&routes, "/apix"), None);
        assert_eq!(url_for(&routes, "/other"), None);
    }

    #[test]
    fn redirects_to_the_upstream_become_redirects_to_the_route() {
        let stripped = route("/api/orders", "http://orders:9002/v1", true);
        let kept = route("/api", "http://api:9001", false);
        let cases = [
            (
                &stripped,
                "http://orders:9002/v1/7?x=1",
                Some("/api/orders/7?x=1"),
            ),
            (&stripped, "http://orders:9002/v1", Some("/api/orders")),
            (&stripped, "http://orders:9002/v10/7", None),
            (&stripped, "http://orders:9002/other", None),
            (&kept, "http://api:9001/api/users/7", Some("/api/users/7")),
            (&kept, "http://api:9001", Some("/")),
            (&kept, "http://api:9001?next=1", Some("/?next=1")),
            (&kept, "http://api:90012/x", None),
            (&kept, "https://login.example.com/x", None),
            (&kept, "/api/users/7", None),
        ];
        for (route, location, expected) in cases {
            assert_eq!(
                client_location(route, location).as_deref(),
                expected,
                "{location}"
            );
        }
    }

    #[test]
    fn escaping_paths_are_refused() {
        let routes = vec![route("/api", "http://api:9001", true)];
        for bad in [
            "/api/../admin",
            "/api/%2e%2e/admin",
            "/api/%2E./admin",
            "/api/.%2e/admin",
            "/api/./x",
            "/api/a%2fb",
            "/api/a%2F..%2Fb",
            "/api/a%5cb",
            "/api/a%00",
            // Path parameters cut off by Tomcat, Jetty and Spring before resolving.
            "/api/..;/admin",
            "/api/..;jsessionid=x/admin",
            "/api/.;/admin",
            "/api/%2e%2e;/admin",
            "/api/..%3b/admin",
            "/api/%2e%2e%3Bx/admin",
            // Double (and triple) encoding, for servers that decode twice.
            "/api/%252e%252e/admin",
            "/api/%25252e%25252e/admin",
            "/api/..%253b/admin",
            "/api/a%252fb",
            "/api/a%255cb",
            "/api/a%2500",
            // Overlong UTF-8 for `.` and `/`, and other bytes that are not UTF-8.
            "/api/%c0%ae%c0%ae/admin",
            "/api/%e0%80%ae./admin",
            "/api/%c0%af",
            "/api/%ff",
            "/api/%25c0%25ae%25c0%25ae/admin",
            // Not an escape at all: IIS reads `%u002e` as `.`.
            "/api/%u002e%u002e/admin",
            "/api/100%",
            "/api/%zz",
            // A backslash, raw.
            "/api/..\\admin",
        ] {
            let uri = bad.replace('\\', "%5C");
            assert!(matches!(url_for(&routes, &uri), Some(Err(_))), "{bad}");
            assert!(check_path(bad).is_err(), "{bad}");
        }
        for good in [
            "/api/a.b/c..d",
            "/api/...",
            "/api/.well-known/x",
            "/api/a;v=1/b",
            "/api/%2e%2e%2e",
            "/api/caf%C3%A9",
            "/api/100%25off",
            "/api/x%20y",
            "/api",
            "/api/",
        ] {
            assert!(matches!(url_for(&routes, good), Some(Ok(_))), "{good}");
        }
    }

    /// What a lenient upstream might make of a path: percent-decoded 0 to [`MAX_DECODES`] times
    /// (overlong `.` decoded as `.`, other bad bytes replaced), `\` read as `/`, each segment
    /// cut at `;`, dot segments resolved (RFC 3986 §5.2.4). The resolved segments, one result per
    /// reading.
    fn readings(path: &str) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        let mut form = path.to_string();
        for _ in 0..=MAX_DECODES {
            let mut resolved: Vec<String> = Vec::new();
            for segment in form.replace('\\', "/").split('/').skip(1) {
                let name = segment.split(';').next().unwrap_or(segment);
                match name {
                    "." => {}
                    ".." => {
                        resolved.pop();
                    }
                    other => resolved.push(other.to_string()),
                }
            }
            out.push(resolved);
            let overlong_dots = ["%c0%ae", "%C0%AE", "%c0%AE", "%C0%ae", "%e0%80%ae"]
                .iter()
                .fold(form.clone(), |f, o| f.replace(o, "."));
            form = percent_decode_str(&overlong_dots)
                .decode_utf8_lossy()
                .into_owned();
        }
        out
    }

    fn segments(path: &str) -> Vec<String> {
        path.split('/').skip(1).map(String::from).collect()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        /// Whatever the path, if it is forwarded, every reading of the forwarded path stays under
        /// the route: under the upstream's base path, followed by the route's own path unless
        /// it is stripped.
        #[test]
        fn accepted_paths_stay_under_their_route(
            pieces in proptest::collection::vec(
                proptest::sample::select(vec![
                    "/", "/", "a", "b", ".", "..", "%2e", "%2E", "%252e", "%25252e", ";", "%3b",
                    "%253B", "x;y", "%2f", "%252f", "%5c", "%255C", "\\", "%00", "%2500", "%c0%ae",
                    "%C0%AE", "%e0%80%ae", "%c0%af", "%25", "%", "%u002e", "%20", "%41", "%ff",
                    "caf%C3%A9",
                ]),
                0..12,
            ),
            strip in proptest::bool::ANY,
        ) {
            let routes = vec![
                route("/api/orders", "http://orders:9002/v1", strip),
                route("/api", "http://api:9001/base", strip),
            ];
            let tail: String = pieces.concat();
            let path = format!("/api/orders{tail}");
            // A raw backslash cannot travel in a URI; `check_path` sees it as sent on the wire.
            if let Ok(uri) = path.parse::<Uri>() {
                if let Some(Ok(found)) = match_route(&routes, &uri) {
                    let url = found.upstream_url;
                    let upstream_path = url
                        .split_once("://")
                        .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
                        .unwrap_or("/");
                    let mut base = segments(found.route.upstream.path().trim_end_matches('/'));
                    if !strip {
                        base.extend(segments(found.route.path.as_str()));
                    }
                    for reading in readings(upstream_path) {
                        proptest::prop_assert!(
                            reading.starts_with(&base),
                            "{path} forwarded as {upstream_path} reads as /{}",
                            reading.join("/")
                        );
                    }
                }
            }
            if path.contains('\\') {
                proptest::prop_assert!(check_path(&path).is_err());
            }
        }

        /// The shortcut never passes a path the full check refuses, whatever its dots,
        /// escapes, separators and parameters.
        #[test]
        fn plain_paths_pass_the_full_check(path in "[a/.;%2eE5cC\\\\]{0,16}") {
            if is_plain(&path) {
                proptest::prop_assert!(check_every_segment(&path).is_ok(), "{path}");
            }
            proptest::prop_assert_eq!(check_path(&path).is_ok(), check_every_segment(&path).is_ok());
        }
    }
}
