//! Whole-transaction apply (`ficus_view::start_transactional`) over records in Debezium's
//! exact transaction-metadata shape (`provide.transaction.metadata`: each event's
//! `transaction` block, BEGIN/END records on `<prefix>.transaction`), produced into the real
//! broker: a transaction that touched people and tasks is visible in both views at once, never
//! half (a reader polling both tables in one query during the apply; a transaction whose second
//! table's event has not arrived stays invisible); a crash between the two tables' events leaves
//! neither, and after the restart both; a re-delivered event whose END was taken before does
//! not stall the views. Then the same through the real adapter (`ficus cdc` with
//! `provide.transaction.metadata`): monolith transactions touching people and tasks, a reader
//! polling both views never sees one without the other. Both also over a transaction topic of
//! three partitions (the adapter's and Debezium's default): ENDs delivered against commit
//! order across its partitions are still applied in commit order, and after a restart the
//! first transaction follows the last END stored, without waiting for quiet partitions. A
//! rebuild of the group replays every transaction whole and is ready on idle topics.

mod support;

use std::time::Duration;

use ficus_testkit::kafka;
use ficus_view::{
    ColumnType, ConsumerConfig, Store, TransactionalViews, ViewSpec, ViewsHandle,
    rebuild_transactional, start_transactional,
};
use rdkafka::producer::FutureRecord;
use serde_json::{Value, json};

use support::{Adapter, Kind, TestStore, produce, producer, row_change};

struct Topics {
    people: String,
    tasks: String,
    transactions: String,
}

async fn topics() -> Topics {
    topics_with(1).await
}

/// Change topics of three partitions, a transaction topic of `transaction_partitions`.
async fn topics_with(transaction_partitions: i32) -> Topics {
    let prefix = kafka::unique_topic("vtx");
    let topics = Topics {
        people: format!("{prefix}.public.people"),
        tasks: format!("{prefix}.public.tasks"),
        transactions: format!("{prefix}.transaction"),
    };
    kafka::create_topic(&topics.people, 3).await.unwrap();
    kafka::create_topic(&topics.tasks, 3).await.unwrap();
    kafka::create_topic(&topics.transactions, transaction_partitions)
        .await
        .unwrap();
    topics
}

fn views(topics: &Topics) -> TransactionalViews {
    TransactionalViews::new("app", &topics.transactions)
        .view(
            ViewSpec::new("people", &topics.people)
                .key("id", ColumnType::BigInt)
                .column("name", ColumnType::Text),
        )
        .view(
            ViewSpec::new("tasks", &topics.tasks)
                .key("id", ColumnType::BigInt)
                .column("title", ColumnType::Text)
                .column("assignee_id", ColumnType::BigInt),
        )
}

/// A change event of a transaction, as Debezium writes it with transaction metadata.
fn event(
    table: &str,
    op: &str,
    row: Value,
    tx: &Tx,
    total_order: u64,
    collection_order: u64,
) -> (Option<String>, Option<String>) {
    let key = json!({"id": row["id"]});
    let (key, value) = row_change(table, op, key, row, Some(tx.commit), tx.lsn + total_order);
    let mut value: Value = serde_json::from_str(&value.unwrap()).unwrap();
    value["transaction"] = json!({
        "id": tx.id(tx.lsn + total_order),
        "total_order": total_order,
        "data_collection_order": collection_order,
    });
    (key, Some(value.to_string()))
}

/// A source transaction: PostgreSQL's txid and the LSNs it sits at.
struct Tx {
    txid: u64,
    commit: u64,
    lsn: u64,
}

impl Tx {
    fn new(n: u64) -> Self {
        Self {
            txid: 500 + n,
            commit: 10_000 * n,
            lsn: 10_000 * n + 10,
        }
    }

    /// Transaction `n` committed right after `previous`: its events name `previous`'s commit
    /// (its END's position) as theirs (`sequence[0]`), as the adapter's do.
    fn after(n: u64, previous: &Tx) -> Self {
        Self {
            commit: previous.lsn + 100,
            ..Self::new(n)
        }
    }

    /// Debezium's PostgreSQL transaction id: `<txId>:<lsn>`, the position of the record at
    /// hand (the BEGIN's, each event's own, the COMMIT's for the END).
    fn id(&self, lsn: u64) -> String {
        format!("{}:{lsn}", self.txid)
    }

