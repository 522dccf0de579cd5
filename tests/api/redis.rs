//! Debian's `redis-server` for tests: on a free loopback port, nothing saved to disk, its working
//! directory in a temporary directory, stopped by PID on drop (scripts/test.sh installs it).

use crate::helpers::free_port;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers `PING`.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut server = Self {
            child: None,
            port: free_port(),
            dir,
        };
        server.start_again().await;
        server
    }

    /// `redis://127.0.0.1:<port>`, for `[store] url`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops the server (SIGKILL by PID) and waits until it has exited: a store that fails.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// Starts the server again on the same port (empty: nothing was saved).
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "redis-server is already running");
        let d = self.dir.path().display().to_string();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                &d,
                "--logfile",
                &format!("{d}/redis.log"),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start redis-server (scripts/test.sh installs Debian's redis-server)");
        self.child = Some(child);
        for _ in 0..100 {
            if self.answers().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server did not start: {}", self.log());
    }

    /// Whether the server answers `PING` with `+PONG`.
    pub async fn answers(&self) -> bool {
        let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await else {
            return false;
        };
        if stream.write_all(b"PING\r\n").await.is_err() {
            return false;
        }
        let mut buf = [0u8; 7];
        matches!(
            tokio::time::timeout(Duration::from_secs(1), stream.read_exact(&mut buf)).await,
            Ok(Ok(_))
        ) && &buf == b"+PONG\r\n"
    }

    /// The keys the server holds (`KEYS *`), to check what the store keeps.
    pub async fn keys(&self) -> Vec<String> {
        let output = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "--raw", "KEYS", "*"])
            .output()
            .await
            .expect("redis-cli");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect()
    }

    /// The value at `key` (`GET`), as text.
    pub async fn get(&self, key: &str) -> String {
        let output = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "--raw", "GET", key])
            .output()
            .await
            .expect("redis-cli");
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    /// Stops answering every client for `how_long` (`CLIENT PAUSE <ms> ALL`): a store that
    /// stalls (commands queue and are answered late) rather than one that is down.
    pub async fn pause(&self, how_long: Duration) {
        let status = Command::new("redis-cli")
            .args([
                "-p",
                &self.port.to_string(),
                "CLIENT",
                "PAUSE",
                &how_long.as_millis().to_string(),
                "ALL",
            ])
            .status()
            .await
            .expect("redis-cli");
        assert!(status.success(), "CLIENT PAUSE failed");
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}
