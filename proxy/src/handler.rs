//! The request path: match a route, pick a side, forward, fall back, answer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tracing::Instrument;

use crate::authz::Decision;
use crate::body::Body;
use crate::error::{ProxyError, json_error};
use crate::metrics::Metrics;
use crate::table::{Route, Side, Table};
use crate::tunnel::Tunnels;

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FICUS_ROUTE: HeaderName = HeaderName::from_static("x-ficus-route");
static X_FICUS_SIDE: HeaderName = HeaderName::from_static("x-ficus-side");
static X_FICUS_TABLE: HeaderName = HeaderName::from_static("x-ficus-table");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// The proxy: the live table and what every request shares.
pub struct Proxy {
    table: ArcSwap<Table>,
    pub metrics: Arc<Metrics>,
    pub tunnels: Tunnels,
}

impl Proxy {
    pub fn new(table: Table, metrics: Arc<Metrics>) -> Self {
        metrics.table_version.set(table.version as i64);
        Self {
            table: ArcSwap::from_pointee(table),
            metrics,
            tunnels: Tunnels::default(),
        }
    }

    /// The table in force.
    pub fn table(&self) -> Arc<Table> {
        self.table.load_full()
    }

    /// Replaces the table whole; requests in flight finish on the table they started with.
    pub fn swap(&self, table: Table) {
        self.metrics.table_version.set(table.version as i64);
        self.table.store(Arc::new(table));
    }

    /// Serves one request.
    pub async fn handle(&self, request: Request<Incoming>, client: SocketAddr) -> Response<Body> {
        let table = self.table.load_full();
        let route = table.route(request.method(), request.uri().path(), request.headers());
        let span = tracing::info_span!(
            "request",
            route = %route.name,
            method = %request.method(),
            path = %request.uri().path(),
            side = tracing::field::Empty,
            status = tracing::field::Empty,
        );
        self.serve(&table, route, request, client)
            .instrument(span)
            .await
    }

    async fn serve(
        &self,
        table: &Table,
        route: &Route,
        mut request: Request<Incoming>,
        client: SocketAddr,
    ) -> Response<Body> {
        let start = Instant::now();
        let request_id = ensure_request_id(request.headers_mut());

        let header_bytes: usize = request
            .uri()
            .path_and_query()
            .map_or(0, |pq| pq.as_str().len())
            + request
                .headers()
                .iter()
                .map(|(k, v)| k.as_str().len() + v.len() + 4)
                .sum::<usize>();
        if header_bytes > table.max_header_bytes {
            let error = ProxyError::headers_too_large(table.max_header_bytes);
            return self.finish(
                table,
                route,
                Side::Legacy,
                error.into_response(&route.name),
                &request_id,
                start,
            );
        }
        let declared_length = content_length(request.headers());
        if declared_length.is_some_and(|len| len > route.max_body_bytes) {
            let error = ProxyError::body_too_large(route.max_body_bytes);
            return self.finish(
                table,
                route,
                Side::Legacy,
                error.into_response(&route.name),
                &request_id,
                start,
            );
        }

        // Edge authorization: forged identity headers out, then the token and the route's
        // policy decide. Everything after this sees only what ficus verified.
        let trusted = table.is_trusted(client.ip());
        let mut identity = None;
        if let Some(authz) = &table.authz {
            authz.strip_spoofable(request.headers_mut(), trusted);
            match authz.decide(&route.policy, request.headers()).await {
                Decision::Allow(who, reason) => {
                    route.metrics.decision("allow", reason);
                    tracing::debug!(
                        target: "ficus_proxy::decision",
                        route = %route.name,
                        subject = who.as_ref().map(|w| w.subject.as_str()).unwrap_or("-"),
                        decision = "allow",
                        reason,
                    );
                    identity = who;
                }
                Decision::Deny(denial) => {
                    route.metrics.decision("deny", denial.reason);
                    tracing::info!(
                        target: "ficus_proxy::decision",
                        route = %route.name,
                        subject = "-",
                        decision = "deny",
                        reason = denial.reason,
                    );
                    let response = denial_response(&denial, &route.name);
                    return self.finish(table, route, Side::Legacy, response, &request_id, start);
                }
            }
        }

        let side = route.side(request.headers(), client.ip());
        tracing::Span::current().record("side", side.as_str());
        let is_upgrade = is_upgrade(&request);
        let idempotent = is_idempotent(request.method());
        let client_upgrade = is_upgrade.then(|| hyper::upgrade::on(&mut request));
        let (mut parts, body) = request.into_parts();
        prepare_headers(&mut parts.headers, client, is_upgrade, trusted);
        if let (Some(authz), Some(identity)) = (&table.authz, &identity) {
            authz.forward(&mut parts.headers, identity, &route.name);
        }
        let outgoing = Outgoing::from(parts);

        // A fallback replays the request on the legacy side, so its body must be in hand:
        // only for idempotent requests whose body is small and known.
        let may_fall_back = side == Side::Extracted && route.fallback && idempotent && !is_upgrade;
        let replayable = may_fall_back
            && (http_body::Body::is_end_stream(&body)
                || declared_length.is_some_and(|len| len <= table.fallback_buffer_bytes));
        let exceeded = Arc::new(AtomicBool::new(false));
        let (body, kept) = if replayable {
            match collect(body, route.max_body_bytes).await {
                Ok(bytes) => (Body::full(bytes.clone()), Some(bytes)),
                Err(error) => {
                    return self.finish(
                        table,
                        route,
                        side,
                        error.into_response(&route.name),
                        &request_id,
                        start,
                    );
                }
            }
        } else {
            (
                Body::limited(body, route.max_body_bytes, exceeded.clone()),
                None,
            )
        };

        // The request is kept (cloned) only when a fallback may have to replay it.
        let (upstream_request, replay) = match kept {
            Some(kept) => (
                outgoing.clone().into_request(route.upstream(side), body),
                Some((outgoing, kept)),
            ),
            None => (outgoing.into_request(route.upstream(side), body), None),
        };
        let mut outcome = self
            .send(route, side, upstream_request, idempotent, &exceeded)
            .await;

        // Fallback: the extracted side failed in a way the legacy side can answer.
        let mut answered_by = side;
        if let Some((outgoing, kept)) = replay {
            let reason = match &outcome {
                Err(e) if e.retry_safe => Some(e.kind_label()),
                Ok(response) if response.status().is_server_error() => Some("5xx"),
                _ => None,
            };
            if let Some(reason) = reason {
                if let Ok(response) = &outcome {
                    route.metrics.upstream_error(side, "5xx");
                    tracing::warn!(status = %response.status(), "extracted side failed; falling back");
                } else {
                    tracing::warn!(reason, "extracted side failed; falling back");
                }
                route.metrics.fallback(reason);
                answered_by = Side::Legacy;
                let retry = outgoing.into_request(route.upstream(Side::Legacy), Body::full(kept));
                outcome = self
                    .send(route, Side::Legacy, retry, idempotent, &exceeded)
                    .await;
            }
        }
        tracing::Span::current().record("side", answered_by.as_str());

        let response = match outcome {
            Err(error) => {
                if let crate::error::Origin::Upstream(side) = error.origin {
                    tracing::warn!(
                        kind = error.kind_label(),
                        side = side.as_str(),
                        "upstream failed"
                    );
                }
                error.into_response(&route.name)
            }
            Ok(mut response) => {
                if let Some(client_upgrade) = client_upgrade
                    && response.status() == StatusCode::SWITCHING_PROTOCOLS
                {
                    let upstream_upgrade = hyper::upgrade::on(&mut response);
                    self.tunnels.open(
                        client_upgrade,
                        upstream_upgrade,
                        self.metrics.clone(),
                        route.name.clone(),
                    );
                    let (mut parts, _) = response.into_parts();
                    strip_hop_by_hop(&mut parts.headers, true);
                    Response::from_parts(parts, Body::empty())
                } else {
                    let (mut parts, body) = response.into_parts();
                    strip_hop_by_hop(&mut parts.headers, false);
                    Response::from_parts(parts, Body::stream(body))
                }
            }
        };
        self.finish(table, route, answered_by, response, &request_id, start)
    }

