//! `ficus cdc status`: the slot's position and lag, the publication, the last heartbeat and
//! the snapshot's state, read from PostgreSQL (it works whether the adapter runs or not), and
//! the running adapter's health, asked on its `metrics_listen` address (`/healthz`): a failure
//! that stopped the pipeline shows there with its class and cause.

use std::fmt;

use serde::Serialize;
use sqlx::{Connection, PgConnection};

use crate::config::CdcConfig;
use crate::error::CdcError;
use crate::health::HealthReport;

#[derive(Debug, Serialize)]
pub struct Status {
    pub slot: String,
    /// The server's WAL insert position (`pg_current_wal_insert_lsn()`): the end of everything
    /// committed, whether or not the WAL writer has written it yet.
    pub wal_insert_lsn: String,
    pub slot_state: Option<SlotState>,
    pub publication: Option<PublicationState>,
    pub heartbeat: Option<HeartbeatState>,
    pub snapshot: SnapshotState,
    pub adapter: AdapterState,
}

/// The running adapter, as its `/healthz` answers.
#[derive(Debug, Serialize)]
pub struct AdapterState {
    /// Where it was asked.
    pub address: String,
    /// Its health; `None` when nothing answered.
    pub health: Option<HealthReport>,
    /// Why nothing answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unreachable: Option<String>,
}

impl AdapterState {
    /// Asks the adapter configured by `config` for its health.
    pub async fn fetch(config: &CdcConfig) -> Self {
        let addr = config.metrics_addr();
        let (health, unreachable) = match crate::health::fetch(addr).await {
            Ok(report) => (Some(report), None),
            Err(why) => (None, Some(why)),
        };
        Self {
            address: addr.to_string(),
            health,
            unreachable,
        }
    }
}

impl fmt::Display for AdapterState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_health(f)?;
        if let Some(letters) = self.health.as_ref().and_then(|h| h.dead_letters.as_ref()) {
            writeln!(
                f,
                "  dead letters: {} in {} (placeholders in their place); last: table {} key {} ({} bytes, {})",
                letters.count,
                letters.topic,
                letters.last.table,
                letters.last.key,
                letters.last.size,
                letters.last_cause
            )?;
        }
        Ok(())
    }
}

