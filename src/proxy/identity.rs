//! Identity headers: the user's ID-token claims in headers a route names (`identity_headers`),
//! for APIs that do not parse JWTs.
//!
//! An upstream that reads `x-user-sub` trusts whoever can set it, so the client can never set
//! one of a route's identity headers: every name is removed from the client's request on every
//! call of the route, with a session or without (`optional` and `none` routes too), before ours
//! are added. The claims come from the session's sealed ID token, verified when it was received
//! (OIDC Core §3.1.3.7), and only from the same session as the access token forwarded with them
//! ([`same_session`]), so spliced cookies cannot pair one user's token with another's identity.

use super::AssertionSigner;
use crate::config::{RouteAccess, RouteConfig};
use crate::cookies::{CookieKind, RequestCookies};
use crate::error::ApiError;
use crate::session::{same_session, AccessTokenCookie, IdTokenCookie, SessionJar};
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value};

/// The identity headers for a request forwarded with the session's token. Empty when the route
/// has none, or the session holds no readable ID token (a plain OAuth 2.0 provider, a session
/// from before the route had identity headers, or a cookie sealed with a key since dropped):
/// the upstream then gets no identity header, never a stale or guessed one. A claim the token
/// lacks, or whose value is not header text ([`claim_value`]), leaves its header out.
///
/// With `assertion_header`, the route also gets an assertion signed by `signer` for the ID
/// token's `sub`, with the route's upstream as audience (left out like the rest without an ID
/// token; `500` when the key could not be made at start).
pub fn values(
    route: &RouteConfig,
    jar: &SessionJar,
    cookies: &RequestCookies<'_>,
    signer: Option<&AssertionSigner>,
) -> Result<Vec<(HeaderName, HeaderValue)>, ApiError> {
    let access = &route.access;
    if !access.reads_id_token() {
        return Ok(Vec::new());
    }
    let Some(id) = jar.readable::<IdTokenCookie>(cookies, CookieKind::IdToken) else {
        return Ok(Vec::new());
    };
    // No readable access-token cookie: the token check that follows refuses the request.
    let Some(at) = jar.readable::<AccessTokenCookie>(cookies, CookieKind::AccessToken) else {
        return Ok(Vec::new());
    };
    same_session(&at.sid, &id.sid)?;
    // Verified when received and sealed since: reading the payload needs no signature check.
    let claims = jsonwebtoken::dangerous::insecure_decode::<Map<String, Value>>(id.token.expose())
        .map_err(|e| {
            tracing::error!(error = %e, "a sealed ID token could not be decoded");
            ApiError::Internal
        })?
        .claims;
    let mut out = Vec::new();
    for (name, claim) in &access.identity_headers {
        match claims.get(claim).and_then(claim_value) {
            Some(v) => out.push((name.clone(), v)),
            None => {
                tracing::debug!(header = %name, claim, "claim absent or not header text; header left out")
            }
        }
    }
    if let Some(name) = &access.assertion_header {
        let Some(signer) = signer else {
            return Err(ApiError::Internal);
        };
        if let Some(sub) = claims.get("sub").and_then(Value::as_str) {
            let token = signer
                .sign(sub, route.upstream.as_str(), jar.clock().now())
                .map_err(|e| {
                    tracing::error!(error = %e, "an assertion could not be signed");
                    ApiError::Internal
                })?;
            let value = HeaderValue::from_str(&token).map_err(|_| ApiError::Internal)?;
            out.push((name.clone(), value));
        }
    }
    Ok(out)
}

/// A claim as a header value: a string as it is, a number or boolean as its JSON text. Left out
/// (`None`): objects, arrays and null, and strings the upstream would not read back unchanged:
/// with control characters (CR and LF would start another header; RFC 9110 §5.5), or with
/// spaces or tabs at either end (trimmed by every parser). Other non-ASCII text passes as its
/// UTF-8 bytes.
fn claim_value(value: &Value) -> Option<HeaderValue> {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => return None,
    };
    if text.chars().any(char::is_control) || text.trim_matches([' ', '\t']) != text {
        return None;
    }
    HeaderValue::from_str(&text).ok()
}

/// Replaces, in the headers going upstream, whatever the client sent under the route's
/// identity names with `values`.
pub fn apply(headers: &mut HeaderMap, access: &RouteAccess, values: &[(HeaderName, HeaderValue)]) {
    for (name, _) in &access.identity_headers {
        headers.remove(name);
    }
    if let Some(name) = &access.assertion_header {
        headers.remove(name);
    }
    for (name, value) in values {
        headers.append(name.clone(), value.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn claims_become_header_values_only_when_they_read_back_unchanged() {
        let v = |value: Value| claim_value(&value).map(|h| h.as_bytes().to_vec());
        assert_eq!(v(json!("alice")), Some(b"alice".to_vec()));
        assert_eq!(v(json!("")), Some(b"".to_vec()));
        assert_eq!(v(json!(42)), Some(b"42".to_vec()));
        assert_eq!(v(json!(true)), Some(b"true".to_vec()));
        assert_eq!(v(json!("Jos\u{e9}")), Some("Jos\u{e9}".as_bytes().to_vec()));
        for bad in [
            json!("a\r\nx-admin: 1"),
            json!("a\nb"),
            json!("a\u{0}"),
            json!("a\u{7f}"),
            json!("a\u{85}"),
            json!(" a"),
            json!("a\t"),
            json!(["a"]),
            json!({"a": 1}),
            Value::Null,
        ] {
            assert_eq!(v(bad.clone()), None, "{bad}");
        }
    }
}
