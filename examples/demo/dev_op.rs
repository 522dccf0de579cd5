//! A minimal OpenID Provider, FOR DEVELOPMENT ONLY.
//!
//! It exists so `cargo run --example demo` needs nothing but cargo. It is deliberately small and
//! is NOT an identity provider to deploy: anybody signs in as anybody (a user name, no password),
//! state lives in memory, and the signing key is generated at every start. It is part of the
//! demo example only and never part of the token-handler binary.
//!
//! What it does implement, because token-handler checks it:
//! - discovery (`/.well-known/openid-configuration`) naming this exact issuer;
//! - `/authorize`: the authorization-code flow with PKCE (S256 only), `state`, `nonce`, and the
//!   `iss` response parameter (RFC 9207), with an HTML form asking for a user name;
//! - `/token` with `client_secret_basic`: `authorization_code` (one-time codes, PKCE verified,
//!   `redirect_uri` compared) and `refresh_token` (rotated: every refresh returns a new one);
//! - short-lived ES256 JWT access tokens (RFC 9068 `at+jwt`) for the API's audience, ID tokens
//!   with `iss`, `sub`, `aud`, `exp`, `iat`, `nonce`, `name`; both signed with a key published at
//!   `/jwks` under its `kid`;
//! - `/userinfo`, `/revoke` (RFC 7009) and `/end_session` (RP-initiated logout, redirecting to a
//!   registered `post_logout_redirect_uri`).

use actix_web::dev::Server;
use actix_web::http::header;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::jwk::{Jwk, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use p256::pkcs8::EncodePrivateKey;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};
use subtle::ConstantTimeEq;
use url::Url;

const SCOPES: [&str; 4] = ["openid", "profile", "email", "offline_access"];

/// How the development provider is set up.
#[derive(Debug, Clone)]
pub struct DevOpConfig {
    /// `http://localhost:<port>`: what the browser and token-handler use, and the `iss` claim.
    pub issuer: String,
    /// `host:port` to bind.
    pub listen: String,
    pub client_id: String,
    pub client_secret: String,
    pub redirect_uri: String,
    pub post_logout_redirect_uri: String,
    /// `aud` of the access tokens (the example API).
    pub audience: String,
    /// Access-token lifetime in seconds (short, so the demo shows refreshes).
    pub access_token_ttl: i64,
}

const ID_TOKEN_TTL: i64 = 600;
const REFRESH_TOKEN_TTL: i64 = 8 * 3600;
const CODE_TTL: i64 = 60;
const LOGIN_PAGE_TTL: i64 = 600;

/// An authorization request waiting for the user to type a name.
struct Pending {
    redirect_uri: String,
    state: Option<String>,
    nonce: Option<String>,
    scope: String,
    code_challenge: String,
    expires_at: i64,
}

/// What an authorization code (and later a refresh token) stands for.
#[derive(Clone)]
struct Grant {
    sub: String,
    scope: String,
    auth_time: i64,
}

struct IssuedCode {
    grant: Grant,
    redirect_uri: String,
    nonce: Option<String>,
    code_challenge: String,
    expires_at: i64,
}

struct IssuedRefresh {
    grant: Grant,
    expires_at: i64,
}

struct OpState {
    config: DevOpConfig,
    encoding_key: EncodingKey,
    decoding_key: DecodingKey,
    jwk: Jwk,
    kid: String,
    pending: Mutex<HashMap<String, Pending>>,
    codes: Mutex<HashMap<String, IssuedCode>>,
    refresh_tokens: Mutex<HashMap<String, IssuedRefresh>>,
    /// Display names by subject, for userinfo.
    names: Mutex<HashMap<String, String>>,
}

/// Binds `config.listen` and returns the provider's server (await it to run).
pub fn server(config: DevOpConfig) -> std::io::Result<Server> {
    let state = web::Data::new(OpState::new(config.clone()).map_err(std::io::Error::other)?);
    let server = HttpServer::new(move || App::new().configure(configure(state.clone())))
        .workers(1)
        .shutdown_timeout(1)
        .bind(&config.listen)?
        .run();
    Ok(server)
}

/// The provider's endpoints (shared by the server and the tests).
fn configure(state: web::Data<OpState>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(state).service(
            web::scope("")
                .wrap(
                    actix_web::middleware::DefaultHeaders::new()
                        .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
                        .add((header::REFERRER_POLICY, "no-referrer")),
                )
                .route("/", web::get().to(home))
                .route(
                    "/.well-known/openid-configuration",
                    web::get().to(discovery),
                )
                .route("/jwks", web::get().to(jwks))
                .route("/authorize", web::get().to(authorize))
                .route("/authorize", web::post().to(login))
                .route("/token", web::post().to(token))
                .route("/userinfo", web::get().to(userinfo))
                .route("/userinfo", web::post().to(userinfo))
                .route("/revoke", web::post().to(revoke))
                .route("/end_session", web::get().to(end_session)),
        );
    }
}

