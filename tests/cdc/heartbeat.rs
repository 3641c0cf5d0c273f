//! Heartbeats and slot lag: a database whose captured tables are idle while other tables are
//! written does not pile up WAL behind the slot.

use std::time::Duration;

use crate::support::{CdcTest, metric_sum};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_to_uncaptured_tables_do_not_pin_wal() {
    let mut test = CdcTest::new(
        "CREATE TABLE captured (id int PRIMARY KEY);
         CREATE TABLE noise (id int PRIMARY KEY, payload text);",
    )
    .await;
    test.set("TABLES", "public.captured");
    test.set("HEARTBEAT__INTERVAL_MS", 300);
    let adapter = test.start_streaming().await;
    for round in 0..5 {
        sqlx::query(
            "INSERT INTO noise SELECT g, repeat('x', 500) FROM generate_series($1, $1 + 999) g",
        )
        .bind(round * 1000)
        .execute(&test.pool)
        .await
        .unwrap();
    }
    // Nothing captured changed, yet the slot follows the server's position.
    test.wait_caught_up(Duration::from_secs(30)).await;

    let (tables,): (Vec<String>,) = sqlx::query_as(
        "SELECT array_agg(schemaname || '.' || tablename ORDER BY schemaname, tablename) FROM pg_publication_tables WHERE pubname = $1",
    )
    .bind(&test.slot)
    .fetch_one(&test.pool)
    .await
    .unwrap();
    assert_eq!(tables, vec!["_ficus.heartbeat", "public.captured"]);
    let (beats,): (i64,) =
        sqlx::query_as("SELECT beats FROM _ficus.heartbeat WHERE slot_name = $1")
            .bind(&test.slot)
            .fetch_one(&test.pool)
            .await
            .unwrap();
    assert!(beats >= 2, "{beats} heartbeats");
    let heartbeat_topic = format!("__debezium-heartbeat.{}", test.prefix);
    let messages = test
        .wait_messages(&heartbeat_topic, Duration::from_secs(30), |m| m.len() >= 2)
        .await;
    assert_eq!(
        messages[0].key_json(),
        serde_json::json!({"serverName": test.prefix})
    );
    assert!(messages[0].json()["ts_ms"].as_i64().unwrap() > 1_700_000_000_000);
    assert!(test.messages(&test.topic("noise")).await.is_empty());

    // The heartbeat counter moves as heartbeats are written (not merely registered).
    let before = metric_sum(
        &adapter.metrics_text().await,
        "ficus_cdc_heartbeats_total",
        &[],
    );
    let (beats_before,): (i64,) =
        sqlx::query_as("SELECT beats FROM _ficus.heartbeat WHERE slot_name = $1")
            .bind(&test.slot)
            .fetch_one(&test.pool)
            .await
            .unwrap();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let metrics = adapter.metrics_text().await;
    let after = metric_sum(&metrics, "ficus_cdc_heartbeats_total", &[]);
    let (beats_after,): (i64,) =
        sqlx::query_as("SELECT beats FROM _ficus.heartbeat WHERE slot_name = $1")
            .bind(&test.slot)
            .fetch_one(&test.pool)
            .await
            .unwrap();
    assert!(
        before >= 2.0,
        "{before} heartbeats counted, {beats} written"
    );
    assert!(
        after > before && beats_after > beats_before,
        "heartbeats counted {before} -> {after} while written {beats_before} -> {beats_after}"
    );
    for name in [
        "ficus_cdc_slot_lag_bytes",
        "ficus_cdc_lag_seconds",
        "ficus_cdc_heartbeats_total",
        "ficus_cdc_confirmed_lsn_bytes",
        "ficus_cdc_commit_to_ack_seconds_bucket",
    ] {
        assert!(metrics.contains(name), "{name} missing:\n{metrics}");
    }
    adapter.stop().await;
}
