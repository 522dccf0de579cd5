//! Outbound HTTP to providers: one client setup, one way to read a JSON answer.
//!
//! Redirects are never followed (a token endpoint that redirects would carry our client
//! credentials somewhere unplanned), every call has a timeout, and answer bodies are capped so a
//! misbehaving provider cannot exhaust memory. Bodies are never logged: they may hold tokens.

use super::error_code::OAuthErrorCode;
use crate::error::ApiError;
use awc::http::StatusCode;
use std::sync::Arc;
use std::time::Duration;

/// Simultaneous outbound connections per worker (awc's default of 100 would queue proxied
/// requests under load).
const MAX_CONNECTIONS: usize = 4096;

/// Largest provider answer read (discovery documents and JWKS are a few KiB).
const MAX_BODY: usize = 1024 * 1024;

/// Why a call to the provider did not produce a usable answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// Unreachable, timed out, 5xx, or an answer that is not the JSON the spec promises.
    #[error("{0}")]
    Unavailable(String),
    /// A 4xx answer; `error` is the OAuth error code (RFC 6749 §5.2) when the body had one.
    #[error("the provider answered {status} ({error})")]
    Rejected { status: u16, error: OAuthErrorCode },
}

/// The front-to-back calls whose refusal the SPA is told about, each with its one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderCall {
    /// A pushed authorization request (RFC 9126 §2).
    PushedAuthorization,
    /// The redemption of an authorization code (RFC 6749 §4.1.3).
    CodeRedemption,
    /// A refresh grant (RFC 6749 §6).
    Refresh,
    /// The userinfo request (OIDC Core §5.3).
    UserInfo,
}

impl ProviderCall {
    /// What the SPA reads when the provider refused this call with `error`.
    pub fn refused(self, error: &OAuthErrorCode) -> String {
        // RFC 6749 §5.2: `invalid_client` is the client's authentication failing, not the code
        // or the refresh token: the operator's configuration, which a new login cannot repair.
        // The commonest cause with `client_secret_basic`: RFC 6749 §2.3.1 form-encodes the id
        // and secret before base64, and providers that do not decode them (django-oidc-provider,
        // docs/providers.md) refuse a secret with characters the encoding changes.
        if *error == OAuthErrorCode::InvalidClient && call_authenticates(self) {
            return format!(
                "the identity provider refused token-handler's client authentication ({error}): check this provider's client_id, client_secret and client_auth; with client_secret_basic, a secret with characters other than letters, digits and -._~ needs a provider that decodes it (RFC 6749 §2.3.1), or client_secret_post"
            );
        }
        match self {
            ProviderCall::PushedAuthorization => {
                format!("the identity provider refused the pushed authorization request ({error})")
            }
            ProviderCall::CodeRedemption => format!(
                "the identity provider refused the authorization code ({error}); it may have expired or been used already: start a new login"
            ),
            ProviderCall::Refresh => format!("the identity provider refused the refresh ({error})"),
            ProviderCall::UserInfo => {
                format!("the identity provider refused the userinfo request ({error})")
            }
        }
    }
}

/// Whether the call authenticates the client (token and PAR endpoints; userinfo uses the
/// access token instead).
fn call_authenticates(call: ProviderCall) -> bool {
    !matches!(call, ProviderCall::UserInfo)
}

impl CallError {
    /// What the SPA is told about a failed front-to-back call: a refusal is the provider's
    /// verdict on the request (`authorization_error`, described by [`ProviderCall::refused`]),
    /// anything else is the provider's failure (502). A userinfo request refused with 401 or
    /// 403 is classified by the `/userInfo` route before this, by the token's sealed expiry
    /// (`token_expired` or `userinfo_refused`).
    pub fn into_api_error(self, call: ProviderCall) -> ApiError {
        match self {
            CallError::Rejected { error, .. } => ApiError::AuthorizationError(call.refused(&error)),
            CallError::Unavailable(m) => ApiError::ProviderUnavailable(m),
        }
    }
}

/// Whether an HTTP/1.1 answer's body is delimited only by the connection closing (RFC 9112 §6.3
/// rule 8): no `Content-Length`, no `Transfer-Encoding`. Python's `wsgiref` (Django's own server)
/// answers so. awc reads such a body as empty, so an empty JSON answer with these headers is
/// reported for what it is instead of as "not valid JSON" further on.
fn close_delimited(headers: &awc::http::header::HeaderMap) -> bool {
    !headers.contains_key(awc::http::header::CONTENT_LENGTH)
        && !headers.contains_key(awc::http::header::TRANSFER_ENCODING)
}