// Not token-handler code: the development provider is another party with its own clock, so
// clippy.toml's rule that only src/clock.rs reads the system clock does not apply.
#[allow(clippy::disallowed_methods)]
fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// 256 random bits, base64url: codes, refresh tokens, token ids.
fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

impl OpState {
    /// Generates a fresh P-256 key (ES256) for this run.
    fn new(config: DevOpConfig) -> Result<Self, String> {
        let secret = loop {
            // A random 32-byte string is a valid P-256 scalar except with negligible probability.
            if let Ok(key) = p256::SecretKey::from_slice(&rand::random::<[u8; 32]>()) {
                break key;
            }
        };
        let der = secret
            .to_pkcs8_der()
            .map_err(|e| format!("cannot encode the signing key: {e}"))?;
        let encoding_key = EncodingKey::from_ec_der(der.as_bytes());
        let mut jwk = Jwk::from_encoding_key(&encoding_key, Algorithm::ES256)
            .map_err(|e| format!("cannot derive the public JWK: {e}"))?;
        // The RFC 7638 thumbprint makes a stable, unique key id.
        let kid = format!(
            "dev-es256-{}",
            &jwk.thumbprint(ThumbprintHash::SHA256)[..16]
        );
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        let decoding_key =
            DecodingKey::from_jwk(&jwk).map_err(|e| format!("cannot use the public JWK: {e}"))?;
        Ok(Self {
            config,
            encoding_key,
            decoding_key,
            jwk,
            kid,
            pending: Mutex::new(HashMap::new()),
            codes: Mutex::new(HashMap::new()),
            refresh_tokens: Mutex::new(HashMap::new()),
            names: Mutex::new(HashMap::new()),
        })
    }

    fn sign<T: Serialize>(&self, typ: &str, claims: &T) -> Result<String, String> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        header.typ = Some(typ.to_string());
        encode(&header, claims, &self.encoding_key).map_err(|e| format!("signing failed: {e}"))
    }

    /// A token response for `grant`: access token, ID token (with `nonce` after a login) and a
    /// new refresh token.
    fn issue(&self, grant: &Grant, nonce: Option<&str>) -> Result<serde_json::Value, String> {
        let c = &self.config;
        let now = now();
        let access_token = self.sign(
            "at+jwt",
            &json!({
                "iss": c.issuer,
                "sub": grant.sub,
                "aud": c.audience,
                "client_id": c.client_id,
                "scope": grant.scope,
                "jti": random_token(),
                "iat": now,
                "exp": now + c.access_token_ttl,
            }),
        )?;
        // OIDC Core §3.1.3.6: at_hash is the left half of SHA-256 of the access token.
        let digest = Sha256::digest(access_token.as_bytes());
        let at_hash = URL_SAFE_NO_PAD.encode(&digest[..16]);
        let name = self.name_of(&grant.sub);
        let mut id_claims = json!({
            "iss": c.issuer,
            "sub": grant.sub,
            "aud": c.client_id,
            "iat": now,
            "exp": now + ID_TOKEN_TTL,
            "auth_time": grant.auth_time,
            "at_hash": at_hash,
        });
        if let Some(nonce) = nonce {
            id_claims["nonce"] = json!(nonce);
        }
        if grant.scope.split(' ').any(|s| s == "profile") {
            id_claims["name"] = json!(name);
            id_claims["preferred_username"] = json!(grant.sub);
        }
        let id_token = self.sign("JWT", &id_claims)?;
        let refresh_token = random_token();
        if let Ok(mut rts) = self.refresh_tokens.lock() {
            rts.retain(|_, r| r.expires_at > now);
            rts.insert(
                refresh_token.clone(),
                IssuedRefresh {
                    grant: grant.clone(),
                    expires_at: now + REFRESH_TOKEN_TTL,
                },
            );
        }
        Ok(json!({
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": c.access_token_ttl,
            "refresh_token": refresh_token,
            "id_token": id_token,
            "scope": grant.scope,
        }))
    }

    fn name_of(&self, sub: &str) -> String {
        self.names
            .lock()
            .ok()
            .and_then(|n| n.get(sub).cloned())
            .unwrap_or_else(|| sub.to_string())
    }
}

