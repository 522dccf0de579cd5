//! Integration tests: token-handler against a real OpenID Provider, driven like a browser would.

mod adversarial;
mod cli;
mod edge;
mod flow;
mod gateway;
mod helpers;
mod hostile;
mod operations;
mod providers;
mod proxy;
mod replicas;
mod streaming;
mod upstream;
