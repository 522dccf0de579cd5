//! Seal and unseal of a 2 KB token: the work every proxied request pays for; and opening a
//! 16 KB token's session cookie, split into chunks, from a request's Cookie header.
//! Access-token values a process opened lately are kept (`src/crypto/opened.rs`), so each
//! open is measured twice: the first time (a new `Sealer`, made outside the timing, for every
//! iteration) and again (the same `Sealer`: what a session's next call costs).
//! Run: cargo bench --bench seal

// A benchmark sets up fixed, known-good input: failing loudly is what it should do.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use actix_web::http::header::{HeaderMap, HeaderValue, COOKIE};
use base64::Engine;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use rand::RngCore;
use std::hint::black_box;
use token_handler::config::Config;
use token_handler::cookies::{CookieKind, CookiePolicy};
use token_handler::crypto::{CookieKey, KeyRing, Purpose, Sealer};

fn bench(c: &mut Criterion) {
    let ring = KeyRing::parse(&[CookieKey::generate_text(), CookieKey::generate_text()])
        .expect("valid keys");
    let sealer = Sealer::new(ring.clone());
    let token = "t".repeat(2048);
    let sealed = sealer
        .seal(Purpose::AccessToken, i64::MAX, &token)
        .expect("seal");

    c.bench_function("seal 2 KB token", |b| {
        b.iter(|| sealer.seal(Purpose::AccessToken, i64::MAX, black_box(&token)))
    });
    c.bench_function("unseal 2 KB token", |b| {
        b.iter_batched_ref(
            || Sealer::new(ring.clone()),
            |fresh| fresh.unseal::<String>(Purpose::AccessToken, 0, black_box(&sealed)),
            BatchSize::SmallInput,
        )
    });
    c.bench_function("unseal 2 KB token, opened again", |b| {
        b.iter(|| sealer.unseal::<String>(Purpose::AccessToken, 0, black_box(&sealed)))
    });
}

/// A 16 KB access token (random base64url: it compresses as little as a real one) sealed into
/// its chunked cookies, then opened from the Cookie header a browser sends: reading the header,
/// reassembling the chunks, decoding, decrypting and parsing (an access token is not compressed
/// below 20 KiB since issue 17, so nothing is inflated; the ID and refresh tokens still are).
fn chunked(c: &mut Criterion) {
    let key = CookieKey::generate_text();
    let toml = format!(
        "[cookies]\nkeys = [\"{key}\"]\n[web]\ntrusted_origins = [\"https://www.example.com\"]\n\
         [[providers]]\nid = \"default\"\nissuer = \"https://login.example.com\"\n\
         client_id = \"c\"\nclient_secret = \"s\"\nredirect_uri = \"https://www.example.com/\"\n"
    );
    let config = Config::from_toml(&toml, Vec::new()).expect("valid configuration");
    let policy = CookiePolicy::for_config(&config);
    let ring = config.cookies.keys.clone();
    let sealer = Sealer::new(ring.clone());
    let mut bytes = vec![0u8; 12 * 1024];
    rand::rng().fill_bytes(&mut bytes);
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    assert_eq!(token.len(), 16 * 1024);
    let cookies = policy
        .seal(&sealer, CookieKind::AccessToken, i64::MAX, &token)
        .expect("seal");
    assert!(cookies.len() >= 4, "{} chunks", cookies.len());
    let header = cookies
        .iter()
        .map(|c| format!("{}={}", c.name(), c.value()))
        .collect::<Vec<_>>()
        .join("; ");
    let mut headers = HeaderMap::new();
    headers.insert(COOKIE, HeaderValue::from_str(&header).expect("header"));
    let open = |sealer: &Sealer, headers: &HeaderMap| -> Option<String> {
        policy
            .read(headers)
            .sealed_values(CookieKind::AccessToken)
            .iter()
            .find_map(|v| sealer.unseal(Purpose::AccessToken, 0, v).ok())
    };
    assert_eq!(open(&sealer, &headers).as_deref(), Some(token.as_str()));
    c.bench_function("open 16 KB token in chunked cookies", |b| {
        b.iter_batched_ref(
            || Sealer::new(ring.clone()),
            |fresh| open(fresh, black_box(&headers)),
            BatchSize::SmallInput,
        )
    });
    c.bench_function("open 16 KB token in chunked cookies, opened again", |b| {
        b.iter(|| open(&sealer, black_box(&headers)))
    });
    c.bench_function("seal 16 KB token into chunked cookies", |b| {
        b.iter(|| {
            policy.seal(
                &sealer,
                CookieKind::AccessToken,
                i64::MAX,
                black_box(&token),
            )
        })
    });
}

criterion_group!(benches, bench, chunked);
criterion_main!(benches);
