//! Shadow mode and recording, beside the request path (phase 4, forward, of [`crate::handler`]).
//!
//! ```text
//! handler: plan the body ─► RouteParity::begin ─► forward to the monolith ─► respond (Watch::response)
//!              │ which requests (methods, sticky sample, concurrency)   │ the client's body streams;
//!              │ request body teed (bounded)                           │ a tee keeps a bounded copy
//!              └──► job, a task once the served answer is whole: request body in hand ─►
//!                   candidate (extracted side, x-ficus-shadow: 1, own timeout) ∥ monolith again
//!                   (calibration sample) ─► ficus-parity compare (route's rules, learned noise)
//!                   ─► counters, last mismatches, JSON-lines log; recording: the request ─► corpus
//! ```
//!
//! In a canary that keeps comparing (`shadow.in_canary`) the sides turn for the canary's
//! users: the extracted side answers them, the copy goes to the monolith, and the monolith's
//! answer is still the reference.
//!
//! The client's answer never waits for anything here: the job holds a permit of the route's
//! `max_concurrent` (none free: skipped and counted) from the start, and becomes a task of its
//! own when the client has its answer (the served answer's tee starts it), so the copy never
//! runs beside the answer it is compared with. Whatever the extracted side does (slow, refused,
//! reset, garbage) ends in the job. Every request of a shadow route that is not compared is
//! counted with its reason ([`SkipReason`]); nothing is dropped silently.
//!
//! State that outlives a table (counters, learned noise, the last mismatches, open log files) is
//! kept by the [`Hub`] across reloads, by route name and by file.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::body::{Body, Tee, Teed};
use crate::config::{RecordConfig, RouteConfig, ShadowConfig};
use crate::lean::fetch::{FetchError, Lines};
use crate::metrics::{Metrics, ShadowMetrics};
use crate::table::Side;
use crate::upstream::Upstream;

/// The header that marks a copy (to the extracted side, or the monolith's calibration copy).
pub static X_FICUS_SHADOW: HeaderName = HeaderName::from_static("x-ficus-shadow");

/// Why a request of a shadow route was not compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// Outside the route's `shadow.sample`.
    SampledOut,
    /// A method not in `shadow.methods` (writes are not copied unless the route says so).
    UnsafeMethod,
    /// A protocol upgrade (WebSocket): a tunnel is not an answer to compare.
    Upgrade,
    /// `shadow.max_concurrent` copies were in flight.
    Concurrency,
    /// The request body passed `shadow.max_body_bytes`.
    RequestTooLarge,
    /// An answer's body (either side's) passed `shadow.max_body_bytes`.
    ResponseTooLarge,
    /// The extracted side did not answer whole within the shadow timeout.
    CandidateTimeout,
    /// The extracted side refused, reset or answered something that is not HTTP (serving a
    /// comparing canary's user: gave no answer, fallen back from included).
    CandidateError,
    /// The monolith gave no answer to compare with (ficus answered the client itself, or the
    /// monolith's copy failed).
    MonolithError,
    /// The request or the monolith's body broke off (the client went away).
    Incomplete,
}

impl SkipReason {
    pub const ALL: [SkipReason; 10] = [
        SkipReason::SampledOut,
        SkipReason::UnsafeMethod,
        SkipReason::Upgrade,
        SkipReason::Concurrency,
        SkipReason::RequestTooLarge,
        SkipReason::ResponseTooLarge,
        SkipReason::CandidateTimeout,
        SkipReason::CandidateError,
        SkipReason::MonolithError,
        SkipReason::Incomplete,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::SampledOut => "sampled_out",
            SkipReason::UnsafeMethod => "unsafe_method",
            SkipReason::Upgrade => "upgrade",
            SkipReason::Concurrency => "concurrency",
            SkipReason::RequestTooLarge => "request_too_large",
            SkipReason::ResponseTooLarge => "response_too_large",
            SkipReason::CandidateTimeout => "candidate_timeout",
            SkipReason::CandidateError => "candidate_error",
            SkipReason::MonolithError => "monolith_error",
            SkipReason::Incomplete => "incomplete",
        }
    }
}

/// Why a sampled request was not recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordSkip {
    /// The body passed `record.max_body_bytes`.
    TooLarge,
    /// The body broke off.
    Incomplete,
    /// The corpus file reached `record.max_bytes`.
    Full,
    /// The writer is behind (its queue is full) or writing failed.
    WriteError,
}

