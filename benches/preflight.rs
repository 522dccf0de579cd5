//! Parsing a preflight's `Access-Control-Request-Headers`: a typical SPA list, the largest list
//! accepted, and the review's 112 KB list of distinct names, which must be refused at once.
//! Run: cargo bench --bench preflight

// A benchmark sets up fixed, known-good input: failing loudly is what it should do.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use actix_web::http::header::{HeaderMap, HeaderValue, ACCESS_CONTROL_REQUEST_HEADERS};
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use token_handler::origin::{requested_headers, MAX_REQUESTED_HEADERS};

fn with(value: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        ACCESS_CONTROL_REQUEST_HEADERS,
        HeaderValue::from_str(value).expect("valid header value"),
    );
    h
}

fn bench(c: &mut Criterion) {
    let typical = with("content-type, x-th-csrf, x-request-id");
    let largest = with(
        &(0..MAX_REQUESTED_HEADERS)
            .map(|i| format!("x-header-{i}"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    let hostile = with(
        &(0..13_000)
            .map(|i| format!("x-h{i}"))
            .collect::<Vec<_>>()
            .join(","),
    );
    assert!(requested_headers(&hostile).is_err());
    c.bench_function("preflight: 3 names", |b| {
        b.iter(|| requested_headers(black_box(&typical)))
    });
    c.bench_function("preflight: 64 names (the cap)", |b| {
        b.iter(|| requested_headers(black_box(&largest)))
    });
    c.bench_function("preflight: 112 KB of names (refused)", |b| {
        b.iter(|| requested_headers(black_box(&hostile)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