/// Builds the client used for provider and upstream calls (one per worker: awc clients are not
/// `Send`).
/// How long a pooled connection may sit idle and still be reused. Many servers close idle
/// keep-alive connections after 5 s (actix-web's and Node's default); reusing one at that moment
/// races the server's close, and the request fails with a reset that no retry repairs (a 502 for
/// the SPA). Below that, a connection is retired before the server retires it.
const IDLE_REUSE: Duration = Duration::from_secs(4);

pub fn build_client(connect_timeout: Duration) -> awc::Client {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let connector = match rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
    {
        Ok(builder) => {
            let tls = builder.with_root_certificates(roots).with_no_client_auth();
            awc::Connector::new()
                .rustls_0_23(Arc::new(tls))
                .timeout(connect_timeout)
                .conn_keep_alive(IDLE_REUSE)
                .limit(MAX_CONNECTIONS)
        }
        Err(e) => {
            // Only reachable if ring offered no protocol version, which it always does.
            tracing::error!(error = %e, "TLS setup failed; https providers will be unreachable");
            awc::Connector::new()
                .timeout(connect_timeout)
                .conn_keep_alive(IDLE_REUSE)
                .limit(MAX_CONNECTIONS)
        }
    };
    awc::Client::builder()
        .connector(connector)
        .disable_redirects()
        .add_default_header((
            awc::http::header::USER_AGENT,
            concat!("token-handler/", env!("CARGO_PKG_VERSION")),
        ))
        .finish()
}

/// Sends a request and reads a JSON answer. 2xx → the JSON; 4xx → `Rejected` with the OAuth
/// error code; anything else → `Unavailable`. `what` names the endpoint in errors and logs.
pub async fn send_json(
    request: awc::SendClientRequest,
    what: &str,
) -> Result<serde_json::Value, CallError> {
    send(request, what, Body::Json).await
}

/// As [`send_json`], for answers whose body the protocol says to ignore: a revocation
/// endpoint's 200 (RFC 7009 §2.2).
pub async fn send_ignoring_body(
    request: awc::SendClientRequest,
    what: &str,
) -> Result<(), CallError> {
    send(request, what, Body::Ignored).await.map(|_| ())
}

/// What the caller does with a successful answer's body.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Body {
    Json,
    Ignored,
}

async fn send(
    request: awc::SendClientRequest,
    what: &str,
    body: Body,
) -> Result<serde_json::Value, CallError> {
    let started = std::time::Instant::now();
    let result = exchange(request, what, body).await;
    crate::metrics::METRICS
        .provider_duration
        .get_or_create(&crate::metrics::EndpointLabel {
            endpoint: what.to_string(),
        })
        .observe(started.elapsed().as_secs_f64());
    result
}

async fn exchange(
    request: awc::SendClientRequest,
    what: &str,
    expected: Body,
) -> Result<serde_json::Value, CallError> {
    let mut resp = request.await.map_err(|e| {
        tracing::warn!(endpoint = what, error = %e, "provider call failed");
        CallError::Unavailable(format!("the provider's {what} could not be reached"))
    })?;
    let status = resp.status();
    let body = resp.body().limit(MAX_BODY).await.map_err(|e| {
        tracing::warn!(endpoint = what, error = %e, "reading the provider's answer failed");
        CallError::Unavailable(format!("the provider's {what} answer could not be read"))
    })?;
    if status.is_success() {
        if body.is_empty() && expected == Body::Json && close_delimited(resp.headers()) {
            tracing::warn!(
                endpoint = what,
                "the provider's answer has neither Content-Length nor chunked encoding; its body \
                 ends where the connection closes (RFC 9112 §6.3), which token-handler's HTTP \
                 client does not read: make the provider's server set Content-Length"
            );
            return Err(CallError::Unavailable(format!(
                "the provider's {what} answered without Content-Length or chunked encoding \
                 (a body delimited by closing the connection, RFC 9112 §6.3, is not read)"
            )));
        }
        if body.is_empty() {
            return Ok(serde_json::Value::Null);
        }
        return serde_json::from_slice(&body).map_err(|_| {
            tracing::warn!(endpoint = what, %status, "provider answered with invalid JSON");
            CallError::Unavailable(format!("the provider's {what} answered with invalid JSON"))
        });
    }
    if status.is_client_error() {
        let parsed = serde_json::from_slice::<serde_json::Value>(&body).ok();
        let field = |name: &str| {
            parsed
                .as_ref()
                .and_then(|v| v.get(name))
                .and_then(|e| e.as_str())
                .map(String::from)
        };
        let error = field("error")
            .map(|e| OAuthErrorCode::parse(&e))
            .unwrap_or_else(|| default_code(status));
        // The description is the provider's explanation (scrubbed of anything secret-like by
        // `refusal::log`): worth logging, at error with a hint when it names a configuration fault.
        let description = field("error_description").unwrap_or_default();
        super::refusal::log(what, status.as_u16(), &error, &description);
        return Err(CallError::Rejected {
            status: status.as_u16(),
            error,
        });
    }
    tracing::warn!(endpoint = what, %status, "provider error");
    Err(CallError::Unavailable(format!(
        "the provider's {what} answered {status}"
    )))
}

