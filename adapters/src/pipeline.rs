//! The supervisor: set up, snapshot when needed, stream. Each failure is classified
//! ([`CdcError::classify`]): a retriable one (PostgreSQL restarting, the connection dropped, the
//! broker down) waits with exponential backoff and starts over from the last confirmed position;
//! one no retry fixes (an operator's setting, a record the broker never takes) stops the
//! pipeline, and the process stays up unhealthy (`/healthz` 503 with the cause,
//! `ficus_cdc_failed{class,cause}` = 1) until it is stopped, so the operator sees the cause
//! instead of a restart loop.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pg_walstream::CancellationToken;
use sqlx::postgres::PgPoolOptions;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::catalog::Catalog;
use crate::config::CdcConfig;
use crate::decode::Decoder;
use crate::error::CdcError;
use crate::error::ErrorClass;
use crate::metrics::{FailedLabels, Metrics, RefusedLabels, RestartLabels};
use crate::sink::Sink;
use crate::snapshot::filter::SnapshotFilter;
use crate::source::Streamer;
use crate::source::setup;
use crate::{heartbeat, metrics, migrations, snapshot};

/// Aborts a background task when dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs the adapter until `shutdown` is cancelled: binds the metrics listener from the
/// configuration, then [`run_with_listener`].
pub async fn run(mut config: CdcConfig, shutdown: CancellationToken) -> Result<(), CdcError> {
    config.validate()?;
    let listener = metrics::bind(config.metrics_addr()).await?;
    run_validated(config, listener, Arc::new(Metrics::default()), shutdown).await
}