    fn begin(&self) -> (Option<String>, Option<String>) {
        (
            Some(json!({"id": self.id(self.lsn)}).to_string()),
            Some(
                json!({"status": "BEGIN", "id": self.id(self.lsn), "event_count": null,
                       "data_collections": null, "ts_ms": 1_700_000_000_000i64})
                .to_string(),
            ),
        )
    }

    fn end(&self, counts: &[(&str, u64)]) -> (Option<String>, Option<String>) {
        let collections: Vec<Value> = counts
            .iter()
            .map(|(c, n)| json!({"data_collection": c, "event_count": n}))
            .collect();
        let total: u64 = counts.iter().map(|(_, n)| n).sum();
        (
            Some(json!({"id": self.id(self.lsn + 100)}).to_string()),
            Some(
                json!({"status": "END", "id": self.id(self.lsn + 100), "event_count": total,
                       "data_collections": collections, "ts_ms": 1_700_000_000_000i64})
                .to_string(),
            ),
        )
    }
}

/// Transactions `ns` (in order), each renaming person 1 and retitling task 10 to `v<n>` and
/// touching a table no view holds; produced per topic in one go (the order across topics is
/// the broker's, as with the real adapter).
async fn rename_both(topics: &Topics, ns: std::ops::RangeInclusive<u64>) {
    let (mut markers, mut people, mut tasks) = (Vec::new(), Vec::new(), Vec::new());
    for n in ns {
        let tx = Tx::new(n);
        let label = format!("v{n}");
        markers.push(tx.begin());
        people.push(event(
            "people",
            "u",
            json!({"id": 1, "name": label}),
            &tx,
            1,
            1,
        ));
        tasks.push(event(
            "tasks",
            "u",
            json!({"id": 10, "title": label, "assignee_id": 1}),
            &tx,
            2,
            1,
        ));
        markers.push(tx.end(&[
            ("public.people", 1),
            ("public.tasks", 1),
            ("public.documents", 3),
        ]));
    }
    let producer = producer();
    produce(&producer, &topics.people, &people).await;
    produce(&producer, &topics.tasks, &tasks).await;
    produce(&producer, &topics.transactions, &markers).await;
}

async fn start(store: Store, topics: &Topics) -> ViewsHandle {
    start_settling(store, topics, ficus_view::DEFAULT_SETTLE_MS).await
}

async fn start_settling(store: Store, topics: &Topics, settle_ms: u64) -> ViewsHandle {
    let mut config = ConsumerConfig::new(kafka::brokers());
    config.batch_max_ms = 5;
    start_transactional(store, views(topics).settle_ms(settle_ms), config)
        .await
        .expect("transactional views")
}

/// A record to produce: its partition, then its key and value (`None`: null).
type Placed = (i32, (Option<String>, Option<String>));

/// Sends each record to the partition given, waiting for its acknowledgement.
async fn produce_to(topic: &str, records: &[Placed]) {
    let producer = producer();
    for (partition, (key, value)) in records {
        let mut record: FutureRecord<'_, str, str> = FutureRecord::to(topic).partition(*partition);
        if let Some(key) = key {
            record = record.key(key.as_str());
        }
        if let Some(value) = value {
            record = record.payload(value.as_str());
        }
        producer
            .send(record, Duration::from_secs(30))
            .await
            .expect("delivered");
    }
}

/// The BEGIN and END of `tx` (one event of people, one of tasks) on `partition` of the
/// transaction topic.
async fn produce_markers(topics: &Topics, tx: &Tx, partition: i32) {
    produce_to(
        &topics.transactions,
        &[
            (partition, tx.begin()),
            (
                partition,
                tx.end(&[("public.people", 1), ("public.tasks", 1)]),
            ),
        ],
    )
    .await;
}

/// People and tasks counted and their highest ids, in one statement.
async fn counts(store: &Store) -> (i64, i64, i64, i64) {
    let sql = "SELECT (SELECT count(*) FROM people), (SELECT coalesce(max(id), 0) FROM people), \
               (SELECT count(*) FROM tasks), (SELECT coalesce(max(id), 0) FROM tasks)";
    match store {
        Store::Sqlite(pool) => sqlx::query_as(sql).fetch_one(pool).await.unwrap(),
        Store::Postgres(pool) => sqlx::query_as(sql).fetch_one(pool).await.unwrap(),
    }
}

