//! Who may call a route and what the upstream learns about them: `auth`, `methods` and
//! `identity_headers` under `[[routes]]`.
//!
//! These keys decide what an upstream is told about the caller, so every mistake an operator can
//! make with them is a configuration error at load rather than a route that silently forwards
//! less (or more) than meant: an unknown mode, a method in the wrong case, an identity header
//! that would overwrite a header the proxy owns or the token itself.

use super::ConfigError;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::Method;
use std::collections::BTreeMap;

/// `auth`: whether a route needs a session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RouteAuth {
    /// A session is needed (`401` without one); the upstream always gets its token.
    #[default]
    Required,
    /// With a session the upstream gets its token (and identity headers); without one the
    /// request is forwarded anonymously.
    Optional,
    /// Public: never a token, never identity headers. The CSRF check still applies to unsafe
    /// methods when the browser sends a session cookie.
    None,
}

impl RouteAuth {
    fn parse(text: &str) -> Result<Self, String> {
        match text {
            "required" => Ok(Self::Required),
            "optional" => Ok(Self::Optional),
            "none" => Ok(Self::None),
            other => Err(format!(
                "`{other}` is not an auth mode; use \"required\" (the default), \"optional\" or \"none\""
            )),
        }
    }
}

/// The access rules of one route.
#[derive(Debug, Clone, Default)]
pub struct RouteAccess {
    pub auth: RouteAuth,
    /// `methods`: the methods forwarded (`None`: all). `GET` brings `HEAD` with it (RFC 9110
    /// §9.3.2: HEAD is GET without the content). `OPTIONS` is answered by token-handler itself
    /// (CORS preflight) and is never listed.
    pub methods: Option<Vec<Method>>,
    /// `identity_headers`: header → ID-token claim, in the order of the names. Whatever the
    /// client sends under these names never reaches the upstream, on every request of the route.
    pub identity_headers: Vec<(HeaderName, String)>,
    /// `assertion_header`: the header that carries a signed assertion of the caller
    /// ([`crate::proxy::assertion`]); like an identity header, never taken from the client.
    pub assertion_header: Option<HeaderName>,
}

impl RouteAccess {
    /// Whether `method` is forwarded on this route.
    pub fn allows(&self, method: &Method) -> bool {
        match &self.methods {
            None => true,
            Some(list) => {
                list.contains(method) || (*method == Method::HEAD && list.contains(&Method::GET))
            }
        }
    }

    /// The `Allow` header of a `405` (RFC 9110 §10.2.1): the listed methods, `HEAD` with `GET`,
    /// and `OPTIONS`, which token-handler answers on every route.
    pub fn allow_header(&self) -> HeaderValue {
        let mut names: Vec<&str> = Vec::new();
        for m in self.methods.iter().flatten() {
            names.push(m.as_str());
            if *m == Method::GET && !self.methods.iter().flatten().any(|m| *m == Method::HEAD) {
                names.push("HEAD");
            }
        }
        names.push("OPTIONS");
        // Method names are tokens (checked at load), so the list is valid header text.
        HeaderValue::from_str(&names.join(", ")).unwrap_or(HeaderValue::from_static("OPTIONS"))
    }

    /// Whether `name` is one of this route's identity headers or its assertion header.
    pub fn is_identity_header(&self, name: &HeaderName) -> bool {
        self.identity_headers.iter().any(|(n, _)| n == name)
            || self.assertion_header.as_ref() == Some(name)
    }

    /// Whether calls of this route read the session's ID token (identity headers, or the
    /// subject of an assertion): its cookie must then be sent to the route's path.
    pub fn reads_id_token(&self) -> bool {
        !self.identity_headers.is_empty() || self.assertion_header.is_some()
    }
}

/// The route's raw `auth`, `methods` and `identity_headers`, with what they are checked against.
pub(super) struct RawAccess<'a> {
    pub auth: Option<&'a str>,
    pub methods: Option<&'a [String]>,
    pub identity_headers: &'a BTreeMap<String, String>,
    pub assertion_header: Option<&'a str>,
    pub websocket: bool,
    /// The route's token header, which an identity header must not replace.
    pub token_header: &'a HeaderName,
}

