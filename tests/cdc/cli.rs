//! The command line: bad configuration refused with the key named, `status`, a graceful stop.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support::CdcTest;

fn ficus() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ficus"));
    for (key, _) in std::env::vars() {
        if key.starts_with("FICUS_CDC") {
            command.env_remove(key);
        }
    }
    command
}

#[test]
fn bad_configuration_is_refused_naming_the_key() {
    let dir =
        std::env::temp_dir().join(format!("ficus-cdc-cli-{}", ficus_testkit::unique_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("cdc.toml");
    std::fs::write(
        &file,
        "database_url = \"postgres://u:p@127.0.0.1:1/db\"\n[kafka]\nbrokers = \"127.0.0.1:1\"\n[snapshot]\nchunk_rows = 0\n",
    )
    .unwrap();
    for subcommand in ["check", "run", "status"] {
        let output = ficus()
            .args(["cdc", subcommand, "--config"])
            .arg(&file)
            .env("FICUS_CDC__SLOT", "Not-A-Slot")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{subcommand} accepted it");
        assert!(
            stderr.contains("snapshot.chunk_rows"),
            "{subcommand}: {stderr}"
        );
        assert!(stderr.contains("slot:"), "{subcommand}: {stderr}");
    }

    std::fs::write(
        &file,
        "database_url = \"postgres://u:p@h/db\"\n[kafka]\nbrokers = \"b:1\"\nunknown_key = 1\n",
    )
    .unwrap();
    let output = ficus()
        .args(["cdc", "check", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("unknown_key"), "{stderr}");

    // The committed example is valid.
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("cdc.example.toml");
    let output = ficus()
        .args(["cdc", "check", "--config"])
        .arg(&example)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_the_slot_lag_and_snapshot_and_sigterm_stops_cleanly() {
    let test = CdcTest::new("CREATE TABLE items (id int PRIMARY KEY, label text);").await;
    sqlx::query("INSERT INTO items SELECT g, 'x' FROM generate_series(1, 100) g")
        .execute(&test.pool)
        .await
        .unwrap();
    let mut adapter = test.spawn("run");
    test.wait_snapshot_complete(Duration::from_secs(60)).await;
    test.wait_caught_up(Duration::from_secs(60)).await;

    let metrics_addr = adapter.metrics;
    let status = |json: bool| {
        let mut command = ficus();
        command.args(["cdc", "status"]);
        if json {
            command.arg("--json");
        }
        let output = command.envs(test.env(metrics_addr)).output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    let json: Value = serde_json::from_str(&status(true)).unwrap();
    assert_eq!(json["slot"], test.slot.as_str());
    assert_eq!(json["slot_state"]["active"], true);
    assert!(
        json["slot_state"]["confirmed_flush_lsn"]
            .as_str()
            .unwrap()
            .contains('/')
    );
    assert!(json["slot_state"]["lag_bytes"].as_i64().is_some());
    assert_eq!(json["snapshot"]["state"], "complete");
    assert_eq!(json["snapshot"]["tables"][0]["table"], "public.items");
    assert_eq!(json["snapshot"]["tables"][0]["rows_done"], 100);
    assert_eq!(json["publication"]["all_tables"], true);
    assert_eq!(json["adapter"]["health"]["status"], "ok", "{json}");
    let text = status(false);
    assert!(text.contains("adapter: healthy"), "{text}");
    assert!(
        text.contains(&format!("slot {} (pgoutput): active", test.slot)),
        "{text}"
    );
    assert!(text.contains("lag "), "{text}");
    assert!(text.contains("snapshot: complete"), "{text}");

    // Metrics are served by the process.
    let metrics = reqwest::get(format!("http://{}/metrics", adapter.metrics))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("ficus_cdc_events_total{table=\"public.items\",op=\"r\"} 100"),
        "{metrics}"
    );

    assert!(adapter.terminate().success(), "{}", adapter.log_text());
    let json: Value = serde_json::from_str(&status(true)).unwrap();
    assert_eq!(json["slot_state"]["active"], false);
    assert!(json["adapter"]["health"].is_null(), "{json}");
    assert!(json["adapter"]["unreachable"].is_string(), "{json}");
}
