//! The OAuth error code a provider answers with (RFC 6749 §5.2), typed.
//!
//! Callers branch on what a refusal means (`invalid_grant`: the refresh token is dead and the
//! session is over), so the codes they branch on are variants, not strings compared in several
//! places. A code the spec does not define is kept as [`OAuthErrorCode::Other`], but only once
//! it passed [`safe_code`]: the code reaches JSON messages and log lines.

use super::http::safe_code;
use std::fmt;

/// An OAuth 2.0 error code from a token-endpoint answer (RFC 6749 §5.2), or from a protected
/// resource's 401 (RFC 6750 §3.1).
#[derive(Clone, PartialEq, Eq)]
pub enum OAuthErrorCode {
    InvalidRequest,
    InvalidClient,
    /// The grant (code or refresh token) is invalid, expired, revoked or was issued to another
    /// client (RFC 6749 §5.2): for a refresh, the session cannot continue.
    InvalidGrant,
    UnauthorizedClient,
    UnsupportedGrantType,
    InvalidScope,
    /// RFC 6750 §3.1: the access token is expired, revoked or malformed.
    InvalidToken,
    /// Any other code, restricted to [`safe_code`]'s alphabet; build it with
    /// [`OAuthErrorCode::parse`] only.
    Other(String),
}

impl OAuthErrorCode {
    /// A provider-supplied code. One outside [`safe_code`]'s alphabet becomes
    /// `invalid_request`, as it always did.
    pub fn parse(code: &str) -> Self {
        match safe_code(code).as_str() {
            "invalid_request" => Self::InvalidRequest,
            "invalid_client" => Self::InvalidClient,
            "invalid_grant" => Self::InvalidGrant,
            "unauthorized_client" => Self::UnauthorizedClient,
            "unsupported_grant_type" => Self::UnsupportedGrantType,
            "invalid_scope" => Self::InvalidScope,
            "invalid_token" => Self::InvalidToken,
            _ => Self::Other(safe_code(code)),
        }
    }

    /// The code as sent on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidGrant => "invalid_grant",
            Self::UnauthorizedClient => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::InvalidScope => "invalid_scope",
            Self::InvalidToken => "invalid_token",
            Self::Other(code) => code,
        }
    }
}

/// Debug shows the code as sent, so log lines that debug-print a failure read as before.
impl fmt::Debug for OAuthErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for OAuthErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_parse_to_variants_and_print_as_sent() {
        for code in [
            "invalid_request",
            "invalid_client",
            "invalid_grant",
            "unauthorized_client",
            "unsupported_grant_type",
            "invalid_scope",
            "invalid_token",
            "slow_down",
        ] {
            assert_eq!(OAuthErrorCode::parse(code).to_string(), code);
        }
        assert_eq!(
            OAuthErrorCode::parse("invalid_grant"),
            OAuthErrorCode::InvalidGrant
        );
        assert_eq!(
            OAuthErrorCode::parse("slow_down"),
            OAuthErrorCode::Other("slow_down".into())
        );
        assert_eq!(
            format!("{:?}", OAuthErrorCode::InvalidGrant),
            "\"invalid_grant\""
        );
        // Outside the safe alphabet: invalid_request, never the provider's text.
        assert_eq!(
            OAuthErrorCode::parse("a\r\nSet-Cookie: x"),
            OAuthErrorCode::InvalidRequest
        );
    }
}
