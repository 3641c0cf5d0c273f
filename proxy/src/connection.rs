//! One client connection, from accept to close (the listener in [`crate::server`] spawns one per
//! accepted socket): every phase has a deadline.
//!
//! ```text
//! accepted socket (holds a slot of max_connections until the socket closes)
//!   ├─ handshake, within handshake_timeout_ms: TLS (with [proxy.tls]), then the bytes that tell
//!   │    the protocol (an HTTP/1 request's first bytes, or the whole 24-byte HTTP/2 preface)
//!   ├─ HTTP/1 on the lean path ([`crate::lean`]) until it hands the connection to hyper
//!   ├─ hyper serves it: HTTP/1.1 (header read timeout, upgrades) or HTTP/2 (PING keep-alive)
//!   └─ idle, within idle_timeout_ms: no request in flight (a response counts until its body is
//!        sent) → graceful close (HTTP/2 GOAWAY), cut if the close does not finish in time
//! ```

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http_body::{Frame, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::conn::auto;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{Notify, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::body::Body;
use crate::config::ConnectionSettings;
use crate::handler::Proxy;
use crate::metrics::Deadline;

/// The HTTP/2 connection preface a client sends first.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The deadlines of one connection, as the table in force at accept had them.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    pub handshake: Duration,
    pub idle: Duration,
    /// How long a graceful close (after the idle deadline) may take before the socket is cut.
    pub close: Duration,
}

impl From<&ConnectionSettings> for Deadlines {
    fn from(settings: &ConnectionSettings) -> Self {
        Self {
            handshake: Duration::from_millis(settings.handshake_timeout_ms),
            idle: Duration::from_millis(settings.idle_timeout_ms),
            close: Duration::from_millis(settings.http2_keepalive_timeout_ms),
        }
    }
}

/// A place among the open connections: counted from accept until the socket is closed (after
/// an upgrade, when the tunnel ends).
pub struct Slot(Gauge);

impl Slot {
    pub fn take(open: &Gauge) -> Self {
        open.inc();
        Slot(open.clone())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Serves one accepted socket until it closes, a deadline passes, or `stop` turns true (then
/// it closes gracefully).
#[allow(clippy::too_many_arguments)]
pub async fn serve_connection(
    stream: TcpStream,
    client: std::net::SocketAddr,
    slot: Slot,
    deadlines: Deadlines,
    tls: Option<TlsAcceptor>,
    builder: Arc<auto::Builder<hyper_util::rt::TokioExecutor>>,
    lean: Option<crate::lean::Settings>,
    proxy: Arc<Proxy>,
    mut stop: watch::Receiver<bool>,
) {
    let metrics = proxy.metrics.clone();
    let is_tls = tls.is_some();
    let handshake = async {
        let io = match tls {
            Some(acceptor) => match acceptor.accept(stream).await {
                Ok(tls) => Stream::Tls(Box::new(tls)),
                Err(error) => return Err(Some(error)),
            },
            None => Stream::Plain(stream),
        };
        let mut io = Prefixed {
            prefix: Bytes::new(),
            io,
            _slot: slot,
        };
        match sniff(&mut io).await {
            Ok(Some(prefix)) => {
                io.prefix = prefix;
                Ok(io)
            }
            // Closed before a byte: nothing to serve, nothing to count.
            Ok(None) => Err(None),
            Err(error) => Err(Some(error)),
        }
    };
    let io = tokio::select! {
        done = tokio::time::timeout(deadlines.handshake, handshake) => match done {
            Ok(Ok(ready)) => ready,
            Ok(Err(None)) => return,
            Ok(Err(Some(error))) => {
                // A socket closed before a word (a load balancer's TCP check) is no failure.
                if is_tls && error.kind() != io::ErrorKind::UnexpectedEof {
                    metrics.tls_handshake_failures.inc();
                }
                tracing::debug!(%error, %client, "connection closed during its handshake");
                return;
            }
            Err(_) => {
                metrics.deadline(Deadline::Handshake);
                tracing::debug!(%client, "no handshake within the deadline; closed");
                return;
            }
        },
        _ = stop.changed() => return,
    };

    // HTTP/1 on the lean path, until it closes or hands the connection to hyper.
    let io = match lean {
        Some(settings) if io.prefix.as_ref() != H2_PREFACE => {
            let served = crate::lean::serve(
                io,
                client,
                proxy.clone(),
                settings,
                deadlines.idle,
                &mut stop,
            );
            match served.await {
                crate::lean::End::Closed => return,
                crate::lean::End::Hyper(io) => io,
            }
        }
        _ => io,
    };

    let activity = Arc::new(Activity::default());
    let in_flight = activity.clone();
    let service = service_fn(move |request| {
        let proxy = proxy.clone();
        let active = in_flight.begin();
        async move {
            let response = proxy.handle(request, client).await;
            Ok::<_, std::convert::Infallible>(response.map(|body| Tracked {
                body,
                _active: active,
            }))
        }
    });
    let connection = builder
        .serve_connection_with_upgrades(TokioIo::new(io), service)
        .into_owned();
    tokio::pin!(connection);
    // Set once a graceful close started: for the idle deadline, when to cut the socket if the
    // close has not finished (a server shutdown is bounded by the server's grace instead).
    let mut closing = false;
    let mut cut_at: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, %client, "connection ended with an error");
                }
                return;
            }
            _ = stop.changed(), if !closing => {
                connection.as_mut().graceful_shutdown();
                closing = true;
            }
            () = activity.idle_for(deadlines.idle), if !closing => {
                metrics.deadline(Deadline::Idle);
                tracing::debug!(%client, "idle past the deadline; closing");
                connection.as_mut().graceful_shutdown();
                closing = true;
                cut_at = Some(tokio::time::Instant::now() + deadlines.close);
            }
            () = sleep_until(cut_at), if cut_at.is_some() => {
                tracing::debug!(%client, "the graceful close did not finish in time; cut");
                return;
            }
        }
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Reads until the protocol is known: the whole HTTP/2 preface, or bytes that cannot begin it
/// (an HTTP/1 request). `None` when the client closed first.
async fn sniff(io: &mut Prefixed) -> io::Result<Option<Bytes>> {
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        if io.read_buf(&mut buf).await? == 0 {
            return match buf.is_empty() {
                true => Ok(None),
                // Part of a preface, then EOF: hyper answers what it can.
                false => Ok(Some(buf.freeze())),
            };
        }
        let seen = buf.len().min(H2_PREFACE.len());
        if buf[..seen] != H2_PREFACE[..seen] || seen == H2_PREFACE.len() {
            return Ok(Some(buf.freeze()));
        }
    }
}

