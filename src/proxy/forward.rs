//! Sending the request upstream and streaming the answer back.

use super::headers::{keep_response_header, response_connection_listed, upstream_request_headers};
use super::route::client_location;
use super::{Relay, RouteMatch};
use crate::config::ServerConfig;
use crate::error::ApiError;
use crate::secret::Token;
use actix_web::body::{self, BodyStream, SizedStream};
use actix_web::cookie::Cookie;
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use awc::error::SendRequestError;
use tracing::Instrument;

/// `X-Forwarded-Proto` and `X-Forwarded-Host`, named once: a header looked up by text is parsed
/// and hashed on every request.
const X_FORWARDED_PROTO: header::HeaderName = header::HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: header::HeaderName = header::HeaderName::from_static("x-forwarded-host");

/// `X-Forwarded-For/-Proto/-Host` for the upstream. A client's own values are believed only when
/// the connecting peer is one of `server.trusted_proxies` (then the peer is appended to its
/// chain); from anyone else they are replaced, so a client cannot spoof its address.
pub fn forwarded_headers(
    req: &HttpRequest,
    server: &ServerConfig,
) -> [Option<(header::HeaderName, HeaderValue)>; 3] {
    let peer = req.peer_addr().map(|p| p.ip());
    let trusted = peer.is_some_and(|ip| server.trusts(ip));
    let believed = |name: &header::HeaderName| {
        if trusted {
            req.headers().get(name).and_then(passed_on)
        } else {
            None
        }
    };
    let chain = match believed(&header::X_FORWARDED_FOR) {
        // The trusted chain, then the peer.
        Some(incoming) => peer.and_then(|peer| {
            let incoming = incoming.to_str().ok()?;
            HeaderValue::from_str(&format!("{incoming}, {peer}")).ok()
        }),
        // Only the peer: its text was made when it connected ([`note_peer`]).
        None => match req.conn_data::<PeerAddress>() {
            Some(PeerAddress(value)) => Some(value.clone()),
            None => peer.and_then(|peer| HeaderValue::from_str(&peer.to_string()).ok()),
        },
    };
    let https = match believed(&X_FORWARDED_PROTO)
        .as_ref()
        .map(HeaderValue::as_bytes)
    {
        Some(b"https") => true,
        Some(b"http") => false,
        _ => req.app_config().secure(),
    };
    let host =
        believed(&X_FORWARDED_HOST).or_else(|| req.headers().get(header::HOST).and_then(passed_on));
    [
        chain.map(|v| (header::X_FORWARDED_FOR, v)),
        Some((
            X_FORWARDED_PROTO,
            HeaderValue::from_static(if https { "https" } else { "http" }),
        )),
        host.map(|v| (X_FORWARDED_HOST, v)),
    ]
}

/// A client's header value as it is passed on: text, trimmed, not empty. The value itself
/// (shared with the request, not copied) when it needs no trimming, as it almost always does not.
fn passed_on(value: &HeaderValue) -> Option<HeaderValue> {
    let text = value.to_str().ok()?;
    match text.trim() {
        "" => None,
        trimmed if trimmed.len() == text.len() => Some(value.clone()),
        trimmed => HeaderValue::from_str(trimmed).ok(),
    }
}

/// The connecting peer's address as header text, made once per connection
/// ([`note_peer`]) rather than formatted on every request it carries (issue 17).
struct PeerAddress(HeaderValue);

/// Notes the peer's address on each new connection of the main listener
/// (`HttpServer::on_connect`), for [`forwarded_headers`]. A connection that is not plain TCP
/// gets nothing, and its requests format the address themselves.
pub fn note_peer(connection: &dyn std::any::Any, data: &mut actix_web::dev::Extensions) {
    let Some(stream) = connection.downcast_ref::<actix_web::rt::net::TcpStream>() else {
        return;
    };
    if let Some(value) = stream
        .peer_addr()
        .ok()
        .and_then(|peer| HeaderValue::from_str(&peer.ip().to_string()).ok())
    {
        data.insert(PeerAddress(value));
    }
}

