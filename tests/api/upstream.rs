//! A real upstream API for the proxy tests: verifies JWT access tokens against the provider's
//! JWKS (issuer, audience, expiry) like a resource server would, and echoes what it received.

use actix_web::http::header;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use futures_util::StreamExt;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{decode, decode_header, DecodingKey, Validation};
use serde_json::{json, Map, Value};
use std::net::TcpListener;
use std::time::Duration;

pub const API_AUDIENCE: &str = "https://api.example.test";

/// The custom header some APIs take their token in (Open Source Cloud's `x-pat-jwt: Bearer …`):
/// when present, it is the token this upstream checks, in place of `Authorization`.
pub const PAT_HEADER: &str = "x-pat-jwt";

struct Verifier {
    /// Every trusted issuer with its keys.
    issuers: Vec<(String, JwkSet)>,
}

impl Verifier {
    /// JWT access tokens are verified against the JWKS; opaque ones are introspected at the
    /// provider (RFC 7662), as a resource server would.
    async fn check(&self, req: &HttpRequest) -> Result<Value, String> {
        let auth = req
            .headers()
            .get(PAT_HEADER)
            .or_else(|| req.headers().get(header::AUTHORIZATION))
            .and_then(|v| v.to_str().ok())
            .ok_or("no Authorization header")?;
        let token = auth.strip_prefix("Bearer ").ok_or("not a Bearer token")?;
        if token.split('.').count() != 3 {
            for (issuer, _) in &self.issuers {
                let answer: Value = awc::Client::default()
                    .post(format!("{issuer}/token/introspection"))
                    .basic_auth("spa-client", "spa-secret")
                    .send_form(&[("token", token)])
                    .await
                    .map_err(|e| e.to_string())?
                    .json()
                    .await
                    .map_err(|e| e.to_string())?;
                if answer["active"] == Value::Bool(true) {
                    return Ok(answer);
                }
            }
            return Err("inactive token".into());
        }
        let header = decode_header(token).map_err(|e| e.to_string())?;
        let kid = header.kid.ok_or("no kid")?;
        let (issuer, jwk) = self
            .issuers
            .iter()
            .find_map(|(iss, jwks)| jwks.find(&kid).map(|k| (iss, k)))
            .ok_or("unknown kid")?;
        let key = DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[API_AUDIENCE]);
        validation.leeway = 0;
        decode::<Value>(token, &key, &validation)
            .map(|d| d.claims)
            .map_err(|e| e.to_string())
    }
}

/// The close frames this upstream's WebSocket endpoint received, in order, as
/// `{"code": …, "reason": …}` (`null` for a close without a payload), read at `/api/ws-closes`.
#[derive(Default)]
struct WsCloses(std::sync::Mutex<Vec<Value>>);

/// The header this upstream reads a token-handler signed assertion from (a route's
/// `assertion_header`), on its `/verified/…` paths.
pub const ASSERTION_HEADER: &str = "x-th-assertion";

/// Where this upstream gets the keys of token-handler's signed assertions, and whose they must
/// be: set once the proxy runs ([`Upstream::trust_assertions`]), since the proxy's metrics
/// listener, which serves the key set, starts after the upstream whose address it is given.
#[derive(Default)]
struct AssertionTrust(std::sync::Mutex<Option<(String, String)>>);

impl AssertionTrust {
    /// What an API does with an assertion: fetch the key set (on every call, so a restarted
    /// proxy's new key is found), pick the key by `kid`, verify the ES256 signature, `iss`, `aud`
    /// (this upstream's own URL) and `exp` with no leeway.
    async fn verify(&self, req: &HttpRequest, audience: &str) -> Result<Value, String> {
        let (jwks_url, issuer) = self
            .0
            .lock()
            .expect("assertion trust")
            .clone()
            .ok_or("no JWKS URL configured")?;
        let assertion = req
            .headers()
            .get(ASSERTION_HEADER)
            .and_then(|v| v.to_str().ok())
            .ok_or("no assertion header")?;
        let jwks: JwkSet = awc::Client::default()
            .get(jwks_url)
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        let kid = decode_header(assertion)
            .map_err(|e| e.to_string())?
            .kid
            .ok_or("no kid")?;
        let jwk = jwks.find(&kid).ok_or("unknown kid")?;
        let key = DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
        let mut validation = Validation::new(jsonwebtoken::Algorithm::ES256);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 0;
        decode::<Value>(assertion, &key, &validation)
            .map(|d| d.claims)
            .map_err(|e| e.to_string())
    }
}

