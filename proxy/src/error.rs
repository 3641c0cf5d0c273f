//! The proxy's one error type at the boundary: every answer ficus makes itself instead of
//! passing an upstream's on (limits, authz refusals, upstream failures) is a [`ProxyError`],
//! turned into a response in one place ([`ProxyError::into_response`]).
//!
//! It says what went wrong ([`Kind`]), where ([`Origin`]: the client, an upstream side, or the
//! proxy itself) and whether a retry elsewhere is safe: the fallback phase reads it, the metrics
//! label it, the client gets a precise status and a JSON body that names the cause without naming
//! internals (no upstream addresses). The underlying error (hyper's, the timer's, the body's) is
//! kept as [`std::error::Error::source`] for the log, never shown to the client.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Response, StatusCode, header};

use crate::authz::Reason;
use crate::body::{Body, BodyError};
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
    /// The request has no single meaning the edge can vouch for (400): see [`BadRequest`].
    BadRequest(BadRequest),
    /// Edge authorization: no valid token (401).
    Unauthenticated(Reason),
    /// Edge authorization: a valid token without the grants the route needs, or a closed
    /// route (403).
    Forbidden(Reason),
    /// Edge authorization cannot decide right now (no keys to verify with; 503).
    AuthUnavailable(Reason),
    /// No connection to the upstream could be made (refused, unreachable).
    Connect,
    /// The connection took longer than the upstream's connect timeout.
    ConnectTimeout,
    /// No response head within the route's timeout.
    Timeout,
    /// The upstream broke the exchange (reset, malformed response).
    Protocol,
}

/// What about a request made the edge refuse it before routing or forwarding it (400): each
/// is something an upstream could read otherwise than the route did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadRequest {
    /// No canonical path, or one with an encoded separator the route does not allow.
    Path,
    /// A standard method spelled in another case (`get`).
    Method,
    /// `X-HTTP-Method-Override` or kin on a route that does not allow it.
    MethodOverride,
    /// No Host, several, one that is not an authority, or one that disagrees with the target.
    Host,
}

impl BadRequest {
    pub fn as_str(self) -> &'static str {
        match self {
            BadRequest::Path => "bad_path",
            BadRequest::Method => "bad_method",
            BadRequest::MethodOverride => "method_override",
            BadRequest::Host => "bad_host",
        }
    }
}

/// Where the failure is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The request itself (too large, cut off, not authorized).
    Client,
    /// One side's upstream.
    Upstream(Side),
    /// ficus itself (it cannot verify tokens right now).
    Proxy,
}

/// An attempt on an upstream that failed: the `kind` of `ficus_proxy_upstream_errors_total`
/// and the `reason` of `ficus_proxy_fallbacks_total`. A closed set, so that their metric
/// handles exist from the moment a table is compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Connect,
    ConnectTimeout,
    Timeout,
    Protocol,
    /// The upstream answered with a 5xx (counted as a failure only when ficus falls back
    /// instead of passing it on).
    ServerError,
}

impl Failure {
    /// Every failure, in the order of [`Failure::index`].
    pub const ALL: [Failure; 5] = [
        Failure::Connect,
        Failure::ConnectTimeout,
        Failure::Timeout,
        Failure::Protocol,
        Failure::ServerError,
    ];

    /// The position in [`Failure::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Connect => "connect",
            Failure::ConnectTimeout => "connect_timeout",
            Failure::Timeout => "timeout",
            Failure::Protocol => "protocol",
            Failure::ServerError => "5xx",
        }
    }
}

/// A failure answered by the proxy itself.
#[derive(Debug, Clone)]
pub struct ProxyError {
    pub kind: Kind,
    pub origin: Origin,
    /// Whether sending the request elsewhere cannot have done anything twice: nothing reached
    /// the upstream (connect failures), or the method is idempotent.
    pub retry_safe: bool,
    /// For the client: what happened, without internals.
    message: Cow<'static, str>,
    /// `WWW-Authenticate` of an authorization refusal.
    challenge: Option<Box<str>>,
    /// The error underneath, for the log.
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl ProxyError {
    pub fn new(
        kind: Kind,
        origin: Origin,
        retry_safe: bool,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            kind,
            origin,
            retry_safe,
            message: message.into(),
            challenge: None,
            source: None,
        }
    }

