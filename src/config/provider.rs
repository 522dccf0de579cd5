//! Identity providers: the `[[providers]]` entries, presets for well-known providers, and how
//! token-handler authenticates to each.
//!
//! A preset only fills in what the configuration leaves unset (endpoints, scope, parameters a
//! provider needs), so an operator can always override it. Everything is validated here: a
//! private key that does not parse or a preset that lacks its tenant fails at startup, not at
//! the first login.

use super::de::{
    bool_or_text, duration, opt_bool_or_text, opt_list_or_text, usize_or_text, word_enum,
};
use super::{is_token, parse_provider_url, parse_url, read_secret_file, ConfigError, SecretFile};
use crate::oauth::id_token::{IdTokenSigning, StepUp, ACCEPTED_ALGORITHMS, HMAC_ALGORITHMS};
use crate::oauth::userinfo_claims::{UserInfoClaims, STANDARD_CLAIMS};
use actix_web::http::header::{HeaderName, HeaderValue};
use jsonwebtoken::{Algorithm, EncodingKey};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;
use url::Url;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProvider {
    id: String,
    preset: Option<Preset>,
    /// Microsoft Entra ID tenant (GUID or domain), with `preset = "microsoft"`.
    tenant: Option<String>,
    issuer: Option<String>,
    client_id: String,
    client_auth: Option<ClientAuthMethod>,
    client_secret: Option<String>,
    client_secret_file: Option<PathBuf>,
    private_key_file: Option<PathBuf>,
    private_key_id: Option<String>,
    /// `endpoint` (default) or `issuer`: the `aud` of private_key_jwt assertions.
    client_assertion_audience: Option<AssertionAudience>,
    redirect_uri: String,
    /// Refuse authorization responses without `iss` (RFC 9207).
    #[serde(default, deserialize_with = "bool_or_text")]
    require_iss: bool,
    post_logout_redirect_uri: Option<String>,
    scope: Option<String>,
    #[serde(default = "default_timeout", deserialize_with = "duration")]
    timeout: Duration,
    /// Issue 17: calls to this provider in flight at once, across all workers; more wait.
    #[serde(
        default = "default_max_concurrent_calls",
        deserialize_with = "usize_or_text"
    )]
    max_concurrent_calls: usize,
    #[serde(default)]
    extra_auth_params: BTreeMap<String, String>,
    #[serde(default)]
    extra_token_params: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "opt_list_or_text")]
    allowed_extra_params: Option<Vec<String>>,
    par: Option<ParMode>,
    authorization_endpoint: Option<String>,
    token_endpoint: Option<String>,
    userinfo_endpoint: Option<String>,
    jwks_uri: Option<String>,
    end_session_endpoint: Option<String>,
    revocation_endpoint: Option<String>,
    pushed_authorization_request_endpoint: Option<String>,
    // Issue 14: the paths tutorials use (discovery switch, ID-token algorithm, token headers).
    /// `false`: never fetch discovery; the configured endpoints are all there is.
    #[serde(default, deserialize_with = "opt_bool_or_text")]
    discovery: Option<bool>,
    /// The one algorithm ID tokens must be signed with; HS256/384/512: keyed with the client
    /// secret (OIDC Core §10.1).
    id_token_signing_alg: Option<String>,
    /// Headers added to the token requests (code exchange and refresh).
    #[serde(default)]
    token_request_headers: BTreeMap<String, String>,
    /// `post` (default) or `get`: how the userinfo endpoint is called.
    userinfo_method: Option<UserInfoMethod>,
    /// `auto` (default), `provider` or `id_token`: where `/userInfo` takes the user's claims.
    userinfo_source: Option<UserInfoSource>,
    /// Standard claim = member of the provider's user answer (plain OAuth 2.0 providers).
    userinfo_claims: Option<BTreeMap<String, String>>,
    /// A GitHub-style list of the user's addresses, asked when the user answer's email is null.
    userinfo_emails_endpoint: Option<String>,
    // Issue 14 part 3: choosing a provider (GET /providers, a forced provider).
    /// The name `GET /providers` shows for the "sign in with …" choice; default: the id.
    display_name: Option<String>,
    /// `true`: the only provider logins may use ("force users to sign in with this provider").
    #[serde(default, deserialize_with = "bool_or_text")]
    exclusive: bool,
    // Issue 18 item 2: readiness by required providers.
    /// Whether `/health/ready` waits for this provider's metadata; default: only the default
    /// provider (the exclusive one, else the first) is required.
    #[serde(default, deserialize_with = "opt_bool_or_text")]
    required: Option<bool>,
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

/// Enough for a busy replica's steady refreshes and logins, few enough that 1,000 sessions
/// expiring together do not open 1,000 connections to the provider at once.
fn default_max_concurrent_calls() -> usize {
    32
}

/// Parameters an SPA may add at login when `allowed_extra_params` is not set: the OpenID
/// Connect request parameters that change how the provider asks, never what it returns to whom.
pub const DEFAULT_ALLOWED_EXTRA_PARAMS: [&str; 6] = [
    "prompt",
    "ui_locales",
    "login_hint",
    "acr_values",
    "max_age",
    "claims",
];

/// Well-known providers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    Google,
    Microsoft,
    GitHub,
    Auth0,
    Keycloak,
    Okta,
}

word_enum!(Preset {
    "google" => Preset::Google,
    "microsoft" => Preset::Microsoft,
    "github" => Preset::GitHub,
    "auth0" => Preset::Auth0,
    "keycloak" => Preset::Keycloak,
    "okta" => Preset::Okta,
});

/// `client_auth`: the `token_endpoint_auth_method` as written in the configuration, before the
/// secret or key it needs is read into a [`ClientAuth`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientAuthMethod {
    SecretBasic,
    SecretPost,
    PrivateKeyJwt,
    None,
}

word_enum!(ClientAuthMethod {
    "client_secret_basic" => ClientAuthMethod::SecretBasic,
    "client_secret_post" => ClientAuthMethod::SecretPost,
    "private_key_jwt" => ClientAuthMethod::PrivateKeyJwt,
    "none" => ClientAuthMethod::None,
});

impl ClientAuthMethod {
    /// The name as configured, for messages.
    fn name(self) -> &'static str {
        match self {
            ClientAuthMethod::SecretBasic => "client_secret_basic",
            ClientAuthMethod::SecretPost => "client_secret_post",
            ClientAuthMethod::PrivateKeyJwt => "private_key_jwt",
            ClientAuthMethod::None => "none",
        }
    }
}

/// How token-handler proves its identity to the provider's token, PAR and revocation endpoints.
#[derive(Clone)]
pub enum ClientAuth {
    /// HTTP Basic with the client secret (RFC 6749 §2.3.1).
    SecretBasic(SecretString),
    /// The client secret in the form body (RFC 6749 §2.3.1, discouraged by the RFC).
    SecretPost(SecretString),
    /// A JWT signed with the client's private key (RFC 7523, OIDC Core §9).
    PrivateKeyJwt {
        key: EncodingKey,
        alg: Algorithm,
        kid: Option<String>,
        audience: AssertionAudience,
    },
    /// A public client: only `client_id` (PKCE still protects the code).
    None,
}

