//! The example API on its own: a resource server that validates JWT access tokens.
//!
//! ```sh
//! cargo run --example api -- --issuer http://127.0.0.1:9000 --audience http://localhost:8082
//! ```
//!
//! Put it behind token-handler with a route:
//!
//! ```toml
//! [[routes]]
//! path = "/api"
//! upstream = "http://127.0.0.1:8082"
//! ```
//!
//! `GET /api/data` and `POST /api/data` (JSON `{"text": "..."}`) answer with data for the
//! token's `sub` and the token's `jti`, `iat` and `exp`.

mod service;

use clap::Parser;

#[derive(Parser)]
#[command(about = "Example resource server: validates JWT access tokens with the issuer's JWKS")]
struct Args {
    /// The issuer, exactly as in the tokens' `iss` (its discovery document gives the JWKS).
    #[arg(long, env = "API_ISSUER")]
    issuer: String,
    /// The audience (`aud`) access tokens must be issued for.
    #[arg(long, env = "API_AUDIENCE", default_value = "http://localhost:8082")]
    audience: String,
    /// Address to listen on.
    #[arg(long, env = "API_LISTEN", default_value = "127.0.0.1:8082")]
    listen: String,
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .try_init();
    let args = Args::parse();
    let server = service::server(service::ApiConfig {
        issuer: args.issuer.clone(),
        audience: args.audience.clone(),
        listen: args.listen.clone(),
    })?;
    println!(
        "example API on http://{} (issuer {}, audience {})",
        args.listen, args.issuer, args.audience
    );
    server.await
}
