//! The request path, in phases over one per-request context ([`Ctx`], made once by
//! [`Ctx::new`], on the stack):
//!
//! 0. **read the target** (before the route is chosen, in [`Proxy::handle`]): headers of
//!    ficus's own (`x-ficus-*`) out, the method as spelled, the canonical path, the one Host
//!    ([`crate::target`], [`crate::path`]); the route is chosen on them, and the canonical
//!    path is what is forwarded;
//! 1. **admit**: the target's refusal if it had one, what the route allows of it (encoded
//!    slashes, method overrides; 400), header and body limits (431, 413), edge authorization
//!    (401, 403, 503);
//! 2. **choose the side**: [`Route::side`], monolith or extracted;
//! 3. **plan the body**: the head prepared for upstream (an upgrade only to a protocol the
//!    route tunnels), the body streamed, or kept whole (bounded) when a fallback may replay it;
//! 4. **forward**: to the chosen side within the route's timeout; on a shadow (or recording)
//!    route a copy goes beside it ([`crate::shadow`]), never waited for;
//! 5. **fall back**: the extracted side failed in a way the monolith can answer: replay there;
//! 6. **respond and record**: the upstream's answer passed on (or a tunnel opened, when it
//!    switched to an offered protocol), or the [`ProxyError`] of any phase turned into
//!    ficus's own answer; metrics, response headers, the side logged once.
//!
//! [`Proxy::run`] calls the phases in order; each is one method below, in the same order. A
//! phase that refuses returns a [`ProxyError`]: every answer ficus makes itself goes through
//! [`ProxyError::into_response`] in the last phase, and is counted as the `proxy`'s.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use tracing::Instrument;

use crate::authz::Identity;
use crate::body::Body;
use crate::error::{Failure, Origin, ProxyError};
use crate::metrics::{Answerer, Metrics};
use crate::table::{Route, Side, Table};
use crate::target::Target;
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
static HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");

/// The proxy: the live table and what every request shares.
pub struct Proxy {
    table: ArcSwap<Table>,
    pub metrics: Arc<Metrics>,
    pub tunnels: Tunnels,
}

/// What one request carries through the phases, made once when it arrives.
struct Ctx<'t> {
    table: &'t Table,
    route: &'t Route,
    client: SocketAddr,
    start: Instant,
    request_id: HeaderValue,
    /// The client is a trusted proxy: its forwarding headers are kept.
    trusted: bool,
    idempotent: bool,
    /// The request's `Content-Length`, when it declares one.
    declared_length: Option<u64>,
    /// The caller edge authorization verified (admit).
    identity: Option<Arc<Identity>>,
    /// The side the request is sent to (choose the side).
    side: Side,
    /// What is forwarded as the path and query: the canonical path the route was chosen on
    /// (read the target).
    path_and_query: http::uri::PathAndQuery,
    /// The protocols offered upstream, those the route tunnels (plan the body).
    upgrade_offer: Option<HeaderValue>,
    /// The client's half of an HTTP/1.1 upgrade (plan the body; used when the upstream
    /// agrees to switch to an offered protocol).
    client_upgrade: Option<OnUpgrade>,
    /// Why the request was replayed on the monolith (fall back).
    fell_back: Option<Failure>,
    /// The shadow job waiting for the monolith's answer (forward, beside; respond).
    shadow: Option<crate::shadow::Watch>,
}

impl<'t> Ctx<'t> {
    fn new(
        table: &'t Table,
        route: &'t Route,
        request: &mut Request<Incoming>,
        client: SocketAddr,
        path_and_query: http::uri::PathAndQuery,
    ) -> Self {
        Ctx {
            table,
            route,
            client,
            start: Instant::now(),
            request_id: ensure_request_id(request.headers_mut()),
            trusted: table.is_trusted(client.ip()),
            idempotent: is_idempotent(request.method()),
            declared_length: content_length(request.headers()),
            identity: None,
            side: Side::Monolith,
            path_and_query,
            upgrade_offer: None,
            client_upgrade: None,
            fell_back: None,
            shadow: None,
        }
    }

