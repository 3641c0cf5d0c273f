//! Nothing is lost across crashes: thousands of writes while `ficus cdc run` is killed with
//! SIGKILL several times and restarted. Duplicates are allowed (at-least-once), loss is not.

use std::time::Duration;

use ficus_adapters::CancellationToken;
use rand::Rng;

use crate::support::{CdcTest, spawn_writer, table_state};

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
    let writer = spawn_writer(test.url.clone(), "t", 400, stop.clone(), Duration::ZERO);
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
    tokio::time::sleep(Duration::from_secs(2)).await;
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
