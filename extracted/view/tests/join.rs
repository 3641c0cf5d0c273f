//! The stream-table join against the real broker, in both stores: a tasks view showing each
//! assignee's display name from a people view. A task that arrives before its person shows no
//! name, then the name once the person arrives; a rename changes every task of the person at
//! once (a reader never sees some renamed and some not); a reassignment shows the new person;
//! a deleted person's tasks show no name; a stale rename changes nothing.

mod support;

use std::time::{Duration, Instant};

use ficus_testkit::kafka;
use ficus_view::{ColumnType, ConsumerConfig, Join, Store, ViewSpec};
use serde_json::json;

use support::{Kind, TestStore, produce, producer, row_change};

type Record = (Option<String>, Option<String>);

fn people(topic: &str) -> ViewSpec {
    ViewSpec::new("people", topic)
        .key("id", ColumnType::BigInt)
        .column("display_name", ColumnType::Text)
}

fn tasks(topic: &str, people: &ViewSpec) -> ViewSpec {
    ViewSpec::new("tasks", topic)
        .key("id", ColumnType::BigInt)
        .column("title", ColumnType::Text)
        .column("assignee_id", ColumnType::BigInt)
        .join(
            Join::to(people)
                .on(["assignee_id"])
                .take("display_name", "assignee_name"),
        )
}

fn person(op: &str, id: i64, name: &str, lsn: u64) -> Record {
    row_change(
        "people",
        op,
        json!({"id": id}),
        json!({"id": id, "display_name": name}),
        Some(lsn),
        lsn,
    )
}

fn task(op: &str, id: i64, assignee: Option<i64>, lsn: u64) -> Record {
    row_change(
        "tasks",
        op,
        json!({"id": id}),
        json!({"id": id, "title": format!("task {id}"), "assignee_id": assignee}),
        Some(lsn),
        lsn,
    )
}

fn tombstone(id: i64) -> Record {
    (Some(json!({"id": id}).to_string()), None)
}

/// `(task id, assignee id, assignee name)` from the joined relation, by task id.
type Shown = Vec<(i64, Option<i64>, Option<String>)>;

async fn shown(store: &Store, relation: &str) -> Shown {
    let sql = format!("SELECT id, assignee_id, assignee_name FROM {relation} ORDER BY id");
    match store {
        Store::Sqlite(pool) => sqlx::query_as(&sql).fetch_all(pool).await.unwrap(),
        Store::Postgres(pool) => sqlx::query_as(&sql).fetch_all(pool).await.unwrap(),
    }
}

fn row(id: i64, assignee: Option<i64>, name: Option<&str>) -> (i64, Option<i64>, Option<String>) {
    (id, assignee, name.map(str::to_owned))
}

