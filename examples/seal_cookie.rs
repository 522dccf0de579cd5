//! Prints a sealed `-at` cookie value for a made-up access token, for load tests
//! (scripts/bench-proxy.sh): `cargo run --example seal_cookie -- <cookie key>`.
//!
//! The token never expires by token-handler's reckoning (no `expires_in`, not a JWT), so the
//! proxy forwards it without refreshing; the benchmark's upstream does not check it. The
//! session starts now, so for the next `cookies.idle_timeout / 4` (2 h by default) the proxy
//! neither ends it nor renews its idle clock: no `Set-Cookie` in the measured answers.

use token_handler::crypto::{KeyRing, Purpose, Sealer};
use token_handler::secret::Token;
use token_handler::session::{AccessTokenCookie, SessionId};

fn main() -> std::process::ExitCode {
    let Some(key) = std::env::args().nth(1) else {
        eprintln!("usage: seal_cookie <cookie key from `token-handler keygen`>");
        return std::process::ExitCode::from(2);
    };
    let ring = match KeyRing::parse(&[key]) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("seal_cookie: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let now = token_handler::clock::system_now();
    let value = AccessTokenCookie {
        provider: "default".into(),
        token: Token::new(format!("bench-{}", "x".repeat(800))),
        expires_at: None,
        received_at: 0,
        sid: SessionId::new(),
        started_at: Some(now),
        active_at: Some(now),
        // As a login with an OpenID provider seals them (back-channel logout).
        sub: Some("bench-user".into()),
        op_sid: Some("bench-provider-session".into()),
    };
    match Sealer::new(ring).seal(Purpose::AccessToken, i64::MAX / 2, &value) {
        Ok(sealed) => {
            println!("{sealed}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("seal_cookie: {e}");
            std::process::ExitCode::from(1)
        }
    }
}
