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

use crate::state::AppState;
use actix_web::{web, HttpResponse};
use serde_json::{json, Map, Value};

pub async fn live() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let mut providers = Map::new();
    let mut ready = true;
    for p in state.providers.iter() {
        let loaded = p.is_ready();
        ready &= loaded || !p.is_required();
        let word = if loaded { "ready" } else { "unavailable" };
        providers.insert(p.id().to_string(), Value::from(word));
    }
    if ready {
        HttpResponse::Ok().json(json!({"status": "ready", "providers": providers}))
    } else {
        HttpResponse::ServiceUnavailable()
            .json(json!({"status": "not_ready", "providers": providers}))
    }
}
