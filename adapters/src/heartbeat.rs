//! Background tasks beside the stream: the heartbeat write (`_ficus.heartbeat`, an action
//! query that moves the slot even when the captured tables are idle or filtered out) and the
//! slot-lag monitor (`ficus_cdc_slot_lag_bytes`).

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::task::JoinHandle;

use crate::error::CdcError;
use crate::metrics::Metrics;

/// Writes one heartbeat row.
pub async fn beat(pool: &PgPool, slot: &str) -> Result<(), CdcError> {
    sqlx::query(
        "INSERT INTO _ficus.heartbeat (slot_name, beat_at, beats) VALUES ($1, now(), 1) \
         ON CONFLICT (slot_name) DO UPDATE SET beat_at = now(), beats = _ficus.heartbeat.beats + 1",
    )
    .bind(slot)
    .execute(pool)
    .await
    .map_err(CdcError::pg("writing the heartbeat"))?;
    Ok(())
}

/// Writes a heartbeat every `interval` until aborted. Failures are logged, not fatal: the
/// stream's own reconnection handles a database that went away.
pub fn spawn_heartbeat(
    pool: PgPool,
    slot: String,
    interval: Duration,
    metrics: Arc<Metrics>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            match beat(&pool, &slot).await {
                Ok(()) => {
                    metrics.heartbeats.inc();
                }
                Err(error) => tracing::warn!(%error, "heartbeat failed"),
            }
        }
    })
}

/// The slot's lag in bytes: the server's WAL insert position minus the confirmed one. The
/// insert position, not `pg_current_wal_lsn()` (the write position), which with
/// `synchronous_commit = off` lies below commits already made until the WAL writer's next round:
/// those commits are lag too.
pub async fn slot_lag_bytes(pool: &PgPool, slot: &str) -> Result<Option<i64>, CdcError> {
    let row: Option<(Option<i64>,)> = sqlx::query_as(
        "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), confirmed_flush_lsn)::int8 \
         FROM pg_replication_slots WHERE slot_name = $1",
    )
    .bind(slot)
    .fetch_optional(pool)
    .await
    .map_err(CdcError::pg("reading the slot's lag"))?;
    Ok(row.and_then(|(lag,)| lag))
}

/// Refreshes `ficus_cdc_slot_lag_bytes` every `interval` until aborted.
pub fn spawn_lag_monitor(
    pool: PgPool,
    slot: String,
    interval: Duration,
    metrics: Arc<Metrics>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            match slot_lag_bytes(&pool, &slot).await {
                Ok(Some(lag)) => {
                    metrics.slot_lag_bytes.set(lag);
                }
                Ok(None) => {}
                Err(error) => tracing::debug!(%error, "slot lag unavailable"),
            }
        }
    })
}
