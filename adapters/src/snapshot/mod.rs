//! The initial snapshot: every published table read at one exported snapshot, chunk by chunk in
//! primary-key order, each row sent as an `r` event, progress recorded in
//! `_ficus.snapshot_progress` once a chunk's events are all acknowledged.
//!
//! - Consistency: the snapshot is exported by a temporary replication slot; its consistent
//!   point is the LSN at which the snapshot's rows hold. Every chunk is read in a transaction
//!   of its own that imports it, so locks are held one chunk at a time. The stream starts after the snapshot,
//!   at the main slot's position (created earlier, so at or before that point), and
//!   [`filter::SnapshotFilter`] skips the changes the snapshot already contains.
//! - Resumption: after a crash the tables done stay done; an unfinished table continues after
//!   its last finished chunk, at a new exported snapshot (a new segment; see [`filter`]).
//! - Memory: one chunk (`snapshot.chunk_rows` rows) at a time, plus at most
//!   `kafka.max_inflight_events` unacknowledged events.
//! - Tables without a primary key cannot be chunked by key: they are read whole through a
//!   cursor (still `chunk_rows` at a time) and restart from their beginning after a crash.

pub mod filter;

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use pg_walstream::{PgReplicationConnection, ReplicationSlotOptions, SlotType};
use sqlx::{Connection, Executor, PgConnection, Row as _};
use tracing::Instrument;

use crate::catalog::{Catalog, SnapshotTable, quote_ident, quote_literal};
use crate::config::{CdcConfig, ProgressBarMode, SnapshotMode, split_table};
use crate::decode::envelope::SnapshotMarker;
use crate::decode::relation::Relation;
use crate::decode::types::Kind;
use crate::decode::{Decoder, now_ns};
use crate::error::CdcError;
use crate::metrics::{Metrics, TableLabels};
use crate::sink::Sink;

/// Whether a snapshot is to be taken now. With `when_needed`, a slot that had to be created
/// anew also resets earlier progress (the old position is gone, so is the old baseline).
pub async fn needed(
    pool: &sqlx::PgPool,
    config: &CdcConfig,
    slot_created: bool,
) -> Result<bool, CdcError> {
    if config.snapshot.mode == SnapshotMode::Never {
        return Ok(false);
    }
    if config.snapshot.mode == SnapshotMode::WhenNeeded && slot_created {
        sqlx::query("DELETE FROM _ficus.snapshot_progress WHERE slot_name = $1")
            .bind(&config.slot)
            .execute(pool)
            .await
            .map_err(CdcError::pg("resetting snapshot progress"))?;
        sqlx::query("DELETE FROM _ficus.snapshots WHERE slot_name = $1")
            .bind(&config.slot)
            .execute(pool)
            .await
            .map_err(CdcError::pg("resetting snapshot state"))?;
        return Ok(true);
    }
    let state: Option<(Option<chrono::DateTime<chrono::Utc>>,)> =
        sqlx::query_as("SELECT completed_at FROM _ficus.snapshots WHERE slot_name = $1")
            .bind(&config.slot)
            .fetch_optional(pool)
            .await
            .map_err(CdcError::pg("reading snapshot state"))?;
    Ok(match state {
        None => true,
        Some((completed,)) => completed.is_none(),
    })
}

/// A snapshot exported by a temporary replication slot; valid while this value lives.
struct ExportedSnapshot {
    _connection: PgReplicationConnection,
    name: String,
    lsn: u64,
}