// ---------------------------------------------------------------------------------------------
// Pages and metadata.

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const PAGE_STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;background:#f4f1ea;color:#1f2328;margin:0}\
.dev{background:#ffd33d;color:#3b2f00;padding:.6rem 1rem;font-weight:600;text-align:center;border-bottom:1px solid #d4a72c}\
main{max-width:26rem;margin:3rem auto;background:#fff;border:1px solid #d0d7de;border-radius:12px;padding:1.75rem 2rem;box-shadow:0 1px 3px rgba(0,0,0,.06)}\
h1{font-size:1.35rem;margin:0 0 .25rem}p{line-height:1.5}.muted{color:#59636e;font-size:.9rem}\
label{display:block;font-weight:600;margin:1.2rem 0 .4rem}\
input[type=text]{width:100%;box-sizing:border-box;font-size:1rem;padding:.6rem .7rem;border:1px solid #d0d7de;border-radius:8px}\
input[type=text]:focus{outline:2px solid #7c5cff;border-color:#7c5cff}\
.actions{display:flex;gap:.6rem;margin-top:1.2rem}\
button{font-size:.95rem;padding:.55rem 1.1rem;border-radius:8px;border:1px solid #d0d7de;background:#f6f8fa;cursor:pointer}\
button.primary{background:#7c5cff;border-color:#6a4cf0;color:#fff;font-weight:600}\
code{background:#f6f8fa;padding:.1rem .3rem;border-radius:4px}";

fn page(title: &str, body: &str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        // No `form-action`: browsers apply it to the redirect that follows the login form too,
        // and that redirect goes to the application.
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
        ))
        .body(format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{title} · Development OpenID Provider</title><style>{PAGE_STYLE}</style></head><body>\
<div class=\"dev\">Development OpenID Provider — for development only. Any user name signs in; there are no passwords.</div>\
<main>{body}</main></body></html>",
            title = escape(title)
        ))
}

fn error_page(status: actix_web::http::StatusCode, message: &str) -> HttpResponse {
    let mut resp = page(
        "Error",
        &format!(
            "<h1>Cannot continue</h1><p>{}</p><p class=\"muted\">The request was not sent back to the application because its client or redirect URI could not be trusted.</p>",
            escape(message)
        ),
    );
    *resp.status_mut() = status;
    resp
}

async fn home(state: web::Data<OpState>) -> HttpResponse {
    page(
        "Home",
        &format!(
            "<h1>Development OpenID Provider</h1><p>Issuer <code>{}</code>, client <code>{}</code>.</p>\
<p class=\"muted\">Started by <code>cargo run --example demo</code>. It signs tokens with a key generated at start and forgets everything when it stops.</p>",
            escape(&state.config.issuer),
            escape(&state.config.client_id)
        ),
    )
}

async fn discovery(state: web::Data<OpState>) -> HttpResponse {
    let i = &state.config.issuer;
    HttpResponse::Ok().json(json!({
        "issuer": i,
        "authorization_endpoint": format!("{i}/authorize"),
        "token_endpoint": format!("{i}/token"),
        "userinfo_endpoint": format!("{i}/userinfo"),
        "jwks_uri": format!("{i}/jwks"),
        "end_session_endpoint": format!("{i}/end_session"),
        "revocation_endpoint": format!("{i}/revoke"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": SCOPES,
        "claims_supported": [
            "sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "name", "preferred_username"
        ],
        "authorization_response_iss_parameter_supported": true,
    }))
}

async fn jwks(state: web::Data<OpState>) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "keys": [state.jwk] }))
}

// ---------------------------------------------------------------------------------------------
// The authorization endpoint.

/// Appends parameters to a redirect URI and answers 303 to it.
fn redirect_with(uri: &str, params: &[(&str, &str)]) -> HttpResponse {
    match Url::parse(uri) {
        Ok(mut url) => {
            if !params.is_empty() {
                let mut q = url.query_pairs_mut();
                for (k, v) in params {
                    q.append_pair(k, v);
                }
            }
            HttpResponse::SeeOther()
                .insert_header((header::LOCATION, url.as_str()))
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .finish()
        }
        Err(_) => error_page(
            actix_web::http::StatusCode::BAD_REQUEST,
            "invalid redirect URI",
        ),
    }
}

/// An error sent back to the client's (already validated) redirect URI (RFC 6749 §4.1.2.1).
fn redirect_error(
    state: &OpState,
    redirect_uri: &str,
    client_state: Option<&str>,
    error: &str,
    description: &str,
) -> HttpResponse {
    let mut params = vec![
        ("error", error),
        ("error_description", description),
        ("iss", state.config.issuer.as_str()),
    ];
    if let Some(s) = client_state {
        params.push(("state", s));
    }
    redirect_with(redirect_uri, &params)
}

/// `GET /authorize`: validates the request, then shows the login form.
async fn authorize(
    state: web::Data<OpState>,
    query: web::Query<HashMap<String, String>>,
) -> HttpResponse {
    let q = query.into_inner();
    let get = |k: &str| q.get(k).map(String::as_str);
    let c = &state.config;
    // Until client and redirect URI are known to be right, errors are shown here, never
    // redirected (RFC 6749 §4.1.2.1): otherwise this would be an open redirector.
    if get("client_id") != Some(c.client_id.as_str()) {
        return error_page(
            actix_web::http::StatusCode::BAD_REQUEST,
            "unknown client_id",
        );
    }
    let Some(redirect_uri) = get("redirect_uri").filter(|r| *r == c.redirect_uri) else {
        return error_page(
            actix_web::http::StatusCode::BAD_REQUEST,
            "redirect_uri is missing or not registered for this client",
        );
    };
    let client_state = get("state");
    if get("response_type") != Some("code") {
        return redirect_error(
            &state,
            redirect_uri,
            client_state,
            "unsupported_response_type",
            "only response_type=code is supported",
        );
    }
    let challenge = get("code_challenge").unwrap_or_default();
    if get("code_challenge_method") != Some("S256") || challenge.len() != 43 {
        return redirect_error(
            &state,
            redirect_uri,
            client_state,
            "invalid_request",
            "PKCE is required: code_challenge with code_challenge_method=S256",
        );
    }
    let scope: Vec<&str> = get("scope")
        .unwrap_or_default()
        .split(' ')
        .filter(|s| SCOPES.contains(s))
        .collect();
    if !scope.contains(&"openid") {
        return redirect_error(
            &state,
            redirect_uri,
            client_state,
            "invalid_scope",
            "the openid scope is required",
        );
    }
    if get("prompt") == Some("none") {
        // This provider keeps no login session, so it can never sign in silently.
        return redirect_error(
            &state,
            redirect_uri,
            client_state,
            "login_required",
            "the development provider always asks for a user name",
        );
    }
    let id = random_token();
    let now = now();
    if let Ok(mut pending) = state.pending.lock() {
        pending.retain(|_, p| p.expires_at > now);
        pending.insert(
            id.clone(),
            Pending {
                redirect_uri: redirect_uri.to_string(),
                state: client_state.map(String::from),
                nonce: get("nonce").map(String::from),
                scope: scope.join(" "),
                code_challenge: challenge.to_string(),
                expires_at: now + LOGIN_PAGE_TTL,
            },
        );
    }
    page(
        "Sign in",
        &format!(
            "<h1>Sign in</h1><p class=\"muted\">to <code>{client}</code> · requested scopes <code>{scope}</code></p>\
<form method=\"post\" action=\"/authorize\" autocomplete=\"off\">\
<input type=\"hidden\" name=\"request\" value=\"{id}\">\
<label for=\"username\">User name</label>\
<input type=\"text\" id=\"username\" name=\"username\" required maxlength=\"64\" autofocus placeholder=\"e.g. Ada Lovelace\">\
<p class=\"muted\">Type any name: this development provider has no passwords.</p>\
<div class=\"actions\"><button class=\"primary\" type=\"submit\" name=\"action\" value=\"login\">Sign in</button>\
<button type=\"submit\" name=\"action\" value=\"cancel\" formnovalidate>Cancel</button></div></form>",
            client = escape(&c.client_id),
            scope = escape(&scope.join(" ")),
        ),
    )
}

#[derive(Deserialize)]
struct LoginForm {
    request: String,
    username: Option<String>,
    action: Option<String>,
}

/// Turns a display name into a subject: lowercase letters, digits and `-`.
fn subject_of(name: &str) -> String {
    let mut sub = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            sub.push(c.to_ascii_lowercase());
        } else if !sub.ends_with('-') && !sub.is_empty() {
            sub.push('-');
        }
    }
    sub.trim_end_matches('-').to_string()
}

