//! The example API: a resource server that trusts JWT access tokens from one issuer.
//!
//! It is what sits behind token-handler's proxy. It never sees a cookie: the proxy turns the
//! SPA's cookie into `Authorization: Bearer <JWT>`, and this server checks that JWT like any
//! resource server would: signature with the issuer's published keys (JWKS, found through
//! discovery, cached, refetched when a token names an unknown `kid`), then `iss`, `aud` and
//! `exp`. It answers with data for the token's `sub`, plus the token's `jti`/`iat`/`exp` so the
//! example SPA can show when token-handler refreshed the token behind its back.
//!
//! Used by `cargo run --example api` and by the demo (`cargo run --example demo`).

use actix_web::dev::Server;
use actix_web::http::header;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Asymmetric algorithms only (the list token-handler itself accepts for ID tokens): `none`
/// and HMAC (keyed with a shared secret) are never accepted.
const ALLOWED: [Algorithm; 9] = token_handler::oauth::id_token::ACCEPTED_ALGORITHMS;

/// Clock skew tolerated on `exp` (token-handler refreshes ahead of expiry anyway).
const LEEWAY_SECONDS: u64 = 5;

/// Smallest interval between two JWKS fetches triggered by unknown key ids.
const MIN_REFETCH: Duration = Duration::from_secs(10);

/// Notes kept per user.
const MAX_NOTES: usize = 5;

#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// The issuer exactly as it appears in `iss` (and in its discovery document).
    pub issuer: String,
    /// The `aud` this API requires.
    pub audience: String,
    /// `host:port` to bind.
    pub listen: String,
}

/// What the API keeps: the issuer's keys and each user's data (in memory).
struct ApiState {
    config: ApiConfig,
    keys: RwLock<Arc<Vec<Jwk>>>,
    last_fetch: Mutex<Option<Instant>>,
    users: Mutex<HashMap<String, UserData>>,
}

#[derive(Default, Clone)]
struct UserData {
    reads: u64,
    notes: Vec<serde_json::Value>,
}

/// The claims of an access token this API reads.
#[derive(Debug, Deserialize)]
struct AccessClaims {
    sub: String,
    iat: i64,
    exp: i64,
    jti: Option<String>,
    scope: Option<String>,
    client_id: Option<String>,
}

/// Why a request is refused.
enum Refusal {
    /// RFC 6750 §3.1 `invalid_token` (401).
    InvalidToken(String),
    /// The issuer's keys could not be loaded (503): not the caller's fault.
    KeysUnavailable(String),
}

impl Refusal {
    fn response(self) -> HttpResponse {
        match self {
            Refusal::InvalidToken(reason) => {
                // The description is ours (never echoes the token), but keep it header-safe.
                let safe: String = reason
                    .chars()
                    .filter(|c| (c.is_ascii_graphic() && *c != '"' && *c != '\\') || *c == ' ')
                    .collect();
                HttpResponse::Unauthorized()
                    .insert_header((
                        header::WWW_AUTHENTICATE,
                        format!("Bearer error=\"invalid_token\", error_description=\"{safe}\""),
                    ))
                    .json(json!({"code": "invalid_token", "message": reason}))
            }
            Refusal::KeysUnavailable(reason) => HttpResponse::ServiceUnavailable()
                .json(json!({"code": "jwks_unavailable", "message": reason})),
        }
    }
}

/// One outbound HTTP client per worker (awc clients are not `Send`).
struct Fetcher(awc::Client);

/// Binds `config.listen` and returns the server (run it by awaiting it).
pub fn server(config: ApiConfig) -> std::io::Result<Server> {
    let listen = config.listen.clone();
    let state = web::Data::new(ApiState {
        config,
        keys: RwLock::new(Arc::new(Vec::new())),
        last_fetch: Mutex::new(None),
        users: Mutex::new(HashMap::new()),
    });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(web::Data::new(Fetcher(
                awc::Client::builder()
                    .disable_redirects()
                    .timeout(Duration::from_secs(5))
                    .finish(),
            )))
            .app_data(web::JsonConfig::default().limit(4 * 1024))
            .route("/api/data", web::get().to(read))
            .route("/api/data", web::post().to(write))
            .default_service(web::to(not_found))
    })
    .workers(1)
    .shutdown_timeout(1)
    .bind(&listen)?
    .run();
    Ok(server)
}

