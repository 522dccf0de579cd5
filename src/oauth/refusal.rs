//! The log line for a provider's refusal (an OAuth error answer, RFC 6749 §5.2).
//!
//! Some refusals are not the user's doing but the deployment's: a `redirect_uri` that differs
//! from the registered one, a wrong client secret or authentication method, a client the
//! provider does not allow a grant. The SPA only sees `authorization_error`; the operator must
//! learn from the log what the provider said, so those refusals are logged at `error` with the
//! provider's own `error` and `error_description` and a hint naming the keys to check. Other
//! refusals (an expired code, a revoked refresh token) stay at `info`.
//!
//! The description is the provider's prose, but a provider may quote what it was sent: it is
//! restricted to printable ASCII and 200 characters, and every word that looks like a code, a
//! token or a secret (long, without spaces, with digits) is replaced by `<redacted>`.

use super::error_code::OAuthErrorCode;

/// What to check for a refusal that points at the configuration, `None` for any other.
pub fn config_hint(error: &OAuthErrorCode, description: &str) -> Option<&'static str> {
    let lower = description.to_ascii_lowercase();
    if lower.contains("redirect") {
        return Some("redirect URI mismatch: providers[].redirect_uri must equal, character for character (scheme, host, port, path, trailing slash), a redirect URI registered for this client at the provider");
    }
    match error {
        OAuthErrorCode::InvalidClient => Some("client authentication failed: check providers[].client_id, client_secret or client_secret_file, client_auth (client_secret_basic, client_secret_post, private_key_jwt) and, for private_key_jwt, the key registered at the provider"),
        OAuthErrorCode::UnauthorizedClient | OAuthErrorCode::UnsupportedGrantType => Some("the provider does not allow this client the grant: enable the authorization_code and refresh_token grants for the client at the provider"),
        OAuthErrorCode::InvalidScope => Some("check providers[].scope against the scopes the client may request (offline_access must be allowed for refresh tokens)"),
        _ => None,
    }
}

/// The provider's description, fit for a log line: printable, short, without anything that
/// looks like a code, token or secret.
pub fn scrub_description(text: &str) -> String {
    super::http::safe_description(text)
        .split(' ')
        .map(|word| {
            let core = word.trim_matches(|c: char| "\"'`()[]{}<>,;:.".contains(c));
            let secret_like = core.len() >= 16
                && core.chars().any(|c| c.is_ascii_digit())
                && core
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-._~+/=".contains(c));
            if secret_like {
                word.replace(core, "<redacted>")
            } else {
                word.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Logs a refusal by the provider's `endpoint` (for example "token endpoint"): at `error` with a
/// hint when it points at the configuration, else at `info`.
pub fn log(endpoint: &str, status: u16, error: &OAuthErrorCode, description: &str) {
    let description = scrub_description(description);
    match config_hint(error, &description) {
        Some(hint) => tracing::error!(
            endpoint,
            status,
            error = %error,
            error_description = %description,
            hint,
            "the provider refused the request because of the configuration"
        ),
        None => tracing::info!(
            endpoint,
            status,
            error = %error,
            error_description = %description,
            "provider rejected the request"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// The log output of `f`, as the JSON logs format writes it.
    fn logged(f: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Buffer(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().expect("lock").extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let bytes = buffer.0.lock().expect("lock").clone();
        String::from_utf8(bytes).expect("utf8")
    }

    #[test]
    fn a_redirect_uri_mismatch_is_an_error_with_the_providers_words_and_a_hint() {
        let out = logged(|| {
            log(
                "token endpoint",
                400,
                &OAuthErrorCode::InvalidGrant,
                "grant request is invalid (redirect_uri did not match the one used in the authorization request for code Gx0F3huPD2E6mUPlFiz4Ou1T)",
            )
        });
        assert!(out.contains("\"level\":\"ERROR\""), "{out}");
        assert!(out.contains("\"error\":\"invalid_grant\""), "{out}");
        assert!(out.contains("redirect_uri did not match"), "{out}");
        assert!(out.contains("providers[].redirect_uri must equal"), "{out}");
        assert!(
            !out.contains("Gx0F3huPD2E6mUPlFiz4Ou1T"),
            "the code was logged: {out}"
        );
    }

    #[test]
    fn client_authentication_failures_are_errors_naming_the_keys() {
        let out = logged(|| {
            log(
                "token endpoint",
                401,
                &OAuthErrorCode::InvalidClient,
                "client authentication failed (secret s3cr3t-value-0123456789 is wrong)",
            )
        });
        assert!(out.contains("\"level\":\"ERROR\""), "{out}");
        assert!(out.contains("client authentication failed"), "{out}");
        assert!(out.contains("client_auth"), "{out}");
        assert!(!out.contains("s3cr3t-value-0123456789"), "{out}");
    }

    #[test]
    fn other_refusals_stay_at_info() {
        let out = logged(|| {
            log(
                "token endpoint",
                400,
                &OAuthErrorCode::InvalidGrant,
                "authorization code is expired",
            )
        });
        assert!(out.contains("\"level\":\"INFO\""), "{out}");
        assert!(out.contains("authorization code is expired"), "{out}");
        assert!(!out.contains("hint"), "{out}");
    }

    #[test]
    fn prose_urls_and_short_words_survive_scrubbing() {
        let text = "redirect_uri https://www.example.com/ is not registered; see ZX81 docs";
        assert_eq!(scrub_description(text), text);
    }
}
