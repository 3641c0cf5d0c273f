//! The one body type of the proxy, both directions: a streamed hyper body (optionally counted
//! against a limit) or bytes the proxy made itself. An enum, not a box: no allocation per request.
//! A body cut off at its limit says so in its error ([`BodyError::TooLarge`]), which the HTTP
//! client keeps in the chain of the error it returns: no flag shared with the request path.

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
            inner: Inner::Stream { body, limit: None },
        }
    }

    /// A streamed body that fails with [`BodyError::TooLarge`] once more than `max` bytes went
    /// through.
    pub fn limited(body: Incoming, max: u64) -> Self {
        Self {
            inner: Inner::Stream {
                body,
                limit: Some(Limit { max, seen: 0 }),
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
            Inner::Stream { body, limit } => {
                let frame = match Pin::new(body).poll_frame(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(None) => return Poll::Ready(None),
                    Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
                    Poll::Ready(Some(Ok(frame))) => frame,
                };
                if let (Some(limit), Some(data)) = (limit.as_mut(), frame.data_ref()) {
                    limit.seen += data.len() as u64;
                    if limit.seen > limit.max {
                        return Poll::Ready(Some(Err(BodyError::TooLarge(limit.max))));
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