impl ClientAuth {
    /// The `token_endpoint_auth_method` name.
    pub fn method(&self) -> &'static str {
        match self {
            ClientAuth::SecretBasic(_) => "client_secret_basic",
            ClientAuth::SecretPost(_) => "client_secret_post",
            ClientAuth::PrivateKeyJwt { .. } => "private_key_jwt",
            ClientAuth::None => "none",
        }
    }
}

impl fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientAuth::PrivateKeyJwt {
                alg, kid, audience, ..
            } => {
                write!(
                    f,
                    "PrivateKeyJwt(alg={alg:?}, kid={kid:?}, audience={audience:?}, key=<redacted>)"
                )
            }
            other => write!(f, "{}(<redacted>)", other.method()),
        }
    }
}

/// The `aud` of a `private_key_jwt` client assertion.
///
/// RFC 7523 §3 lets the authorization server name what it accepts; most accept the URL of the
/// endpoint called (the long-standing default here). FAPI 2.0 Security Profile and the
/// RFC 7523 update (draft-ietf-oauth-rfc7523bis) require the issuer identifier as the only
/// audience, which closes audience-injection attacks on assertions; providers that follow them
/// refuse anything else, so the operator picks per provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssertionAudience {
    /// The URL of the endpoint the assertion is sent to.
    Endpoint,
    /// The provider's issuer identifier, exactly as configured.
    Issuer,
}

word_enum!(AssertionAudience {
    "endpoint" => AssertionAudience::Endpoint,
    "issuer" => AssertionAudience::Issuer,
});

/// Pushed authorization requests (RFC 9126).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParMode {
    /// Used when the provider advertises a PAR endpoint.
    Auto,
    /// Always used; a provider without a PAR endpoint is an error.
    Required,
    /// Never used.
    Off,
}

word_enum!(ParMode {
    "auto" => ParMode::Auto,
    "required" => ParMode::Required,
    "off" => ParMode::Off,
});

/// `userinfo_method`: the HTTP method of the userinfo request (OIDC Core §5.3.1 allows GET and
/// POST, the access token in the `Authorization` header either way).
///
/// POST is the default because the OAuth Agent's reference implementations use it (an empty
/// form body, the token in the header), so SPAs written for them see the same provider
/// behaviour. A provider that answers a POST with 405 is asked with GET from then on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserInfoMethod {
    Post,
    Get,
}

word_enum!(UserInfoMethod {
    "post" => UserInfoMethod::Post,
    "get" => UserInfoMethod::Get,
});

/// `userinfo_source`: where `GET /userInfo` takes the user's claims from.
///
/// An access token issued for an API (an RFC 8707 resource, an Entra API scope, an Auth0
/// audience) is refused by most userinfo endpoints, although it is valid. The ID token's claims
/// describe the same user, were verified when the token was received (OIDC Core §3.1.3.7) and
/// are sealed in the session since, so they are a sound answer then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserInfoSource {
    /// The userinfo endpoint; when it refuses an access token that is not expired (or there
    /// is no userinfo endpoint), the ID token's claims, if the session has an ID token.
    Auto,
    /// The userinfo endpoint only: a refusal is `403 userinfo_refused`.
    Provider,
    /// The ID token's claims only: the provider is not called (needs the `openid` scope).
    IdToken,
}

word_enum!(UserInfoSource {
    "auto" => UserInfoSource::Auto,
    "provider" => UserInfoSource::Provider,
    "id_token" => UserInfoSource::IdToken,
});

/// One identity provider.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    pub id: String,
    pub preset: Option<Preset>,
    /// The issuer exactly as configured (no trailing slash added), compared with discovery.
    pub issuer: String,
    /// Whether to fetch discovery at all (plain OAuth 2.0 providers such as GitHub have none).
    pub discovery: bool,
    pub client_id: String,
    pub client_auth: ClientAuth,
    pub redirect_uri: Url,
    pub post_logout_redirect_uri: Option<Url>,
    pub scope: String,
    /// Total time allowed for each call to this provider.
    pub timeout: Duration,
    /// Most calls to this provider in flight at once in this process (token, PAR, revocation
    /// and userinfo endpoints); further calls wait their turn ([`crate::oauth::bound`]).
    pub max_concurrent_calls: usize,
    /// Added to every authorization request; the SPA can not override them.
    pub extra_auth_params: Vec<(String, String)>,
    /// The `acr_values` and `max_age` among `extra_auth_params`, enforced on the login's ID
    /// token (OIDC Core §3.1.3.7 items 12 and 13).
    pub step_up: StepUp,
    /// Refuse an authorization response without `iss` (RFC 9207), whatever discovery says.
    /// Required of every provider that shares its `redirect_uri` with another (RFC 9700 §4.4).
    pub require_iss: bool,
    /// Added to every token request (code exchange and refresh).
    pub extra_token_params: TokenParams,
    /// Names the SPA may send in `extraParams`.
    pub allowed_extra_params: Vec<String>,
    pub par: ParMode,
    /// Configured endpoints; each overrides what discovery says.
    pub endpoints: EndpointOverrides,
    /// How ID tokens are signed: the configuration decides, never the token's header.
    pub id_token_signing: IdTokenSigning,
    /// Added as headers to every token request (code exchange and refresh).
    pub token_request_headers: TokenRequestHeaders,
    /// How the userinfo endpoint is called ([`UserInfoMethod`]).
    pub userinfo_method: UserInfoMethod,
    /// Where `/userInfo` takes the user's claims from ([`UserInfoSource`]).
    pub userinfo_source: UserInfoSource,
    /// How the provider's user answer becomes standard claims (`userinfo_claims`).
    pub userinfo_claims: UserInfoClaims,
    /// Where the primary verified address is asked when the user answer has no `email`
    /// (`userinfo_emails_endpoint`: GitHub's `/user/emails`).
    pub userinfo_emails_endpoint: Option<Url>,
    /// What `GET /providers` shows users; the id when not configured.
    pub display_name: String,
    /// The only provider logins may use; others stay configured for sessions already open.
    pub exclusive: bool,
    /// Readiness waits for this provider's metadata ([`providers`] resolves the default).
    pub required: bool,
}

/// Token-request parameters from the configuration (`extra_token_params`). Their values may be
/// credentials (an API key, a tenant secret), so Debug shows the names only.
#[derive(Clone, Default)]
pub struct TokenParams(Vec<(String, String)>);

impl std::ops::Deref for TokenParams {
    type Target = [(String, String)];

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl fmt::Debug for TokenParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(k, _)| (k, "<redacted>")))
            .finish()
    }
}

/// Token-request headers from the configuration (`token_request_headers`), e.g. an API
/// gateway's `x-api-key`. Values are marked sensitive and Debug shows the names only.
#[derive(Clone, Default)]
pub struct TokenRequestHeaders(Vec<(HeaderName, HeaderValue)>);

impl TokenRequestHeaders {
    pub fn iter(&self) -> impl Iterator<Item = &(HeaderName, HeaderValue)> {
        self.0.iter()
    }
}

impl fmt::Debug for TokenRequestHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(k, _)| (k.as_str(), "<redacted>")))
            .finish()
    }
}

