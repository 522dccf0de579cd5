//! The OAuth Agent API, under `server.base_path`. Handlers only extract, call and respond; the
//! rules live in the modules they call.
//!
//! The endpoints and their JSON follow Curity's OAuth Agent API, so an SPA written for it works
//! unchanged: `POST /login/start`, `POST /login/end`, `GET /userInfo`, `GET /claims`,
//! `POST /refresh`, `POST /logout`; and `GET /session` (when the session ends, see
//! [`lifetime`]) and `GET /providers` (which providers a user may choose, see [`picker`]). Forward auth (`GET /auth`) is an agent endpoint too, but
//! mounted on its own listener by [`crate::startup`], never under the public base path.

pub mod backchannel;
mod body;
mod forward_auth;
mod lifetime;
mod login;
mod logout;
mod picker;
mod refresh;
mod session;

pub use body::{JsonBody, MAX_BODY_BYTES};
pub use forward_auth::forward_auth;
pub(crate) use lifetime::provider_param;

use crate::error::ApiError;
use crate::origin::origin_policy;
use crate::rate_limit::limit_login;
use actix_web::cookie::Cookie;
use actix_web::http::Method;
use actix_web::{middleware, web, HttpResponse, ResponseError};

/// Mounts the agent endpoints at `base_path`.
pub fn configure(base_path: &str) -> impl FnOnce(&mut web::ServiceConfig) + '_ {
    move |cfg| {
        cfg.service(
            web::scope(base_path)
                .wrap(middleware::from_fn(crate::store::ended::agent_check))
                .wrap(middleware::from_fn(lifetime::clear_ended))
                .wrap(middleware::from_fn(origin_policy))
                .service(
                    resource("/login/start", "POST")
                        .wrap(middleware::from_fn(limit_login))
                        .route(web::post().to(login::start)),
                )
                .service(
                    resource("/login/end", "POST")
                        .wrap(middleware::from_fn(limit_login))
                        .route(web::post().to(login::end)),
                )
                .service(
                    resource("/userInfo", "GET")
                        .wrap(middleware::from_fn(lifetime::renew_idle))
                        .route(web::get().to(session::user_info)),
                )
                .service(
                    resource("/claims", "GET")
                        .wrap(middleware::from_fn(lifetime::renew_idle))
                        .route(web::get().to(session::claims)),
                )
                .service(resource("/providers", "GET").route(web::get().to(picker::list)))
                .service(resource("/session", "GET").route(web::get().to(lifetime::session_info)))
                .service(resource("/refresh", "POST").route(web::post().to(refresh::refresh)))
                .service(resource("/logout", "POST").route(web::post().to(logout::logout)))
                .default_service(web::to(not_found)),
        );
    }
}

/// The server-side login, when `server.callback_path` is set: `GET <base_path>/login` and the
/// callback. Mounted before the agent scope and outside its Origin middleware: both are
/// top-level navigations, the callback one the provider starts, so they check only that a
/// present Origin is trusted ([`crate::origin::Origin::check_navigation`]).
pub fn configure_server_login<'a>(
    base_path: &'a str,
    callback_path: Option<&'a str>,
) -> impl FnOnce(&mut web::ServiceConfig) + 'a {
    move |cfg| {
        let Some(callback_path) = callback_path else {
            return;
        };
        cfg.service(
            resource(&format!("{base_path}/login"), "GET")
                .wrap(middleware::from_fn(limit_login))
                .route(web::get().to(picker::login)),
        )
        .service(
            resource(callback_path, "GET")
                .wrap(middleware::from_fn(limit_login))
                .route(web::get().to(picker::callback)),
        );
    }
}

/// An endpoint whose other methods get a JSON 405 with `Allow` (RFC 9110 §15.5.6).
fn resource(path: &str, allow: &'static str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(move |method: Method| async move {
        let mut resp = ApiError::MethodNotAllowed(method.to_string()).error_response();
        resp.headers_mut().insert(
            actix_web::http::header::ALLOW,
            actix_web::http::header::HeaderValue::from_static(allow),
        );
        resp
    }))
}

/// JSON 404 for any path we do not serve.
pub async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound)
}

/// A 200 JSON response with cookies.
fn json_with_cookies(body: &impl serde::Serialize, cookies: Vec<Cookie<'static>>) -> HttpResponse {
    let mut builder = HttpResponse::Ok();
    for c in cookies {
        builder.cookie(c);
    }
    builder.json(body)
}