/// `POST /authorize`: the login form's answer; redirects back with a code.
async fn login(state: web::Data<OpState>, form: web::Form<LoginForm>) -> HttpResponse {
    let form = form.into_inner();
    let now = now();
    let pending = state
        .pending
        .lock()
        .ok()
        .and_then(|mut p| p.remove(&form.request))
        .filter(|p| p.expires_at > now);
    let Some(p) = pending else {
        return error_page(
            actix_web::http::StatusCode::BAD_REQUEST,
            "this sign-in page has expired or was already used; start again from the application",
        );
    };
    if form.action.as_deref() == Some("cancel") {
        return redirect_error(
            &state,
            &p.redirect_uri,
            p.state.as_deref(),
            "access_denied",
            "the user cancelled the sign-in",
        );
    }
    let name: String = form
        .username
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect::<String>()
        .trim()
        .to_string();
    let sub = subject_of(&name);
    if sub.is_empty() {
        return error_page(
            actix_web::http::StatusCode::BAD_REQUEST,
            "the user name needs at least one letter or digit; go back and try again",
        );
    }
    if let Ok(mut names) = state.names.lock() {
        names.insert(sub.clone(), name);
    }
    let code = random_token();
    if let Ok(mut codes) = state.codes.lock() {
        codes.retain(|_, c| c.expires_at > now);
        codes.insert(
            code.clone(),
            IssuedCode {
                grant: Grant {
                    sub,
                    scope: p.scope,
                    auth_time: now,
                },
                redirect_uri: p.redirect_uri.clone(),
                nonce: p.nonce,
                code_challenge: p.code_challenge,
                expires_at: now + CODE_TTL,
            },
        );
    }
    let mut params = vec![
        ("code", code.as_str()),
        ("iss", state.config.issuer.as_str()),
    ];
    if let Some(s) = p.state.as_deref() {
        params.push(("state", s));
    }
    redirect_with(&p.redirect_uri, &params)
}

