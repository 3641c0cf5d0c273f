//! Loading the routes file, and reloading it live: on file change (watched through its
//! directory, so editors that replace the file are seen) and on SIGHUP. The file goes through
//! the one check ([`crate::check`]) that `ficus routes check|flip` run too; a file with any
//! problem is refused whole and the previous table stays in force. Past the check nothing can
//! fail: the authorization is built from what the check read.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use std::collections::{HashMap, HashSet};

use crate::authz::Authz;
use crate::authz::internal::InternalSigner;
use crate::authz::keys::{JwksCache, Keys};
use crate::check::{AuthKeys, CheckedFile, base_dir, check};
use crate::config::{Problems, RoutesFile};
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
    #[error("{path}: {problems}")]
    Invalid { path: String, problems: Problems },
}

/// What the admin API shows of the last attempt.
#[derive(Debug, Clone, Default)]
pub struct LastAttempt {
    pub at: Option<SystemTime>,
    pub error: Option<String>,
}

/// A JWKS cache's identity: (url, refresh ms, min refetch ms, CA digest).
type JwksKey = (String, u64, u64, [u8; 32]);

/// Loads and swaps route tables for one proxy.
pub struct Loader {
    path: PathBuf,
    pool: UpstreamPool,
    /// Shadow and recording state kept across reloads (counters, noise, files).
    parity: crate::shadow::Hub,
    metrics: Arc<Metrics>,
    state: Mutex<LoaderState>,
    /// JWKS caches by (url, refresh, min refetch, CA digest), kept across reloads.
    jwks: Mutex<HashMap<JwksKey, Arc<JwksCache>>>,
    /// The internal token signer made for this process (used without a `key_file`), kept
    /// across reloads so that its key id stays.
    generated_signer: Mutex<Option<Arc<InternalSigner>>>,
}

struct LoaderState {
    version: u64,
    text: Option<String>,
    /// Digests of the TLS files the text named, as last loaded.
    tls: Vec<[u8; 32]>,
    last: LastAttempt,
}

