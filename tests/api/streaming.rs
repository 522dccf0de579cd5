//! Large bodies stream through the proxy both ways in constant memory (measured on the real
//! binary in its own process).

use crate::helpers::*;
use crate::upstream::{Upstream, API_AUDIENCE};
use actix_web::body::SizedStream;
use futures_util::StreamExt;
use serde_json::json;
use std::time::Duration;

const TOTAL: usize = 200 * 1024 * 1024;
/// The handler's whole peak RSS must stay under this while 200 MB go each way.
const RSS_BOUND_KIB: u64 = 64 * 1024;

#[actix_web::test]
async fn two_hundred_megabytes_each_way_in_bounded_memory() {
    let op = TestProvider::start_with(json!({"jwtAccessTokens": {"audience": API_AUDIENCE}})).await;
    let upstream = Upstream::start(&op.issuer).await;
    let app = ProcessApp::start(&TestConfig::new(&op.issuer).proxy_to(&upstream.address)).await;
    let mut browser = Browser::new(&app.address);
    assert_eq!(browser.login("bulk").await.status, 200);
    let cookies = browser.jar.header_for("/api/stream/upload");
    let csrf = browser.csrf.clone().expect("csrf");
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(120))
        .finish();
    let baseline = app.peak_rss_kib();

    // Upload: 200 MB generated on the fly, never held whole by anyone.
    let chunk = web_bytes(vec![b'u'; 64 * 1024]);
    let chunks = TOTAL / chunk.len();
    let body =
        futures_util::stream::iter(0..chunks).map(move |_| Ok::<_, std::io::Error>(chunk.clone()));
    let mut resp = client
        .post(format!("{}/api/stream/upload", app.address))
        .insert_header(("cookie", cookies.clone()))
        .insert_header(("x-th-csrf", csrf.as_str()))
        .insert_header(("origin", SPA_ORIGIN))
        .send_body(SizedStream::new(TOTAL as u64, body))
        .await
        .expect("upload");
    assert_eq!(resp.status().as_u16(), 200);
    let answer: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(answer["received"], TOTAL);

    // Download: 200 MB, counted as it arrives.
    let mut resp = client
        .get(format!("{}/api/stream/download?bytes={TOTAL}", app.address))
        .insert_header(("cookie", cookies))
        .send()
        .await
        .expect("download");
    assert_eq!(resp.status().as_u16(), 200);
    let mut received = 0usize;
    while let Some(chunk) = resp.next().await {
        received += chunk.expect("chunk").len();
    }
    assert_eq!(received, TOTAL);

    let peak = app.peak_rss_kib();
    eprintln!("token-handler peak RSS: {baseline} KiB before, {peak} KiB after 2 x 200 MB");
    assert!(peak < RSS_BOUND_KIB, "peak RSS {peak} KiB");
}

fn web_bytes(v: Vec<u8>) -> actix_web::web::Bytes {
    actix_web::web::Bytes::from(v)
}
