//! `ficus proxy`: the routing proxy, configured from an optional file, `FICUS_PROXY__*`
//! environment variables and flags (in rising order of precedence, through
//! `ficus_telemetry::config::Loader`), started with [`ficus_proxy::start`] (as the tests do).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use ficus_proxy::{Listeners, ServerSettings};
use ficus_telemetry::Env;
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

/// The proxy's process settings (section `proxy`: `FICUS_PROXY__<KEY>`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The routes file, reloaded live.
    #[serde(default = "default_routes_file")]
    pub routes_file: PathBuf,
    /// Client listener.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Admin listener (keep it on loopback or a private network).
    #[serde(default = "default_admin_listen")]
    pub admin_listen: SocketAddr,
    /// Worker threads; 0 means one per core.
    #[serde(default)]
    pub workers: usize,
    /// How long a client may take to send its headers.
    #[serde(default = "default_timeout_ms")]
    pub header_read_timeout_ms: u64,
    /// How long shutdown waits for requests and WebSockets in flight.
    #[serde(default = "default_timeout_ms")]
    pub shutdown_grace_ms: u64,
    /// Forward HTTP/1 header names in the case the client wrote them.
    #[serde(default = "default_true")]
    pub preserve_header_case: bool,
    /// Which code serves HTTP/1.1 clients: `lean` (the default; what it does not serve goes to
    /// hyper) or `hyper` for every connection.
    #[serde(default)]
    pub http1: ficus_proxy::Http1Path,
}

fn default_routes_file() -> PathBuf {
    PathBuf::from("routes.toml")
}
fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8000))
}
fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9900))
}
fn default_timeout_ms() -> u64 {
    10_000
}
fn default_true() -> bool {
    true
}

impl Settings {
    /// Defaults, then the file, then `FICUS_PROXY__*` from `env`, then flags.
    pub fn load(args: &Args, env: &dyn Env) -> anyhow::Result<Self> {
        ficus_telemetry::Loader::new("proxy")
            .file(args.config.as_deref())
            .env(env)
            .flag(
                "routes_file",
                "--routes",
                args.routes.as_ref().map(|p| p.display()),
            )
            .flag("listen", "--listen", args.listen)
            .flag("admin_listen", "--admin-listen", args.admin_listen)
            .flag("workers", "--workers", args.workers)
            .load()
            .context("proxy settings")
    }

    fn server(&self) -> ServerSettings {
        ServerSettings {
            header_read_timeout: Duration::from_millis(self.header_read_timeout_ms),
            shutdown_grace: Duration::from_millis(self.shutdown_grace_ms),
            preserve_header_case: self.preserve_header_case,
            http1: self.http1,
            ..ServerSettings::default()
        }
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

/// Binds the configured listeners, starts the proxy, serves until Ctrl-C or SIGTERM.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let listeners = Listeners {
        client: tokio::net::TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("listening on {}", settings.listen))?,
        admin: tokio::net::TcpListener::bind(settings.admin_listen)
            .await
            .with_context(|| format!("admin listener on {}", settings.admin_listen))?,
    };
    let running = ficus_proxy::start(&settings.routes_file, settings.server(), listeners)?;
    let shutdown = running.shutdown();
    tokio::spawn(async move {
        super::shutdown_signal().await;
        shutdown.trigger();
    });
    running.wait().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn args() -> Args {
        Args {
            config: None,
            routes: None,
            listen: None,
            admin_listen: None,
            workers: None,
        }
    }

    #[test]
    fn defaults_environment_and_flags() {
        let settings = Settings::load(&args(), &HashMap::new()).unwrap();
        assert_eq!(settings.listen, default_listen());
        assert_eq!(settings.shutdown_grace_ms, 10_000);
        assert!(settings.preserve_header_case);

        let env: HashMap<String, String> = [
            ("FICUS_PROXY__WORKERS", "1"),
            ("FICUS_PROXY__SHUTDOWN_GRACE_MS", "3000"),
            ("FICUS_PROXY__LISTEN", "127.0.0.1:1"),
            ("FICUS_PROXY__PRESERVE_HEADER_CASE", "false"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let mut flags = args();
        flags.listen = Some("127.0.0.1:2".parse().unwrap());
        let settings = Settings::load(&flags, &env).unwrap();
        assert_eq!(settings.workers, 1);
        assert_eq!(settings.shutdown_grace_ms, 3000);
        assert!(!settings.preserve_header_case);
        assert_eq!(
            settings.listen,
            "127.0.0.1:2".parse().unwrap(),
            "the flag wins"
        );
    }

    #[test]
    fn a_bad_variable_is_named() {
        let env: HashMap<String, String> =
            [("FICUS_PROXY__ADMIN_LISTEN".to_owned(), "nowhere".to_owned())].into();
        let error = format!("{:#}", Settings::load(&args(), &env).unwrap_err());
        assert!(error.contains("admin_listen"), "{error}");
        assert!(error.contains("FICUS_PROXY__ADMIN_LISTEN"), "{error}");
    }
}
