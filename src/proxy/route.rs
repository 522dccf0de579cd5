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
    let upstream_url = match uri.query() {
        Some(q) => format!("{base}{forwarded}?{q}"),
        None => format!("{base}{forwarded}"),
    };
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

fn check_path(path: &str) -> Result<(), ApiError> {
    let encoded_separator = path.as_bytes().windows(3).any(|w| {
        w[0] == b'%'
            && [b"2f", b"5c", b"00"]
                .iter()
                .any(|e| w[1..].eq_ignore_ascii_case(&e[..]))
    });
    let dot_segment = path.split('/').any(|seg| {
        let decoded = percent_decode_str(seg).decode_utf8_lossy();
        decoded == "." || decoded == ".."
    });
    if encoded_separator || dot_segment || path.contains('\\') {
        return Err(ApiError::InvalidRequest(
            "the path has dot segments or encoded separators, which are not forwarded".into(),
        ));
    }
    Ok(())
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
        ] {
            assert!(matches!(url_for(&routes, bad), Some(Err(_))), "{bad}");
        }
        assert!(matches!(url_for(&routes, "/api/a.b/c..d"), Some(Ok(_))));
    }
}
