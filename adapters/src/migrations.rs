//! ficus's own schema objects (`migrations/ficus/*.sql`, in schema `ficus`), applied by the
//! adapter at start.
//!
//! Not sqlx's migrator: it keeps its bookkeeping in `_sqlx_migrations` in the current schema,
//! and the monolith's migrator already owns that table in `public`. ficus tracks its versions in
//! `ficus.schema_migrations` instead, under an advisory lock (two adapters starting at once
//! apply each version once), and every file is idempotent on top.

use sqlx::{Executor, PgPool};

use crate::error::CdcError;

/// `(version, name, sql)`, in order.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[(
    1,
    "cdc",
    include_str!("../../migrations/ficus/0001_cdc.sql"),
)];

const BOOTSTRAP: &str = "CREATE SCHEMA IF NOT EXISTS ficus;
CREATE TABLE IF NOT EXISTS ficus.schema_migrations (
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
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('ficus.schema_migrations'))")
        .execute(&mut *tx)
        .await
        .map_err(CdcError::pg("locking ficus.schema_migrations"))?;
    tx.execute(BOOTSTRAP)
        .await
        .map_err(CdcError::pg("creating schema ficus"))?;
    let applied: Vec<(i32,)> = sqlx::query_as("SELECT version FROM ficus.schema_migrations")
        .fetch_all(&mut *tx)
        .await
        .map_err(CdcError::pg("reading ficus.schema_migrations"))?;
    let mut count = 0;
    for (version, name, sql) in MIGRATIONS {
        if applied.iter().any(|(v,)| v == version) {
            continue;
        }
        tx.execute(*sql).await.map_err(CdcError::pg(format!(
            "applying ficus migration {version} ({name})"
        )))?;
        sqlx::query("INSERT INTO ficus.schema_migrations (version, name) VALUES ($1, $2)")
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