impl ExportedSnapshot {
    fn create(replication_url: &str, slot: &str) -> Result<Self, CdcError> {
        let mut connection = PgReplicationConnection::connect(replication_url)?;
        let options = ReplicationSlotOptions {
            temporary: true,
            snapshot: Some("export".to_owned()),
            ..Default::default()
        };
        let temp = format!("{slot}_snapshot_{}", std::process::id());
        let temp: String = temp.chars().take(63).collect();
        let result = connection.create_replication_slot_with_options(
            &temp,
            SlotType::Logical,
            Some("pgoutput"),
            &options,
        )?;
        if !result.is_ok() {
            return Err(CdcError::Snapshot(format!(
                "creating the temporary slot {temp}: {}",
                result.error_message().unwrap_or_default()
            )));
        }
        let lsn_text = result.get_value(0, 1).unwrap_or_default();
        let lsn = pg_walstream::parse_lsn(&lsn_text)?;
        let name = result
            .get_value(0, 2)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| CdcError::Snapshot("the server exported no snapshot".to_owned()))?;
        Ok(Self {
            _connection: connection,
            name,
            lsn,
        })
    }
}

struct Progress {
    segment: i32,
    last_key: Option<Vec<String>>,
    done: bool,
}

/// Takes (or resumes) the snapshot of every published table.
pub async fn run(
    config: &CdcConfig,
    catalog: &mut Catalog,
    decoder: &Decoder,
    sink: &mut Sink,
    metrics: &Arc<Metrics>,
) -> Result<(), CdcError> {
    let pool = catalog.pool().clone();
    sqlx::query("INSERT INTO _ficus.snapshots (slot_name) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(&config.slot)
        .execute(&pool)
        .await
        .map_err(CdcError::pg("recording the snapshot"))?;
    let outboxes: Vec<(&str, &str)> = config
        .outbox
        .iter()
        .filter_map(|o| split_table(&o.table))
        .collect();
    let tables: Vec<(String, String)> = catalog
        .publication_tables(&config.publication)
        .await?
        .into_iter()
        .filter(|(schema, table)| {
            schema != crate::migrations::SCHEMA
                && !outboxes.contains(&(schema.as_str(), table.as_str()))
                && crate::decode::relation::is_captured(config, schema, table)
        })
        .collect();

    type ProgressRow = (String, String, i32, Option<Vec<String>>, bool);
    let rows: Vec<ProgressRow> = sqlx::query_as(
        "SELECT table_schema, table_name, segment, last_key, done FROM _ficus.snapshot_progress \
         WHERE slot_name = $1 ORDER BY segment",
    )
    .bind(&config.slot)
    .fetch_all(&pool)
    .await
    .map_err(CdcError::pg("reading snapshot progress"))?;
    let progress_of = |schema: &str, table: &str| -> Vec<Progress> {
        rows.iter()
            .filter(|r| r.0 == schema && r.1 == table)
            .map(|r| Progress {
                segment: r.2,
                last_key: r.3.clone(),
                done: r.4,
            })
            .collect()
    };
    // Debezium's order (by schema, then table): its first and last markers fall on the same rows.
    let mut tables = tables;
    tables.sort();
    let pending: Vec<&(String, String)> = tables
        .iter()
        .filter(|(s, t)| !progress_of(s, t).iter().any(|p| p.done))
        .collect();
    for (schema, table) in &tables {
        if !pending.contains(&&(schema.clone(), table.clone())) {
            metrics
                .snapshot_progress
                .get_or_create(&TableLabels {
                    table: format!("{schema}.{table}"),
                })
                .set(1.0);
        }
    }
    if pending.is_empty() {
        mark_complete(&pool, &config.slot).await?;
        return Ok(());
    }

    let replication_url = config.replication_url();
    let slot = config.slot.clone();
    let export = ExportedSnapshot::create(&replication_url, &slot)?;
    tracing::info!(
        snapshot = %export.name,
        lsn = %pg_walstream::format_lsn(export.lsn),
        tables = pending.len(),
        "snapshot exported; reading tables"
    );
    let mut conn = PgConnection::connect(&config.database_url)
        .await
        .map_err(CdcError::pg("connecting for the snapshot"))?;
    begin_at(&mut conn, &export.name).await?;
    let (xmin,): (i64,) =
        sqlx::query_as("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::int8")
            .fetch_one(&mut conn)
            .await
            .map_err(CdcError::pg("reading the snapshot's xmin"))?;
    // Which tables have rows: the first row of the first such table is marked `first`, the last
    // row of the last one `last` (Debezium's `source.snapshot` markers).
    let mut has_rows = Vec::with_capacity(pending.len());
    for (schema, table) in &pending {
        let (exists,): (bool,) = sqlx::query_as(&format!(
            "SELECT EXISTS (SELECT 1 FROM {}.{})",
            quote_ident(schema),
            quote_ident(table)
        ))
        .fetch_one(&mut conn)
        .await
        .map_err(CdcError::pg(format!("checking {schema}.{table} for rows")))?;
        has_rows.push(exists);
    }
    commit(&mut conn).await?;
    let first_with_rows = has_rows.iter().position(|h| *h);
    let last_with_rows = has_rows.iter().rposition(|h| *h);
    let started_us = now_ns().div_euclid(1000);

    let snapshotter = Snapshotter {
        config,
        decoder,
        metrics,
        pool: pool.clone(),
        snapshot_lsn: export.lsn,
        snapshot_name: export.name.clone(),
        started_us,
        xmin,
    };
    for (index, (schema, table)) in pending.into_iter().enumerate() {
        let span = tracing::info_span!("snapshot", slot = %config.slot, table = %format!("{schema}.{table}"));
        let previous = progress_of(schema, table);
        let place = Place {
            first_table: first_with_rows == Some(index),
            last_table: last_with_rows == Some(index),
        };
        let step: std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<(), CdcError>> + Send + '_>,
        > = Box::pin(snapshotter.table(catalog, sink, &mut conn, schema, table, previous, place));
        step.instrument(span).await?;
    }
    conn.close().await.ok();
    drop(export);
    mark_complete(&pool, &config.slot).await?;
    tracing::info!("snapshot complete");
    Ok(())
}

/// Where a table sits among the snapshot's tables that have rows.
#[derive(Debug, Clone, Copy)]
struct Place {
    first_table: bool,
    last_table: bool,
}

impl Place {
    /// Debezium's marker of a row, the first and last of the whole snapshot winning over
    /// those of its table.
    fn marker(self, first_of_table: bool, last_of_table: bool) -> SnapshotMarker {
        if last_of_table && self.last_table {
            SnapshotMarker::Last
        } else if first_of_table && self.first_table {
            SnapshotMarker::First
        } else if last_of_table {
            SnapshotMarker::LastInDataCollection
        } else if first_of_table {
            SnapshotMarker::FirstInDataCollection
        } else {
            SnapshotMarker::True
        }
    }
}

/// What every table of one snapshot shares.
struct Snapshotter<'a> {
    config: &'a CdcConfig,
    decoder: &'a Decoder,
    metrics: &'a Arc<Metrics>,
    pool: sqlx::PgPool,
    snapshot_lsn: u64,
    snapshot_name: String,
    started_us: i64,
    xmin: i64,
}

