//! `ficus proxy`: the routing proxy, configured from an optional file, `FICUS_PROXY__*`
//! environment variables and flags (in rising order of precedence).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use ficus_proxy::admin::Admin;
use ficus_proxy::metrics::Metrics;
use ficus_proxy::{Loader, Proxy, ServerSettings};
use serde::Deserialize;

#[derive(clap::Args)]
pub struct Args {
    /// A TOML file of proxy settings (the keys below, without dashes: `routes_file`, ...).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The routes file [default: routes.toml].
    #[arg(long)]
    pub routes: Option<PathBuf>,
    /// Where clients connect [default: 127.0.0.1:8000].
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// The admin API: table, metrics, health [default: 127.0.0.1:9900].
    #[arg(long)]
    pub admin_listen: Option<SocketAddr>,
    /// Worker threads [default: one per core].
    #[arg(long)]
    pub workers: Option<usize>,
}

/// The proxy's process settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The routes file, reloaded live.
    pub routes_file: PathBuf,
    /// Client listener.
    pub listen: SocketAddr,
    /// Admin listener (keep it on loopback or a private network).
    pub admin_listen: SocketAddr,
    /// Worker threads; 0 means one per core.
    pub workers: usize,
    /// How long a client may take to send its headers.
    pub header_read_timeout_ms: u64,
    /// How long shutdown waits for requests and WebSockets in flight.
    pub shutdown_grace_ms: u64,
    /// Forward HTTP/1 header names in the case the client wrote them.
    pub preserve_header_case: bool,
}

impl Settings {
    /// Defaults, then the file, then `FICUS_PROXY__*`, then flags.
    pub fn load(args: &Args) -> anyhow::Result<Self> {
        let mut builder = config::Config::builder()
            .set_default("routes_file", "routes.toml")?
            .set_default("listen", "127.0.0.1:8000")?
            .set_default("admin_listen", "127.0.0.1:9900")?
            .set_default("workers", 0)?
            .set_default("header_read_timeout_ms", 10_000)?
            .set_default("shutdown_grace_ms", 10_000)?
            .set_default("preserve_header_case", true)?;
        if let Some(file) = &args.config {
            builder = builder.add_source(config::File::from(file.as_path()).required(true));
        }
        builder = builder.add_source(
            config::Environment::with_prefix("FICUS_PROXY")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true),
        );
        if let Some(routes) = &args.routes {
            builder = builder.set_override("routes_file", routes.display().to_string())?;
        }
        if let Some(listen) = args.listen {
            builder = builder.set_override("listen", listen.to_string())?;
        }
        if let Some(admin) = args.admin_listen {
            builder = builder.set_override("admin_listen", admin.to_string())?;
        }
        if let Some(workers) = args.workers {
            builder = builder.set_override("workers", workers as u64)?;
        }
        builder.build()?.try_deserialize().context("proxy settings")
    }
}

/// Builds the runtime the settings ask for: one worker thread runs on the current thread.
pub fn runtime(settings: &Settings) -> std::io::Result<tokio::runtime::Runtime> {
    if settings.workers == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        if settings.workers > 1 {
            builder.worker_threads(settings.workers);
        }
        builder.enable_all().build()
    }
}

pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::default());
    let loader = Arc::new(Loader::new(&settings.routes_file, metrics.clone()));
    let table = loader.load().context("loading the routes file")?;
    tracing::info!(
        routes = table.routes.len(),
        file = %settings.routes_file.display(),
        "route table loaded"
    );
    let proxy = Arc::new(Proxy::new(table, metrics));
    let watch = loader
        .clone()
        .watch(proxy.clone())
        .context("watching the routes file")?;

    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("listening on {}", settings.listen))?;
    let admin_listener = tokio::net::TcpListener::bind(settings.admin_listen)
        .await
        .with_context(|| format!("admin listener on {}", settings.admin_listen))?;
    let ready = Arc::new(AtomicBool::new(false));
    let admin = Admin {
        proxy: proxy.clone(),
        loader: loader.clone(),
        ready: ready.clone(),
    };
    let admin_task = tokio::spawn(async move {
        if let Err(error) = axum::serve(admin_listener, admin.router()).await {
            tracing::error!(%error, "admin listener failed");
        }
    });
    tracing::info!(listen = %settings.listen, admin = %settings.admin_listen, "proxy serving");
    ready.store(true, Ordering::SeqCst);
    let server_settings = ServerSettings {
        header_read_timeout: Duration::from_millis(settings.header_read_timeout_ms),
        shutdown_grace: Duration::from_millis(settings.shutdown_grace_ms),
        preserve_header_case: settings.preserve_header_case,
        ..ServerSettings::default()
    };
    let ready_flag = ready.clone();
    ficus_proxy::serve(listener, proxy, server_settings, async move {
        super::shutdown_signal().await;
        ready_flag.store(false, Ordering::SeqCst);
    })
    .await;
    watch.abort();
    admin_task.abort();
    tracing::info!("proxy stopped");
    Ok(())
}