/// Person 1's name and task 10's title, read in one statement (one snapshot).
async fn both(store: &Store) -> (Option<String>, Option<String>) {
    let sql =
        "SELECT (SELECT name FROM people WHERE id = 1), (SELECT title FROM tasks WHERE id = 10)";
    match store {
        Store::Sqlite(pool) => sqlx::query_as(sql).fetch_one(pool).await.unwrap(),
        Store::Postgres(pool) => sqlx::query_as(sql).fetch_one(pool).await.unwrap(),
    }
}

async fn wait_for(store: &Store, want: (&str, &str)) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let got = both(store).await;
        if got == (Some(want.0.to_owned()), Some(want.1.to_owned())) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never saw {want:?}, last {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn a_transaction_is_visible_whole_or_not_at_all(kind: Kind) {
    ficus_testkit::init_tracing();
    let topics = topics().await;
    let store = TestStore::new(kind).await;
    let handle = start(store.store.clone(), &topics).await;

    // A reader polls both tables (one statement, one snapshot) while 60 transactions rename
    // person 1 and retitle task 10 together.
    let reader_store = store.store.clone();
    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel::<()>();
    let reader = tokio::spawn(async move {
        let (mut reads, mut seen) = (0u64, std::collections::BTreeSet::new());
        loop {
            let (name, title) = both(&reader_store).await;
            assert_eq!(
                name, title,
                "a reader saw one table's change without the other's"
            );
            if let Some(name) = name {
                seen.insert(name);
            }
            reads += 1;
            if done_rx.try_recv().is_ok() {
                return (reads, seen.len());
            }
            tokio::task::yield_now().await;
        }
    });
    for first in (1..=60).step_by(10) {
        rename_both(&topics, first..=first + 9).await;
    }
    wait_for(&store.store, ("v60", "v60")).await;
    let _ = done_tx.send(());
    let (reads, distinct) = reader
        .await
        .expect("the reader never saw half a transaction");
    eprintln!("{kind:?}: {reads} reads, {distinct} distinct states, none half");
    assert!(distinct > 1, "the reader saw the views move");

    // Half a transaction in the broker (people's event, not yet tasks' nor END): invisible.
    let tx = Tx::new(61);
    let producer = producer();
    produce(&producer, &topics.transactions, &[tx.begin()]).await;
    produce(
        &producer,
        &topics.people,
        &[event(
            "people",
            "u",
            json!({"id": 1, "name": "v61"}),
            &tx,
            1,
            1,
        )],
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        both(&store.store).await,
        (Some("v60".to_owned()), Some("v60".to_owned())),
        "half a transaction is not visible"
    );
    // A crash now, between the two tables' events.
    handle.abort();
    produce(
        &producer,
        &topics.tasks,
        &[event(
            "tasks",
            "u",
            json!({"id": 10, "title": "v61", "assignee_id": 1}),
            &tx,
            2,
            1,
        )],
    )
    .await;
    produce(
        &producer,
        &topics.transactions,
        &[tx.end(&[("public.people", 1), ("public.tasks", 1)])],
    )
    .await;
    assert_eq!(
        both(&store.store).await,
        (Some("v60".to_owned()), Some("v60".to_owned())),
        "neither table's change after the crash"
    );
    // The restart (the store opened again) takes the transaction whole.
    let reopened = store.reopen().await;
    let handle = start(reopened.clone(), &topics).await;
    wait_for(&reopened, ("v61", "v61")).await;

    // An event re-delivered (as after an adapter restart) without its END again does not stall
    // the views: the next transaction still lands, and the old event changed nothing.
    let old = Tx::new(30);
    produce(
        &producer,
        &topics.people,
        &[event(
            "people",
            "u",
            json!({"id": 1, "name": "v30"}),
            &old,
            1,
            1,
        )],
    )
    .await;
    rename_both(&topics, 62..=62).await;
    wait_for(&reopened, ("v62", "v62")).await;
    for status in &handle.statuses {
        assert!(status.wait_ready(Duration::from_secs(30)).await);
    }
    // Since the restart: v61 and v62 applied, the re-delivered v30 stale. The status is told
    // after the store's commit, so it may trail what a reader of the store already sees.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut people = handle.statuses[0].report();
    while (people.applied, people.stale) != (2, 1) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        people = handle.statuses[0].report();
    }
    assert_eq!(
        (people.applied, people.stale),
        (2, 1),
        "{kind:?} since the restart"
    );
    handle.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_is_visible_whole_or_not_at_all_in_sqlite() {
    a_transaction_is_visible_whole_or_not_at_all(Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_is_visible_whole_or_not_at_all_in_postgres() {
    a_transaction_is_visible_whole_or_not_at_all(Kind::Postgres).await;
}

/// A rebuild of transactional views (service stopped) empties them and forgets where the
/// group stood in the transaction topic and the last END it took: the next start, on topics
/// nobody writes to any more, replays every transaction whole and becomes ready without
/// waiting for a new write.
async fn a_rebuild_replays_the_transactions_whole(kind: Kind) {
    ficus_testkit::init_tracing();
    let topics = topics().await;
    let store = TestStore::new(kind).await;
    let handle = start(store.store.clone(), &topics).await;
    rename_both(&topics, 1..=20).await;
    wait_for(&store.store, ("v20", "v20")).await;
    handle.stop().await.unwrap();

    assert!(store.store.last_end("app").await.unwrap().is_some());
    rebuild_transactional(&store.store, &views(&topics))
        .await
        .unwrap();
    assert_eq!(both(&store.store).await, (None, None), "the views emptied");
    assert_eq!(
        store.store.last_end("app").await.unwrap(),
        None,
        "the last END forgotten"
    );

    // The topics stay idle from here on.
    let handle = start(store.store.clone(), &topics).await;
    for status in &handle.statuses {
        assert!(
            status.wait_ready(Duration::from_secs(30)).await,
            "{kind:?}: ready after the replay, without a new write: {:?}",
            status.report()
        );
    }
    assert_eq!(
        both(&store.store).await,
        (Some("v20".to_owned()), Some("v20".to_owned())),
        "{kind:?}: the views full again"
    );
    for status in &handle.statuses {
        assert_eq!(
            status.report().applied,
            20,
            "{kind:?}: every transaction replayed"
        );
    }
    handle.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_replays_the_transactions_whole_in_sqlite() {
    a_rebuild_replays_the_transactions_whole(Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_replays_the_transactions_whole_in_postgres() {
    a_rebuild_replays_the_transactions_whole(Kind::Postgres).await;
}

/// A transaction topic of three partitions with its ENDs delivered against commit order
/// across partitions (each partition in commit order, as the adapter writes them): transaction
/// `n` inserts person `n` and task `n`, its BEGIN and END go to partition `(n - 1) % 3`, and
/// of each three the latest END is produced first, the earliest last, 300 ms apart. A reader
/// (one statement) must only ever see transactions 1..=k, whole: people and tasks both counting
/// k with k the highest id. Then a lone transaction with the other partitions quiet is applied
/// once they settled at their high watermarks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_apply_in_commit_order_across_transaction_partitions() {
    ficus_testkit::init_tracing();
    let topics = topics_with(3).await;
    let store = TestStore::new(Kind::Sqlite).await;
    // Longer than the adversarial delays below (600 ms between a group's first and last END).
    let handle = start_settling(store.store.clone(), &topics, 2000).await;
    for status in &handle.statuses {
        assert!(status.wait_ready(Duration::from_secs(30)).await);
    }
    let reader_store = store.store.clone();
    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel::<()>();
    let reader = tokio::spawn(async move {
        let mut seen = std::collections::BTreeSet::new();
        loop {
            let (people, max_person, tasks, max_task) = counts(&reader_store).await;
            assert!(
                people == max_person && tasks == people && max_task == people,
                "a reader saw transactions out of commit order or half: {people} people \
                 (highest {max_person}), {tasks} tasks (highest {max_task})"
            );
            seen.insert(people);
            if done_rx.try_recv().is_ok() {
                return seen.len();
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    const LAST: u64 = 12;
    let (mut people, mut tasks) = (Vec::new(), Vec::new());
    for n in 1..=LAST {
        let tx = Tx::new(n);
        let id = n as i64;
        people.push(event(
            "people",
            "c",
            json!({"id": id, "name": format!("p{n}")}),
            &tx,
            1,
            1,
        ));
        tasks.push(event(
            "tasks",
            "c",
            json!({"id": id, "title": format!("t{n}"), "assignee_id": id}),
            &tx,
            2,
            1,
        ));
    }
    let producer = producer();
    produce(&producer, &topics.people, &people).await;
    produce(&producer, &topics.tasks, &tasks).await;
    for group in 0..LAST / 3 {
        for n in (3 * group + 1..=3 * group + 3).rev() {
            let tx = Tx::new(n);
            let partition = ((n - 1) % 3) as i32;
            produce_markers(&topics, &tx, partition).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while counts(&store.store).await.0 < LAST as i64 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "every transaction applied, got {:?}",
            counts(&store.store).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = done_tx.send(());
    let distinct = reader.await.expect("the reader saw commit order, whole");
    eprintln!("{distinct} distinct states seen, all in commit order");
    assert!(distinct > 3, "the reader saw the views move");

    // A lone transaction, the other partitions quiet: applied after they settle.
    let n = LAST + 1;
    let tx = Tx::new(n);
    let id = n as i64;
    produce(
        &producer,
        &topics.people,
        &[event(
            "people",
            "c",
            json!({"id": id, "name": "lone"}),
            &tx,
            1,
            1,
        )],
    )
    .await;
    produce(
        &producer,
        &topics.tasks,
        &[event(
            "tasks",
            "c",
            json!({"id": id, "title": "lone", "assignee_id": id}),
            &tx,
            2,
            1,
        )],
    )
    .await;
    let sent = tokio::time::Instant::now();
    produce_to(
        &topics.transactions,
        &[(1, tx.end(&[("public.people", 1), ("public.tasks", 1)]))],
    )
    .await;
    while counts(&store.store).await.0 < id {
        assert!(
            sent.elapsed() < Duration::from_secs(30),
            "the lone transaction applied"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("the lone transaction took {:?}", sent.elapsed());
    assert!(
        sent.elapsed() >= Duration::from_millis(1900),
        "a lone END waits for the quiet partitions to settle"
    );
    assert_eq!(counts(&store.store).await, (id, id, id, id));
    handle.stop().await.unwrap();
}

/// Transaction `tx` creating person and task `id`, its BEGIN and END on `partition` of the
/// transaction topic; how long until a reader sees it.
async fn create_both(topics: &Topics, store: &Store, tx: &Tx, id: i64, partition: i32) -> Duration {
    let producer = producer();
    let person = event("people", "c", json!({"id": id, "name": "p"}), tx, 1, 1);
    let task = event(
        "tasks",
        "c",
        json!({"id": id, "title": "t", "assignee_id": id}),
        tx,
        2,
        1,
    );
    produce(&producer, &topics.people, &[person]).await;
    produce(&producer, &topics.tasks, &[task]).await;
    let sent = tokio::time::Instant::now();
    produce_markers(topics, tx, partition).await;
    while counts(store).await != (id, id, id, id) {
        assert!(
            sent.elapsed() < Duration::from_secs(30),
            "transaction {} applied, got {:?}",
            tx.txid,
            counts(store).await
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sent.elapsed()
}

/// The last END applied is stored with the rows and offsets: after a crash and a restart, the
/// first transaction (its events naming that END as their previous commit) is applied at once,
/// not after the transaction topic's quiet partitions settled. A fresh store, which has no END
/// to chain to, shows the wait it saves.
async fn the_first_transaction_after_a_restart_does_not_wait_to_settle(kind: Kind) {
    ficus_testkit::init_tracing();
    const SETTLE_MS: u64 = 6000;
    let topics = topics_with(3).await;
    let store = TestStore::new(kind).await;
    let handle = start_settling(store.store.clone(), &topics, SETTLE_MS).await;
    for status in &handle.statuses {
        assert!(status.wait_ready(Duration::from_secs(30)).await);
    }
    let first = Tx::new(1);
    let fresh = create_both(&topics, &store.store, &first, 1, 0).await;
    eprintln!("{kind:?}: the first transaction of a fresh store took {fresh:?}");
    assert!(
        fresh >= Duration::from_millis(SETTLE_MS - 100),
        "a fresh store waits for the quiet partitions ({fresh:?})"
    );
    assert_eq!(
        store.store.last_end("app").await.unwrap(),
        Some(first.lsn + 100),
        "the END's position, stored with the rows"
    );
    // A crash right after the rows became visible: the END's position is in the same store
    // transaction.
    handle.abort();

    let store_again = store.reopen().await;
    let handle = start_settling(store_again.clone(), &topics, SETTLE_MS).await;
    for status in &handle.statuses {
        assert!(status.wait_ready(Duration::from_secs(30)).await);
    }
    // On another partition than the first's: only the stored END proves nothing came between.
    let second = Tx::after(2, &first);
    let restarted = create_both(&topics, &store_again, &second, 2, 1).await;
    eprintln!("{kind:?}: the first transaction after the restart took {restarted:?}");
    assert!(
        restarted < Duration::from_millis(SETTLE_MS / 2),
        "the first transaction after a restart waited {restarted:?} (settle_ms {SETTLE_MS})"
    );
    assert_eq!(
        store_again.last_end("app").await.unwrap(),
        Some(second.lsn + 100)
    );
    handle.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_transaction_after_a_restart_does_not_wait_to_settle_in_sqlite() {
    the_first_transaction_after_a_restart_does_not_wait_to_settle(Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_transaction_after_a_restart_does_not_wait_to_settle_in_postgres() {
    the_first_transaction_after_a_restart_does_not_wait_to_settle(Kind::Postgres).await;
}

/// The real adapter with transaction metadata: transactions of the source database that update
/// a person and a task together are never seen half by a reader of the views.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_adapters_transactions_are_visible_whole() {
    let mut adapter = Adapter::new(
        "CREATE TABLE people (id bigint PRIMARY KEY, name text NOT NULL);
         CREATE TABLE tasks (id bigint PRIMARY KEY, title text NOT NULL, assignee_id bigint);
         INSERT INTO people VALUES (1, 'v0');
         INSERT INTO tasks VALUES (10, 'v0', 1);",
    )
    .await;
    adapter.transaction_metadata = true;
    // The transaction topic is the adapter's, made at its start like the tables' topics (with
    // `kafka.topic_partitions` partitions, three here): the views find it there before any
    // transaction was written.
    let topics = Topics {
        people: adapter.topic("people"),
        tasks: adapter.topic("tasks"),
        transactions: format!("{}.transaction", adapter.prefix),
    };
    adapter.start().await;
    adapter.wait_snapshot_complete().await;
    adapter.wait_caught_up().await;

    let store = TestStore::new(Kind::Sqlite).await;
    let handle = start(store.store.clone(), &topics).await;
    for status in &handle.statuses {
        assert!(status.wait_ready(Duration::from_secs(60)).await);
    }
    wait_for(&store.store, ("v0", "v0")).await;
    // Transaction n renames person 1 and task 10 to v<n> and adds task 100 + n: a reader sees
    // v<k> in both and exactly tasks 101..=100 + k.
    let read = |store: Store| async move {
        let sql = "SELECT (SELECT name FROM people WHERE id = 1), \
                   (SELECT title FROM tasks WHERE id = 10), \
                   (SELECT count(*) FROM tasks WHERE id > 100), \
                   (SELECT coalesce(max(id), 100) - 100 FROM tasks WHERE id > 100)";
        let row: (Option<String>, Option<String>, i64, i64) = match &store {
            Store::Sqlite(pool) => sqlx::query_as(sql).fetch_one(pool).await.unwrap(),
            Store::Postgres(pool) => sqlx::query_as(sql).fetch_one(pool).await.unwrap(),
        };
        row
    };
    let reader_store = store.store.clone();
    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel::<()>();
    let reader = tokio::spawn(async move {
        let mut seen = std::collections::BTreeSet::new();
        loop {
            let (name, title, added, highest) = read(reader_store.clone()).await;
            assert_eq!(
                name, title,
                "a reader saw one table's change without the other's"
            );
            assert!(
                added == highest && name == Some(format!("v{added}")),
                "a reader saw transactions out of commit order: {name:?}, {added} tasks added \
                 (highest {highest})"
            );
            seen.extend(name);
            if done_rx.try_recv().is_ok() {
                return seen.len();
            }
            tokio::task::yield_now().await;
        }
    });
    let started = tokio::time::Instant::now();
    for n in 1..=40 {
        adapter
            .execute(&format!(
                "BEGIN; UPDATE people SET name = 'v{n}' WHERE id = 1; \
                 UPDATE tasks SET title = 'v{n}' WHERE id = 10; \
                 INSERT INTO tasks VALUES ({}, 'added', 1); COMMIT;",
                100 + n
            ))
            .await;
    }
    wait_for(&store.store, ("v40", "v40")).await;
    // 40 transactions spread over three partitions: without the adapter's chain
    // (`sequence[0]` naming the END taken last) most would wait the settle second.
    eprintln!("40 transactions visible after {:?}", started.elapsed());
    let _ = done_tx.send(());
    let distinct = reader
        .await
        .expect("the reader never saw half a transaction nor one out of commit order");
    assert!(distinct > 1, "the reader saw the views move");
    handle.stop().await.unwrap();
    adapter.stop().await;
}
