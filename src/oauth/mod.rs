//! The OAuth 2.0 / OpenID Connect client: discovery, PKCE, token requests, ID-token validation.
//!
//! token-handler is a confidential client: it alone holds the client secret and redeems codes.
//! Everything the provider sends back is treated as untrusted input until checked: discovery
//! must name the configured issuer, ID tokens are verified against the provider's JWKS, and
//! error bodies are reduced to a safe error code before they reach a client or a log line.

pub mod authorize;
pub mod bound;
pub mod callback;
pub mod client_auth;
pub mod error_code;
pub mod http;
pub mod id_token;
pub mod jwks;
pub mod logout_token;
pub mod metadata;
pub mod narrow;
pub mod pkce;
pub mod provider;
pub mod refusal;
pub mod token;
pub mod userinfo_claims;

pub use provider::{Provider, Providers};