    /// The side whose upstream gave the response in hand.
    fn responding_side(&self) -> Side {
        if self.fell_back.is_some() {
            Side::Monolith
        } else {
            self.side
        }
    }
}

/// The request as it goes upstream (plan the body).
struct Planned {
    head: Outgoing,
    body: PlannedBody,
}

/// How the body travels.
enum PlannedBody {
    /// Passed through as it comes, counted against the route's limit.
    Streamed(Body),
    /// Read whole (within the route's limit), because it may be sent again.
    Kept(Bytes),
}

/// What a fallback sends to the monolith: the same head and body again.
struct Replay {
    head: Outgoing,
    body: Bytes,
}

type Outcome = Result<Response<Incoming>, ProxyError>;

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

    /// Serves one request: its target read, its route on the table in force, its context,
    /// the phases, the answer.
    pub async fn handle(
        &self,
        mut request: Request<Incoming>,
        client: SocketAddr,
    ) -> Response<Body> {
        let table = self.table.load_full();
        let target = read_target(&table, &mut request);
        // A target refused before routing is answered under the default route.
        let (route, path_and_query) = match &target {
            Ok(target) => (
                table.route(request.method(), &target.path.path, request.headers()),
                target.path_and_query.clone(),
            ),
            Err(_) => (
                &table.default_route,
                http::uri::PathAndQuery::from_static("/"),
            ),
        };
        // Target `ficus_proxy::request` (ficus-telemetry's REQUEST_SPAN_TARGET): the default log
        // filter turns it off, so the default level costs nothing per request.
        let span = tracing::info_span!(
            target: "ficus_proxy::request",
            "request",
            route = %route.name,
            method = %request.method(),
            path = %path_and_query.path(),
            side = tracing::field::Empty,
            status = tracing::field::Empty,
        );
        let mut ctx = Ctx::new(&table, route, &mut request, client, path_and_query);
        self.run(&mut ctx, target, request).instrument(span).await
    }

    /// The phases, in order. An `Err` from any phase before the last is an answer ficus makes
    /// itself, which the last phase gives.
    async fn run(
        &self,
        ctx: &mut Ctx<'_>,
        target: Result<Target, ProxyError>,
        mut request: Request<Incoming>,
    ) -> Response<Body> {
        let outcome: Outcome = async {
            self.admit(ctx, target?, &mut request).await?;
            self.choose_side(ctx, &request);
            let planned = self.plan_body(ctx, request).await?;
            let planned = self.shadow(ctx, planned);
            let (outcome, replay) = self.forward(ctx, planned).await;
            self.fall_back(ctx, outcome, replay).await
        }
        .await;
        self.respond(ctx, outcome)
    }

    /// Phase 1, admit: the route allows what the target holds, the request fits the limits
    /// and edge authorization lets it through. Identity headers a client could forge are
    /// removed first; everything after this sees only what ficus verified.
    async fn admit(
        &self,
        ctx: &mut Ctx<'_>,
        target: Target,
        request: &mut Request<Incoming>,
    ) -> Result<(), ProxyError> {
        crate::target::check_separators(&target.path, ctx.route.allow_encoded_slashes)?;
        crate::target::check_method_override(request.headers(), ctx.route.allow_method_override)?;
        let header_bytes: usize = request
            .uri()
            .path_and_query()
            .map_or(0, |pq| pq.as_str().len())
            + request
                .headers()
                .iter()
                .map(|(k, v)| k.as_str().len() + v.len() + 4)
                .sum::<usize>();
        if header_bytes > ctx.table.max_header_bytes {
            return Err(ProxyError::headers_too_large(ctx.table.max_header_bytes));
        }
        if ctx
            .declared_length
            .is_some_and(|len| len > ctx.route.max_body_bytes)
        {
            return Err(ProxyError::body_too_large(ctx.route.max_body_bytes));
        }
        let Some(authz) = &ctx.table.authz else {
            return Ok(());
        };
        authz.strip_spoofable(request.headers_mut(), ctx.trusted);
        match authz.decide(&ctx.route.policy, request.headers()).await {
            Ok(allowed) => {
                ctx.route.metrics.decision(allowed.reason);
                tracing::debug!(
                    target: "ficus_proxy::decision",
                    route = %ctx.route.name,
                    subject = allowed.identity.as_ref().map_or("-", |w| w.subject.as_str()),
                    decision = "allow",
                    reason = allowed.reason.as_str(),
                );
                ctx.identity = allowed.identity;
                Ok(())
            }
            Err(refusal) => {
                if let Some(reason) = refusal.denial_reason() {
                    ctx.route.metrics.decision(reason);
                    tracing::info!(
                        target: "ficus_proxy::decision",
                        route = %ctx.route.name,
                        subject = "-",
                        decision = "deny",
                        reason = reason.as_str(),
                    );
                }
                Err(refusal)
            }
        }
    }

    /// Phase 2, choose the side: the route's mode, and for a canary the sticky bucket.
    /// (The side is recorded on the request's span once, by the last phase: who answered.)
    fn choose_side(&self, ctx: &mut Ctx<'_>, request: &Request<Incoming>) {
        ctx.side = ctx.route.side(request.headers(), ctx.client.ip());
    }

    /// Phase 3, plan the body: the head as the upstream gets it (hop-by-hop out, an upgrade
    /// only to protocols the route tunnels, `X-Forwarded-*` and the verified identity in, the
    /// canonical path), and the body streamed, or kept whole when it may have to be sent
    /// again.
    async fn plan_body(
        &self,
        ctx: &mut Ctx<'_>,
        mut request: Request<Incoming>,
    ) -> Result<Planned, ProxyError> {
        ctx.upgrade_offer =
            crate::target::upgrade_offer(request.version(), request.headers(), &ctx.route.upgrades);
        let is_upgrade = ctx.upgrade_offer.is_some();
        if is_upgrade {
            ctx.client_upgrade = Some(hyper::upgrade::on(&mut request));
        }
        let (mut parts, body) = request.into_parts();
        prepare_headers(
            &mut parts.headers,
            &client_ip(ctx.client),
            ctx.upgrade_offer.as_ref(),
            ctx.trusted,
        );
        if let (Some(authz), Some(identity)) = (&ctx.table.authz, &ctx.identity) {
            authz.forward(&mut parts.headers, identity, &ctx.route.name);
        }
        let mut head = Outgoing::new(parts, ctx.path_and_query.clone());
        let limit = ctx.route.max_body_bytes;
        // A fallback replays the request on the monolith, so its body must be in hand: only
        // for idempotent requests whose body is small and known. (Shadowing, when it comes,
        // asks for a kept copy here too.)
        let may_fall_back =
            ctx.side == Side::Extracted && ctx.route.fallback && ctx.idempotent && !is_upgrade;
        let keep = may_fall_back
            && (http_body::Body::is_end_stream(&body)
                || ctx
                    .declared_length
                    .is_some_and(|len| len <= ctx.table.fallback_buffer_bytes));
        let body = if keep {
            let bytes = Body::limited(body, limit)
                .collect()
                .await
                .map_err(ProxyError::from_body_error)?
                .to_bytes();
            PlannedBody::Kept(bytes)
        } else {
            // A body of unknown length goes chunked, whatever the method: without the header
            // the HTTP client would send a GET's (or HEAD's) body as none at all.
            if !http_body::Body::is_end_stream(&body)
                && ctx.declared_length.is_none()
                && !head.headers.contains_key(header::CONTENT_LENGTH)
            {
                head.headers.insert(
                    header::TRANSFER_ENCODING,
                    HeaderValue::from_static("chunked"),
                );
            }
            PlannedBody::Streamed(Body::limited(body, limit))
        };
        Ok(Planned { head, body })
    }

    /// Phase 4, beside the forward: on a shadow or recording route, the request's copy and
    /// record start here as a job of their own ([`crate::shadow`]); a streamed body gets a
    /// bounded tee. Nothing here waits.
    fn shadow(&self, ctx: &mut Ctx<'_>, mut planned: Planned) -> Planned {
        let Some(parity) = &ctx.route.parity else {
            return planned;
        };
        let head = crate::shadow::Head {
            served: ctx.side,
            method: planned.head.method.clone(),
            path_and_query: planned.head.path_and_query.clone(),
            headers: planned.head.headers.clone(),
            written: None,
        };
        let kept = match &planned.body {
            PlannedBody::Kept(bytes) => Some(bytes),
            PlannedBody::Streamed(_) => None,
        };
        let begun = parity.begin(
            ctx.route,
            head,
            ctx.client.ip(),
            ctx.upgrade_offer.is_some(),
            kept,
            ctx.table.authz.as_ref(),
        );
        if let Some((tee, watch)) = begun {
            if let (Some(tee), PlannedBody::Streamed(body)) = (tee, &mut planned.body) {
                *body = std::mem::replace(body, Body::empty()).with_tee(tee);
            }
            ctx.shadow = Some(watch);
        }
        planned
    }

    /// Phase 4, forward: to the chosen side. A kept body stays in hand for a replay.
    async fn forward(&self, ctx: &Ctx<'_>, planned: Planned) -> (Outcome, Option<Replay>) {
        let upstream = ctx.route.upstream(ctx.side);
        let (request, replay) = match planned.body {
            PlannedBody::Streamed(body) => (planned.head.into_request(upstream, body), None),
            PlannedBody::Kept(bytes) => (
                planned
                    .head
                    .clone()
                    .into_request(upstream, Body::full(bytes.clone())),
                Some(Replay {
                    head: planned.head,
                    body: bytes,
                }),
            ),
        };
        (self.send(ctx, ctx.side, request).await, replay)
    }

    /// Phase 5, fall back: when the extracted side failed (connect, timeout, broken exchange,
    /// 5xx) and the request was kept, it is replayed on the monolith. The failed attempt is
    /// counted on the extracted side; the fallback by its reason.
    async fn fall_back(
        &self,
        ctx: &mut Ctx<'_>,
        outcome: Outcome,
        replay: Option<Replay>,
    ) -> Outcome {
        let Some(replay) = replay else {
            return outcome;
        };
        let failure = match &outcome {
            Err(error) if error.retry_safe => error.failure(),
            Ok(response) if response.status().is_server_error() => Some(Failure::ServerError),
            _ => None,
        };
        let Some(failure) = failure else {
            return outcome;
        };
        match &outcome {
            Ok(response) => {
                ctx.route
                    .metrics
                    .upstream_error(ctx.side, Failure::ServerError);
                tracing::warn!(
                    status = %response.status(),
                    side = ctx.side.as_str(),
                    "upstream failed; falling back to the monolith"
                );
            }
            Err(error) => tracing::warn!(
                error = %error.chain(),
                kind = error.kind_label(),
                side = ctx.side.as_str(),
                "upstream failed; falling back to the monolith"
            ),
        }
        // The failed answer goes (and its connection with it) before the replay.
        drop(outcome);
        ctx.route.metrics.fallback(failure);
        ctx.fell_back = Some(failure);
        let upstream = ctx.route.upstream(Side::Monolith);
        let retry = replay.head.into_request(upstream, Body::full(replay.body));
        self.send(ctx, Side::Monolith, retry).await
    }

    /// One attempt on `side` within the route's timeout; a failed one is counted on `side`.
    async fn send(&self, ctx: &Ctx<'_>, side: Side, request: Request<Body>) -> Outcome {
        let route = ctx.route;
        let upstream = route.upstream(side);
        let result = tokio::time::timeout(route.timeout, upstream.client.request(request)).await;
        let outcome = match result {
            Err(elapsed) => {
                Err(ProxyError::timeout(side, route.timeout, ctx.idempotent).with_source(elapsed))
            }
            Ok(Err(error)) => Err(ProxyError::from_client_error(error, side, ctx.idempotent)),
            Ok(Ok(response)) => Ok(response),
        };
        if let Err(error) = &outcome
            && let Some(failure) = error.failure()
        {
            route.metrics.upstream_error(side, failure);
        }
        outcome
    }

    /// Phase 6, respond and record: the upstream's response passed on (a 101 opens a tunnel),
    /// or the error of any phase answered by ficus; then counted by whoever made the answer,
    /// and the response headers of the proxy added.
    fn respond(&self, ctx: &mut Ctx<'_>, outcome: Outcome) -> Response<Body> {
        let outcome = outcome.and_then(|response| self.check_switch(ctx, response));
        let (answerer, mut response) = match outcome {
            Ok(response) => {
                let side = ctx.responding_side();
                (Answerer::from(side), self.pass_on(ctx, response))
            }
            Err(error) => {
                match error.origin {
                    // Refusals were logged by admit, with their decision.
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
                (Answerer::Proxy, error.into_response(&ctx.route.name))
            }
        };
        let status = response.status();
        let span = tracing::Span::current();
        span.record("side", answerer.as_str());
        span.record("status", status.as_u16());
        ctx.route
            .metrics
            .answered(answerer, status.as_u16(), ctx.start.elapsed().as_secs_f64());
        let headers = response.headers_mut();
        headers.insert(X_REQUEST_ID.clone(), ctx.request_id.clone());
        if ctx.table.expose_headers {
            if let Ok(name) = HeaderValue::from_str(&ctx.route.name) {
                headers.insert(X_FICUS_ROUTE.clone(), name);
            }
            headers.insert(
                X_FICUS_SIDE.clone(),
                HeaderValue::from_static(answerer.as_str()),
            );
            headers.insert(X_FICUS_TABLE.clone(), HeaderValue::from(ctx.table.version));
        }
        response
    }

    /// A 101 passes only as the answer to an upgrade the route allowed, to a protocol that
    /// was offered; any other is the upstream's fault (502), and no tunnel opens.
    fn check_switch(
        &self,
        ctx: &Ctx<'_>,
        response: Response<Incoming>,
    ) -> Result<Response<Incoming>, ProxyError> {
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Ok(response);
        }
        let offered = ctx.upgrade_offer.as_ref().filter(|offered| {
            ctx.client_upgrade.is_some()
                && crate::target::switched_to_offered(response.headers(), offered)
        });
        match offered {
            Some(_) => Ok(response),
            None => Err(ProxyError::unasked_switch(ctx.responding_side())),
        }
    }

    /// The upstream's response for the client: streamed, hop-by-hop headers out; a 101 (to an
    /// offered protocol: [`Proxy::check_switch`]) opens a tunnel between the two connections.
    fn pass_on(&self, ctx: &mut Ctx<'_>, mut response: Response<Incoming>) -> Response<Body> {
        if response.status() == StatusCode::SWITCHING_PROTOCOLS
            && let Some(client_upgrade) = ctx.client_upgrade.take()
        {
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            self.tunnels.open(
                client_upgrade,
                upstream_upgrade,
                self.metrics.clone(),
                ctx.route.name.clone(),
            );
            let (mut parts, _) = response.into_parts();
            let chosen = parts.headers.get(header::UPGRADE).cloned();
            strip_hop_by_hop(&mut parts.headers, chosen.as_ref());
            return Response::from_parts(parts, Body::empty());
        }
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers, None);
        let mut body = Body::stream(body);
        // The shadow job compares this answer: its body is teed as it streams to the client.
        if let Some(watch) = ctx.shadow.take() {
            body = watch.response(ctx.responding_side(), parts.status, &parts.headers, body);
        }
        Response::from_parts(parts, body)
    }
}

