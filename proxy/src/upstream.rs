//! Upstreams and their keep-alive connection pools.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::uri::{Authority, Scheme};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::body::Body;
use crate::config::UpstreamConfig;

/// An HTTP client with its own connection pool.
pub type HttpClient = Client<HttpConnector, Body>;

/// A service the proxy forwards to.
pub struct Upstream {
    pub name: Arc<str>,
    pub scheme: Scheme,
    pub authority: Authority,
    pub client: HttpClient,
}

/// Upstreams by (name, url, connect timeout), kept across reloads so that a reload does not
/// drop warm connections.
#[derive(Default)]
pub struct UpstreamPool {
    upstreams: Mutex<HashMap<(String, String, u64), Arc<Upstream>>>,
}

impl UpstreamPool {
    /// The upstream for a checked configuration.
    pub fn get(&self, name: &str, config: &UpstreamConfig) -> Arc<Upstream> {
        let key = (
            name.to_owned(),
            config.url.to_string(),
            config.connect_timeout_ms,
        );
        let mut upstreams = self.upstreams.lock().unwrap_or_else(|e| e.into_inner());
        upstreams
            .entry(key)
            .or_insert_with(|| {
                Arc::new(Upstream {
                    name: name.into(),
                    scheme: config.url.scheme.clone(),
                    authority: config.url.authority.clone(),
                    client: client(Duration::from_millis(config.connect_timeout_ms)),
                })
            })
            .clone()
    }

    /// Forgets upstreams no table uses any more.
    pub fn retain(&self, keep: impl Fn(&Upstream) -> bool) {
        let mut upstreams = self.upstreams.lock().unwrap_or_else(|e| e.into_inner());
        upstreams.retain(|_, u| keep(u));
    }
}

fn client(connect_timeout: Duration) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(connect_timeout));
    connector.set_nodelay(true);
    connector.enforce_http(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(256)
        .http1_preserve_header_case(true)
        .build(connector)
}
