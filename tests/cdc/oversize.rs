//! A record the broker will never take never stalls capture in silence. A 2 MB text value
//! (over the producer's `message.max.bytes`, 1000000) through the real adapter and broker:
//! under `errors.tolerance = "none"` capture stops, and `/healthz`, `ficus cdc status` and
//! `ficus_cdc_refused_record_bytes` name the table, key and size, with no restart loop; under
//! `"all"` the record goes to the dead-letter topic, a placeholder takes its place, and later
//! changes in every table arrive. A topic's own `max.message.bytes`, as the broker describes
//! it, is the limit when it is lower.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;

use crate::support::{CdcTest, Msg, metric_sum, wait_unhealthy};

const TABLES: &str = "CREATE TABLE t (id bigint PRIMARY KEY, note text NOT NULL);
                      CREATE TABLE other (id bigint PRIMARY KEY, n bigint NOT NULL);";

/// 2 MB of text that PostgreSQL compresses well in its TOAST table, not in the event.
const BIG: &str = "SELECT string_agg(md5(g::text), '') FROM generate_series(1, 65536) g";

fn header<'a>(message: &'a Msg, name: &str) -> Option<&'a str> {
    message
        .headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| std::str::from_utf8(v).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_over_the_limit_fails_loudly_under_tolerance_none() {
    let test = CdcTest::new(TABLES).await;
    let adapter = test.start_streaming().await;
    sqlx::query("INSERT INTO t VALUES (1, 'small')")
        .execute(&test.pool)
        .await
        .unwrap();
    sqlx::query(&format!("INSERT INTO t VALUES (7, ({BIG}))"))
        .execute(&test.pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO other VALUES (1, 1)")
        .execute(&test.pool)
        .await
        .unwrap();

    let body = wait_unhealthy(adapter.metrics_addr, Duration::from_secs(60)).await;
    assert_eq!(body["class"], "never", "{body}");
    assert_eq!(body["cause"], "record_too_large", "{body}");
    assert_eq!(body["record"]["table"], "public.t", "{body}");
    let key = ficus_testkit::kafka::payload(
        serde_json::from_str(body["record"]["key"].as_str().unwrap()).unwrap(),
    );
    assert_eq!(key, serde_json::json!({"id": 7}), "{body}");
    let size = body["record"]["size"].as_u64().unwrap();
    assert!(size > 2_000_000, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("over the limit of 1000000 bytes"),
        "the limit is named: {error}"
    );

    tokio::time::sleep(Duration::from_secs(5)).await;
    let metrics = adapter.metrics_text().await;
    assert_eq!(
        metric_sum(
            &metrics,
            "ficus_cdc_refused_record_bytes",
            &[
                "table=\"public.t\"",
                "key=\"{\\\"id\\\":7}\"",
                "cause=\"record_too_large\""
            ]
        ),
        size as f64,
        "{metrics}"
    );
    assert_eq!(
        metric_sum(&metrics, "ficus_cdc_restarts_total", &[]),
        0.0,
        "no restart loop:\n{metrics}"
    );
    let (text, ok) = test.status_cli(adapter.metrics_addr, false);
    assert!(ok, "{text}");
    assert!(
        text.contains("adapter: FAILED")
            && text.contains(&format!(
                "refused record: table public.t key {{\"id\":7}} size {size} bytes"
            )),
        "{text}"
    );
    // Nothing after the refused record is confirmed or sent: it waits for the operator.
    assert!(test.messages(&test.topic("other")).await.is_empty());
    let error = adapter.stop_result().await.unwrap_err();
    assert_eq!(error.classify().cause, "record_too_large");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_over_the_limit_is_dead_lettered_under_tolerance_all() {
    let mut test = CdcTest::new(TABLES).await;
    test.set("ERRORS__TOLERANCE", "all");
    let dlq = format!("{}.dlq", test.prefix);
    test.set("ERRORS__DEADLETTERQUEUE_TOPIC_NAME", &dlq);
    let adapter = test.start_streaming().await;
    sqlx::query("INSERT INTO t VALUES (1, 'small')")
        .execute(&test.pool)
        .await
        .unwrap();
    sqlx::query(&format!("INSERT INTO t VALUES (7, ({BIG}))"))
        .execute(&test.pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO other VALUES (1, 1)")
        .execute(&test.pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO t VALUES (8, 'after the big one')")
        .execute(&test.pool)
        .await
        .unwrap();
    test.wait_caught_up(Duration::from_secs(60)).await;

    let events = test.messages(&test.topic("t")).await;
    let ids: Vec<i64> = events
        .iter()
        .map(|m| m.key_json()["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![1, 7, 8], "every change of t, in order");
    let placeholder = &events[1];
    let value = placeholder.json();
    assert_eq!(value["op"], "c");
    assert_eq!(value["after"]["id"], 7);
    assert_eq!(value["after"]["note"], "__debezium_unavailable_value");
    assert_eq!(value["source"]["table"], "t");
    assert_eq!(
        header(placeholder, "__ficus.dead_letter.topic"),
        Some(&*dlq)
    );
    assert_eq!(
        header(placeholder, "__ficus.dead_letter.cause"),
        Some("record_too_large")
    );
    assert_eq!(
        header(placeholder, "__ficus.dead_letter.columns"),
        Some("after.note")
    );
    assert_eq!(events[2].json()["after"]["note"], "after the big one");
    let other = test.messages(&test.topic("other")).await;
    assert_eq!(other.len(), 1, "a later change of another table arrives");

    let letters = test.messages(&dlq).await;
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(letter.key_json(), serde_json::json!({"id": 7}));
    assert_eq!(
        header(letter, "__ficus.errors.topic"),
        Some(&*test.topic("t"))
    );
    assert_eq!(header(letter, "__ficus.errors.table"), Some("public.t"));
    assert_eq!(
        header(letter, "__ficus.errors.cause"),
        Some("record_too_large")
    );
    // 2 MB fits no topic under the producer's limit either: the letter carries the
    // placeholder, and the size of what was set aside.
    assert_eq!(header(letter, "__ficus.errors.value"), Some("placeholder"));
    let size: usize = header(letter, "__ficus.errors.size.bytes")
        .unwrap()
        .parse()
        .unwrap();
    assert!(size > 2_000_000, "{size}");

    let metrics = adapter.metrics_text().await;
    assert_eq!(
        metric_sum(
            &metrics,
            "ficus_cdc_dead_letters_total",
            &["table=\"public.t\"", "cause=\"record_too_large\""]
        ),
        1.0,
        "{metrics}"
    );
    assert_eq!(metric_sum(&metrics, "ficus_cdc_restarts_total", &[]), 0.0);
    let health: serde_json::Value =
        reqwest::get(format!("http://{}/healthz", adapter.metrics_addr))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["dead_letters"]["count"], 1, "{health}");
    assert_eq!(
        health["dead_letters"]["last"]["key"], "{\"id\":7}",
        "{health}"
    );
    let (text, ok) = test.status_cli(adapter.metrics_addr, false);
    assert!(ok, "{text}");
    assert!(
        text.contains(&format!("dead letters: 1 in {dlq}")) && text.contains("key {\"id\":7}"),
        "{text}"
    );
    adapter.stop().await;
}

/// Tansu describes what a topic was created with and does not enforce it; the adapter reads
/// the topic's `max.message.bytes` and holds records to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_topic_limit_the_broker_describes_is_the_limit() {
    let mut test = CdcTest::new(TABLES).await;
    test.set("ERRORS__TOLERANCE", "all");
    let topic = test.topic("t");
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &test.brokers)
        .create()
        .unwrap();
    let new =
        NewTopic::new(&topic, 1, TopicReplication::Fixed(1)).set("max.message.bytes", "100000");
    let created = admin
        .create_topics([&new], &AdminOptions::new())
        .await
        .unwrap();
    assert!(created.iter().all(Result::is_ok), "{created:?}");
    let adapter = test.start_streaming().await;
    sqlx::query("INSERT INTO t VALUES (1, repeat('y', 300000)), (2, 'small')")
        .execute(&test.pool)
        .await
        .unwrap();
    test.wait_caught_up(Duration::from_secs(60)).await;

    let events = test.messages(&topic).await;
    assert_eq!(events.len(), 2);
    let first = events[0].json()["after"]["note"].to_string();
    assert!(
        first == "\"__debezium_unavailable_value\"",
        "300 kB is under the producer's limit, over the topic's: {} bytes sent",
        first.len()
    );
    assert_eq!(events[1].json()["after"]["note"], "small");
    let letters = test.messages(&format!("__ficus-dlq.{}", test.prefix)).await;
    assert_eq!(letters.len(), 1);
    // The dead-letter topic takes 300 kB: the letter is the original record.
    assert_eq!(
        header(&letters[0], "__ficus.errors.value"),
        Some("original")
    );
    assert_eq!(
        letters[0].json()["after"]["note"].as_str().unwrap().len(),
        300_000
    );
    adapter.stop().await;
}
