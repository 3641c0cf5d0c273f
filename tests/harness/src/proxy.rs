//! The routing proxy, in-process: a routes file in a temporary directory (watched live), the
//! client listener and the admin listener on `127.0.0.1:0`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ficus_proxy::{Listeners, Loader, Proxy, Running, ServerSettings};

/// A running proxy. Dropping it stops it and removes its routes file.
pub struct TestProxy {
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub routes_path: PathBuf,
    pub proxy: Arc<Proxy>,
    pub loader: Arc<Loader>,
    dir: PathBuf,
    running: Option<Running>,
}

impl TestProxy {
    /// Starts a proxy over the routes file `routes` (TOML text).
    pub async fn start(routes: &str) -> Self {
        Self::start_with(routes, ServerSettings::default()).await
    }

    /// Starts a proxy with `settings`, through [`ficus_proxy::start`] as `ficus proxy` does.
    pub async fn start_with(routes: &str, settings: ServerSettings) -> Self {
        crate::init_tracing();
        let dir = std::env::temp_dir().join(format!("ficus-proxy-{}", crate::unique_suffix()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let routes_path = dir.join("routes.toml");
        std::fs::write(&routes_path, routes).expect("writing the routes file");
        let listeners = Listeners {
            client: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
            admin: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        };
        let running =
            ficus_proxy::start(&routes_path, settings, listeners).expect("starting the proxy");
        Self {
            addr: running.addr,
            admin_addr: running.admin_addr,
            routes_path,
            proxy: running.proxy.clone(),
            loader: running.loader.clone(),
            dir,
            running: Some(running),
        }
    }

    /// `http://127.0.0.1:PORT{path}` of the client listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `http://127.0.0.1:PORT{path}` of the admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin_addr)
    }

    /// The version of the table in force.
    pub fn version(&self) -> u64 {
        self.proxy.table().version
    }

    /// The value of one series on the admin listener's `/metrics`, e.g.
    /// `ficus_proxy_reload_failures_total` or `ficus_proxy_jwks_fetches_total{result="error"}`
    /// (labels exactly as the exposition prints them); 0 while the series is absent.
    pub async fn metric(&self, series: &str) -> f64 {
        let text = reqwest::get(self.admin_url("/metrics"))
            .await
            .expect("the admin listener answers")
            .text()
            .await
            .expect("a metrics page");
        metric_value(&text, series).unwrap_or(0.0)
    }

    /// Waits until `series` on `/metrics` exceeds `above` (panics after 10 s); returns its value.
    pub async fn wait_for_metric_above(&self, series: &str, above: f64) -> f64 {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let now = self.metric(series).await;
            if now > above {
                return now;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{series} stayed at {now} (waited for more than {above})"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Writes a new routes file atomically and waits until the proxy has loaded it.
    pub async fn write_routes(&self, text: &str) -> u64 {
        let before = self.version();
        ficus_proxy::edit::write_atomically(&self.routes_path, text).expect("writing routes");
        self.wait_for_version_after(before).await
    }

    /// Waits until the table's version passes `before` (panics after 10 s).
    pub async fn wait_for_version_after(&self, before: u64) -> u64 {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let now = self.version();
            if now > before {
                return now;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the proxy did not load the new routes file (still version {now})"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Stops accepting, drains, and waits for the server to return.
    pub async fn shutdown(&mut self) {
        if let Some(running) = self.running.take() {
            running.stop().await;
        }
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        // Dropping `Running` triggers the shutdown and aborts its tasks.
        self.running.take();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The value of `series` (name and labels as printed) in a Prometheus text exposition.
fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.split_whitespace().next()?.parse().ok()
    })
}
