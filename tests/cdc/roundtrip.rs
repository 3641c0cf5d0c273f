//! Changes in, Debezium events out: every mapped type, updates, deletes with tombstones,
//! truncate, unchanged TOAST, a schema change, transactions in commit order, tables without a
//! primary key, outboxes.

use std::time::Duration;

use serde_json::{Value, json};
use sqlx::{Connection, Executor};

use crate::support::CdcTest;

const WAIT: Duration = Duration::from_secs(60);

const EVERYTHING: &str = r#"
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN positive AS integer CHECK (VALUE > 0);
CREATE TABLE everything (
    id     bigint PRIMARY KEY,
    b      boolean,
    i2     smallint,
    i4     integer,
    i8     bigint,
    f4     real,
    f8     double precision,
    num    numeric(30, 6),
    txt    text,
    vc     varchar(20),
    ch     char(3),
    u      uuid,
    j      json,
    jb     jsonb,
    by     bytea,
    d      date,
    t      time,
    t3     time(3),
    ttz    timetz,
    ts     timestamp,
    ts3    timestamp(3),
    tstz   timestamptz,
    iv     interval,
    m      mood,
    ia     integer[],
    ta     text[],
    ma     mood[],
    tsa    timestamptz[],
    dom    positive,
    ip     inet,
    cash   money,
    nan    double precision
);
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mapped_type_inserts_updates_deletes_and_truncates() {
    let mut test = CdcTest::new(EVERYTHING).await;
    // Truncates are skipped by default (Debezium's skipped.operations=t).
    test.set("DEBEZIUM__SKIPPED_OPERATIONS", "none");
    // Exact strings for numeric and money (Debezium's default, precise, is checked against
    // Debezium itself in conformance.rs).
    test.set("DEBEZIUM__DECIMAL_HANDLING_MODE", "string");
    let adapter = test.start_streaming().await;
    let mut conn = test.connect().await;
    conn.execute(
        r#"INSERT INTO everything VALUES (
            1, true, -2, 40000, 9007199254740993, 1.5, 2.25, 12345678901234567890.123456,
            'héllo "q" \ and tab	', 'vc', 'ab', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
            '{"a": [1, 2]}', '{"b": {"c": null}}', '\x00ff',
            '2024-02-29', '13:14:15.123456', '13:14:15.123', '10:00:00+02',
            '2024-02-29 13:14:15.123456', '2024-02-29 13:14:15.123',
            '2024-02-29 13:14:15.123456+02', '1 year 2 mons 3 days 04:05:06.5',
            'happy', '{1,NULL,3}', '{"x y",z,"quo\"te"}', '{sad,ok}',
            '{"2024-01-01 00:00:00+00",NULL}', 7, '10.0.0.1', 12.34, 'NaN')"#,
    )
    .await
    .unwrap();
    conn.execute("UPDATE everything SET txt = 'changed', ia = '{}', jb = NULL WHERE id = 1")
        .await
        .unwrap();
    conn.execute("INSERT INTO everything (id, d, ts, tstz) VALUES (2, '0044-03-15 BC', 'infinity', '-infinity')")
        .await
        .unwrap();
    conn.execute("DELETE FROM everything WHERE id = 1")
        .await
        .unwrap();
    conn.execute("TRUNCATE everything").await.unwrap();

    let topic = test.topic("everything");
    let messages = test.wait_messages(&topic, WAIT, |m| m.len() >= 6).await;
    let ops: Vec<String> = messages.iter().map(|m| m.op()).collect();
    assert_eq!(ops, ["c", "u", "c", "d", "tombstone", "t"], "{messages:#?}");

    let created = messages[0].json();
    assert_eq!(messages[0].key_json(), json!({"id": 1}));
    let after = &created["after"];
    let expected = json!({
        "id": 1,
        "b": true,
        "i2": -2,
        "i4": 40000,
        "i8": 9007199254740993_i64,
        "f4": 1.5,
        "f8": 2.25,
        "num": "12345678901234567890.123456",
        "txt": "héllo \"q\" \\ and tab\t",
        "vc": "vc",
        "ch": "ab ",
        "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "j": "{\"a\": [1, 2]}",
        "jb": "{\"b\": {\"c\": null}}",
        "by": "AP8=",
        "d": 19782,
        "t": 47_655_123_456_i64,
        "t3": 47_655_123,
        "ttz": "08:00:00Z",
        "ts": 1_709_212_455_123_456_i64,
        "ts3": 1_709_212_455_123_i64,
        "tstz": "2024-02-29T11:14:15.123456Z",
        "iv": 37_091_106_500_000_i64,
        "m": "happy",
        "ia": [1, null, 3],
        "ta": ["x y", "z", "quo\"te"],
        "ma": ["sad", "ok"],
        "tsa": ["2024-01-01T00:00:00.000000Z", null],
        "dom": 7,
        "ip": "10.0.0.1",
        "cash": "12.34",
        "nan": "NaN"
    });
    assert_eq!(after, &expected);
    assert_eq!(created["before"], Value::Null);
    let source = &created["source"];
    assert_eq!(source["connector"], "postgresql");
    assert_eq!(source["name"], test.prefix.as_str());
    assert_eq!(source["db"], test.db_name.as_str());
    assert_eq!(source["schema"], "public");
    assert_eq!(source["table"], "everything");
    assert_eq!(source["snapshot"], "false");
    assert!(source["txId"].as_i64().unwrap() > 0);
    assert!(source["lsn"].as_i64().unwrap() > 0);
    assert!(source["ts_ms"].as_i64().unwrap() > 1_700_000_000_000);
    assert!(created["ts_ms"].as_i64().unwrap() >= source["ts_ms"].as_i64().unwrap());

    let updated = messages[1].json();
    assert_eq!(updated["after"]["txt"], "changed");
    assert_eq!(updated["after"]["ia"], json!([]));
    assert_eq!(updated["after"]["jb"], Value::Null);
    assert_eq!(updated["after"]["num"], "12345678901234567890.123456");
    assert_eq!(
        updated["before"],
        Value::Null,
        "REPLICA IDENTITY DEFAULT has no before"
    );
    assert!(
        updated["source"]["lsn"].as_i64() > created["source"]["lsn"].as_i64(),
        "LSNs grow"
    );

    let second = messages[2].json();
    assert_eq!(second["after"]["d"], -735_160);
    // Debezium 3.6's sentinel for +infinity (JDBC's, in microseconds).
    assert_eq!(second["after"]["ts"], 9_223_372_036_825_200_000_i64);
    assert_eq!(second["after"]["tstz"], "-infinity");

    let deleted = messages[3].json();
    assert_eq!(messages[3].key_json(), json!({"id": 1}));
    assert_eq!(deleted["after"], Value::Null);
    assert_eq!(deleted["before"]["id"], 1);
    assert_eq!(messages[4].key_json(), json!({"id": 1}));
    assert!(messages[4].value.is_none(), "a tombstone has no value");

    let truncated = messages[5].json();
    assert!(messages[5].key.is_none());
    assert_eq!(truncated["before"], Value::Null);
    assert_eq!(truncated["after"], Value::Null);

    let metrics = adapter.metrics_text().await;
    assert!(
        metrics.contains("ficus_cdc_events_total{table=\"public.everything\",op=\"c\"} 2"),
        "{metrics}"
    );
    adapter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_toast_values_get_the_placeholder_unless_replica_identity_is_full() {
    let test = CdcTest::new(
        "CREATE TABLE toasty (id int PRIMARY KEY, big text, small int);
         ALTER TABLE toasty ALTER COLUMN big SET STORAGE EXTERNAL;
         CREATE TABLE toasty_full (id int PRIMARY KEY, big text, small int);
         ALTER TABLE toasty_full ALTER COLUMN big SET STORAGE EXTERNAL;
         ALTER TABLE toasty_full REPLICA IDENTITY FULL;",
    )
    .await;
    let adapter = test.start_streaming().await;
    let big = "x".repeat(20_000);
    for table in ["toasty", "toasty_full"] {
        sqlx::query(&format!("INSERT INTO {table} VALUES (1, $1, 1)"))
            .bind(&big)
            .execute(&test.pool)
            .await
            .unwrap();
        sqlx::query(&format!("UPDATE {table} SET small = 2 WHERE id = 1"))
            .execute(&test.pool)
            .await
            .unwrap();
    }
    let plain = test
        .wait_messages(&test.topic("toasty"), WAIT, |m| m.len() >= 2)
        .await;
    assert_eq!(
        plain[0].json()["after"]["big"].as_str().unwrap().len(),
        20_000
    );
    let update = plain[1].json();
    assert_eq!(update["after"]["small"], 2);
    assert_eq!(update["after"]["big"], "__debezium_unavailable_value");

    let full = test
        .wait_messages(&test.topic("toasty_full"), WAIT, |m| m.len() >= 2)
        .await;
    let update = full[1].json();
    assert_eq!(update["after"]["small"], 2);
    assert_eq!(update["after"]["big"].as_str().unwrap(), big);
    assert_eq!(update["before"]["small"], 1);
    assert_eq!(update["before"]["big"].as_str().unwrap(), big);
    adapter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn added_and_dropped_columns_are_picked_up_without_a_restart() {
    let test = CdcTest::new("CREATE TABLE evolving (id int PRIMARY KEY, a text);").await;
    let adapter = test.start_streaming().await;
    let mut conn = test.connect().await;
    for sql in [
        "INSERT INTO evolving VALUES (1, 'one')",
        "ALTER TABLE evolving ADD COLUMN b int DEFAULT 5",
        "INSERT INTO evolving VALUES (2, 'two', 6)",
        "UPDATE evolving SET b = 7 WHERE id = 1",
        "ALTER TABLE evolving DROP COLUMN a",
        "INSERT INTO evolving VALUES (3, 8)",
        "ALTER TABLE evolving ALTER COLUMN b TYPE text",
        "INSERT INTO evolving VALUES (4, 'nine')",
    ] {
        conn.execute(sql).await.unwrap();
    }
    let messages = test
        .wait_messages(&test.topic("evolving"), WAIT, |m| m.len() >= 5)
        .await;
    let afters: Vec<Value> = messages.iter().map(|m| m.json()["after"].clone()).collect();
    assert_eq!(
        afters,
        vec![
            json!({"id": 1, "a": "one"}),
            json!({"id": 2, "a": "two", "b": 6}),
            json!({"id": 1, "a": "one", "b": 7}),
            json!({"id": 3, "b": 8}),
            json!({"id": 4, "b": "nine"}),
        ]
    );
    assert!(adapter.is_running());
    adapter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_arrive_in_commit_order_with_their_statements_in_order() {
    let mut test = CdcTest::new("CREATE TABLE ordered (id int PRIMARY KEY, label text);").await;
    // Debezium's default, off in most tests (see support.rs): checked here on a few records.
    test.set("DEBEZIUM__EXTENDED_HEADERS_ENABLED", true);
    let adapter = test.start_streaming().await;
    let mut first = test.connect().await;
    let mut second = test.connect().await;
    // The first transaction starts first and commits last.
    let mut a = first.begin().await.unwrap();
    a.execute("INSERT INTO ordered VALUES (1, 'a1')")
        .await
        .unwrap();
    let mut b = second.begin().await.unwrap();
    b.execute("INSERT INTO ordered VALUES (2, 'b1')")
        .await
        .unwrap();
    b.execute("UPDATE ordered SET label = 'b2' WHERE id = 2")
        .await
        .unwrap();
    b.execute("INSERT INTO ordered VALUES (3, 'b3')")
        .await
        .unwrap();
    b.commit().await.unwrap();
    a.execute("INSERT INTO ordered VALUES (4, 'a2')")
        .await
        .unwrap();
    a.execute("DELETE FROM ordered WHERE id = 3").await.unwrap();
    a.commit().await.unwrap();

    let messages = test
        .wait_messages(&test.topic("ordered"), WAIT, |m| m.len() >= 7)
        .await;
    let seen: Vec<(String, i64)> = messages
        .iter()
        .map(|m| (m.op(), m.key_json()["id"].as_i64().unwrap()))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("c".to_owned(), 2),
            ("u".to_owned(), 2),
            ("c".to_owned(), 3),
            ("c".to_owned(), 1),
            ("c".to_owned(), 4),
            ("d".to_owned(), 3),
            ("tombstone".to_owned(), 3),
        ]
    );
    let tx = |i: usize| messages[i].json()["source"]["txId"].as_i64().unwrap();
    assert_eq!(tx(0), tx(1));
    assert_eq!(tx(1), tx(2));
    assert_eq!(tx(3), tx(4));
    assert_eq!(tx(4), tx(5));
    assert_ne!(tx(0), tx(3));
    // Debezium's sequence: the second transaction names the first one's commit.
    let sequence: Vec<Option<String>> =
        serde_json::from_str(messages[3].json()["source"]["sequence"].as_str().unwrap()).unwrap();
    assert!(sequence[0].is_some());
    // Debezium's context headers on every record, values as JSON strings, one run id.
    let runs: std::collections::HashSet<Vec<u8>> = messages
        .iter()
        .map(|m| {
            let header = |name: &str| {
                m.headers
                    .iter()
                    .find(|(k, _)| k == &format!("__debezium.context.{name}"))
                    .map(|(_, v)| {
                        // Schema-wrapped by default (`header.converter.schemas.enable`).
                        let value = serde_json::from_slice(v).expect("a JSON header");
                        serde_json::to_vec(&ficus_testkit::kafka::payload(value)).unwrap()
                    })
                    .unwrap_or_else(|| panic!("no context header {name} on {m:?}"))
            };
            assert_eq!(
                header("connectorLogicalName"),
                format!("\"{}\"", test.prefix).into_bytes()
            );
            assert_eq!(header("connectorName"), b"\"postgresql\"");
            assert_eq!(header("taskId"), b"\"0\"");
            header("runId")
        })
        .collect();
    assert_eq!(runs.len(), 1);
    adapter.stop().await;
}

/// With `provide.transaction.metadata`, `<prefix>.transaction` exists from the start, like the
/// tables' topics (made at the snapshot), before any transaction was written: a consumer that
/// applies whole transactions subscribes to both and never waits on a missing topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_transaction_topic_exists_from_the_start() {
    let mut test = CdcTest::new("CREATE TABLE quiet (id int PRIMARY KEY);").await;
    test.set("DEBEZIUM__PROVIDE_TRANSACTION_METADATA", true);
    test.set("KAFKA__TOPIC_PARTITIONS", 3);
    let transaction_topic = format!("{}.transaction", test.prefix);
    assert_eq!(
        ficus_testkit::kafka::topic_partitions(&test.brokers, &transaction_topic),
        None,
        "a fresh prefix"
    );
    let adapter = test.start_streaming().await;
    assert_eq!(
        ficus_testkit::kafka::topic_partitions(&test.brokers, &test.topic("quiet")),
        Some(3),
        "the table's topic, made at the snapshot"
    );
    assert_eq!(
        ficus_testkit::kafka::topic_partitions(&test.brokers, &transaction_topic),
        Some(3),
        "the transaction topic before any transaction"
    );
    assert!(test.messages(&transaction_topic).await.is_empty());
    // The first transaction's records go to the topic made at start.
    sqlx::query("INSERT INTO quiet VALUES (1)")
        .execute(&test.pool)
        .await
        .unwrap();
    let records = test
        .wait_messages(&transaction_topic, WAIT, |m| m.len() >= 2)
        .await;
    // BEGIN and END are keyed by their own ids (`<xid>:<lsn>`, the LSNs differ, as
    // Debezium's do), so they may land in different partitions: no order between them.
    let mut statuses: Vec<String> = records
        .iter()
        .map(|m| m.json()["status"].as_str().unwrap().to_owned())
        .collect();
    statuses.sort();
    assert_eq!(statuses, ["BEGIN", "END"]);
    adapter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_without_a_primary_key_are_keyed_null() {
    let test = CdcTest::new(
        "CREATE TABLE keyless (a int, b text);
         ALTER TABLE keyless REPLICA IDENTITY FULL;",
    )
    .await;
    let adapter = test.start_streaming().await;
    let mut conn = test.connect().await;
    conn.execute("INSERT INTO keyless VALUES (1, 'x')")
        .await
        .unwrap();
    conn.execute("UPDATE keyless SET b = 'y'").await.unwrap();
    conn.execute("DELETE FROM keyless").await.unwrap();
    let messages = test
        .wait_messages(&test.topic("keyless"), WAIT, |m| m.len() >= 3)
        .await;
    assert!(messages.iter().all(|m| m.key.is_none()));
    let ops: Vec<String> = messages.iter().map(|m| m.op()).collect();
    assert_eq!(ops[..3], ["c", "u", "d"]);
    assert_eq!(messages[1].json()["before"], json!({"a": 1, "b": "x"}));
    assert_eq!(messages[1].json()["after"], json!({"a": 1, "b": "y"}));
    adapter.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_rows_are_routed_by_their_columns() {
    let mut test = CdcTest::new("CREATE TABLE orders (id int PRIMARY KEY, total int);").await;
    let outbox_prefix = format!("{}.outbox.", test.prefix);
    test.with_file(&format!(
        "[[outbox]]\ntable = \"_ficus.outbox\"\ntopic_prefix = \"{outbox_prefix}\"\n"
    ));
    let adapter = test.start_streaming().await;
    // The transactional outbox: state and message in one transaction; the row may be deleted
    // at once, its insert is in the WAL all the same.
    let mut conn = test.connect().await;
    let mut tx = conn.begin().await.unwrap();
    tx.execute("INSERT INTO orders VALUES (17, 300)")
        .await
        .unwrap();
    tx.execute(
        "INSERT INTO _ficus.outbox (id, aggregatetype, aggregateid, type, payload) \
         VALUES ('7c4f4e51-1c52-4b8a-9b59-0c4c3b2d2a01', 'order', '17', 'OrderPlaced', '{\"total\": 300}')",
    )
    .await
    .unwrap();
    tx.execute("DELETE FROM _ficus.outbox").await.unwrap();
    tx.commit().await.unwrap();

    let topic = format!("{outbox_prefix}order");
    let messages = test.wait_messages(&topic, WAIT, |m| !m.is_empty()).await;
    assert_eq!(messages.len(), 1, "deletes of the outbox are not messages");
    assert_eq!(messages[0].key.as_deref(), Some(b"17".as_slice()));
    assert_eq!(messages[0].json(), json!({"total": 300}));
    let headers: Vec<(String, String)> = messages[0]
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
        .collect();
    assert_eq!(
        headers,
        vec![
            (
                "id".to_owned(),
                "7c4f4e51-1c52-4b8a-9b59-0c4c3b2d2a01".to_owned()
            ),
            ("type".to_owned(), "OrderPlaced".to_owned()),
        ]
    );
    // The state change went to its own topic, as usual.
    test.wait_messages(&test.topic("orders"), WAIT, |m| m.len() == 1)
        .await;
    adapter.stop().await;
}

/// Debezium's `schema.exclude.list`, `table.exclude.list` and `column.exclude.list` (regular
/// expressions, whole names, case-insensitive): a table of an excluded schema or an excluded
/// table is neither snapshotted nor streamed, an excluded column is in neither `before` nor
/// `after`, the key keeps its columns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_table_and_column_lists_choose_what_is_captured() {
    let mut test = CdcTest::new(
        "CREATE TABLE kept (id int PRIMARY KEY, v text, secret text);
         ALTER TABLE kept REPLICA IDENTITY FULL;
         CREATE TABLE dropped (id int PRIMARY KEY, v text);
         CREATE TABLE dropped_too (id int PRIMARY KEY, v text);
         CREATE SCHEMA audit;
         CREATE TABLE audit.kept (id int PRIMARY KEY, v text);
         INSERT INTO kept VALUES (1, 'snapshot', 's1');
         INSERT INTO dropped VALUES (1, 'snapshot');
         INSERT INTO audit.kept VALUES (1, 'snapshot');",
    )
    .await;
    test.set("DEBEZIUM__SCHEMA_EXCLUDE_LIST", "AUDIT");
    test.set("DEBEZIUM__TABLE_EXCLUDE_LIST", r"public\.drop.*");
    test.set(
        "DEBEZIUM__COLUMN_EXCLUDE_LIST",
        "PUBLIC.KEPT.secret,public.kept.id",
    );
    let adapter = test.start_streaming().await;
    let mut conn = test.connect().await;
    for statement in [
        "INSERT INTO dropped VALUES (2, 'streamed')",
        "INSERT INTO dropped_too VALUES (1, 'streamed')",
        "INSERT INTO audit.kept VALUES (2, 'streamed')",
        "INSERT INTO kept VALUES (2, 'streamed', 's2')",
        "UPDATE kept SET v = 'updated', secret = 's3' WHERE id = 2",
    ] {
        conn.execute(statement).await.unwrap();
    }
    let messages = test
        .wait_messages(&test.topic("kept"), WAIT, |m| m.len() >= 3)
        .await;
    let values: Vec<Value> = messages.iter().map(|m| m.json()).collect();
    assert_eq!(values[0]["op"], "r");
    assert_eq!(values[0]["after"], json!({"v": "snapshot"}));
    assert_eq!(values[1]["after"], json!({"v": "streamed"}));
    assert_eq!(values[2]["before"], json!({"v": "streamed"}));
    assert_eq!(values[2]["after"], json!({"v": "updated"}));
    assert_eq!(messages[2].key_json(), json!({"id": 2}));
    test.wait_caught_up(WAIT).await;
    assert!(test.messages(&test.topic("dropped")).await.is_empty());
    assert!(test.messages(&test.topic("dropped_too")).await.is_empty());
    assert!(
        test.messages(&format!("{}.audit.kept", test.prefix))
            .await
            .is_empty()
    );
    adapter.stop().await;
}

/// Logical decoding messages go to `<prefix>.message`, chosen by Debezium's
/// `message.prefix.exclude.list` (their shape is compared with Debezium's in conformance.rs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logical_decoding_messages_are_chosen_by_prefix() {
    let mut test = CdcTest::new("").await;
    test.set("DEBEZIUM__MESSAGE_PREFIX_EXCLUDE_LIST", "internal.*");
    let adapter = test.start_streaming().await;
    let mut conn = test.connect().await;
    for statement in [
        "SELECT pg_logical_emit_message(false, 'internal-x', 'skipped')",
        "SELECT pg_logical_emit_message(false, 'audit', 'kept')",
        "BEGIN; SELECT pg_logical_emit_message(true, 'Internal', 'skipped too'); \
         SELECT pg_logical_emit_message(true, 'audit', 'kept too'); COMMIT",
    ] {
        sqlx::raw_sql(statement).execute(&mut conn).await.unwrap();
    }
    test.wait_caught_up(WAIT).await;
    let messages = test.messages(&format!("{}.message", test.prefix)).await;
    let seen: Vec<(Value, Value, Value)> = messages
        .iter()
        .map(|m| {
            let v = m.json();
            (m.key_json(), v["op"].clone(), v["message"].clone())
        })
        .collect();
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    assert_eq!(
        seen,
        vec![
            (
                json!({"prefix": "audit"}),
                json!("m"),
                json!({"prefix": "audit", "content": b64("kept")})
            ),
            (
                json!({"prefix": "audit"}),
                json!("m"),
                json!({"prefix": "audit", "content": b64("kept too")})
            ),
        ]
    );
    assert!(messages[0].json()["source"]["txId"].is_null());
    assert!(messages[1].json()["source"]["txId"].is_i64());
    adapter.stop().await;
}
