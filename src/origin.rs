//! Origin checks and CORS, for the agent endpoints (as a middleware) and the proxy (called
//! directly).
//!
//! Cookies are sent by the browser whoever asks, so the `Origin` header is what tells our SPA
//! from any other site. A present Origin must be trusted, everywhere. The agent's state-changing
//! endpoints also require one (browsers always send it on cross-origin and on same-origin
//! non-GET requests); GETs may omit it, because browsers omit it on same-origin GETs. CORS
//! headers are only ever sent for trusted origins, also on error responses, so the SPA can read
//! our JSON errors.
//!
//! Fetch metadata (`Sec-Fetch-Site`) closes the gap GETs leave: a GET needs neither Origin nor
//! CSRF header, yet it may refresh a session or read an API for a page of another site whenever
//! the cookies are not `SameSite=Strict` (or the other site is a sibling subdomain, which is the
//! same *site*). Browsers say where a request comes from, so a request they mark as coming from
//! elsewhere must carry a trusted Origin.
//!
//! Preflights are parsed in time linear in their size, and refused past small caps before any
//! work, so a huge `Access-Control-Request-Headers` cannot burn a worker's CPU.

use crate::config::WebConfig;
use crate::error::ApiError;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{HttpResponse, ResponseError};

/// A request's standing as far as its `Origin` header goes.
#[derive(Debug, Clone)]
pub enum Origin {
    /// A trusted origin (its value, to echo in CORS headers).
    Trusted(HeaderValue),
    /// No Origin header.
    Absent,
}

impl Origin {
    /// Judges the request: a present but untrusted Origin (including `null`) is refused;
    /// `require_for_unsafe` also refuses an absent one on methods other than GET and HEAD; and a
    /// request the browser marks as `Sec-Fetch-Site: cross-site` or `same-site` is refused
    /// unless its Origin is trusted (see [`sent_from_elsewhere`]).
    pub fn check(
        method: &Method,
        headers: &HeaderMap,
        web: &WebConfig,
        require_for_unsafe: bool,
    ) -> Result<Self, ApiError> {
        let origin = Self::check_origin(method, headers, web, require_for_unsafe)?;
        if matches!(origin, Origin::Absent) && sent_from_elsewhere(headers) {
            return Err(ApiError::Unauthorized(
                "the browser marked this request as sent by another site (Sec-Fetch-Site) and it has no trusted Origin",
            ));
        }
        Ok(origin)
    }

    /// For the server-side login's top-level navigations (`GET /login`, the callback): a
    /// present Origin must be trusted, but fetch metadata is not asked, because the provider's
    /// redirect to the callback, and a link to `/login` on another page, are cross-site by
    /// nature. What protects these endpoints is the login cookie that binds the callback to the
    /// browser that started the login (docs/security.md, login CSRF).
    pub fn check_navigation(headers: &HeaderMap, web: &WebConfig) -> Result<Self, ApiError> {
        Self::check_origin(&Method::GET, headers, web, false)
    }

    fn check_origin(
        method: &Method,
        headers: &HeaderMap,
        web: &WebConfig,
        require_for_unsafe: bool,
    ) -> Result<Self, ApiError> {
        match headers.get(header::ORIGIN) {
            None if require_for_unsafe && !matches!(*method, Method::GET | Method::HEAD) => {
                Err(ApiError::Unauthorized(
                    "this request has no Origin header; only the trusted web origins may call this endpoint",
                ))
            }
            None => Ok(Origin::Absent),
            Some(value) => match value.to_str() {
                Ok(text) if web.trusted_origins.contains(text) => {
                    Ok(Origin::Trusted(value.clone()))
                }
                _ => Err(ApiError::Unauthorized(
                    "the request's Origin is not one of web.trusted_origins",
                )),
            },
        }
    }

    /// Adds the CORS response headers when the origin is trusted and CORS is on.
    pub fn decorate(&self, headers: &mut HeaderMap, web: &WebConfig) {
        if let (true, Origin::Trusted(o)) = (web.cors, self) {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o.clone());
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
            headers.append(header::VARY, HeaderValue::from_static("Origin"));
        }
    }
}

