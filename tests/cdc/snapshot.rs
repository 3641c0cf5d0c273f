//! The initial snapshot: consistent with the stream while writes continue, resumable after a
//! crash from its last finished chunk, and a row it reads gives the same JSON as the same row
//! streamed.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ficus_adapters::CancellationToken;

use crate::support::{CdcTest, spawn_writer};

const TABLE: &str =
    "CREATE TABLE t (id bigint PRIMARY KEY, n bigint NOT NULL, note text NOT NULL);";

async fn populate(test: &CdcTest, rows: i64) {
    sqlx::query("INSERT INTO t SELECT g, g, 'initial ' || g FROM generate_series(1, $1) g")
        .bind(rows)
        .execute(&test.pool)
        .await
        .unwrap();
    sqlx::query("ANALYZE t").execute(&test.pool).await.unwrap();
}

/// `r` events per key.
fn reads_per_key(messages: &[crate::support::Msg]) -> HashMap<i64, usize> {
    let mut reads = HashMap::new();
    for m in messages {
        if m.value.is_some() && m.json()["op"] == "r" {
            *reads
                .entry(m.key_json()["id"].as_i64().unwrap())
                .or_insert(0) += 1;
        }
    }
    reads
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_taken_while_writes_continue_matches_the_table() {
    let mut test = CdcTest::new(TABLE).await;
    populate(&test, 20_000).await;
    test.set("SNAPSHOT__CHUNK_ROWS", 700);
    let stop = CancellationToken::new();
    let writer = spawn_writer(
        test.url.clone(),
        "t",
        25_000,
        stop.clone(),
        Duration::from_millis(1),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let adapter = test.start().await;
    test.wait_snapshot_complete(Duration::from_secs(120)).await;
    // Writes go on after the hand-over from snapshot to stream.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.cancel();
    let transactions = writer.await.unwrap();
    assert!(
        transactions > 100,
        "the writer kept writing ({transactions})"
    );
    test.wait_caught_up(Duration::from_secs(120)).await;

    let messages = test.assert_topic_matches_table(&test.topic("t"), "t").await;
    let reads = reads_per_key(&messages);
    let progress: Vec<(i32, i64, bool)> = sqlx::query_as(
        "SELECT segment, rows_done, done FROM _ficus.snapshot_progress WHERE slot_name = $1",
    )
    .bind(&test.slot)
    .fetch_all(&test.pool)
    .await
    .unwrap();
    assert!(
        reads.len() >= 15_000,
        "{} rows read by the snapshot, {} messages, progress {progress:?}",
        reads.len(),
        messages.len()
    );
    let twice: Vec<_> = reads.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "rows read twice: {twice:?}");
    // Debezium's markers: the first read `first`, the last `last` (one table), `true` between.
    let snapshot_events: Vec<serde_json::Value> = messages
        .iter()
        .filter(|m| m.value.is_some() && m.json()["op"] == "r")
        .map(|m| m.json())
        .collect();
    let markers: Vec<&str> = snapshot_events
        .iter()
        .map(|e| e["source"]["snapshot"].as_str().unwrap())
        .collect();
    assert_eq!(markers.first(), Some(&"first"));
    assert_eq!(markers.last(), Some(&"last"));
    assert!(markers[1..markers.len() - 1].iter().all(|m| *m == "true"));
    assert_eq!(snapshot_events[0]["before"], serde_json::Value::Null);

    let (segments, done): (i64, bool) = sqlx::query_as(
        "SELECT count(*), bool_and(done) FROM _ficus.snapshot_progress WHERE slot_name = $1",
    )
    .bind(&test.slot)
    .fetch_one(&test.pool)
    .await
    .unwrap();
    assert_eq!((segments, done), (1, true));
    let metrics = adapter.metrics_text().await;
    assert!(
        metrics.contains("ficus_cdc_snapshot_progress_ratio{table=\"public.t\"} 1.0"),
        "{metrics}"
    );
    adapter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_snapshot_resumes_after_its_last_finished_chunk() {
    const CHUNK: i64 = 1_000;
    let mut test = CdcTest::new(TABLE).await;
    populate(&test, 40_000).await;
    test.set("SNAPSHOT__CHUNK_ROWS", CHUNK);
    let stop = CancellationToken::new();
    let writer = spawn_writer(
        test.url.clone(),
        "t",
        45_000,
        stop.clone(),
        Duration::from_millis(2),
    );

    let mut first = test.spawn("first");
    // Kill it (SIGKILL) in the middle of the table.
    let deadline = Instant::now() + Duration::from_secs(120);
    let done_at_kill = loop {
        let done: Option<(i64,)> = sqlx::query_as(
            "SELECT rows_done FROM _ficus.snapshot_progress WHERE slot_name = $1 AND segment = 1",
        )
        .bind(&test.slot)
        .fetch_optional(&test.pool)
        .await
        .unwrap_or(None);
        if let Some((done,)) = done
            && done >= 5 * CHUNK
        {
            first.kill();
            break done;
        }
        assert!(
            Instant::now() < deadline && first.is_running(),
            "the snapshot did not progress:\n{}",
            first.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (completed,): (bool,) = sqlx::query_as(
        "SELECT completed_at IS NOT NULL FROM _ficus.snapshots WHERE slot_name = $1",
    )
    .bind(&test.slot)
    .fetch_one(&test.pool)
    .await
    .unwrap();
    assert!(!completed, "killed before the end of the snapshot");

    let mut second = test.spawn("second");
    test.wait_snapshot_complete(Duration::from_secs(180)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.cancel();
    writer.await.unwrap();
    test.wait_caught_up(Duration::from_secs(120)).await;
    assert!(second.is_running());

    let segments: Vec<(i32, Option<Vec<String>>, bool)> = sqlx::query_as(
        "SELECT segment, last_key, done FROM _ficus.snapshot_progress WHERE slot_name = $1 ORDER BY segment",
    )
    .bind(&test.slot)
    .fetch_all(&test.pool)
    .await
    .unwrap();
    assert_eq!(segments.len(), 2, "{segments:?}");
    assert!(segments[1].2, "the second segment finished the table");
    let resumed_after: i64 = segments[0].1.as_ref().unwrap()[0].parse().unwrap();
    assert!(
        resumed_after >= done_at_kill,
        "{resumed_after} < {done_at_kill}"
    );

    let messages = test.assert_topic_matches_table(&test.topic("t"), "t").await;
    let reads = reads_per_key(&messages);
    let twice = reads.values().filter(|n| **n > 1).count() as i64;
    // Only the chunk in flight at the kill is read again, not the chunks already finished.
    assert!(
        twice <= CHUNK,
        "{twice} rows were read twice: the snapshot restarted instead of resuming"
    );
    assert!(reads.len() >= 35_000, "{} rows read", reads.len());
    assert!(second.terminate().success(), "{}", second.log_text());
}

/// A row read by the snapshot and the same row streamed give the same JSON, in both forms
/// (schemaless and schema-wrapped), over every type of Debezium's mapping table
/// ([`crate::conformance::full_row`]) and the edge values (NaN, infinite timestamps, a BC date;
/// infinite dates differ, as in Debezium, see the README). The snapshot reads values as the
/// stream sends them (`char(n)` keeps its padding, an `inet` host gets no netmask).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_gives_the_same_json_from_the_snapshot_and_the_stream() {
    use crate::conformance::{SCHEMA, edge_row, full_row};
    for schemas in [false, true] {
        let mut test = CdcTest::new(SCHEMA).await;
        for side in ["KEY", "VALUE"] {
            test.set(
                &format!("CONNECT__{side}_CONVERTER_SCHEMAS_ENABLE"),
                schemas,
            );
        }
        for statement in [full_row(1), edge_row(2, "0044-03-15 BC")] {
            sqlx::raw_sql(&statement).execute(&test.pool).await.unwrap();
        }
        let adapter = test.start().await;
        test.wait_snapshot_complete(Duration::from_secs(120)).await;
        for statement in [full_row(3), edge_row(4, "0044-03-15 BC")] {
            sqlx::raw_sql(&statement).execute(&test.pool).await.unwrap();
        }
        let messages = test
            .wait_messages(&test.topic("types"), Duration::from_secs(120), |m| {
                m.len() >= 4
            })
            .await;
        adapter.stop().await;
        // The row as the event's `after` carries it, its id left out, and the value's schema
        // (when wrapped).
        let after = |id: i64| {
            let m = messages
                .iter()
                .find(|m| m.key_json()["id"] == id)
                .unwrap_or_else(|| panic!("no event of row {id}"));
            assert_eq!(m.op(), if id <= 2 { "r" } else { "c" }, "row {id}");
            let mut row = m.json()["after"].take();
            row.as_object_mut().expect("a row").remove("id");
            let value: serde_json::Value =
                serde_json::from_slice(m.value.as_deref().expect("a value")).unwrap();
            assert_eq!(value.get("schema").is_some(), schemas, "row {id}");
            (row, value.get("schema").cloned())
        };
        assert_eq!(after(1), after(3), "schemas {schemas}: a full row");
        assert_eq!(after(2), after(4), "schemas {schemas}: edge values");
    }
}