impl AdapterState {
    fn fmt_health(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.health, &self.unreachable) {
            (Some(h), _) if h.is_ok() => writeln!(f, "adapter: healthy (on {})", self.address),
            (Some(h), _) => {
                writeln!(
                    f,
                    "adapter: FAILED, stopped without retrying (class {}, cause {})",
                    h.class.as_deref().unwrap_or("?"),
                    h.cause.as_deref().unwrap_or("?")
                )?;
                if let Some(record) = &h.record {
                    writeln!(
                        f,
                        "  refused record: table {} key {} size {} bytes (topic {})",
                        record.table, record.key, record.size, record.topic
                    )?;
                }
                if let Some(error) = &h.error {
                    writeln!(f, "  {error}")?;
                }
                if let Some(since) = h.since {
                    writeln!(f, "  since {}", since.to_rfc3339())?;
                }
                Ok(())
            }
            (None, why) => writeln!(
                f,
                "adapter: not answering on {} ({})",
                self.address,
                why.as_deref().unwrap_or("unknown")
            ),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct SlotState {
    pub plugin: Option<String>,
    pub active: bool,
    pub active_pid: Option<i32>,
    pub restart_lsn: Option<String>,
    pub confirmed_flush_lsn: Option<String>,
    /// WAL bytes from the confirmed position to the server's insert position.
    pub lag_bytes: Option<i64>,
    pub wal_status: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct PublicationState {
    pub name: String,
    pub all_tables: bool,
    pub tables: i64,
}

#[derive(Debug, Serialize)]
pub struct HeartbeatState {
    pub beat_at: chrono::DateTime<chrono::Utc>,
    pub seconds_ago: f64,
    pub beats: i64,
}

#[derive(Debug, Serialize)]
pub struct SnapshotState {
    /// `not started`, `in progress`, `complete`.
    pub state: String,
    pub completed_at: Option<chrono::DateTime<chrono::Utc>>,
    pub tables: Vec<TableSnapshot>,
}

#[derive(Debug, Serialize)]
pub struct TableSnapshot {
    pub table: String,
    pub rows_done: i64,
    pub rows_estimate: i64,
    pub segments: i64,
    pub done: bool,
}

/// Reads the status.
pub async fn gather(config: &CdcConfig) -> Result<Status, CdcError> {
    let adapter = AdapterState::fetch(config).await;
    let mut conn = PgConnection::connect(&config.database_url)
        .await
        .map_err(CdcError::pg("connecting to the database"))?;
    let (wal_insert_lsn,): (String,) = sqlx::query_as("SELECT pg_current_wal_insert_lsn()::text")
        .fetch_one(&mut conn)
        .await
        .map_err(CdcError::pg("reading the WAL position"))?;
    type SlotRow = (
        Option<String>,
        bool,
        Option<i32>,
        Option<String>,
        Option<String>,
        Option<i64>,
        Option<String>,
    );
    let slot_state = sqlx::query_as::<_, SlotRow>(
        "SELECT plugin::text, active, active_pid, restart_lsn::text, confirmed_flush_lsn::text, \
                pg_wal_lsn_diff(pg_current_wal_insert_lsn(), confirmed_flush_lsn)::int8, wal_status \
         FROM pg_replication_slots WHERE slot_name = $1",
    )
    .bind(&config.slot)
    .fetch_optional(&mut conn)
    .await
    .map_err(CdcError::pg("reading the slot"))?
    .map(
        |(plugin, active, active_pid, restart_lsn, confirmed_flush_lsn, lag_bytes, wal_status)| {
            SlotState {
                plugin,
                active,
                active_pid,
                restart_lsn,
                confirmed_flush_lsn,
                lag_bytes,
                wal_status,
            }
        },
    );
    let publication = sqlx::query_as::<_, (bool, i64)>(
        "SELECT p.puballtables, (SELECT count(*) FROM pg_publication_tables t WHERE t.pubname = p.pubname) \
         FROM pg_publication p WHERE p.pubname = $1",
    )
    .bind(&config.publication)
    .fetch_optional(&mut conn)
    .await
    .map_err(CdcError::pg("reading the publication"))?
    .map(|(all_tables, tables)| PublicationState {
        name: config.publication.clone(),
        all_tables,
        tables,
    });
    let (has_schema,): (bool,) =
        sqlx::query_as("SELECT to_regclass('_ficus.snapshot_progress') IS NOT NULL")
            .fetch_one(&mut conn)
            .await
            .map_err(CdcError::pg("looking for schema _ficus"))?;
    let mut heartbeat = None;
    let mut snapshot = SnapshotState {
        state: "not started".to_owned(),
        completed_at: None,
        tables: Vec::new(),
    };
    if has_schema {
        heartbeat = sqlx::query_as::<_, (chrono::DateTime<chrono::Utc>, f64, i64)>(
            "SELECT beat_at, extract(epoch FROM now() - beat_at)::float8, beats \
             FROM _ficus.heartbeat WHERE slot_name = $1",
        )
        .bind(&config.slot)
        .fetch_optional(&mut conn)
        .await
        .map_err(CdcError::pg("reading the heartbeat"))?
        .map(|(beat_at, seconds_ago, beats)| HeartbeatState {
            beat_at,
            seconds_ago,
            beats,
        });
        let state: Option<(Option<chrono::DateTime<chrono::Utc>>,)> =
            sqlx::query_as("SELECT completed_at FROM _ficus.snapshots WHERE slot_name = $1")
                .bind(&config.slot)
                .fetch_optional(&mut conn)
                .await
                .map_err(CdcError::pg("reading the snapshot state"))?;
        if let Some((completed_at,)) = state {
            snapshot.state = if completed_at.is_some() {
                "complete".to_owned()
            } else {
                "in progress".to_owned()
            };
            snapshot.completed_at = completed_at;
        }
        let rows: Vec<(String, i64, i64, i64, bool)> = sqlx::query_as(
            "SELECT table_schema || '.' || table_name, sum(rows_done)::int8, max(rows_estimate)::int8, \
                    count(*), bool_or(done) \
             FROM _ficus.snapshot_progress WHERE slot_name = $1 \
             GROUP BY table_schema, table_name ORDER BY 1",
        )
        .bind(&config.slot)
        .fetch_all(&mut conn)
        .await
        .map_err(CdcError::pg("reading snapshot progress"))?;
        snapshot.tables = rows
            .into_iter()
            .map(
                |(table, rows_done, rows_estimate, segments, done)| TableSnapshot {
                    table,
                    rows_done,
                    rows_estimate,
                    segments,
                    done,
                },
            )
            .collect();
    }
    conn.close().await.ok();
    Ok(Status {
        slot: config.slot.clone(),
        wal_insert_lsn,
        slot_state,
        publication,
        heartbeat,
        snapshot,
        adapter,
    })
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.adapter)?;
        match &self.slot_state {
            None => writeln!(
                f,
                "slot {}: missing (created at the first `ficus cdc run`)",
                self.slot
            )?,
            Some(slot) => {
                let activity = match (slot.active, slot.active_pid) {
                    (true, Some(pid)) => format!("active (walsender pid {pid})"),
                    (true, None) => "active".to_owned(),
                    (false, _) => "inactive (no adapter streaming)".to_owned(),
                };
                writeln!(
                    f,
                    "slot {} ({}): {activity}",
                    self.slot,
                    slot.plugin.as_deref().unwrap_or("?")
                )?;
                writeln!(
                    f,
                    "  confirmed_flush_lsn {}   restart_lsn {}   server wal (insert) {}",
                    slot.confirmed_flush_lsn.as_deref().unwrap_or("-"),
                    slot.restart_lsn.as_deref().unwrap_or("-"),
                    self.wal_insert_lsn
                )?;
                writeln!(
                    f,
                    "  lag {}{}",
                    slot.lag_bytes
                        .map(human_bytes)
                        .unwrap_or_else(|| "unknown".to_owned()),
                    slot.wal_status
                        .as_deref()
                        .map(|s| format!("   wal_status {s}"))
                        .unwrap_or_default()
                )?;
            }
        }
        match &self.publication {
            None => writeln!(f, "publication: missing")?,
            Some(p) if p.all_tables => {
                writeln!(f, "publication {}: all tables ({} now)", p.name, p.tables)?
            }
            Some(p) => writeln!(f, "publication {}: {} tables", p.name, p.tables)?,
        }
        match &self.heartbeat {
            None => writeln!(f, "heartbeat: none yet")?,
            Some(h) => writeln!(
                f,
                "heartbeat: last at {} ({:.1} s ago, {} in all)",
                h.beat_at.to_rfc3339(),
                h.seconds_ago,
                h.beats
            )?,
        }
        write!(f, "snapshot: {}", self.snapshot.state)?;
        if let Some(at) = self.snapshot.completed_at {
            write!(f, " at {}", at.to_rfc3339())?;
        }
        writeln!(f)?;
        for table in &self.snapshot.tables {
            writeln!(
                f,
                "  {:<40} {:>10} rows of ~{:<10} {} ({} segment{})",
                table.table,
                table.rows_done,
                table.rows_estimate,
                if table.done { "done" } else { "in progress" },
                table.segments,
                if table.segments == 1 { "" } else { "s" }
            )?;
        }
        Ok(())
    }
}

fn human_bytes(n: i64) -> String {
    let abs = n.unsigned_abs() as f64;
    let (value, unit) = if abs >= 1024.0 * 1024.0 * 1024.0 {
        (abs / (1024.0 * 1024.0 * 1024.0), "GiB")
    } else if abs >= 1024.0 * 1024.0 {
        (abs / (1024.0 * 1024.0), "MiB")
    } else if abs >= 1024.0 {
        (abs / 1024.0, "KiB")
    } else {
        return format!("{n} bytes");
    };
    format!("{value:.1} {unit} ({n} bytes)")
}