impl Loader {
    pub fn new(path: impl Into<PathBuf>, metrics: Arc<Metrics>) -> Self {
        Self {
            path: path.into(),
            pool: UpstreamPool::default(),
            parity: crate::shadow::Hub::default(),
            metrics,
            state: Mutex::new(LoaderState {
                version: 0,
                text: None,
                tls: Vec::new(),
                last: LastAttempt::default(),
            }),
            jwks: Mutex::default(),
            generated_signer: Mutex::default(),
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
        let (text, file, authz) = self.read()?;
        state.version += 1;
        state.text = Some(text);
        state.tls = tls_digests(&file);
        Ok(Table::compile_with(
            file,
            state.version,
            &self.pool,
            &self.metrics,
            authz,
            &self.parity,
        ))
    }

    /// Reads and checks the file, and builds its authorization.
    fn read(&self) -> Result<(String, RoutesFile, Option<Arc<Authz>>), LoadError> {
        let shown = self.path.display().to_string();
        let text = std::fs::read_to_string(&self.path).map_err(|source| LoadError::Read {
            path: shown.clone(),
            source,
        })?;
        let CheckedFile { file, keys } =
            check(&text, base_dir(&self.path)).map_err(|problems| LoadError::Invalid {
                path: shown,
                problems,
            })?;
        let authz = self.build_authz(&file, keys);
        Ok((text, file, authz))
    }

    /// The authorization of a checked file, with the JWKS caches and the generated signer kept
    /// from earlier tables.
    fn build_authz(&self, file: &RoutesFile, keys: AuthKeys) -> Option<Arc<Authz>> {
        let auth = file.auth.as_ref()?;
        let jwks = auth.jwks_url.as_ref().map(|url| {
            let key = (
                url.0.to_string(),
                auth.jwks_refresh_ms,
                auth.jwks_min_refetch_ms,
                auth.jwks_tls.as_ref().map(|t| t.digest).unwrap_or_default(),
            );
            let mut caches = self.jwks.lock().unwrap_or_else(|e| e.into_inner());
            caches
                .entry(key)
                .or_insert_with(|| {
                    JwksCache::start(
                        url.0.clone(),
                        Duration::from_millis(auth.jwks_refresh_ms),
                        Duration::from_millis(auth.jwks_min_refetch_ms),
                        auth.jwks_tls.as_ref().map(|t| &*t.config),
                        self.metrics.clone(),
                    )
                })
                .clone()
        });
        let signer = auth
            .internal_token
            .as_ref()
            .map(|_| match keys.internal_signer {
                Some(from_file) => Arc::new(from_file),
                None => self
                    .generated_signer
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_or_insert_with(|| Arc::new(InternalSigner::generate()))
                    .clone(),
            });
        let keys = Keys {
            jwks,
            static_keys: keys.static_keys,
            hs256: keys.hs256,
        };
        Some(Arc::new(Authz::new(
            auth,
            keys,
            signer,
            self.metrics.token_cache(),
        )))
    }

    /// Reloads into `proxy` if the file changed, or always when `force` (SIGHUP: key files may
    /// have changed too). Returns the version in force afterwards.
    pub fn reload(&self, proxy: &Proxy, force: bool) -> Result<u64, LoadError> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.last.at = Some(SystemTime::now());
        let (text, file, authz) = match self.read() {
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
        let tls = tls_digests(&file);
        if !force && state.text.as_deref() == Some(text.as_str()) && state.tls == tls {
            return Ok(state.version);
        }
        state.version += 1;
        state.text = Some(text);
        state.tls = tls;
        let table = Table::compile_with(
            file,
            state.version,
            &self.pool,
            &self.metrics,
            authz,
            &self.parity,
        );
        let routes = table.routes.len();
        proxy.swap(table);
        self.metrics.reloads.inc();
        tracing::info!(version = state.version, routes, "route table reloaded");
        Ok(state.version)
    }

    /// The directories of the TLS files the table in force names (certificate, key, CA files),
    /// absolute or as the routes file's directory makes them.
    fn tls_dirs(&self, file: &RoutesFile) -> HashSet<PathBuf> {
        let base = base_dir(&self.path);
        let listener = file
            .proxy
            .tls
            .iter()
            .flat_map(|t| [&t.cert_file, &t.key_file]);
        let cas = file.upstreams.values().filter_map(|u| u.ca_file.as_ref());
        let jwks = file.auth.iter().filter_map(|a| a.jwks_ca_file.as_ref());
        listener
            .chain(cas)
            .chain(jwks)
            .filter_map(|path| base.join(path).parent().map(Path::to_path_buf))
            .collect()
    }

    /// Watches the file, the directories of the TLS files it names (a certificate renewed in
    /// place, or by a symlink swap as Kubernetes does, reloads), and SIGHUP, until the returned
    /// task is aborted.
    pub fn watch(
        self: Arc<Self>,
        proxy: Arc<Proxy>,
    ) -> std::io::Result<tokio::task::JoinHandle<()>> {
        use notify::Watcher;
        // `true`: a forced reload (SIGHUP); `false`: the file changed.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<bool>();
        let file_name = self.path.file_name().map(|n| n.to_owned());
        let watch_tx = tx.clone();
        let tls_dirs: Arc<Mutex<HashSet<PathBuf>>> = Arc::default();
        let watched_tls = tls_dirs.clone();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if let Ok(event) = event {
                    let tls_dirs = watched_tls.lock().unwrap_or_else(|e| e.into_inner());
                    let ours = event.paths.iter().any(|p| {
                        p.file_name().map(|n| n.to_owned()) == file_name
                            || p.parent().is_some_and(|dir| tls_dirs.contains(dir))
                    });
                    let relevant = !matches!(event.kind, notify::EventKind::Access(_));
                    if ours && relevant {
                        let _ = watch_tx.send(false);
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
        // Adds watches for the TLS directories of the table in force (once each).
        let watch_tls = {
            let loader = self.clone();
            let proxy = proxy.clone();
            move |watcher: &mut notify::RecommendedWatcher| {
                let wanted = loader.tls_dirs(&proxy.table().file);
                let mut watched = tls_dirs.lock().unwrap_or_else(|e| e.into_inner());
                for dir in wanted {
                    if !watched.contains(&dir) {
                        match watcher.watch(&dir, notify::RecursiveMode::NonRecursive) {
                            Ok(()) => {
                                watched.insert(dir);
                            }
                            Err(error) => {
                                tracing::warn!(%error, dir = %dir.display(), "cannot watch a TLS file's directory; SIGHUP reloads it");
                            }
                        }
                    }
                }
            }
        };
        watch_tls(&mut watcher);

        #[cfg(unix)]
        {
            let hup_tx = tx.clone();
            let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    tracing::info!("SIGHUP: reloading routes");
                    if hup_tx.send(true).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        Ok(tokio::spawn(async move {
            let mut watcher = watcher; // lives as long as the task
            while let Some(mut force) = rx.recv().await {
                // Editors write in several steps: let them finish, then load once.
                tokio::time::sleep(Duration::from_millis(30)).await;
                while let Ok(more) = rx.try_recv() {
                    force |= more;
                }
                let loader = self.clone();
                let proxy = proxy.clone();
                // Parsing and compiling are quick, but off the async threads all the same.
                let _ = tokio::task::spawn_blocking(move || loader.reload(&proxy, force)).await;
                watch_tls(&mut watcher);
            }
        }))
    }
}

/// Digests of every TLS file a checked file named, in a fixed order.
fn tls_digests(file: &RoutesFile) -> Vec<[u8; 32]> {
    let listener = file
        .proxy
        .tls
        .iter()
        .filter_map(|t| t.loaded.as_ref().map(|l| l.digest));
    let upstreams = file
        .upstreams
        .values()
        .filter_map(|u| u.tls.as_ref().map(|t| t.digest));
    let jwks = file
        .auth
        .iter()
        .filter_map(|a| a.jwks_tls.as_ref().map(|t| t.digest));
    listener.chain(upstreams).chain(jwks).collect()
}
