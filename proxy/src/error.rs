//! The proxy's one error type: what went wrong, on which side, and whether a retry is safe.
//! The fallback logic reads it, the metrics label it, the client gets a precise status and a JSON
//! body that names the cause without naming internals (no upstream addresses).

use std::time::Duration;

use http::{HeaderValue, Response, StatusCode, header};

use crate::body::Body;
use crate::table::Side;

/// What failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The request body is larger than the route allows.
    BodyTooLarge,
    /// The request's header section is larger than the proxy allows.
    HeadersTooLarge,
    /// The request body broke off before its end.
    ClientBody,
    /// No connection to the upstream could be made (refused, unreachable).
    Connect,
    /// The connection took longer than the upstream's connect timeout.
    ConnectTimeout,
    /// No response head within the route's timeout.
    Timeout,
    /// The upstream broke the exchange (reset, malformed response).
    Protocol,
}

/// Where the failure is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Client,
    Upstream(Side),
}

/// A failure answered by the proxy itself.
#[derive(Debug, Clone)]
pub struct ProxyError {
    pub kind: Kind,
    pub origin: Origin,
    /// Whether sending the request elsewhere cannot have done anything twice: nothing reached
    /// the upstream (connect failures), or the method is idempotent.
    pub retry_safe: bool,
    detail: String,
}

impl ProxyError {
    pub fn new(kind: Kind, origin: Origin, retry_safe: bool, detail: impl Into<String>) -> Self {
        Self {
            kind,
            origin,
            retry_safe,
            detail: detail.into(),
        }
    }

    pub fn body_too_large(limit: u64) -> Self {
        Self::new(
            Kind::BodyTooLarge,
            Origin::Client,
            false,
            format!("the request body exceeds this route's limit of {limit} bytes"),
        )
    }

    pub fn headers_too_large(limit: usize) -> Self {
        Self::new(
            Kind::HeadersTooLarge,
            Origin::Client,
            false,
            format!("the request headers exceed the limit of {limit} bytes"),
        )
    }

    pub fn timeout(side: Side, after: Duration, idempotent: bool) -> Self {
        Self::new(
            Kind::Timeout,
            Origin::Upstream(side),
            idempotent,
            format!(
                "the {} did not answer within {} ms",
                side_name(side),
                after.as_millis()
            ),
        )
    }

    /// The metrics label of the kind.
    pub fn kind_label(&self) -> &'static str {
        match self.kind {
            Kind::BodyTooLarge => "body_too_large",
            Kind::HeadersTooLarge => "headers_too_large",
            Kind::ClientBody => "client_body",
            Kind::Connect => "connect",
            Kind::ConnectTimeout => "connect_timeout",
            Kind::Timeout => "timeout",
            Kind::Protocol => "protocol",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self.kind {
            Kind::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Kind::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Kind::ClientBody => StatusCode::BAD_REQUEST,
            Kind::Connect | Kind::Protocol => StatusCode::BAD_GATEWAY,
            Kind::ConnectTimeout | Kind::Timeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The JSON response for the client.
    pub fn into_response(self, route: &str) -> Response<Body> {
        json_error(self.status(), self.kind_label(), &self.detail, route)
    }

    /// Classifies a failure of the HTTP client.
    pub fn from_client_error(
        error: &hyper_util::client::legacy::Error,
        side: Side,
        idempotent: bool,
        body_exceeded: bool,
        body_limit: u64,
    ) -> Self {
        if body_exceeded {
            return Self::body_too_large(body_limit);
        }
        let origin = Origin::Upstream(side);
        if error.is_connect() {
            let timed_out = source_chain(error).any(|e| {
                e.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
            });
            return if timed_out {
                Self::new(
                    Kind::ConnectTimeout,
                    origin,
                    true,
                    format!("connecting to the {} timed out", side_name(side)),
                )
            } else {
                Self::new(
                    Kind::Connect,
                    origin,
                    true,
                    format!("the {} refused the connection", side_name(side)),
                )
            };
        }
        let client_body = source_chain(error).any(|e| {
            e.downcast_ref::<hyper::Error>()
                .is_some_and(|h| h.is_body_write_aborted() || h.is_user())
        });
        if client_body {
            return Self::new(
                Kind::ClientBody,
                Origin::Client,
                false,
                "the request body broke off before its end",
            );
        }
        Self::new(
            Kind::Protocol,
            origin,
            idempotent,
            format!("the {} broke off the exchange", side_name(side)),
        )
    }
}

fn source_chain<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(error), |e| e.source())
}

fn side_name(side: Side) -> &'static str {
    match side {
        Side::Legacy => "monolith",
        Side::Extracted => "extracted service",
    }
}

/// A JSON error response: `{"error": {"code", "message", "route"}}`.
pub fn json_error(status: StatusCode, code: &str, message: &str, route: &str) -> Response<Body> {
    let body = serde_json::json!({
        "error": { "code": code, "message": message, "route": route }
    });
    let mut response = Response::new(Body::full(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
