//! The per-request functions of a proxied call besides unsealing (benches/seal.rs): finding our
//! cookies in a browser's Cookie header, and matching the path to a route (the path check:
//! dot segments, encoded separators). Run: cargo bench --bench hot_path

// A benchmark sets up fixed, known-good input: failing loudly is what it should do.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use actix_web::http::header::{HeaderMap, HeaderValue, COOKIE};
use actix_web::http::Uri;
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use token_handler::config::Config;
use token_handler::cookies::{CookieKind, CookiePolicy};
use token_handler::crypto::CookieKey;

fn config() -> Config {
    let key = CookieKey::generate_text();
    let toml = format!(
        "[cookies]\nkeys = [\"{key}\"]\n[web]\ntrusted_origins = [\"https://www.example.com\"]\n\
         [[providers]]\nid = \"default\"\nissuer = \"https://login.example.com\"\n\
         client_id = \"c\"\nclient_secret = \"s\"\nredirect_uri = \"https://www.example.com/\"\n\
         [[routes]]\npath = \"/api\"\nupstream = \"http://127.0.0.1:8081\"\n\
         [[routes]]\npath = \"/api/reports\"\nupstream = \"http://127.0.0.1:8082\"\n\
         [[routes]]\npath = \"/files\"\nupstream = \"http://127.0.0.1:8083\"\n"
    );
    Config::from_toml(&toml, Vec::new()).expect("valid configuration")
}

/// A session's Cookie header as a browser sends it to an API route: analytics and consent
/// cookies of the site around ours (~1.6 KB sealed access token, CSRF cookie).
fn cookie_scanning(c: &mut Criterion) {
    let config = config();
    let policy = CookiePolicy::for_config(&config);
    let at = "A".repeat(1600);
    let header = format!(
        "_ga=GA1.2.1234567890.1700000000; consent=necessary%2Canalytics; theme=dark; \
         {}={at}; {}=Zm9vYmFyYmF6cXV4; _gid=GA1.2.987654321.1700000000",
        policy.name(CookieKind::AccessToken),
        policy.name(CookieKind::Csrf)
    );
    let mut headers = HeaderMap::new();
    headers.insert(COOKIE, HeaderValue::from_str(&header).expect("header"));
    c.bench_function("find our cookies in a 1.8 KB Cookie header", |b| {
        b.iter(|| {
            let cookies = policy.read(black_box(&headers));
            (
                cookies.sealed_values(CookieKind::AccessToken).len(),
                cookies.foreign_header(),
            )
        })
    });
}

fn path_check(c: &mut Criterion) {
    let config = config();
    let routes = &config.proxy.routes;
    let uri: Uri = "/api/orders/12345/items?page=2&sort=desc"
        .parse()
        .expect("uri");
    c.bench_function("match a path to its route (path check included)", |b| {
        b.iter(|| token_handler::proxy::match_route(black_box(routes), black_box(&uri)))
    });
}

criterion_group!(benches, cookie_scanning, path_check);
criterion_main!(benches);