// ---------------------------------------------------------------------------------------------
// Back channel: token, revocation, userinfo.

fn oauth_error(
    status: actix_web::http::StatusCode,
    error: &str,
    description: &str,
) -> HttpResponse {
    let mut builder = HttpResponse::build(status);
    builder.insert_header((header::CACHE_CONTROL, "no-store"));
    if status == actix_web::http::StatusCode::UNAUTHORIZED {
        builder.insert_header((header::WWW_AUTHENTICATE, "Basic realm=\"dev-op\""));
    }
    builder.json(json!({"error": error, "error_description": description}))
}

/// `client_secret_basic` (RFC 6749 §2.3.1): id and secret are form-urlencoded, then base64.
fn client_authenticated(req: &HttpRequest, config: &DevOpConfig) -> bool {
    let Some(encoded) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
    else {
        return false;
    };
    let Some(decoded) = STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
    else {
        return false;
    };
    let Some((id, secret)) = decoded.split_once(':') else {
        return false;
    };
    let unescape = |s: &str| -> String {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    let (id, secret) = (unescape(id), unescape(secret));
    id == config.client_id && bool::from(secret.as_bytes().ct_eq(config.client_secret.as_bytes()))
}

fn verifier_matches(verifier: &str, challenge: &str) -> bool {
    // RFC 7636 §4.1: 43-128 characters of [A-Za-z0-9-._~].
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    well_formed && bool::from(computed.as_bytes().ct_eq(challenge.as_bytes()))
}

/// `POST /token`.
async fn token(
    req: HttpRequest,
    state: web::Data<OpState>,
    form: web::Form<HashMap<String, String>>,
) -> HttpResponse {
    use actix_web::http::StatusCode;
    if !client_authenticated(&req, &state.config) {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed (client_secret_basic)",
        );
    }
    let form = form.into_inner();
    let get = |k: &str| form.get(k).map(String::as_str).unwrap_or_default();
    let now = now();
    let issued = match get("grant_type") {
        "authorization_code" => {
            // One-time: the code is removed whatever happens next.
            let code = state
                .codes
                .lock()
                .ok()
                .and_then(|mut c| c.remove(get("code")));
            let Some(code) = code.filter(|c| c.expires_at > now) else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "the code is unknown, expired or already used",
                );
            };
            if code.redirect_uri != get("redirect_uri") {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "redirect_uri differs from the authorization request",
                );
            }
            if !verifier_matches(get("code_verifier"), &code.code_challenge) {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "PKCE verification failed",
                );
            }
            state.issue(&code.grant, code.nonce.as_deref())
        }
        "refresh_token" => {
            // Rotation: the presented refresh token is spent; the response carries a new one.
            let rt = state
                .refresh_tokens
                .lock()
                .ok()
                .and_then(|mut r| r.remove(get("refresh_token")));
            let Some(rt) = rt.filter(|r| r.expires_at > now) else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "the refresh token is unknown, expired, revoked or already used",
                );
            };
            state.issue(&rt.grant, None)
        }
        other => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                &format!("grant_type `{}` is not supported", escape(other)),
            )
        }
    };
    match issued {
        Ok(body) => HttpResponse::Ok()
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .insert_header((header::PRAGMA, "no-cache"))
            .json(body),
        Err(e) => {
            tracing::error!(error = %e, "dev OP could not issue tokens");
            oauth_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "token issuance failed",
            )
        }
    }
}

