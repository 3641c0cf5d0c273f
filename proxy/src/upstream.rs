//! Upstreams and their keep-alive connection pools, over plain TCP or TLS (`https://`
//! upstreams, with the system's roots or the upstream's `ca_file`; HTTP/1.1 by ALPN).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::uri::{Authority, Scheme};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::body::Body;
use crate::config::UpstreamConfig;

/// An HTTP client with its own connection pool (TLS for `https://` upstreams only).
pub type HttpClient = Client<HttpsConnector<HttpConnector>, Body>;

/// A service the proxy forwards to.
pub struct Upstream {
    pub name: Arc<str>,
    pub scheme: Scheme,
    pub authority: Authority,
    pub client: HttpClient,
    /// The upstream's `connect_timeout_ms`.
    pub connect_timeout: Duration,
    /// Keep-alive connections of the lean HTTP/1 path (`http://` upstreams only).
    pub lean: crate::lean::pool::Pool,
}

/// An upstream pool's identity: (name, url, connect timeout ms, CA digest).
type PoolKey = (String, String, u64, [u8; 32]);

/// Upstreams by (name, url, connect timeout, CA digest), kept across reloads so that a reload
/// does not drop warm connections (and a changed CA file makes a new pool).
#[derive(Default)]
pub struct UpstreamPool {
    upstreams: Mutex<HashMap<PoolKey, Arc<Upstream>>>,
}

impl UpstreamPool {
    /// The upstream for a checked configuration.
    pub fn get(&self, name: &str, config: &UpstreamConfig) -> Arc<Upstream> {
        let key = (
            name.to_owned(),
            config.url.to_string(),
            config.connect_timeout_ms,
            config.tls.as_ref().map(|t| t.digest).unwrap_or_default(),
        );
        let mut upstreams = self.upstreams.lock().unwrap_or_else(|e| e.into_inner());
        upstreams
            .entry(key)
            .or_insert_with(|| {
                Arc::new(Upstream {
                    name: name.into(),
                    scheme: config.url.scheme.clone(),
                    authority: config.url.authority.clone(),
                    client: client(
                        Duration::from_millis(config.connect_timeout_ms),
                        config.tls.as_ref().map(|t| &*t.config),
                    ),
                    connect_timeout: Duration::from_millis(config.connect_timeout_ms),
                    lean: crate::lean::pool::Pool::default(),
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

fn client(connect_timeout: Duration, tls: Option<&rustls::ClientConfig>) -> HttpClient {
    // An http:// upstream never uses TLS (its URIs are http://); it gets a configuration that
    // trusts nothing all the same, so that no URI could reach a TLS server unverified.
    let tls = match tls {
        Some(tls) => tls.clone(),
        None => rustls::ClientConfig::clone(&crate::tls::trusting_nothing()),
    };
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(256)
        .http1_preserve_header_case(true)
        .build(crate::tls::connector(connect_timeout, &tls))
}
