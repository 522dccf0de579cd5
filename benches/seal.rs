//! Seal and unseal of a 2 KB token: the work every proxied request pays for.
//! Run: cargo bench --bench seal

// A benchmark sets up fixed, known-good input: failing loudly is what it should do.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use token_handler::crypto::{CookieKey, KeyRing, Purpose, Sealer};

fn bench(c: &mut Criterion) {
    let ring = KeyRing::parse(&[CookieKey::generate_text(), CookieKey::generate_text()])
        .expect("valid keys");
    let sealer = Sealer::new(ring);
    let token = "t".repeat(2048);
    let sealed = sealer
        .seal(Purpose::AccessToken, i64::MAX, &token)
        .expect("seal");

    c.bench_function("seal 2 KB token", |b| {
        b.iter(|| sealer.seal(Purpose::AccessToken, i64::MAX, black_box(&token)))
    });
    c.bench_function("unseal 2 KB token", |b| {
        b.iter(|| sealer.unseal::<String>(Purpose::AccessToken, 0, black_box(&sealed)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