/// Step 0, read the target (before a route is chosen): headers in ficus's own `x-ficus-`
/// namespace out (whoever sent them), then the method as spelled, the canonical path and the
/// one Host (written back into the headers, so that routes match it and it is forwarded).
fn read_target(table: &Table, request: &mut Request<Incoming>) -> Result<Target, ProxyError> {
    crate::authz::headers::strip_own(request.headers_mut());
    crate::target::check_method(request.method(), table.is_misspelled(request.method()))?;
    let target = crate::target::read(request.uri())?;
    let (uri, version) = (request.uri().clone(), request.version());
    crate::target::reconcile_host(&uri, version, request.headers_mut())?;
    Ok(target)
}

/// The request's `x-request-id`, made (random, 128 bits) when the client sent none.
pub(crate) fn ensure_request_id(headers: &mut HeaderMap) -> HeaderValue {
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

pub(crate) fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

pub(crate) fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// Removes hop-by-hop headers (RFC 9110 §7.6.1), including those `Connection` names. An upgrade
/// gets `Connection: upgrade` and `Upgrade: <upgrade>` (the protocols the route tunnels), which
/// the next hop needs; anything else loses both.
fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: Option<&HeaderValue>) {
    // Per request: one pass over the names, the hashed removes only when one is there.
    if headers.keys().any(is_hop_by_hop) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
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
            &HTTP2_SETTINGS,
        ] {
            headers.remove(name);
        }
        headers.remove(header::CONNECTION);
        headers.remove(header::UPGRADE);
    }
    if let Some(upgrade) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, upgrade.clone());
    }
}

