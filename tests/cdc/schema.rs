//! ficus's own schema never captures an application's tables: on a private cluster whose
//! superuser is `ficus` (as `scripts/services` creates it, the role the demo and the README
//! use), an application that runs its migrations after the adapter started keeps its tables in
//! `public`, where they are captured; a database set up by an older version (schema `ficus`)
//! is moved; and a role named like ficus's schema makes the adapter refuse to start, saying why.

use std::time::Duration;

use ficus_adapters::migrations::SCHEMA;
use sqlx::postgres::PgPoolOptions;

use crate::support::{CdcTest, PrivateServices, wait_unhealthy};

/// ficus's tables in schema `ficus`, as versions before the rename left them.
const LEGACY_LAYOUT: &str = "
CREATE SCHEMA ficus;
CREATE TABLE ficus.schema_migrations (version integer PRIMARY KEY, name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now());
INSERT INTO ficus.schema_migrations (version, name) VALUES (1, 'cdc');
CREATE TABLE ficus.heartbeat (slot_name text PRIMARY KEY, beat_at timestamptz NOT NULL DEFAULT now(),
    beats bigint NOT NULL DEFAULT 0);
INSERT INTO ficus.heartbeat (slot_name, beats) VALUES ('old_slot', 41);
CREATE TABLE ficus.snapshots (slot_name text PRIMARY KEY, started_at timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz);
CREATE TABLE ficus.snapshot_progress (slot_name text NOT NULL, table_schema text NOT NULL,
    table_name text NOT NULL, segment integer NOT NULL, snapshot_lsn pg_lsn NOT NULL, last_key text[],
    inflight_key text[], rows_done bigint NOT NULL DEFAULT 0, rows_estimate bigint NOT NULL DEFAULT 0,
    done boolean NOT NULL DEFAULT false, updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (slot_name, table_schema, table_name, segment));
CREATE TABLE ficus.outbox (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), aggregatetype text NOT NULL,
    aggregateid text NOT NULL, type text NOT NULL, payload jsonb, created_at timestamptz NOT NULL DEFAULT now());
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_role_named_like_the_schema_never_writes_into_it() {
    let services = tokio::task::spawn_blocking(PrivateServices::start)
        .await
        .unwrap();
    let server = services.var("FICUS_TEST_DATABASE_URL");
    let brokers = services.var("FICUS_TEST_KAFKA_BROKERS");
    assert!(
        server.starts_with("postgres://ficus:"),
        "the private cluster's role is ficus, as scripts/services creates it: {server}"
    );
    let test = CdcTest::on_server(&server, &brokers, LEGACY_LAYOUT).await;
    let adapter = test.start_streaming().await;

    // The application (re)starts after the adapter, connecting as role ficus with the default
    // search_path, and runs its migrations on fresh connections: the monolith's own.
    let app = PgPoolOptions::new()
        .max_connections(2)
        .connect(&test.url)
        .await
        .unwrap();
    let (path,): (Vec<String>,) = sqlx::query_as("SELECT current_schemas(false)::text[]")
        .fetch_one(&app)
        .await
        .unwrap();
    assert_eq!(
        path,
        vec!["public"],
        "role ficus resolves names in public only"
    );
    ficus_monolith::MIGRATOR.run(&app).await.unwrap();
    sqlx::raw_sql(
        "CREATE TABLE notes (id bigint PRIMARY KEY, body text NOT NULL);
         INSERT INTO notes VALUES (1, 'written by the application');",
    )
    .execute(&app)
    .await
    .unwrap();
    let misplaced: Vec<(String, String)> = sqlx::query_as(
        "SELECT schemaname::text, tablename::text FROM pg_tables \
         WHERE schemaname IN ('ficus', '_ficus') \
           AND tablename NOT IN ('schema_migrations', 'heartbeat', 'snapshots', 'snapshot_progress', 'outbox') \
         ORDER BY 1, 2",
    )
    .fetch_all(&test.pool)
    .await
    .unwrap();
    assert!(
        misplaced.is_empty(),
        "application tables in ficus's schema: {misplaced:?}"
    );
    let (schema,): (String,) = sqlx::query_as(
        "SELECT schemaname::text FROM pg_tables WHERE tablename = '_sqlx_migrations'",
    )
    .fetch_one(&test.pool)
    .await
    .unwrap();
    assert_eq!(schema, "public");
    test.wait_caught_up(Duration::from_secs(60)).await;
    let notes = test.messages(&test.topic("notes")).await;
    assert_eq!(notes.len(), 1, "the application's row is captured");
    assert_eq!(
        notes[0].json()["after"]["body"],
        "written by the application"
    );
    // The older layout moved: ficus's tables (and their rows) in _ficus, schema ficus gone.
    let (legacy,): (bool,) =
        sqlx::query_as("SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = 'ficus')")
            .fetch_one(&test.pool)
            .await
            .unwrap();
    assert!(
        !legacy,
        "schema ficus is dropped once ficus's tables left it"
    );
    let (beats,): (i64,) =
        sqlx::query_as("SELECT beats FROM _ficus.heartbeat WHERE slot_name = 'old_slot'")
            .fetch_one(&test.pool)
            .await
            .unwrap();
    assert_eq!(beats, 41, "rows move with their tables");
    let versions: Vec<(i32,)> =
        sqlx::query_as("SELECT version FROM _ficus.schema_migrations ORDER BY 1")
            .fetch_all(&test.pool)
            .await
            .unwrap();
    assert_eq!(versions, vec![(1,), (2,)]);

    adapter.stop().await;
    app.close().await;

    // A role named like ficus's schema: the adapter refuses to start and says why.
    sqlx::query(&format!("CREATE ROLE {SCHEMA} LOGIN"))
        .execute(&test.pool)
        .await
        .unwrap();
    let adapter = test.start().await;
    let body = wait_unhealthy(adapter.metrics_addr, Duration::from_secs(60)).await;
    assert_eq!(body["class"], "operator", "{body}");
    assert_eq!(body["cause"], "schema_role", "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains(&format!("{SCHEMA:?}")) && error.contains("search_path"),
        "{error}"
    );
    let error = adapter.stop_result().await.unwrap_err();
    assert_eq!(error.classify().cause, "schema_role");
    sqlx::query(&format!("DROP ROLE {SCHEMA}"))
        .execute(&test.pool)
        .await
        .unwrap();
    drop(test);
    drop(services);
}