impl RecordSkip {
    pub const ALL: [RecordSkip; 4] = [
        RecordSkip::TooLarge,
        RecordSkip::Incomplete,
        RecordSkip::Full,
        RecordSkip::WriteError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RecordSkip::TooLarge => "too_large",
            RecordSkip::Incomplete => "incomplete",
            RecordSkip::Full => "full",
            RecordSkip::WriteError => "write_error",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// State kept across reloads

/// What outlives a table: per route, its counters, learned noise and last mismatches; per file,
/// its writer. Held by the loader; [`crate::table::Table::compile`] takes from it.
#[derive(Default)]
pub struct Hub {
    routes: Mutex<HashMap<String, Arc<RouteState>>>,
    files: Mutex<HashMap<PathBuf, Arc<JsonLines>>>,
}

/// A route's parity state.
pub struct RouteState {
    pub metrics: ShadowMetrics,
    /// What calibration learned of the monolith's own differences.
    noise: Mutex<ficus_parity::Noise>,
    /// The last mismatches, oldest first (redacted records, as the log writes them).
    mismatches: Mutex<VecDeque<serde_json::Value>>,
}

impl Hub {
    fn route(&self, name: &str, metrics: &Metrics) -> Arc<RouteState> {
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        routes
            .entry(name.to_owned())
            .or_insert_with(|| {
                Arc::new(RouteState {
                    metrics: metrics.shadow(name),
                    noise: Mutex::new(ficus_parity::Noise::default()),
                    mismatches: Mutex::new(VecDeque::new()),
                })
            })
            .clone()
    }

    fn file(&self, path: &Path, max_bytes: u64) -> Arc<JsonLines> {
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        let file = files
            .entry(path.to_owned())
            .or_insert_with(|| Arc::new(JsonLines::new(path)))
            .clone();
        file.max_bytes.store(max_bytes, Ordering::Relaxed);
        file
    }

    /// The parity of a route, when it shadows or records; `None` costs the request path one
    /// branch.
    pub fn compile(
        &self,
        config: &RouteConfig,
        metrics: &Metrics,
        route_timeout: Duration,
    ) -> Option<Arc<RouteParity>> {
        let copies = match config.mode {
            crate::config::Mode::Shadow => true,
            crate::config::Mode::Canary => config.shadow.in_canary,
            crate::config::Mode::Monolith | crate::config::Mode::Extracted => false,
        };
        let shadow = copies.then(|| ShadowSettings::new(&config.shadow, route_timeout, self));
        let record = config.record.as_ref().map(|r| Recording::new(r, self));
        if shadow.is_none() && record.is_none() {
            return None;
        }
        let state = self.route(&config.name, metrics);
        Some(Arc::new(RouteParity {
            name: config.name.as_str().into(),
            redaction: ficus_parity::Redaction::of(&config.parity),
            rules: config.parity.clone(),
            shadow,
            record,
            state,
        }))
    }
}

// ---------------------------------------------------------------------------------------------
// Per route, in the table

/// A route's shadow and recording settings, compiled.
pub struct RouteParity {
    pub name: Arc<str>,
    rules: ficus_parity::Rules,
    redaction: ficus_parity::Redaction,
    shadow: Option<ShadowSettings>,
    record: Option<Recording>,
    pub state: Arc<RouteState>,
}

struct ShadowSettings {
    sample_bps: u32,
    methods: Vec<Method>,
    max_body_bytes: u64,
    limiter: Arc<Semaphore>,
    max_concurrent: u64,
    timeout: Duration,
    /// Copies waiting out `delay_ms` (none when it is 0).
    delayed: Option<Arc<Delayed>>,
    mismatches_kept: usize,
    log: Option<Arc<JsonLines>>,
}

impl ShadowSettings {
    fn new(config: &ShadowConfig, route_timeout: Duration, hub: &Hub) -> Self {
        Self {
            sample_bps: config.sample.basis_points,
            methods: config.methods.iter().map(|m| m.0.clone()).collect(),
            max_body_bytes: config.max_body_bytes,
            limiter: Arc::new(Semaphore::new(
                usize::try_from(config.max_concurrent).unwrap_or(usize::MAX >> 4),
            )),
            max_concurrent: config.max_concurrent,
            timeout: config
                .timeout_ms
                .map_or(route_timeout, Duration::from_millis),
            delayed: (config.delay_ms > 0).then(|| {
                Arc::new(Delayed {
                    delay: Duration::from_millis(config.delay_ms),
                    queue: Mutex::default(),
                })
            }),
            mismatches_kept: config.mismatches_kept,
            log: config
                .log_file
                .as_ref()
                .map(|path| hub.file(path, config.log_max_bytes)),
        }
    }
}

struct Recording {
    sample_bps: u32,
    methods: Vec<Method>,
    max_body_bytes: u64,
    file: Arc<JsonLines>,
}

impl Recording {
    fn new(config: &RecordConfig, hub: &Hub) -> Self {
        Self {
            sample_bps: config.sample.basis_points,
            methods: config.methods.iter().map(|m| m.0.clone()).collect(),
            max_body_bytes: config.max_body_bytes,
            file: hub.file(&config.file, config.max_bytes),
        }
    }
}

/// A share in basis points, of users by their sticky bucket (a request without its sticky key
/// is in only at 100%).
fn sampled(bps: u32, bucket: Option<u32>) -> bool {
    bps >= 10_000 || bucket.is_some_and(|b| b < bps)
}

/// The request as it went upstream, for the copies and the records.
#[derive(Clone)]
pub struct Head {
    /// The side it went to, whose answer the client gets: the copy goes to the other.
    pub served: Side,
    pub method: Method,
    pub path_and_query: PathAndQuery,
    pub headers: HeaderMap,
    /// The head as written to the monolith, when the request path has it in hand (the lean
    /// path, a request without a body): the copies are written from it.
    pub written: Option<Bytes>,
}

/// What the request path needs to hand the job the answer the client gets (phase 6), from the
/// side chosen to serve (the monolith in mode shadow; either in a comparing canary). It holds
/// the job, which starts once that answer is whole (the client has it): the copy goes out then,
/// so the copy's answer and comparison never land on the thread beside the client's own.
/// Dropped without that side's answer (ficus answered, or fell back to the monolith), it starts
/// the job with the serving side's failure, which is counted without a copy.
pub struct Watch {
    /// The job, and the bound of the answer's body kept for it.
    job: Option<(Job, u64)>,
    served: Side,
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some((job, _)) = self.job.take() {
            job.start(Some(Got::Skip(no_answer(self.served))));
        }
    }
}

impl Watch {
    /// The answer on its way to the client from `side` (the hyper path): its head handed to
    /// the job, its body teed (bounded) as it streams.
    pub fn response(self, side: Side, status: StatusCode, headers: &HeaderMap, body: Body) -> Body {
        match self.answer(side, status.as_u16(), || Lines::List(header_list(headers))) {
            Some(tee) => body.with_tee(tee),
            None => body,
        }
    }

