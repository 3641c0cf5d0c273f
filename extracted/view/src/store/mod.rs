//! Where views live: embedded SQLite by default (a file path; nothing to set up) or PostgreSQL
//! by URL, both through sqlx. A batch of changes and the consumer offsets it advances to are
//! written in ONE transaction, so after any crash the store holds exactly the events up to its
//! offsets, and the consumer resumes there (never from zero, never applying an event twice).
//!
//! Tables: the view's own (its declared columns plus the source position of each row's last
//! change), and the bookkeeping shared by the views of a store: `ficus_view_offsets(view, topic,
//! partition, next_offset, events)`, `ficus_view_deletes(view, key, commit_lsn, lsn, partition,
//! appended_ms)` (the last delete per key, so a stale create after a delete stays a no-op;
//! forgotten once the view consumed, in its partition, a record appended
//! `delete_retention_ms` later: safe when no stale change of a key is appended that long after
//! its delete, see [`crate::consumer::ConsumerConfig::delete_retention_ms`]) and
//! `ficus_view_truncates(view, commit_lsn, lsn)`, and for whole-transaction apply
//! `ficus_view_transactions(view, last_end_lsn)` (per group: the last transaction END applied).

mod bulk;
mod postgres;
mod sql;
mod sqlite;

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::Executor;

pub use self::sql::{
    DELETES_TABLE, Dialect, OFFSETS_TABLE, Statements, TRANSACTIONS_TABLE, TRUNCATES_TABLE,
};
use crate::error::ViewError;
use crate::event::Position;
use crate::view::{Cell, ColumnType, ViewSpec};

/// Binds a cell; nulls with the column's own type, so a statement's parameter types never vary.
macro_rules! bind_cell {
    ($query:expr, $ty:expr, $cell:expr) => {
        match ($ty, $cell) {
            (_, Cell::Bool(v)) => $query.bind(Some(*v)),
            (_, Cell::Int(v)) => $query.bind(Some(*v)),
            (_, Cell::Float(v)) => $query.bind(Some(*v)),
            (_, Cell::Text(v)) => $query.bind(Some(v.clone())),
            (_, Cell::Timestamp(v)) => $query.bind(Some(*v)),
            (_, Cell::Date(v)) => $query.bind(Some(*v)),
            (ColumnType::Bool, _) => $query.bind(None::<bool>),
            (ColumnType::BigInt, _) => $query.bind(None::<i64>),
            (ColumnType::Double, _) => $query.bind(None::<f64>),
            (ColumnType::TimestampTz, _) => $query.bind(None::<DateTime<Utc>>),
            (ColumnType::Date, _) => $query.bind(None::<NaiveDate>),
            (ColumnType::Text | ColumnType::Numeric | ColumnType::Json, _) => {
                $query.bind(None::<String>)
            }
        }
    };
}

fn lsn(value: u64) -> i64 {
    // WAL positions stay far below 2^63 (that is 8 EiB of WAL).
    value as i64
}

