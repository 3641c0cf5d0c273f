//! Writes through the monolith (people and tasks: create, update, delete, rename an assignee),
//! then the same reads from the monolith and from the services (through the proxy, which
//! forwards the verified identity) must give the same status, the same JSON bytes and the same
//! `Content-Type`, `ETag` and `Link`. The time from a write's answer to the service answering
//! alike is the convergence lag; its p50/p99 are printed.
//!
//! The people service keeps its view in SQLite (the default), the tasks service in PostgreSQL,
//! so both stores answer alike too.
//!
//! Legitimately different, so not compared: `date` (the moment of each answer), `x-request-id`
//! (the monolith's own request id), `x-ficus-*` (the proxy's route/side headers), and
//! `www-authenticate`/`retry-after` (only on refusals neither side gives here).

use std::time::{Duration, Instant};

use ficus_monolith::MonolithConfig;
use ficus_testkit::{
    SERVICE_FORM, TestAdapter, TestDatabase, TestMonolith, TestProxy, unique_suffix,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{ServiceConfig, ServiceProcess, percentile, routes};

/// The headers compared between the two sides.
const COMPARED_HEADERS: [&str; 3] = ["content-type", "etag", "link"];
/// How long a write may take to show in a service before the test fails.
const CONVERGENCE_TIMEOUT: Duration = Duration::from_secs(30);

/// One answer, reduced to what must be the same.
#[derive(Debug, PartialEq)]
struct Answer {
    status: StatusCode,
    headers: Vec<(&'static str, Option<String>)>,
    body: String,
}

async fn answer(request: reqwest::RequestBuilder) -> Answer {
    let response = request.send().await.expect("an answer");
    let status = response.status();
    let headers = COMPARED_HEADERS
        .iter()
        .map(|name| {
            let value = response
                .headers()
                .get(*name)
                .map(|v| v.to_str().unwrap().to_owned());
            (*name, value)
        })
        .collect();
    let body = response.text().await.unwrap();
    Answer {
        status,
        headers,
        body,
    }
}

struct Chain {
    monolith: TestMonolith,
    proxy: TestProxy,
    token: String,
    http: reqwest::Client,
    lags: Vec<Duration>,
    /// The services' `/views` (offsets, watermarks), shown when a read does not converge.
    views: Vec<String>,
}

impl Chain {
    async fn monolith_answer(&self, path: &str) -> Answer {
        answer(
            self.http
                .get(self.monolith.url(path))
                .bearer_auth(&self.token),
        )
        .await
    }

    async fn service_answer(&self, path: &str) -> Answer {
        answer(self.http.get(self.proxy.url(path)).bearer_auth(&self.token)).await
    }

    /// Waits until the service answers `path` as the monolith does; records the lag since
    /// `since` (the write's answer).
    async fn converge(&mut self, path: &str, since: Instant) {
        let expected = self.monolith_answer(path).await;
        loop {
            let got = self.service_answer(path).await;
            if got == expected {
                self.lags.push(since.elapsed());
                return;
            }
            if since.elapsed() > CONVERGENCE_TIMEOUT {
                let mut views = String::new();
                for url in &self.views {
                    views.push_str(
                        &self
                            .http
                            .get(url)
                            .send()
                            .await
                            .unwrap()
                            .text()
                            .await
                            .unwrap(),
                    );
                    views.push('\n');
                }
                panic!(
                    "{path}: the service still answers\n{got:#?}\nwhere the monolith answers\n{expected:#?}\nviews:\n{views}"
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The same answer now, without waiting.
    async fn same(&self, path: &str) {
        let expected = self.monolith_answer(path).await;
        let got = self.service_answer(path).await;
        assert_eq!(got, expected, "{path}");
    }

    async fn write(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self
            .http
            .request(method.clone(), self.monolith.url(path))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        assert!(
            response.status().is_success(),
            "{method} {path}: {}",
            response.status()
        );
        response.json().await.unwrap_or(Value::Null)
    }

    async fn post(&self, path: &str, body: Value) -> i64 {
        self.write(reqwest::Method::POST, path, Some(body)).await["id"]
            .as_i64()
            .unwrap()
    }

    async fn patch(&self, path: &str, body: Value) {
        self.write(reqwest::Method::PATCH, path, Some(body)).await;
    }

    async fn delete(&self, path: &str) {
        self.write(reqwest::Method::DELETE, path, None).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_services_answer_as_the_monolith_does_after_every_write() {
    // Commits flushed at once, as production databases run (the test cluster's default,
    // synchronous_commit = off, makes the adapter wait for the WAL writer's 200 ms rounds).
    let db = TestDatabase::new().await;
    // The pool's one open connection is set too; new ones get the database's setting.
    sqlx::raw_sql(&format!(
        "ALTER DATABASE \"{}\" SET synchronous_commit = on; SET synchronous_commit = on",
        db.name
    ))
    .execute(&db.pool)
    .await
    .unwrap();
    let monolith = TestMonolith::start_on(db, MonolithConfig::default()).await;
    // With transaction metadata: the tasks service applies a monolith transaction whole.
    let mut settings = SERVICE_FORM.to_vec();
    settings.push(("DEBEZIUM__PROVIDE_TRANSACTION_METADATA", "true"));
    let adapter = TestAdapter::start_with(
        &monolith.db.url,
        &["public.people", "public.tasks"],
        3,
        &settings,
    )
    .await;
    // The transaction topic (the adapter makes it at its first transaction; the tasks service
    // waits for it).
    ficus_testkit::kafka::create_topic(&format!("{}.transaction", adapter.prefix), 3)
        .await
        .unwrap();
    // The topics exist (the snapshot made them) before the services look for them.
    adapter
        .wait_snapshot_complete(Duration::from_secs(180))
        .await;
    // The proxy first: the services verify identities with its keys. Their addresses are
    // known once they run, and go into the routes file then.
    let proxy = TestProxy::start(&routes(
        monolith.addr,
        "http://127.0.0.1:9",
        "http://127.0.0.1:9",
        "monolith",
    ))
    .await;
    let dir = std::env::temp_dir().join(format!("ficus-services-{}", unique_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    // The two stores: people in a SQLite file, tasks in a PostgreSQL database of its own.
    let tasks_store = TestDatabase::new().await;
    let config = |store: String| ServiceConfig {
        store,
        topic_prefix: adapter.prefix.clone(),
        jwks_url: proxy.admin_url("/.well-known/jwks.json"),
        batch_max_events: 1000,
        brokers: ficus_testkit::kafka::brokers(),
    };
    let people = ServiceProcess::start(
        "people",
        &config(dir.join("people.db").display().to_string()),
    );
    let tasks = ServiceProcess::start("tasks", &config(tasks_store.url.clone()));
    proxy
        .write_routes(&routes(
            monolith.addr,
            &people.url(""),
            &tasks.url(""),
            "extracted",
        ))
        .await;
    // Ready once the snapshot made the topics and the views caught up with them.
    people.wait_ready(Duration::from_secs(60)).await;
    tasks.wait_ready(Duration::from_secs(60)).await;
    let token = monolith.admin_token().await;
    let mut chain = Chain {
        monolith,
        proxy,
        token,
        http: reqwest::Client::new(),
        lags: Vec::new(),
        views: vec![people.url("/views"), tasks.url("/views")],
    };

    // People: create.
    let mut ids = Vec::new();
    for (email, name) in [
        ("alice@example.test", "Alice"),
        ("bob@example.test", "Bob"),
        ("carol@example.test", "Carol"),
    ] {
        let id = chain
            .post("/api/people", json!({"email": email, "display_name": name}))
            .await;
        let since = Instant::now();
        chain.converge(&format!("/api/people/{id}"), since).await;
        ids.push(id);
    }
    let [alice, bob, carol] = ids[..] else {
        unreachable!()
    };

    // Tasks: create, with and without assignees, tags and due dates.
    let mut task_ids = Vec::new();
    for body in [
        json!({"title": "Write the plan", "assignee_id": alice, "tags": ["a", "b"], "due_on": "2026-12-24"}),
        json!({"title": "Review", "assignee_id": bob, "status": "in_progress", "tags": ["b"]}),
        json!({"title": "Nobody's", "description": "long text here"}),
        json!({"title": "Second for Alice", "assignee_id": alice, "tags": ["c"]}),
        json!({"title": "Bob's last", "assignee_id": bob}),
    ] {
        let id = chain.post("/api/tasks", body).await;
        let since = Instant::now();
        chain.converge(&format!("/api/tasks/{id}"), since).await;
        task_ids.push(id);
    }
    let [t1, t2, t3, t4, t5] = task_ids[..] else {
        unreachable!()
    };

    // Rename a person who is an assignee: the person and every task of theirs change.
    chain
        .patch(
            &format!("/api/people/{alice}"),
            json!({"display_name": "Alice Liddell"}),
        )
        .await;
    let since = Instant::now();
    chain.converge(&format!("/api/people/{alice}"), since).await;
    chain.converge(&format!("/api/tasks/{t1}"), since).await;
    chain.converge(&format!("/api/tasks/{t4}"), since).await;
    let renamed = chain.service_answer(&format!("/api/tasks/{t1}")).await;
    let renamed: Value = serde_json::from_str(&renamed.body).unwrap();
    assert_eq!(renamed["assignee"]["display_name"], "Alice Liddell");

    // Update a task: status, tags, assignee, clear the due date.
    chain
        .patch(
            &format!("/api/tasks/{t2}"),
            json!({"status": "done", "tags": ["x", "b"], "assignee_id": carol, "due_on": null}),
        )
        .await;
    let since = Instant::now();
    chain.converge(&format!("/api/tasks/{t2}"), since).await;

    // Delete a task, then a person who is an assignee (their tasks become unassigned).
    chain.delete(&format!("/api/tasks/{t3}")).await;
    let since = Instant::now();
    chain.converge(&format!("/api/tasks/{t3}"), since).await;
    chain.delete(&format!("/api/people/{bob}")).await;
    let since = Instant::now();
    chain.converge(&format!("/api/people/{bob}"), since).await;
    chain.converge(&format!("/api/tasks/{t5}"), since).await;
    assert_eq!(
        chain
            .service_answer(&format!("/api/people/{bob}"))
            .await
            .status,
        404
    );

    // A run of updates, for the lag figures.
    for i in 0..40 {
        let since = Instant::now();
        if i % 2 == 0 {
            chain
                .patch(
                    &format!("/api/people/{carol}"),
                    json!({"display_name": format!("Carol {i}")}),
                )
                .await;
            chain.converge(&format!("/api/tasks/{t2}"), since).await;
        } else {
            chain
                .patch(
                    &format!("/api/tasks/{t4}"),
                    json!({"title": format!("Second for Alice, take {i}")}),
                )
                .await;
            chain.converge(&format!("/api/tasks/{t4}"), since).await;
        }
    }

    // Everything settled: lists, filters, pages, and the errors, answered alike.
    for path in [
        "/api/people".to_owned(),
        "/api/people?per_page=2".to_owned(),
        "/api/people?page=2&per_page=2".to_owned(),
        "/api/people?page=9&per_page=2".to_owned(),
        "/api/people?email=%20ALICE@example.test".to_owned(),
        "/api/people?email=nobody@example.test".to_owned(),
        "/api/people?page=0".to_owned(),
        "/api/people?per_page=101".to_owned(),
        "/api/people?page=abc".to_owned(),
        "/api/people/999999".to_owned(),
        "/api/people/abc".to_owned(),
        format!("/api/people/{carol}"),
        "/api/tasks".to_owned(),
        "/api/tasks?status=done".to_owned(),
        "/api/tasks?status=todo&per_page=1".to_owned(),
        "/api/tasks?status=bogus".to_owned(),
        format!("/api/tasks?assignee_id={alice}"),
        format!("/api/tasks?assignee_id={alice}&tag=c"),
        "/api/tasks?tag=b".to_owned(),
        "/api/tasks?tag=b&page=2&per_page=1".to_owned(),
        "/api/tasks?tag=a%20b".to_owned(),
        "/api/tasks?assignee_id=x".to_owned(),
        "/api/tasks/999999".to_owned(),
        format!("/api/tasks/{t1}"),
    ] {
        chain.same(&path).await;
    }

    // ETags: the monolith's ETag is the service's, so a client's cached copy stays valid
    // across the flip (304 from the service).
    let path = format!("/api/tasks/{t1}");
    let etag = chain.monolith_answer(&path).await.headers[1]
        .1
        .clone()
        .unwrap();
    let response = chain
        .http
        .get(chain.proxy.url(&path))
        .bearer_auth(&chain.token)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 304);
    assert_eq!(response.headers()["x-ficus-side"], "extracted");
    assert_eq!(response.headers()["etag"].to_str().unwrap(), etag);

    // The answers did come from the services.
    let answered = people
        .metric(
            "ficus_service_http_requests_total{service=\"people\",method=\"GET\",route=\"/api/people/{id}\",status=\"200\"}",
        )
        .await;
    assert!(answered > 0.0, "the people service answered no read");

    let mut lags = chain.lags.clone();
    lags.sort();
    println!(
        "convergence lag (monolith write answered -> service answers alike), {} writes: p50 {:?}, p99 {:?}, max {:?}",
        lags.len(),
        percentile(&lags, 50),
        percentile(&lags, 99),
        lags.last().unwrap()
    );
    drop(people);
    drop(tasks);
    adapter.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
