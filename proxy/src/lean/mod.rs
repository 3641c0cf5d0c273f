//! The lean HTTP/1.1 path: an HTTP/1.1 client connection served without hyper, from the
//! client's own task ([`crate::connection`] hands it every HTTP/1 connection when
//! [`Http1Path::Lean`] is set, the default).
//!
//! ```text
//! client bytes ─► head read (idle deadline before its first byte, header read timeout after)
//!   ├─ httparse: borrowed slices of the head; anything the lean path does not serve goes to
//!   │    hyper with the connection, the bytes read put back in front (see "Hand-off")
//!   ├─ the hyper path's own steps, on a header map of the request: read the target
//!   │    (x-ficus-* out, method, canonical path, one Host), route, admit (limits, authz),
//!   │    side (canary stickiness), hop-by-hop out, X-Forwarded-*, identity in
//!   ├─ the upstream head written from the client's bytes: names in the case the client wrote
//!   │    them, values as the map has them, the canonical target; head and body in one write
//!   ├─ an upstream connection from the lean pool ([`pool`]) of the route's side, within the
//!   │    route's timeout: the body streamed (Content-Length copied, chunked decoded and
//!   │    written again, bounded by the route's limit) or kept whole for a fallback
//!   ├─ the response head read with httparse (1xx skipped as the hyper client does; a 101
//!   │    refused), hop-by-hop out, x-request-id and x-ficus-* in, one write with the body
//!   │    bytes already read; the rest streamed through the connection's buffers
//!   ├─ a shadowed or recorded route (requests without a body): the job of [`crate::shadow`]
//!   │    begun with the head as it went upstream; the answer's bytes copied to it as they pass
//!   └─ fallback to the monolith, metrics by who answered, the request span: as the hyper path
//! ```
//!
//! Hand-off: a request the lean path does not serve is left unread and the connection goes
//! to hyper for the rest of its life, so hyper answers it exactly as it does without the lean
//! path: heads httparse refuses or that are larger than the hard limit, other versions than
//! HTTP/1.1, targets not in origin form, CONNECT, any `Transfer-Encoding` but one `chunked`,
//! `Content-Length` beside it or twice, `Expect`, upgrade offers (hyper's tunnel code), targets
//! refused before routing, requests with a body on a shadowed or recorded route (hyper's
//! path tees a body as it streams), and routes with an `https://` upstream. HTTP/2
//! connections never come here.

pub mod codec;
pub mod fetch;
pub mod pool;

use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::uri::Scheme;
use http::{Method, Response, Uri, Version};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tracing::Instrument;

use crate::body::Body;
use crate::connection::Prefixed;
use crate::error::{Failure, Kind, Origin, ProxyError};
use crate::handler::Proxy;
use crate::metrics::{Answerer, Deadline};
use crate::table::{Route, Side, Table};
use crate::upstream::Upstream;
use codec::Framing;

/// Which code serves HTTP/1.1 clients (`ServerSettings::http1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Http1Path {
    /// The lean path, handing to hyper what it does not serve.
    #[default]
    Lean,
    /// hyper for every HTTP/1 connection.
    Hyper,
}

impl Http1Path {
    /// The setting's value: `lean` or `hyper`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Lean => "lean",
            Self::Hyper => "hyper",
        }
    }
}

impl std::str::FromStr for Http1Path {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "lean" => Ok(Self::Lean),
            "hyper" => Ok(Self::Hyper),
            other => Err(format!("`{other}`: the HTTP/1 path is `lean` or `hyper`")),
        }
    }
}

/// The lean path's share of the listener settings.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub header_read_timeout: Duration,
    /// Heads larger than this go to hyper, which answers 431.
    pub max_head_bytes: usize,
}

/// Header lines parsed per message (as hyper).
const MAX_HEADERS: usize = 100;
/// A response head larger than this is the upstream's fault.
const MAX_RESPONSE_HEAD_BYTES: usize = 64 * 1024;
/// Read size on the client side (the buffer a connection keeps while idle).
const READ_BYTES: usize = 8 * 1024;

static X_FICUS_ROUTE: &[u8] = b"x-ficus-route";
static X_FICUS_SIDE: &[u8] = b"x-ficus-side";
static X_FICUS_TABLE: &[u8] = b"x-ficus-table";
static X_REQUEST_ID: &[u8] = b"x-request-id";

/// How the lean path's service of a connection ended.
pub(crate) enum End {
    /// Closed (by either side, a deadline, or shutdown).
    Closed,
    /// hyper serves the rest: the unread bytes are the connection's prefix.
    Hyper(Prefixed),
}

/// Serves an HTTP/1 connection until it closes or a request needs hyper.
pub(crate) async fn serve(
    io: Prefixed,
    client: SocketAddr,
    proxy: Arc<Proxy>,
    settings: Settings,
    idle: Duration,
    stop: &mut watch::Receiver<bool>,
) -> End {
    let mut buf = BytesMut::with_capacity(READ_BYTES.max(io.prefix.len()));
    buf.extend_from_slice(&io.prefix);
    let mut conn = Conn {
        io,
        buf,
        head: Bytes::new(),
        upstream_head: Vec::new(),
        out: Vec::new(),
        client,
        client_ip: crate::handler::client_ip(client),
        proxy,
        settings,
        upstream_timer: None,
    };
    conn.io.prefix = Bytes::new();
    match conn.run(idle, stop).await {
        Ended::Closed => End::Closed,
        Ended::Hyper => End::Hyper(conn.hand_off()),
    }
}

/// How [`Conn::run`] ended.
enum Ended {
    Closed,
    Hyper,
}

