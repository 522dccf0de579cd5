//! The binary's commands: keygen, check, and refusing bad configuration.

use crate::helpers::*;
use std::process::Command;
use token_handler::crypto::CookieKey;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_token-handler"))
}

#[test]
fn keygen_prints_a_usable_key() {
    let out = bin().arg("keygen").output().expect("run");
    assert!(out.status.success());
    let key = String::from_utf8(out.stdout).expect("utf8");
    assert_eq!(key.trim().len(), 43);
    assert!(CookieKey::parse(key.trim()).is_ok());
}

#[actix_web::test]
async fn check_validates_discovery_and_keys_of_a_real_provider() {
    let op = TestProvider::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.toml");
    std::fs::write(&path, TestConfig::new(&op.issuer).toml()).expect("write");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_token-handler"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .await
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("token_endpoint           {}/token", op.issuer)),
        "{stdout}"
    );
    assert!(
        stdout.contains("  __Secure-th-auth  Path=/oauth-agent/refresh, Path=/oauth-agent/logout"),
        "{stdout}"
    );
    assert!(stdout.contains("1 key(s)"), "{stdout}");
    assert!(
        !stdout.contains("spa-secret"),
        "the client secret was printed"
    );
    assert!(stdout.contains("check passed"));
}

#[actix_web::test]
async fn check_warns_when_require_iss_meets_a_provider_without_rfc_9207() {
    let op = TestProvider::start_with(serde_json::json!({"omitIss": true})).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.toml");
    let config = TestConfig::new(&op.issuer).provider(|p| p.require_iss());
    std::fs::write(&path, config.toml()).expect("write");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_token-handler"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .await
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("warning: providers[0].require_iss is true"),
        "{stdout}"
    );
    assert!(out.status.success(), "a warning only: {stdout}");
}

#[test]
fn check_fails_naming_the_key_and_the_fix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.toml");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let issuer = format!("http://127.0.0.1:{port}");

    // Unreachable provider: exit 1, naming the provider's issuer.
    std::fs::write(&path, TestConfig::new(&issuer).toml()).expect("write");
    let out = bin()
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("providers[0].issuer"), "{stdout}");

    // A short key: exit 2, naming cookies.keys, not showing the key.
    std::fs::write(&path, TestConfig::new(&issuer).key("c2hvcnQta2V5").toml()).expect("write");
    for args in [vec!["check", "--config"], vec!["--config"]] {
        let out = bin().args(&args).arg(&path).output().expect("run");
        assert_eq!(out.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("cookies.keys"), "{stderr}");
        assert!(stderr.contains("keygen"), "{stderr}");
        assert!(!stderr.contains("c2hvcnQta2V5"), "{stderr}");
    }

    // The config path may come from the environment.
    let out = bin()
        .arg("check")
        .env("TOKEN_HANDLER_CONFIG", &path)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn check_explain_names_each_source_and_prints_no_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.toml");
    let key = CookieKey::generate_text();
    // The client secret sits in the file; the cookie key comes from the environment.
    std::fs::write(
        &path,
        TestConfig::new("http://127.0.0.1:9").key(&key).toml(),
    )
    .expect("write");
    let env_key = CookieKey::generate_text();
    let out = bin()
        .args(["check", "--explain", "--config"])
        .arg(&path)
        .env("TOKEN_HANDLER__COOKIES__KEYS", &env_key)
        .env("TOKEN_HANDLER__COOKIES__IDLE_TIMEOUT", "2h")
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = |key: &str| {
        stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(key))
            .unwrap_or_else(|| panic!("no line for {key}:\n{stdout}"))
    };
    let file = format!("# file {}", path.display());
    assert!(
        line("providers[0].client_secret").ends_with(&format!("= <redacted>  {file}")),
        "{stdout}"
    );
    assert!(
        line("providers[0].client_id").ends_with(&format!("= \"spa-client\"  {file}")),
        "{stdout}"
    );
    assert!(
        line("cookies.keys").ends_with(
            "= <redacted>  # environment TOKEN_HANDLER__COOKIES__KEYS (overrides the file)"
        ),
        "{stdout}"
    );
    assert!(
        line("cookies.idle_timeout")
            .ends_with("= \"2h\"  # environment TOKEN_HANDLER__COOKIES__IDLE_TIMEOUT"),
        "{stdout}"
    );
    assert!(
        line("cookies.absolute_lifetime").ends_with("= \"24h\"  # default"),
        "{stdout}"
    );
    for secret in ["spa-secret", key.as_str(), env_key.as_str()] {
        assert!(!stdout.contains(secret), "a secret was printed:\n{stdout}");
    }
}