impl Snapshotter<'_> {
    /// One table: a new segment after the previous ones' last key.
    #[allow(clippy::too_many_arguments)] // The table, its progress and place, where rows go.
    async fn table(
        &self,
        catalog: &mut Catalog,
        sink: &mut Sink,
        conn: &mut PgConnection,
        schema: &str,
        table: &str,
        previous: Vec<Progress>,
        place: Place,
    ) -> Result<(), CdcError> {
        let config = self.config;
        let Some(info) = catalog.table(schema, table).await? else {
            tracing::warn!("table vanished before its snapshot; skipped");
            return Ok(());
        };
        let kinds = catalog.kinds(&info.spec.columns).await?;
        // Read by the snapshot: Debezium's snapshot writes infinite dates its own way.
        let kinds = kinds.into_iter().map(Kind::for_snapshot).collect();
        let relation = Relation::build(&info.spec, kinds, config);
        if !relation.has_primary_key() {
            tracing::warn!(
                keyed_null = !relation.has_message_key(),
                "table has no primary key: its snapshot cannot be chunked by key (read through a cursor, restarted whole after a crash); without message.key.columns its events are keyed null"
            );
        }
        let segment = previous.iter().map(|p| p.segment).max().unwrap_or(0) + 1;
        let lower = if relation.has_primary_key() {
            previous.iter().rev().find_map(|p| p.last_key.clone())
        } else {
            None
        };
        let (estimate,): (i64,) = sqlx::query_as(
            "SELECT GREATEST(c.reltuples, 0)::int8 FROM pg_class c WHERE c.oid = $1::int8::oid",
        )
        .bind(i64::from(info.spec.oid))
        .fetch_one(&self.pool)
        .await
        .map_err(CdcError::pg("estimating rows"))?;
        sqlx::query(
            "INSERT INTO _ficus.snapshot_progress \
             (slot_name, table_schema, table_name, segment, snapshot_lsn, rows_estimate) \
             VALUES ($1, $2, $3, $4, $5::pg_lsn, $6)",
        )
        .bind(&config.slot)
        .bind(schema)
        .bind(table)
        .bind(segment)
        .bind(pg_walstream::format_lsn(self.snapshot_lsn))
        .bind(estimate)
        .execute(&self.pool)
        .await
        .map_err(CdcError::pg("recording a snapshot segment"))?;
        sink.ensure_topic(
            &relation.topic,
            &relation.full_name,
            Duration::from_secs(10),
        )
        .await?;
        let reader = TableReader {
            config,
            info: &info,
            relation: &relation,
            decoder: self.decoder,
            metrics: self.metrics,
            segment,
            snapshot_lsn: self.snapshot_lsn,
            snapshot_name: &self.snapshot_name,
            started_us: self.started_us,
            xmin: self.xmin,
            estimate,
            place,
        };
        reader.read(conn, sink, &self.pool, lower).await
    }
}

