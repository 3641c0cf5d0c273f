//! Test upstreams: small real HTTP servers on `127.0.0.1:0` that say who they are, so a test can
//! tell which side of a route answered.
//!
//! Every path answers (`/*`). By query parameter:
//! - `status=N` answers with that status; `delay_ms=N` waits before answering;
//! - `bytes=N` streams N bytes back (in 64 KiB pieces);
//! - otherwise a JSON echo: `{upstream, method, path, query, headers, body_bytes, body_sha256}`
//!   (the request body is read streaming, never held whole).
//!
//! `/ws` upgrades to a WebSocket that echoes each text message as `"<name>: <text>"`.
//!
//! A request counts as a hit the moment its handler starts, before any `delay_ms`: a test waits
//! for it with [`TestUpstream::wait_for_hits`] to know a request is in flight at the upstream,
//! instead of sleeping and hoping it got there.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use bytes::Bytes;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A running test upstream; stops when dropped.
pub struct TestUpstream {
    pub name: String,
    pub addr: SocketAddr,
    /// Requests received so far; every arrival notifies the waiters.
    hits: Arc<watch::Sender<u64>>,
    server: JoinHandle<()>,
}

#[derive(Clone)]
struct Shared {
    name: Arc<str>,
    hits: Arc<watch::Sender<u64>>,
}

impl Shared {
    fn arrived(&self) {
        self.hits.send_modify(|hits| *hits += 1);
    }
}

impl TestUpstream {
    pub async fn start(name: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding a test upstream");
        Self::serve_on(name, listener)
    }

    /// The same upstream over TLS with `issued` (a certificate of a [`crate::tls::TestCa`]).
    pub async fn start_tls(name: &str, issued: &crate::tls::Issued) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding a test upstream");
        Self::serve(name, listener, Some(issued))
    }

    /// Serves on a given listener (to restart an upstream on the same port).
    pub fn serve_on(name: &str, listener: tokio::net::TcpListener) -> Self {
        Self::serve(name, listener, None)
    }

    fn serve(
        name: &str,
        listener: tokio::net::TcpListener,
        tls: Option<&crate::tls::Issued>,
    ) -> Self {
        let addr = listener.local_addr().expect("an address");
        let hits = Arc::new(watch::Sender::new(0));
        let shared = Shared {
            name: name.into(),
            hits: hits.clone(),
        };
        let app = Router::new()
            .route("/ws", get(websocket))
            .fallback(any(answer))
            .with_state(shared);
        let server = match tls {
            None => tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            }),
            Some(issued) => crate::tls::serve_tls(listener, app, issued),
        };
        Self {
            name: name.to_owned(),
            addr,
            hits,
            server,
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests this upstream received (answered or still in its handler).
    pub fn hits(&self) -> u64 {
        *self.hits.borrow()
    }

    /// Waits until this upstream has received `count` requests in all (counted when the
    /// handler starts, so a slow request is in flight once this returns). Panics after 10 s.
    pub async fn wait_for_hits(&self, count: u64) {
        let mut hits = self.hits.subscribe();
        let waited =
            tokio::time::timeout(Duration::from_secs(10), hits.wait_for(|&n| n >= count)).await;
        assert!(
            matches!(waited, Ok(Ok(_))),
            "{} received {} requests within 10 s, expected {count}",
            self.name,
            self.hits()
        );
    }
}

impl Drop for TestUpstream {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn answer(
    State(shared): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
    request: Request,
) -> Response {
    shared.arrived();
    // `NAME.key` applies to the upstream of that name only, `key` to every upstream.
    let param = |key: &str| {
        query
            .get(&format!("{}.{key}", shared.name))
            .or_else(|| query.get(key))
            .and_then(|v| v.parse::<u64>().ok())
    };
    if let Some(delay) = param("delay_ms") {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let mut response = if let Some(status) = param("status").and_then(|s| u16::try_from(s).ok()) {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::IM_A_TEAPOT);
        (status, format!("{} says {}", shared.name, status.as_u16())).into_response()
    } else if let Some(bytes) = param("bytes") {
        const PIECE: u64 = 64 * 1024;
        let pieces = (0..bytes.div_ceil(PIECE)).map(move |i| {
            let size = PIECE.min(bytes - i * PIECE) as usize;
            Ok::<_, std::io::Error>(Bytes::from(vec![(i % 251) as u8; size]))
        });
        Response::new(Body::from_stream(futures_util::stream::iter(pieces)))
    } else {
        let (parts, body) = request.into_parts();
        let mut stream = body.into_data_stream();
        let mut hasher = Sha256::new();
        let mut body_bytes = 0u64;
        while let Some(piece) = stream.next().await {
            match piece {
                Ok(piece) => {
                    body_bytes += piece.len() as u64;
                    hasher.update(&piece);
                }
                Err(_) => return StatusCode::BAD_REQUEST.into_response(),
            }
        }
        let headers: HashMap<String, String> = parts
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("?").to_owned()))
            .collect();
        let sha: String = hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        axum::Json(serde_json::json!({
            "upstream": &*shared.name,
            "method": parts.method.as_str(),
            "path": parts.uri.path(),
            "query": parts.uri.query(),
            "version": format!("{:?}", parts.version),
            "headers": headers,
            "body_bytes": body_bytes,
            "body_sha256": sha,
        }))
        .into_response()
    };
    response.headers_mut().insert(
        "x-upstream",
        HeaderValue::from_str(&shared.name).expect("a header-safe name"),
    );
    response
}

async fn websocket(
    State(shared): State<Shared>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    shared.arrived();
    let _ = headers;
    upgrade.on_upgrade(move |mut socket| async move {
        while let Some(Ok(message)) = socket.recv().await {
            if let Message::Text(text) = message {
                let reply = format!("{}: {}", shared.name, text.as_str());
                if socket.send(Message::Text(reply.into())).await.is_err() {
                    break;
                }
            }
        }
    })
}

/// An address where nothing listens (a port bound and released).
pub fn refused_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding");
    let addr = listener.local_addr().expect("an address");
    drop(listener);
    addr
}
