//! The lean path's keep-alive connections to one `http://` upstream (one pool per
//! [`crate::upstream::Upstream`], kept across reloads with it): idle connections with their
//! read buffers, taken last-in first-out by the client task that needs one, checked for a
//! close by the upstream before reuse, forgotten after 90 s idle.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use http::uri::Authority;
use tokio::net::TcpStream;

use crate::error::{Kind, Origin, ProxyError};
use crate::table::Side;

/// How long a connection may wait idle in the pool (as the hyper client's pool).
const IDLE: Duration = Duration::from_secs(90);
/// Idle connections kept per upstream (as the hyper client's pool).
const MAX_IDLE: usize = 256;
/// A connection's read buffer, allocated once with it.
pub const BUFFER_BYTES: usize = 8 * 1024;

/// One connection to the upstream and what was read from it.
pub struct Conn {
    pub stream: TcpStream,
    pub buf: BytesMut,
    /// Where the header lines of the response head at the front of `buf` lie (read once, by
    /// the head's reader; the list kept with the connection, so it is not allocated again).
    pub fields: Vec<Field>,
    idle_since: Instant,
    reused: bool,
}

impl Conn {
    /// Whether the connection came from the pool (it may have been closed meanwhile).
    pub fn reused(&self) -> bool {
        self.reused
    }
}

/// One header line of a response head: its name's and its value's byte ranges in the buffer.
#[derive(Debug, Clone)]
pub struct Field {
    pub name: std::ops::Range<usize>,
    pub value: std::ops::Range<usize>,
}

/// The idle connections of one upstream.
#[derive(Default)]
pub struct Pool {
    idle: Mutex<Vec<Conn>>,
}

impl Pool {
    /// An idle connection the upstream has not closed, or a new one within `connect_timeout`.
    pub async fn get(
        &self,
        authority: &Authority,
        connect_timeout: Duration,
        side: Side,
    ) -> Result<Conn, ProxyError> {
        while let Some(conn) = self.take() {
            if conn.idle_since.elapsed() < IDLE && is_open(&conn.stream) {
                return Ok(Conn {
                    reused: true,
                    ..conn
                });
            }
        }
        // Boxed: connecting is the rare case, and its future (address resolution, the
        // connect, its timer) would otherwise size every future that awaits this one.
        Box::pin(connect(authority, connect_timeout, side)).await
    }

    fn take(&self) -> Option<Conn> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop()
    }

    /// Returns a connection whose last response was read to its end.
    pub fn put(&self, mut conn: Conn) {
        if !conn.buf.is_empty() {
            return;
        }
        conn.idle_since = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
    }
}

/// A new connection to the upstream at `authority`, within `connect_timeout`.
async fn connect(
    authority: &Authority,
    connect_timeout: Duration,
    side: Side,
) -> Result<Conn, ProxyError> {
    let host = authority.host();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port = authority.port_u16().unwrap_or(80);
    let origin = Origin::Upstream(side);
    let stream = match tokio::time::timeout(connect_timeout, TcpStream::connect((host, port))).await
    {
        Err(elapsed) => {
            return Err(ProxyError::new(
                Kind::ConnectTimeout,
                origin,
                true,
                format!("connecting to the {} timed out", side.noun()),
            )
            .with_source(elapsed));
        }
        Ok(Err(error)) => {
            return Err(ProxyError::new(
                Kind::Connect,
                origin,
                true,
                format!("the {} refused the connection", side.noun()),
            )
            .with_source(error));
        }
        Ok(Ok(stream)) => stream,
    };
    let _ = stream.set_nodelay(true);
    Ok(Conn {
        stream,
        buf: BytesMut::with_capacity(BUFFER_BYTES),
        fields: Vec::new(),
        idle_since: Instant::now(),
        reused: false,
    })
}

/// Whether the upstream left the connection open (no EOF, no stray bytes waiting). Costs no
/// system call unless the socket became readable while idle.
fn is_open(stream: &TcpStream) -> bool {
    let mut probe = [0u8; 1];
    matches!(stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}