/// This upstream's own URL as the URL parser writes it: the `aud` of the assertions for it.
struct OwnAudience(String);

/// A running upstream; stops with the test's runtime.
pub struct Upstream {
    pub address: String,
    assertions: web::Data<AssertionTrust>,
}

impl Upstream {
    /// Starts on a random loopback port, trusting tokens from `issuer`.
    pub async fn start(issuer: &str) -> Self {
        Self::start_many(&[issuer]).await
    }

    /// Starts trusting tokens from several issuers.
    pub async fn start_many(issuers: &[&str]) -> Self {
        let mut trusted = Vec::new();
        for issuer in issuers {
            let jwks: JwkSet = awc::Client::default()
                .get(format!("{issuer}/jwks"))
                .send()
                .await
                .expect("jwks")
                .json()
                .await
                .expect("jwks json");
            trusted.push((issuer.to_string(), jwks));
        }
        let verifier = web::Data::new(Verifier { issuers: trusted });
        let closes = web::Data::new(WsCloses::default());
        let assertions = web::Data::new(AssertionTrust::default());
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let address = format!("http://127.0.0.1:{port}");
        let audience = web::Data::new(OwnAudience(format!("{address}/")));
        let trust = assertions.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(verifier.clone())
                .app_data(closes.clone())
                .app_data(trust.clone())
                .app_data(audience.clone())
                .app_data(web::PayloadConfig::new(usize::MAX))
                .route("/api/stream/download", web::get().to(download))
                .route("/api/stream/upload", web::post().to(upload))
                .route("/api/sse", web::get().to(sse))
                .route("/api/slow", web::get().to(slow))
                .route("/api/unauthorized", web::get().to(unauthorized))
                .route("/api/not-modified", web::get().to(not_modified))
                .route("/api/redirect", web::get().to(redirect))
                .route("/api/ws", web::get().to(websocket))
                .route("/api/ws-closes", web::get().to(ws_closes))
                .route("/api/respond", web::get().to(respond))
                .route("/open/{tail:.*}", web::to(open_echo))
                .route("/verified/{tail:.*}", web::to(verified_echo))
                .default_service(web::to(echo))
        })
        .workers(2)
        .listen(listener)
        .expect("listen")
        .run();
        actix_web::rt::spawn(server);
        Self {
            address,
            assertions,
        }
    }

    /// From now on `/verified/…` accepts only calls whose [`ASSERTION_HEADER`] verifies against
    /// the key set at `jwks_url` with `iss` = `issuer` and `aud` = this upstream's URL.
    pub fn trust_assertions(&self, jwks_url: &str, issuer: &str) {
        *self.assertions.0.lock().expect("assertion trust") =
            Some((jwks_url.to_string(), issuer.to_string()));
    }
}

fn denied(reason: String) -> HttpResponse {
    HttpResponse::Unauthorized()
        .insert_header((header::WWW_AUTHENTICATE, "Bearer error=\"invalid_token\""))
        .json(json!({"error": "invalid_token", "reason": reason}))
}

/// Every request header, name → its values in order.
fn received_headers(req: &HttpRequest) -> Map<String, Value> {
    let mut headers = Map::new();
    for (name, value) in req.headers() {
        let entry = headers
            .entry(name.as_str().to_string())
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(list) = entry {
            list.push(Value::String(
                value.to_str().unwrap_or("<binary>").to_string(),
            ));
        }
    }
    headers
}

