//! WebSocket pass-through for routes with `websocket = true`.
//!
//! The upgrade request is authenticated like any proxied request (cookie → Bearer, refresh when
//! due); browsers always send `Origin` on WebSocket handshakes and cookies ride along, so a
//! trusted Origin is required here: it is the only defence against cross-site WebSocket
//! hijacking. We connect to the upstream first, so the subprotocol it picks is the one we agree
//! to, then relay messages both ways until either side closes.
//!
//! A connection lives no longer than the access token it was opened with ([`Usable::until`]):
//! the upstream checked that token once, at the handshake, and would otherwise keep serving the
//! user long after the session ended (logout, a revoked grant, an expired cookie). It cannot be
//! refreshed in place either: new tokens live in cookies, and after the handshake there is no
//! HTTP response left to carry a `Set-Cookie`. So at the token's expiry both sides are closed,
//! the browser's with [`SESSION_EXPIRED`] (4401, "session expired: reconnect"); the SPA opens a
//! new connection, whose handshake refreshes the tokens like any proxied request, or is refused
//! with 401 when the session is over.

use super::headers::upstream_request_headers;
use super::Relay;
use crate::clock::Clock;
use crate::error::ApiError;
use crate::refresh::Usable;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use awc::ws::{CloseCode, CloseReason, Frame, Message as UpstreamMessage};
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;

/// Largest message relayed in either direction.
const MAX_FRAME: usize = 1024 * 1024;

/// How long, after closing at expiry, the upstream has to answer our close frame before the
/// connection is dropped (RFC 6455 §7.1.1).
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// The close code sent to the browser when the access token a connection was opened with
/// expires. RFC 6455 §7.4.2 leaves 4000-4999 to applications; 4401 echoes HTTP 401 and is not a
/// code a browser or proxy sends on its own, so the SPA can tell "reconnect" from a failure.
pub const SESSION_EXPIRED: u16 = 4401;

/// The close reason sent with [`SESSION_EXPIRED`].
pub const SESSION_EXPIRED_REASON: &str = "session expired: reconnect";

/// The close frame for the browser at the token's expiry.
fn session_expired() -> CloseReason {
    CloseReason {
        code: CloseCode::Other(SESSION_EXPIRED),
        description: Some(SESSION_EXPIRED_REASON.to_string()),
    }
}

/// The close frame for the upstream at the token's expiry: from its side this client is going
/// away (RFC 6455 §7.4.1, 1001).
fn going_away() -> CloseReason {
    CloseReason {
        code: CloseCode::Away,
        description: Some("access token expired".to_string()),
    }
}

