//! The one body type of the proxy, both directions: a streamed hyper body (optionally counted
//! against a limit) or bytes the proxy made itself. An enum, not a box: no allocation per request.
//! A body cut off at its limit says so in its error ([`BodyError::TooLarge`]), which the HTTP
//! client keeps in the chain of the error it returns: no flag shared with the request path.
//!
//! A streamed body may carry a [`Tee`] (shadow comparison, recording): each data frame passes on
//! as it comes and a reference to it is kept, up to the tee's own limit; the tee reports the
//! whole body, or that it was too large or broken off, to whoever waits for it. The body is
//! never held back for the copy.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;

/// Why a body stopped.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("{0}")]
    Hyper(#[from] hyper::Error),
    #[error("the body exceeds the limit of {0} bytes")]
    TooLarge(u64),
}

/// A request or response body passing through the proxy.
pub struct Body {
    inner: Inner,
}

enum Inner {
    Stream {
        body: Incoming,
        limit: Option<Limit>,
        /// Boxed: only shadowed or recorded bodies have one.
        tee: Option<Box<Tee>>,
    },
    Full(Option<Bytes>),
}

struct Limit {
    max: u64,
    seen: u64,
}

impl Body {
    /// A streamed body, passed through as it comes.
    pub fn stream(body: Incoming) -> Self {
        Self {
            inner: Inner::Stream {
                body,
                limit: None,
                tee: None,
            },
        }
    }

    /// A streamed body that fails with [`BodyError::TooLarge`] once more than `max` bytes went
    /// through.
    pub fn limited(body: Incoming, max: u64) -> Self {
        Self {
            inner: Inner::Stream {
                body,
                limit: Some(Limit { max, seen: 0 }),
                tee: None,
            },
        }
    }

    /// A body of bytes in hand.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        Self {
            inner: Inner::Full((!bytes.is_empty()).then_some(bytes)),
        }
    }

    /// No body.
    pub fn empty() -> Self {
        Self {
            inner: Inner::Full(None),
        }
    }

    /// This body with `tee` keeping a copy of what passes. A body with nothing (more) to
    /// pass is reported whole at once.
    pub fn with_tee(mut self, mut tee: Tee) -> Self {
        match &mut self.inner {
            Inner::Stream {
                tee: slot, body, ..
            } => {
                if http_body::Body::is_end_stream(body) {
                    tee.finish();
                } else {
                    *slot = Some(Box::new(tee));
                }
            }
            Inner::Full(bytes) => {
                if let Some(bytes) = bytes {
                    tee.keep(bytes);
                }
                tee.finish();
            }
        }
        self
    }
}

/// What a [`Tee`] saw of a body.
#[derive(Debug)]
pub enum Teed {
    /// The whole body.
    Whole(Bytes),
    /// More than the tee's limit (reported as soon as it is passed).
    TooLarge,
    /// The body failed, or was dropped before its end (a client that went away).
    Broken,
}

/// A copy of a body as it streams, bounded; its end is handed on once (to a waiting receiver,
/// or to the shadow job it starts).
pub struct Tee {
    max: usize,
    /// Frames kept as they are (the hyper path: no copy).
    kept: Vec<Bytes>,
    /// Bytes copied as they passed (the lean path: its buffers are reused).
    copied: Vec<u8>,
    seen: usize,
    done: Option<Box<dyn FnOnce(Teed) + Send>>,
}

impl Tee {
    /// A tee keeping up to `max` bytes, and the receiver of what it saw.
    pub fn new(max: u64) -> (Self, tokio::sync::oneshot::Receiver<Teed>) {
        let (done, seen) = tokio::sync::oneshot::channel();
        let tee = Tee::then(max, move |teed| {
            // Nobody waiting any more (the comparison gave up): nothing to do.
            let _ = done.send(teed);
        });
        (tee, seen)
    }

    /// A tee keeping up to `max` bytes that calls `done` with what it saw, once, when the
    /// body ends, passes `max` or breaks off.
    pub fn then(max: u64, done: impl FnOnce(Teed) + Send + 'static) -> Self {
        Tee {
            max: usize::try_from(max).unwrap_or(usize::MAX),
            kept: Vec::new(),
            copied: Vec::new(),
            seen: 0,
            done: Some(Box::new(done)),
        }
    }

    /// Keeps a copy of `data` (the lean path's bytes pass through buffers it reuses).
    pub(crate) fn keep_slice(&mut self, data: &[u8]) {
        if self.done.is_none() || data.is_empty() {
            return;
        }
        self.seen = self.seen.saturating_add(data.len());
        if self.seen > self.max {
            // Not copied only to be thrown away.
            self.copied = Vec::new();
            self.send(Teed::TooLarge);
            return;
        }
        if self.copied.is_empty() {
            // Most bodies pass in one piece: then the copy is exactly as long (and becomes
            // `Bytes` without another allocation).
            self.copied.reserve_exact(data.len());
        }
        self.copied.extend_from_slice(data);
    }

    fn keep(&mut self, data: &Bytes) {
        if self.done.is_none() {
            return;
        }
        self.seen = self.seen.saturating_add(data.len());
        if self.seen > self.max {
            self.kept = Vec::new();
            self.send(Teed::TooLarge);
        } else if !data.is_empty() {
            self.kept.push(data.clone());
        }
    }

    /// The body ended: what was kept is reported whole.
    pub(crate) fn finish(&mut self) {
        if self.done.is_none() {
            return;
        }
        let whole = match self.kept.len() {
            0 => Bytes::from(std::mem::take(&mut self.copied)),
            1 => self.kept.pop().unwrap_or_default(),
            _ => {
                let mut whole = Vec::with_capacity(self.seen);
                for piece in self.kept.drain(..) {
                    whole.extend_from_slice(&piece);
                }
                Bytes::from(whole)
            }
        };
        self.send(Teed::Whole(whole));
    }

    fn send(&mut self, teed: Teed) {
        if let Some(done) = self.done.take() {
            done(teed);
        }
    }
}

impl Drop for Tee {
    fn drop(&mut self) {
        self.send(Teed::Broken);
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match &mut self.get_mut().inner {
            Inner::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Inner::Stream { body, limit, tee } => {
                let frame = match Pin::new(&mut *body).poll_frame(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(None) => {
                        if let Some(tee) = tee {
                            tee.finish();
                        }
                        return Poll::Ready(None);
                    }
                    // A dropped tee reports the body broken.
                    Poll::Ready(Some(Err(e))) => {
                        tee.take();
                        return Poll::Ready(Some(Err(e.into())));
                    }
                    Poll::Ready(Some(Ok(frame))) => frame,
                };
                if let (Some(limit), Some(data)) = (limit.as_mut(), frame.data_ref()) {
                    limit.seen += data.len() as u64;
                    if limit.seen > limit.max {
                        tee.take();
                        return Poll::Ready(Some(Err(BodyError::TooLarge(limit.max))));
                    }
                }
                if let Some(t) = tee {
                    if let Some(data) = frame.data_ref() {
                        t.keep(data);
                    }
                    // The length told where the end is, or trailers came (always last; hyper
                    // stops polling after them): report it now, not at a next poll.
                    if frame.is_trailers() || http_body::Body::is_end_stream(body) {
                        t.finish();
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Full(bytes) => bytes.is_none(),
            Inner::Stream { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            Inner::Full(None) => SizeHint::with_exact(0),
            Inner::Stream { body, .. } => body.size_hint(),
        }
    }
}