/// Starts a read-only transaction at the exported snapshot. Each chunk has a transaction of
/// its own (the export stays valid while its replication connection is idle), so the table
/// locks a read takes are held for one chunk, not for the whole snapshot: DDL and the
/// monolith's own locks are not queued behind a snapshot of millions of rows.
async fn begin_at(conn: &mut PgConnection, snapshot: &str) -> Result<(), CdcError> {
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .await
        .map_err(CdcError::pg("starting a snapshot transaction"))?;
    conn.execute(format!("SET TRANSACTION SNAPSHOT {}", quote_literal(snapshot)).as_str())
        .await
        .map_err(CdcError::pg("importing the exported snapshot"))?;
    Ok(())
}

async fn commit(conn: &mut PgConnection) -> Result<(), CdcError> {
    conn.execute("COMMIT")
        .await
        .map_err(CdcError::pg("ending a snapshot transaction"))?;
    Ok(())
}

async fn mark_complete(pool: &sqlx::PgPool, slot: &str) -> Result<(), CdcError> {
    sqlx::query(
        "UPDATE _ficus.snapshots SET completed_at = now() WHERE slot_name = $1 AND completed_at IS NULL",
    )
    .bind(slot)
    .execute(pool)
    .await
    .map_err(CdcError::pg("recording the snapshot's completion"))?;
    Ok(())
}

struct TableReader<'a> {
    config: &'a CdcConfig,
    info: &'a SnapshotTable,
    relation: &'a Relation,
    decoder: &'a Decoder,
    metrics: &'a Arc<Metrics>,
    segment: i32,
    snapshot_lsn: u64,
    snapshot_name: &'a str,
    started_us: i64,
    xmin: i64,
    estimate: i64,
    place: Place,
}