    /// The answer on its way to the client from `side` (the lean path): its head handed to
    /// the job; the returned tee is given the body's bytes as they pass, and finished at its
    /// end (dropped before, it tells the job the body broke off).
    pub(crate) fn answer(
        mut self,
        side: Side,
        status: u16,
        lines: impl FnOnce() -> Lines,
    ) -> Option<Tee> {
        if side != self.served {
            return None;
        }
        let (job, max) = self.job.take()?;
        let lines = lines();
        Some(Tee::then(max, move |teed| {
            let served = match teed {
                Teed::Whole(body) => Got::Answer(Answered {
                    status,
                    lines,
                    body,
                }),
                Teed::TooLarge => Got::Skip(SkipReason::ResponseTooLarge),
                Teed::Broken => Got::Skip(SkipReason::Incomplete),
            };
            job.start(Some(served));
        }))
    }
}

impl RouteParity {
    /// Phase 4's companion: decides whether this request is copied and/or recorded; if so,
    /// starts its job and returns the tee for a streamed request body (`None` when the body is
    /// in hand, `kept`) and the [`Watch`] for the answer. Skips are counted here.
    pub fn begin(
        self: &Arc<Self>,
        route: &crate::table::Route,
        head: Head,
        client: std::net::IpAddr,
        upgrade: bool,
        kept: Option<&Bytes>,
        authz: Option<&Arc<crate::authz::Authz>>,
    ) -> Option<(Option<Tee>, Watch)> {
        // Hashed only when a share is drawn (at 100 % everyone is in).
        let partial = |bps: u32| bps < 10_000;
        let bucket = (self.shadow.as_ref().is_some_and(|s| partial(s.sample_bps))
            || self.record.as_ref().is_some_and(|r| partial(r.sample_bps)))
        .then(|| route.sticky_bucket(&head.headers, client))
        .flatten();
        let (extracted, monolith) = (route.extracted.as_ref(), &route.monolith);
        let metrics = &self.state.metrics;
        let shadow = self.shadow.as_ref().and_then(|shadow| {
            let skip = if upgrade {
                Some(SkipReason::Upgrade)
            } else if !shadow.methods.contains(&head.method) {
                Some(SkipReason::UnsafeMethod)
            } else if !sampled(shadow.sample_bps, bucket) {
                Some(SkipReason::SampledOut)
            } else {
                None
            };
            if let Some(reason) = skip {
                metrics.skipped(reason);
                return None;
            }
            let Ok(permit) = shadow.limiter.clone().try_acquire_owned() else {
                metrics.skipped(SkipReason::Concurrency);
                return None;
            };
            Some(permit)
        });
        let record = self.record.as_ref().is_some_and(|record| {
            !upgrade && record.methods.contains(&head.method) && sampled(record.sample_bps, bucket)
        });
        if shadow.is_none() && !record {
            return None;
        }
        // One tee for both: it keeps what the larger of the two limits allows.
        let shadow_max = match (&shadow, &self.shadow) {
            (Some(_), Some(settings)) => settings.max_body_bytes,
            _ => 0,
        };
        let record_max = match (record, &self.record) {
            (true, Some(recording)) => recording.max_body_bytes,
            _ => 0,
        };
        let max = shadow_max.max(record_max);
        let (tee, request_body) = match kept {
            Some(bytes) => (None, RequestBody::Kept(bytes.clone())),
            None => {
                let (tee, receiver) = Tee::new(max);
                (Some(tee), RequestBody::Teed(receiver))
            }
        };
        let served = head.served;
        let job = Job {
            route: self.clone(),
            head,
            request_body,
            shadow: shadow.map(|permit| ShadowJob {
                _permit: permit,
                _in_flight: InFlight::new(metrics),
                extracted: extracted.cloned(),
                monolith: monolith.clone(),
            }),
            record: record.then(|| authz.cloned()),
        };
        // A copy waits for the served answer (the watch starts it); a recording starts now.
        let job = match (&job.shadow, &self.shadow) {
            (Some(_), Some(settings)) => Some((job, settings.max_body_bytes)),
            _ => {
                job.start(None);
                None
            }
        };
        Some((tee, Watch { job, served }))
    }

