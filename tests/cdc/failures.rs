//! Failures no retry fixes stop the pipeline loudly instead of restarting it forever: the
//! process stays up, `/healthz` answers 503 with the cause, `ficus cdc status` prints it,
//! `ficus_cdc_failed{class,cause}` is 1, and the restart counter stays flat.

use std::time::Duration;

use crate::support::{CdcTest, metric_sum, metrics_text, wait_unhealthy};

/// How long a stopped pipeline is watched for restarts: the test backoff is at most 2 s, so a
/// retry loop would restart several times in it.
const WATCH: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_of_another_plugin_stops_with_its_cause() {
    let test = CdcTest::new("CREATE TABLE t (id bigint PRIMARY KEY, note text);").await;
    sqlx::query("SELECT pg_create_logical_replication_slot($1, 'test_decoding')")
        .bind(&test.slot)
        .execute(&test.pool)
        .await
        .unwrap();
    let mut adapter = test.spawn("wrong-plugin");

    let body = wait_unhealthy(adapter.metrics, Duration::from_secs(60)).await;
    assert_eq!(body["status"], "failed", "{body}");
    assert_eq!(body["class"], "operator", "{body}");
    assert_eq!(body["cause"], "slot_plugin", "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains(&test.slot) && error.contains("test_decoding"),
        "{error}"
    );

    let before = metrics_text(adapter.metrics).await;
    tokio::time::sleep(WATCH).await;
    let after = metrics_text(adapter.metrics).await;
    assert_eq!(
        metric_sum(
            &after,
            "ficus_cdc_failed",
            &["class=\"operator\"", "cause=\"slot_plugin\""]
        ),
        1.0,
        "{after}"
    );
    assert_eq!(
        metric_sum(&before, "ficus_cdc_restarts_total", &[]),
        0.0,
        "{before}"
    );
    assert_eq!(
        metric_sum(&after, "ficus_cdc_restarts_total", &[]),
        0.0,
        "no retry loop:\n{after}"
    );
    assert!(adapter.is_running(), "{}", adapter.log_text());

    let (text, ok) = test.status_cli(adapter.metrics, false);
    assert!(ok, "{text}");
    assert!(
        text.contains("adapter: FAILED") && text.contains("cause slot_plugin"),
        "{text}"
    );
    let (json, ok) = test.status_cli(adapter.metrics, true);
    assert!(ok, "{json}");
    let status: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        status["adapter"]["health"]["cause"], "slot_plugin",
        "{json}"
    );
    assert_eq!(status["adapter"]["health"]["class"], "operator", "{json}");
    assert_eq!(status["slot_state"]["plugin"], "test_decoding", "{json}");

    // Stopped by the operator, the run reports that it failed.
    let exit = adapter.terminate();
    assert!(!exit.success(), "{exit:?}\n{}", adapter.log_text());
    assert!(
        adapter.log_text().contains("slot_plugin"),
        "{}",
        adapter.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_the_broker_never_takes_stops_naming_table_key_and_size() {
    let mut test = CdcTest::new("CREATE TABLE t (id bigint PRIMARY KEY, note text);").await;
    test.with_file("[kafka.properties]\n\"message.max.bytes\" = \"100000\"\n");
    let adapter = test.start_streaming().await;
    sqlx::query("INSERT INTO t VALUES (1, 'small')")
        .execute(&test.pool)
        .await
        .unwrap();
    test.wait_caught_up(Duration::from_secs(30)).await;
    sqlx::query("INSERT INTO t VALUES (7, repeat('x', 200000))")
        .execute(&test.pool)
        .await
        .unwrap();
    // At or past the end of the big transaction; every transaction before it ends below.
    let (after_big,): (String,) = sqlx::query_as("SELECT pg_current_wal_insert_lsn()::text")
        .fetch_one(&test.pool)
        .await
        .unwrap();

    let body = wait_unhealthy(adapter.metrics_addr, Duration::from_secs(60)).await;
    assert_eq!(body["class"], "never", "{body}");
    assert_eq!(body["cause"], "record_too_large", "{body}");
    assert_eq!(body["record"]["table"], "public.t", "{body}");
    assert_eq!(body["record"]["topic"], test.topic("t"), "{body}");
    let key = ficus_testkit::kafka::payload(
        serde_json::from_str(body["record"]["key"].as_str().unwrap()).unwrap(),
    );
    assert_eq!(key, serde_json::json!({"id": 7}), "{body}");
    let size = body["record"]["size"].as_u64().unwrap();
    assert!(size > 200_000, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("public.t") && error.contains(&format!("{size} bytes")),
        "{error}"
    );

    tokio::time::sleep(WATCH).await;
    let metrics = adapter.metrics_text().await;
    assert_eq!(
        metric_sum(
            &metrics,
            "ficus_cdc_failed",
            &["class=\"never\"", "cause=\"record_too_large\""]
        ),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        metric_sum(&metrics, "ficus_cdc_restarts_total", &[]),
        0.0,
        "no retry loop:\n{metrics}"
    );
    // The refused change is not confirmed: it is still there for whatever the operator does.
    let (confirmed_past,): (bool,) = sqlx::query_as(
        "SELECT confirmed_flush_lsn >= $2::pg_lsn FROM pg_replication_slots WHERE slot_name = $1",
    )
    .bind(&test.slot)
    .bind(&after_big)
    .fetch_one(&test.pool)
    .await
    .unwrap();
    assert!(!confirmed_past, "the slot moved past the refused record");
    assert!(adapter.is_running());
    let error = adapter.stop_result().await.unwrap_err();
    assert!(error.to_string().contains("public.t"), "{error}");
}