impl TableReader<'_> {
    async fn read(
        &self,
        conn: &mut PgConnection,
        sink: &mut Sink,
        pool: &sqlx::PgPool,
        mut lower: Option<Vec<String>>,
    ) -> Result<(), CdcError> {
        let spec = &self.info.spec;
        let name = format!("{}.{}", spec.schema, spec.table);
        let chunk = i64::from(self.config.snapshot.chunk_rows);
        // Output columns are renamed (c0, c1, ...) and key columns qualified: ORDER BY "id"
        // would otherwise sort by the output column `"id"::text`, in text order.
        let select: Vec<String> = spec
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| select_text(&format!("s.{}", quote_ident(&c.name)), c.type_oid, i))
            .collect();
        let from = format!(
            "{}.{} AS s",
            quote_ident(&spec.schema),
            quote_ident(&spec.table)
        );
        let keyed = self.relation.has_primary_key();
        let key_cols: Vec<String> = spec
            .primary_key
            .iter()
            .map(|k| format!("s.{}", quote_ident(k)))
            .collect();
        let key_types = self.info.key_sql_types();
        if !keyed {
            // A cursor lives in one transaction: a table without a key is read in one.
            begin_at(conn, self.snapshot_name).await?;
            conn.execute(
                format!(
                    "DECLARE ficus_snapshot NO SCROLL CURSOR FOR SELECT {} FROM {from}",
                    select.join(", ")
                )
                .as_str(),
            )
            .await
            .map_err(CdcError::pg(format!("opening a cursor on {name}")))?;
        }
        let rows_counter = self
            .metrics
            .snapshot_rows
            .get_or_create(&TableLabels {
                table: name.clone(),
            })
            .clone();
        let events_counter = self.metrics.events_counter(&name, "r");
        let ratio = self
            .metrics
            .snapshot_progress
            .get_or_create(&TableLabels {
                table: name.clone(),
            })
            .clone();
        let progress = ProgressReport::new(
            &name,
            self.estimate.max(0) as u64,
            self.config.snapshot.progress_bar,
        );
        let mut done: i64 = 0;
        // The first row of this segment is the table's first unless an earlier segment ran.
        let mut first_pending = lower.is_none();
        // Keyless tables: the row read ahead to know whether a chunk is the last.
        let mut carry: Vec<Vec<Option<String>>> = Vec::new();
        loop {
            let mut last_chunk = false;
            let rows: Vec<Vec<Option<String>>> = if keyed {
                let mut sql = format!("SELECT {} FROM {from}", select.join(", "));
                if let Some(lower) = &lower {
                    let bounds: Vec<String> = (0..lower.len())
                        .map(|i| format!("(${}::text)::{}", i + 1, key_types[i]))
                        .collect();
                    sql.push_str(&format!(
                        " WHERE ({}) > ({})",
                        key_cols.join(", "),
                        bounds.join(", ")
                    ));
                }
                sql.push_str(&format!(" ORDER BY {} LIMIT {chunk}", key_cols.join(", ")));
                let mut query = sqlx::query(&sql);
                if let Some(lower) = &lower {
                    for value in lower {
                        query = query.bind(value);
                    }
                }
                begin_at(conn, self.snapshot_name).await?;
                let fetched = query
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(CdcError::pg(format!("reading a chunk of {name}")))?;
                let rows: Vec<Vec<Option<String>>> =
                    fetched.iter().map(row_texts).collect::<Result<_, _>>()?;
                last_chunk = (rows.len() as i64) < chunk
                    || !self
                        .more_after(conn, &from, &key_cols, &key_types, rows.last())
                        .await?;
                commit(conn).await?;
                rows
            } else {
                let want = chunk + 1 - carry.len() as i64;
                let fetched = sqlx::query(&format!("FETCH {want} FROM ficus_snapshot"))
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(CdcError::pg(format!("reading a chunk of {name}")))?;
                let mut rows = std::mem::take(&mut carry);
                for row in &fetched {
                    rows.push(row_texts(row)?);
                }
                if rows.len() as i64 > chunk {
                    carry = rows.split_off(chunk as usize);
                } else {
                    last_chunk = true;
                }
                rows
            };
            if rows.is_empty() {
                break;
            }
            tracing::debug!(
                rows = rows.len(),
                after = ?lower,
                first = ?rows.first().map(|r| self.relation.key.iter().map(|&i| r[i].clone()).collect::<Vec<_>>()),
                "chunk read"
            );
            if keyed {
                // Before sending: this chunk's keys may reach the topic from now on.
                let last = rows.last().expect("a non-empty chunk");
                let inflight: Vec<String> = self
                    .relation
                    .key
                    .iter()
                    .map(|&i| last[i].clone().unwrap_or_default())
                    .collect();
                sqlx::query(
                    "UPDATE _ficus.snapshot_progress SET inflight_key = $5, updated_at = now() \
                     WHERE slot_name = $1 AND table_schema = $2 AND table_name = $3 AND segment = $4",
                )
                .bind(&self.config.slot)
                .bind(&spec.schema)
                .bind(&spec.table)
                .bind(self.segment)
                .bind(&inflight)
                .execute(pool)
                .await
                .map_err(CdcError::pg("recording the chunk in flight"))?;
            }
            let count = rows.len();
            for (n, row) in rows.iter().enumerate() {
                let marker = self
                    .place
                    .marker(first_pending && n == 0, last_chunk && n + 1 == count);
                let record = self.decoder.snapshot_read(
                    self.relation,
                    row,
                    self.snapshot_lsn,
                    self.started_us,
                    Some(self.xmin as u64),
                    marker,
                );
                sink.send(&record, self.config.kafka.max_inflight_events)
                    .await?;
            }
            // The chunk counts as done once the broker has every one of its events.
            let bound = sink.tracker().next_seq();
            loop {
                if sink
                    .tracker()
                    .wait_until(Duration::from_secs(5), |t| t.acked_below(bound))
                    .await
                {
                    break;
                }
                if let Some(failure) = sink.tracker().failure() {
                    return Err(CdcError::Delivery(failure));
                }
                tracing::info!("waiting for the broker to acknowledge the chunk");
            }
            // The broker has the chunk; its progress row is not written yet.
            crate::failpoint::hit(crate::failpoint::SNAPSHOT_CHUNK_PUBLISHED);
            done += rows.len() as i64;
            rows_counter.inc_by(rows.len() as u64);
            events_counter.inc_by(rows.len() as u64);
            if keyed {
                let last = rows.last().expect("a non-empty chunk");
                let key: Vec<String> = self
                    .relation
                    .key
                    .iter()
                    .map(|&i| last[i].clone().unwrap_or_default())
                    .collect();
                lower = Some(key);
            }
            sqlx::query(
                "UPDATE _ficus.snapshot_progress SET last_key = $5, inflight_key = NULL, \
                 rows_done = rows_done + $6, updated_at = now() WHERE slot_name = $1 AND table_schema = $2 AND table_name = $3 AND segment = $4",
            )
            .bind(&self.config.slot)
            .bind(&spec.schema)
            .bind(&spec.table)
            .bind(self.segment)
            .bind(&lower)
            .bind(rows.len() as i64)
            .execute(pool)
            .await
            .map_err(CdcError::pg("recording snapshot progress"))?;
            if self.estimate > 0 {
                ratio.set((done as f64 / self.estimate as f64).min(0.999));
            }
            progress.advance(rows.len() as u64);
            first_pending = false;
            if last_chunk {
                break;
            }
        }
        if !keyed {
            conn.execute("CLOSE ficus_snapshot")
                .await
                .map_err(CdcError::pg("closing the snapshot cursor"))?;
            commit(conn).await?;
        }
        sqlx::query(
            "UPDATE _ficus.snapshot_progress SET done = true, updated_at = now() \
             WHERE slot_name = $1 AND table_schema = $2 AND table_name = $3 AND segment = $4",
        )
        .bind(&self.config.slot)
        .bind(&spec.schema)
        .bind(&spec.table)
        .bind(self.segment)
        .execute(pool)
        .await
        .map_err(CdcError::pg("recording a finished table"))?;
        ratio.set(1.0);
        progress.finish(done as u64);
        Ok(())
    }
}