async fn not_found() -> HttpResponse {
    HttpResponse::NotFound().json(json!({
        "code": "not_found",
        "message": "the example API serves GET and POST /api/data",
    }))
}

/// `GET /api/data`: the caller's data.
async fn read(req: HttpRequest, state: web::Data<ApiState>, f: web::Data<Fetcher>) -> HttpResponse {
    let claims = match authenticate(&req, &state, &f.0).await {
        Ok(c) => c,
        Err(r) => return r.response(),
    };
    let data = state.update(&claims.sub, |u| u.reads += 1);
    respond(&req, &claims, data)
}

#[derive(Deserialize)]
struct NewNote {
    text: Option<String>,
}

/// `POST /api/data` (JSON `{"text": "..."}`): adds a note to the caller's data.
async fn write(
    req: HttpRequest,
    state: web::Data<ApiState>,
    f: web::Data<Fetcher>,
    body: Option<web::Json<NewNote>>,
) -> HttpResponse {
    let claims = match authenticate(&req, &state, &f.0).await {
        Ok(c) => c,
        Err(r) => return r.response(),
    };
    let text: String = body
        .and_then(|b| b.into_inner().text)
        .unwrap_or_else(|| "(empty note)".into())
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    let note = json!({"text": text, "at": now()});
    let data = state.update(&claims.sub, |u| {
        u.notes.push(note);
        if u.notes.len() > MAX_NOTES {
            u.notes.remove(0);
        }
    });
    respond(&req, &claims, data)
}

fn respond(req: &HttpRequest, claims: &AccessClaims, data: UserData) -> HttpResponse {
    let now = now();
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({
            "sub": claims.sub,
            "message": format!(
                "Hello {}! The example API verified your access token and serves your data.",
                claims.sub
            ),
            "method": req.method().as_str(),
            "reads": data.reads,
            "notes": data.notes,
            "token": {
                "jti": claims.jti,
                "iat": claims.iat,
                "exp": claims.exp,
                "expires_in": claims.exp - now,
                "scope": claims.scope,
                "client_id": claims.client_id,
            },
            "served_at": now,
        }))
}

