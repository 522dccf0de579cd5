//! Choosing a provider: `GET /providers` lists the ones a user may sign in with, so an SPA can
//! draw its "sign in with …" buttons from the configuration instead of hard-coding ids.
//!
//! The list carries ids, display names and which one is the default: nothing secret and no
//! endpoint (those stay between token-handler and the provider). When a provider is marked
//! `exclusive`, it is the only one listed and the only one `login/start` accepts.

use crate::state::AppState;
use actix_web::http::header;
use actix_web::{web, HttpResponse};
use serde::Serialize;

#[derive(Serialize)]
struct ProviderList<'a> {
    /// The id `login/start` uses when the request names none.
    default: &'a str,
    providers: Vec<ProviderEntry<'a>>,
}

#[derive(Serialize)]
struct ProviderEntry<'a> {
    id: &'a str,
    #[serde(rename = "displayName")]
    display_name: &'a str,
}

/// `GET /providers`: no cookie needed; the Origin rules of every agent endpoint apply.
pub async fn list(state: web::Data<AppState>) -> HttpResponse {
    let providers = &state.providers;
    let body = ProviderList {
        default: providers.default_provider().id(),
        providers: providers
            .offered()
            .into_iter()
            .map(|p| ProviderEntry {
                id: p.id(),
                display_name: &p.config.display_name,
            })
            .collect(),
    };
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(body)
}