impl TableReader<'_> {
    /// Whether the table has a row after `last` in key order (inside the chunk's transaction).
    async fn more_after(
        &self,
        conn: &mut PgConnection,
        from: &str,
        key_cols: &[String],
        key_types: &[String],
        last: Option<&Vec<Option<String>>>,
    ) -> Result<bool, CdcError> {
        let Some(last) = last else {
            return Ok(false);
        };
        let bounds: Vec<String> = (0..key_cols.len())
            .map(|i| format!("(${}::text)::{}", i + 1, key_types[i]))
            .collect();
        let sql = format!(
            "SELECT EXISTS (SELECT 1 FROM {from} WHERE ({}) > ({}))",
            key_cols.join(", "),
            bounds.join(", ")
        );
        let mut query = sqlx::query_as::<_, (bool,)>(&sql);
        for &i in &self.relation.key {
            query = query.bind(last[i].clone().unwrap_or_default());
        }
        let (more,) = query
            .fetch_one(&mut *conn)
            .await
            .map_err(CdcError::pg("looking ahead in a snapshot"))?;
        Ok(more)
    }
}

/// A column read as the text PostgreSQL's output function gives, as pgoutput sends it: a cast
/// to `text` is the same for most types but drops `char(n)`'s padding and adds a netmask to
/// `inet` and `cidr` hosts, so those go through `format('%s', ..)` (NULL kept).
fn select_text(column: &str, type_oid: u32, index: usize) -> String {
    const BPCHAR: u32 = 1042;
    const INET: u32 = 869;
    const CIDR: u32 = 650;
    if matches!(type_oid, BPCHAR | INET | CIDR) {
        format!("CASE WHEN {column} IS NULL THEN NULL ELSE format('%s', {column}) END AS c{index}")
    } else {
        format!("{column}::text AS c{index}")
    }
}