/// Runs the adapter with a metrics listener the caller bound (tests bind `127.0.0.1:0`).
pub async fn run_with_listener(
    mut config: CdcConfig,
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> Result<(), CdcError> {
    config.validate()?;
    run_validated(config, listener, metrics, shutdown).await
}

/// [`run_with_listener`] with `config` validated (its lists compiled) once.
async fn run_validated(
    config: CdcConfig,
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> Result<(), CdcError> {
    // pg_walstream's driver on a current-thread runtime drops frames it already read when a
    // read is cancelled, which the stream does every feedback interval: refuse it.
    if tokio::runtime::Handle::current().runtime_flavor()
        == tokio::runtime::RuntimeFlavor::CurrentThread
    {
        return Err(CdcError::Setup(
            "the adapter needs a multi-thread tokio runtime (pg_walstream's inline driver)"
                .to_owned(),
        ));
    }
    let config = Arc::new(config);
    tracing::info!(
        slot = %config.slot,
        metrics = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        "ficus cdc starting"
    );
    let _metrics_task = AbortOnDrop(tokio::spawn(metrics::serve(listener, metrics.clone())));
    let span = tracing::info_span!("cdc", slot = %config.slot);
    supervise(config, metrics, shutdown).instrument(span).await
}

async fn supervise(
    config: Arc<CdcConfig>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> Result<(), CdcError> {
    let mut sink: Option<Sink> = None;
    let initial = Duration::from_millis(500);
    let mut backoff = initial;
    loop {
        if shutdown.is_cancelled() {
            return Ok(());
        }
        let started = Instant::now();
        let result = tokio::select! {
            result = attempt(&config, &metrics, &mut sink, &shutdown) => result,
            // Setup and snapshot steps are not cancellation-aware on their own; their progress
            // is recorded as they go, so dropping them is safe.
            () = shutdown.cancelled() => Err(CdcError::Stopped),
        };
        match result {
            Ok(()) | Err(CdcError::Stopped) => return Ok(()),
            Err(error) => {
                let classified = error.classify();
                if classified.class != ErrorClass::Retry {
                    return stop_failed(error, &metrics, &shutdown).await;
                }
                let reason = match &error {
                    CdcError::Postgres { .. } | CdcError::Replication(_) => "postgres",
                    CdcError::Kafka { .. } | CdcError::Delivery(_) => "kafka",
                    _ => "other",
                };
                metrics
                    .restarts
                    .get_or_create(&RestartLabels {
                        reason,
                        cause: classified.cause,
                    })
                    .inc();
                if matches!(error, CdcError::Delivery(_)) {
                    // The producer's state is suspect: a fresh one, and the stream starts
                    // again from the last position confirmed to PostgreSQL.
                    sink = None;
                }
                if started.elapsed() > Duration::from_secs(60) {
                    backoff = initial;
                }
                tracing::warn!(
                    error = %error,
                    cause = classified.cause,
                    retry_in_ms = backoff.as_millis() as u64,
                    "pipeline interrupted; restarting"
                );
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = shutdown.cancelled() => return Ok(()),
                }
                backoff = (backoff * 2).min(config.max_backoff());
            }
        }
    }
}

/// A failure no retry fixes: report it (health, metric, log) and wait for the shutdown without
/// retrying; the run then ends with the failure, so the exit status says it failed.
async fn stop_failed(
    error: CdcError,
    metrics: &Metrics,
    shutdown: &CancellationToken,
) -> Result<(), CdcError> {
    let classified = error.classify();
    metrics
        .health
        .fail(classified.class, classified.cause, &error);
    metrics
        .failed
        .get_or_create(&FailedLabels {
            class: classified.class.as_str(),
            cause: classified.cause,
        })
        .set(1);
    if let CdcError::Delivery(failure) = &error
        && let Some(record) = &failure.record
    {
        metrics
            .refused_record
            .get_or_create(&RefusedLabels {
                table: metrics::label_value(&record.table),
                topic: metrics::label_value(&record.topic),
                key: metrics::label_value(&record.key),
                cause: classified.cause,
            })
            .set(record.size as i64);
    }
    tracing::error!(
        error = %error,
        class = %classified.class,
        cause = classified.cause,
        "pipeline stopped: no retry can fix this; /healthz reports it until the adapter is restarted"
    );
    shutdown.cancelled().await;
    Err(error)
}

async fn attempt(
    config: &Arc<CdcConfig>,
    metrics: &Arc<Metrics>,
    sink_slot: &mut Option<Sink>,
    shutdown: &CancellationToken,
) -> Result<(), CdcError> {
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(10))
        .connect(&config.database_url)
        .await
        .map_err(CdcError::pg("connecting to the database"))?;
    let server_version = setup::check_server(&pool).await?;
    setup::check_schema_role(&pool).await?;
    migrations::apply(&pool).await?;
    setup::ensure_publication(&pool, config).await?;
    let slot_created = setup::ensure_slot(&pool, &config.slot).await?;
    if sink_slot.is_none() {
        *sink_slot = Some(Sink::new(config, metrics.clone())?);
    }
    let sink = sink_slot.as_mut().expect("a sink");
    // The dead-letter and transaction topics exist before the first record may need them.
    sink.prepare(Duration::from_secs(5)).await?;
    let mut catalog = Catalog::new(pool.clone());
    if snapshot::needed(&pool, config, slot_created).await? {
        let decoder = Decoder::new(config.clone());
        snapshot::run(config, &mut catalog, &decoder, sink, metrics).await?;
    }
    let filter = if config.snapshot.mode == crate::config::SnapshotMode::Never {
        SnapshotFilter::none()
    } else {
        SnapshotFilter::load(&mut catalog, &config.slot).await?
    };
    let _heartbeat =
        (config.heartbeat.interval_ms > 0 && config.heartbeat.write_table).then(|| {
            AbortOnDrop(heartbeat::spawn_heartbeat(
                pool.clone(),
                config.slot.clone(),
                Duration::from_millis(config.heartbeat.interval_ms),
                metrics.clone(),
            ))
        });
    let _lag = AbortOnDrop(heartbeat::spawn_lag_monitor(
        pool.clone(),
        config.slot.clone(),
        Duration::from_secs(5),
        metrics.clone(),
    ));
    let streamer = Streamer::connect(
        config.clone(),
        server_version,
        catalog,
        sink,
        filter,
        metrics.clone(),
        shutdown.clone(),
    )
    .await?;
    streamer.run().await
}

/// Compile-time check that the steps' futures are `Send` (sqlx executors over `&mut` are easy
/// to get wrong there, and the error otherwise surfaces far away, at a `tokio::spawn`).
#[allow(dead_code)]
fn assert_futures_are_send(
    config: &Arc<CdcConfig>,
    metrics: &Arc<Metrics>,
    catalog: &mut Catalog,
    decoder: &Decoder,
    sink: &mut Sink,
    pool: &sqlx::PgPool,
) {
    fn is_send<T: Send>(_: T) {}
    is_send(snapshot::run(config, catalog, decoder, sink, metrics));
    is_send(migrations::apply(pool));
    is_send(SnapshotFilter::load(catalog, "x"));
    is_send(setup::ensure_publication(pool, config));
    is_send(snapshot::needed(pool, config, true));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_current_thread_runtime_is_refused() {
        let config = CdcConfig::load(
            None,
            [
                ("FICUS_CDC__DATABASE_URL", "postgres://u:p@127.0.0.1:1/db"),
                ("FICUS_CDC__KAFKA__BROKERS", "127.0.0.1:1"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        )
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let error = run_with_listener(
            config,
            listener,
            Arc::new(Metrics::default()),
            CancellationToken::new(),
        )
        .await
        .unwrap_err();
        assert!(error.to_string().contains("multi-thread"), "{error}");
    }
}