/// Fetch Metadata (W3C "Fetch Metadata Request Headers" §2.1): whether the browser says this
/// request was initiated by a page of another origin's *site* (`cross-site`) or of a sibling
/// origin on the same site (`same-site`, e.g. another subdomain, which `SameSite` cookies do not
/// stop). `same-origin`, `none` (the user typed the URL or used a bookmark) and no header (an
/// older browser or not a browser) pass; so does a value the specification does not define,
/// since no browser sends one and a page cannot make a browser send one.
fn sent_from_elsewhere(headers: &HeaderMap) -> bool {
    // A `HeaderName`, not a `&str`: a name given as text is parsed, and allocated, on every
    // lookup, and this one runs on every proxied request (issue 17).
    const SEC_FETCH_SITE: header::HeaderName = header::HeaderName::from_static("sec-fetch-site");
    headers.get_all(SEC_FETCH_SITE).any(|v| {
        let v = v.as_bytes();
        v.eq_ignore_ascii_case(b"cross-site") || v.eq_ignore_ascii_case(b"same-site")
    })
}

/// Most header names a preflight may ask for: SPAs send a handful.
pub const MAX_REQUESTED_HEADERS: usize = 64;
/// Longest header name a preflight may ask for.
pub const MAX_REQUESTED_HEADER_NAME: usize = 64;
/// Longest `Access-Control-Request-Headers` (all its lines together): the caps above, with room
/// for separators, fit well inside.
pub const MAX_REQUEST_HEADERS_BYTES: usize = 4096;

/// The header names a preflight asks for, lowercased and without duplicates, in the order
/// asked. The value is a comma-separated list of header names (Fetch §3.2.2 "CORS-preflight
/// request"; list syntax RFC 9110 §5.6.1: optional whitespace around commas, empty elements
/// ignored). A name outside the alphabet we allow (`A-Z a-z 0-9 - _`) is left out, so the
/// browser refuses the request itself. Runs in time linear in the value, and refuses (400) a
/// value over [`MAX_REQUEST_HEADERS_BYTES`], more than [`MAX_REQUESTED_HEADERS`] names, a name
/// over [`MAX_REQUESTED_HEADER_NAME`] bytes, or a value that is not visible ASCII, before any
/// other work.
pub fn requested_headers(headers: &HeaderMap) -> Result<Vec<String>, ApiError> {
    let too_big = || {
        ApiError::InvalidRequest(format!(
            "Access-Control-Request-Headers must list at most {MAX_REQUESTED_HEADERS} header names of at most {MAX_REQUESTED_HEADER_NAME} bytes ({MAX_REQUEST_HEADERS_BYTES} bytes in all)"
        ))
    };
    let values = headers.get_all(header::ACCESS_CONTROL_REQUEST_HEADERS);
    let total: usize = values.clone().map(|v| v.len()).sum();
    if total > MAX_REQUEST_HEADERS_BYTES {
        return Err(too_big());
    }
    let mut names: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for value in values {
        let text = value.to_str().map_err(|_| {
            ApiError::InvalidRequest("Access-Control-Request-Headers is not visible ASCII".into())
        })?;
        for name in text.split(',').map(|n| n.trim_matches([' ', '\t'])) {
            if name.is_empty() {
                continue;
            }
            if name.len() > MAX_REQUESTED_HEADER_NAME {
                return Err(too_big());
            }
            if !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                continue;
            }
            let name = name.to_ascii_lowercase();
            if seen.insert(name.clone()) {
                names.push(name);
                if names.len() > MAX_REQUESTED_HEADERS {
                    return Err(too_big());
                }
            }
        }
    }
    Ok(names)
}

/// The answer to a CORS preflight: 204, with CORS headers only for a trusted origin. Requested
/// headers are allowed when they are well-formed header names (the SPA's own API headers), and
/// our CSRF header always is. A request-headers list over the caps of [`requested_headers`] is
/// `400 invalid_request`, whoever asks.
pub fn preflight(headers: &HeaderMap, web: &WebConfig, csrf_header: &str) -> HttpResponse {
    let requested = match requested_headers(headers) {
        Ok(r) => r,
        Err(e) => {
            tracing::info!(reason = %e, "preflight refused");
            return e.error_response();
        }
    };
    let mut resp = HttpResponse::NoContent().finish();
    let Ok(origin @ Origin::Trusted(_)) = Origin::check(&Method::GET, headers, web, false) else {
        return resp;
    };
    if !web.cors {
        return resp;
    }
    let h = resp.headers_mut();
    origin.decorate(h, web);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE"),
    );
    let always = ["content-type", csrf_header];
    let mut allowed = always.join(", ");
    for name in requested.iter().filter(|n| !always.contains(&n.as_str())) {
        allowed.push_str(", ");
        allowed.push_str(name);
    }
    if let Ok(v) = HeaderValue::from_str(&allowed) {
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
    }
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    resp
}

