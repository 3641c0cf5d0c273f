//! A Tansu broker of a test's own (stopping it disturbs no other test), for outage tests: the
//! view kit's and the services' (`tests/extracted/outage.rs`). Its data lives in a directory
//! that survives restarts, so a stop and a start are an outage, not a new broker.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::unique_suffix;

/// A Tansu broker of the test's own (so stopping it disturbs no other test), its data in a
/// directory that survives restarts.
pub struct PrivateBroker {
    dir: PathBuf,
    port: u16,
    child: Option<std::process::Child>,
}

impl Default for PrivateBroker {
    fn default() -> Self {
        Self::new()
    }
}

impl PrivateBroker {
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("ficus-tansu-{}", unique_suffix()));
        std::fs::create_dir_all(&dir).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Self {
            dir,
            port,
            child: None,
        }
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn start(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("tansu.log"))
            .unwrap();
        let child = std::process::Command::new(which_tansu())
            .current_dir(&self.dir)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                "sqlite://tansu.db",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting tansu");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "tansu did not listen on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops it (SIGKILL: the broker vanishes as in an outage).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn which_tansu() -> PathBuf {
    if let Ok(output) = std::process::Command::new("sh")
        .args(["-c", "command -v tansu"])
        .output()
        && output.status.success()
    {
        return PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    }
    let home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cargo"));
    home.join("bin/tansu")
}
