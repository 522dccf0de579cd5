//! The whole token-handler setup on one machine, in one command:
//!
//! ```sh
//! cargo run --example demo
//! ```
//!
//! then open <http://localhost:8080>. It starts, on loopback:
//!
//! | what                                   | where                                   |
//! | -------------------------------------- | --------------------------------------- |
//! | the example SPA, the agent, the proxy  | `http://localhost:8080` (one origin)    |
//! | the development OpenID Provider        | `http://localhost:8081`                 |
//! | the example API (validates JWTs)       | `http://127.0.0.1:8082` (behind `/api`) |
//! | token-handler itself                   | `http://127.0.0.1:8083` (behind 8080)   |
//!
//! The front server on 8080 plays the part of your CDN or ingress: it serves the SPA's files and
//! routes `/oauth-agent/*` and `/api/*` to token-handler. token-handler is built from the library
//! exactly as the real binary builds it ([`Application::build`]).
//!
//! `--issuer URL` uses another OpenID Provider instead of the development one (the browser test
//! in tests/e2e does that with oidc-provider). `--help` lists every option. Ctrl-C stops
//! everything.

#[path = "../api/service.rs"]
mod api;
mod dev_op;
mod front;

use clap::Parser;
use futures_util::future::{join_all, LocalBoxFuture};
use std::process::ExitCode;
use std::time::Duration;
use token_handler::config::Config;
use token_handler::crypto::CookieKey;
use token_handler::startup::Application;

/// The host name the browser uses for the SPA and the development provider. `localhost` and
/// `127.0.0.1` are different sites to a browser: use one name consistently, and make
/// `web.trusted_origins` exactly what the browser sends in `Origin`.
const HOST: &str = "localhost";

#[derive(Parser)]
#[command(
    about = "token-handler demo: the example SPA, token-handler, the example API and a \
             development OpenID Provider"
)]
struct Args {
    /// Port of the SPA's origin (SPA files, /oauth-agent, /api).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Port of the development OpenID Provider.
    #[arg(long, default_value_t = 8081)]
    op_port: u16,
    /// Port of the example API.
    #[arg(long, default_value_t = 8082)]
    api_port: u16,
    /// Port of token-handler itself (reached through the SPA's origin).
    #[arg(long, default_value_t = 8083)]
    th_port: u16,
    /// Use this OpenID Provider instead of starting the development one. It must have a client
    /// whose redirect_uri and post_logout_redirect_uri are http://localhost:<port>/ and issue
    /// JWT access tokens for --audience.
    #[arg(long, env = "DEMO_ISSUER")]
    issuer: Option<String>,
    /// Client id at the provider.
    #[arg(long, default_value = "spa-client")]
    client_id: String,
    /// Client secret at the provider (default for the development provider: a random one).
    #[arg(long, env = "DEMO_CLIENT_SECRET")]
    client_secret: Option<String>,
    /// Audience of the access tokens, which the example API requires.
    #[arg(long, default_value = "http://localhost:8082")]
    audience: String,
    /// Access-token lifetime at the development provider, in seconds.
    #[arg(long, default_value_t = 30)]
    access_token_ttl: i64,
    /// token-handler's proxy.refresh_ahead: how long before expiry the proxy refreshes.
    #[arg(long, default_value = "5s")]
    refresh_ahead: String,
}

/// token-handler's configuration for the demo.
fn token_handler_toml(args: &Args, issuer: &str, secret: &str, key: &str) -> String {
    let spa = format!("http://{HOST}:{}", args.port);
    // A TOML basic string: quotes and backslashes escaped.
    let q = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    format!(
        r#"
[server]
listen = "127.0.0.1:{th_port}"
base_path = "/oauth-agent"
workers = 2

[cookies]
prefix = "th"
# `secure = false` ONLY because this demo serves the SPA over plain http://localhost. Secure
# cookies travel over https only; Chrome and Firefox make an exception for localhost, but not
# every browser does (Safari) nor every tool (curl's cookie jar). Never copy this line into a
# deployment: there the SPA is served over https and `secure` stays true (the default).
secure = false
same_site = "strict"
keys = [{key}]
idle_timeout = "1h"

[web]
# Exactly what the browser sends in Origin (scheme://host:port, `localhost`, not 127.0.0.1).
trusted_origins = [{spa}]
# The SPA, the agent and the proxy share one origin: no CORS needed.
cors = false

[[providers]]
id = "default"
issuer = {issuer}
client_id = {client_id}
client_secret = {secret}
redirect_uri = {redirect}
post_logout_redirect_uri = {redirect}
scope = "openid profile email offline_access"
timeout = "5s"

[proxy]
refresh_ahead = {refresh_ahead}

[[routes]]
path = "/api"
upstream = "http://127.0.0.1:{api_port}"
timeout = "10s"
"#,
        th_port = args.th_port,
        api_port = args.api_port,
        key = q(key),
        spa = q(&spa),
        issuer = q(issuer),
        client_id = q(&args.client_id),
        secret = q(secret),
        redirect = q(&format!("{spa}/")),
        refresh_ahead = q(&args.refresh_ahead),
    )
}

