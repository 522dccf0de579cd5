//! WebSocket pass-through for routes with `websocket = true`.
//!
//! The upgrade request is authenticated like any proxied request (cookie → Bearer, refresh when
//! due); browsers always send `Origin` on WebSocket handshakes and cookies ride along, so a
//! trusted Origin is required here: it is the only defence against cross-site WebSocket
//! hijacking. We connect to the upstream first, so the subprotocol it picks is the one we agree
//! to, then relay messages both ways until either side closes.

use super::headers::upstream_request_headers;
use super::Relay;
use crate::error::ApiError;
use crate::secret::Token;
use actix_web::cookie::Cookie;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use awc::ws::{Frame, Message as UpstreamMessage};
use futures_util::{SinkExt, StreamExt};

/// Largest message relayed in either direction.
const MAX_FRAME: usize = 1024 * 1024;

/// Whether the request asks for a WebSocket upgrade.
pub fn is_upgrade(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

pub async fn bridge(
    req: &HttpRequest,
    body: web::Payload,
    client: &awc::Client,
    relay: &Relay<'_>,
    bearer: &Token,
    cookies: Vec<Cookie<'static>>,
) -> HttpResponse {
    let found = relay.found;
    if req.headers().get(header::ORIGIN).is_none() {
        return ApiError::Unauthorized("a WebSocket upgrade must carry a trusted Origin header")
            .error_response();
    }
    let mut upstream = client
        .ws(found.upstream_url.as_str())
        .max_frame_size(MAX_FRAME)
        .set_header(header::AUTHORIZATION, format!("Bearer {}", bearer.expose()));
    let mut previous: Option<header::HeaderName> = None;
    for (name, value) in upstream_request_headers(
        req.headers(),
        relay.cookies,
        relay.policy,
        false,
        &found.route.allow_headers,
    ) {
        let n = name.as_str();
        // The handshake's own headers are awc's to write.
        if n.starts_with("sec-websocket-") && n != "sec-websocket-protocol" || n == "origin" {
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
    for (name, value) in super::forward::forwarded_headers(req, relay.server) {
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

    // Client → upstream.
    actix_web::rt::spawn(async move {
        use actix_ws::Message;
        while let Some(Ok(msg)) = messages.next().await {
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
    actix_web::rt::spawn(async move {
        while let Some(Ok(frame)) = from_upstream.next().await {
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
