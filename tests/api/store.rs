//! The shared store (`[store]`, issue 16) against Debian's redis-server: `check` reports it.

use crate::helpers::*;
use crate::redis::RedisServer;

/// `token-handler check` with `config`: (success, stdout).
async fn check(config: &TestConfig) -> (bool, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config.toml()).expect("write");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_token-handler"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .await
        .expect("run");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
    )
}

#[actix_web::test]
async fn check_reports_whether_the_store_answers() {
    let op = TestProvider::start().await;
    let mut redis = RedisServer::start().await;
    let config = TestConfig::new(&op.issuer).store(&redis.url());
    let (ok, stdout) = check(&config).await;
    assert!(ok, "{stdout}");
    assert!(
        stdout.contains(&format!(
            "store:       redis://127.0.0.1:{} answers (PING)",
            redis.port
        )),
        "{stdout}"
    );
    assert!(redis.keys().await.is_empty(), "check writes nothing");
    redis.stop().await;
    let (ok, stdout) = check(&config).await;
    assert!(!ok, "{stdout}");
    assert!(stdout.contains("the store does not answer"), "{stdout}");
    assert!(stdout.contains("check failed"), "{stdout}");
    let (ok, stdout) = check(&TestConfig::new(&op.issuer)).await;
    assert!(ok && stdout.contains("store:       off"), "{stdout}");
}