/// `POST /revoke` (RFC 7009): forgets a refresh token; always 200.
async fn revoke(
    req: HttpRequest,
    state: web::Data<OpState>,
    form: web::Form<HashMap<String, String>>,
) -> HttpResponse {
    if !client_authenticated(&req, &state.config) {
        return oauth_error(
            actix_web::http::StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed (client_secret_basic)",
        );
    }
    if let (Some(token), Ok(mut rts)) = (form.get("token"), state.refresh_tokens.lock()) {
        if rts.remove(token).is_some() {
            tracing::info!("dev OP revoked a refresh token");
        }
    }
    HttpResponse::Ok().finish()
}

#[derive(Deserialize)]
struct AccessClaims {
    sub: String,
}

/// `GET|POST /userinfo`: the user's claims for a valid access token of ours.
async fn userinfo(req: HttpRequest, state: web::Data<OpState>) -> HttpResponse {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_issuer(&[&state.config.issuer]);
    // Our access tokens are for the API; userinfo accepts them too (a dev simplification).
    validation.validate_aud = false;
    validation.leeway = 0;
    let claims = token.and_then(|t| {
        decode::<AccessClaims>(t, &state.decoding_key, &validation)
            .ok()
            .map(|d| d.claims)
    });
    match claims {
        Some(c) => HttpResponse::Ok()
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .json(json!({
                "sub": c.sub,
                "name": state.name_of(&c.sub),
                "preferred_username": c.sub,
            })),
        None => HttpResponse::Unauthorized()
            .insert_header((header::WWW_AUTHENTICATE, "Bearer error=\"invalid_token\""))
            .json(json!({
                "error": "invalid_token",
                "error_description": "missing, invalid or expired access token",
            })),
    }
}

// ---------------------------------------------------------------------------------------------
// RP-initiated logout.