/// Writes a batch's changes and offsets on `$conn` (a connection inside a transaction); the
/// same code for both backends, expanded once per concrete connection type.
macro_rules! apply_batch {
    ($conn:expr, $spec:expr, $statements:expr, $batch:expr) => {{
        let key_types: Vec<ColumnType> = $spec.key_columns().map(|c| c.ty).collect();
        let mut outcome = Outcome::default();
        let count = |outcome: &mut Outcome, affected: u64| {
            if affected > 0 {
                outcome.applied += 1;
            } else {
                outcome.stale += 1;
            }
        };
        for change in &$batch.changes {
            match change {
                Change::Upsert {
                    key,
                    cells,
                    position,
                    partition,
                } => {
                    let unchanged = cells
                        .iter()
                        .enumerate()
                        .filter(|(_, c)| **c == Cell::Unchanged)
                        .fold(0u64, |mask, (i, _)| mask | (1 << i.min(63)));
                    let sql = $statements.upsert_for(unchanged);
                    let mut query = sqlx::query(&sql);
                    for (column, cell) in $spec.columns.iter().zip(cells) {
                        query = bind_cell!(query, column.ty, cell);
                    }
                    let result = query
                        .bind(position.commit_lsn.map(lsn))
                        .bind(Some(lsn(position.lsn)))
                        .bind(Some($spec.name.clone()))
                        .bind(Some(key.clone()))
                        .bind(Some(*partition))
                        .execute(&mut *$conn)
                        .await
                        .map_err(ViewError::store("upserting a row"))?;
                    count(&mut outcome, result.rows_affected());
                }
                Change::Delete {
                    key,
                    key_cells,
                    position,
                    partition,
                    appended_ms,
                } => {
                    let mut query = sqlx::query(&$statements.delete_row);
                    for (ty, cell) in key_types.iter().zip(key_cells) {
                        query = bind_cell!(query, *ty, cell);
                    }
                    query
                        .bind(position.commit_lsn.map(lsn))
                        .bind(Some(lsn(position.lsn)))
                        .execute(&mut *$conn)
                        .await
                        .map_err(ViewError::store("deleting a row"))?;
                    let result = sqlx::query(&$statements.record_delete)
                        .bind(Some($spec.name.clone()))
                        .bind(Some(key.clone()))
                        .bind(position.commit_lsn.map(lsn))
                        .bind(Some(lsn(position.lsn)))
                        .bind(Some(*partition))
                        .bind(*appended_ms)
                        .execute(&mut *$conn)
                        .await
                        .map_err(ViewError::store("recording a delete"))?;
                    count(&mut outcome, result.rows_affected());
                }
                Change::Tombstone { key, key_cells } => {
                    let mut query = sqlx::query(&$statements.tombstone);
                    for (ty, cell) in key_types.iter().zip(key_cells) {
                        query = bind_cell!(query, *ty, cell);
                    }
                    let result = query
                        .bind(Some($spec.name.clone()))
                        .bind(Some(key.clone()))
                        .execute(&mut *$conn)
                        .await
                        .map_err(ViewError::store("applying a tombstone"))?;
                    // A tombstone after its delete finds nothing to do: that is not staleness.
                    if result.rows_affected() > 0 {
                        outcome.applied += 1;
                    }
                }
                Change::Truncate { position } => {
                    sqlx::query(&$statements.truncate_rows)
                        .bind(position.commit_lsn.map(lsn))
                        .bind(Some(lsn(position.lsn)))
                        .execute(&mut *$conn)
                        .await
                        .map_err(ViewError::store("truncating"))?;
                    let result = sqlx::query(&$statements.record_truncate)
                        .bind(Some($spec.name.clone()))
                        .bind(position.commit_lsn.map(lsn))
                        .bind(Some(lsn(position.lsn)))
                        .execute(&mut *$conn)
                        .await
                        .map_err(ViewError::store("recording a truncate"))?;
                    count(&mut outcome, result.rows_affected());
                }
            }
        }
        for (partition, cutoff_ms) in &$batch.prune_deletes {
            let result = sqlx::query(&$statements.prune_deletes)
                .bind(Some($spec.name.clone()))
                .bind(Some(*partition))
                .bind(Some(*cutoff_ms))
                .execute(&mut *$conn)
                .await
                .map_err(ViewError::store("pruning deletes"))?;
            outcome.pruned += result.rows_affected();
        }
        for (partition, progress) in &$batch.offsets {
            sqlx::query(&$statements.store_offset)
                .bind(Some($spec.name.clone()))
                .bind(Some($spec.topic.clone()))
                .bind(*partition)
                .bind(progress.next_offset)
                .bind(progress.events)
                .execute(&mut *$conn)
                .await
                .map_err(ViewError::store("storing offsets"))?;
        }
        Ok::<Outcome, ViewError>(outcome)
    }};
}

macro_rules! rebuild_view {
    ($conn:expr, $spec:expr, $statements:expr) => {{
        sqlx::query(&$statements.rebuild_table)
            .execute(&mut *$conn)
            .await
            .map_err(ViewError::store("emptying the view"))?;
        for statement in &$statements.rebuild {
            sqlx::query(statement)
                .bind(Some($spec.name.clone()))
                .execute(&mut *$conn)
                .await
                .map_err(ViewError::store("forgetting the view's offsets"))?;
        }
    }};
}