/// The upstream's `Location`, pointed back at the route when it names the upstream itself.
fn relocated(found: &RouteMatch<'_>, value: &HeaderValue) -> Option<HeaderValue> {
    let location = client_location(found.route, value.to_str().ok()?)?;
    HeaderValue::from_str(&location).ok()
}

/// Forwards the request; `bearer`, when set, goes in the route's token header (`Authorization:
/// Bearer` by default), replacing whatever the client sent there.
pub async fn forward(
    req: &HttpRequest,
    body: web::Payload,
    client: &awc::Client,
    relay: &Relay<'_>,
    bearer: Option<&Token>,
    cookies: Vec<Cookie<'static>>,
) -> HttpResponse {
    let found = relay.found;
    let span = crate::telemetry::upstream_span(req.method(), found.route.path.as_str());
    let mut upstream = client
        .request(req.method().clone(), found.upstream_url.as_str())
        .timeout(found.route.timeout);
    {
        let h = upstream.headers_mut();
        // awc starts every request with its own User-Agent; the client's replaces it.
        if req.headers().contains_key(header::USER_AGENT) {
            h.remove(header::USER_AGENT);
        }
        for (name, value) in upstream_request_headers(
            req.headers(),
            relay.cookies,
            relay.policy,
            bearer.is_none() && relay.client_authorization,
            &found.route.allow_headers,
            &found.route.token_header,
        ) {
            h.append(name, value);
        }
        super::identity::apply(h, &found.route.access, &relay.identity);
        if let Some(token) = bearer {
            match found.route.token_format.value(token) {
                Ok(v) => {
                    h.insert(found.route.token_header.clone(), v);
                }
                Err(_) => {
                    tracing::error!("the access token is not a valid header value");
                    return ApiError::Internal.error_response();
                }
            }
        }
        for (name, value) in forwarded_headers(req, relay.server).into_iter().flatten() {
            h.insert(name, value);
        }
        span.in_scope(|| crate::telemetry::inject(h));
    }

    let declared_length = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // RFC 9112 §6.3: a request with neither Content-Length nor Transfer-Encoding has no content
    // (actix-web refuses requests that carry both). It goes upstream without a body rather than
    // as an empty stream: with `Content-Length: 0` for methods that define content (RFC 9110
    // §8.6), with no length at all for the others, as the client sent it.
    let chunked = req.headers().contains_key(header::TRANSFER_ENCODING);
    let defines_content = matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH);
    let sending = match (declared_length, chunked) {
        (Some(len), _) => upstream.send_body(SizedStream::new(len, body)),
        (None, true) => upstream.send_stream(body),
        (None, false) if defines_content => upstream.send(),
        (None, false) => upstream.send_body(body::None::new()),
    };
    let sent = sending.instrument(span).await;
    let response = match sent {
        Ok(r) => r,
        Err(e) => {
            let (error, kind) = match e {
                SendRequestError::Timeout => (ApiError::UpstreamTimeout, "timeout"),
                SendRequestError::Connect(_) => (ApiError::UpstreamUnavailable, "connect"),
                _ => (ApiError::UpstreamUnavailable, "exchange"),
            };
            tracing::warn!(route = %found.route.path.as_str(), kind, error = %e, "upstream call failed");
            return error.error_response();
        }
    };

    let mut builder = HttpResponse::build(response.status());
    let listed = response_connection_listed(response.headers());
    for (name, value) in response.headers() {
        if !keep_response_header(
            name,
            value,
            &listed,
            relay.policy,
            &found.route.allow_headers,
        ) {
            continue;
        }
        let value = if *name == header::LOCATION {
            relocated(found, value).unwrap_or_else(|| value.clone())
        } else {
            value.clone()
        };
        builder.append_header((name.clone(), value));
    }
    for c in cookies {
        builder.cookie(c);
    }
    let length = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // `body`, not `streaming`: the latter invents `Content-Type: application/octet-stream` when
    // the upstream sent none, which on a 304 would overwrite the browser's cached type.
    let mut answer = match length {
        Some(len) => builder.body(SizedStream::new(len, response)),
        None => builder.body(BodyStream::new(response)),
    };
    if bearer.is_some() {
        keep_from_shared_caches(answer.headers_mut());
    }
    answer
}

