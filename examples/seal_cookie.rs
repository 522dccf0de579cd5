//! Prints the Cookie header of a session for load tests (scripts/bench-proxy.sh,
//! scripts/profile-proxy.sh): `cargo run --example seal_cookie -- <cookie key> [token bytes]`.
//!
//! The access token is a made-up JWT of `token bytes` characters (default 1,000: header,
//! payload and signature of random base64url, so it compresses as little as a real one). A
//! large one is split into chunked cookies (`__Host-th-at`, `__Host-th-at.1`, ...) exactly as
//! token-handler writes them, and the whole header (`name=value; name.1=value`) is printed.
//!
//! The token never expires by token-handler's reckoning (no `expires_in`, the JWT is not read),
//! so the proxy forwards it without refreshing; the benchmark's upstream does not check it. The
//! session starts now, so for the next `cookies.idle_timeout / 4` (2 h by default) the proxy
//! neither ends it nor renews its idle clock: no `Set-Cookie` in the measured answers.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use token_handler::config::Config;
use token_handler::cookies::{CookieKind, CookiePolicy};
use token_handler::crypto::Sealer;
use token_handler::secret::Token;
use token_handler::session::{AccessTokenCookie, SessionId};

/// `len` characters shaped like a JWT: `eyJ…` header, a payload and a signature, base64url.
fn made_up_jwt(len: usize) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"at+jwt","kid":"bench"}"#);
    let rest = len.saturating_sub(header.len() + 2).max(2);
    let mut bytes = vec![0u8; rest];
    rand::rng().fill_bytes(&mut bytes);
    let text = URL_SAFE_NO_PAD.encode(bytes);
    let (payload, signature) = text[..rest].split_at(rest - rest.min(342) / 2);
    format!("{header}.{payload}.{signature}")
}

fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(key) = args.next() else {
        eprintln!("usage: seal_cookie <cookie key from `token-handler keygen`> [token bytes]");
        return std::process::ExitCode::from(2);
    };
    let bytes = args.next().and_then(|b| b.parse().ok()).unwrap_or(1000);
    let toml = format!(
        "[cookies]\nkeys = [\"{key}\"]\n[web]\ntrusted_origins = [\"https://www.example.test\"]\n\
         [[providers]]\nid = \"default\"\nissuer = \"http://127.0.0.1:1\"\n\
         client_id = \"bench\"\nclient_secret = \"bench\"\nredirect_uri = \"https://www.example.test/\"\n"
    );
    let config = match Config::from_toml(&toml, Vec::new()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("seal_cookie: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let policy = CookiePolicy::for_config(&config);
    let sealer = Sealer::new(config.cookies.keys.clone());
    let now = token_handler::clock::system_now();
    let value = AccessTokenCookie {
        provider: "default".into(),
        token: Token::new(made_up_jwt(bytes)),
        expires_at: None,
        received_at: 0,
        sid: SessionId::new(),
        started_at: Some(now),
        active_at: Some(now),
        // As a login with an OpenID provider seals them (back-channel logout).
        sub: Some("bench-user".into()),
        op_sid: Some("bench-provider-session".into()),
    };
    match policy.seal(&sealer, CookieKind::AccessToken, i64::MAX / 2, &value) {
        Ok(cookies) => {
            let header: Vec<String> = cookies
                .iter()
                .map(|c| format!("{}={}", c.name(), c.value()))
                .collect();
            println!("{}", header.join("; "));
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("seal_cookie: {e}");
            std::process::ExitCode::from(1)
        }
    }
}