/// Waits until the joined relation shows `expected` (the views apply asynchronously).
async fn until_shown(store: &Store, relation: &str, expected: &Shown, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = shown(store, relation).await;
        if &now == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: shown {now:?}, expected {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn tasks_show_their_assignee_name(kind: Kind) {
    ficus_testkit::init_tracing();
    let people_topic = kafka::unique_topic("view-join-people");
    let tasks_topic = kafka::unique_topic("view-join-tasks");
    kafka::create_topic(&people_topic, 2).await.unwrap();
    kafka::create_topic(&tasks_topic, 3).await.unwrap();
    let producer = producer();
    let store = TestStore::new(kind).await;
    let people = people(&people_topic);
    let tasks = tasks(&tasks_topic, &people);
    let relation = tasks.relation();

    // The enriched view starts first: the people table it joins is created with it.
    let tasks_view = ficus_view::start(
        store.store.clone(),
        tasks.clone(),
        ConsumerConfig::new(kafka::brokers()),
    )
    .await
    .unwrap();

    // Order of arrival: a task naming a person the people view has not seen.
    produce(&producer, &tasks_topic, &[task("c", 10, Some(1), 100)]).await;
    until_shown(
        &store.store,
        &relation,
        &vec![row(10, Some(1), None)],
        "task before its person",
    )
    .await;

    let people_view = ficus_view::start(
        store.store.clone(),
        people.clone(),
        ConsumerConfig::new(kafka::brokers()),
    )
    .await
    .unwrap();
    produce(
        &producer,
        &people_topic,
        &[person("c", 1, "Ada", 50), person("c", 2, "Bob", 60)],
    )
    .await;
    // The person arrived: the task shows the name with no event of its own.
    until_shown(
        &store.store,
        &relation,
        &vec![row(10, Some(1), Some("Ada"))],
        "the person arrived",
    )
    .await;

    produce(
        &producer,
        &tasks_topic,
        &[
            task("c", 11, Some(1), 110),
            task("c", 12, Some(2), 120),
            task("c", 13, None, 130),
        ],
    )
    .await;
    until_shown(
        &store.store,
        &relation,
        &vec![
            row(10, Some(1), Some("Ada")),
            row(11, Some(1), Some("Ada")),
            row(12, Some(2), Some("Bob")),
            row(13, None, None),
        ],
        "tasks created",
    )
    .await;

    // A rename: every task of the person changes.
    produce(&producer, &people_topic, &[person("u", 1, "Ada L.", 200)]).await;
    until_shown(
        &store.store,
        &relation,
        &vec![
            row(10, Some(1), Some("Ada L.")),
            row(11, Some(1), Some("Ada L.")),
            row(12, Some(2), Some("Bob")),
            row(13, None, None),
        ],
        "person renamed",
    )
    .await;

    // A reassignment.
    produce(&producer, &tasks_topic, &[task("u", 11, Some(2), 210)]).await;
    until_shown(
        &store.store,
        &relation,
        &vec![
            row(10, Some(1), Some("Ada L.")),
            row(11, Some(2), Some("Bob")),
            row(12, Some(2), Some("Bob")),
            row(13, None, None),
        ],
        "task reassigned",
    )
    .await;

    // The person is deleted: their tasks show no name, before and after the tasks' own
    // updates (the monolith's ON DELETE SET NULL) arrive.
    produce(
        &producer,
        &people_topic,
        &[person("d", 2, "", 300), tombstone(2)],
    )
    .await;
    until_shown(
        &store.store,
        &relation,
        &vec![
            row(10, Some(1), Some("Ada L.")),
            row(11, Some(2), None),
            row(12, Some(2), None),
            row(13, None, None),
        ],
        "person deleted",
    )
    .await;
    produce(
        &producer,
        &tasks_topic,
        &[task("u", 11, None, 301), task("u", 12, None, 302)],
    )
    .await;
    // A stale rename of person 1 (older than the rename applied) changes nothing.
    produce(
        &producer,
        &people_topic,
        &[person("u", 1, "Ada (old)", 150)],
    )
    .await;
    let expected = vec![
        row(10, Some(1), Some("Ada L.")),
        row(11, None, None),
        row(12, None, None),
        row(13, None, None),
    ];
    until_shown(&store.store, &relation, &expected, "assignees cleared").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while people_view.status.report().consumed < 6 {
        assert!(
            Instant::now() < deadline,
            "the stale rename was not consumed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(people_view.status.report().stale, 1, "{kind:?}");
    assert_eq!(shown(&store.store, &relation).await, expected, "{kind:?}");

    tasks_view.stop().await.unwrap();
    people_view.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_show_their_assignee_name_in_sqlite() {
    tasks_show_their_assignee_name(Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_show_their_assignee_name_in_postgres() {
    tasks_show_their_assignee_name(Kind::Postgres).await;
}

/// A rename is visible on all of a person's tasks at once: a reader polling during the rename
/// never sees some tasks renamed and others not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rename_shows_on_every_task_at_once() {
    ficus_testkit::init_tracing();
    const TASKS: i64 = 300;
    let people_topic = kafka::unique_topic("view-join-people");
    let tasks_topic = kafka::unique_topic("view-join-tasks");
    kafka::create_topic(&people_topic, 1).await.unwrap();
    kafka::create_topic(&tasks_topic, 3).await.unwrap();
    let producer = producer();
    let mut records = vec![person("c", 1, "Ada", 1)];
    produce(&producer, &people_topic, &records).await;
    let tasks_records: Vec<Record> = (0..TASKS)
        .map(|i| task("c", i, Some(1), 10 + i as u64))
        .collect();
    produce(&producer, &tasks_topic, &tasks_records).await;

    let store = TestStore::new(Kind::Postgres).await;
    let people = people(&people_topic);
    let tasks = tasks(&tasks_topic, &people);
    let relation = tasks.relation();
    let people_view = ficus_view::start(
        store.store.clone(),
        people.clone(),
        ConsumerConfig::new(kafka::brokers()),
    )
    .await
    .unwrap();
    let tasks_view = ficus_view::start(
        store.store.clone(),
        tasks.clone(),
        ConsumerConfig::new(kafka::brokers()),
    )
    .await
    .unwrap();
    assert!(people_view.status.wait_ready(Duration::from_secs(60)).await);
    assert!(tasks_view.status.wait_ready(Duration::from_secs(60)).await);

    // Renames 1..=20 while a reader looks.
    records.clear();
    for n in 1..=20u64 {
        records.push(person("u", 1, &format!("Ada {n}"), 1_000 + n));
    }
    let reader = {
        let store = store.store.clone();
        let relation = relation.clone();
        tokio::spawn(async move {
            let mut reads = 0;
            loop {
                let rows = shown(&store, &relation).await;
                assert_eq!(rows.len() as i64, TASKS);
                let names: std::collections::BTreeSet<_> =
                    rows.iter().map(|(_, _, name)| name.clone()).collect();
                assert_eq!(
                    names.len(),
                    1,
                    "a reader saw a rename half applied: {names:?}"
                );
                reads += 1;
                if names.contains(&Some("Ada 20".to_owned())) {
                    return reads;
                }
            }
        })
    };
    for record in &records {
        produce(&producer, &people_topic, std::slice::from_ref(record)).await;
    }
    let reads = tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .expect("the last rename became visible")
        .expect("the reader saw every task with the same name");
    assert!(
        reads > 1,
        "the reader looked during the renames ({reads} reads)"
    );
    tasks_view.stop().await.unwrap();
    people_view.stop().await.unwrap();
}

/// A join's declaration is checked with the view's: every problem with its dotted key.
#[test]
fn join_declarations_name_every_problem() {
    let people = people("p");
    let error = ViewSpec::new("tasks", "t")
        .key("id", ColumnType::BigInt)
        .column("assignee_id", ColumnType::Text)
        .join(
            Join::to(&people)
                .on(["assignee_id", "extra"])
                .take("nickname", "id"),
        )
        .join(Join::to(&people).on(["missing"]))
        .validate()
        .unwrap_err()
        .to_string();
    for part in [
        "joins[0].on: view \"people\" has 1 key column(s), got 2",
        "joins[0].on[0]: \"assignee_id\" is Text",
        "joins[0].take[0].column: \"nickname\"",
        "joins[0].take[0].name: \"id\" is already a column",
        "joins[1].on[0]: \"missing\" is not a column",
        "joins[1].take: at least one column",
    ] {
        assert!(error.contains(part), "{part} missing from {error}");
    }
}