    /// Keeps `source` as the cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Arc::new(source));
        self
    }

    /// Adds the `WWW-Authenticate` challenge of a refusal.
    pub fn with_challenge(mut self, challenge: impl Into<Box<str>>) -> Self {
        self.challenge = Some(challenge.into());
        self
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

    /// 400: the request is refused because of `what`.
    pub fn bad_request(what: BadRequest, message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(Kind::BadRequest(what), Origin::Client, false, message)
    }

    /// 502: the upstream answered 101 to a request that offered no protocol it may switch to.
    pub fn unasked_switch(side: Side) -> Self {
        Self::new(
            Kind::Protocol,
            Origin::Upstream(side),
            false,
            format!(
                "the {} switched protocols without being asked to",
                side.noun()
            ),
        )
    }

    pub fn client_body() -> Self {
        Self::new(
            Kind::ClientBody,
            Origin::Client,
            false,
            "the request body broke off before its end",
        )
    }

    pub fn timeout(side: Side, after: Duration, idempotent: bool) -> Self {
        Self::new(
            Kind::Timeout,
            Origin::Upstream(side),
            idempotent,
            format!(
                "the {} did not answer within {} ms",
                side.noun(),
                after.as_millis()
            ),
        )
    }

    /// Why reading a body the proxy keeps (to replay it) stopped.
    pub fn from_body_error(error: BodyError) -> Self {
        match error {
            BodyError::TooLarge(limit) => Self::body_too_large(limit),
            BodyError::Hyper(_) => Self::client_body(),
        }
        .with_source(error)
    }

    /// Classifies a failure of the HTTP client. A request body over its limit shows in the
    /// chain as [`BodyError::TooLarge`] (the body type says why it stopped).
    pub fn from_client_error(
        error: hyper_util::client::legacy::Error,
        side: Side,
        idempotent: bool,
    ) -> Self {
        let classified = Self::classify(&error, side, idempotent);
        classified.with_source(error)
    }

    fn classify(error: &hyper_util::client::legacy::Error, side: Side, idempotent: bool) -> Self {
        if let Some(limit) = source_chain(error).find_map(|e| match e.downcast_ref::<BodyError>() {
            Some(BodyError::TooLarge(limit)) => Some(*limit),
            _ => None,
        }) {
            return Self::body_too_large(limit);
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
                    format!("connecting to the {} timed out", side.noun()),
                )
            } else {
                Self::new(
                    Kind::Connect,
                    origin,
                    true,
                    format!("the {} refused the connection", side.noun()),
                )
            };
        }
        let client_body = source_chain(error).any(|e| {
            e.downcast_ref::<hyper::Error>()
                .is_some_and(|h| h.is_body_write_aborted() || h.is_user())
        });
        if client_body {
            return Self::client_body();
        }
        Self::new(
            Kind::Protocol,
            origin,
            idempotent,
            format!("the {} broke off the exchange", side.noun()),
        )
    }

    /// The metrics label of the kind, and the `code` of the JSON body (but for refusals,
    /// whose code is the class and whose label is their [`Reason`]).
    pub fn kind_label(&self) -> &'static str {
        match self.kind {
            Kind::BodyTooLarge => "body_too_large",
            Kind::HeadersTooLarge => "headers_too_large",
            Kind::ClientBody => "client_body",
            Kind::BadRequest(what) => what.as_str(),
            Kind::Unauthenticated(_) => "unauthorized",
            Kind::Forbidden(_) => "forbidden",
            Kind::AuthUnavailable(_) => "auth_unavailable",
            Kind::Connect => "connect",
            Kind::ConnectTimeout => "connect_timeout",
            Kind::Timeout => "timeout",
            Kind::Protocol => "protocol",
        }
    }

    /// The upstream failure this is, when an upstream failed (not the client, not the proxy).
    pub fn failure(&self) -> Option<Failure> {
        if !matches!(self.origin, Origin::Upstream(_)) {
            return None;
        }
        match self.kind {
            Kind::Connect => Some(Failure::Connect),
            Kind::ConnectTimeout => Some(Failure::ConnectTimeout),
            Kind::Timeout => Some(Failure::Timeout),
            Kind::Protocol => Some(Failure::Protocol),
            _ => None,
        }
    }

    /// The reason of an authorization refusal.
    pub fn denial_reason(&self) -> Option<Reason> {
        match self.kind {
            Kind::Unauthenticated(r) | Kind::Forbidden(r) | Kind::AuthUnavailable(r) => Some(r),
            _ => None,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self.kind {
            Kind::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Kind::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Kind::ClientBody | Kind::BadRequest(_) => StatusCode::BAD_REQUEST,
            Kind::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Kind::Forbidden(_) => StatusCode::FORBIDDEN,
            Kind::AuthUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Kind::Connect | Kind::Protocol => StatusCode::BAD_GATEWAY,
            Kind::ConnectTimeout | Kind::Timeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The message and its causes, `: `-separated, for the log.
    pub fn chain(&self) -> Chain<'_> {
        Chain(self)
    }

    /// The JSON response for the client: `{"error": {"code", "message", "route"}}`, with the
    /// `WWW-Authenticate` challenge of a refusal.
    pub fn into_response(self, route: &str) -> Response<Body> {
        let mut response = match self.denial_reason() {
            Some(reason) => json_error(
                self.status(),
                self.kind_label(),
                &format!("{} ({})", self.message, reason.as_str()),
                route,
            ),
            None => json_error(self.status(), self.kind_label(), &self.message, route),
        };
        if let Some(challenge) = &self.challenge
            && let Ok(value) = HeaderValue::from_str(challenge)
        {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
        response
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ProxyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// An error and its causes on one line (`%error.chain()` in a log).
pub struct Chain<'a>(&'a ProxyError);

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = std::error::Error::source(self.0);
        while let Some(error) = cause {
            write!(f, ": {error}")?;
            cause = error.source();
        }
        Ok(())
    }
}

fn source_chain<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(error), |e| e.source())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_indexes_follow_the_lists() {
        for (i, failure) in Failure::ALL.into_iter().enumerate() {
            assert_eq!(failure.index(), i);
        }
        for (i, reason) in Reason::ALL.into_iter().enumerate() {
            assert_eq!(reason.index(), i);
        }
    }

    #[test]
    fn the_cause_is_kept_for_the_log_and_not_shown_to_the_client() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        let error = ProxyError::new(
            Kind::Protocol,
            Origin::Upstream(Side::Extracted),
            true,
            "the extracted service broke off the exchange",
        )
        .with_source(io);
        let source = std::error::Error::source(&error).expect("a source");
        assert_eq!(source.to_string(), "reset by peer");
        assert_eq!(
            error.chain().to_string(),
            "the extracted service broke off the exchange: reset by peer"
        );
        let response = error.into_response("people");
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    }

    #[test]
    fn a_refusal_carries_its_status_reason_and_challenge() {
        let error = ProxyError::new(
            Kind::Unauthenticated(Reason::NoToken),
            Origin::Client,
            false,
            "this route needs a bearer token",
        )
        .with_challenge("Bearer realm=\"ficus\"");
        assert_eq!(error.denial_reason(), Some(Reason::NoToken));
        let response = error.into_response("people");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"ficus\""
        );
    }
}
