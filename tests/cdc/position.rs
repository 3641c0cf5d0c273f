//! "Caught up" is measured from the WAL insert position: with `synchronous_commit = off` (the
//! test cluster's setting) a commit is in the WAL buffers before the WAL writer writes it, so
//! the write position (`pg_current_wal_lsn()`) lies below commits already made, and a wait for
//! it could end before they were sent: the flake of the first CDC tests. After
//! [`CdcTest::wait_caught_up`] one read of the topic must hold every commit, every time.

use std::time::Duration;

use crate::support::CdcTest;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_catching_up_one_read_holds_every_commit() {
    let test = CdcTest::new("CREATE TABLE t (id bigint PRIMARY KEY, note text NOT NULL);").await;
    let adapter = test.start_streaming().await;
    let mut conn = test.connect().await;
    sqlx::query("SET synchronous_commit = off")
        .execute(&mut conn)
        .await
        .unwrap();
    for id in 1..=15_i64 {
        sqlx::query("INSERT INTO t VALUES ($1, 'row')")
            .bind(id)
            .execute(&mut conn)
            .await
            .unwrap();
        test.wait_caught_up(Duration::from_secs(30)).await;
        let messages = test.messages(&test.topic("t")).await;
        assert_eq!(
            messages.len() as i64,
            id,
            "commit {id} was not in the broker once the slot had caught up"
        );
    }
    adapter.stop().await;
}
