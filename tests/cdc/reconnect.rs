//! PostgreSQL going away: the replication connection killed under the adapter, and a whole
//! private cluster (with its broker) restarted. The adapter reconnects and resumes from the slot.

use std::time::Duration;

use ficus_adapters::CancellationToken;

use crate::support::{CdcTest, PrivateServices, spawn_writer, table_state};

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
        // The adapter reconnects with backoff (longer on a loaded machine): kill its walsender
        // once it streams again.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let (terminated,): (Option<bool>,) = sqlx::query_as(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1",
            )
            .bind(&test.slot)
            .fetch_one(&test.pool)
            .await
            .unwrap();
            if terminated == Some(true) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the adapter did not stream again within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
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