    /// The admin API's view of the route: settings, counters, learned noise, last mismatches.
    pub fn status(&self, mode: &str) -> serde_json::Value {
        let m = &self.state.metrics;
        let skipped: serde_json::Map<String, serde_json::Value> = SkipReason::ALL
            .iter()
            .map(|r| (r.as_str().to_owned(), m.skipped_count(*r).into()))
            .collect();
        let record_skipped: serde_json::Map<String, serde_json::Value> = RecordSkip::ALL
            .iter()
            .map(|r| (r.as_str().to_owned(), m.record_skipped_count(*r).into()))
            .collect();
        let noise = self
            .state
            .noise
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mismatches: Vec<serde_json::Value> = self
            .state
            .mismatches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect();
        let shadow = self.shadow.as_ref().map(|s| {
            serde_json::json!({
                "sample_percent": f64::from(s.sample_bps) / 100.0,
                "methods": s.methods.iter().map(Method::as_str).collect::<Vec<_>>(),
                "max_body_bytes": s.max_body_bytes,
                "max_concurrent": s.max_concurrent,
                "timeout_ms": s.timeout.as_millis() as u64,
                "delay_ms": s.delayed.as_ref().map_or(0, |d| d.delay.as_millis() as u64),
                "log_file": s.log.as_ref().map(|l| l.path.display().to_string()),
            })
        });
        let record = self.record.as_ref().map(|r| {
            serde_json::json!({
                "file": r.file.path.display().to_string(),
                "sample_percent": f64::from(r.sample_bps) / 100.0,
                "bytes_written": r.file.written.load(Ordering::Relaxed),
                "recorded": m.recorded.get(),
                "skipped": record_skipped,
            })
        });
        serde_json::json!({
            "route": &*self.name,
            "mode": mode,
            "shadow": shadow,
            "rules": &self.rules,
            "compared": m.compared.get(),
            "matched": m.matched.get(),
            "mismatched": m.mismatched.get(),
            "noise_suppressed": m.suppressed.get(),
            "calibrations": m.calibrations.get(),
            "in_flight": m.in_flight.get(),
            "skipped": skipped,
            "noise": noise,
            "mismatches": mismatches,
            "record": record,
        })
    }
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

// ---------------------------------------------------------------------------------------------
// The job

/// Copies waiting out their route's `shadow.delay_ms` after the client's answer, in the order
/// those answers ended. The client has its answer; a moment more and the copy's work (its
/// write, the candidate's answer, the comparison) no longer lands beside the next requests'
/// answers. One task per route at a time starts the jobs when due, so a copy waits in a queue
/// rather than on a timer of its own (which cost 0.5 µs more CPU per copy at saturation, where
/// one timer serves the dozens of copies due in the same millisecond; docs/BENCHMARKS.md).
struct Delayed {
    delay: Duration,
    queue: Mutex<DelayedJobs>,
}

#[derive(Default)]
struct DelayedJobs {
    /// Each job with the served answer and when it is due.
    jobs: VecDeque<(tokio::time::Instant, Job, Answered)>,
    /// Whether a task is starting them; it ends once none are left.
    starting: bool,
}

impl Delayed {
    fn push(self: Arc<Self>, job: Job, served: Answered) {
        // Outside a runtime (it is shutting down) there is nothing left to compare with.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let due = tokio::time::Instant::now() + self.delay;
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        queue.jobs.push_back((due, job, served));
        if !queue.starting {
            queue.starting = true;
            drop(queue);
            runtime.spawn(self.start_when_due());
        }
    }

    /// Starts each job when it is due, until none are left.
    async fn start_when_due(self: Arc<Self>) {
        let timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(timer);
        loop {
            let due = {
                let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                match queue.jobs.front() {
                    Some((due, ..)) => *due,
                    None => {
                        queue.starting = false;
                        return;
                    }
                }
            };
            timer.as_mut().reset(due);
            timer.as_mut().await;
            let now = tokio::time::Instant::now();
            loop {
                let next = {
                    let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                    match queue.jobs.front() {
                        Some((due, ..)) if *due <= now => queue.jobs.pop_front(),
                        _ => None,
                    }
                };
                let Some((_, job, served)) = next else { break };
                job.spawn(Some(Got::Answer(served)));
            }
        }
    }
}

struct ShadowJob {
    /// Held until the job ends: `max_concurrent` bounds the copies in flight.
    _permit: OwnedSemaphorePermit,
    _in_flight: InFlight,
    extracted: Option<Arc<Upstream>>,
    monolith: Arc<Upstream>,
}

struct Job {
    route: Arc<RouteParity>,
    head: Head,
    request_body: RequestBody,
    shadow: Option<ShadowJob>,
    /// Recorded, with the edge authorization whose headers come out of the record.
    record: Option<Option<Arc<crate::authz::Authz>>>,
}

/// The request's body: in hand when the job began, or on its way from the tee.
enum RequestBody {
    Kept(Bytes),
    Teed(oneshot::Receiver<Teed>),
}

/// How one side's copy ended.
enum Got {
    Answer(Answered),
    Skip(SkipReason),
}

/// One side's answer, whole, as the job holds it.
struct Answered {
    status: u16,
    lines: Lines,
    body: Bytes,
}

impl Answered {
    /// As the parity engine compares it.
    fn into_exchange(self) -> ficus_parity::Exchange {
        ficus_parity::Exchange {
            status: self.status,
            headers: self.lines.into_list(),
            body: self.body,
            truncated: false,
        }
    }

    /// The common case, told without the engine: the same status, the same values of every
    /// compared header and the same body bytes: the engine would find no difference at all
    /// (not even one it ignores or calls noise).
    fn same_as(&self, other: &Answered, compared: &[String]) -> bool {
        self.status == other.status
            && self.body == other.body
            && self.lines.same(&other.lines, compared)
    }
}

impl Job {
    /// The job as a task of its own, with the served answer when it copies; a copy of a route
    /// with `shadow.delay_ms` once that has passed.
    fn start(self, served: Option<Got>) {
        match (served, &self.shadow, self.route.shadow.as_ref()) {
            (
                Some(Got::Answer(answer)),
                Some(_),
                Some(ShadowSettings {
                    delayed: Some(delayed),
                    ..
                }),
            ) => delayed.clone().push(self, answer),
            (served, ..) => self.spawn(served),
        }
    }

    fn spawn(self, served: Option<Got>) {
        // Outside a runtime (it is shutting down) there is nothing left to compare with.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let span = tracing::debug_span!("shadow", route = %self.route.name);
        // Boxed once: the job's future is large, and the task machinery would move it several
        // times. Off (the default), the span is not entered on every poll.
        if span.is_disabled() {
            runtime.spawn(Box::pin(self.run(served)));
        } else {
            runtime.spawn(Box::pin(tracing::Instrument::instrument(
                self.run(served),
                span,
            )));
        }
    }

