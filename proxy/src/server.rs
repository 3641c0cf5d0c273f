//! The client-facing listener: HTTP/1.1 and HTTP/2 on one port (h2c prior knowledge, or TLS
//! with ALPN under `[proxy.tls]`), a cap on open connections, accept errors backed off, and
//! graceful shutdown that drains within a bound. Each connection's deadlines are in
//! [`crate::connection`]; `[proxy.connections]` and `[proxy.tls]` of the table in force apply to
//! connections accepted after a reload.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::config::ConnectionSettings;
use crate::connection::{Deadlines, Slot, serve_connection};
use crate::handler::Proxy;

/// Listener settings that are not in the routes file (they cannot change on reload).
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// A client must send its whole header section within this time.
    pub header_read_timeout: Duration,
    /// How long shutdown waits for in-flight requests and tunnels.
    pub shutdown_grace: Duration,
    /// Hard cap on an HTTP/1 header section (hyper answers 431 itself past it; the routes
    /// file's `max_header_bytes` is the finer, JSON-answered limit below it).
    pub max_header_bytes_hard: usize,
    /// Forward HTTP/1 header names in the case the client wrote them (legacy apps sometimes
    /// depend on it; costs about 5% of throughput, see docs/BENCHMARKS.md).
    pub preserve_header_case: bool,
    /// Which code serves HTTP/1.1 clients: the lean path (default; it hands to hyper what it
    /// does not serve) or hyper for every connection.
    pub http1: crate::lean::Http1Path,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(10),
            max_header_bytes_hard: 64 * 1024,
            preserve_header_case: true,
            http1: crate::lean::Http1Path::default(),
        }
    }
}

/// Serves `listener` until `shutdown` completes, then stops accepting, lets in-flight requests
/// and tunnels finish within `shutdown_grace`, and returns.
///
/// Each accepted socket is one [`serve_connection`] task with its deadlines; past
/// `max_connections` open ones a new socket is closed at once (and counted); a failed accept
/// (out of descriptors) backs off instead of spinning, logged once per streak.
pub async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    settings: ServerSettings,
    shutdown: impl Future<Output = ()>,
) {
    let metrics = proxy.metrics.clone();
    let auto_max = default_max_connections();
    tracing::info!(
        max_connections = auto_max,
        "default connection cap (half the descriptor limit)"
    );
    // Connections hold a receiver: `true` asks them to close gracefully, and the sender sees
    // when the last one is gone.
    let (stop, stopping) = watch::channel(false);
    let mut builder: Option<(u64, Arc<auto::Builder<TokioExecutor>>)> = None;
    let mut accept_errors = AcceptErrors::default();
    let mut refused = Refusals::default();
    let lean = (settings.http1 == crate::lean::Http1Path::Lean).then_some(crate::lean::Settings {
        header_read_timeout: settings.header_read_timeout,
        max_head_bytes: settings.max_header_bytes_hard.max(8192),
    });
    tokio::pin!(shutdown);
    loop {
        let (stream, client) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => {
                    accept_errors.recovered();
                    accepted
                }
                Err(error) => {
                    metrics.accept_errors.inc();
                    let pause = accept_errors.failed(&error);
                    tokio::select! {
                        () = tokio::time::sleep(pause) => continue,
                        () = &mut shutdown => break,
                    }
                }
            },
            () = &mut shutdown => break,
        };
        let table = proxy.table();
        let connections = &table.file.proxy.connections;
        let max = connections.max_connections.unwrap_or(auto_max);
        if metrics.connections_open.get() >= i64::try_from(max).unwrap_or(i64::MAX) {
            metrics.connections_refused.inc();
            refused.refused(max);
            drop(stream);
            continue;
        }
        let slot = Slot::take(&metrics.connections_open);
        let _ = stream.set_nodelay(true);
        let builder = match &builder {
            Some((version, builder)) if *version == table.version => builder.clone(),
            _ => {
                let made = Arc::new(http_builder(&settings, connections));
                builder = Some((table.version, made.clone()));
                made
            }
        };
        let tls = table
            .file
            .proxy
            .tls
            .as_ref()
            .and_then(|tls| tls.loaded.as_ref())
            .map(|loaded| TlsAcceptor::from(loaded.config.clone()));
        tokio::spawn(serve_connection(
            stream,
            client,
            slot,
            Deadlines::from(connections),
            tls,
            builder,
            lean,
            proxy.clone(),
            stopping.clone(),
        ));
    }
    drop(stopping);
    tracing::info!("draining connections");
    let _ = stop.send(true);
    let tunnels = proxy.tunnels.drain(settings.shutdown_grace);
    let connections = async {
        if tokio::time::timeout(settings.shutdown_grace, stop.closed())
            .await
            .is_err()
        {
            tracing::warn!("connections still open at the end of the grace period");
        }
    };
    tokio::join!(tunnels, connections);
}