/// Empties the views of a transactional group and forgets the group's offsets in its
/// transaction topic and its last END, on `$conn` (a connection inside a transaction).
macro_rules! rebuild_group {
    ($conn:expr, $dialect:expr, $group:expr, $transaction_topic:expr, $views:expr) => {{
        for (spec, statements) in $views {
            rebuild_view!($conn, spec, statements);
        }
        sqlx::query(&$dialect.forget_group_offsets_sql())
            .bind($group)
            .bind($transaction_topic)
            .execute(&mut *$conn)
            .await
            .map_err(ViewError::store(
                "forgetting the transaction topic's offsets",
            ))?;
        sqlx::query(&$dialect.forget_last_end_sql())
            .bind($group)
            .execute(&mut *$conn)
            .await
            .map_err(ViewError::store("forgetting the last transaction END"))?;
    }};
}

/// `$body` run with `$conn`, the connection of one transaction of either store, then committed
/// (`$what` names the work in a commit's error).
macro_rules! in_transaction {
    ($store:expr, $conn:ident => $body:expr, $what:expr) => {
        match $store {
            Store::Sqlite(pool) => {
                let mut tx = pool
                    .begin()
                    .await
                    .map_err(ViewError::store("beginning a transaction"))?;
                let $conn = &mut *tx;
                $body;
                tx.commit().await.map_err(ViewError::store($what))
            }
            Store::Postgres(pool) => {
                let mut tx = pool
                    .begin()
                    .await
                    .map_err(ViewError::store("beginning a transaction"))?;
                let $conn = &mut *tx;
                $body;
                tx.commit().await.map_err(ViewError::store($what))
            }
        }
    };
}

/// The advisory lock (PostgreSQL) that serializes the preparation of views sharing a store.
const PREPARE_LOCK: i64 = 0x6669_6375_7376_6965; // "ficusvie"

/// A view store.
#[derive(Debug, Clone)]
pub enum Store {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

/// What one event does to a view, decoded and ready to write.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// `c`, `u`, `r`: every declared column, in declaration order.
    Upsert {
        key: String,
        cells: Vec<Cell>,
        position: Position,
        /// The topic partition it came from (stored with the row).
        partition: i32,
    },
    /// `d`: the key columns.
    Delete {
        key: String,
        key_cells: Vec<Cell>,
        position: Position,
        /// Where and when it was appended to the topic (the record's timestamp), for pruning.
        partition: i32,
        appended_ms: Option<i64>,
    },
    /// A null value: deletes the key unless the stored row is newer than the key's last delete.
    Tombstone { key: String, key_cells: Vec<Cell> },
    /// `t`: every row older than it goes.
    Truncate { position: Position },
}

/// A partition's stored progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    /// The offset of the next event to consume.
    pub next_offset: i64,
    /// How many events were consumed into the store, in total (each exactly once).
    pub events: i64,
}

/// Changes and the offsets they advance the view to.
#[derive(Debug, Default)]
pub struct Batch {
    pub changes: Vec<Change>,
    /// Per partition: the next offset after this batch, and how many events it consumed.
    pub offsets: BTreeMap<i32, Progress>,
    /// Per partition: forget the deletes appended before this time (ms), in the same
    /// transaction (see [`crate::consumer::ConsumerConfig::delete_retention_ms`]).
    pub prune_deletes: BTreeMap<i32, i64>,
}

/// What a group of transactional views stores beside its views' batches, in the same
/// transaction: the transaction topic's offsets (under the group's name) and the position of
/// the last transaction END taken (the commit order's chain resumes there after a restart, see
/// [`crate::consumer::transaction`]).
#[derive(Debug, Clone, Copy)]
pub struct GroupProgress<'a> {
    pub group: &'a str,
    pub topic: &'a str,
    pub partitions: &'a BTreeMap<i32, Progress>,
    /// `None`: nothing to write (no END taken, or the one stored already).
    pub last_end_lsn: Option<u64>,
}

