//! The command line: run the server, generate a key, or check a configuration.

use crate::config::{loose_secret_files, Config};
use crate::cookies::CookieKind;
use crate::crypto::CookieKey;
use crate::oauth::http::build_client;
use crate::oauth::metadata::discover;
use crate::startup::Application;
use crate::state::AppState;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "token-handler",
    version,
    about = "A stateless OAuth 2.0 token handler: SPAs sign in without ever holding a token."
)]
struct Cli {
    /// The TOML configuration file. Every key can also be set by an environment variable
    /// TOKEN_HANDLER__<SECTION>__<KEY> (see docs/configuration.md).
    #[arg(long, short, env = "TOKEN_HANDLER_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Run,
    /// Print a fresh random 256-bit cookie key (base64url).
    Keygen,
    /// Validate the configuration, fetch each provider's discovery document and keys, and
    /// print the effective settings.
    Check {
        /// Print every configuration key with its value and where it came from (default, file
        /// or environment variable), secrets redacted; the providers are not contacted.
        #[arg(long)]
        explain: bool,
    },
    /// Sessions kept track of in the shared store (`[store]`).
    #[command(subcommand)]
    Sessions(SessionsCommand),
}

#[derive(Subcommand)]
enum SessionsCommand {
    /// End every session of a user at a provider, on every replica, through the list of ended
    /// sessions in the store (needs `[store]`). Sessions that start later are not affected.
    Revoke {
        /// The provider's `id` in the configuration.
        #[arg(long)]
        provider: String,
        /// The user's `sub` (the ID token's subject) at that provider.
        #[arg(long)]
        sub: String,
    },
}