/// The HTTP/1.1 and HTTP/2 settings of connections accepted under one table.
fn http_builder(
    settings: &ServerSettings,
    connections: &ConnectionSettings,
) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .max_buf_size(settings.max_header_bytes_hard.max(8192))
        .preserve_header_case(settings.preserve_header_case)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(settings.max_header_bytes_hard as u32)
        .keep_alive_interval(Duration::from_millis(
            connections.http2_keepalive_interval_ms,
        ))
        .keep_alive_timeout(Duration::from_millis(
            connections.http2_keepalive_timeout_ms,
        ));
    builder
}

/// Half the process's soft descriptor limit (each client connection may hold an upstream
/// connection too), from `/proc/self/limits`; 4096 where that cannot be read.
pub fn default_max_connections() -> u64 {
    let limit = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|line| line.starts_with("Max open files"))
                .and_then(|line| line.split_whitespace().nth(3).map(str::to_owned))
        });
    match limit.as_deref() {
        Some("unlimited") => 1 << 20,
        Some(soft) => soft.parse::<u64>().map_or(4096, |n| (n / 2).max(1)),
        None => 4096,
    }
}

/// Accept failures: out of descriptors or memory back off (5 ms doubling to 1 s) and are
/// logged at most once every 10 s (a flood of silent connections makes streaks come and go as
/// deadlines free descriptors); others (a client gone before accept) are retried at once.
#[derive(Default)]
struct AcceptErrors {
    streak: u64,
    pause: Duration,
    logged_at: Option<std::time::Instant>,
}

impl AcceptErrors {
    fn failed(&mut self, error: &std::io::Error) -> Duration {
        // EMFILE, ENFILE, ENOBUFS, ENOMEM: only time (closing connections) helps.
        let exhausted = matches!(error.raw_os_error(), Some(24 | 23 | 105 | 12));
        if !exhausted {
            tracing::debug!(%error, "accept failed");
            return Duration::ZERO;
        }
        self.streak += 1;
        let quiet = self
            .logged_at
            .is_some_and(|at| at.elapsed() < Duration::from_secs(10));
        if self.streak == 1 && !quiet {
            tracing::warn!(%error, "accept failed; backing off until descriptors free up (logged at most every 10 s)");
            self.logged_at = Some(std::time::Instant::now());
        }
        self.pause = (self.pause * 2).clamp(Duration::from_millis(5), Duration::from_secs(1));
        self.pause
    }

    fn recovered(&mut self) {
        if self.streak > 0 {
            tracing::debug!(failed_accepts = self.streak, "accepting again");
            self.streak = 0;
            self.pause = Duration::ZERO;
        }
    }
}

/// Connections refused at the cap: logged at most every 10 s, with the count since.
#[derive(Default)]
struct Refusals {
    logged_at: Option<std::time::Instant>,
    since: u64,
}

impl Refusals {
    fn refused(&mut self, max: u64) {
        self.since += 1;
        if self
            .logged_at
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(10))
        {
            tracing::warn!(
                max_connections = max,
                refused = self.since,
                "connection cap reached; new connections are closed at once"
            );
            self.logged_at = Some(std::time::Instant::now());
            self.since = 0;
        }
    }
}
