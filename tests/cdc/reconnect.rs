//! PostgreSQL going away: the replication connection killed under the adapter, and a whole
//! private cluster (with its broker) restarted. The adapter reconnects and resumes from the slot.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ficus_adapters::CancellationToken;

use crate::support::{CdcTest, free_addr, spawn_writer, table_state};

const TABLE: &str =
    "CREATE TABLE t (id bigint PRIMARY KEY, n bigint NOT NULL, note text NOT NULL);";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replication_connection_is_reopened_and_resumed() {
    let test = CdcTest::new(TABLE).await;
    let adapter = test.start_streaming().await;
    let stop = CancellationToken::new();
    let writer = spawn_writer(
        test.url.clone(),
        "t",
        500,
        stop.clone(),
        Duration::from_millis(1),
    );
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let (terminated,): (Option<bool>,) = sqlx::query_as(
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1",
        )
        .bind(&test.slot)
        .fetch_one(&test.pool)
        .await
        .unwrap();
        assert_eq!(terminated, Some(true), "the walsender was running");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.cancel();
    writer.await.unwrap();
    test.wait_caught_up(Duration::from_secs(120)).await;
    assert!(adapter.is_running());
    test.assert_topic_matches_table(&test.topic("t"), "t").await;
    let metrics = adapter.metrics_text().await;
    assert!(
        metrics.contains("ficus_cdc_restarts_total{reason=\"postgres\""),
        "{metrics}"
    );
    adapter.stop().await;
}

/// A private PostgreSQL and broker from `scripts/services`, in a state directory of their own.
struct PrivateServices {
    dir: PathBuf,
    env: Vec<(String, String)>,
}

impl PrivateServices {
    fn start() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "ficus-cdc-services-{}",
            ficus_testkit::unique_suffix()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let env = vec![
            ("FICUS_STATE_DIR".to_owned(), dir.display().to_string()),
            ("FICUS_PG_PORT".to_owned(), free_addr().port().to_string()),
            (
                "FICUS_KAFKA_PORT".to_owned(),
                free_addr().port().to_string(),
            ),
        ];
        let services = Self { dir, env };
        services.run("start");
        services
    }

    fn run(&self, command: &str) -> String {
        let output = Command::new(script())
            .arg(command)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .expect("running scripts/services");
        assert!(
            output.status.success(),
            "scripts/services {command}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// `pg_ctl restart` of the private cluster (as the postgres user when root, as the
    /// script runs it).
    fn restart_postgres(&self) {
        let data = [
            self.dir.join("pg/data"),
            pg_fallback_dir(&self.dir).join("data"),
        ]
        .into_iter()
        .find(|d| d.join("PG_VERSION").exists())
        .expect("the private cluster's data directory");
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("bin/pg_ctl"))
            .filter(|p| p.exists())
            .max()
            .expect("pg_ctl");
        let root = Command::new("id").arg("-u").output().unwrap().stdout == b"0\n";
        let mut command = if root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&bin);
            c
        } else {
            Command::new(&bin)
        };
        let output = command
            .arg("-D")
            .arg(&data)
            .args(["-m", "fast", "-w", "-t", "60", "restart"])
            .arg("-l")
            .arg(data.parent().unwrap().join("postgres.log"))
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "pg_ctl restart: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn var(&self, name: &str) -> String {
        let env = self.run("env");
        let line = env.lines().find(|l| l.contains(name)).unwrap();
        line.split_once('=')
            .unwrap()
            .1
            .trim_matches('\'')
            .to_owned()
    }
}

impl Drop for PrivateServices {
    fn drop(&mut self) {
        let _ = Command::new(script())
            .arg("stop")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_dir_all(pg_fallback_dir(&self.dir));
    }
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/services")
}

/// Where the script puts the cluster when the postgres user cannot enter `dir`.
fn pg_fallback_dir(dir: &Path) -> PathBuf {
    let output = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "printf '%s' '{}' | cksum | cut -d' ' -f1",
            dir.display()
        ))
        .output()
        .unwrap();
    PathBuf::from(format!(
        "/var/tmp/ficus-pg-{}",
        String::from_utf8_lossy(&output.stdout).trim()
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_means_reconnect_and_resume() {
    let services = tokio::task::spawn_blocking(PrivateServices::start)
        .await
        .unwrap();
    let server = services.var("FICUS_TEST_DATABASE_URL");
    let brokers = services.var("FICUS_TEST_KAFKA_BROKERS");
    let test = CdcTest::on_server(&server, &brokers, TABLE).await;
    let adapter = test.start_streaming().await;
    sqlx::query("INSERT INTO t SELECT g, g, 'before' FROM generate_series(1, 500) g")
        .execute(&test.pool)
        .await
        .unwrap();
    test.wait_caught_up(Duration::from_secs(60)).await;

    // PostgreSQL goes down (a fast shutdown: the walsender waits for the adapter to confirm
    // what it sent) and comes back.
    let services = tokio::task::spawn_blocking(move || {
        services.restart_postgres();
        services
    })
    .await
    .unwrap();
    assert!(
        adapter.is_running(),
        "the adapter waits for PostgreSQL to come back"
    );
    // The pool reconnects on its own; write after the restart.
    let mut attempts = 0;
    loop {
        match sqlx::query("UPDATE t SET n = n + 1000, note = 'after' WHERE id <= 250")
            .execute(&test.pool)
            .await
        {
            Ok(_) => break,
            Err(error) => {
                attempts += 1;
                assert!(attempts < 50, "{error}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    sqlx::query("DELETE FROM t WHERE id > 450")
        .execute(&test.pool)
        .await
        .unwrap();
    test.wait_caught_up(Duration::from_secs(120)).await;
    let messages = test.assert_topic_matches_table(&test.topic("t"), "t").await;
    assert_eq!(table_state(&test.pool, "t").await.len(), 450);
    assert!(!messages.is_empty());
    adapter.stop().await;
    drop(test);
    drop(services);
}