/// The code of a 4xx answer without one: a 401 refused the token we sent (RFC 6750 §3.1).
fn default_code(status: StatusCode) -> OAuthErrorCode {
    match status {
        StatusCode::UNAUTHORIZED => OAuthErrorCode::InvalidToken,
        _ => OAuthErrorCode::InvalidRequest,
    }
}

/// Restricts a provider-supplied error code to RFC 6749's alphabet for `error`
/// (%x20-21 / %x23-5B / %x5D-7E), further narrowed to `[A-Za-z0-9_.-]` and 64 characters, so it
/// is safe in JSON, logs and headers. Anything else becomes `invalid_request`.
pub fn safe_code(code: &str) -> String {
    if !code.is_empty()
        && code.len() <= 64
        && code
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        code.to_string()
    } else {
        "invalid_request".to_string()
    }
}

/// Bounds a provider-supplied description (front-channel `error_description`) to printable
/// ASCII and 200 characters before it reaches a JSON message.
pub fn safe_description(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(200)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_codes_are_restricted() {
        assert_eq!(safe_code("invalid_grant"), "invalid_grant");
        assert_eq!(safe_code("<script>"), "invalid_request");
        assert_eq!(safe_code("a\r\nSet-Cookie: x"), "invalid_request");
        assert_eq!(safe_code(&"a".repeat(65)), "invalid_request");
        assert_eq!(safe_description("bad\r\nthing"), "badthing");
    }

    /// django-oidc-provider refused a form-encoded Basic secret with `invalid_client`, and the
    /// SPA was told the code "may have expired or been used already" (tests/api/dop.rs).
    #[test]
    fn invalid_client_names_the_client_authentication_not_the_grant() {
        let rejected = |code: &str| CallError::Rejected {
            status: 401,
            error: OAuthErrorCode::parse(code),
        };
        for call in [
            ProviderCall::CodeRedemption,
            ProviderCall::Refresh,
            ProviderCall::PushedAuthorization,
        ] {
            let e = rejected("invalid_client").into_api_error(call);
            assert_eq!(e.code(), "authorization_error");
            let m = e.to_string();
            assert!(m.contains("client authentication (invalid_client)"), "{m}");
            assert!(m.contains("client_secret_post"), "{m}");
            assert!(!m.contains("expired"), "{m}");
        }
        let m = rejected("invalid_grant")
            .into_api_error(ProviderCall::CodeRedemption)
            .to_string();
        assert!(m.contains("may have expired"), "{m}");
    }

    #[test]
    fn a_refused_call_maps_by_what_was_refused() {
        let rejected = |status, code: &str| CallError::Rejected {
            status,
            error: OAuthErrorCode::parse(code),
        };
        // A userinfo 400 is the provider's verdict on the request.
        let e = rejected(400, "invalid_request").into_api_error(ProviderCall::UserInfo);
        assert_eq!(e.code(), "authorization_error");
        let e = rejected(401, "invalid_client").into_api_error(ProviderCall::CodeRedemption);
        assert_eq!(e.code(), "authorization_error");
        assert!(e.to_string().contains("(invalid_client)"), "{e}");
        let e = CallError::Unavailable("down".into()).into_api_error(ProviderCall::Refresh);
        assert_eq!(e.code(), "authorization_server_error");
    }
}
