//! The API proxy: cookie-authenticated calls from the SPA become Bearer calls to the upstream.
//!
//! The SPA calls `fetch("/api/...", {credentials: "include"})`; we check Origin and CSRF, open
//! the access-token cookie (refreshing first when it is about to expire, see [`crate::refresh`]),
//! and forward the request with `Authorization: Bearer`. Our cookies and CSRF header never reach
//! the upstream, and bodies stream both ways without being buffered, so uploads, downloads and
//! server-sent events of any size pass through in constant memory.

mod access;
mod assertion;
mod forward;
mod headers;
mod identity;
mod narrowed;
mod route;
mod websocket;

pub use assertion::{jwks, AssertionSigner};
pub use forward::note_peer;
pub use narrowed::Narrower;
pub use route::{match_route, RouteMatch};

use crate::config::ServerConfig;
use crate::cookies::{CookieKind, CookiePolicy, RequestCookies};
use crate::csrf::require_csrf;
use crate::error::{error_with_cookies, ApiError};
use crate::origin::{preflight, Origin};
use crate::refresh::{usable_access_token, Denied, TokenSource, Usable};
use crate::secret::Token;
use crate::session::SessionJar;
use crate::state::{AppState, HttpClient, State};
use actix_web::http::header::{self, HeaderMap};
use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};

/// Largest total of request headers relayed upstream: many servers refuse more (nginx's default
/// is 8 KiB per line and 32 KiB in all) and answer with errors the SPA cannot read.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// Every request outside the agent's base path lands here.
pub async fn handle(
    req: HttpRequest,
    body: web::Payload,
    state: State,
    client: web::Data<HttpClient>,
) -> HttpResponse {
    let Some(found) = match_route(&state.config.proxy.routes, req.uri()) else {
        return ApiError::NotFound.error_response();
    };
    if req.method() == Method::OPTIONS {
        return preflight(
            req.headers(),
            &state.config.web,
            state.jar.policy().csrf_header(),
        );
    }
    let origin = match Origin::check(req.method(), req.headers(), &state.config.web, false) {
        Ok(o) => o,
        Err(e) => return e.error_response(),
    };
    // The session of the route's provider (`[[routes]] provider`; by default, the default
    // provider's), whose cookies are read once: every question about our cookies, here and in
    // `proxy`, is answered from this view.
    let route_provider = found
        .as_ref()
        .ok()
        .and_then(|f| f.route.provider.as_deref());
    let jar = match state.jar.requested(route_provider, req.headers()) {
        Ok(jar) => jar,
        Err(e) => {
            // Configuration validation names only configured providers.
            tracing::error!(error = %e, "a route names no configured provider");
            return ApiError::Internal.error_response();
        }
    };
    let cookies = jar.read(req.headers());
    // The key-rotation re-seal (src/middleware.rs) need not scan the header again.
    crate::rotation::note_read(&req, &state.jar, jar, &cookies);
    let header_bytes = relayed_header_bytes(req.headers(), &cookies);
    let found = if header_bytes > MAX_HEADER_BYTES {
        Err(ApiError::HeadersTooLarge {
            limit: MAX_HEADER_BYTES,
        })
    } else {
        found
    };
    let mut resp = match found {
        Ok(found) => match access::method_refusal(&found.route.access, req.method()) {
            Some(refused) => refused,
            None => proxy(&req, body, &state, jar, &client.0, found, &cookies).await,
        },
        Err(e) => e.error_response(),
    };
    origin.decorate(resp.headers_mut(), &state.config.web);
    resp
}

/// The size of the request headers as relayed: our cookies never cross (a session split over
/// several cookies can be 20 KB or more), the rest of the Cookie header does. The bearer token
/// that replaces our cookies is the upstream's limit to raise (docs/deployment.md).
fn relayed_header_bytes(headers: &HeaderMap, cookies: &RequestCookies<'_>) -> usize {
    let others: usize = headers
        .iter()
        .filter(|(n, _)| *n != header::COOKIE)
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    let foreign = match cookies.foreign_len() {
        0 => 0,
        len => "cookie".len() + len + 4,
    };
    others + foreign
}

/// What the upstream leg of a proxied request needs besides the request, its body and the token:
/// the route, the request's cookies as read once (ours are never forwarded, the rest are), and
/// the rules that decide which headers cross.
pub(crate) struct Relay<'a> {
    pub found: &'a RouteMatch<'a>,
    pub cookies: &'a RequestCookies<'a>,
    pub policy: &'a CookiePolicy,
    pub server: &'a ServerConfig,
    /// Whether the client's own `Authorization` goes up (a mobile client's own bearer on an
    /// `allow_bearer` route); never alongside a token of ours.
    pub client_authorization: bool,
    /// The route's identity headers for this request ([`identity`]); the client's values under
    /// those names are always dropped.
    pub identity: Vec<(header::HeaderName, header::HeaderValue)>,
}

