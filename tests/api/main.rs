//! Integration tests: token-handler against a real OpenID Provider, driven like a browser would.

// Test code asserts by panicking; the library's ban on unwrap/expect/panic (Cargo.toml [lints])
// does not apply to the helpers here, which are not #[test] functions but are only test code.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod adversarial;
mod backchannel;
mod cli;
mod discovery;
mod dop;
mod dot;
mod edge;
mod flow;
mod gateway;
mod github;
mod helpers;
mod hostile;
mod large_tokens;
mod multi_provider;
mod narrowed;
mod operations;
mod picker;
mod providers;
mod proxy;
mod pyprovider;
mod readiness;
mod redis;
mod reload;
mod replicas;
mod route_auth;
mod sessions;
mod store;
mod storm;
mod streaming;
mod tabs;
mod traces;
mod upstream;
mod userinfo;