// Not token-handler code: the example API is another party (a resource server) with its own clock, so
// clippy.toml's rule that only src/clock.rs reads the system clock does not apply.
#[allow(clippy::disallowed_methods)]
fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl ApiState {
    /// Applies `change` to the user's data and returns a copy of the result.
    fn update(&self, sub: &str, change: impl FnOnce(&mut UserData)) -> UserData {
        match self.users.lock() {
            Ok(mut users) => {
                let entry = users.entry(sub.to_string()).or_default();
                change(entry);
                entry.clone()
            }
            Err(_) => UserData::default(),
        }
    }

    /// The key for `kid`, fetching the JWKS when it is unknown (at most once per MIN_REFETCH).
    async fn key_for(
        &self,
        client: &awc::Client,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<DecodingKey, Refusal> {
        if let Some(found) = self.find(kid, alg) {
            return found;
        }
        if !self.may_fetch() {
            return Err(Refusal::InvalidToken(
                "the token's signing key is not in the issuer's JWKS".into(),
            ));
        }
        let keys = fetch_jwks(client, &self.config.issuer)
            .await
            .map_err(Refusal::KeysUnavailable)?;
        if let Ok(mut slot) = self.keys.write() {
            *slot = Arc::new(keys);
        }
        self.find(kid, alg).unwrap_or_else(|| {
            Err(Refusal::InvalidToken(
                "the token's signing key is not in the issuer's JWKS".into(),
            ))
        })
    }

    fn may_fetch(&self) -> bool {
        let Ok(mut last) = self.last_fetch.lock() else {
            return false;
        };
        match *last {
            Some(at) if at.elapsed() < MIN_REFETCH => false,
            _ => {
                *last = Some(Instant::now());
                true
            }
        }
    }

    fn find(&self, kid: Option<&str>, alg: Algorithm) -> Option<Result<DecodingKey, Refusal>> {
        let keys = self.keys.read().ok()?.clone();
        let usable = |k: &&Jwk| {
            !matches!(k.common.public_key_use, Some(PublicKeyUse::Encryption))
                && k.common
                    .key_algorithm
                    .is_none_or(|ka| ka.to_string() == format!("{alg:?}"))
        };
        // A token without `kid` is accepted only when the JWKS has exactly one usable key.
        let jwk = match kid {
            Some(kid) => keys
                .iter()
                .filter(usable)
                .find(|k| k.common.key_id.as_deref() == Some(kid))?,
            None => {
                let mut candidates = keys.iter().filter(usable);
                match (candidates.next(), candidates.next()) {
                    (Some(one), None) => one,
                    _ => return None,
                }
            }
        };
        Some(
            DecodingKey::from_jwk(jwk)
                .map_err(|e| Refusal::KeysUnavailable(format!("unusable JWK: {e}"))),
        )
    }
}

/// Discovery, then the JWKS it points to.
async fn fetch_jwks(client: &awc::Client, issuer: &str) -> Result<Vec<Jwk>, String> {
    #[derive(Deserialize)]
    struct Discovery {
        issuer: String,
        jwks_uri: String,
    }
    let discovery_url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let mut resp = client
        .get(&discovery_url)
        .send()
        .await
        .map_err(|e| format!("discovery at {discovery_url} failed: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!(
            "discovery at {discovery_url} answered {}",
            resp.status()
        ));
    }
    let doc: Discovery = resp
        .json()
        .await
        .map_err(|e| format!("discovery at {discovery_url} is not valid: {e}"))?;
    if doc.issuer != issuer {
        return Err(format!(
            "discovery names issuer `{}`, expected `{issuer}`",
            doc.issuer
        ));
    }
    let mut resp = client
        .get(&doc.jwks_uri)
        .send()
        .await
        .map_err(|e| format!("JWKS at {} failed: {e}", doc.jwks_uri))?;
    if !resp.status().is_success() {
        return Err(format!(
            "JWKS at {} answered {}",
            doc.jwks_uri,
            resp.status()
        ));
    }
    // Keys of unknown types are skipped rather than failing the whole set.
    let set: serde_json::Value = resp
        .json()
        .limit(256 * 1024)
        .await
        .map_err(|e| format!("JWKS at {} is not JSON: {e}", doc.jwks_uri))?;
    let keys: Vec<Jwk> = set
        .get("keys")
        .and_then(|k| k.as_array())
        .map(|keys| {
            keys.iter()
                .filter_map(|k| serde_json::from_value::<Jwk>(k.clone()).ok())
                .collect()
        })
        .unwrap_or_default();
    tracing::info!(
        count = keys.len(),
        jwks_uri = %doc.jwks_uri,
        "example API loaded the issuer's keys"
    );
    Ok(keys)
}

/// The Bearer token's claims, or why it is refused.
async fn authenticate(
    req: &HttpRequest,
    state: &ApiState,
    client: &awc::Client,
) -> Result<AccessClaims, Refusal> {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            (v.len() > 7 && v[..7].eq_ignore_ascii_case("bearer ")).then(|| v[7..].trim())
        })
        .ok_or_else(|| {
            Refusal::InvalidToken("no Bearer token in the Authorization header".into())
        })?;
    let header = decode_header(token)
        .map_err(|e| Refusal::InvalidToken(format!("the token is not a JWT: {e}")))?;
    if !ALLOWED.contains(&header.alg) {
        return Err(Refusal::InvalidToken(format!(
            "tokens signed with {:?} are not accepted",
            header.alg
        )));
    }
    let key = state
        .key_for(client, header.kid.as_deref(), header.alg)
        .await?;
    let mut validation = Validation::new(header.alg);
    validation.algorithms = vec![header.alg];
    validation.set_issuer(&[&state.config.issuer]);
    validation.set_audience(&[&state.config.audience]);
    validation.set_required_spec_claims(&["iss", "aud", "sub", "exp", "iat"]);
    validation.leeway = LEEWAY_SECONDS;
    validation.validate_exp = true;
    decode::<AccessClaims>(token, &key, &validation)
        .map(|d| d.claims)
        .map_err(|e| Refusal::InvalidToken(format!("the access token was refused: {e}")))
}