async fn echo(req: HttpRequest, mut body: web::Payload, v: web::Data<Verifier>) -> HttpResponse {
    let claims = match v.check(&req).await {
        Ok(c) => c,
        Err(reason) => return denied(reason),
    };
    let mut received = 0usize;
    while let Some(chunk) = body.next().await {
        received += chunk.map(|c| c.len()).unwrap_or(0);
    }
    let headers = received_headers(&req);
    HttpResponse::Ok()
        .insert_header(("set-cookie", "th-at=from-upstream; Path=/"))
        .insert_header(("set-cookie", "upstream-session=1; Path=/"))
        .insert_header(("access-control-allow-origin", "*"))
        .json(json!({
            "method": req.method().as_str(),
            "path": req.path(),
            "query": req.query_string(),
            "headers": headers,
            "body_bytes": received,
            "sub": claims["sub"],
            "iss": claims["iss"],
            "token_exp": claims["exp"],
            "token_jti": claims["jti"],
        }))
}

async fn download(req: HttpRequest, v: web::Data<Verifier>) -> HttpResponse {
    if let Err(reason) = v.check(&req).await {
        return denied(reason);
    }
    let total: usize = req
        .query_string()
        .strip_prefix("bytes=")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let chunk = web::Bytes::from(vec![b'x'; 64 * 1024]);
    let stream = futures_util::stream::unfold(total, move |left| {
        let chunk = chunk.clone();
        async move {
            if left == 0 {
                return None;
            }
            let n = left.min(chunk.len());
            Some((Ok::<_, actix_web::Error>(chunk.slice(..n)), left - n))
        }
    });
    HttpResponse::Ok()
        .content_type("application/octet-stream")
        .streaming(stream)
}

async fn upload(req: HttpRequest, mut body: web::Payload, v: web::Data<Verifier>) -> HttpResponse {
    if let Err(reason) = v.check(&req).await {
        return denied(reason);
    }
    let mut received = 0usize;
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(c) => received += c.len(),
            Err(e) => return HttpResponse::BadRequest().body(e.to_string()),
        }
    }
    HttpResponse::Ok().json(json!({ "received": received }))
}

async fn sse(req: HttpRequest, v: web::Data<Verifier>) -> HttpResponse {
    if let Err(reason) = v.check(&req).await {
        return denied(reason);
    }
    let events = futures_util::stream::unfold(0u8, |n| async move {
        match n {
            0 => Some((
                Ok::<_, actix_web::Error>(web::Bytes::from("data: first\n\n")),
                1,
            )),
            1 => {
                actix_web::rt::time::sleep(Duration::from_secs(3)).await;
                Some((Ok(web::Bytes::from("data: second\n\n")), 2))
            }
            _ => None,
        }
    });
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .streaming(events)
}

async fn slow(req: HttpRequest, v: web::Data<Verifier>) -> HttpResponse {
    if let Err(reason) = v.check(&req).await {
        return denied(reason);
    }
    actix_web::rt::time::sleep(Duration::from_secs(3)).await;
    HttpResponse::Ok().json(json!({"slow": true}))
}

/// A redirect to the upstream's own absolute address, as frameworks not told about the proxy
/// write them from `Host` (ignoring `X-Forwarded-Host`), or to the address in `?to=`.
async fn redirect(req: HttpRequest) -> HttpResponse {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("?");
    let location = match req.query_string().strip_prefix("to=") {
        Some(to) => to.to_string(),
        None => format!("http://{host}/api/orders/1?from=redirect"),
    };
    HttpResponse::Found()
        .insert_header((header::LOCATION, location))
        .finish()
}

/// A conditional GET's answer: 304 with an ETag, no body and no Content-Type.
async fn not_modified() -> HttpResponse {
    HttpResponse::NotModified()
        .insert_header((header::ETAG, "\"v1\""))
        .finish()
}

async fn unauthorized() -> HttpResponse {
    HttpResponse::Unauthorized()
        .insert_header((
            header::WWW_AUTHENTICATE,
            "Bearer error=\"insufficient_scope\"",
        ))
        .json(json!({"error": "upstream says no"}))
}