/// The agent endpoints' middleware: preflights, Origin enforcement, CORS headers.
pub async fn origin_policy(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let Some(state) = crate::state::of(req.request()) else {
        tracing::error!("application state missing");
        let resp = ApiError::Internal.error_response();
        return Ok(req.into_response(resp).map_into_right_body());
    };
    if req.method() == Method::OPTIONS {
        let resp = preflight(
            req.headers(),
            &state.config.web,
            state.jar.policy().csrf_header(),
        );
        return Ok(req.into_response(resp).map_into_right_body());
    }
    let origin = match Origin::check(req.method(), req.headers(), &state.config.web, true) {
        Ok(o) => o,
        Err(e) => {
            tracing::info!(path = %req.path(), reason = %e, "request refused by origin policy");
            return Ok(req.into_response(e.error_response()).map_into_right_body());
        }
    };
    let mut res = next.call(req).await?;
    origin.decorate(res.headers_mut(), &state.config.web);
    Ok(res.map_into_left_body())
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderName;

    fn map(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(
                HeaderName::from_static(name),
                HeaderValue::from_str(value).expect("valid header value"),
            );
        }
        h
    }

    fn requested(value: &str) -> Result<Vec<String>, ApiError> {
        requested_headers(&map(&[("access-control-request-headers", value)]))
    }

    #[test]
    fn requested_headers_are_lowercased_deduplicated_and_trimmed() {
        let names = requested(" X-Trace ,content-type,,x-trace,\tAuthorization ,x_y").expect("ok");
        assert_eq!(names, ["x-trace", "content-type", "authorization", "x_y"]);
        assert_eq!(requested("").expect("ok"), Vec::<String>::new());
        assert!(requested_headers(&HeaderMap::new()).expect("ok").is_empty());
    }

    #[test]
    fn malformed_names_are_left_out_not_echoed() {
        let names = requested("x-ok, bad name, x:colon, x/slash").expect("ok");
        assert_eq!(names, ["x-ok"]);
    }

    #[test]
    fn names_over_the_caps_are_refused() {
        let max: Vec<String> = (0..MAX_REQUESTED_HEADERS)
            .map(|i| format!("x-{i}"))
            .collect();
        assert_eq!(
            requested(&max.join(",")).expect("ok").len(),
            MAX_REQUESTED_HEADERS
        );
        let over = format!("{},x-one-more", max.join(","));
        let e = requested(&over).expect_err("too many names");
        assert_eq!(e.code(), "invalid_request");
        // Repeating one name many times is one name, but still bounded by the byte cap.
        assert_eq!(requested(&["x-a"; 500].join(",")).expect("ok"), ["x-a"]);
        assert!(requested(&["x-a"; 2000].join(",")).is_err());
        let long = "x".repeat(MAX_REQUESTED_HEADER_NAME);
        assert!(requested(&long).is_ok());
        assert!(requested(&format!("{long}x")).is_err());
        assert!(requested(&"a,".repeat(MAX_REQUEST_HEADERS_BYTES)).is_err());
    }

    #[test]
    fn the_byte_cap_covers_every_line_of_the_header() {
        let line = "x".repeat(60);
        let lines: Vec<(&'static str, &str)> = (0..100)
            .map(|_| ("access-control-request-headers", line.as_str()))
            .collect();
        assert!(requested_headers(&map(&lines)).is_err());
    }

    #[test]
    fn a_value_that_is_not_visible_ascii_is_refused() {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCESS_CONTROL_REQUEST_HEADERS,
            HeaderValue::from_bytes(b"x-a, \xff").expect("obs-text is a valid header value"),
        );
        assert!(requested_headers(&h).is_err());
    }

    #[test]
    fn fetch_metadata_marks_requests_from_other_sites() {
        for (value, elsewhere) in [
            ("cross-site", true),
            ("same-site", true),
            ("Cross-Site", true),
            ("same-origin", false),
            ("none", false),
            ("something-new", false),
        ] {
            assert_eq!(
                sent_from_elsewhere(&map(&[("sec-fetch-site", value)])),
                elsewhere,
                "{value}"
            );
        }
        assert!(!sent_from_elsewhere(&HeaderMap::new()));
    }
}