/// `GET /end_session`: there is no provider session to end, so this only sends the browser
/// back to a registered `post_logout_redirect_uri` (with `state`), or shows a signed-out page.
async fn end_session(
    state: web::Data<OpState>,
    query: web::Query<HashMap<String, String>>,
) -> HttpResponse {
    let c = &state.config;
    match query.get("post_logout_redirect_uri") {
        Some(uri) if *uri == c.post_logout_redirect_uri => {
            let client_ok = query.get("client_id").is_none_or(|id| *id == c.client_id);
            if !client_ok {
                return error_page(
                    actix_web::http::StatusCode::BAD_REQUEST,
                    "unknown client_id",
                );
            }
            match query.get("state") {
                Some(s) => redirect_with(uri, &[("state", s)]),
                None => redirect_with(uri, &[]),
            }
        }
        Some(_) => error_page(
            actix_web::http::StatusCode::BAD_REQUEST,
            "post_logout_redirect_uri is not registered for this client",
        ),
        None => page(
            "Signed out",
            "<h1>Signed out</h1><p>You are signed out of the development provider.</p>",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test as actix_test;

    const ISSUER: &str = "http://localhost:8081";
    const REDIRECT: &str = "http://localhost:8080/";
    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    fn config() -> DevOpConfig {
        DevOpConfig {
            issuer: ISSUER.into(),
            listen: "127.0.0.1:0".into(),
            client_id: "spa-client".into(),
            client_secret: "s3cret:+&".into(),
            redirect_uri: REDIRECT.into(),
            post_logout_redirect_uri: REDIRECT.into(),
            audience: "http://localhost:8082".into(),
            access_token_ttl: 30,
        }
    }

    /// client_secret_basic as RFC 6749 §2.3.1 says (and token-handler does): urlencoded first.
    fn basic() -> String {
        let secret: String = url::form_urlencoded::byte_serialize(b"s3cret:+&").collect();
        format!("Basic {}", STANDARD.encode(format!("spa-client:{secret}")))
    }

    fn location(resp: &actix_web::dev::ServiceResponse) -> Url {
        let text = resp
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .expect("a Location header");
        Url::parse(text).expect("an absolute Location")
    }

    fn param(url: &Url, name: &str) -> Option<String> {
        url.query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    /// Verifies a JWT of ours with the published JWK, as a relying party would.
    fn verify(jwk: &serde_json::Value, token: &str, aud: &str) -> serde_json::Value {
        let header = jsonwebtoken::decode_header(token).expect("a JWT header");
        assert_eq!(header.alg, Algorithm::ES256);
        assert_eq!(header.kid.as_deref(), jwk["kid"].as_str());
        let jwk: Jwk = serde_json::from_value(jwk.clone()).expect("a JWK");
        let key = DecodingKey::from_jwk(&jwk).expect("a key");
        let mut v = Validation::new(Algorithm::ES256);
        v.set_issuer(&[ISSUER]);
        v.set_audience(&[aud]);
        v.set_required_spec_claims(&["iss", "aud", "sub", "exp", "iat"]);
        decode::<serde_json::Value>(token, &key, &v)
            .expect("a valid signature and claims")
            .claims
    }

    #[actix_web::test]
    async fn code_flow_with_pkce_refresh_rotation_userinfo_revocation_and_logout() {
        let state = web::Data::new(OpState::new(config()).expect("a key"));
        let app = actix_test::init_service(App::new().configure(configure(state))).await;

        let disco: serde_json::Value = actix_test::call_and_read_body_json(
            &app,
            actix_test::TestRequest::get()
                .uri("/.well-known/openid-configuration")
                .to_request(),
        )
        .await;
        assert_eq!(disco["issuer"], ISSUER);
        assert_eq!(disco["code_challenge_methods_supported"], json!(["S256"]));
        let jwks: serde_json::Value = actix_test::call_and_read_body_json(
            &app,
            actix_test::TestRequest::get().uri("/jwks").to_request(),
        )
        .await;
        let jwk = jwks["keys"][0].clone();
        assert_eq!(jwk["kty"], "EC");
        assert!(
            jwk.get("d").is_none(),
            "the JWKS must not publish the private key"
        );

        // An unregistered redirect URI is never redirected to.
        let resp = actix_test::call_service(
            &app,
            actix_test::TestRequest::get()
                .uri("/authorize?client_id=spa-client&redirect_uri=https%3A%2F%2Fevil.test%2F")
                .to_request(),
        )
        .await;
        assert_eq!(resp.status(), 400);

        // Without PKCE: an error sent back to the client.
        let resp = actix_test::call_service(
            &app,
            actix_test::TestRequest::get()
                .uri("/authorize?client_id=spa-client&redirect_uri=http%3A%2F%2Flocalhost%3A8080%2F&response_type=code&scope=openid&state=s1")
                .to_request(),
        )
        .await;
        assert_eq!(resp.status(), 303);
        let back = location(&resp);
        assert_eq!(param(&back, "error").as_deref(), Some("invalid_request"));
        assert_eq!(param(&back, "state").as_deref(), Some("s1"));

        // The login form, then a code.
        let authorize = format!(
            "/authorize?client_id=spa-client&redirect_uri=http%3A%2F%2Flocalhost%3A8080%2F&response_type=code&scope=openid%20profile%20offline_access&state=s2&nonce=n2&code_challenge={CHALLENGE}&code_challenge_method=S256"
        );
        let resp = actix_test::call_service(
            &app,
            actix_test::TestRequest::get().uri(&authorize).to_request(),
        )
        .await;
        assert_eq!(resp.status(), 200);
        let html = String::from_utf8(actix_test::read_body(resp).await.to_vec()).expect("utf-8");
        assert!(html.contains("for development only"));
        let request = html
            .split("name=\"request\" value=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("the pending request id");
        let resp = actix_test::call_service(
            &app,
            actix_test::TestRequest::post()
                .uri("/authorize")
                .set_form([
                    ("request", request),
                    ("username", "Ada <Lovelace>"),
                    ("action", "login"),
                ])
                .to_request(),
        )
        .await;
        assert_eq!(resp.status(), 303);
        let back = location(&resp);
        assert!(back.as_str().starts_with(REDIRECT));
        assert_eq!(param(&back, "state").as_deref(), Some("s2"));
        assert_eq!(param(&back, "iss").as_deref(), Some(ISSUER));
        let code = param(&back, "code").expect("a code");

        let redeem = |code: String, verifier: &str| {
            actix_test::TestRequest::post()
                .uri("/token")
                .insert_header((header::AUTHORIZATION, basic()))
                .set_form([
                    ("grant_type", "authorization_code".to_string()),
                    ("code", code),
                    ("redirect_uri", REDIRECT.to_string()),
                    ("code_verifier", verifier.to_string()),
                ])
                .to_request()
        };
        // A wrong verifier fails, and spends the code.
        let wrong = "x".repeat(43);
        let resp = actix_test::call_service(&app, redeem(code.clone(), &wrong)).await;
        assert_eq!(resp.status(), 400);
        let resp = actix_test::call_service(&app, redeem(code, VERIFIER)).await;
        assert_eq!(
            resp.status(),
            400,
            "a code is single-use, even after a failure"
        );

        // Again, properly.
        let resp = actix_test::call_service(
            &app,
            actix_test::TestRequest::get().uri(&authorize).to_request(),
        )
        .await;
        let html = String::from_utf8(actix_test::read_body(resp).await.to_vec()).expect("utf-8");
        let request = html
            .split("name=\"request\" value=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("the pending request id")
            .to_string();
        let resp = actix_test::call_service(
            &app,
            actix_test::TestRequest::post()
                .uri("/authorize")
                .set_form([
                    ("request", request.as_str()),
                    ("username", "Ada <Lovelace>"),
                    ("action", "login"),
                ])
                .to_request(),
        )
        .await;
        let code = param(&location(&resp), "code").expect("a code");
        let unauthenticated = actix_test::call_service(
            &app,
            actix_test::TestRequest::post()
                .uri("/token")
                .set_form([("grant_type", "authorization_code"), ("code", &code)])
                .to_request(),
        )
        .await;
        assert_eq!(unauthenticated.status(), 401);
        let tokens: serde_json::Value =
            actix_test::call_and_read_body_json(&app, redeem(code, VERIFIER)).await;
        assert_eq!(tokens["token_type"], "Bearer");
        assert_eq!(tokens["expires_in"], 30);
        let id = verify(
            &jwk,
            tokens["id_token"].as_str().expect("id_token"),
            "spa-client",
        );
        assert_eq!(id["sub"], "ada-lovelace");
        assert_eq!(id["name"], "Ada <Lovelace>");
        assert_eq!(id["nonce"], "n2");
        let at = verify(
            &jwk,
            tokens["access_token"].as_str().expect("access_token"),
            "http://localhost:8082",
        );
        assert_eq!(at["sub"], "ada-lovelace");
        assert_eq!(at["exp"].as_i64(), at["iat"].as_i64().map(|t| t + 30));
        assert!(at["jti"].is_string());

        let info: serde_json::Value = actix_test::call_and_read_body_json(
            &app,
            actix_test::TestRequest::get()
                .uri("/userinfo")
                .insert_header((
                    header::AUTHORIZATION,
                    format!(
                        "Bearer {}",
                        tokens["access_token"].as_str().unwrap_or_default()
                    ),
                ))
                .to_request(),
        )
        .await;
        assert_eq!(info["name"], "Ada <Lovelace>");

        // Refresh: a new access token and a new refresh token; the old one is spent.
        let refresh = |rt: &str| {
            actix_test::TestRequest::post()
                .uri("/token")
                .insert_header((header::AUTHORIZATION, basic()))
                .set_form([("grant_type", "refresh_token"), ("refresh_token", rt)])
                .to_request()
        };
        let rt1 = tokens["refresh_token"].as_str().expect("refresh_token");
        let refreshed: serde_json::Value =
            actix_test::call_and_read_body_json(&app, refresh(rt1)).await;
        let at2 = verify(
            &jwk,
            refreshed["access_token"].as_str().expect("access_token"),
            "http://localhost:8082",
        );
        assert_ne!(at2["jti"], at["jti"]);
        let id2 = verify(
            &jwk,
            refreshed["id_token"].as_str().expect("id_token"),
            "spa-client",
        );
        assert_eq!(id2["sub"], "ada-lovelace");
        let rt2 = refreshed["refresh_token"].as_str().expect("refresh_token");
        assert_ne!(rt1, rt2);
        assert_eq!(
            actix_test::call_service(&app, refresh(rt1)).await.status(),
            400
        );

        // Revocation ends the refresh token.
        let resp = actix_test::call_service(
            &app,
            actix_test::TestRequest::post()
                .uri("/revoke")
                .insert_header((header::AUTHORIZATION, basic()))
                .set_form([("token", rt2), ("token_type_hint", "refresh_token")])
                .to_request(),
        )
        .await;
        assert_eq!(resp.status(), 200);
        assert_eq!(
            actix_test::call_service(&app, refresh(rt2)).await.status(),
            400
        );

        // Logout goes back to the registered URI only.
        let resp = actix_test::call_service(
            &app,
            actix_test::TestRequest::get()
                .uri("/end_session?client_id=spa-client&post_logout_redirect_uri=http%3A%2F%2Flocalhost%3A8080%2F")
                .to_request(),
        )
        .await;
        assert_eq!(resp.status(), 303);
        assert_eq!(location(&resp).as_str(), REDIRECT);
        let resp = actix_test::call_service(
            &app,
            actix_test::TestRequest::get()
                .uri("/end_session?post_logout_redirect_uri=https%3A%2F%2Fevil.test%2F")
                .to_request(),
        )
        .await;
        assert_eq!(resp.status(), 400);
    }

    #[test]
    fn subjects_are_slugs() {
        assert_eq!(subject_of("Ada Lovelace"), "ada-lovelace");
        assert_eq!(subject_of("  --Bob__O'Neil!! "), "bob-o-neil");
        assert_eq!(subject_of("☃"), "");
    }

    #[test]
    fn pkce_s256() {
        // RFC 7636 Appendix B.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert!(verifier_matches(
            verifier,
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        ));
        assert!(!verifier_matches(
            verifier,
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cN"
        ));
        assert!(!verifier_matches("short", "x"));
    }
}
