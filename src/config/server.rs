//! `[server]`: where token-handler listens, under which path the agent endpoints live, and
//! which peers' `X-Forwarded-*` headers it believes.

use super::de::{duration, list_or_text, usize_or_text};
use super::ConfigError;
use serde::de::{self, Deserializer};
use serde::Deserialize;
use std::net::IpAddr;
use std::time::Duration;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawServer {
    listen: String,
    base_path: String,
    #[serde(deserialize_with = "usize_or_text")]
    workers: usize,
    #[serde(deserialize_with = "duration")]
    shutdown_grace: Duration,
    #[serde(deserialize_with = "ip_nets")]
    trusted_proxies: Vec<IpNet>,
    #[serde(deserialize_with = "duration")]
    connect_timeout: Duration,
    /// Issue 14 part 3: where token-handler itself completes logins started by `GET /login`.
    callback_path: Option<String>,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            base_path: "/oauth-agent".into(),
            workers: 0,
            shutdown_grace: Duration::from_secs(30),
            trusted_proxies: Vec::new(),
            connect_timeout: Duration::from_secs(5),
            callback_path: None,
        }
    }
}

/// `trusted_proxies`: a list (or comma-separated text) of addresses and CIDR ranges.
fn ip_nets<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    list_or_text(d)?
        .iter()
        .map(|t| IpNet::parse(t).map_err(de::Error::custom))
        .collect()
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// `host:port` to bind; port 0 picks a free port (tests).
    pub listen: String,
    pub base_path: BasePath,
    /// Worker threads; `None`: one per CPU core.
    pub workers: Option<usize>,
    /// How long in-flight requests may take to finish after SIGTERM/SIGINT.
    pub shutdown_grace: Duration,
    /// Peers whose `X-Forwarded-*` headers are believed (extended, not replaced).
    pub trusted_proxies: Vec<IpNet>,
    /// Time allowed to open a connection (TCP and TLS) to a provider or upstream; the total
    /// time of a call is `providers[].timeout` or `routes[].timeout`.
    pub connect_timeout: Duration,
    /// Where the provider sends the browser back after a login started by `GET /login`, and
    /// token-handler completes it itself; `None`: no server-side logins (`GET /login` is off).
    pub callback_path: Option<String>,
}

impl TryFrom<RawServer> for ServerConfig {
    type Error = ConfigError;

    fn try_from(raw: RawServer) -> Result<Self, ConfigError> {
        let base_path =
            BasePath::parse(&raw.base_path).map_err(|m| ConfigError::new("server.base_path", m))?;
        if raw.listen.trim().is_empty() {
            return Err(ConfigError::new("server.listen", "must be host:port"));
        }
        let callback_path = raw
            .callback_path
            .as_deref()
            .map(|p| callback_path(p, &base_path))
            .transpose()
            .map_err(|m| ConfigError::new("server.callback_path", m))?;
        Ok(Self {
            callback_path,
            listen: raw.listen.trim().to_string(),
            base_path,
            workers: (raw.workers > 0).then_some(raw.workers),
            shutdown_grace: raw.shutdown_grace,
            trusted_proxies: raw.trusted_proxies,
            connect_timeout: raw.connect_timeout,
        })
    }
}

impl ServerConfig {
    /// Whether `ip` is one of `trusted_proxies`, whose `X-Forwarded-*` headers are believed.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|n| n.contains(ip))
    }
}

/// An address range, `10.0.0.0/8` or a single address (a `/32` or `/128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet(ipnet::IpNet);

impl IpNet {
    pub fn parse(text: &str) -> Result<Self, String> {
        let trimmed = text.trim();
        let not_ip = |_| format!("`{text}` is not an IP address or CIDR range");
        let net = match trimmed.split_once('/') {
            None => ipnet::IpNet::from(trimmed.parse::<IpAddr>().map_err(not_ip)?),
            Some((ip, _)) => {
                ip.parse::<IpAddr>().map_err(not_ip)?;
                trimmed
                    .parse::<ipnet::IpNet>()
                    .map_err(|_| format!("`{text}` has an invalid prefix length"))?
            }
        };
        Ok(Self(net))
    }

