//! Narrowing the session's token for one API: the two token requests, and what their refusals
//! mean.
//!
//! A route may need a token that only its API accepts (least privilege: a token stolen from one
//! API is worthless at the others). Two standard ways get one without a new login: a
//! refresh-token grant that names the API's resource indicator (RFC 8707 §2.2), and a token
//! exchange with the session's access token as subject (RFC 8693 §2.1). Both go to the token
//! endpoint with the provider's client authentication ([`super::token`]).
//!
//! A refusal is never answered by falling back to the broader session token: that would hand an
//! API exactly the token the operator chose to keep from it. The caller gets a
//! [`NarrowFailure`] and the SPA a clear error.

use super::error_code::OAuthErrorCode;
use super::http::CallError;
use super::metadata::ProviderMetadata;
use super::token::{pairs, token_request, TokenResponse};
use crate::config::{NarrowKind, Narrowing, ProviderConfig};
use crate::secret::Token;

/// RFC 8693 §3: the grant type of a token exchange.
pub const TOKEN_EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// RFC 8693 §3: the token type of an OAuth access token.
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
/// RFC 8693 §3: the token type of a JWT (some providers issue exchanged access tokens as such).
pub const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";

/// Why no narrowed token was issued. Shared by the requests that joined one grant, hence
/// `Clone`.
#[derive(Debug, Clone)]
pub enum NarrowFailure {
    /// The provider refused this narrowing (`invalid_target`, `invalid_scope`,
    /// `unauthorized_client`, …): the session may not have a token for this API.
    Refused(OAuthErrorCode),
    /// The refresh token is dead (RFC 6749 §5.2 `invalid_grant` on a refresh-token grant): the
    /// session is over.
    SessionOver,
    /// The provider could not be reached, answered 5xx, or answered something unusable.
    Unavailable(String),
}

impl NarrowFailure {
    fn from_call(kind: NarrowKind, e: CallError) -> Self {
        match e {
            // A refresh-token grant refused as `invalid_grant` says the refresh token is invalid,
            // expired or revoked (RFC 6749 §5.2), as it would for the session's own refresh.
            CallError::Rejected {
                error: OAuthErrorCode::InvalidGrant,
                ..
            } if kind == NarrowKind::Resource => NarrowFailure::SessionOver,
            CallError::Rejected { error, .. } => NarrowFailure::Refused(error),
            CallError::Unavailable(m) => NarrowFailure::Unavailable(m),
        }
    }
}

/// What the route's token request needs from the session: the refresh token for a resource
/// grant, the access token for an exchange.
pub enum Subject<'a> {
    RefreshToken(&'a Token),
    AccessToken(&'a Token),
}

/// Requests the route's narrowed token.
///
/// - Resource (RFC 8707 §2.2): `grant_type=refresh_token`, `refresh_token`, `resource` and, when
///   the route narrows it, `scope` (RFC 6749 §6: no broader than the original grant).
/// - Exchange (RFC 8693 §2.1): `grant_type=…:token-exchange`, `subject_token` (the session's
///   access token), `subject_token_type=…:access_token`, `requested_token_type=…:access_token`,
///   and the route's `audience`, `resource` and `scope`. The answer must be an access token
///   (§2.2.1 `issued_token_type`, when given) of type Bearer.
///
/// The provider's `extra_token_params` are not sent: they were written for the session's own
/// grants, and a narrowing request says exactly what it asks for.
pub async fn request(
    client: &awc::Client,
    config: &ProviderConfig,
    metadata: &ProviderMetadata,
    narrowing: &Narrowing,
    subject: Subject<'_>,
) -> Result<TokenResponse, NarrowFailure> {
    let kind = narrowing.kind;
    let mut form: Vec<(String, String)> = match (kind, subject) {
        (NarrowKind::Resource, Subject::RefreshToken(rt)) => pairs(
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", rt.expose()),
            ],
            &[],
        ),
        (NarrowKind::Exchange, Subject::AccessToken(at)) => pairs(
            &[
                ("grant_type", TOKEN_EXCHANGE_GRANT),
                ("subject_token", at.expose()),
                ("subject_token_type", ACCESS_TOKEN_TYPE),
                ("requested_token_type", ACCESS_TOKEN_TYPE),
            ],
            &[],
        ),
        // A bug in the caller, not the provider's fault nor the user's.
        _ => {
            tracing::error!("a narrowing request was given the wrong subject token");
            return Err(NarrowFailure::Unavailable(
                "token-handler could not build the token request".into(),
            ));
        }
    };
    if let Some(resource) = &narrowing.resource {
        form.push(("resource".into(), resource.clone()));
    }
    if let Some(audience) = &narrowing.audience {
        form.push(("audience".into(), audience.clone()));
    }
    if let Some(scope) = &narrowing.scope {
        form.push(("scope".into(), scope.clone()));
    }
    let tokens = token_request(client, config, metadata, form)
        .await
        .map_err(|e| NarrowFailure::from_call(kind, e))?;
    if let Some(issued) = &tokens.issued_token_type {
        if issued != ACCESS_TOKEN_TYPE && issued != JWT_TOKEN_TYPE {
            tracing::warn!(provider = %config.id, issued = %super::http::safe_code(issued), "the token exchange issued no access token");
            return Err(NarrowFailure::Unavailable(
                "the provider's token exchange did not issue an access token".into(),
            ));
        }
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_grant_ends_the_session_only_for_a_refresh_token_grant() {
        let rejected = |code: &str| CallError::Rejected {
            status: 400,
            error: OAuthErrorCode::parse(code),
        };
        assert!(matches!(
            NarrowFailure::from_call(NarrowKind::Resource, rejected("invalid_grant")),
            NarrowFailure::SessionOver
        ));
        assert!(matches!(
            NarrowFailure::from_call(NarrowKind::Exchange, rejected("invalid_grant")),
            NarrowFailure::Refused(OAuthErrorCode::InvalidGrant)
        ));
        assert!(matches!(
            NarrowFailure::from_call(NarrowKind::Resource, rejected("invalid_target")),
            NarrowFailure::Refused(_)
        ));
        assert!(matches!(
            NarrowFailure::from_call(NarrowKind::Exchange, CallError::Unavailable("x".into())),
            NarrowFailure::Unavailable(_)
        ));
    }
}