/// What a batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Outcome {
    /// Changes that took effect.
    pub applied: u64,
    /// Changes the guard refused (stale or duplicate).
    pub stale: u64,
    /// Deletes forgotten (pruned from `ficus_view_deletes`).
    pub pruned: u64,
}

impl Store {
    /// Opens `location`: a `postgres://` / `postgresql://` URL, or a SQLite file (a path, or a
    /// `sqlite:` URL; created when missing).
    pub async fn open(location: &str) -> Result<Store, ViewError> {
        if location.starts_with("postgres://") || location.starts_with("postgresql://") {
            postgres::open(location).await.map(Store::Postgres)
        } else if location.is_empty() {
            Err(ViewError::Location(location.to_owned()))
        } else {
            sqlite::open(location).await.map(Store::Sqlite)
        }
    }

    pub fn dialect(&self) -> Dialect {
        match self {
            Store::Sqlite(_) => Dialect::Sqlite,
            Store::Postgres(_) => Dialect::Postgres,
        }
    }

    /// Creates the view's table and the bookkeeping tables when missing, and the joined
    /// relation of a view with joins; in one transaction, serialized between instances
    /// sharing a PostgreSQL store (concurrent `CREATE ... IF NOT EXISTS` can collide there).
    pub async fn prepare(&self, statements: &Statements) -> Result<(), ViewError> {
        let mut ddl = self.dialect().bookkeeping_ddl();
        ddl.push(statements.create_table.clone());
        ddl.extend(statements.joined_ddl.iter().cloned());
        match self {
            Store::Sqlite(pool) => {
                let mut tx = pool
                    .begin()
                    .await
                    .map_err(ViewError::store("beginning a transaction"))?;
                for statement in &ddl {
                    tx.execute(statement.as_str())
                        .await
                        .map_err(ViewError::store("creating tables"))?;
                }
                tx.commit()
                    .await
                    .map_err(ViewError::store("creating tables"))
            }
            Store::Postgres(pool) => {
                let mut tx = pool
                    .begin()
                    .await
                    .map_err(ViewError::store("beginning a transaction"))?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(PREPARE_LOCK)
                    .execute(&mut *tx)
                    .await
                    .map_err(ViewError::store("locking the store's schema"))?;
                for statement in &ddl {
                    tx.execute(statement.as_str())
                        .await
                        .map_err(ViewError::store("creating tables"))?;
                }
                tx.commit()
                    .await
                    .map_err(ViewError::store("creating tables"))
            }
        }
    }

    /// The stored progress of each partition of the view's topic.
    pub async fn progress(
        &self,
        spec: &ViewSpec,
        statements: &Statements,
    ) -> Result<BTreeMap<i32, Progress>, ViewError> {
        let rows: Vec<(i32, i64, i64)> = match self {
            Store::Sqlite(pool) => {
                sqlx::query_as(&statements.load_offsets)
                    .bind(&spec.name)
                    .bind(&spec.topic)
                    .fetch_all(pool)
                    .await
            }
            Store::Postgres(pool) => {
                sqlx::query_as(&statements.load_offsets)
                    .bind(&spec.name)
                    .bind(&spec.topic)
                    .fetch_all(pool)
                    .await
            }
        }
        .map_err(ViewError::store("reading the offsets"))?;
        Ok(rows
            .into_iter()
            .map(|(partition, next_offset, events)| {
                (
                    partition,
                    Progress {
                        next_offset,
                        events,
                    },
                )
            })
            .collect())
    }

    /// The position of the last transaction END the group `group` applied, if it stored one.
    pub async fn last_end(&self, group: &str) -> Result<Option<u64>, ViewError> {
        let sql = self.dialect().load_last_end_sql();
        let row: Option<(i64,)> = match self {
            Store::Sqlite(pool) => sqlx::query_as(&sql).bind(group).fetch_optional(pool).await,
            Store::Postgres(pool) => sqlx::query_as(&sql).bind(group).fetch_optional(pool).await,
        }
        .map_err(ViewError::store("reading the last transaction END"))?;
        Ok(row.map(|(lsn,)| lsn as u64))
    }

