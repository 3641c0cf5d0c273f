//! The tasks service applies a monolith transaction whole (`views.whole_transactions`, its
//! default): the real adapter with `provide.transaction.metadata` (a transaction topic of three
//! partitions, as it creates by default) streams the monolith's database, and transactions that
//! rename a task's assignee and edit the task together are never seen half by a reader of the
//! service's store (`tasks_joined`, one statement: the task's title and its assignee's name).
//! Then `ficus-tasks rebuild` and a start replay the transactions whole, ready with nothing new
//! written.

use std::collections::BTreeSet;
use std::time::Duration;

use ficus_testkit::{SERVICE_FORM, TestAdapter, TestDatabase, kafka, unique_suffix};
use sqlx::SqlitePool;
use sqlx::sqlite::SqliteConnectOptions;

use crate::support::{ServiceConfig, ServiceProcess, rebuild};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rename_and_a_task_edit_in_one_transaction_show_together() {
    let db = TestDatabase::migrated().await;
    let (person,): (i64,) = sqlx::query_as(
        "INSERT INTO people (email, display_name) VALUES ('ada@example.test', 'n0') RETURNING id",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let (task,): (i64,) =
        sqlx::query_as("INSERT INTO tasks (title, assignee_id) VALUES ('n0', $1) RETURNING id")
            .bind(person)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    let mut settings = SERVICE_FORM.to_vec();
    settings.push(("DEBEZIUM__PROVIDE_TRANSACTION_METADATA", "true"));
    let adapter =
        TestAdapter::start_with(&db.url, &["public.people", "public.tasks"], 3, &settings).await;
    // The transaction topic as the adapter makes it (three partitions), made now: the adapter
    // creates it at its first transaction, and the service waits for it.
    kafka::create_topic(&format!("{}.transaction", adapter.prefix), 3)
        .await
        .unwrap();
    adapter
        .wait_snapshot_complete(Duration::from_secs(180))
        .await;
    let dir = std::env::temp_dir().join(format!("ficus-tx-{}", unique_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let store_path = dir.join("tasks.db");
    let config = ServiceConfig {
        store: store_path.display().to_string(),
        topic_prefix: adapter.prefix.clone(),
        jwks_url: "http://127.0.0.1:9/.well-known/jwks.json".to_owned(),
        batch_max_events: 1000,
        brokers: ficus_testkit::kafka::brokers(),
    };
    let tasks = ServiceProcess::start("tasks", &config);
    tasks.wait_ready(Duration::from_secs(120)).await;
    let store = SqlitePool::connect_with(
        SqliteConnectOptions::new()
            .filename(&store_path)
            .read_only(true),
    )
    .await
    .unwrap();
    let read = move |store: SqlitePool| async move {
        let row: Option<(String, Option<String>)> =
            sqlx::query_as("SELECT title, assignee_name FROM tasks_joined WHERE id = $1")
                .bind(task)
                .fetch_optional(&store)
                .await
                .unwrap();
        row
    };
    let wait_for = |want: &'static str| {
        let store = store.clone();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            loop {
                let got = read(store.clone()).await;
                if got == Some((want.to_owned(), Some(want.to_owned()))) {
                    return;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "never saw {want}, last {got:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    wait_for("n0").await;

    let reader_store = store.clone();
    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel::<()>();
    let reader = tokio::spawn(async move {
        let mut seen = BTreeSet::new();
        loop {
            if let Some((title, name)) = read(reader_store.clone()).await {
                assert_eq!(
                    Some(&title),
                    name.as_ref(),
                    "a reader saw the task edited without its assignee renamed, or the reverse"
                );
                seen.insert(title);
            }
            if done_rx.try_recv().is_ok() {
                return seen.len();
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    for n in 1..=30 {
        sqlx::raw_sql(&format!(
            "BEGIN; UPDATE people SET display_name = 'n{n}' WHERE id = {person}; \
             UPDATE tasks SET title = 'n{n}' WHERE id = {task}; COMMIT;"
        ))
        .execute(&db.pool)
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_for("n30").await;
    let _ = done_tx.send(());
    let distinct = reader
        .await
        .expect("the reader never saw half a transaction");
    eprintln!("{distinct} distinct states of the task seen, none half");
    assert!(distinct > 1, "the reader saw the view move");

    // `ficus-tasks rebuild` (service stopped) empties both views and forgets the group's place
    // in the transaction topic and its last END: the next start, with nothing new written,
    // replays every transaction whole and is ready.
    drop(tasks);
    let said = rebuild("tasks", &config);
    let transaction_topic = format!("{}.transaction", adapter.prefix);
    assert!(
        said.contains("view people emptied") && said.contains(&transaction_topic),
        "{said}"
    );
    assert_eq!(read(store.clone()).await, None, "the views emptied");
    let (ends,): (i64,) = sqlx::query_as("SELECT count(*) FROM ficus_view_transactions")
        .fetch_one(&store)
        .await
        .unwrap();
    assert_eq!(ends, 0, "the last END forgotten");
    let tasks = ServiceProcess::start("tasks", &config);
    tasks.wait_ready(Duration::from_secs(120)).await;
    wait_for("n30").await;
    drop(tasks);
    adapter.stop().await;
}