/// Makes a cookie-authenticated answer private to the browser that asked.
///
/// A shared cache in front of token-handler sees a request with a `Cookie`, not the
/// `Authorization` we add behind it, and RFC 9111 §3.5 keeps shared caches off responses to
/// requests with `Authorization` only: an upstream's `public` or `max-age` would let a CDN serve
/// one user's answer to the next. So a response the upstream made cacheable gets `private`
/// (RFC 9111 §5.2.2.7; `public` and a field-qualified `private="…"`, which shared caches may
/// still store, are dropped, the other directives kept), and `Vary: Cookie` (RFC 9110 §12.5.5),
/// so the browser's own cache does not hand it to the next session in the same browser. One
/// without `Cache-Control` gets `no-store` from the app's default headers; `no-store` stays as
/// it is. A mobile client's own Bearer request is not cookie-authenticated and is left alone.
fn keep_from_shared_caches(headers: &mut HeaderMap) {
    let values: Option<Vec<&str>> = headers
        .get_all(header::CACHE_CONTROL)
        .map(|v| v.to_str().ok())
        .collect();
    let Some(values) = values else {
        // Directives we cannot read: store nothing.
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return;
    };
    let directives: Vec<&str> = values.iter().flat_map(|v| directives(v)).collect();
    if directives.is_empty() {
        // An empty `Cache-Control` says no more than none, which the app answers with no-store.
        if headers.contains_key(header::CACHE_CONTROL) {
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
        return;
    }
    let name = |d: &str| {
        d.split('=')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    };
    if directives.iter().any(|d| name(d) == "no-store") {
        return;
    }
    if !directives.iter().any(|d| d.eq_ignore_ascii_case("private")) {
        let kept = directives
            .iter()
            .filter(|d| !matches!(name(d).as_str(), "public" | "private"));
        let value = std::iter::once("private")
            .chain(kept.copied())
            .collect::<Vec<_>>()
            .join(", ");
        let value =
            HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("private"));
        headers.insert(header::CACHE_CONTROL, value);
    }
    let varies_by_cookie = headers
        .get_all(header::VARY)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|v| v == "*" || v.eq_ignore_ascii_case("cookie"));
    if !varies_by_cookie {
        headers.append(header::VARY, HeaderValue::from_static("Cookie"));
    }
}

/// The comma-separated directives of a `Cache-Control` value, trimmed, with commas inside a
/// quoted argument (`private="a, b"`, RFC 9111 §5.2) kept inside their directive.
fn directives(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(value[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(value[start..].trim());
    out.retain(|d| !d.is_empty());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cached(values: &[&str]) -> (Vec<String>, Vec<String>) {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(
                header::CACHE_CONTROL,
                HeaderValue::from_str(v).expect("value"),
            );
        }
        keep_from_shared_caches(&mut headers);
        let all = |name| {
            headers
                .get_all(name)
                .map(|v| v.to_str().expect("text").to_string())
                .collect()
        };
        (all(header::CACHE_CONTROL), all(header::VARY))
    }

    #[test]
    fn cacheable_answers_become_private_and_vary_by_cookie() {
        for (upstream, want) in [
            (&["public, max-age=600"][..], "private, max-age=600"),
            (&["public", "max-age=600"], "private, max-age=600"),
            (&["max-age=60"], "private, max-age=60"),
            (
                &["no-cache=\"a, public\", Public"],
                "private, no-cache=\"a, public\"",
            ),
            (
                &["private=\"set-cookie\", s-maxage=9"],
                "private, s-maxage=9",
            ),
            (&["Private, max-age=5"], "Private, max-age=5"),
        ] {
            let (cache_control, vary) = cached(upstream);
            assert_eq!(cache_control, [want], "{upstream:?}");
            assert_eq!(vary, ["Cookie"], "{upstream:?}");
        }
        assert_eq!(
            cached(&["no-store, public"]),
            (vec!["no-store, public".into()], vec![])
        );
        // No Cache-Control: the app's default `no-store` follows.
        assert_eq!(cached(&[]), (vec![], vec![]));
        assert_eq!(cached(&[" , "]), (vec!["no-store".into()], vec![]));
    }
}