    /// `served`: the answer the client got, `None` when the job only records.
    async fn run(self, served: Option<Got>) {
        let Job {
            route,
            head,
            request_body,
            shadow,
            record,
        } = self;
        let metrics = &route.state.metrics;
        let teed = match request_body {
            RequestBody::Kept(body) => Ok(Teed::Whole(body)),
            RequestBody::Teed(receiver) => receiver.await,
        };
        let body = match teed {
            Ok(Teed::Whole(body)) => Ok(body),
            Ok(Teed::TooLarge) => Err((SkipReason::RequestTooLarge, RecordSkip::TooLarge)),
            Ok(Teed::Broken) | Err(_) => Err((SkipReason::Incomplete, RecordSkip::Incomplete)),
        };
        if let (Some(authz), Some(recording)) = (&record, &route.record) {
            match &body {
                Ok(body) if body.len() as u64 > recording.max_body_bytes => {
                    metrics.record_skipped(RecordSkip::TooLarge)
                }
                Ok(body) => {
                    let mut request = recorded_request(&head, body);
                    request.headers = header_list(&as_sent(&head.headers, authz.as_deref()));
                    let record =
                        ficus_parity::Record::request(Some(&route.name), request, Some(now_ms()));
                    match recording.file.append(route.line(&record)) {
                        Ok(()) => {
                            metrics.recorded.inc();
                        }
                        Err(skip) => metrics.record_skipped(skip),
                    }
                }
                Err((_, skip)) => metrics.record_skipped(*skip),
            }
        }
        let (Some(shadow), Some(settings)) = (shadow, route.shadow.as_ref()) else {
            return;
        };
        let body = match body {
            Ok(body) if body.len() as u64 <= settings.max_body_bytes => body,
            Ok(_) => return metrics.skipped(SkipReason::RequestTooLarge),
            Err((reason, _)) => return metrics.skipped(reason),
        };
        let Some(extracted) = shadow.extracted.clone() else {
            return metrics.skipped(SkipReason::CandidateError);
        };
        // The same requests are calibrated every time, on every instance (a hash of the
        // method and target, as `ficus parity` draws them), and only safe ones: the monolith
        // must not apply a write twice.
        let calibrate = is_safe(&head.method)
            && route.rules.calibrate_percent > 0.0
            && ficus_parity::sampled(
                &ficus_parity::sample_key(
                    head.method.as_str(),
                    head.path_and_query.path(),
                    head.path_and_query.query().unwrap_or_default(),
                ),
                route.rules.calibrate_percent,
            );
        // The served answer is in hand (the watch started the job with it); one that never
        // came, a fallback's included, is counted without a copy.
        let served = served.unwrap_or(Got::Skip(no_answer(head.served)));
        if let Got::Skip(reason) = served {
            return metrics.skipped(reason);
        }
        // The copy goes to the side that does not serve: the extracted side in mode shadow
        // (and for a comparing canary's monolith users), the monolith for its extracted users.
        let (to, side) = match head.served {
            Side::Monolith => (&extracted, Side::Extracted),
            Side::Extracted => (&shadow.monolith, Side::Monolith),
        };
        let copy = exchange(
            to,
            side,
            &head,
            &body,
            settings.timeout,
            settings.max_body_bytes,
        );
        let (copied, again) = if calibrate {
            let again = exchange(
                &shadow.monolith,
                Side::Monolith,
                &head,
                &body,
                settings.timeout,
                settings.max_body_bytes,
            );
            let (copied, again) = tokio::join!(copy, again);
            (copied, Some(again))
        } else {
            (copy.await, None)
        };
        let (monolith, candidate) = match head.served {
            Side::Monolith => (served, copied),
            Side::Extracted => (copied, served),
        };
        let monolith = match monolith {
            Got::Answer(answer) => answer,
            Got::Skip(reason) => return metrics.skipped(reason),
        };
        let learning = match again {
            Some(Got::Answer(second)) => Some(second.into_exchange()),
            _ => None,
        };
        let candidate = match candidate {
            Got::Answer(answer) => answer,
            Got::Skip(reason) => {
                tracing::debug!(reason = reason.as_str(), "shadow not compared");
                if let Some(second) = &learning {
                    learn(&route, &monolith.into_exchange(), second);
                }
                return metrics.skipped(reason);
            }
        };
        if learning.is_none() && monolith.same_as(&candidate, &route.rules.headers) {
            metrics.compared.inc();
            metrics.matched.inc();
            return;
        }
        let (monolith, candidate) = (monolith.into_exchange(), candidate.into_exchange());
        if let Some(second) = &learning {
            learn(&route, &monolith, second);
        }
        let verdict = {
            let noise = route.state.noise.lock().unwrap_or_else(|e| e.into_inner());
            ficus_parity::compare(&route.rules, &noise, &monolith, &candidate)
        };
        metrics.compared.inc();
        metrics.suppressed.inc_by(verdict.noise as u64);
        if verdict.is_match() {
            metrics.matched.inc();
            return;
        }
        metrics.mismatched.inc();
        tracing::info!(
            route = %route.name,
            path = %head.path_and_query.path(),
            differences = verdict.real,
            first = verdict.differences.first().map_or("", |d| d.path.as_str()),
            "shadow mismatch"
        );
        let urls = ficus_parity::Urls {
            monolith: base_url(&shadow.monolith),
            extracted: base_url(&extracted),
        };
        let record = ficus_parity::Record::mismatch(
            &route.name,
            recorded_request(&head, &body),
            monolith,
            candidate,
            verdict,
            urls,
            Some(now_ms()),
        )
        .redacted(&route.redaction);
        if let Some(log) = &settings.log
            && log.append(line(&record)).is_err()
        {
            tracing::debug!(route = %route.name, "mismatch log full or behind");
        }
        let mut kept = route
            .state
            .mismatches
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        kept.push_back(serde_json::to_value(shortened(record)).unwrap_or_default());
        while kept.len() > settings.mismatches_kept {
            kept.pop_front();
        }
    }
}

/// What a calibration copy teaches: where two answers of the monolith differ.
fn learn(route: &RouteParity, monolith: &ficus_parity::Exchange, second: &ficus_parity::Exchange) {
    route.state.metrics.calibrations.inc();
    route
        .state
        .noise
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .learn(monolith, second);
}

/// Bodies kept in memory (the admin API's last mismatches) are cut to this; the log has them
/// whole, the differences are kept whole.
const KEPT_BODY_BYTES: usize = 16 * 1024;

fn shortened(mut record: ficus_parity::Record) -> ficus_parity::Record {
    for exchange in [&mut record.monolith, &mut record.extracted]
        .into_iter()
        .flatten()
    {
        if exchange.body.len() > KEPT_BODY_BYTES {
            exchange.body.truncate(KEPT_BODY_BYTES);
            exchange.truncated = true;
        }
    }
    if record.request.body.len() > KEPT_BODY_BYTES {
        record.request.body.truncate(KEPT_BODY_BYTES);
        record.request.body_truncated = true;
    }
    record
}

/// Counts a job in flight while it lives.
struct InFlight(prometheus_client::metrics::gauge::Gauge);

impl InFlight {
    fn new(metrics: &ShadowMetrics) -> Self {
        metrics.in_flight.inc();
        Self(metrics.in_flight.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Why a side gave no answer to compare: the monolith's own reason, or the candidate's.
fn no_answer(side: Side) -> SkipReason {
    match side {
        Side::Monolith => SkipReason::MonolithError,
        Side::Extracted => SkipReason::CandidateError,
    }
}

/// One copy of the request to `upstream` (`side`), answer and body within `timeout`, the body
/// within `max` bytes: over the lean pool for an `http://` upstream, else the hyper client.
/// A copy to the monolith that fails or times out is the monolith's failure, not the
/// candidate's.
async fn exchange(
    upstream: &Upstream,
    side: Side,
    head: &Head,
    body: &Bytes,
    timeout: Duration,
    max: u64,
) -> Got {
    match fetch_copy(upstream, side, head, body, timeout, max).await {
        Got::Skip(SkipReason::CandidateTimeout | SkipReason::CandidateError)
            if side == Side::Monolith =>
        {
            Got::Skip(SkipReason::MonolithError)
        }
        got => got,
    }
}

async fn fetch_copy(
    upstream: &Upstream,
    side: Side,
    head: &Head,
    body: &Bytes,
    timeout: Duration,
    max: u64,
) -> Got {
    if upstream.scheme == Scheme::HTTP {
        let request = copy_request(head, body, &upstream.authority);
        let head_request = head.method == Method::HEAD;
        let whole = crate::lean::fetch::fetch(upstream, side, &request, head_request, max);
        return match tokio::time::timeout(timeout, whole).await {
            Err(_) => Got::Skip(SkipReason::CandidateTimeout),
            Ok(Err(FetchError::TooLarge)) => Got::Skip(SkipReason::ResponseTooLarge),
            Ok(Err(FetchError::Failed(error))) => {
                tracing::debug!(%error, upstream = %upstream.name, "shadow copy failed");
                Got::Skip(SkipReason::CandidateError)
            }
            Ok(Ok(fetched)) => Got::Answer(Answered {
                status: fetched.status,
                lines: fetched.headers,
                body: fetched.body,
            }),
        };
    }
    let uri = Uri::builder()
        .scheme(upstream.scheme.clone())
        .authority(upstream.authority.clone())
        .path_and_query(head.path_and_query.clone())
        .build()
        .expect("parts of valid URIs");
    let mut request = Request::new(Body::full(body.clone()));
    *request.method_mut() = head.method.clone();
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = head.headers.clone();
    request
        .headers_mut()
        .insert(X_FICUS_SHADOW.clone(), HeaderValue::from_static("1"));
    let whole = async {
        let response = upstream.client.request(request).await.map_err(|error| {
            tracing::debug!(error = %error, upstream = %upstream.name, "shadow copy failed");
            SkipReason::CandidateError
        })?;
        let (parts, mut incoming) = response.into_parts();
        let mut kept = Vec::new();
        while let Some(frame) = incoming.frame().await {
            let frame = frame.map_err(|_| SkipReason::CandidateError)?;
            if let Some(data) = frame.data_ref() {
                if (kept.len() + data.len()) as u64 > max {
                    return Err(SkipReason::ResponseTooLarge);
                }
                kept.extend_from_slice(data);
            }
        }
        Ok(Answered {
            status: parts.status.as_u16(),
            lines: Lines::List(header_list(&parts.headers)),
            body: Bytes::from(kept),
        })
    };
    match tokio::time::timeout(timeout, whole).await {
        Err(_) => Got::Skip(SkipReason::CandidateTimeout),
        Ok(Err(reason)) => Got::Skip(reason),
        Ok(Ok(answer)) => Got::Answer(answer),
    }
}

/// A copy of the request as one HTTP/1.1 message: the head as it went to the monolith (the
/// client's `Host` included; the upstream's authority when there is none), marked as a shadow,
/// its framing for the body in hand.
fn copy_request(head: &Head, body: &[u8], authority: &Authority) -> Vec<u8> {
    // The head as it went, its empty line moved after the mark.
    if let Some(written) = head.written.as_ref().filter(|_| body.is_empty())
        && let Some(lines) = written.strip_suffix(b"\r\n")
    {
        let mut out = Vec::with_capacity(written.len() + 20);
        out.extend_from_slice(lines);
        out.extend_from_slice(b"x-ficus-shadow: 1\r\n\r\n");
        return out;
    }
    let mut out = Vec::with_capacity(256 + body.len());
    out.extend_from_slice(head.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(head.path_and_query.as_str().as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut line = |name: &[u8], value: &[u8]| {
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    };
    for (name, value) in &head.headers {
        if name != header::CONTENT_LENGTH
            && name != header::TRANSFER_ENCODING
            && name != X_FICUS_SHADOW
        {
            line(name.as_str().as_bytes(), value.as_bytes());
        }
    }
    if !head.headers.contains_key(header::HOST) {
        line(b"host", authority.as_str().as_bytes());
    }
    line(X_FICUS_SHADOW.as_str().as_bytes(), b"1");
    // As hyper's client: a length for a body, and for the methods that expect one.
    if !body.is_empty() || matches!(head.method, Method::POST | Method::PUT | Method::PATCH) {
        line(b"content-length", body.len().to_string().as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

// ---------------------------------------------------------------------------------------------
// Into the parity engine's types

fn header_list(headers: &HeaderMap) -> Vec<(String, Vec<u8>)> {
    headers
        .iter()
        .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
        .collect()
}

/// The request as recorded and replayed: as it went to the monolith (the canonical target,
/// forwarding headers and the forwarded identity included; secrets are redacted on write).
fn recorded_request(head: &Head, body: &Bytes) -> ficus_parity::Request {
    ficus_parity::Request {
        method: head.method.as_str().to_owned(),
        path: head.path_and_query.path().to_owned(),
        query: head.path_and_query.query().unwrap_or_default().to_owned(),
        headers: header_list(&head.headers),
        body: body.clone(),
        body_truncated: false,
    }
}

/// The headers as the client could have sent them: what the edge adds (the verified identity,
/// the internal token, `X-Forwarded-*`) is not part of the request a corpus replays (and the
/// identity headers carry personal fields).
fn as_sent(headers: &HeaderMap, authz: Option<&crate::authz::Authz>) -> HeaderMap {
    let mut headers = headers.clone();
    match authz {
        Some(authz) => {
            authz.strip_spoofable(&mut headers, false);
        }
        None => {
            crate::authz::headers::strip(&mut headers, &[], false);
        }
    }
    headers
}

fn base_url(upstream: &Upstream) -> String {
    format!("{}://{}", upstream.scheme, upstream.authority)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One JSON line of an already redacted record.
fn line(record: &ficus_parity::Record) -> Vec<u8> {
    let mut line = serde_json::to_vec(record).unwrap_or_default();
    line.push(b'\n');
    line
}

impl RouteParity {
    /// One JSON line of `record`, redacted by the route's rules (the corpus format of
    /// `ficus_parity::CorpusWriter`, written here by a writer that never blocks a request).
    fn line(&self, record: &ficus_parity::Record) -> Vec<u8> {
        line(&record.redacted(&self.redaction))
    }
}

// ---------------------------------------------------------------------------------------------
// JSON-lines files (mismatch logs, corpora)

/// An append-only JSON-lines file, bounded in size, written by a blocking thread of its own
/// behind a bounded queue: the request path and the jobs never wait for the disk.
pub struct JsonLines {
    path: PathBuf,
    max_bytes: AtomicU64,
    /// Bytes in the file and queued for it.
    written: AtomicU64,
    queue: Mutex<Option<std::sync::mpsc::SyncSender<Vec<u8>>>>,
}

/// Lines queued before the writer catches up; past it a line is refused (counted).
const QUEUED_LINES: usize = 1024;

impl JsonLines {
    fn new(path: &Path) -> Self {
        let existing = std::fs::metadata(path).map_or(0, |m| m.len());
        Self {
            path: path.to_owned(),
            max_bytes: AtomicU64::new(u64::MAX),
            written: AtomicU64::new(existing),
            queue: Mutex::new(None),
        }
    }

    /// Queues one line (ending in a newline); refused when the file would pass its bound or
    /// the writer is behind.
    pub fn append(&self, line: Vec<u8>) -> Result<(), RecordSkip> {
        let size = line.len() as u64;
        let max = self.max_bytes.load(Ordering::Relaxed);
        let reserved = self
            .written
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |now| {
                (now + size <= max).then_some(now + size)
            });
        if reserved.is_err() {
            return Err(RecordSkip::Full);
        }
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let sender = queue.get_or_insert_with(|| self.start_writer());
        match sender.try_send(line) {
            Ok(()) => Ok(()),
            Err(_) => {
                self.written.fetch_sub(size, Ordering::Relaxed);
                Err(RecordSkip::WriteError)
            }
        }
    }

    fn start_writer(&self) -> std::sync::mpsc::SyncSender<Vec<u8>> {
        let (sender, lines) = std::sync::mpsc::sync_channel::<Vec<u8>>(QUEUED_LINES);
        let path = self.path.clone();
        std::thread::Builder::new()
            .name("ficus-parity-log".into())
            .spawn(move || write_lines(&path, &lines))
            .expect("spawning the parity log writer");
        sender
    }
}

fn write_lines(path: &Path, lines: &std::sync::mpsc::Receiver<Vec<u8>>) {
    use std::io::Write;
    let open = || {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
    };
    let mut file = match open() {
        Ok(file) => std::io::BufWriter::new(file),
        Err(error) => {
            tracing::error!(%error, file = %path.display(), "opening a parity file failed");
            return;
        }
    };
    while let Ok(line) = lines.recv() {
        let mut result = file.write_all(&line);
        // Flushed whenever the queue is empty: a line is on disk soon after it was written.
        while let Ok(more) = lines.try_recv() {
            result = result.and_then(|()| file.write_all(&more));
        }
        if let Err(error) = result.and_then(|()| file.flush()) {
            tracing::error!(%error, file = %path.display(), "writing a parity file failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lean::pool::Field;

    /// The header lines of a raw response head, as the lean path's reader finds them.
    fn raw(lines: &[(&str, &str)]) -> Lines {
        let mut head = b"HTTP/1.1 200 OK\r\n".to_vec();
        let mut fields = Vec::new();
        for (name, value) in lines {
            let name_at = head.len();
            head.extend_from_slice(name.as_bytes());
            let name = name_at..head.len();
            head.extend_from_slice(b": ");
            let value_at = head.len();
            head.extend_from_slice(value.as_bytes());
            fields.push(Field {
                name,
                value: value_at..head.len(),
            });
            head.extend_from_slice(b"\r\n");
        }
        head.extend_from_slice(b"\r\n");
        Lines::Raw {
            head: Bytes::from(head),
            fields,
        }
    }

    fn list(lines: &[(&str, &str)]) -> Lines {
        Lines::List(
            lines
                .iter()
                .map(|(n, v)| (n.to_ascii_lowercase(), v.as_bytes().to_vec()))
                .collect(),
        )
    }

    fn answered(status: u16, lines: Lines, body: &'static str) -> Answered {
        Answered {
            status,
            lines,
            body: Bytes::from_static(body.as_bytes()),
        }
    }

    /// The quick check says "the same" only where the engine finds no difference at all, and
    /// says it for the common case (answers that differ only in headers not compared).
    #[test]
    fn the_quick_check_is_the_same_only_where_the_engine_finds_nothing() {
        let rules = ficus_parity::Rules::default();
        let noise = ficus_parity::Noise::default();
        let monolith: &[(&str, &str)] = &[
            ("Server", "monolith"),
            ("Date", "Mon"),
            ("Content-Type", "application/json"),
            ("ETag", "\"1\""),
            ("Link", "<a>"),
            ("Link", "<b>"),
            ("Connection", "keep-alive"),
        ];
        let body = r#"{"id":1}"#;
        // What differs, the other side's status, header lines and body, and whether the
        // quick check may call the two the same.
        type Case<'a> = (&'a str, u16, &'a [(&'a str, &'a str)], &'static str, bool);
        let cases: &[Case] = &[
            (
                "other headers differ",
                200,
                &[
                    ("server", "extracted"),
                    ("content-type", "application/json"),
                    ("x-request-id", "7"),
                    ("etag", "\"1\""),
                    ("link", "<a>"),
                    ("link", "<b>"),
                ],
                body,
                true,
            ),
            (
                "an etag differs",
                200,
                &[
                    ("Content-Type", "application/json"),
                    ("ETag", "\"2\""),
                    ("Link", "<a>"),
                    ("Link", "<b>"),
                ],
                body,
                false,
            ),
            (
                "an etag is missing",
                200,
                &[
                    ("Content-Type", "application/json"),
                    ("Link", "<a>"),
                    ("Link", "<b>"),
                ],
                body,
                false,
            ),
            (
                "links in another order",
                200,
                &[
                    ("Content-Type", "application/json"),
                    ("ETag", "\"1\""),
                    ("Link", "<b>"),
                    ("Link", "<a>"),
                ],
                body,
                false,
            ),
            (
                "the status differs",
                201,
                &[
                    ("Content-Type", "application/json"),
                    ("ETag", "\"1\""),
                    ("Link", "<a>"),
                    ("Link", "<b>"),
                ],
                body,
                false,
            ),
            (
                "a field differs",
                200,
                &[
                    ("Content-Type", "application/json"),
                    ("ETag", "\"1\""),
                    ("Link", "<a>"),
                    ("Link", "<b>"),
                ],
                r#"{"id":2}"#,
                false,
            ),
        ];
        for (what, status, lines, other_body, same) in cases {
            for (monolith_lines, other_lines) in [
                (raw(monolith), raw(lines)),
                (raw(monolith), list(lines)),
                (list(monolith), raw(lines)),
            ] {
                let a = answered(200, monolith_lines, body);
                let b = answered(*status, other_lines, other_body);
                assert_eq!(a.same_as(&b, &rules.headers), *same, "{what}");
                let verdict =
                    ficus_parity::compare(&rules, &noise, &a.into_exchange(), &b.into_exchange());
                // Each case is one the engine tells apart exactly as the quick check does.
                assert_eq!(verdict.differences.is_empty(), *same, "{what}: {verdict:?}");
            }
        }
        // Hop-by-hop lines are not compared: the engine never sees them.
        let exchange = answered(200, raw(monolith), body).into_exchange();
        assert!(exchange.headers.iter().all(|(n, _)| n != "connection"));
        assert_eq!(exchange.header("link").as_deref(), Some("<a>, <b>"));
    }
}