impl RouteAccess {
    /// Validates the keys; `key` names `routes[i].<key>` for errors. `reserved` tells the
    /// header names the proxy writes or withholds itself.
    pub(super) fn parse(
        raw: RawAccess<'_>,
        key: impl Fn(&str) -> String,
        reserved: impl Fn(&str) -> bool,
    ) -> Result<Self, ConfigError> {
        let auth = match raw.auth {
            Some(text) => RouteAuth::parse(text).map_err(|m| ConfigError::new(key("auth"), m))?,
            None => RouteAuth::Required,
        };
        if raw.websocket && auth != RouteAuth::Required {
            return Err(ConfigError::new(
                key("auth"),
                "a websocket route needs auth = \"required\": the connection is authenticated once, with the session's token, at the upgrade",
            ));
        }
        let methods = match raw.methods {
            Some(list) => Some(parse_methods(&key("methods"), list)?),
            None => None,
        };
        let free_name = |k: &str, text: &str| -> Result<HeaderName, ConfigError> {
            let name = HeaderName::from_bytes(text.as_bytes())
                .map_err(|_| ConfigError::new(k, format!("`{text}` is not a header name")))?;
            let n = name.as_str();
            if reserved(n) || n == "authorization" || name == *raw.token_header {
                return Err(ConfigError::new(
                    k,
                    format!(
                        "`{text}` cannot carry the user's identity: it is the route's token header, Authorization, or a header the proxy writes or withholds itself"
                    ),
                ));
            }
            Ok(name)
        };
        let mut identity_headers: Vec<(HeaderName, String)> = Vec::new();
        for (text, claim) in raw.identity_headers {
            let k = format!("{}.{text}", key("identity_headers"));
            let name = free_name(&k, text)?;
            if identity_headers.iter().any(|(o, _)| *o == name) {
                return Err(ConfigError::new(
                    &k,
                    "names a header another entry names already (header names are case-insensitive)",
                ));
            }
            if claim.is_empty() || claim.trim() != claim {
                return Err(ConfigError::new(
                    &k,
                    "the claim name must be non-empty, without spaces around it (e.g. \"sub\")",
                ));
            }
            identity_headers.push((name, claim.clone()));
        }
        let assertion_header = match raw.assertion_header {
            Some(text) => {
                let k = key("assertion_header");
                let name = free_name(&k, text)?;
                if identity_headers.iter().any(|(o, _)| *o == name) {
                    return Err(ConfigError::new(k, "is also one of identity_headers"));
                }
                Some(name)
            }
            None => None,
        };
        Ok(Self {
            auth,
            methods,
            identity_headers,
            assertion_header,
        })
    }
}