/// Whether the request asks for a WebSocket upgrade.
pub fn is_upgrade(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Opens the upstream connection with `usable`'s token, answers the browser's upgrade (with
/// `usable`'s cookies when the handshake refreshed), and relays until either side closes or the
/// token expires.
pub async fn bridge(
    req: &HttpRequest,
    body: web::Payload,
    client: &awc::Client,
    relay: &Relay<'_>,
    usable: Usable,
    clock: &Clock,
) -> HttpResponse {
    let found = relay.found;
    let Usable {
        access_token: bearer,
        cookies,
        until,
        ..
    } = usable;
    if req.headers().get(header::ORIGIN).is_none() {
        return ApiError::Unauthorized("a WebSocket upgrade must carry a trusted Origin header")
            .error_response();
    }
    let Ok(token_value) = found.route.token_format.value(&bearer) else {
        tracing::error!("the access token is not a valid header value");
        return ApiError::Internal.error_response();
    };
    let mut upstream = client
        .ws(found.upstream_url.as_str())
        .max_frame_size(MAX_FRAME)
        .set_header(found.route.token_header.clone(), token_value);
    let mut previous: Option<header::HeaderName> = None;
    for (name, value) in upstream_request_headers(
        req.headers(),
        relay.cookies,
        relay.policy,
        false,
        &found.route.allow_headers,
        &found.route.token_header,
    ) {
        let n = name.as_str();
        // The handshake's own headers are awc's to write.
        if n.starts_with("sec-websocket-") && n != "sec-websocket-protocol" || n == "origin" {
            continue;
        }
        if found.route.access.is_identity_header(&name) {
            continue;
        }
        // A name's first value replaces awc's default (User-Agent); its further values join it.
        upstream = if previous.as_ref() == Some(&name) {
            upstream.header(name, value)
        } else {
            previous = Some(name.clone());
            upstream.set_header(name, value)
        };
    }
    for (name, value) in &relay.identity {
        upstream = upstream.header(name.clone(), value.clone());
    }
    for (name, value) in super::forward::forwarded_headers(req, relay.server)
        .into_iter()
        .flatten()
    {
        upstream = upstream.set_header(name, value);
    }
    for (name, value) in crate::telemetry::trace_headers() {
        upstream = upstream.set_header(name, value);
    }
    let (handshake, framed) = match upstream.connect().await {
        Ok(ok) => ok,
        Err(e) => {
            tracing::warn!(route = %found.route.path.as_str(), error = %e, "upstream WebSocket handshake failed");
            return ApiError::UpstreamUnavailable.error_response();
        }
    };
    let chosen = handshake
        .headers()
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let protocols: Vec<&str> = chosen.iter().map(String::as_str).collect();
    let (mut response, mut session, messages) =
        match actix_ws::handle_with_protocols(req, body, &protocols) {
            Ok(ok) => ok,
            Err(e) => return e.error_response(),
        };
    let mut messages = messages.max_frame_size(MAX_FRAME);
    let (mut to_upstream, mut from_upstream) = framed.split();
    let route = found.route.path.as_str().to_string();

    // Each direction ends at the token's expiry on its own timer (on the app's clock), so
    // neither waits for a peer that stays silent: the browser's close frame ends its response,
    // and the upstream connection is dropped once it answered our close (or after CLOSE_GRACE).

    // Client → upstream.
    let expiry = expiry_timer(clock.clone(), until);
    actix_web::rt::spawn(async move {
        use actix_ws::Message;
        tokio::pin!(expiry);
        loop {
            let msg = tokio::select! {
                biased;
                () = &mut expiry => {
                    let _ = to_upstream.send(UpstreamMessage::Close(Some(going_away()))).await;
                    return;
                }
                msg = messages.next() => msg,
            };
            let Some(Ok(msg)) = msg else {
                break;
            };
            let out = match msg {
                Message::Text(t) => UpstreamMessage::Text(t),
                Message::Binary(b) => UpstreamMessage::Binary(b),
                Message::Continuation(item) => UpstreamMessage::Continuation(item),
                Message::Ping(b) => UpstreamMessage::Ping(b),
                Message::Pong(b) => UpstreamMessage::Pong(b),
                Message::Close(reason) => {
                    let _ = to_upstream.send(UpstreamMessage::Close(reason)).await;
                    return;
                }
                Message::Nop => continue,
            };
            if to_upstream.send(out).await.is_err() {
                return;
            }
        }
        let _ = to_upstream.send(UpstreamMessage::Close(None)).await;
    });

    // Upstream → client.
    let expiry = expiry_timer(clock.clone(), until);
    actix_web::rt::spawn(async move {
        tokio::pin!(expiry);
        loop {
            let frame = tokio::select! {
                biased;
                () = &mut expiry => {
                    tracing::info!(route = %route, "WebSocket closed: its access token expired");
                    let _ = session.close(Some(session_expired())).await;
                    // The other task sends the upstream our close frame. RFC 6455 §7.1.1: wait
                    // for the upstream's answering close before dropping the connection (for a
                    // short grace at most), or the frame may be cut off unread.
                    let _ = tokio::time::timeout(CLOSE_GRACE, async {
                        while let Some(Ok(frame)) = from_upstream.next().await {
                            if matches!(frame, Frame::Close(_)) {
                                break;
                            }
                        }
                    })
                    .await;
                    return;
                }
                frame = from_upstream.next() => frame,
            };
            let Some(Ok(frame)) = frame else {
                break;
            };
            let sent = match frame {
                Frame::Text(b) => match String::from_utf8(b.to_vec()) {
                    Ok(text) => session.text(text).await,
                    // RFC 6455 §8.1: invalid UTF-8 in a text frame fails the connection.
                    Err(_) => break,
                },
                Frame::Binary(b) => session.binary(b).await,
                Frame::Continuation(item) => session.continuation(item).await,
                Frame::Ping(b) => session.pong(&b).await,
                Frame::Pong(_) => Ok(()),
                Frame::Close(reason) => {
                    let _ = session.close(reason).await;
                    return;
                }
            };
            if sent.is_err() {
                return;
            }
        }
        let _ = session.close(None).await;
    });

    for c in &cookies {
        if let Ok(v) = HeaderValue::from_str(&c.to_string()) {
            response.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    response
}

/// Resolves when the app's clock reaches `until`. A plain tokio sleep would not see the clock
/// moved by a test, nor a wall-clock jump; [`Clock::sleep_until`] sees both.
async fn expiry_timer(clock: Clock, until: i64) {
    clock.sleep_until(until).await;
}