    /// Writes a batch and its offsets in one transaction.
    pub async fn apply(
        &self,
        spec: &ViewSpec,
        statements: &Statements,
        batch: &Batch,
    ) -> Result<Outcome, ViewError> {
        let mut outcomes = self.apply_all(&[(spec, statements, batch)], &[]).await?;
        Ok(outcomes.pop().unwrap_or_default())
    }

    /// Writes the batches of several views of this store, their offsets and `progress` (a
    /// group's: its transaction topic's offsets and last END) in ONE transaction: a reader sees
    /// all of it or none. PostgreSQL gets each batch in a few multi-row
    /// statements (`store/bulk.rs`), SQLite one statement per change (in-process, no round
    /// trips to save). One outcome per batch.
    pub async fn apply_all(
        &self,
        parts: &[(&ViewSpec, &Statements, &Batch)],
        progress: &[GroupProgress<'_>],
    ) -> Result<Vec<Outcome>, ViewError> {
        let store_last_end = self.dialect().store_last_end_sql();
        let mut outcomes = Vec::with_capacity(parts.len());
        match self {
            Store::Sqlite(pool) => {
                let mut tx = pool
                    .begin()
                    .await
                    .map_err(ViewError::store("beginning a transaction"))?;
                let conn = &mut *tx;
                for (spec, statements, batch) in parts {
                    outcomes.push(apply_batch!(conn, spec, statements, batch)?);
                }
                let store_offset = Statements::store_offset_sql(Dialect::Sqlite);
                for group in progress {
                    for (partition, progress) in group.partitions {
                        sqlx::query(&store_offset)
                            .bind(Some(group.group.to_owned()))
                            .bind(Some(group.topic.to_owned()))
                            .bind(*partition)
                            .bind(progress.next_offset)
                            .bind(progress.events)
                            .execute(&mut *conn)
                            .await
                            .map_err(ViewError::store("storing offsets"))?;
                    }
                    if let Some(end) = group.last_end_lsn {
                        sqlx::query(&store_last_end)
                            .bind(group.group)
                            .bind(lsn(end))
                            .execute(&mut *conn)
                            .await
                            .map_err(ViewError::store("storing the last transaction END"))?;
                    }
                }
                tx.commit()
                    .await
                    .map_err(ViewError::store("committing a batch"))?;
            }
            Store::Postgres(pool) => {
                let mut tx = pool
                    .begin()
                    .await
                    .map_err(ViewError::store("beginning a transaction"))?;
                for (spec, statements, batch) in parts {
                    outcomes.push(bulk::apply(&mut tx, spec, statements, batch).await?);
                }
                for group in progress {
                    bulk::store_offsets(&mut tx, group.group, group.topic, group.partitions)
                        .await?;
                    if let Some(end) = group.last_end_lsn {
                        sqlx::query(&store_last_end)
                            .bind(group.group)
                            .bind(lsn(end))
                            .execute(&mut *tx)
                            .await
                            .map_err(ViewError::store("storing the last transaction END"))?;
                    }
                }
                tx.commit()
                    .await
                    .map_err(ViewError::store("committing a batch"))?;
            }
        }
        Ok(outcomes)
    }

    /// Drops the view's rows, deletes, truncate and offsets in one transaction: the next start
    /// replays the topic from its earliest offset.
    pub async fn rebuild(&self, spec: &ViewSpec, statements: &Statements) -> Result<(), ViewError> {
        in_transaction!(
            self,
            conn => rebuild_view!(conn, spec, statements),
            "rebuilding"
        )
    }

    /// Rebuilds the views of the transactional group `group` (as [`Store::rebuild`] each) and
    /// forgets the group's offsets in `transaction_topic` and the last END it took, all in one
    /// transaction: the next start replays every topic from its earliest offset and completes
    /// each transaction again from its END.
    pub async fn rebuild_group(
        &self,
        group: &str,
        transaction_topic: &str,
        views: &[(&ViewSpec, &Statements)],
    ) -> Result<(), ViewError> {
        let dialect = self.dialect();
        in_transaction!(
            self,
            conn => rebuild_group!(
                conn,
                dialect,
                group,
                transaction_topic,
                views.iter().copied()
            ),
            "rebuilding"
        )
    }
}