/// `methods`: method names as RFC 9110 §9.1 spells them (case-sensitive tokens), each once,
/// never `OPTIONS` (answered by token-handler itself), never an empty list.
fn parse_methods(key: &str, list: &[String]) -> Result<Vec<Method>, ConfigError> {
    if list.is_empty() {
        return Err(ConfigError::new(
            key,
            "an empty list would refuse every request; leave the key out to allow all methods",
        ));
    }
    let mut out: Vec<Method> = Vec::new();
    for text in list {
        let method = Method::from_bytes(text.as_bytes())
            .map_err(|_| ConfigError::new(key, format!("`{text}` is not a method name")))?;
        if text.to_ascii_uppercase() != *text {
            return Err(ConfigError::new(
                key,
                format!(
                    "`{text}`: method names are case-sensitive (RFC 9110 §9.1); write `{}`",
                    text.to_ascii_uppercase()
                ),
            ));
        }
        if method == Method::OPTIONS {
            return Err(ConfigError::new(
                key,
                "OPTIONS is answered by token-handler on every route (CORS preflight); leave it out",
            ));
        }
        if out.contains(&method) {
            return Err(ConfigError::new(key, format!("`{text}` is listed twice")));
        }
        out.push(method);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, RouteAuth};
    use actix_web::http::Method;

    fn route(extra: &str) -> Result<Config, crate::config::ConfigError> {
        Config::from_toml(
            &crate::config::test_toml(
                "",
                &format!(
                    "{}[[routes]]\npath = \"/api\"\nupstream = \"http://127.0.0.1:9001\"\n{extra}",
                    crate::config::TEST_PROVIDER
                ),
            ),
            Vec::new(),
        )
    }

    #[test]
    fn auth_defaults_to_required_and_takes_three_modes() {
        let c = route("").expect("valid");
        assert_eq!(c.proxy.routes[0].access.auth, RouteAuth::Required);
        for (text, mode) in [
            ("required", RouteAuth::Required),
            ("optional", RouteAuth::Optional),
            ("none", RouteAuth::None),
        ] {
            let c = route(&format!("auth = \"{text}\"")).expect(text);
            assert_eq!(c.proxy.routes[0].access.auth, mode);
        }
        for bad in ["Required", "public", ""] {
            let e = route(&format!("auth = \"{bad}\"")).expect_err(bad);
            assert_eq!(e.key, "routes[0].auth", "{bad}");
        }
        let e = route("auth = \"none\"\nwebsocket = true").expect_err("ws");
        assert_eq!(e.key, "routes[0].auth");
    }

    #[test]
    fn methods_are_case_sensitive_unique_tokens_and_get_brings_head() {
        let c = route("methods = [\"GET\", \"POST\"]").expect("valid");
        let a = &c.proxy.routes[0].access;
        assert!(a.allows(&Method::GET));
        assert!(a.allows(&Method::HEAD));
        assert!(a.allows(&Method::POST));
        assert!(!a.allows(&Method::DELETE));
        assert_eq!(a.allow_header(), "GET, HEAD, POST, OPTIONS");
        let c = route("methods = \"PROPFIND, HEAD\"").expect("valid");
        let a = &c.proxy.routes[0].access;
        assert!(a.allows(&Method::from_bytes(b"PROPFIND").expect("m")));
        assert!(!a.allows(&Method::GET));
        assert_eq!(a.allow_header(), "PROPFIND, HEAD, OPTIONS");
        assert!(route("").expect("valid").proxy.routes[0]
            .access
            .allows(&Method::PATCH));
        for (bad, says) in [
            ("[]", "empty list"),
            ("[\"get\"]", "case-sensitive"),
            ("[\"GET\", \"GET\"]", "twice"),
            ("[\"OPTIONS\"]", "OPTIONS"),
            ("[\"GE T\"]", "not a method"),
        ] {
            let e = route(&format!("methods = {bad}")).expect_err(bad);
            assert_eq!(e.key, "routes[0].methods", "{bad}");
            assert!(e.message.contains(says), "{bad}: {}", e.message);
        }
    }

    #[test]
    fn identity_headers_name_free_headers_and_claims() {
        let c =
            route("identity_headers = { \"X-User-Sub\" = \"sub\", \"x-user-email\" = \"email\" }")
                .expect("valid");
        let names: Vec<(&str, &str)> = c.proxy.routes[0]
            .access
            .identity_headers
            .iter()
            .map(|(n, c)| (n.as_str(), c.as_str()))
            .collect();
        assert_eq!(names, [("x-user-sub", "sub"), ("x-user-email", "email")]);
        for bad in [
            "{ \"authorization\" = \"sub\" }",
            "{ \"cookie\" = \"sub\" }",
            "{ \"host\" = \"sub\" }",
            "{ \"x-forwarded-user\" = \"sub\" }",
            "{ \"x-real-ip\" = \"sub\" }",
            "{ \"x user\" = \"sub\" }",
            "{ \"x-user\" = \"\" }",
            "{ \"x-user\" = \" sub\" }",
            "{ \"X-User\" = \"sub\", \"x-user\" = \"email\" }",
        ] {
            let e = route(&format!("identity_headers = {bad}")).expect_err(bad);
            assert!(
                e.key.starts_with("routes[0].identity_headers."),
                "{bad}: {}",
                e.key
            );
        }
        let e = route("token_header = \"x-pat\"\nidentity_headers = { \"X-Pat\" = \"sub\" }")
            .expect_err("token header");
        assert_eq!(e.key, "routes[0].identity_headers.X-Pat");
    }

    #[test]
    fn assertion_header_needs_the_metrics_listener_and_a_free_name() {
        let with_metrics = |extra: &str| {
            Config::from_toml(
                &crate::config::test_toml(
                    "",
                    &format!(
                        "[metrics]\nlisten = \"127.0.0.1:9100\"\n{}[[routes]]\npath = \"/api\"\nupstream = \"http://127.0.0.1:9001\"\n{extra}",
                        crate::config::TEST_PROVIDER
                    ),
                ),
                Vec::new(),
            )
        };
        let c = with_metrics("assertion_header = \"X-TH-Assertion\"").expect("valid");
        let a = &c.proxy.routes[0].access;
        assert_eq!(
            a.assertion_header.as_ref().map(|h| h.as_str()),
            Some("x-th-assertion")
        );
        assert!(a.reads_id_token());
        let e = route("assertion_header = \"x-th-assertion\"").expect_err("no listener");
        assert_eq!(e.key, "routes[0].assertion_header");
        assert!(e.message.contains("metrics.listen"), "{}", e.message);
        for bad in [
            "assertion_header = \"authorization\"",
            "assertion_header = \"cookie\"",
            "assertion_header = \"x a\"",
            "assertion_header = \"x-user\"\nidentity_headers = { \"X-User\" = \"sub\" }",
        ] {
            let e = with_metrics(bad).expect_err(bad);
            assert_eq!(e.key, "routes[0].assertion_header", "{bad}");
        }
    }

    #[test]
    fn the_configuration_reference_example_parses() {
        let doc = include_str!("../../docs/configuration.md");
        let start = doc
            .find("Public routes, allowed methods and identity headers together:")
            .expect("example");
        let block = doc[start..]
            .split("```toml\n")
            .nth(1)
            .and_then(|b| b.split("```").next())
            .expect("toml block");
        let c = Config::from_toml(
            &crate::config::test_toml("", &format!("{}{block}", crate::config::TEST_PROVIDER)),
            Vec::new(),
        )
        .expect("the example is a valid configuration");
        assert_eq!(c.proxy.routes.len(), 2);
    }
}