    async fn send(
        &self,
        route: &Route,
        side: Side,
        request: Request<Body>,
        idempotent: bool,
        exceeded: &AtomicBool,
    ) -> Result<Response<Incoming>, ProxyError> {
        let upstream = route.upstream(side);
        let result = tokio::time::timeout(route.timeout, upstream.client.request(request)).await;
        let outcome = match result {
            Err(_) => Err(ProxyError::timeout(side, route.timeout, idempotent)),
            Ok(Err(error)) => Err(ProxyError::from_client_error(
                &error,
                side,
                idempotent,
                exceeded.load(Ordering::Relaxed),
                route.max_body_bytes,
            )),
            Ok(Ok(response)) => Ok(response),
        };
        if let Err(error) = &outcome
            && matches!(error.origin, crate::error::Origin::Upstream(_))
        {
            route.metrics.upstream_error(side, error.kind_label());
        }
        outcome
    }

    fn finish(
        &self,
        table: &Table,
        route: &Route,
        side: Side,
        mut response: Response<Body>,
        request_id: &HeaderValue,
        start: Instant,
    ) -> Response<Body> {
        let status = response.status();
        tracing::Span::current().record("status", status.as_u16());
        route
            .metrics
            .answered(side, status.as_u16(), start.elapsed().as_secs_f64());
        let headers = response.headers_mut();
        headers.insert(X_REQUEST_ID.clone(), request_id.clone());
        if table.expose_headers {
            if let Ok(name) = HeaderValue::from_str(&route.name) {
                headers.insert(X_FICUS_ROUTE.clone(), name);
            }
            headers.insert(
                X_FICUS_SIDE.clone(),
                HeaderValue::from_static(side.as_str()),
            );
            headers.insert(X_FICUS_TABLE.clone(), HeaderValue::from(table.version));
        }
        response
    }
}