/// The socket, plain or TLS.
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// The socket with the bytes read while sniffing put back in front, and the connection's slot
/// (released when hyper, or a tunnel after an upgrade, drops the socket).
pub(crate) struct Prefixed {
    pub(crate) prefix: Bytes,
    io: Stream,
    _slot: Slot,
}

impl AsyncRead for Prefixed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        match &mut this.io {
            Stream::Plain(io) => Pin::new(io).poll_read(cx, buf),
            Stream::Tls(io) => Pin::new(io).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Stream::Plain(io) => Pin::new(io).poll_write(cx, data),
            Stream::Tls(io) => Pin::new(io).poll_write(cx, data),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Stream::Plain(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            Stream::Tls(io) => Pin::new(io).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Stream::Plain(io) => io.is_write_vectored(),
            Stream::Tls(io) => io.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Stream::Plain(io) => Pin::new(io).poll_flush(cx),
            Stream::Tls(io) => Pin::new(io).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Stream::Plain(io) => Pin::new(io).poll_shutdown(cx),
            Stream::Tls(io) => Pin::new(io).poll_shutdown(cx),
        }
    }
}

/// Requests in flight on one connection; the idle deadline runs while there are none.
#[derive(Default)]
struct Activity {
    active: AtomicUsize,
    changed: Notify,
}

impl Activity {
    fn begin(self: &Arc<Self>) -> Active {
        // Only a change between idle and busy wakes the idle deadline.
        if self.active.fetch_add(1, Ordering::AcqRel) == 0 {
            self.changed.notify_waiters();
        }
        Active(self.clone())
    }

    /// Resolves once no request has been in flight for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before looking, so a change in between is not missed.
            changed.as_mut().enable();
            if self.active.load(Ordering::Acquire) == 0 {
                tokio::select! {
                    () = tokio::time::sleep(idle) => return,
                    () = changed => {}
                }
            } else {
                changed.await;
            }
        }
    }
}

/// One request in flight, until its response body is sent (or the request is dropped).
struct Active(Arc<Activity>);

impl Drop for Active {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.changed.notify_waiters();
        }
    }
}

/// A response body that keeps its request counted as in flight until it is done.
pub struct Tracked {
    body: Body,
    _active: Active,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = crate::body::BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
