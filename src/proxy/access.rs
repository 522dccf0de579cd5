//! A route's `auth` mode and `methods`: whether a request is forwarded with the session's
//! token, anonymously, or not at all.
//!
//! A public (`none`) or `optional` route never lets a session cookie be used without the CSRF
//! check: a hostile page that makes the browser send our cookies to an unsafe method must fail
//! there exactly as it would on a required route, even though the upstream gets no token. The
//! check is skipped only when no session cookie was sent, where there is no session to ride.

use crate::config::{RouteAccess, RouteAuth};
use crate::cookies::{CookieKind, RequestCookies};
use crate::csrf::require_csrf;
use crate::error::ApiError;
use crate::refresh::Denied;
use crate::session::SessionJar;
use actix_web::http::header::{self, HeaderMap};
use actix_web::http::Method;
use actix_web::{HttpResponse, ResponseError};

/// How a request on a route is forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// With the session's token (refused when there is no usable session).
    Session,
    /// Without a token or identity headers.
    Anonymous,
}

/// The caller a request is forwarded as, by the route's `auth` mode:
///
/// - `required`: always the session.
/// - `optional`: the session when the access-token cookie was sent. A session that was sent
///   but cannot be used (expired, unreadable) is refused as on a required route, never
///   downgraded to an anonymous call: the SPA gets the `401` that tells it to refresh or sign
///   in, rather than an answer for nobody that looks like an answer for its user.
/// - `none`, and `optional` without an access-token cookie: anonymous, after the CSRF check
///   for methods that may change state whenever one of our session cookies was sent (RFC 9110
///   §9.2.1 safe methods are exempt, as on every route).
pub fn caller(
    auth: RouteAuth,
    method: &Method,
    headers: &HeaderMap,
    cookies: &RequestCookies<'_>,
    jar: &SessionJar,
) -> Result<Caller, Denied> {
    if auth == RouteAuth::Required
        || (auth == RouteAuth::Optional && cookies.has(CookieKind::AccessToken))
    {
        return Ok(Caller::Session);
    }
    let safe = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    let session_sent = cookies.has(CookieKind::AccessToken) || cookies.has(CookieKind::Csrf);
    if !safe && session_sent {
        require_csrf(headers, cookies, jar)?;
    }
    Ok(Caller::Anonymous)
}

/// Marks an anonymous answer of an `optional` route `Vary: Cookie` (RFC 9110 §12.5.5): the same
/// URL answers differently with a session, so no cache may hand this answer to a signed-in
/// browser. (Answers with a session are made private where they are forwarded.)
pub fn anonymous_answer(auth: RouteAuth, headers: &mut HeaderMap) {
    if auth != RouteAuth::Optional {
        return;
    }
    let varies = headers
        .get_all(header::VARY)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|v| v == "*" || v.eq_ignore_ascii_case("cookie"));
    if !varies {
        headers.append(header::VARY, header::HeaderValue::from_static("Cookie"));
    }
}

/// The `405 method_not_allowed` for a method the route does not list, with `Allow` (RFC 9110
/// §15.5.6); `None` when the method is allowed.
pub fn method_refusal(access: &RouteAccess, method: &Method) -> Option<HttpResponse> {
    if access.allows(method) {
        return None;
    }
    let mut resp = ApiError::MethodNotAllowed(method.to_string()).error_response();
    resp.headers_mut()
        .insert(header::ALLOW, access.allow_header());
    Some(resp)
}