/// Headers token-handler sets itself on a token request (client authentication, framing,
/// content negotiation) or that are hop-by-hop: a configured one would clash or smuggle.
pub const RESERVED_TOKEN_HEADERS: [&str; 14] = [
    "authorization",
    "proxy-authorization",
    "content-type",
    "content-length",
    "content-encoding",
    "transfer-encoding",
    "host",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "expect",
    "accept",
];

/// `token_request_headers`: valid names and values, none of [`RESERVED_TOKEN_HEADERS`].
fn token_request_headers(
    key: &str,
    map: BTreeMap<String, String>,
) -> Result<TokenRequestHeaders, ConfigError> {
    map.into_iter()
        .map(|(name, value)| {
            let header = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| {
                ConfigError::new(key, format!("`{name}` is not a valid header name"))
            })?;
            if RESERVED_TOKEN_HEADERS.contains(&header.as_str()) {
                return Err(ConfigError::new(
                    key,
                    format!("`{name}` is set by token-handler itself"),
                ));
            }
            // The value is not repeated in the message: it may be a credential.
            let mut value = HeaderValue::from_str(value.trim()).map_err(|_| {
                ConfigError::new(
                    key,
                    format!("the value of `{name}` is not a valid header value (visible ASCII, no line breaks)"),
                )
            })?;
            value.set_sensitive(true);
            Ok((header, value))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(TokenRequestHeaders)
}

/// `userinfo_claims`: each key a standard claim (OIDC Core §5.1), each value the name of a
/// member of the provider's user answer. Unset: the answer is returned unchanged.
fn userinfo_claims(
    key: &str,
    map: Option<BTreeMap<String, String>>,
) -> Result<UserInfoClaims, ConfigError> {
    let Some(map) = map else {
        return Ok(UserInfoClaims::default());
    };
    map.into_iter()
        .map(|(claim, member)| {
            if !STANDARD_CLAIMS.contains(&claim.as_str()) {
                return Err(ConfigError::new(
                    key,
                    format!(
                        "`{claim}` is not a standard claim (OIDC Core §5.1); use one of {}",
                        STANDARD_CLAIMS.join(", ")
                    ),
                ));
            }
            let member = member.trim();
            if member.is_empty() {
                return Err(ConfigError::new(
                    key,
                    format!("`{claim}` needs the name of a member of the provider's answer"),
                ));
            }
            Ok((claim, member.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(UserInfoClaims::new)
}

/// `id_token_signing_alg`. Unset: any asymmetric algorithm, with the JWKS. An asymmetric name:
/// only that one. HS256/384/512: only that HMAC, keyed with the client secret (OIDC Core
/// §10.1), which must be at least as long as the hash (RFC 7518 §3.2) and must exist.
fn id_token_signing(
    key: &str,
    text: Option<&str>,
    client_auth: &ClientAuth,
) -> Result<IdTokenSigning, ConfigError> {
    let Some(text) = text.map(str::trim) else {
        return Ok(IdTokenSigning::default());
    };
    let names =
        "RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA, HS256, HS384 or HS512";
    let alg: Algorithm = text.parse().map_err(|_| {
        ConfigError::new(
            key,
            format!("`{text}` is not an algorithm token-handler accepts; use one of {names} (never none)"),
        )
    })?;
    if ACCEPTED_ALGORITHMS.contains(&alg) {
        return Ok(IdTokenSigning::Jwks(Some(alg)));
    }
    let Some((_, least)) = HMAC_ALGORITHMS.iter().find(|(a, _)| *a == alg) else {
        return Err(ConfigError::new(
            key,
            format!("`{text}` is not an algorithm token-handler accepts; use one of {names}"),
        ));
    };
    let secret = match client_auth {
        ClientAuth::SecretBasic(s) | ClientAuth::SecretPost(s) => s.clone(),
        ClientAuth::PrivateKeyJwt { .. } | ClientAuth::None => {
            return Err(ConfigError::new(
                key,
                format!("{text} ID tokens are signed with the client secret (OIDC Core §10.1), and client_auth = \"{}\" has none; use client_secret_basic or client_secret_post", client_auth.method()),
            ))
        }
    };
    let length = secret.expose_secret().len();
    if length < *least {
        return Err(ConfigError::new(
            key,
            format!("{text} needs a client secret of at least {least} bytes (RFC 7518 §3.2: a key as long as the hash), and this one has {length}; ask the provider for a longer secret"),
        ));
    }
    Ok(IdTokenSigning::ClientSecret { alg, secret })
}

impl ProviderConfig {
    /// Whether the `openid` scope is requested, so an ID token must come back.
    pub fn is_openid(&self) -> bool {
        self.scope.split(' ').any(|s| s == "openid")
    }
}

/// Endpoints set in the configuration, used instead of (or without) discovery.
#[derive(Debug, Clone, Default)]
pub struct EndpointOverrides {
    pub authorization_endpoint: Option<Url>,
    pub token_endpoint: Option<Url>,
    pub userinfo_endpoint: Option<Url>,
    pub jwks_uri: Option<Url>,
    pub end_session_endpoint: Option<Url>,
    pub revocation_endpoint: Option<Url>,
    pub pushed_authorization_request_endpoint: Option<Url>,
}

/// Parameters that carry the flow's security: neither a preset, the configuration nor the SPA
/// may set them (RFC 9700 §4.1, §4.7).
pub const RESERVED_PARAMS: [&str; 10] = [
    "client_id",
    "redirect_uri",
    "response_type",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
    "request_uri",
    "request",
];

/// Token-request parameters token-handler sets itself, including client authentication.
pub const RESERVED_TOKEN_PARAMS: [&str; 10] = [
    "grant_type",
    "code",
    "code_verifier",
    "redirect_uri",
    "refresh_token",
    "client_id",
    "client_secret",
    "client_assertion",
    "client_assertion_type",
    "scope",
];

impl RawProvider {
    /// Fills in what a preset knows, without overriding anything configured.
    fn apply_preset(
        &mut self,
        preset: Preset,
        k: &dyn Fn(&str) -> String,
    ) -> Result<(), ConfigError> {
        let set = |slot: &mut Option<String>, value: &str| {
            slot.get_or_insert_with(|| value.to_string());
        };
        let param = |map: &mut BTreeMap<String, String>, name: &str, value: &str| {
            map.entry(name.to_string())
                .or_insert_with(|| value.to_string());
        };
        match preset {
            Preset::Google => {
                set(&mut self.issuer, "https://accounts.google.com");
                set(&mut self.scope, "openid profile email");
                // Google issues a refresh token only with offline access, and only on consent.
                param(&mut self.extra_auth_params, "access_type", "offline");
                param(&mut self.extra_auth_params, "prompt", "consent");
            }
            Preset::Microsoft => {
                let tenant = self.tenant.clone().ok_or_else(|| {
                    ConfigError::new(
                        k("tenant"),
                        "preset \"microsoft\" needs the directory (tenant) id or domain; \"common\" and \"organizations\" issue tokens whose issuer cannot be verified",
                    )
                })?;
                // Entra ID's discovery names the issuer by tenant GUID, whatever alias was used
                // to fetch it, so only the GUID gives an issuer that matches.
                let is_guid = tenant.len() == 36
                    && tenant.chars().enumerate().all(|(i, c)| {
                        if matches!(i, 8 | 13 | 18 | 23) {
                            c == '-'
                        } else {
                            c.is_ascii_hexdigit()
                        }
                    });
                if !is_guid {
                    return Err(ConfigError::new(
                        k("tenant"),
                        "must be the directory (tenant) id, a GUID (Entra admin center, Overview): discovery names the issuer by GUID, so \"common\", \"organizations\" or a domain would never match it",
                    ));
                }
                set(
                    &mut self.issuer,
                    &format!("https://login.microsoftonline.com/{tenant}/v2.0"),
                );
                set(&mut self.scope, "openid profile email offline_access");
            }
            Preset::GitHub => {
                // GitHub Apps and OAuth Apps speak plain OAuth 2.0: no discovery, no ID token.
                set(&mut self.issuer, "https://github.com");
                set(
                    &mut self.authorization_endpoint,
                    "https://github.com/login/oauth/authorize",
                );
                set(
                    &mut self.token_endpoint,
                    "https://github.com/login/oauth/access_token",
                );
                set(&mut self.userinfo_endpoint, "https://api.github.com/user");
                // `/user` has `email: null` for a private address; with `user:email` this
                // lists them all, the primary one marked.
                set(
                    &mut self.userinfo_emails_endpoint,
                    "https://api.github.com/user/emails",
                );
                // GitHub's user API is a REST resource: GET only.
                self.userinfo_method.get_or_insert(UserInfoMethod::Get);
                // `/user` has no `sub`: its numeric `id` is the stable identifier (a `login`
                // can be renamed and then taken by another account).
                self.userinfo_claims.get_or_insert_with(|| {
                    [
                        ("sub", "id"),
                        ("preferred_username", "login"),
                        ("name", "name"),
                        ("email", "email"),
                        ("picture", "avatar_url"),
                        ("profile", "html_url"),
                    ]
                    .into_iter()
                    .map(|(claim, member)| (claim.to_string(), member.to_string()))
                    .collect()
                });
                set(&mut self.scope, "read:user user:email");
                self.par.get_or_insert(ParMode::Off);
                self.client_auth.get_or_insert(ClientAuthMethod::SecretPost);
            }
            Preset::Auth0 | Preset::Keycloak | Preset::Okta => {
                if self.issuer.is_none() {
                    let example = match preset {
                        Preset::Auth0 => "https://YOUR-TENANT.eu.auth0.com/",
                        Preset::Keycloak => "https://keycloak.example.com/realms/YOUR-REALM",
                        _ => "https://YOUR-ORG.okta.com/oauth2/default",
                    };
                    return Err(ConfigError::new(
                        k("issuer"),
                        format!("is required with this preset, e.g. \"{example}\""),
                    ));
                }
                set(&mut self.scope, "openid profile email offline_access");
            }
        }
        Ok(())
    }

    /// The files this provider reads secrets from (see [`super::files`]).
    fn secret_files(&self, i: usize) -> Vec<SecretFile> {
        [
            ("client_secret_file", &self.client_secret_file),
            ("private_key_file", &self.private_key_file),
        ]
        .into_iter()
        .filter_map(|(name, path)| {
            Some(SecretFile {
                key: format!("providers[{i}].{name}"),
                path: path.clone()?,
            })
        })
        .collect()
    }
}

/// At least one call must be allowed, or no login and no refresh could ever finish.
fn max_concurrent_calls(value: usize, k: &dyn Fn(&str) -> String) -> Result<usize, ConfigError> {
    if value == 0 {
        return Err(ConfigError::new(
            k("max_concurrent_calls"),
            "must be at least 1 (calls beyond the bound wait; none would never finish)",
        ));
    }
    Ok(value)
}

impl TryFrom<(usize, RawProvider)> for ProviderConfig {
    type Error = ConfigError;

    /// Validates `providers[i]` on its own (see [`providers`] for the rules between entries).
    fn try_from((i, mut raw): (usize, RawProvider)) -> Result<Self, ConfigError> {
        let k = |name: &str| format!("providers[{i}].{name}");
        if !is_token(&raw.id) {
            return Err(ConfigError::new(
                k("id"),
                "must be letters, digits, `-` or `_`",
            ));
        }
        let preset = raw.preset;
        if raw.tenant.is_some() && preset != Some(Preset::Microsoft) {
            return Err(ConfigError::new(
                k("tenant"),
                "only applies to preset = \"microsoft\"",
            ));
        }
        if let Some(p) = preset {
            raw.apply_preset(p, &k)?;
        }
        if raw.client_id.trim().is_empty() {
            return Err(ConfigError::new(k("client_id"), "must not be empty"));
        }
        let scope = raw
            .scope
            .as_deref()
            .unwrap_or("openid profile email offline_access")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        if scope.is_empty() {
            return Err(ConfigError::new(k("scope"), "must not be empty"));
        }
        let opt = |name: &str, v: &Option<String>| -> Result<Option<Url>, ConfigError> {
            v.as_deref()
                .map(|t| parse_provider_url(&k(name), t))
                .transpose()
        };
        let endpoints = EndpointOverrides {
            authorization_endpoint: opt("authorization_endpoint", &raw.authorization_endpoint)?,
            token_endpoint: opt("token_endpoint", &raw.token_endpoint)?,
            userinfo_endpoint: opt("userinfo_endpoint", &raw.userinfo_endpoint)?,
            jwks_uri: opt("jwks_uri", &raw.jwks_uri)?,
            end_session_endpoint: opt("end_session_endpoint", &raw.end_session_endpoint)?,
            revocation_endpoint: opt("revocation_endpoint", &raw.revocation_endpoint)?,
            pushed_authorization_request_endpoint: opt(
                "pushed_authorization_request_endpoint",
                &raw.pushed_authorization_request_endpoint,
            )?,
        };
        let issuer = match &raw.issuer {
            Some(text) => {
                parse_provider_url(&k("issuer"), text)?;
                text.trim().to_string()
            }
            None => {
                return Err(ConfigError::new(
                    k("issuer"),
                    "is required (or a preset that sets it)",
                ))
            }
        };
        let discovery = raw.discovery.unwrap_or(preset != Some(Preset::GitHub));
        if !discovery
            && (endpoints.authorization_endpoint.is_none() || endpoints.token_endpoint.is_none())
        {
            return Err(ConfigError::new(
                k("token_endpoint"),
                "a provider without discovery (discovery = false, or the github preset) needs authorization_endpoint and token_endpoint",
            ));
        }

        let client_auth = raw.client_auth(&k)?;
        let id_token_signing = id_token_signing(
            &k("id_token_signing_alg"),
            raw.id_token_signing_alg.as_deref(),
            &client_auth,
        )?;
        let token_request_headers = token_request_headers(
            &k("token_request_headers"),
            std::mem::take(&mut raw.token_request_headers),
        )?;
        let par = raw.par.unwrap_or(ParMode::Auto);
        let params = |name: &str, map: BTreeMap<String, String>, reserved: &[&str]| {
            map.into_iter()
                .map(|(key, value)| {
                    if reserved.contains(&key.as_str()) || key.is_empty() {
                        Err(ConfigError::new(
                            k(name),
                            format!("`{key}` is set by token-handler itself"),
                        ))
                    } else {
                        Ok((key, value))
                    }
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let allowed_extra_params = match raw.allowed_extra_params {
            Some(list) => {
                if let Some(bad) = list.iter().find(|p| RESERVED_PARAMS.contains(&p.as_str())) {
                    return Err(ConfigError::new(
                        k("allowed_extra_params"),
                        format!("`{bad}` is set by token-handler itself and cannot be allowed"),
                    ));
                }
                list
            }
            None => DEFAULT_ALLOWED_EXTRA_PARAMS
                .iter()
                .map(|s| s.to_string())
                .collect(),
        };
        let extra_auth_params =
            params("extra_auth_params", raw.extra_auth_params, &RESERVED_PARAMS)?;
        let step_up = step_up(&extra_auth_params, &k)?;
        if !step_up.is_empty() && !scope.split(' ').any(|s| s == "openid") {
            return Err(ConfigError::new(
                k("extra_auth_params"),
                "`acr_values` and `max_age` are enforced on the ID token, which needs the openid scope",
            ));
        }
        let userinfo_source = raw.userinfo_source.unwrap_or(UserInfoSource::Auto);
        if userinfo_source == UserInfoSource::IdToken && !scope.split(' ').any(|s| s == "openid") {
            return Err(ConfigError::new(
                k("userinfo_source"),
                "\"id_token\" answers from the ID token, which needs the openid scope",
            ));
        }
        let userinfo_claims = userinfo_claims(&k("userinfo_claims"), raw.userinfo_claims.take())?;
        let userinfo_emails_endpoint =
            opt("userinfo_emails_endpoint", &raw.userinfo_emails_endpoint)?;
        let display_name = display_name(raw.display_name.as_deref(), &raw.id, &k)?;
        Ok(ProviderConfig {
            userinfo_claims,
            userinfo_emails_endpoint,
            display_name,
            exclusive: raw.exclusive,
            // Resolved against the other providers in [`providers`].
            required: raw.required.unwrap_or(false),
            userinfo_method: raw.userinfo_method.unwrap_or(UserInfoMethod::Post),
            userinfo_source,
            redirect_uri: parse_url(&k("redirect_uri"), &raw.redirect_uri)?,
            post_logout_redirect_uri: raw
                .post_logout_redirect_uri
                .as_deref()
                .map(|t| parse_url(&k("post_logout_redirect_uri"), t))
                .transpose()?,
            timeout: raw.timeout,
            max_concurrent_calls: max_concurrent_calls(raw.max_concurrent_calls, &k)?,
            extra_auth_params,
            step_up,
            require_iss: raw.require_iss,
            extra_token_params: TokenParams(params(
                "extra_token_params",
                raw.extra_token_params,
                &RESERVED_TOKEN_PARAMS,
            )?),
            allowed_extra_params,
            par,
            scope,
            endpoints,
            issuer,
            discovery,
            preset,
            id: raw.id,
            client_id: raw.client_id.trim().to_string(),
            client_auth,
            id_token_signing,
            token_request_headers,
        })
    }
}

impl RawProvider {
    fn client_auth(&self, k: &dyn Fn(&str) -> String) -> Result<ClientAuth, ConfigError> {
        let method = self.client_auth.unwrap_or(ClientAuthMethod::SecretBasic);
        let audience = self
            .client_assertion_audience
            .unwrap_or(AssertionAudience::Endpoint);
        if self.client_assertion_audience.is_some() && method != ClientAuthMethod::PrivateKeyJwt {
            return Err(ConfigError::new(
                k("client_assertion_audience"),
                "only applies to client_auth = \"private_key_jwt\"",
            ));
        }
        let secret = || -> Result<SecretString, ConfigError> {
            let text = match (&self.client_secret, &self.client_secret_file) {
                (Some(_), Some(_)) => {
                    return Err(ConfigError::new(
                        k("client_secret"),
                        "set client_secret or client_secret_file, not both",
                    ))
                }
                (Some(s), None) => s.clone(),
                (None, Some(file)) => read_secret_file(&k("client_secret_file"), file)?
                    .trim()
                    .to_string(),
                (None, None) => {
                    return Err(ConfigError::new(
                        k("client_secret"),
                        format!(
                            "is required with client_auth = \"{}\" (or client_secret_file)",
                            method.name()
                        ),
                    ))
                }
            };
            if text.is_empty() {
                return Err(ConfigError::new(k("client_secret"), "must not be empty"));
            }
            Ok(SecretString::from(text))
        };
        let no_secret = |why: &str| -> Result<(), ConfigError> {
            if self.client_secret.is_some() || self.client_secret_file.is_some() {
                return Err(ConfigError::new(k("client_secret"), why.to_string()));
            }
            Ok(())
        };
        Ok(match method {
            ClientAuthMethod::SecretBasic => ClientAuth::SecretBasic(secret()?),
            ClientAuthMethod::SecretPost => ClientAuth::SecretPost(secret()?),
            ClientAuthMethod::None => {
                no_secret("a public client (client_auth = \"none\") has no secret")?;
                ClientAuth::None
            }
            ClientAuthMethod::PrivateKeyJwt => {
                no_secret("private_key_jwt signs with private_key_file; remove the client secret")?;
                let file = self.private_key_file.as_ref().ok_or_else(|| {
                    ConfigError::new(
                        k("private_key_file"),
                        "is required with client_auth = \"private_key_jwt\" (a PEM file with an RSA or P-256 private key)",
                    )
                })?;
                let pem = read_secret_file(&k("private_key_file"), file)?;
                let (key, alg) = if let Ok(key) = EncodingKey::from_ec_pem(pem.as_bytes()) {
                    (key, Algorithm::ES256)
                } else if let Ok(key) = EncodingKey::from_rsa_pem(pem.as_bytes()) {
                    (key, Algorithm::RS256)
                } else {
                    return Err(ConfigError::new(
                        k("private_key_file"),
                        "is not a PKCS#8 PEM RSA or P-256 private key (convert a SEC1 \"EC PRIVATE KEY\" with `openssl pkcs8 -topk8 -nocrypt`)",
                    ));
                };
                // Sign once now, so a key of another curve fails at startup, not at login.
                jsonwebtoken::encode(
                    &jsonwebtoken::Header::new(alg),
                    &serde_json::json!({}),
                    &key,
                )
                .map_err(|_| {
                    ConfigError::new(
                        k("private_key_file"),
                        "cannot sign ES256 or RS256 with this key (EC keys must be on P-256)",
                    )
                })?;
                ClientAuth::PrivateKeyJwt {
                    key,
                    alg,
                    kid: self.private_key_id.clone(),
                    audience,
                }
            }
        })
    }
}

/// Validates every `[[providers]]` entry, then the rules between them: at least one, ids
/// unique, and a shared `redirect_uri` only with `require_iss`. Adds the files they read secrets
/// from to `secret_files`.
pub(super) fn providers(
    raw: Vec<RawProvider>,
    secret_files: &mut Vec<SecretFile>,
) -> Result<Vec<ProviderConfig>, ConfigError> {
    if raw.is_empty() {
        return Err(ConfigError::new(
            "providers",
            "configure at least one [[providers]] entry",
        ));
    }
    let explicit_required: Vec<Option<bool>> = raw.iter().map(|p| p.required).collect();
    let mut providers: Vec<ProviderConfig> = Vec::new();
    for (i, p) in raw.into_iter().enumerate() {
        secret_files.extend(p.secret_files(i));
        let provider = ProviderConfig::try_from((i, p))?;
        if providers.iter().any(|q| q.id == provider.id) {
            return Err(ConfigError::new(
                format!("providers[{i}].id"),
                format!("`{}` is used by another provider", provider.id),
            ));
        }
        providers.push(provider);
    }
    check_shared_redirect_uris(&providers)?;
    check_exclusive(&providers)?;
    resolve_required(&mut providers, &explicit_required);
    Ok(providers)
}

/// `required`: a provider left unset is required when it is the default one (the exclusive
/// provider, else the first), so one unreachable secondary provider does not keep every
/// replica out of the load balancer, and the proxy with it.
fn resolve_required(providers: &mut [ProviderConfig], explicit: &[Option<bool>]) {
    let default = providers.iter().position(|p| p.exclusive).unwrap_or(0);
    for (i, (p, set)) in providers.iter_mut().zip(explicit).enumerate() {
        p.required = set.unwrap_or(i == default);
    }
}

/// Longest `display_name`: a button label, not a paragraph.
const MAX_DISPLAY_NAME: usize = 100;

/// `display_name`: shown to users by the SPA, so plain text of a sensible length; the id when
/// not set.
fn display_name(
    text: Option<&str>,
    id: &str,
    k: &dyn Fn(&str) -> String,
) -> Result<String, ConfigError> {
    let Some(text) = text else {
        return Ok(id.to_string());
    };
    let text = text.trim();
    if text.is_empty() || text.chars().count() > MAX_DISPLAY_NAME {
        return Err(ConfigError::new(
            k("display_name"),
            format!("must be 1 to {MAX_DISPLAY_NAME} characters"),
        ));
    }
    if text.chars().any(char::is_control) {
        return Err(ConfigError::new(
            k("display_name"),
            "must not contain control characters",
        ));
    }
    Ok(text.to_string())
}

/// `exclusive`: at most one provider can be the only one allowed.
fn check_exclusive(providers: &[ProviderConfig]) -> Result<(), ConfigError> {
    let mut exclusive = providers.iter().enumerate().filter(|(_, p)| p.exclusive);
    if let (Some((_, first)), Some((i, second))) = (exclusive.next(), exclusive.next()) {
        return Err(ConfigError::new(
            format!("providers[{i}].exclusive"),
            format!(
                "`{}` and `{}` are both exclusive: at most one provider can be the only one allowed",
                first.id, second.id
            ),
        ));
    }
    Ok(())
}

/// RFC 9700 §4.4 (mix-up): when two providers send their responses to the same redirect URI,
/// the response alone does not say which provider issued the code, so a malicious or
/// compromised provider could have the code of another sent to its own token endpoint. Only
/// the `iss` parameter of RFC 9207 tells them apart, so every provider that shares a
/// `redirect_uri` must be configured to require it (`require_iss = true`).
fn check_shared_redirect_uris(providers: &[ProviderConfig]) -> Result<(), ConfigError> {
    for (i, p) in providers.iter().enumerate() {
        if p.require_iss {
            continue;
        }
        if let Some(other) = providers
            .iter()
            .find(|q| q.id != p.id && q.redirect_uri == p.redirect_uri)
        {
            return Err(ConfigError::new(
                format!("providers[{i}].require_iss"),
                format!(
                    "providers `{}` and `{}` share redirect_uri `{}`: a response at a shared redirect URI does not say which provider sent it, so one provider could obtain another's authorization code (mix-up attack, RFC 9700 §4.4). Give each provider its own redirect_uri, or set require_iss = true on every provider that shares it (each must send the iss parameter of RFC 9207)",
                    p.id, other.id, p.redirect_uri
                ),
            ));
        }
    }
    Ok(())
}

/// The operator's step-up parameters, read from `extra_auth_params` so that what is sent and
/// what is enforced can never differ.
fn step_up(params: &[(String, String)], k: &dyn Fn(&str) -> String) -> Result<StepUp, ConfigError> {
    let mut step_up = StepUp::default();
    for (name, value) in params {
        match name.as_str() {
            // OIDC Core §3.1.2.1: space-separated, in order of preference.
            "acr_values" => {
                step_up.acr_values = value.split_whitespace().map(String::from).collect();
                if step_up.acr_values.is_empty() {
                    return Err(ConfigError::new(
                        k("extra_auth_params"),
                        "`acr_values` must name at least one value",
                    ));
                }
            }
            // OIDC Core §3.1.2.1: a number of seconds.
            "max_age" => {
                step_up.max_age = Some(value.trim().parse::<u64>().map_err(|_| {
                    ConfigError::new(
                        k("extra_auth_params"),
                        format!("`max_age` must be a whole number of seconds, not `{value}`"),
                    )
                })?);
            }
            _ => {}
        }
    }
    Ok(step_up)
}

#[cfg(test)]
mod tests {
    use crate::config::{ClientAuth, Config, ConfigError, ParMode, Preset};

    fn with_provider(provider: &str) -> Result<Config, ConfigError> {
        Config::from_toml(
            &crate::config::test_toml(
                "",
                &format!("[[providers]]\nid = \"p\"\nclient_id = \"c\"\nredirect_uri = \"https://www.example.com/\"\n{provider}"),
            ),
            Vec::new(),
        )
    }

    fn error_key(provider: &str) -> String {
        match with_provider(provider) {
            Ok(_) => panic!("expected an error for {provider}"),
            Err(e) => e.key,
        }
    }

    /// Issue 17: the bound on calls to a provider defaults to 32 and cannot be zero (no call
    /// would ever get a slot).
    #[test]
    fn max_concurrent_calls_defaults_to_32_and_is_at_least_one() {
        let base = "issuer = \"https://op.example.com\"\nclient_secret = \"s\"\n";
        let config = with_provider(base).expect("valid");
        assert_eq!(config.providers[0].max_concurrent_calls, 32);
        let config = with_provider(&format!("{base}max_concurrent_calls = 4")).expect("valid");
        assert_eq!(config.providers[0].max_concurrent_calls, 4);
        assert_eq!(
            error_key(&format!("{base}max_concurrent_calls = 0")),
            "providers[0].max_concurrent_calls"
        );
    }

    #[test]
    fn google_preset_asks_for_offline_access() {
        let c = with_provider("preset = \"google\"\nclient_secret = \"s\"").expect("valid");
        let p = &c.providers[0];
        assert_eq!(p.issuer, "https://accounts.google.com");
        assert_eq!(p.preset, Some(Preset::Google));
        assert!(p
            .extra_auth_params
            .contains(&("access_type".into(), "offline".into())));
        assert!(p
            .extra_auth_params
            .contains(&("prompt".into(), "consent".into())));
        assert!(p.discovery);
    }

    #[test]
    fn presets_never_override_configuration() {
        let c = with_provider(
            "preset = \"google\"\nclient_secret = \"s\"\nscope = \"openid email\"\n[providers.extra_auth_params]\nprompt = \"select_account\"",
        )
        .expect("valid");
        let p = &c.providers[0];
        assert_eq!(p.scope, "openid email");
        assert!(p
            .extra_auth_params
            .contains(&("prompt".into(), "select_account".into())));
    }

    #[test]
    fn microsoft_needs_a_real_tenant() {
        assert_eq!(
            error_key("preset = \"microsoft\"\nclient_secret = \"s\""),
            "providers[0].tenant"
        );
        assert_eq!(
            error_key("preset = \"microsoft\"\ntenant = \"common\"\nclient_secret = \"s\""),
            "providers[0].tenant"
        );
        assert_eq!(
            error_key("preset = \"microsoft\"\ntenant = \"contoso.onmicrosoft.com\"\nclient_secret = \"s\""),
            "providers[0].tenant"
        );
        let c = with_provider(
            "preset = \"microsoft\"\ntenant = \"72f988bf-86f1-41af-91ab-2d7cd011db47\"\nclient_secret = \"s\"",
        )
        .expect("valid");
        assert_eq!(
            c.providers[0].issuer,
            "https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0"
        );
        assert_eq!(
            error_key("preset = \"google\"\ntenant = \"x\"\nclient_secret = \"s\""),
            "providers[0].tenant"
        );
    }

    #[test]
    fn github_is_plain_oauth2_without_discovery() {
        let c = with_provider("preset = \"github\"\nclient_secret = \"s\"").expect("valid");
        let p = &c.providers[0];
        assert!(!p.discovery);
        assert!(!p.is_openid());
        assert_eq!(p.par, ParMode::Off);
        assert_eq!(p.client_auth.method(), "client_secret_post");
        assert_eq!(
            p.endpoints.userinfo_endpoint.as_ref().map(|u| u.as_str()),
            Some("https://api.github.com/user")
        );
    }

    #[test]
    fn github_maps_its_user_fields_to_standard_claims_unless_configured() {
        let c = with_provider("preset = \"github\"\nclient_secret = \"s\"").expect("valid");
        let pairs = c.providers[0].userinfo_claims.pairs();
        for (claim, member) in [
            ("sub", "id"),
            ("preferred_username", "login"),
            ("name", "name"),
            ("email", "email"),
        ] {
            assert!(
                pairs.contains(&(claim.to_string(), member.to_string())),
                "{claim} <- {member}: {pairs:?}"
            );
        }
        assert_eq!(
            c.providers[0]
                .userinfo_emails_endpoint
                .as_ref()
                .map(|u| u.as_str()),
            Some("https://api.github.com/user/emails")
        );
        // A configured mapping replaces the preset's whole.
        let c = with_provider(
            "preset = \"github\"\nclient_secret = \"s\"\nuserinfo_claims = { sub = \" node_id \" }",
        )
        .expect("valid");
        assert_eq!(
            c.providers[0].userinfo_claims.pairs(),
            [("sub".to_string(), "node_id".to_string())]
        );
        // Other providers: no mapping unless configured.
        let issuer = "issuer = \"https://login.example.com\"\nclient_secret = \"s\"";
        let c = with_provider(issuer).expect("valid");
        assert!(c.providers[0].userinfo_claims.is_empty());
        assert_eq!(
            error_key(&format!(
                "{issuer}\nuserinfo_claims = {{ login = \"login\" }}"
            )),
            "providers[0].userinfo_claims"
        );
        assert_eq!(
            error_key(&format!("{issuer}\nuserinfo_claims = {{ sub = \" \" }}")),
            "providers[0].userinfo_claims"
        );
    }

    #[test]
    fn userinfo_method_and_source() {
        use crate::config::{UserInfoMethod, UserInfoSource};
        let issuer = "issuer = \"https://login.example.com\"\nclient_secret = \"s\"";
        let p = &with_provider(issuer).expect("valid").providers[0];
        assert_eq!(p.userinfo_method, UserInfoMethod::Post);
        assert_eq!(p.userinfo_source, UserInfoSource::Auto);
        let c = with_provider(&format!(
            "{issuer}\nuserinfo_method = \"GET\"\nuserinfo_source = \"id_token\""
        ))
        .expect("valid");
        assert_eq!(c.providers[0].userinfo_method, UserInfoMethod::Get);
        assert_eq!(c.providers[0].userinfo_source, UserInfoSource::IdToken);
        let c = with_provider("preset = \"github\"\nclient_secret = \"s\"").expect("valid");
        assert_eq!(c.providers[0].userinfo_method, UserInfoMethod::Get);
        let c =
            with_provider("preset = \"github\"\nclient_secret = \"s\"\nuserinfo_method = \"post\"")
                .expect("valid");
        assert_eq!(c.providers[0].userinfo_method, UserInfoMethod::Post);
        assert_eq!(
            error_key(&format!("{issuer}\nuserinfo_method = \"put\"")),
            "providers[0].userinfo_method"
        );
        // The ID token's claims need an ID token.
        assert_eq!(
            error_key(&format!(
                "{issuer}\nscope = \"profile\"\nuserinfo_source = \"id_token\""
            )),
            "providers[0].userinfo_source"
        );
    }

    #[test]
    fn tenant_specific_presets_need_an_issuer() {
        for preset in ["auth0", "keycloak", "okta"] {
            assert_eq!(
                error_key(&format!("preset = \"{preset}\"\nclient_secret = \"s\"")),
                "providers[0].issuer"
            );
        }
        assert_eq!(error_key("preset = \"facebook\""), "providers[0].preset");
    }

    #[test]
    fn client_authentication_is_validated() {
        let issuer = "issuer = \"https://login.example.com\"";
        assert_eq!(error_key(issuer), "providers[0].client_secret");
        assert_eq!(
            error_key(&format!(
                "{issuer}\nclient_auth = \"none\"\nclient_secret = \"s\""
            )),
            "providers[0].client_secret"
        );
        assert_eq!(
            error_key(&format!("{issuer}\nclient_auth = \"private_key_jwt\"")),
            "providers[0].private_key_file"
        );
        assert_eq!(
            error_key(&format!("{issuer}\nclient_auth = \"tls_client_auth\"")),
            "providers[0].client_auth"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let bad = dir.path().join("bad.pem");
        std::fs::write(
            &bad,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .expect("write");
        assert_eq!(
            error_key(&format!(
                "{issuer}\nclient_auth = \"private_key_jwt\"\nprivate_key_file = {:?}",
                bad.display().to_string()
            )),
            "providers[0].private_key_file"
        );
        let c = with_provider(&format!("{issuer}\nclient_auth = \"none\"")).expect("valid");
        assert!(matches!(c.providers[0].client_auth, ClientAuth::None));
        assert_eq!(
            error_key(&format!(
                "{issuer}\nclient_secret = \"s\"\nclient_assertion_audience = \"issuer\""
            )),
            "providers[0].client_assertion_audience"
        );
        assert_eq!(
            error_key(&format!(
                "{issuer}\nclient_auth = \"private_key_jwt\"\nclient_assertion_audience = \"token\""
            )),
            "providers[0].client_assertion_audience"
        );
    }

    #[test]
    fn reserved_parameters_cannot_be_configured_or_allowed() {
        let issuer = "issuer = \"https://login.example.com\"\nclient_secret = \"s\"";
        assert_eq!(
            error_key(&format!(
                "{issuer}\n[providers.extra_auth_params]\nredirect_uri = \"https://evil\""
            )),
            "providers[0].extra_auth_params"
        );
        assert_eq!(
            error_key(&format!("{issuer}\nallowed_extra_params = [\"state\"]")),
            "providers[0].allowed_extra_params"
        );
        assert_eq!(
            error_key(&format!(
                "{issuer}\n[providers.extra_token_params]\ngrant_type = \"password\""
            )),
            "providers[0].extra_token_params"
        );
    }

    #[test]
    fn step_up_parameters_are_validated() {
        let issuer = "issuer = \"https://login.example.com\"\nclient_secret = \"s\"";
        let c = with_provider(&format!(
            "{issuer}\n[providers.extra_auth_params]\nacr_values = \" urn:mfa  urn:hwk \"\nmax_age = \"300\""
        ))
        .expect("valid");
        assert_eq!(c.providers[0].step_up.acr_values, ["urn:mfa", "urn:hwk"]);
        assert_eq!(c.providers[0].step_up.max_age, Some(300));
        for bad in ["max_age = \"5m\"", "max_age = \"-1\"", "acr_values = \" \""] {
            assert_eq!(
                error_key(&format!("{issuer}\n[providers.extra_auth_params]\n{bad}")),
                "providers[0].extra_auth_params",
                "{bad}"
            );
        }
        // Enforced on the ID token, so only with the openid scope.
        assert_eq!(
            error_key(&format!(
                "{issuer}\nscope = \"profile\"\n[providers.extra_auth_params]\nmax_age = \"60\""
            )),
            "providers[0].extra_auth_params"
        );
    }

    #[test]
    fn hmac_id_tokens_need_a_long_enough_client_secret() {
        use crate::oauth::id_token::IdTokenSigning;
        use jsonwebtoken::Algorithm;
        let issuer = "issuer = \"https://login.example.com\"";
        let secret = |n: usize| format!("client_secret = \"{}\"", "s".repeat(n));
        let signing = |extra: &str| {
            with_provider(&format!("{issuer}\n{extra}"))
                .map(|c| format!("{:?}", c.providers[0].id_token_signing))
        };
        // RFC 7518 §3.2: at least the hash's size.
        for (alg, least) in [("HS256", 32), ("HS384", 48), ("HS512", 64)] {
            let short = with_provider(&format!(
                "{issuer}\n{}\nid_token_signing_alg = \"{alg}\"",
                secret(least - 1)
            ))
            .expect_err("short secret");
            assert_eq!(short.key, "providers[0].id_token_signing_alg");
            assert!(
                short.message.contains(&format!("at least {least} bytes")),
                "{}",
                short.message
            );
            assert!(!short.message.contains(&"s".repeat(least - 1)));
            let ok = signing(&format!(
                "{}\nid_token_signing_alg = \"{alg}\"",
                secret(least)
            ))
            .expect("long enough");
            assert_eq!(ok, format!("ClientSecret({alg}, secret=<redacted>)"));
        }
        // No client secret to key it with.
        assert_eq!(
            error_key(&format!(
                "{issuer}\nclient_auth = \"none\"\nid_token_signing_alg = \"HS256\""
            )),
            "providers[0].id_token_signing_alg"
        );
        // Never `none`, never an unknown name; asymmetric names pin that algorithm.
        for bad in ["none", "HS128", "rs256", ""] {
            assert_eq!(
                error_key(&format!(
                    "{issuer}\n{}\nid_token_signing_alg = \"{bad}\"",
                    secret(64)
                )),
                "providers[0].id_token_signing_alg",
                "{bad}"
            );
        }
        let c = with_provider(&format!(
            "{issuer}\n{}\nid_token_signing_alg = \"RS256\"",
            secret(1)
        ))
        .expect("valid");
        assert!(matches!(
            c.providers[0].id_token_signing,
            IdTokenSigning::Jwks(Some(Algorithm::RS256))
        ));
        let c = with_provider(&format!("{issuer}\n{}", secret(1))).expect("valid");
        assert!(matches!(
            c.providers[0].id_token_signing,
            IdTokenSigning::Jwks(None)
        ));
    }

    #[test]
    fn discovery_can_be_switched_off_with_configured_endpoints() {
        let issuer = "issuer = \"https://login.example.com\"\nclient_secret = \"s\"";
        assert_eq!(
            error_key(&format!("{issuer}\ndiscovery = false")),
            "providers[0].token_endpoint"
        );
        let c = with_provider(&format!(
            "{issuer}\ndiscovery = false\nauthorization_endpoint = \"https://login.example.com/auth\"\ntoken_endpoint = \"https://login.example.com/token\""
        ))
        .expect("valid");
        assert!(!c.providers[0].discovery);
        assert!(with_provider(issuer).expect("valid").providers[0].discovery);
    }

    #[test]
    fn token_request_headers_are_validated_and_redacted() {
        let issuer = "issuer = \"https://login.example.com\"\nclient_secret = \"s\"";
        let c = with_provider(&format!(
            "{issuer}\n[providers.token_request_headers]\nx-api-key = \"key-hunter2\"\n[providers.extra_token_params]\naudience = \"aud-hunter3\""
        ))
        .expect("valid");
        let p = &c.providers[0];
        let headers: Vec<_> = p.token_request_headers.iter().collect();
        assert_eq!(headers.len(), 1);
        assert_eq!(headers[0].0.as_str(), "x-api-key");
        assert_eq!(headers[0].1, "key-hunter2");
        assert_eq!(
            &p.extra_token_params[..],
            [("audience".to_string(), "aud-hunter3".to_string())]
        );
        let debug = format!("{p:?}");
        assert!(!debug.contains("hunter"), "{debug}");
        assert!(
            debug.contains("x-api-key") && debug.contains("audience"),
            "{debug}"
        );
        for bad in [
            "authorization = \"Bearer x\"",
            "Content-Type = \"text/plain\"",
            "host = \"evil\"",
            "\"bad name\" = \"x\"",
            "x-ok = \"line\\r\\nbreak\"",
        ] {
            assert_eq!(
                error_key(&format!(
                    "{issuer}\n[providers.token_request_headers]\n{bad}"
                )),
                "providers[0].token_request_headers",
                "{bad}"
            );
        }
    }

    #[test]
    fn debug_never_shows_secrets() {
        let c = with_provider(
            "issuer = \"https://login.example.com\"\nclient_secret = \"hunter2-secret\"",
        )
        .expect("valid");
        let debug = format!("{:?}", c.providers[0]);
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("client_secret_basic(<redacted>)"), "{debug}");
    }
}
