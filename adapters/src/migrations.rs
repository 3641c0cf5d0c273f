//! ficus's own schema objects (`migrations/ficus/*.sql`, in schema [`SCHEMA`]), applied by the
//! adapter at start, after [`crate::source::setup::check_schema_role`] made sure no role can
//! resolve unqualified names into that schema.
//!
//! Not sqlx's migrator: it keeps its bookkeeping in `_sqlx_migrations` in the current schema,
//! and the monolith's migrator already owns that table in `public`. ficus tracks its versions in
//! `_ficus.schema_migrations` instead, under an advisory lock (two adapters starting at once
//! apply each version once), and every file is idempotent on top.
//!
//! The schema was named `ficus` before; PostgreSQL's default `search_path` (`"$user", public`)
//! made it the first schema of any role named `ficus` (the role `scripts/services` creates), so
//! an application connecting as that role created its tables in ficus's schema, where the
//! adapter never captured them. [`apply`] moves ficus's own tables out of a schema `ficus` left
//! by an older version into [`SCHEMA`] (and drops `ficus` when nothing else is in it).

use sqlx::{Executor, PgPool, Postgres, Transaction};

use crate::error::CdcError;

/// The schema of ficus's own objects. A leading underscore: no role is named like it by
/// accident, so no application's `"$user"` entry of `search_path` resolves into it (the adapter
/// refuses to start when a role of that name exists anyway).
pub const SCHEMA: &str = "_ficus";

/// The schema's name before version 2.
pub const LEGACY_SCHEMA: &str = "ficus";

/// ficus's own tables, as [`LEGACY_SCHEMA`] held them (moved by [`apply`]).
const OWN_TABLES: &[&str] = &[
    "schema_migrations",
    "heartbeat",
    "snapshots",
    "snapshot_progress",
    "outbox",
];

/// `(version, name, sql)`, in order.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "cdc",
        include_str!("../../migrations/ficus/0001_cdc.sql"),
    ),
    (
        2,
        "schema_privileges",
        include_str!("../../migrations/ficus/0002_schema_privileges.sql"),
    ),
];

const BOOTSTRAP: &str = "CREATE SCHEMA IF NOT EXISTS _ficus;
REVOKE ALL ON SCHEMA _ficus FROM PUBLIC;
CREATE TABLE IF NOT EXISTS _ficus.schema_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);";

/// Applies the versions not applied yet; returns how many it applied.
pub async fn apply(pool: &PgPool) -> Result<usize, CdcError> {
    let mut tx = pool
        .begin()
        .await
        .map_err(CdcError::pg("starting the migration transaction"))?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('_ficus.schema_migrations'))")
        .execute(&mut *tx)
        .await
        .map_err(CdcError::pg("locking _ficus.schema_migrations"))?;
    move_legacy_schema(&mut tx).await?;
    tx.execute(BOOTSTRAP)
        .await
        .map_err(CdcError::pg("creating schema _ficus"))?;
    let applied: Vec<(i32,)> = sqlx::query_as("SELECT version FROM _ficus.schema_migrations")
        .fetch_all(&mut *tx)
        .await
        .map_err(CdcError::pg("reading _ficus.schema_migrations"))?;
    let mut count = 0;
    for (version, name, sql) in MIGRATIONS {
        if applied.iter().any(|(v,)| v == version) {
            continue;
        }
        tx.execute(*sql).await.map_err(CdcError::pg(format!(
            "applying ficus migration {version} ({name})"
        )))?;
        sqlx::query("INSERT INTO _ficus.schema_migrations (version, name) VALUES ($1, $2)")
            .bind(version)
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(CdcError::pg("recording a ficus migration"))?;
        tracing::info!(version, name, "applied ficus migration");
        count += 1;
    }
    tx.commit()
        .await
        .map_err(CdcError::pg("committing ficus migrations"))?;
    Ok(count)
}

/// A database set up by a version that used schema `ficus`: its tables move to [`SCHEMA`]
/// (publication membership, rows and the slot's position go with them: they follow the
/// table, not its name). Tables an application created there by accident stay, with a warning
/// naming them; an emptied `ficus` is dropped.
async fn move_legacy_schema(tx: &mut Transaction<'_, Postgres>) -> Result<(), CdcError> {
    let (legacy, current): (bool, bool) = sqlx::query_as(
        "SELECT to_regclass('ficus.schema_migrations') IS NOT NULL, \
                to_regclass('_ficus.schema_migrations') IS NOT NULL",
    )
    .fetch_one(&mut **tx)
    .await
    .map_err(CdcError::pg("looking for ficus's schema of older versions"))?;
    if !legacy || current {
        return Ok(());
    }
    tx.execute("CREATE SCHEMA IF NOT EXISTS _ficus; REVOKE ALL ON SCHEMA _ficus FROM PUBLIC;")
        .await
        .map_err(CdcError::pg("creating schema _ficus"))?;
    for table in OWN_TABLES {
        let (exists,): (bool,) = sqlx::query_as("SELECT to_regclass($1) IS NOT NULL")
            .bind(format!("{LEGACY_SCHEMA}.{table}"))
            .fetch_one(&mut **tx)
            .await
            .map_err(CdcError::pg("looking for a table of schema ficus"))?;
        if exists {
            tx.execute(format!("ALTER TABLE {LEGACY_SCHEMA}.{table} SET SCHEMA {SCHEMA}").as_str())
                .await
                .map_err(CdcError::pg(format!(
                    "moving {LEGACY_SCHEMA}.{table} to schema {SCHEMA}"
                )))?;
        }
    }
    let left: Vec<(String,)> = sqlx::query_as(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm', 'f') ORDER BY 1",
    )
    .bind(LEGACY_SCHEMA)
    .fetch_all(&mut **tx)
    .await
    .map_err(CdcError::pg("listing what is left in schema ficus"))?;
    // RESTRICT (the default) refuses when anything at all is left (functions, types, ...):
    // then the schema stays, under a savepoint so the migration goes on.
    tx.execute("SAVEPOINT drop_legacy_schema")
        .await
        .map_err(CdcError::pg("dropping the emptied schema ficus"))?;
    let dropped = tx.execute("DROP SCHEMA ficus").await.is_ok();
    tx.execute(if dropped {
        "RELEASE SAVEPOINT drop_legacy_schema"
    } else {
        "ROLLBACK TO SAVEPOINT drop_legacy_schema"
    })
    .await
    .map_err(CdcError::pg("dropping the emptied schema ficus"))?;
    if dropped {
        tracing::info!("ficus's tables moved from schema ficus to _ficus; schema ficus dropped");
    } else {
        let tables: Vec<String> = left.into_iter().map(|(t,)| t).collect();
        tracing::warn!(
            ?tables,
            "ficus's tables moved from schema ficus to _ficus; schema ficus keeps objects that are \
             not ficus's. Tables there were most likely created by an application connecting as \
             role ficus (search_path \"$user\", public): they were never captured before and are \
             captured from now on (topics <prefix>.ficus.<table>); move them where \
             the application expects them"
        );
    }
    Ok(())
}