/// One client connection on the lean path.
struct Conn {
    io: Prefixed,
    /// Bytes read from the client, not yet used.
    buf: BytesMut,
    /// The head of the request being served (split off `buf`: the header map's values are
    /// slices of it, not copies).
    head: Bytes,
    /// The head written upstream (kept for a fallback's replay).
    upstream_head: Vec<u8>,
    /// What is written next (to either side).
    out: Vec<u8>,
    client: SocketAddr,
    /// `client`'s address as `X-Forwarded-For` carries it, made once.
    client_ip: HeaderValue,
    proxy: Arc<Proxy>,
    settings: Settings,
    /// The route timeout's timer, kept armed across requests (see [`Conn::send`]).
    upstream_timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

/// What follows a request.
enum Next {
    KeepAlive,
    Close,
    Hyper,
}

/// How the request body travels upstream.
#[derive(Clone, Copy)]
enum Send {
    /// Read whole before the first attempt (into `Conn::out`, where every attempt finds it).
    Kept,
    /// Read from the client as it is written upstream.
    Streamed(Framing),
}

/// A response head read from an upstream: the connection (the head at the front of its
/// buffer) and what the head said.
struct Answer {
    conn: pool::Conn,
    head_len: usize,
    status: u16,
    /// The reason phrase's bytes in `conn.buf` (the header lines' are `conn.fields`).
    reason: std::ops::Range<usize>,
    framing: Framing,
    /// The upstream keeps the connection open after this response.
    keep_alive: bool,
}

impl Conn {
    async fn run(&mut self, idle: Duration, stop: &watch::Receiver<bool>) -> Ended {
        // Between requests the header read timeout runs too (as hyper's header timer): the
        // shorter one closes the connection; only the idle deadline is counted.
        let wait = idle.min(self.settings.header_read_timeout);
        // One timer for the connection's life, not one per request: armed for the first wait,
        // it fires at most once per `wait` and is moved on to the deadline of the wait in
        // progress then (registering a timer and removing it again cost every request more
        // than the request's own header edits).
        let mut timer = std::pin::pin!(tokio::time::sleep(wait));
        // The same for the shutdown signal: one waiter for the connection's life.
        let mut watch = stop.clone();
        let mut stopping = std::pin::pin!(async move {
            let _ = watch.changed().await;
        });
        loop {
            if self.buf.is_empty() {
                self.buf.clear();
                self.buf.reserve(READ_BYTES);
                let deadline = tokio::time::Instant::now() + wait;
                let read = loop {
                    // The read first: a request that came is served unless shutdown had
                    // begun (checked after the read), and the stop waiter is not polled then.
                    tokio::select! {
                        biased;
                        read = self.io.read_buf(&mut self.buf) => break Some(read),
                        () = stopping.as_mut() => return Ended::Closed,
                        () = timer.as_mut() => match rearm(timer.as_mut(), deadline) {
                            Timer::Expired => break None,
                            Timer::Rearmed => {}
                        },
                    }
                };
                match read {
                    None => {
                        if idle <= self.settings.header_read_timeout {
                            self.proxy.metrics.deadline(Deadline::Idle);
                        }
                        tracing::debug!(client = %self.client, "idle past the deadline; closing");
                        return Ended::Closed;
                    }
                    Some(Ok(0) | Err(_)) => return Ended::Closed,
                    Some(Ok(_)) => {}
                }
            }
            if *stop.borrow() {
                return Ended::Closed;
            }
            let Some(len) = self.read_head().await else {
                return Ended::Closed;
            };
            let Ok(len) = len else {
                return Ended::Hyper;
            };
            self.head = self.buf.split_to(len).freeze();
            match self.request(stop).await {
                Next::KeepAlive => {}
                Next::Close => {
                    let _ = self.io.shutdown().await;
                    return Ended::Closed;
                }
                Next::Hyper => return Ended::Hyper,
            }
        }
    }

    /// Reads until `buf` holds a whole head (up to its empty line; httparse reads it after):
    /// `Some(Ok(len))`; `Some(Err(()))` for a head hyper must answer (larger than the hard
    /// limit); `None` when the client closed or took longer than the header read timeout.
    async fn read_head(&mut self) -> Option<Result<usize, ()>> {
        let deadline = tokio::time::Instant::now() + self.settings.header_read_timeout;
        let mut scanned = 0;
        loop {
            match head_end(&self.buf, scanned) {
                Ok(len) => return Some(Ok(len)),
                Err(next) => scanned = next,
            }
            if self.buf.len() >= self.settings.max_head_bytes {
                return Some(Err(()));
            }
            self.buf.reserve(READ_BYTES);
            match tokio::time::timeout_at(deadline, self.io.read_buf(&mut self.buf)).await {
                Err(_) => {
                    tracing::debug!(client = %self.client, "no whole head within the header read timeout");
                    return None;
                }
                Ok(Ok(0) | Err(_)) => return None,
                Ok(Ok(_)) => {}
            }
        }
    }

    /// The connection for hyper, with the bytes not yet served in front.
    fn hand_off(self) -> Prefixed {
        let mut prefix = BytesMut::with_capacity(self.head.len() + self.buf.len());
        prefix.extend_from_slice(&self.head);
        prefix.extend_from_slice(&self.buf);
        let mut io = self.io;
        io.prefix = prefix.freeze();
        io
    }

    /// Serves the request whose head is in `self.head`.
    async fn request(&mut self, stop: &watch::Receiver<bool>) -> Next {
        let table = self.proxy.table();
        let head = std::mem::take(&mut self.head);
        let next = self.serve_head(&table, &head, stop).await;
        // Kept only for a hand-off to hyper; otherwise let go, so that `buf` is the only owner
        // of its memory again and reuses it.
        if matches!(next, Next::Hyper) {
            self.head = head;
        }
        next
    }