/// Whether `name` is one [`strip_hop_by_hop`] always removes (RFC 9110 §7.6.1 and the
/// non-standard ones clients still send): compared in place, no hashing.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    *name == header::CONNECTION
        || *name == header::UPGRADE
        || *name == header::TE
        || *name == header::TRAILER
        || *name == header::TRANSFER_ENCODING
        || *name == header::PROXY_AUTHENTICATE
        || *name == header::PROXY_AUTHORIZATION
        || *name == KEEP_ALIVE
        || *name == PROXY_CONNECTION
        || *name == HTTP2_SETTINGS
}

/// The client's address as `X-Forwarded-For` carries it (made once per connection by the lean
/// path, per request by the hyper path).
pub(crate) fn client_ip(client: SocketAddr) -> HeaderValue {
    HeaderValue::try_from(client.ip().to_string()).expect("an IP address is a valid header value")
}

/// Hop-by-hop headers out, `X-Forwarded-*` in. Forwarding headers a client sent are kept only
/// from trusted proxies; from anyone else they are replaced. `client_ip` is [`client_ip`]'s.
pub(crate) fn prepare_headers(
    headers: &mut HeaderMap,
    client_ip: &HeaderValue,
    upgrade: Option<&HeaderValue>,
    trusted: bool,
) {
    strip_hop_by_hop(headers, upgrade);
    if !trusted {
        crate::authz::headers::strip(headers, &[], false);
    }
    // One lookup: the client's address appended to a trusted chain, or the only one.
    match headers.entry(X_FORWARDED_FOR.clone()) {
        header::Entry::Occupied(mut chain) => {
            let appended = match chain.get().to_str() {
                Ok(prior) => HeaderValue::try_from(format!(
                    "{prior}, {}",
                    client_ip.to_str().unwrap_or_default()
                ))
                .ok(),
                Err(_) => Some(client_ip.clone()),
            };
            if let Some(value) = appended {
                chain.insert(value);
            }
        }
        header::Entry::Vacant(none) => {
            none.insert(client_ip.clone());
        }
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

impl Outgoing {
    /// The head going upstream: `path_and_query` is the canonical target (the route's), never
    /// the client's raw one; `Host` was reconciled with the target when it was read (an
    /// HTTP/2 client's `:authority` became the `Host` the monolith sees).
    fn new(parts: http::request::Parts, path_and_query: http::uri::PathAndQuery) -> Self {
        Outgoing {
            method: parts.method,
            path_and_query,
            headers: parts.headers,
            // They carry hyper's record of the client's header case to the upstream connection.
            extensions: parts.extensions,
        }
    }

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
