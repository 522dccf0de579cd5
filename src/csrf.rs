//! CSRF protection for state-changing requests: the synchronizer-token pattern on top of the
//! Origin check.
//!
//! The SPA receives the CSRF value in the JSON of `/login/end` and sends it back in the
//! `x-<prefix>-csrf` header; we compare it, in constant time, with the copy sealed in the
//! `-csrf` cookie. Another site can make the browser send our cookies but cannot read the value
//! nor set custom headers without a CORS preflight we refuse.

use crate::cookies::{CookieKind, RequestCookies};
use crate::error::ApiError;
use crate::session::{CsrfCookie, SessionJar};
use actix_web::http::header::HeaderMap;

/// Checks the CSRF header against the sealed cookie; returns the cookie, whose session id the
/// caller compares with the other cookies it opens.
pub fn require_csrf(
    headers: &HeaderMap,
    cookies: &RequestCookies<'_>,
    jar: &SessionJar,
) -> Result<CsrfCookie, ApiError> {
    let header_name = jar.policy().csrf_header();
    let Some(sent) = headers.get(header_name) else {
        return Err(ApiError::Unauthorized(
            "the CSRF header is missing: send the csrf value from login/end in the x-<cookies.prefix>-csrf header (x-th-csrf by default)",
        ));
    };
    let sent = sent.to_str().unwrap_or_default();
    // A session past its lifetime is `session_expired` here too: `/refresh` and every
    // state-changing call check the idle clock in this cookie before anything else.
    let cookie: Option<CsrfCookie> = jar.open(cookies, CookieKind::Csrf).map_err(|e| match e {
        ApiError::SessionExpired => e,
        _ => ApiError::Unauthorized("the CSRF cookie is missing, expired or invalid"),
    })?;
    let Some(cookie) = cookie else {
        return Err(ApiError::Unauthorized(
            "the CSRF cookie is missing; sign in first",
        ));
    };
    if !cookie.token.ct_eq(sent) {
        return Err(ApiError::Unauthorized(
            "the CSRF header does not match the CSRF cookie",
        ));
    }
    Ok(cookie)
}