    async fn serve_head(
        &mut self,
        table: &Arc<Table>,
        head: &Bytes,
        stop: &watch::Receiver<bool>,
    ) -> Next {
        let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut []);
        // Partial too: the head ends at an empty line httparse does not read as one.
        if !matches!(
            request.parse_with_uninit_headers(head, &mut slots),
            Ok(httparse::Status::Complete(len)) if len == head.len()
        ) {
            return Next::Hyper;
        }
        let (Some(method_text), Some(target_text), Some(1)) =
            (request.method, request.path, request.version)
        else {
            return Next::Hyper;
        };
        if !target_text.starts_with('/') || method_text == "CONNECT" {
            return Next::Hyper;
        }
        let Some(heads) = codec::request_framing(request.headers) else {
            return Next::Hyper;
        };
        let (Ok(method), Ok(uri)) = (
            Method::from_bytes(method_text.as_bytes()),
            Uri::try_from(target_text),
        ) else {
            return Next::Hyper;
        };
        let mut headers = HeaderMap::with_capacity(request.headers.len() + 8);
        for header in request.headers.iter() {
            let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(header.name.as_bytes()),
                HeaderValue::from_maybe_shared(head.slice_ref(header.value)),
            ) else {
                return Next::Hyper;
            };
            headers.append(name, value);
        }
        // Step 0, read the target, as the hyper path's `read_target`.
        crate::authz::headers::strip_own(&mut headers);
        let target = crate::target::check_method(&method, table.is_misspelled(&method))
            .and_then(|()| crate::target::read(&uri))
            .and_then(|target| {
                crate::target::reconcile_host(&uri, Version::HTTP_11, &mut headers).map(|_| target)
            });
        let Ok(target) = target else {
            // Refused before routing: hyper answers it under the default route.
            return Next::Hyper;
        };
        let route = table.route(&method, &target.path.path, &headers);
        if !serves(route, heads.framing) {
            return Next::Hyper;
        }
        let span = tracing::info_span!(
            target: "ficus_proxy::request",
            "request",
            route = %route.name,
            method = %method,
            path = %target.path_and_query.path(),
            side = tracing::field::Empty,
            status = tracing::field::Empty,
        );
        let exchange = Exchange {
            span: span.clone(),
            table,
            route,
            start: Instant::now(),
            request_id: RequestId::read(&mut headers),
            trusted: table.is_trusted(self.client.ip()),
            idempotent: crate::handler::is_idempotent(&method),
            head_request: method == Method::HEAD,
            // The length `request_framing` read (none for a chunked body, 0 as none).
            declared_length: match heads.framing {
                Framing::Length(n) => Some(n),
                _ => None,
            },
            framing: heads.framing,
            client_close: heads.close,
            side: Side::Monolith,
            fell_back: None,
            body_done: heads.framing == Framing::Empty,
            method,
        };
        let raw = request.headers;
        let pq_len = uri.path_and_query().map_or(0, |pq| pq.as_str().len());
        let exchange = self.exchange(exchange, method_text, &target, raw, headers, pq_len, stop);
        // Off (the default: its target is off unless asked for), the span is not entered.
        if span.is_disabled() {
            exchange.await
        } else {
            exchange.instrument(span).await
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn exchange(
        &mut self,
        mut ex: Exchange<'_>,
        method_text: &str,
        target: &crate::target::Target,
        raw: &[httparse::Header<'_>],
        mut headers: HeaderMap,
        pq_len: usize,
        stop: &watch::Receiver<bool>,
    ) -> Next {
        let mut shadow = None;
        let outcome = async {
            admit(&ex, target, &mut headers, pq_len)
                .await
                .map(|identity| {
                    // Phase 2, choose the side.
                    ex.side = ex.route.side(&headers, self.client.ip());
                    // Phase 3, the head upstream: as the hyper path's plan_body.
                    crate::handler::prepare_headers(
                        &mut headers,
                        &self.client_ip,
                        None,
                        ex.trusted,
                    );
                    if let (Some(authz), Some(identity)) = (&ex.table.authz, &identity) {
                        authz.forward(&mut headers, identity, &ex.route.name);
                    }
                    write_request_head(
                        &mut self.upstream_head,
                        method_text,
                        target.path_and_query.as_str(),
                        raw,
                        &headers,
                        ex.request_id.made(),
                        ex.framing == Framing::Chunked,
                    );
                })?;
            // Beside phase 4: a shadowed or recorded route's copy and record, a job of its own
            // (the request has no body: `serves`).
            if let Some(parity) = &ex.route.parity {
                let headers = std::mem::take(&mut headers);
                shadow = begin_parity(
                    parity,
                    &ex,
                    self.client.ip(),
                    target,
                    headers,
                    &self.upstream_head,
                );
            }
            let may_fall_back = ex.side == Side::Extracted && ex.route.fallback && ex.idempotent;
            let keep = may_fall_back
                && (ex.framing == Framing::Empty
                    || ex
                        .declared_length
                        .is_some_and(|len| len <= ex.table.fallback_buffer_bytes));
            let send = if keep {
                self.keep_body(&mut ex).await?;
                Send::Kept
            } else {
                Send::Streamed(ex.framing)
            };
            // Phase 4, forward.
            let side = ex.side;
            let outcome = self.send(&mut ex, side, send).await;
            if !keep {
                return outcome;
            }
            // Phase 5, fall back.
            let failure = match &outcome {
                Err(error) if error.retry_safe => error.failure(),
                Ok(answer) if (500..600).contains(&answer.status) => Some(Failure::ServerError),
                _ => None,
            };
            let Some(failure) = failure else {
                return outcome;
            };
            match &outcome {
                Ok(answer) => {
                    ex.route
                        .metrics
                        .upstream_error(ex.side, Failure::ServerError);
                    tracing::warn!(
                        status = answer.status,
                        side = ex.side.as_str(),
                        "upstream failed; falling back to the monolith"
                    );
                }
                Err(error) => tracing::warn!(
                    error = %error.chain(),
                    kind = error.kind_label(),
                    side = ex.side.as_str(),
                    "upstream failed; falling back to the monolith"
                ),
            }
            drop(outcome);
            ex.route.metrics.fallback(failure);
            ex.fell_back = Some(failure);
            self.send(&mut ex, Side::Monolith, Send::Kept).await
        }
        .await;
        // Phase 6, respond and record.
        let close = ex.client_close || *stop.borrow();
        match outcome.and_then(|answer| match answer.status {
            101 => Err(ProxyError::unasked_switch(ex.responding_side())),
            _ => Ok(answer),
        }) {
            Ok(answer) => {
                let close = close || !ex.body_done;
                self.pass_on(&ex, answer, close, shadow).await
            }
            Err(error) => {
                match error.origin {
                    _ if error.denial_reason().is_some() => {}
                    Origin::Upstream(side) => tracing::warn!(
                        error = %error.chain(),
                        kind = error.kind_label(),
                        side = side.as_str(),
                        "upstream failed"
                    ),
                    Origin::Client | Origin::Proxy => tracing::debug!(
                        error = %error.chain(),
                        kind = error.kind_label(),
                        "refused"
                    ),
                }
                let close = close || !ex.body_done;
                let response = error.into_response(&ex.route.name);
                self.answer_own(&ex, response, close).await
            }
        }
    }

    /// Reads the whole request body (within the route's limit) for a replay.
    async fn keep_body(&mut self, ex: &mut Exchange<'_>) -> Result<(), ProxyError> {
        self.out.clear();
        if let Framing::Length(n) = ex.framing {
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            while self.buf.len() < n {
                self.buf.reserve(n - self.buf.len());
                match self.io.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return Err(ProxyError::client_body()),
                    Ok(_) => {}
                }
            }
            self.out.extend_from_slice(&self.buf[..n]);
            self.buf.advance(n);
        }
        ex.body_done = true;
        Ok(())
    }

    /// One attempt on `side` within the route's timeout; a failed one is counted on `side`.
    async fn send(
        &mut self,
        ex: &mut Exchange<'_>,
        side: Side,
        send: Send,
    ) -> Result<Answer, ProxyError> {
        let route = ex.route;
        let upstream = route.upstream(side);
        // The connection's timer, moved on lazily as the client's (see `run`): armed earlier
        // than this deadline it fires and is moved on; armed later, it is moved back now.
        let deadline = tokio::time::Instant::now() + route.timeout;
        let mut timer = self
            .upstream_timer
            .take()
            .unwrap_or_else(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() > deadline {
            timer.as_mut().reset(deadline);
        }
        let result = {
            let attempt = self.attempt(ex, upstream, side, send);
            let mut attempt = std::pin::pin!(attempt);
            loop {
                tokio::select! {
                    biased;
                    outcome = &mut attempt => break Some(outcome),
                    () = timer.as_mut() => match rearm(timer.as_mut(), deadline) {
                        Timer::Expired => break None,
                        Timer::Rearmed => {}
                    },
                }
            }
        };
        self.upstream_timer = Some(timer);
        let outcome = match result {
            None => Err(ProxyError::timeout(side, route.timeout, ex.idempotent)),
            Some(outcome) => outcome,
        };
        if let Err(error) = &outcome
            && let Some(failure) = error.failure()
        {
            route.metrics.upstream_error(side, failure);
        }
        outcome
    }

    /// Writes the request (head and body) and reads the response head. A pooled connection
    /// the upstream closed before answering is replaced once when the body can be sent again.
    async fn attempt(
        &mut self,
        ex: &mut Exchange<'_>,
        upstream: &Upstream,
        side: Side,
        send: Send,
    ) -> Result<Answer, ProxyError> {
        let replayable = matches!(send, Send::Kept | Send::Streamed(Framing::Empty));
        let mut tries = 0;
        loop {
            tries += 1;
            let conn = upstream
                .lean
                .get(&upstream.authority, upstream.connect_timeout, side)
                .await?;
            let reused = conn.reused();
            let idempotent = ex.idempotent;
            let broke = |error: std::io::Error| {
                ProxyError::new(
                    Kind::Protocol,
                    Origin::Upstream(side),
                    idempotent,
                    format!("the {} broke off the exchange", side.noun()),
                )
                .with_source(error)
            };
            let mut conn = conn;
            let written = self.write_request(ex, &mut conn, send).await;
            match written {
                Err(Failed::Upstream(error)) if reused && replayable && tries == 1 => {
                    tracing::debug!(%error, "a pooled connection was closed; another one");
                    continue;
                }
                Err(Failed::Upstream(error)) => return Err(broke(error)),
                Err(Failed::Proxy(error)) => return Err(error),
                Ok(()) => {}
            }
            match read_response_head(conn, ex.head_request).await {
                Ok(answer) => return Ok(answer),
                Err(HeadError::Closed(error)) if reused && replayable && tries == 1 => {
                    tracing::debug!(%error, "a pooled connection was closed; another one");
                    continue;
                }
                Err(HeadError::Closed(error)) => return Err(broke(error)),
                Err(HeadError::Malformed(what)) => {
                    return Err(ProxyError::new(
                        Kind::Protocol,
                        Origin::Upstream(side),
                        ex.idempotent,
                        format!("the {} broke off the exchange", side.noun()),
                    )
                    .with_source(codec::ChunkError(what)));
                }
            }
        }
    }

    /// The head and the body, in as few writes as the body allows (one when it is in hand).
    async fn write_request(
        &mut self,
        ex: &mut Exchange<'_>,
        conn: &mut pool::Conn,
        send: Send,
    ) -> Result<(), Failed> {
        let mut out = std::mem::take(&mut self.out);
        let result = async {
            match send {
                Send::Kept => {
                    // `out` holds the kept body; the head goes in front of it in one write.
                    let mut whole = Vec::with_capacity(self.upstream_head.len() + out.len());
                    whole.extend_from_slice(&self.upstream_head);
                    whole.extend_from_slice(&out);
                    conn.stream
                        .write_all(&whole)
                        .await
                        .map_err(Failed::Upstream)?;
                    return Ok(());
                }
                Send::Streamed(Framing::Empty | Framing::Close) => {
                    conn.stream
                        .write_all(&self.upstream_head)
                        .await
                        .map_err(Failed::Upstream)?;
                }
                Send::Streamed(Framing::Length(n)) => {
                    out.clear();
                    out.extend_from_slice(&self.upstream_head);
                    let first = usize::try_from(n).unwrap_or(usize::MAX).min(self.buf.len());
                    out.extend_from_slice(&self.buf[..first]);
                    self.buf.advance(first);
                    let mut remaining = n - first as u64;
                    conn.stream
                        .write_all(&out)
                        .await
                        .map_err(Failed::Upstream)?;
                    while remaining > 0 {
                        if self.buf.is_empty() {
                            self.buf.clear();
                            self.buf.reserve(READ_BYTES);
                            match self.io.read_buf(&mut self.buf).await {
                                Ok(0) | Err(_) => {
                                    return Err(Failed::Proxy(ProxyError::client_body()));
                                }
                                Ok(_) => {}
                            }
                        }
                        let take = usize::try_from(remaining)
                            .unwrap_or(usize::MAX)
                            .min(self.buf.len());
                        conn.stream
                            .write_all(&self.buf[..take])
                            .await
                            .map_err(Failed::Upstream)?;
                        self.buf.advance(take);
                        remaining -= take as u64;
                    }
                    ex.body_done = true;
                }
                Send::Streamed(Framing::Chunked) => {
                    out.clear();
                    out.extend_from_slice(&self.upstream_head);
                    let mut decoder = codec::Chunked::default();
                    let mut seen = 0u64;
                    loop {
                        seen += decoder
                            .decode(&mut self.buf, &mut out)
                            .map_err(|e| Failed::Proxy(ProxyError::client_body().with_source(e)))?;
                        if seen > ex.route.max_body_bytes {
                            return Err(Failed::Proxy(ProxyError::body_too_large(
                                ex.route.max_body_bytes,
                            )));
                        }
                        if !out.is_empty() {
                            conn.stream
                                .write_all(&out)
                                .await
                                .map_err(Failed::Upstream)?;
                            out.clear();
                        }
                        if decoder.is_done() {
                            break;
                        }
                        self.buf.clear();
                        self.buf.reserve(READ_BYTES);
                        match self.io.read_buf(&mut self.buf).await {
                            Ok(0) | Err(_) => {
                                return Err(Failed::Proxy(ProxyError::client_body()));
                            }
                            Ok(_) => {}
                        }
                    }
                    ex.body_done = true;
                }
            }
            Ok(())
        }
        .await;
        if matches!(send, Send::Streamed(_)) {
            out.clear();
        }
        self.out = out;
        result
    }

    /// The upstream's response for the client: its head with hop-by-hop headers out and the
    /// proxy's in, written once with the body bytes in hand; the rest streamed.
    /// On a shadowed route, `shadow` waits for the answer: it gets the head, and the body's
    /// bytes as they pass (a copy, bounded).
    async fn pass_on(
        &mut self,
        ex: &Exchange<'_>,
        mut answer: Answer,
        close: bool,
        shadow: Option<crate::shadow::Watch>,
    ) -> Next {
        let answerer = Answerer::from(ex.responding_side());
        ex.span.record("side", answerer.as_str());
        ex.span.record("status", answer.status);
        ex.route
            .metrics
            .answered(answerer, answer.status, ex.start.elapsed().as_secs_f64());
        self.out.clear();
        write_response_head(&mut self.out, ex, &answer, answerer, close);
        let mut tee = shadow.and_then(|watch| {
            watch.answer(ex.responding_side(), answer.status, || {
                fetch::Lines::of(&answer.conn, answer.head_len)
            })
        });
        let mut keep = |data: &[u8]| {
            if let Some(tee) = tee.as_mut() {
                tee.keep_slice(data);
            }
        };
        answer.conn.buf.advance(answer.head_len);
        let conn = &mut answer.conn;
        let complete = match answer.framing {
            Framing::Empty => self.io.write_all(&self.out).await.is_ok(),
            Framing::Length(n) => {
                let first = usize::try_from(n).unwrap_or(usize::MAX).min(conn.buf.len());
                self.out.extend_from_slice(&conn.buf[..first]);
                keep(&conn.buf[..first]);
                conn.buf.advance(first);
                let mut remaining = n - first as u64;
                let mut ok = self.io.write_all(&self.out).await.is_ok();
                while ok && remaining > 0 {
                    conn.buf.clear();
                    conn.buf.reserve(pool::BUFFER_BYTES);
                    match conn.stream.read_buf(&mut conn.buf).await {
                        Ok(0) | Err(_) => ok = false,
                        Ok(_) => {
                            let take = usize::try_from(remaining)
                                .unwrap_or(usize::MAX)
                                .min(conn.buf.len());
                            ok = self.io.write_all(&conn.buf[..take]).await.is_ok();
                            keep(&conn.buf[..take]);
                            conn.buf.advance(take);
                            remaining -= take as u64;
                        }
                    }
                }
                ok
            }
            Framing::Chunked => {
                let mut decoder = codec::Chunked::default();
                loop {
                    if decoder
                        .decode_with(&mut conn.buf, &mut self.out, &mut keep)
                        .is_err()
                    {
                        break false;
                    }
                    if !self.out.is_empty() {
                        if self.io.write_all(&self.out).await.is_err() {
                            break false;
                        }
                        self.out.clear();
                    }
                    if decoder.is_done() {
                        break true;
                    }
                    conn.buf.clear();
                    conn.buf.reserve(pool::BUFFER_BYTES);
                    match conn.stream.read_buf(&mut conn.buf).await {
                        Ok(0) | Err(_) => break false,
                        Ok(_) => {}
                    }
                }
            }
            Framing::Close => {
                answer.keep_alive = false;
                loop {
                    codec::chunk(&mut self.out, &conn.buf);
                    keep(&conn.buf);
                    conn.buf.clear();
                    if !self.out.is_empty() {
                        if self.io.write_all(&self.out).await.is_err() {
                            break false;
                        }
                        self.out.clear();
                    }
                    conn.buf.reserve(pool::BUFFER_BYTES);
                    match conn.stream.read_buf(&mut conn.buf).await {
                        Ok(0) => {
                            break self.io.write_all(b"0\r\n\r\n").await.is_ok();
                        }
                        Err(_) => break false,
                        Ok(_) => {}
                    }
                }
            }
        };
        self.out.clear();
        // Whole, the copy goes to the comparison; broken off, the tee dropped says so.
        if let (true, Some(tee)) = (complete, tee.as_mut()) {
            tee.finish();
        }
        if complete && answer.keep_alive {
            ex.route
                .upstream(ex.responding_side())
                .lean
                .put(answer.conn);
        }
        match (complete, close) {
            (true, false) => Next::KeepAlive,
            _ => Next::Close,
        }
    }

    /// An answer the proxy makes itself, counted as the proxy's.
    async fn answer_own(
        &mut self,
        ex: &Exchange<'_>,
        response: Response<Body>,
        close: bool,
    ) -> Next {
        let status = response.status();
        ex.span.record("side", Answerer::Proxy.as_str());
        ex.span.record("status", status.as_u16());
        ex.route.metrics.answered(
            Answerer::Proxy,
            status.as_u16(),
            ex.start.elapsed().as_secs_f64(),
        );
        let (parts, body) = response.into_parts();
        let body = match body.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(_) => Bytes::new(),
        };
        let out = &mut self.out;
        out.clear();
        status_line(
            out,
            status.as_u16(),
            status.canonical_reason().unwrap_or("").as_bytes(),
        );
        for (name, value) in &parts.headers {
            header_line(out, name.as_str().as_bytes(), value.as_bytes());
        }
        proxy_headers(out, ex, Answerer::Proxy);
        let _ = std::io::Write::write_fmt(out, format_args!("content-length: {}\r\n", body.len()));
        codec::date(out);
        if close {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if !ex.head_request {
            out.extend_from_slice(&body);
        }
        let written = self.io.write_all(&self.out).await.is_ok();
        self.out.clear();
        match (written, close) {
            (true, false) => Next::KeepAlive,
            _ => Next::Close,
        }
    }
}

/// What a lazily moved timer that fired means.
enum Timer {
    /// The deadline passed.
    Expired,
    /// It fired for an earlier deadline and now waits for `deadline`.
    Rearmed,
}

/// A connection's timer fired: the wait whose deadline is `deadline` is over, or the timer was
/// armed for an earlier wait and is moved on to this one.
fn rearm(timer: std::pin::Pin<&mut tokio::time::Sleep>, deadline: tokio::time::Instant) -> Timer {
    if tokio::time::Instant::now() >= deadline {
        return Timer::Expired;
    }
    timer.reset(deadline);
    Timer::Rearmed
}

/// The length of the head at the front of `buf` (through the empty line that ends it: `\n\n`
/// or `\n\r\n`, the line endings httparse accepts), or where to resume looking once more bytes
/// came. What the head holds is httparse's to judge, after.
fn head_end(buf: &[u8], from: usize) -> Result<usize, usize> {
    let mut at = from;
    while let Some(offset) = buf[at..].iter().position(|b| *b == b'\n') {
        let newline = at + offset;
        match &buf[newline + 1..] {
            [b'\n', ..] => return Ok(newline + 2),
            [b'\r', b'\n', ..] => return Ok(newline + 3),
            // Not known yet: look here again with more bytes.
            [] | [b'\r'] => return Err(newline),
            _ => at = newline + 1,
        }
    }
    Err(buf.len())
}

/// `HTTP/1.1 <status> <reason>\r\n`.
fn status_line(out: &mut Vec<u8>, status: u16, reason: &[u8]) {
    out.extend_from_slice(b"HTTP/1.1 ");
    let mut code = [b'0'; 3];
    code[0] += (status / 100 % 10) as u8;
    code[1] += (status / 10 % 10) as u8;
    code[2] += (status % 10) as u8;
    out.extend_from_slice(&code);
    out.push(b' ');
    out.extend_from_slice(reason);
    out.extend_from_slice(b"\r\n");
}

fn header_line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// What the proxy adds to every answer: `x-request-id`, and with `expose_headers` the route,
/// the side that answered and the table's version.
fn proxy_headers(out: &mut Vec<u8>, ex: &Exchange<'_>, answerer: Answerer) {
    header_line(out, X_REQUEST_ID, ex.request_id.as_bytes());
    if ex.table.expose_headers {
        if HeaderValue::from_str(&ex.route.name).is_ok() {
            header_line(out, X_FICUS_ROUTE, ex.route.name.as_bytes());
        }
        header_line(out, X_FICUS_SIDE, answerer.as_str().as_bytes());
        let mut version = itoa_u64(ex.table.version);
        header_line(out, X_FICUS_TABLE, version.as_bytes_mut());
    }
}

/// The response head for the client from the upstream's (the front of `answer.conn.buf`).
fn write_response_head(
    out: &mut Vec<u8>,
    ex: &Exchange<'_>,
    answer: &Answer,
    answerer: Answerer,
    close: bool,
) {
    let buf = &answer.conn.buf;
    let fields = &answer.conn.fields;
    status_line(out, answer.status, &buf[answer.reason.clone()]);
    // Names the upstream's `Connection` header lists end at this hop too (looked for only when
    // it lists one besides `keep-alive`, a hop-by-hop name anyway: nearly never).
    let lists_names = fields.iter().any(|f| {
        buf[f.name.clone()].eq_ignore_ascii_case(b"connection")
            && buf[f.value.clone()].split(|b| *b == b',').any(|token| {
                let token = codec::trim(token);
                !token.is_empty() && !token.eq_ignore_ascii_case(b"keep-alive")
            })
    });
    let listed = |name: &[u8]| {
        fields.iter().any(|f| {
            buf[f.name.clone()].eq_ignore_ascii_case(b"connection")
                && buf[f.value.clone()]
                    .split(|b| *b == b',')
                    .any(|token| codec::trim(token).eq_ignore_ascii_case(name))
        })
    };
    let mut dated = false;
    let mut length: Option<&[u8]> = None;
    for field in fields {
        let (name, value) = (&buf[field.name.clone()], &buf[field.value.clone()]);
        if name.eq_ignore_ascii_case(b"content-length") {
            length = Some(value);
        }
        let skip = codec::is_hop_by_hop(name)
            || name.eq_ignore_ascii_case(X_REQUEST_ID)
            || (ex.table.expose_headers
                && (name.eq_ignore_ascii_case(X_FICUS_ROUTE)
                    || name.eq_ignore_ascii_case(X_FICUS_SIDE)
                    || name.eq_ignore_ascii_case(X_FICUS_TABLE)))
            || (lists_names && listed(name));
        if skip {
            continue;
        }
        dated |= name.eq_ignore_ascii_case(b"date");
        header_line(out, name, value);
    }
    proxy_headers(out, ex, answerer);
    match answer.framing {
        Framing::Length(n) => {
            let mut n = itoa_u64(n);
            header_line(out, b"content-length", n.as_bytes_mut());
        }
        Framing::Chunked | Framing::Close => {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        }
        // A HEAD's or a 304's length describes the body it would have had.
        Framing::Empty => {
            if let Some(length) = length.filter(|_| answer.status != 204) {
                header_line(out, b"content-length", codec::trim(length));
            }
        }
    }
    if !dated {
        codec::date(out);
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// A number's decimal digits, without allocating.
struct Digits {
    bytes: [u8; 20],
    start: usize,
}

impl Digits {
    fn as_bytes_mut(&mut self) -> &[u8] {
        &self.bytes[self.start..]
    }
}

fn itoa_u64(mut n: u64) -> Digits {
    let mut bytes = [0u8; 20];
    let mut start = bytes.len();
    loop {
        start -= 1;
        bytes[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    Digits { bytes, start }
}

/// Why writing a request stopped.
enum Failed {
    /// The upstream connection failed.
    Upstream(std::io::Error),
    /// The client's body, or the route's limit: answered as the proxy's.
    Proxy(ProxyError),
}

/// Why no response head was read.
enum HeadError {
    Closed(std::io::Error),
    Malformed(&'static str),
}

/// Reads a response head into the front of `conn.buf`, skipping 1xx (but 101) as the hyper
/// client does.
async fn read_response_head(mut conn: pool::Conn, head_request: bool) -> Result<Answer, HeadError> {
    loop {
        let parsed = {
            let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
            let mut response = httparse::Response::new(&mut []);
            match httparse::ParserConfig::default().parse_response_with_uninit_headers(
                &mut response,
                &conn.buf,
                &mut slots,
            ) {
                Ok(httparse::Status::Complete(len)) => {
                    let status = response.code.unwrap_or(0);
                    let framing = codec::response_framing(status, head_request, response.headers);
                    let keep_alive = response.version == Some(1)
                        && !response.headers.iter().any(|h| {
                            h.name.eq_ignore_ascii_case("connection")
                                && h.value
                                    .split(|b| *b == b',')
                                    .any(|t| codec::trim(t).eq_ignore_ascii_case(b"close"))
                        });
                    // Where the lines lie, for the head written to the client: parsed once.
                    let start = conn.buf.as_ptr() as usize;
                    let at = |part: &[u8]| match part.len() {
                        0 => 0..0,
                        n => {
                            let from = part.as_ptr() as usize - start;
                            from..from + n
                        }
                    };
                    conn.fields.clear();
                    conn.fields
                        .extend(response.headers.iter().map(|h| pool::Field {
                            name: at(h.name.as_bytes()),
                            value: at(h.value),
                        }));
                    let reason = at(response.reason.unwrap_or("").as_bytes());
                    Some((len, status, framing, keep_alive, reason))
                }
                Ok(httparse::Status::Partial) => None,
                Err(_) => return Err(HeadError::Malformed("malformed response head")),
            }
        };
        match parsed {
            Some((len, status, _, _, _)) if (100..200).contains(&status) && status != 101 => {
                conn.buf.advance(len);
                continue;
            }
            Some((head_len, status, Some(framing), keep_alive, reason)) => {
                return Ok(Answer {
                    conn,
                    head_len,
                    status,
                    reason,
                    framing,
                    keep_alive,
                });
            }
            Some((_, _, None, _, _)) => {
                return Err(HeadError::Malformed("ambiguous response framing"));
            }
            None => {}
        }
        if conn.buf.len() >= MAX_RESPONSE_HEAD_BYTES {
            return Err(HeadError::Malformed("response head too large"));
        }
        conn.buf.reserve(pool::BUFFER_BYTES);
        match conn.stream.read_buf(&mut conn.buf).await {
            Ok(0) => {
                return Err(HeadError::Closed(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "connection closed before a response",
                )));
            }
            Err(error) => return Err(HeadError::Closed(error)),
            Ok(_) => {}
        }
    }
}

/// What one request carries (the hyper path's `Ctx`).
struct Exchange<'t> {
    /// The request's span (disabled unless `ficus_proxy::request` is on).
    span: tracing::Span,
    table: &'t Table,
    route: &'t Route,
    start: Instant,
    request_id: RequestId,
    trusted: bool,
    idempotent: bool,
    declared_length: Option<u64>,
    head_request: bool,
    framing: Framing,
    client_close: bool,
    side: Side,
    fell_back: Option<Failure>,
    /// The request body was read to its end (else the connection closes after the answer).
    body_done: bool,
    method: Method,
}

impl Exchange<'_> {
    fn responding_side(&self) -> Side {
        if self.fell_back.is_some() {
            Side::Monolith
        } else {
            self.side
        }
    }
}

/// Phase 1, admit: as the hyper path's (target rules, limits, edge authorization). Returns the
/// identity authorization verified.
async fn admit(
    ex: &Exchange<'_>,
    target: &crate::target::Target,
    headers: &mut HeaderMap,
    pq_len: usize,
) -> Result<Option<std::sync::Arc<crate::authz::Identity>>, ProxyError> {
    crate::target::check_separators(&target.path, ex.route.allow_encoded_slashes)?;
    crate::target::check_method_override(headers, ex.route.allow_method_override)?;
    let header_bytes = pq_len
        + headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum::<usize>();
    if header_bytes > ex.table.max_header_bytes {
        return Err(ProxyError::headers_too_large(ex.table.max_header_bytes));
    }
    if ex
        .declared_length
        .is_some_and(|len| len > ex.route.max_body_bytes)
    {
        return Err(ProxyError::body_too_large(ex.route.max_body_bytes));
    }
    let Some(authz) = &ex.table.authz else {
        return Ok(None);
    };
    authz.strip_spoofable(headers, ex.trusted);
    match authz.decide(&ex.route.policy, headers).await {
        Ok(allowed) => {
            ex.route.metrics.decision(allowed.reason);
            tracing::debug!(
                target: "ficus_proxy::decision",
                route = %ex.route.name,
                subject = allowed.identity.as_ref().map_or("-", |w| w.subject.as_str()),
                decision = "allow",
                reason = allowed.reason.as_str(),
            );
            Ok(allowed.identity)
        }
        Err(refusal) => {
            if let Some(reason) = refusal.denial_reason() {
                ex.route.metrics.decision(reason);
                tracing::info!(
                    target: "ficus_proxy::decision",
                    route = %ex.route.name,
                    subject = "-",
                    decision = "deny",
                    reason = reason.as_str(),
                );
            }
            Err(refusal)
        }
    }
}

/// The request's `x-request-id`: the client's, or made (random, 128 bits, 32 hex digits) when
/// the client sent none: the hyper path's rule (`handler::ensure_request_id`), without
/// formatting machinery or allocations. A made one is not in the header map: the upstream head
/// gets it after the map's headers ([`write_request_head`]).
enum RequestId {
    Sent(HeaderValue),
    Made([u8; 32]),
}

impl RequestId {
    /// The client's id when it sent a usable one (it stays in `headers`, where the client put
    /// it), else a new one (an unusable one the client sent is removed from `headers`).
    fn read(headers: &mut HeaderMap) -> Self {
        static NAME: HeaderName = HeaderName::from_static("x-request-id");
        if let Some(id) = headers.get(&NAME) {
            if !id.is_empty() && id.len() <= 200 {
                return Self::Sent(id.clone());
            }
            headers.remove(&NAME);
        }
        let random = rand::random::<u128>();
        let mut hex = [0u8; 32];
        for (i, digit) in hex.iter_mut().enumerate() {
            let nibble = (random >> (124 - 4 * i)) & 0xf;
            *digit = b"0123456789abcdef"[nibble as usize];
        }
        Self::Made(hex)
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Sent(id) => id.as_bytes(),
            Self::Made(hex) => hex,
        }
    }

    /// The id the proxy made, which the upstream head must carry besides the map.
    fn made(&self) -> Option<&[u8]> {
        match self {
            Self::Sent(_) => None,
            Self::Made(hex) => Some(hex.as_slice()),
        }
    }
}

/// Whether the lean path serves a request of `route` whose body is framed `framing`: every
/// mode over `http://` upstreams; on a shadowed or recorded route only a request without a
/// body (a body the copy needs is teed as it streams, on the hyper path).
fn serves(route: &Route, framing: Framing) -> bool {
    (route.parity.is_none() || framing == Framing::Empty)
        && route.monolith.scheme == Scheme::HTTP
        && route
            .extracted
            .as_ref()
            .is_none_or(|upstream| upstream.scheme == Scheme::HTTP)
}

/// Starts the job of a shadowed or recorded route ([`crate::shadow`]) with the request as it
/// goes upstream (`headers`: the map the upstream head was written from, the request id
/// the proxy made added); the [`crate::shadow::Watch`] for the answer when it is copied.
fn begin_parity(
    parity: &Arc<crate::shadow::RouteParity>,
    ex: &Exchange<'_>,
    client: std::net::IpAddr,
    target: &crate::target::Target,
    mut headers: HeaderMap,
    written: &[u8],
) -> Option<crate::shadow::Watch> {
    static NAME: HeaderName = HeaderName::from_static("x-request-id");
    if let Some(id) = ex.request_id.made()
        && let Ok(id) = HeaderValue::from_bytes(id)
    {
        headers.insert(&NAME, id);
    }
    let head = crate::shadow::Head {
        served: ex.side,
        method: ex.method.clone(),
        path_and_query: target.path_and_query.clone(),
        headers,
        written: Some(Bytes::copy_from_slice(written)),
    };
    let kept = Bytes::new();
    parity
        .begin(
            ex.route,
            head,
            client,
            false,
            Some(&kept),
            ex.table.authz.as_ref(),
        )
        .map(|(_, watch)| watch)
}

/// The upstream head: the request line with the canonical target, then the headers of `map`
/// (what the hyper path forwards), each name in a case the client wrote it in (names the
/// proxy added in lower case), then the `x-request-id` the proxy made (if it made one), then
/// `transfer-encoding: chunked` when the body is chunked.
fn write_request_head(
    out: &mut Vec<u8>,
    method: &str,
    path_and_query: &str,
    raw: &[httparse::Header<'_>],
    map: &HeaderMap,
    request_id: Option<&[u8]>,
    chunked: bool,
) {
    out.clear();
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path_and_query.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    // The map yields a name's values one after the other (in the order they came); each name
    // is spelled as the client first wrote it, or as the proxy did (lower case) when it is the
    // proxy's. The order of different names is the map's (RFC 9110 §5.3: not significant).
    // The map's order is mostly the client's (the map was built in it; a removal moves the
    // last name into the gap): the client's lines are searched from after the last one found.
    let mut spelled: Option<(&HeaderName, &[u8])> = None;
    let mut cursor = 0;
    for (name, value) in map {
        let spelling = match spelled {
            Some((last, spelling)) if std::ptr::eq(last, name) => spelling,
            _ => {
                let text = name.as_str();
                let same = |h: &httparse::Header<'_>| {
                    h.name.len() == text.len() && h.name.eq_ignore_ascii_case(text)
                };
                let found = (cursor..raw.len())
                    .chain(0..cursor)
                    .find(|&i| same(&raw[i]));
                let spelling = match found {
                    Some(i) => {
                        cursor = i + 1;
                        raw[i].name
                    }
                    None => text,
                };
                spelled = Some((name, spelling.as_bytes()));
                spelling.as_bytes()
            }
        };
        header_line(out, spelling, value.as_bytes());
    }
    if let Some(id) = request_id {
        header_line(out, X_REQUEST_ID, id);
    }
    if chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_id_is_kept_or_made() {
        let mut headers = HeaderMap::new();
        let made = RequestId::read(&mut headers);
        assert_eq!(made.as_bytes().len(), 32);
        assert!(made.as_bytes().iter().all(u8::is_ascii_hexdigit));
        assert_eq!(made.made(), Some(made.as_bytes()));
        assert!(headers.is_empty());
        assert_ne!(
            RequestId::read(&mut HeaderMap::new()).as_bytes(),
            made.as_bytes()
        );
        let mut sent = HeaderMap::new();
        sent.insert("x-request-id", HeaderValue::from_static("abc"));
        let kept = RequestId::read(&mut sent);
        assert_eq!((kept.as_bytes(), kept.made()), (&b"abc"[..], None));
        assert_eq!(sent.get("x-request-id").unwrap(), "abc");
        // An empty one is replaced, not forwarded beside the new one.
        sent.insert("x-request-id", HeaderValue::from_static(""));
        let replaced = RequestId::read(&mut sent);
        assert_eq!(replaced.made().map(<[u8]>::len), Some(32));
        assert!(!sent.contains_key("x-request-id"));
    }

    #[test]
    fn a_head_ends_at_its_first_empty_line() {
        let head = b"GET / HTTP/1.1\r\nhost: a\r\n\r\nBODY";
        assert_eq!(head_end(head, 0), Ok(head.len() - 4));
        assert_eq!(head_end(b"GET / HTTP/1.1\nhost: a\n\n", 0), Ok(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nhost: a\n\r\n", 0), Ok(26));
        // Split anywhere, resumed where it stopped, it finds the same end.
        for split in 0..head.len() - 4 {
            let resume = match head_end(&head[..split], 0) {
                Ok(len) => panic!("{split}: ended early at {len}"),
                Err(resume) => resume,
            };
            assert!(resume <= split);
            assert_eq!(head_end(head, resume), Ok(head.len() - 4), "{split}");
        }
    }
}
