//! Liveness and readiness for load balancers and Kubernetes probes.
//!
//! Live: the process serves HTTP. Ready: every provider's metadata is loaded, so a login can
//! start; a replica whose providers are unreachable keeps serving existing sessions but should
//! not receive new logins. Both answer on the main listener, outside the agent's base path, and
//! carry nothing sensitive.

use crate::state::AppState;
use actix_web::{web, HttpResponse};
use serde_json::{json, Map, Value};

pub async fn live() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let providers: Map<String, Value> = state
        .providers
        .iter()
        .map(|p| (p.id().to_string(), Value::Bool(p.is_ready())))
        .collect();
    if providers.values().all(|v| v == &Value::Bool(true)) {
        HttpResponse::Ok().json(json!({"status": "ready", "providers": providers}))
    } else {
        HttpResponse::ServiceUnavailable()
            .json(json!({"status": "not_ready", "providers": providers}))
    }
}
