//! token-handler: a stateless OAuth 2.0 token handler (the Backend-for-Frontend pattern).
//!
//! A single-page app must never hold OAuth tokens: anything JavaScript can read, an XSS payload
//! can send elsewhere. token-handler runs the authorization-code flow (PKCE, state, nonce) as a
//! confidential client and keeps the tokens in AES-256-GCM sealed, HttpOnly cookies, so the
//! browser stores them but no script can read them, and any replica holding the key can serve
//! any request: there is no server-side session store.
//!
//! Threat model in brief (docs/security.md has the whole of it):
//! - A script in the SPA's origin can make requests with the cookies but cannot read tokens.
//! - Another site can make the browser send our cookies, so state-changing requests need a
//!   trusted `Origin` and a CSRF header only our SPA can know ([`origin`], [`csrf`]).
//! - Whoever steals a cookie gains a sealed blob bound to its purpose and expiry ([`crypto`]).
//! - Provider answers are untrusted until checked ([`oauth`]).
//!
//! Module map: [`config`] (TOML + env → typed config), [`crypto`] (sealing), [`cookies`] (names,
//! paths, attributes), [`session`] (what each cookie holds), [`oauth`] (discovery, PKCE, token
//! requests, ID-token validation), [`routes`] (the HTTP endpoints), [`error`] (the one error
//! type), [`startup`] (the actix app), [`cli`] (the binary's commands).

// Lints (unsafe forbidden; unwrap, expect, panic and the system clock denied outside tests) are
// set for every target in Cargo.toml's [lints] and clippy.toml, not here.

pub mod cli;
pub mod clock;
pub mod config;
pub mod cookies;
pub mod crypto;
pub mod csrf;
pub mod error;
pub mod health;
pub mod metrics;
pub mod middleware;
pub mod oauth;
pub mod origin;
pub mod proxy;
pub mod rate_limit;
pub mod refresh;
pub mod reload;
pub mod rotation;
pub mod routes;
pub mod secret;
pub mod session;
pub mod startup;
pub mod state;
pub mod store;
pub mod telemetry;
#[cfg(test)]
mod troubleshooting;