fn row_texts(row: &sqlx::postgres::PgRow) -> Result<Vec<Option<String>>, CdcError> {
    (0..row.len())
        .map(|i| {
            row.try_get::<Option<String>, _>(i)
                .map_err(CdcError::pg("decoding a snapshot row"))
        })
        .collect()
}

/// Rows/s and ETA: a progress bar on a terminal, a log line every 10 s otherwise.
struct ProgressReport {
    bar: Option<ProgressBar>,
    table: String,
    total: u64,
    done: std::cell::Cell<u64>,
    started: Instant,
    last_log: std::cell::Cell<Instant>,
}

impl ProgressReport {
    fn new(table: &str, total: u64, mode: ProgressBarMode) -> Self {
        let bar = (mode == ProgressBarMode::Auto && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix} [{bar:30}] {human_pos}/{human_len} rows, {per_sec}, ETA {eta}",
                )
                .expect("a valid template")
                .progress_chars("=> "),
            );
            bar.set_prefix(table.to_owned());
            bar
        });
        Self {
            bar,
            table: table.to_owned(),
            total,
            done: std::cell::Cell::new(0),
            started: Instant::now(),
            last_log: std::cell::Cell::new(Instant::now()),
        }
    }

    fn advance(&self, rows: u64) {
        self.done.set(self.done.get() + rows);
        if let Some(bar) = &self.bar {
            if self.done.get() > bar.length().unwrap_or(0) {
                bar.set_length(self.done.get());
            }
            bar.inc(rows);
            return;
        }
        if self.last_log.get().elapsed() >= Duration::from_secs(10) {
            self.last_log.set(Instant::now());
            let elapsed = self.started.elapsed().as_secs_f64().max(0.001);
            let rate = self.done.get() as f64 / elapsed;
            let eta = if rate > 0.0 && self.total > self.done.get() {
                format!("{:.0}s", (self.total - self.done.get()) as f64 / rate)
            } else {
                "?".to_owned()
            };
            tracing::info!(table = %self.table, rows = self.done.get(), estimate = self.total, rows_per_sec = rate as u64, %eta, "snapshot progress");
        }
    }

    fn finish(&self, rows: u64) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
        let elapsed = self.started.elapsed().as_secs_f64().max(0.001);
        tracing::info!(
            table = %self.table,
            rows,
            rows_per_sec = (rows as f64 / elapsed) as u64,
            "table snapshot done"
        );
    }
}