fn bind_error(what: &str, port: u16, flag: &str, e: std::io::Error) -> ExitCode {
    eprintln!("error: cannot start {what} on port {port}: {e}");
    if e.kind() == std::io::ErrorKind::AddrInUse {
        eprintln!(
            "       the port is taken (is another demo running?); choose another with {flag}"
        );
    }
    ExitCode::FAILURE
}

/// Log lines of every server on stdout; `RUST_LOG` overrides the `info` level.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .try_init();
}

/// Resolves on Ctrl-C or SIGTERM.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[actix_web::main]
async fn main() -> ExitCode {
    init_logging();
    let args = Args::parse();
    let spa = format!("http://{HOST}:{}", args.port);
    let mut running: Vec<LocalBoxFuture<'static, std::io::Result<()>>> = Vec::new();

    // 1. The OpenID Provider: the development one, unless --issuer names another.
    let (issuer, secret) = match &args.issuer {
        Some(issuer) => (
            issuer.trim_end_matches('/').to_string(),
            args.client_secret
                .clone()
                .unwrap_or_else(|| "spa-secret".into()),
        ),
        None => {
            let issuer = format!("http://{HOST}:{}", args.op_port);
            // A fresh client secret each run: only token-handler, in this process, needs it.
            let secret = args
                .client_secret
                .clone()
                .unwrap_or_else(CookieKey::generate_text);
            let op = dev_op::server(dev_op::DevOpConfig {
                issuer: issuer.clone(),
                listen: format!("127.0.0.1:{}", args.op_port),
                client_id: args.client_id.clone(),
                client_secret: secret.clone(),
                redirect_uri: format!("{spa}/"),
                post_logout_redirect_uri: format!("{spa}/"),
                audience: args.audience.clone(),
                access_token_ttl: args.access_token_ttl.max(1),
            });
            match op {
                Ok(server) => running.push(Box::pin(server)),
                Err(e) => {
                    return bind_error(
                        "the development OpenID Provider",
                        args.op_port,
                        "--op-port",
                        e,
                    )
                }
            }
            (issuer, secret)
        }
    };

    // 2. The example API, trusting that issuer's tokens for the demo's audience.
    match api::server(api::ApiConfig {
        issuer: issuer.clone(),
        audience: args.audience.clone(),
        listen: format!("127.0.0.1:{}", args.api_port),
    }) {
        Ok(server) => running.push(Box::pin(server)),
        Err(e) => return bind_error("the example API", args.api_port, "--api-port", e),
    }

    // 3. token-handler, from the library, with a cookie key generated for this run.
    let key = CookieKey::generate_text();
    let config = match Config::from_toml(
        &token_handler_toml(&args, &issuer, &secret, &key),
        Vec::new(),
    ) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: token-handler configuration: {e}");
            return ExitCode::FAILURE;
        }
    };
    let agent_path = config.server.base_path.as_str().to_string();
    match Application::build(config) {
        Ok(app) => running.push(Box::pin(app.run_until_stopped())),
        Err(e) => return bind_error("token-handler", args.th_port, "--th-port", e),
    }

    // 4. The SPA's origin.
    match front::server(
        &format!("127.0.0.1:{}", args.port),
        format!("http://127.0.0.1:{}", args.th_port),
        &agent_path,
    ) {
        Ok(server) => running.push(Box::pin(server)),
        Err(e) => return bind_error("the SPA's origin", args.port, "--port", e),
    }

    let provider_line = match &args.issuer {
        Some(_) => format!("OpenID Provider     {issuer} (external)"),
        None => format!(
            "OpenID Provider     {issuer}  (development only: any user name, no password; \
             access tokens live {} s)",
            args.access_token_ttl
        ),
    };
    println!(
        "\n  token-handler demo is running. Open:\n\n      {spa}/\n\n  \
SPA + agent + proxy {spa}  (/oauth-agent/*, /api/* -> token-handler)\n  \
token-handler       http://127.0.0.1:{th}  (proxy.refresh_ahead {ahead})\n  \
{provider_line}\n  \
example API         http://127.0.0.1:{api}  (audience {aud})\n\n  Ctrl-C stops everything.\n",
        th = args.th_port,
        ahead = args.refresh_ahead,
        api = args.api_port,
        aud = args.audience,
    );

    // Every server stops itself on Ctrl-C/SIGTERM (actix handles the signals); if one is still
    // busy with open connections a few seconds later, stop waiting for it.
    let all = join_all(running);
    let force = async {
        stop_signal().await;
        tokio::time::sleep(Duration::from_secs(3)).await;
    };
    tokio::select! {
        results = all => {
            match results.into_iter().find_map(Result::err) {
                Some(e) => {
                    eprintln!("error: a server failed: {e}");
                    ExitCode::FAILURE
                }
                None => {
                    println!("demo stopped");
                    ExitCode::SUCCESS
                }
            }
        }
        _ = force => {
            println!("demo stopped (some connections were still open)");
            ExitCode::SUCCESS
        }
    }
}