    /// Whether `ip` lies in this range. An IPv4-mapped IPv6 peer (`::ffff:10.0.0.1`, what a
    /// dual-stack socket reports for an IPv4 client) counts as the IPv4 address it carries.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.0.contains(&ip)
    }
}

/// Where the agent endpoints live: empty (the root) or `/segment[/segment…]` without a trailing
/// slash, so `format!("{base}/login/start")` is always a clean path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasePath(String);

impl BasePath {
    pub fn parse(text: &str) -> Result<Self, String> {
        let trimmed = text.trim().trim_end_matches('/');
        if trimmed.is_empty() {
            return Ok(Self(String::new()));
        }
        if !trimmed.starts_with('/') {
            return Err(format!("`{text}` must start with `/`"));
        }
        if trimmed.split('/').skip(1).any(|seg| {
            seg.is_empty() || seg == "." || seg == ".." || !seg.chars().all(is_path_char)
        }) {
            return Err(format!(
                "`{text}` must be plain path segments (letters, digits, `-`, `_`, `.`, `~`)"
            ));
        }
        Ok(Self(trimmed.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The full path of an endpoint under this base, e.g. `join("/refresh")`.
    pub fn join(&self, endpoint: &str) -> String {
        format!("{}{}", self.0, endpoint)
    }
}

/// `server.callback_path`: a path below `<base_path>/login/`, because the login cookies are
/// written at `<base_path>/login` and the callback needs the one of its flow; not one of the
/// agent's own login endpoints.
fn callback_path(text: &str, base_path: &BasePath) -> Result<String, String> {
    let login = base_path.join("/login/");
    let path = BasePath::parse(text)?;
    let path = path.as_str();
    let rest = path.strip_prefix(&login).ok_or_else(|| {
        format!("`{text}` must be below `{login}`, where the login cookies are sent, e.g. `{login}callback`")
    })?;
    if rest.is_empty()
        || matches!(rest, "start" | "end")
        || rest.starts_with("start/")
        || rest.starts_with("end/")
    {
        return Err(format!(
            "`{text}` must name a path of its own below `{login}` (not start or end)"
        ));
    }
    Ok(path.to_string())
}

fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_callback_path_is_below_the_login_path() {
        let base = BasePath::parse("/oauth-agent").expect("valid");
        assert_eq!(
            callback_path("/oauth-agent/login/callback", &base).as_deref(),
            Ok("/oauth-agent/login/callback")
        );
        for bad in [
            "/callback",
            "/oauth-agent/callback",
            "/oauth-agent/login",
            "/oauth-agent/login/start",
            "/oauth-agent/login/end",
            "/oauth-agent/loginx/callback",
            "/oauth-agent/login/../callback",
            "oauth-agent/login/callback",
        ] {
            assert!(callback_path(bad, &base).is_err(), "{bad}");
        }
    }

    #[test]
    fn trusted_proxy_ranges() {
        let net = IpNet::parse("10.1.0.0/16").expect("valid");
        assert!(net.contains("10.1.2.3".parse().expect("ip")));
        assert!(!net.contains("10.2.0.1".parse().expect("ip")));
        assert!(net.contains("::ffff:10.1.9.9".parse().expect("ip")));
        let one = IpNet::parse("127.0.0.1").expect("valid");
        assert!(one.contains("127.0.0.1".parse().expect("ip")));
        assert!(!one.contains("127.0.0.2".parse().expect("ip")));
        let all6 = IpNet::parse("::/0").expect("valid");
        assert!(all6.contains("2001:db8::1".parse().expect("ip")));
        assert!(IpNet::parse("10.0.0.0/33").is_err());
        assert!(IpNet::parse("proxy.internal").is_err());
    }
}
