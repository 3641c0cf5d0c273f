//! Nothing is lost across crashes: thousands of writes while `ficus cdc run` is killed with
//! SIGKILL several times and restarted; and the process stopped at the fail points of the two
//! crash windows (acknowledged but not confirmed; a snapshot chunk sent but not recorded).
//! Duplicates are allowed (at-least-once) and counted, loss is not.

use std::time::Duration;

use ficus_adapters::CancellationToken;
use rand::Rng;

use crate::support::{CdcTest, spawn_counted_writer, spawn_writer, table_state};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_thousands_of_writes_loses_nothing() {
    let mut test = CdcTest::new(
        "CREATE TABLE t (id bigint PRIMARY KEY, n bigint NOT NULL, note text NOT NULL);",
    )
    .await;
    test.set("SNAPSHOT__MODE", "never");
    let mut adapter = test.spawn("run-0");
    test.wait_caught_up(Duration::from_secs(60)).await;

    let stop = CancellationToken::new();
    let committed = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let writer = spawn_counted_writer(
        test.url.clone(),
        "t",
        400,
        stop.clone(),
        Duration::ZERO,
        committed.clone(),
    );
    let mut kills = 0;
    for run in 1..=4 {
        let pause = rand::thread_rng().gen_range(1_500..4_000);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        assert!(
            adapter.is_running(),
            "run {} died:\n{}",
            run - 1,
            adapter.log_text()
        );
        adapter.kill();
        kills += 1;
        eprintln!(
            "killed run {} at {}",
            run - 1,
            ficus_adapters::decode::now_ms()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        adapter = test.spawn(&format!("run-{run}"));
    }
    // Thousands of transactions, however busy the machine: the last run catches up on what
    // the writer did after the kills.
    let deadline = std::time::Instant::now() + Duration::from_secs(240);
    tokio::time::sleep(Duration::from_secs(2)).await;
    while committed.load(std::sync::atomic::Ordering::Relaxed) < 2_000 {
        assert!(
            std::time::Instant::now() < deadline,
            "the writer made only {} transactions in time",
            committed.load(std::sync::atomic::Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.cancel();
    let transactions = writer.await.unwrap();
    eprintln!("writer stopped at {}", ficus_adapters::decode::now_ms());
    assert!(
        transactions >= 2_000,
        "thousands of writes expected, the writer made {transactions} transactions"
    );
    test.wait_caught_up(Duration::from_secs(120)).await;
    assert!(adapter.is_running(), "{}", adapter.log_text());

    let messages = test.assert_topic_matches_table(&test.topic("t"), "t").await;
    let table = table_state(&test.pool, "t").await;
    eprintln!(
        "{transactions} transactions, {kills} kills, {} events, {} rows at the end",
        messages.len(),
        table.len()
    );
    assert!(adapter.terminate().success(), "{}", adapter.log_text());
}

/// `(key, source.lsn, op)` of every event, and how many appear more than once (sent again
/// after a restart: allowed, counted).
fn duplicates(messages: &[crate::support::Msg]) -> usize {
    let mut seen = std::collections::HashSet::new();
    let mut duplicates = 0;
    for m in messages {
        let value = m.json();
        // Tombstones carry no position of their own.
        if value.is_null() {
            continue;
        }
        let id = (
            m.key_json().to_string(),
            value["source"]["lsn"].to_string(),
            value["op"].to_string(),
        );
        if !seen.insert(id) {
            duplicates += 1;
        }
    }
    duplicates
}

/// Crash window: the broker acknowledged events, PostgreSQL was not told yet. The process
/// exits at that point (fail point); the next run sends them again, nothing is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_the_ack_before_the_confirm_loses_nothing() {
    let mut test = CdcTest::new(
        "CREATE TABLE t (id bigint PRIMARY KEY, n bigint NOT NULL, note text NOT NULL);",
    )
    .await;
    test.set("SNAPSHOT__MODE", "never");
    let first = test.spawn("run-0");
    test.wait_caught_up(Duration::from_secs(60)).await;
    drop(first);

    let stop = CancellationToken::new();
    let writer = spawn_writer(
        test.url.clone(),
        "t",
        300,
        stop.clone(),
        Duration::from_millis(1),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut crashing = test.spawn_with(
        "run-1",
        &[(
            ficus_adapters::failpoint::ENV,
            "after_ack_before_confirm=40",
        )],
    );
    let exit = crashing.wait_exit(Duration::from_secs(120)).await;
    assert_eq!(
        exit.code(),
        Some(ficus_adapters::failpoint::EXIT_CODE),
        "run-1 did not stop at the fail point:\n{}",
        crashing.log_text()
    );
    assert!(crashing.log_text().contains("after_ack_before_confirm"));

    let mut adapter = test.spawn("run-2");
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.cancel();
    let transactions = writer.await.unwrap();
    test.wait_caught_up(Duration::from_secs(120)).await;
    let messages = test.assert_topic_matches_table(&test.topic("t"), "t").await;
    let duplicates = duplicates(&messages);
    eprintln!(
        "{transactions} transactions, {} events, {duplicates} sent twice across the crash",
        messages.len()
    );
    assert!(adapter.terminate().success(), "{}", adapter.log_text());
}

/// Crash window: a snapshot chunk is in the broker, its progress row not written. The next run
/// sends that chunk again (duplicates) and every row arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_a_snapshot_chunk_and_its_progress_row_loses_nothing() {
    const ROWS: i64 = 5_000;
    let mut test = CdcTest::new(
        "CREATE TABLE t (id bigint PRIMARY KEY, n bigint NOT NULL, note text NOT NULL);
         INSERT INTO t SELECT g, g * 2, 'row ' || g FROM generate_series(1, 5000) g;",
    )
    .await;
    test.set("SNAPSHOT__CHUNK_ROWS", 500);
    let mut crashing = test.spawn_with(
        "run-0",
        &[(ficus_adapters::failpoint::ENV, "snapshot_chunk_published=3")],
    );
    let exit = crashing.wait_exit(Duration::from_secs(120)).await;
    assert_eq!(
        exit.code(),
        Some(ficus_adapters::failpoint::EXIT_CODE),
        "run-0 did not stop at the fail point:\n{}",
        crashing.log_text()
    );
    let (done,): (i64,) = sqlx::query_as(
        "SELECT coalesce(sum(rows_done), 0)::int8 FROM _ficus.snapshot_progress WHERE slot_name = $1",
    )
    .bind(&test.slot)
    .fetch_one(&test.pool)
    .await
    .unwrap();
    assert!(
        done < ROWS,
        "the snapshot was interrupted ({done} rows recorded)"
    );

    let mut adapter = test.spawn("run-1");
    test.wait_snapshot_complete(Duration::from_secs(120)).await;
    let messages = test.assert_topic_matches_table(&test.topic("t"), "t").await;
    let reads: Vec<_> = messages.iter().filter(|m| m.op() == "r").collect();
    let ids: std::collections::HashSet<i64> = reads
        .iter()
        .map(|m| m.key_json()["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids.len() as i64, ROWS, "every row has its read event");
    let sent_again = reads.len() as i64 - ROWS;
    eprintln!(
        "{} read events, {sent_again} sent again across the crash",
        reads.len()
    );
    assert!(
        sent_again > 0,
        "the chunk in the broker but not in the progress table is sent again"
    );
    assert!(adapter.terminate().success(), "{}", adapter.log_text());
}

/// Transaction metadata across crashes: with `provide.transaction.metadata`, a process stopped
/// where the broker acknowledged events PostgreSQL was not told about (fail point), then one
/// killed with SIGKILL. Every transaction with events in the table's topic has its BEGIN before
/// an END in the transaction topic (none lost; a replay may repeat them), the END counts exactly
/// the transaction's distinct events, and each event's block names its transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_metadata_survives_crashes_whole() {
    let mut test = CdcTest::new(
        "CREATE TABLE t (id bigint PRIMARY KEY, n bigint NOT NULL, note text NOT NULL);",
    )
    .await;
    test.set("SNAPSHOT__MODE", "never");
    test.set("DEBEZIUM__PROVIDE_TRANSACTION_METADATA", true);
    let first = test.spawn("run-0");
    test.wait_caught_up(Duration::from_secs(60)).await;
    drop(first);

    let stop = CancellationToken::new();
    let writer = spawn_writer(
        test.url.clone(),
        "t",
        300,
        stop.clone(),
        Duration::from_millis(1),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut crashing = test.spawn_with(
        "run-1",
        &[(
            ficus_adapters::failpoint::ENV,
            "after_ack_before_confirm=30",
        )],
    );
    let exit = crashing.wait_exit(Duration::from_secs(120)).await;
    assert_eq!(
        exit.code(),
        Some(ficus_adapters::failpoint::EXIT_CODE),
        "run-1 did not stop at the fail point:\n{}",
        crashing.log_text()
    );
    let mut killed = test.spawn("run-2");
    tokio::time::sleep(Duration::from_millis(
        rand::thread_rng().gen_range(1_000..3_000),
    ))
    .await;
    assert!(killed.is_running(), "{}", killed.log_text());
    killed.kill();
    let mut adapter = test.spawn("run-3");
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.cancel();
    let transactions = writer.await.unwrap();
    test.wait_caught_up(Duration::from_secs(120)).await;
    let events = test.assert_topic_matches_table(&test.topic("t"), "t").await;
    let records = test.messages(&format!("{}.transaction", test.prefix)).await;

    // Per transaction id: its distinct events (position, key, op), from their blocks.
    let mut expected: std::collections::HashMap<String, std::collections::HashSet<String>> =
        Default::default();
    for m in events.iter().filter(|m| m.value.is_some()) {
        let value = m.json();
        let block = &value["transaction"];
        let id = block["id"]
            .as_str()
            .expect("a transaction block")
            .to_owned();
        let (xid, lsn) = id.split_once(':').unwrap();
        assert_eq!(xid, value["source"]["txId"].to_string(), "{value}");
        assert_eq!(lsn, value["source"]["lsn"].to_string(), "{value}");
        assert!(block["total_order"].as_i64().unwrap() >= 1);
        expected.entry(xid.to_owned()).or_default().insert(format!(
            "{lsn} {} {}",
            m.key_json(),
            value["op"]
        ));
    }
    let mut begun = std::collections::HashSet::new();
    let mut ended: std::collections::HashMap<String, i64> = Default::default();
    for m in &records {
        let value = m.json();
        let xid = value["id"]
            .as_str()
            .unwrap()
            .split(':')
            .next()
            .unwrap()
            .to_owned();
        assert_eq!(m.key_json()["id"], value["id"]);
        match value["status"].as_str() {
            Some("BEGIN") => {
                begun.insert(xid);
            }
            Some("END") => {
                assert!(begun.contains(&xid), "END before BEGIN: {value}");
                let count = value["event_count"].as_i64().unwrap();
                let collections = &value["data_collections"];
                assert_eq!(
                    collections,
                    &serde_json::json!([{"data_collection": "public.t", "event_count": count}]),
                    "{value}"
                );
                ended.insert(xid, count);
            }
            other => panic!("status {other:?} in {value}"),
        }
    }
    let mut missing = Vec::new();
    for (xid, distinct) in &expected {
        match ended.get(xid) {
            None => missing.push(format!("{xid}: no END")),
            Some(&count) if count != distinct.len() as i64 => missing.push(format!(
                "{xid}: END counts {count}, the topic has {} events",
                distinct.len()
            )),
            Some(_) => {}
        }
    }
    missing.sort();
    assert!(
        missing.is_empty(),
        "{} of {} transactions:\n{}",
        missing.len(),
        expected.len(),
        missing
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    eprintln!(
        "{transactions} transactions written, {} with events, {} transaction records, {} events",
        expected.len(),
        records.len(),
        events.len()
    );
    assert!(adapter.terminate().success(), "{}", adapter.log_text());
}