/// The request's `x-request-id`, made (random, 128 bits) when the client sent none.
fn ensure_request_id(headers: &mut HeaderMap) -> HeaderValue {
    if let Some(id) = headers
        .get(&X_REQUEST_ID)
        .filter(|v| !v.is_empty() && v.len() <= 200)
    {
        return id.clone();
    }
    let id = HeaderValue::from_str(&format!("{:032x}", rand::random::<u128>()))
        .expect("hex is a valid header value");
    headers.insert(X_REQUEST_ID.clone(), id.clone());
    id
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

fn is_upgrade<B>(request: &Request<B>) -> bool {
    request.version() == Version::HTTP_11
        && request.headers().contains_key(header::UPGRADE)
        && request
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
}

/// Removes hop-by-hop headers (RFC 9110 §7.6.1), including those `Connection` names. An upgrade
/// keeps `Connection: upgrade` and `Upgrade`, which the next hop needs.
fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .filter(|name| !(keep_upgrade && name == header::UPGRADE))
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::TE,
        &header::TRAILER,
        &header::TRANSFER_ENCODING,
        &header::PROXY_AUTHENTICATE,
        &header::PROXY_AUTHORIZATION,
    ] {
        headers.remove(name);
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::CONNECTION);
        headers.remove(header::UPGRADE);
    }
}

/// Hop-by-hop headers out, `X-Forwarded-*` in. Forwarding headers a client sent are kept only
/// from trusted proxies; from anyone else they are replaced.
fn prepare_headers(headers: &mut HeaderMap, client: SocketAddr, is_upgrade: bool, trusted: bool) {
    strip_hop_by_hop(headers, is_upgrade);
    if !trusted {
        crate::authz::headers::strip(headers, &[], false);
    }
    let ip = client.ip().to_string();
    let forwarded_for = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prior) => format!("{prior}, {ip}"),
        None => ip,
    };
    if let Ok(value) = HeaderValue::from_str(&forwarded_for) {
        headers.insert(X_FORWARDED_FOR.clone(), value);
    }
    headers
        .entry(X_FORWARDED_PROTO.clone())
        .or_insert(HeaderValue::from_static("http"));
    // HTTP/2 clients send :authority instead of Host; the monolith expects a Host.
    if let Some(host) = headers.get(header::HOST).cloned() {
        headers.entry(X_FORWARDED_HOST.clone()).or_insert(host);
    }
}

/// What is sent upstream, minus the body and the upstream's address.
#[derive(Clone)]
struct Outgoing {
    method: Method,
    path_and_query: http::uri::PathAndQuery,
    headers: HeaderMap,
    extensions: http::Extensions,
}

impl From<http::request::Parts> for Outgoing {
    fn from(parts: http::request::Parts) -> Self {
        let mut headers = parts.headers;
        if !headers.contains_key(header::HOST)
            && let Some(authority) = parts.uri.authority()
            && let Ok(host) = HeaderValue::from_str(authority.as_str())
        {
            // An HTTP/2 client's :authority becomes the Host the monolith sees.
            headers
                .entry(X_FORWARDED_HOST.clone())
                .or_insert(host.clone());
            headers.insert(header::HOST, host);
        }
        Outgoing {
            method: parts.method,
            path_and_query: parts
                .uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
            headers,
            // They carry hyper's record of the client's header case to the upstream connection.
            extensions: parts.extensions,
        }
    }
}

impl Outgoing {
    fn into_request(self, upstream: &crate::upstream::Upstream, body: Body) -> Request<Body> {
        let uri = Uri::builder()
            .scheme(upstream.scheme.clone())
            .authority(upstream.authority.clone())
            .path_and_query(self.path_and_query)
            .build()
            .expect("parts of valid URIs");
        let mut request = Request::new(body);
        *request.method_mut() = self.method;
        *request.uri_mut() = uri;
        *request.version_mut() = Version::HTTP_11;
        *request.headers_mut() = self.headers;
        *request.extensions_mut() = self.extensions;
        request
    }
}

/// Reads a whole (small, bounded) body into memory.
async fn collect(body: Incoming, limit: u64) -> Result<Bytes, ProxyError> {
    let exceeded = Arc::new(AtomicBool::new(false));
    match Body::limited(body, limit, exceeded.clone()).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(_) if exceeded.load(Ordering::Relaxed) => Err(ProxyError::body_too_large(limit)),
        Err(_) => Err(ProxyError::new(
            crate::error::Kind::ClientBody,
            crate::error::Origin::Client,
            false,
            "the request body broke off before its end",
        )),
    }
}

/// The JSON refusal of an authorization denial, with its `WWW-Authenticate` challenge.
fn denial_response(denial: &crate::authz::Denial, route: &str) -> Response<Body> {
    let code = match denial.status {
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        _ => "auth_unavailable",
    };
    let mut response = json_error(
        denial.status,
        code,
        &format!("{} ({})", denial.message, denial.reason),
        route,
    );
    if let Some(challenge) = &denial.challenge
        && let Ok(value) = HeaderValue::from_str(challenge)
    {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

/// Answers the requests the proxy itself refuses before routing (used by the server for
/// protocol-level refusals).
pub fn refuse(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    json_error(status, code, message, "")
}
