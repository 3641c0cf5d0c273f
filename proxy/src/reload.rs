//! Loading the routes file, and reloading it live: on file change (watched through its
//! directory, so editors that replace the file are seen) and on SIGHUP. A file that does not
//! parse or validate is refused whole; the previous table stays in force.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::config::{ConfigErrors, RoutesFile};
use crate::handler::Proxy;
use crate::metrics::Metrics;
use crate::table::Table;
use crate::upstream::UpstreamPool;

/// Why a routes file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {errors}")]
    Invalid { path: String, errors: ConfigErrors },
}

/// What the admin API shows of the last attempt.
#[derive(Debug, Clone, Default)]
pub struct LastAttempt {
    pub at: Option<SystemTime>,
    pub error: Option<String>,
}

/// Loads and swaps route tables for one proxy.
pub struct Loader {
    path: PathBuf,
    pool: UpstreamPool,
    metrics: Arc<Metrics>,
    state: Mutex<LoaderState>,
}

struct LoaderState {
    version: u64,
    text: Option<String>,
    last: LastAttempt,
}

impl Loader {
    pub fn new(path: impl Into<PathBuf>, metrics: Arc<Metrics>) -> Self {
        Self {
            path: path.into(),
            pool: UpstreamPool::default(),
            metrics,
            state: Mutex::new(LoaderState {
                version: 0,
                text: None,
                last: LastAttempt::default(),
            }),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The outcome of the last load attempt.
    pub fn last_attempt(&self) -> LastAttempt {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last
            .clone()
    }

    /// Reads and compiles the file into the next table (the first load at start).
    pub fn load(&self) -> Result<Table, LoadError> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (text, file) = self.read()?;
        state.version += 1;
        state.text = Some(text);
        Ok(Table::compile(
            file,
            state.version,
            &self.pool,
            &self.metrics,
        ))
    }

    fn read(&self) -> Result<(String, RoutesFile), LoadError> {
        let shown = self.path.display().to_string();
        let text = std::fs::read_to_string(&self.path).map_err(|source| LoadError::Read {
            path: shown.clone(),
            source,
        })?;
        let file = RoutesFile::parse(&text).map_err(|errors| LoadError::Invalid {
            path: shown,
            errors,
        })?;
        Ok((text, file))
    }

    /// Reloads into `proxy` if the file changed. Returns the version in force afterwards.
    pub fn reload(&self, proxy: &Proxy) -> Result<u64, LoadError> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.last.at = Some(SystemTime::now());
        let (text, file) = match self.read() {
            Ok(read) => read,
            Err(error) => {
                self.metrics.reload_failures.inc();
                // Logged once, here; the old table stays.
                tracing::error!(%error, "routes file refused; the previous table stays in force");
                state.last.error = Some(error.to_string());
                return Err(error);
            }
        };
        state.last.error = None;
        if state.text.as_deref() == Some(text.as_str()) {
            return Ok(state.version);
        }
        state.version += 1;
        state.text = Some(text);
        let table = Table::compile(file, state.version, &self.pool, &self.metrics);
        let routes = table.routes.len();
        proxy.swap(table);
        self.metrics.reloads.inc();
        tracing::info!(version = state.version, routes, "route table reloaded");
        Ok(state.version)
    }

    /// Watches the file and SIGHUP until the returned task is aborted.
    pub fn watch(
        self: Arc<Self>,
        proxy: Arc<Proxy>,
    ) -> std::io::Result<tokio::task::JoinHandle<()>> {
        use notify::Watcher;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let file_name = self.path.file_name().map(|n| n.to_owned());
        let watch_tx = tx.clone();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if let Ok(event) = event {
                    let ours = event
                        .paths
                        .iter()
                        .any(|p| p.file_name().map(|n| n.to_owned()) == file_name);
                    let relevant = !matches!(event.kind, notify::EventKind::Access(_));
                    if ours && relevant {
                        let _ = watch_tx.send(());
                    }
                }
            })
            .map_err(std::io::Error::other)?;
        let dir = match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
            _ => PathBuf::from("."),
        };
        watcher
            .watch(&dir, notify::RecursiveMode::NonRecursive)
            .map_err(std::io::Error::other)?;

        #[cfg(unix)]
        {
            let hup_tx = tx.clone();
            let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    tracing::info!("SIGHUP: reloading routes");
                    if hup_tx.send(()).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        Ok(tokio::spawn(async move {
            let _watcher = watcher; // lives as long as the task
            while rx.recv().await.is_some() {
                // Editors write in several steps: let them finish, then load once.
                tokio::time::sleep(Duration::from_millis(30)).await;
                while rx.try_recv().is_ok() {}
                let loader = self.clone();
                let proxy = proxy.clone();
                // Parsing and compiling are quick, but off the async threads all the same.
                let _ = tokio::task::spawn_blocking(move || loader.reload(&proxy)).await;
            }
        }))
    }
}