/// Echoes text messages as "<sub>: <text>", answers "headers" with the handshake's headers as
/// JSON; accepts the subprotocol `chat.v1`.
async fn websocket(
    req: HttpRequest,
    body: web::Payload,
    v: web::Data<Verifier>,
    closes: web::Data<WsCloses>,
) -> HttpResponse {
    let claims = match v.check(&req).await {
        Ok(c) => c,
        Err(reason) => return denied(reason),
    };
    let sub = claims["sub"].as_str().unwrap_or("?").to_string();
    let headers = Value::Object(received_headers(&req)).to_string();
    let (resp, mut session, mut messages) =
        match actix_ws::handle_with_protocols(&req, body, &["chat.v1"]) {
            Ok(ok) => ok,
            Err(e) => return HttpResponse::BadRequest().body(e.to_string()),
        };
    actix_web::rt::spawn(async move {
        while let Some(Ok(msg)) = messages.next().await {
            match msg {
                actix_ws::Message::Text(t) => {
                    let answer = match &*t {
                        "headers" => headers.clone(),
                        _ => format!("{sub}: {t}"),
                    };
                    if session.text(answer).await.is_err() {
                        return;
                    }
                }
                actix_ws::Message::Close(reason) => {
                    let entry = match &reason {
                        Some(r) => json!({"code": u16::from(r.code), "reason": r.description}),
                        None => Value::Null,
                    };
                    closes.0.lock().expect("close log").push(entry);
                    let _ = session.close(reason).await;
                    return;
                }
                _ => {}
            }
        }
    });
    resp
}

/// The WebSocket close frames received so far ([`WsCloses`]).
async fn ws_closes(
    req: HttpRequest,
    v: web::Data<Verifier>,
    closes: web::Data<WsCloses>,
) -> HttpResponse {
    if let Err(reason) = v.check(&req).await {
        return denied(reason);
    }
    let seen = closes.0.lock().expect("close log").clone();
    HttpResponse::Ok().json(seen)
}

/// The echo, answered with the response headers the query names: each `h=<Name>:<value>`,
/// percent-decoded to raw bytes (so a test can send what no framework would), in order.
async fn respond(req: HttpRequest, v: web::Data<Verifier>) -> HttpResponse {
    if let Err(reason) = v.check(&req).await {
        return denied(reason);
    }
    let mut resp = HttpResponse::Ok();
    for pair in req.query_string().split('&') {
        let Some(encoded) = pair.strip_prefix("h=") else {
            continue;
        };
        let bytes: Vec<u8> = percent_encoding::percent_decode_str(encoded).collect();
        let Some(colon) = bytes.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = header::HeaderName::from_bytes(&bytes[..colon]).expect("header name");
        let value =
            header::HeaderValue::from_bytes(bytes[colon + 1..].trim_ascii()).expect("header value");
        resp.append_header((name, value));
    }
    resp.json(json!({
        "path": req.path(),
        "headers": received_headers(&req),
    }))
}

/// An API that trusts no header on the network: it answers only a call whose signed assertion
/// verifies ([`AssertionTrust::verify`]), `401` with the reason otherwise, and echoes the
/// verified claims.
async fn verified_echo(
    req: HttpRequest,
    trust: web::Data<AssertionTrust>,
    audience: web::Data<OwnAudience>,
) -> HttpResponse {
    match trust.verify(&req, &audience.0).await {
        Ok(claims) => HttpResponse::Ok().json(json!({
            "path": req.path(),
            "sub": claims["sub"],
            "claims": claims,
        })),
        Err(reason) => HttpResponse::Unauthorized()
            .json(json!({"error": "invalid_assertion", "reason": reason})),
    }
}

/// The echo for routes that may be called without a token (`auth = "optional"` or `"none"`):
/// a token, when one arrives, is verified as everywhere else; without one the request is
/// answered all the same, with `"sub": null`.
async fn open_echo(req: HttpRequest, v: web::Data<Verifier>) -> HttpResponse {
    let has_token =
        req.headers().contains_key(header::AUTHORIZATION) || req.headers().contains_key(PAT_HEADER);
    let claims = match has_token {
        true => match v.check(&req).await {
            Ok(c) => c,
            Err(reason) => return denied(reason),
        },
        false => Value::Null,
    };
    HttpResponse::Ok().json(json!({
        "method": req.method().as_str(),
        "path": req.path(),
        "headers": received_headers(&req),
        "sub": claims["sub"],
    }))
}
