//! Liveness and readiness for load balancers and Kubernetes probes.
//!
//! Live: the process serves HTTP. Ready: every *required* provider's metadata is loaded
//! (`required`, by default only the default provider). A provider that is not required does not
//! hold readiness back: one unreachable secondary provider would otherwise keep every replica
//! out of the Service, the proxy and the other providers' logins with it. Its state is reported
//! in the body and in `token_handler_provider_ready`, and its logins answer 503
//! `provider_unavailable` until its metadata loads (the background discovery keeps retrying).
//! Both answer on the main listener, outside the agent's base path, and carry nothing sensitive:
//! provider ids and a state, never a URL or a reason.

use crate::state::{AppState, State};
use actix_web::HttpResponse;
use serde_json::{json, Map, Value};

pub async fn live() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

pub async fn ready(state: State) -> HttpResponse {
    let mut providers = Map::new();
    for p in state.providers.iter() {
        let word = if p.is_ready() { "ready" } else { "unavailable" };
        providers.insert(p.id().to_string(), Value::from(word));
    }
    if is_ready(&state) {
        HttpResponse::Ok().json(json!({"status": "ready", "providers": providers}))
    } else {
        HttpResponse::ServiceUnavailable()
            .json(json!({"status": "not_ready", "providers": providers}))
    }
}

/// Whether every required provider is loaded, those a live reload added to a ready replica
/// aside ([`AppState::late_providers`]): a reload never takes a serving replica out of the
/// Service; the added provider is reported `unavailable` until its discovery loads it.
pub fn is_ready(state: &AppState) -> bool {
    state.providers.iter().all(|p| {
        p.is_ready() || !p.is_required() || state.late_providers.iter().any(|id| id == p.id())
    })
}