async fn proxy(
    req: &HttpRequest,
    body: web::Payload,
    state: &AppState,
    jar: &SessionJar,
    client: &awc::Client,
    found: RouteMatch<'_>,
    cookies: &RequestCookies<'_>,
) -> HttpResponse {
    let mut relay = Relay {
        found: &found,
        cookies,
        policy: jar.policy(),
        server: &state.config.server,
        client_authorization: false,
        identity: Vec::new(),
    };
    let has_session_cookie = cookies.has(CookieKind::AccessToken);
    let own_bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.len() > 7 && v[..7].eq_ignore_ascii_case("bearer "));

    // A mobile client with its own token: passed through unchanged, only where allowed.
    if found.route.allow_bearer && own_bearer && !has_session_cookie {
        relay.client_authorization = true;
        return forward::forward(req, body, client, &relay, None, Vec::new()).await;
    }
    let auth = found.route.access.auth;
    match access::caller(auth, req.method(), req.headers(), cookies, jar) {
        Ok(access::Caller::Anonymous) => {
            let mut resp = forward::forward(req, body, client, &relay, None, Vec::new()).await;
            access::anonymous_answer(auth, resp.headers_mut());
            return resp;
        }
        Ok(access::Caller::Session) => {}
        Err(denied) => return refusal(&state.jar, jar, req.headers(), denied),
    }
    // A session ended by a back-channel logout or `sessions revoke` (issue 16).
    if let Err(e) = crate::store::ended::check_request(state, jar, cookies).await {
        return refusal(&state.jar, jar, req.headers(), e.into());
    }
    // Before the token: a refresh below rewrites the cookies, which a refusal here would lose.
    let signer = state.assertions.as_deref();
    relay.identity = match identity::values(found.route, jar, cookies, signer) {
        Ok(values) => values,
        Err(e) => return refusal(&state.jar, jar, req.headers(), e.into()),
    };

    match session_token(
        req.method(),
        req.headers(),
        cookies,
        &TokenSource {
            jar,
            ..state.token_source()
        },
        client,
    )
    .await
    {
        Ok(usable) => {
            // A route with its own, narrowed token gets that one, never the session's.
            let usable = match narrowed::narrow(
                req.headers(),
                cookies,
                found.route,
                usable,
                jar,
                state,
                client,
            )
            .await
            {
                Ok(u) => u,
                Err(refused) => return refused,
            };
            if found.route.websocket && websocket::is_upgrade(req) {
                // Boxed, as the rare path it is (see `refresh::usable_access_token`).
                return Box::pin(websocket::bridge(
                    req,
                    body,
                    client,
                    &relay,
                    usable,
                    jar.clock(),
                ))
                .await;
            }
            let Usable {
                access_token,
                cookies: written,
                ..
            } = usable;
            let bearer: Token = access_token;
            forward::forward(req, body, client, &relay, Some(&bearer), written).await
        }
        Err(denied) => refusal(&state.jar, jar, req.headers(), denied),
    }
}

/// The access token for a cookie-authenticated request whose (original) method is `method`: the
/// CSRF check for methods that may change state, then the token, refreshed first when due.
pub async fn session_token(
    method: &Method,
    headers: &HeaderMap,
    cookies: &RequestCookies<'_>,
    source: &TokenSource<'_>,
    client: &awc::Client,
) -> Result<Usable, Denied> {
    let csrf = if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        None
    } else {
        Some(require_csrf(headers, cookies, source.jar)?)
    };
    usable_access_token(cookies, csrf, source, client).await
}

/// The response for a refused request, clearing cookies when the session is over: the session
/// `jar` holds (one provider's), or every cookie when it was the browser's last
/// ([`SessionJar::session_over`], on the application's jar `app`).
pub fn refusal(
    app: &SessionJar,
    jar: &SessionJar,
    headers: &HeaderMap,
    denied: Denied,
) -> HttpResponse {
    if denied.clear_cookies {
        let (error, cookies) = app.session_over(jar, headers, denied.error);
        error_with_cookies(error, cookies)
    } else {
        denied.error.error_response()
    }
}

#[cfg(test)]
mod tests {
    /// The size of the future a function returns, without calling it.
    fn future_size<A, B, C, D, F: std::future::Future>(_: fn(A, B, C, D) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Every proxied request's future is allocated, moved and held per open connection for the
    /// request's life: it was 6 KiB, most of it the refresh's, the narrowing's and the
    /// WebSocket bridge's state, which few requests need (now boxed where they start), and a
    /// 1 KiB table of cookie slots (now a list). Not a timing: the size is fixed at compile
    /// time (issue 17, docs/benchmarks.md).
    #[test]
    fn a_proxied_requests_future_stays_small() {
        let size = future_size(super::handle);
        assert!(size <= 2048, "the proxy's request future is {size} bytes");
    }
}