/// Prints a line of `check` output; a closed pipe (`check | head`) is not an error.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// Entry point used by `main`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run) {
        Command::Keygen => {
            println!("{}", CookieKey::generate_text());
            ExitCode::SUCCESS
        }
        Command::Run => {
            let config = match load(cli.config.clone()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let telemetry = crate::telemetry::init(config.log_format, config.telemetry.as_ref());
            for loose in loose_secret_files(&config.secret_files) {
                tracing::warn!(
                    key = %loose.key,
                    file = %loose.path.display(),
                    mode = %format!("{:04o}", loose.mode),
                    "{loose}"
                );
            }
            if config.cookies.session_lifetime_alias {
                tracing::warn!(
                    "cookies.session_lifetime is deprecated: it is read as cookies.idle_timeout; rename it (cookies.absolute_lifetime bounds every session, default 24h)"
                );
            }
            let code = actix_web::rt::System::new().block_on(run(config, cli.config));
            // After the server stopped: the spans of its last requests are flushed.
            telemetry.shutdown();
            code
        }
        Command::Check { explain: true } => {
            match crate::config::explain(cli.config.as_deref(), std::env::vars()) {
                Ok(text) => {
                    say!("{}", text.trim_end());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("token-handler: configuration error: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Check { explain: false } => {
            let config = match load(cli.config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            actix_web::rt::System::new().block_on(check(config))
        }
        Command::Sessions(SessionsCommand::Revoke { provider, sub }) => {
            let config = match load(cli.config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            actix_web::rt::System::new().block_on(revoke_sessions(config, provider, sub))
        }
    }
}

fn load(path: Option<PathBuf>) -> Result<Config, ExitCode> {
    Config::load(path.as_deref()).map_err(|e| {
        eprintln!("token-handler: configuration error: {e}");
        ExitCode::from(2)
    })
}

async fn run(config: Config, path: Option<PathBuf>) -> ExitCode {
    let listen = config.server.listen.clone();
    let app = match Application::build(config) {
        // SIGHUP and a changed file reload it (crate::reload).
        Ok(app) => match path {
            Some(path) => app.with_config_file(path, crate::reload::POLL),
            None => app,
        },
        Err(e) => {
            eprintln!("token-handler: cannot listen on {listen}: {e}");
            return ExitCode::from(1);
        }
    };
    tracing::info!(%listen, port = app.port(), "token-handler listening");
    match app.run_until_stopped().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("token-handler: server error: {e}");
            ExitCode::from(1)
        }
    }
}

/// `sessions revoke`: marks every session of `sub` at `provider` as ended in the store.
async fn revoke_sessions(config: Config, provider: String, sub: String) -> ExitCode {
    if !config.providers.iter().any(|p| p.id == provider) {
        eprintln!("token-handler: no provider `{provider}` is configured");
        return ExitCode::from(2);
    }
    if sub.is_empty() {
        eprintln!("token-handler: --sub must not be empty");
        return ExitCode::from(2);
    }
    match crate::store::ended::revoke_from_cli(&config, &provider, &sub).await {
        Ok(cache) => {
            println!(
                "ended every session of that user at `{provider}`: refused on every replica within {} (store.revocation_cache)",
                humantime::format_duration(cache)
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("token-handler: sessions revoke failed: {e}");
            ExitCode::from(1)
        }
    }
}

async fn check(config: Config) -> ExitCode {
    let state = AppState::new(config, Default::default());
    let config = &state.config;
    let base = &config.server.base_path;
    say!("listen:      {}", config.server.listen);
    say!(
        "base path:   {}",
        if base.as_str().is_empty() {
            "/"
        } else {
            base.as_str()
        }
    );
    say!(
        "origins:     {} (CORS {})",
        config.web.trusted_origins.as_slice().join(", "),
        if config.web.cors { "on" } else { "off" }
    );
    let ids: Vec<String> = config
        .cookies
        .keys
        .keys()
        .iter()
        .map(|k| k.id_hex())
        .collect();
    say!(
        "cookie keys: {} (ids {}; the first seals)",
        ids.len(),
        ids.join(", ")
    );
    say!(
        "cookies:     HttpOnly; {}SameSite={}{}",
        if config.cookies.secure {
            "Secure; "
        } else {
            "NOT Secure (development only); "
        },
        config.cookies.same_site,
        config
            .cookies
            .domain
            .as_ref()
            .map(|d| format!("; Domain={d}"))
            .unwrap_or_default()
    );
    let width = CookieKind::ALL
        .iter()
        .map(|k| state.jar.policy().name(*k).len())
        .max()
        .unwrap_or(0);
    for kind in CookieKind::ALL {
        say!(
            "  {:<width$} Path={}",
            state.jar.policy().name(kind),
            state.jar.policy().paths(kind).join(", Path=")
        );
    }
    say!("csrf header: {}", state.jar.policy().csrf_header());
    say!(
        "sessions:    idle {}, absolute {}, {} cookies",
        humantime::format_duration(config.cookies.idle_timeout),
        humantime::format_duration(config.cookies.absolute_lifetime),
        if config.cookies.persistent {
            "persistent"
        } else {
            "browser-session"
        }
    );
    for loose in loose_secret_files(&config.secret_files) {
        say!("warning: {loose}");
    }
    if config.cookies.session_lifetime_alias {
        say!("warning: cookies.session_lifetime is deprecated; rename it cookies.idle_timeout");
    }

    let client = build_client(config.server.connect_timeout);
    let mut failed = false;
    for (index, provider) in state.providers.iter().enumerate() {
        let p = &provider.config;
        say!(
            "provider {} (issuer {}; client {} with {}; PAR {:?}{}):",
            p.id,
            p.issuer,
            p.client_id,
            p.client_auth.method(),
            p.par,
            p.preset
                .map(|pr| format!("; preset {pr:?}"))
                .unwrap_or_default()
        );
        match discover(&client, p).await {
            Ok(md) => {
                let show = |name: &str, u: &Option<url::Url>| {
                    say!(
                        "  {name:<24} {}",
                        u.as_ref().map(|u| u.as_str()).unwrap_or("(none)")
                    )
                };
                say!(
                    "  {:<24} {}",
                    "metadata",
                    if md.source == crate::oauth::metadata::MetadataSource::OpenIdDiscovery {
                        "discovered (OpenID Connect discovery)"
                    } else if md.discovered {
                        "discovered (RFC 8414 authorization server metadata; no OpenID Connect discovery)"
                    } else if p.discovery {
                        "configured endpoints only (discovery failed)"
                    } else {
                        "configured endpoints (this provider has no discovery)"
                    }
                );
                show(
                    "authorization_endpoint",
                    &Some(md.authorization_endpoint.clone()),
                );
                show("token_endpoint", &Some(md.token_endpoint.clone()));
                show("userinfo_endpoint", &md.userinfo_endpoint);
                show("jwks_uri", &md.jwks_uri);
                show("end_session_endpoint", &md.end_session_endpoint);
                show("revocation_endpoint", &md.revocation_endpoint);
                show("pushed_authorization_request_endpoint", &md.par_endpoint);
                // Not an error: a provider may send `iss` without advertising it.
                if p.require_iss && !md.iss_in_response {
                    say!("  warning: providers[{index}].require_iss is true but the provider does not advertise authorization_response_iss_parameter_supported (RFC 9207): every login fails unless its responses carry iss");
                }
                match &md.jwks_uri {
                    // HS256/384/512 ID tokens are keyed with the client secret: no JWKS needed.
                    _ if p.id_token_signing.client_secret_key().is_some() => {
                        say!("  {:<24} {:?}", "id tokens", p.id_token_signing);
                    }
                    Some(uri) => match crate::oauth::http::send_json(
                        client.get(uri.as_str()).timeout(p.timeout).send(),
                        "jwks_uri",
                    )
                    .await
                    {
                        Ok(v) => {
                            let n = v.get("keys").and_then(|k| k.as_array()).map_or(0, Vec::len);
                            say!("  {:<24} {n} key(s)", "jwks");
                            if n == 0 {
                                say!("  error: the provider's JWKS has no keys; ID tokens cannot be verified");
                                failed = true;
                            }
                        }
                        Err(e) => {
                            say!("  error: providers[{index}].jwks_uri: {e}");
                            failed = true;
                        }
                    },
                    None if p.is_openid() => {
                        say!("  error: providers[{index}]: no jwks_uri, so ID tokens cannot be verified; configure jwks_uri");
                        failed = true;
                    }
                    None => {}
                }
            }
            Err(reason) => {
                say!("  error: providers[{index}].issuer: {reason}");
                failed = true;
            }
        }
    }
    if !check_store(config).await {
        failed = true;
    }
    if failed {
        say!("check failed");
        ExitCode::from(1)
    } else {
        say!("check passed");
        ExitCode::SUCCESS
    }
}

/// `check`'s line about `[store]`: off, or whether it answers `PING` (with the URL's host, never
/// the password). Returns false when a configured store does not answer.
async fn check_store(config: &Config) -> bool {
    let Some(store) = &config.store else {
        say!("store:       off (each replica coordinates refreshes on its own)");
        return true;
    };
    let place = format!(
        "{}://{}:{}",
        store.url.scheme(),
        store.url.host_str().unwrap_or(""),
        store.url.port().unwrap_or(6379)
    );
    let answer = match crate::store::Store::connect(store) {
        Ok(handle) => handle.ping().await,
        Err(e) => Err(e),
    };
    match answer {
        Ok(()) => {
            say!("store:       {place} answers (PING)");
            true
        }
        Err(e) => {
            say!("store:       {place}");
            say!("  error: store.url: the store does not answer: {e}");
            false
        }
    }
}
