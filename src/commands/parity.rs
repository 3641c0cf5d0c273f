//! `ficus parity`: replays a recorded corpus (JSON lines, `ficus_parity::corpus`) against the
//! monolith and the extracted side of each request's route, as routes.toml names them (read with
//! the proxy's own check, so routes, upstreams and `[route.parity]` rules come from one place),
//! or at the URLs given; learns the monolith's noise by asking it twice (a sample, and the first
//! request of every route); compares with the engine the live shadow uses; writes JUnit XML and
//! a self-contained HTML report; exits 1 when a route's mismatches exceed its threshold.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use ficus_parity::report::{self, Case, Outcome, RouteRun, Run};
use ficus_parity::{
    CorpusReader, CorpusWriter, Exchange, Noise, Record, Redaction, Request, Rules, Urls, compare,
    sampled,
};
use ficus_proxy::body::Body;
use ficus_proxy::check::base_dir;
use ficus_proxy::config::{UpstreamConfig, UpstreamUrl};
use ficus_proxy::table::Table;
use ficus_proxy::tls::ClientTls;
use ficus_proxy::upstream::{Upstream, UpstreamPool};
use http_body_util::BodyExt;

#[derive(clap::Args)]
pub struct Args {
    /// The corpus: JSON lines of recorded requests (a recording or a shadow mismatch log).
    #[arg(long)]
    corpus: PathBuf,
    /// The routes file: each request goes to the route it names (or matches), its monolith and
    /// extracted upstreams, under its `[route.parity]` rules.
    #[arg(long)]
    routes: Option<PathBuf>,
    /// The monolith's base URL (`http://host:port`), instead of the routes file's upstream.
    #[arg(long)]
    monolith: Option<String>,
    /// The extracted side's base URL, instead of the routes file's upstream.
    #[arg(long)]
    extracted: Option<String>,
    /// A header added to every replayed request, replacing a recorded one of the same name
    /// (credentials: recorded secrets are redacted), e.g. `--header "authorization: Bearer $T"`.
    #[arg(long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// Write JUnit XML here.
    #[arg(long)]
    junit: Option<PathBuf>,
    /// Write the HTML report here (one file, no external assets).
    #[arg(long)]
    html: Option<PathBuf>,
    /// Write each mismatch here as a JSON line (the shadow's mismatch log format).
    #[arg(long)]
    mismatches: Option<PathBuf>,
    /// Share of requests (0..=100) also sent a second time to the monolith to learn the noise,
    /// instead of each route's `calibrate_percent`. Unless it is 0, the first request of every
    /// route always is.
    #[arg(long)]
    calibrate_percent: Option<f64>,
    /// Also replay unsafe methods (POST, PUT, PATCH, DELETE): they run on both sides, so only
    /// against disposable environments.
    #[arg(long)]
    include_writes: bool,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Time for one answer, head and body.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    /// Answer bodies are kept up to this size; a longer one is not compared (counted as such).
    #[arg(long, default_value_t = 8 * 1024 * 1024)]
    max_body_bytes: usize,
}

/// Where one route's requests go, and how they are judged.
struct Target {
    name: String,
    monolith: Arc<Upstream>,
    extracted: Arc<Upstream>,
    rules: Rules,
    redaction: Redaction,
    urls: Urls,
}

/// One request to replay.
struct Job {
    record: Record,
    route: usize,
    calibrate: bool,
}

/// What the sides answered to one request.
struct Answers {
    monolith: Result<Exchange, String>,
    extracted: Result<Exchange, String>,
    /// The monolith's second answer (calibration).
    again: Option<Result<Exchange, String>>,
}

/// Returns the exit code: 0 every route within its threshold, 1 otherwise.
pub async fn run(args: Args) -> anyhow::Result<i32> {
    let started = Instant::now();
    if args.concurrency == 0 {
        bail!("--concurrency: must be at least 1");
    }
    if let Some(p) = args.calibrate_percent
        && !(0.0..=100.0).contains(&p)
    {
        bail!("--calibrate-percent: {p} is not in 0..=100");
    }
    let extra_headers = parse_headers(&args.headers)?;
    let pool = UpstreamPool::default();
    let override_of = |url: &Option<String>, flag: &str| -> anyhow::Result<Option<Arc<Upstream>>> {
        url.as_deref()
            .map(|url| upstream_at(&pool, flag, url))
            .transpose()
    };
    let monolith_override = override_of(&args.monolith, "monolith")?;
    let extracted_override = override_of(&args.extracted, "extracted")?;

    let table = match &args.routes {
        None => {
            if monolith_override.is_none() || extracted_override.is_none() {
                bail!("without --routes, give both --monolith and --extracted");
            }
            None
        }
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let checked = ficus_proxy::check(&text, base_dir(path)).map_err(|problems| {
                anyhow::anyhow!(
                    "{}: the proxy would refuse this file: {problems}",
                    path.display()
                )
            })?;
            let metrics = ficus_proxy::metrics::Metrics::default();
            Some(Table::compile(checked.file, 0, &pool, &metrics, None))
        }
    };

    // Each record to its route.
    let mut targets: Vec<Target> = Vec::new();
    let mut by_name: BTreeMap<String, usize> = BTreeMap::new();
    let mut skipped: Vec<(usize, Record, String)> = Vec::new();
    let mut jobs: Vec<Job> = Vec::new();
    for record in CorpusReader::open(&args.corpus)? {
        let record = record?;
        let resolved = resolve(
            &record,
            table.as_ref(),
            monolith_override.as_ref(),
            extracted_override.as_ref(),
        );
        let (name, target) = match resolved {
            Ok(found) => found,
            Err((name, reason)) => {
                let index = *by_name.entry(name.clone()).or_insert_with(|| {
                    targets.push(unserved(&name, table.as_ref(), &pool));
                    targets.len() - 1
                });
                skipped.push((index, record, reason));
                continue;
            }
        };
        let index = *by_name.entry(name).or_insert_with(|| {
            targets.push(target());
            targets.len() - 1
        });
        let method = record.request.method.clone();
        if !args.include_writes && !matches!(method.as_str(), "GET" | "HEAD" | "OPTIONS") {
            skipped.push((
                index,
                record,
                format!("{method} is not a safe method (replay writes with --include-writes)"),
            ));
            continue;
        }
        if record.request.body_truncated {
            skipped.push((index, record, "the body was cut at recording".to_owned()));
            continue;
        }
        let percent = args
            .calibrate_percent
            .unwrap_or(targets[index].rules.calibrate_percent);
        let first = percent > 0.0 && !jobs.iter().any(|j| j.route == index);
        let calibrate = first || sampled(&record.request.sample_key(), percent);
        jobs.push(Job {
            record,
            route: index,
            calibrate,
        });
    }

    // Replay, `concurrency` requests at a time.
    let targets = Arc::new(targets);
    let extra_headers = Arc::new(extra_headers);
    let semaphore = Arc::new(tokio::sync::Semaphore::new(args.concurrency));
    let timeout = Duration::from_millis(args.timeout_ms);
    let mut tasks = tokio::task::JoinSet::new();
    for (position, job) in jobs.into_iter().enumerate() {
        let permit = semaphore.clone().acquire_owned().await?;
        let (targets, extra_headers) = (targets.clone(), extra_headers.clone());
        let max_body = args.max_body_bytes;
        tasks.spawn(async move {
            let target = &targets[job.route];
            let request = &job.record.request;
            let (monolith, extracted) = tokio::join!(
                exchange(&target.monolith, request, &extra_headers, timeout, max_body),
                exchange(
                    &target.extracted,
                    request,
                    &extra_headers,
                    timeout,
                    max_body
                )
            );
            let again = match (&monolith, job.calibrate) {
                (Ok(_), true) => Some(
                    exchange(&target.monolith, request, &extra_headers, timeout, max_body).await,
                ),
                _ => None,
            };
            drop(permit);
            (
                position,
                job,
                Answers {
                    monolith,
                    extracted,
                    again,
                },
            )
        });
    }
    let mut answered = Vec::new();
    while let Some(done) = tasks.join_next().await {
        answered.push(done?);
    }
    // In corpus order, whatever order they finished in.
    answered.sort_by_key(|(position, _, _)| *position);

    // Noise first (all of it), then the verdicts.
    let mut noise: Vec<Noise> = vec![Noise::default(); targets.len()];
    for (_, job, answers) in &answered {
        if let (Ok(first), Some(Ok(second))) = (&answers.monolith, &answers.again) {
            noise[job.route].learn(first, second);
        }
    }
    let mut cases: Vec<Vec<Case>> = (0..targets.len()).map(|_| Vec::new()).collect();
    let mut mismatch_log = match &args.mismatches {
        Some(path) => Some(CorpusWriter::append(path, u64::MAX)?),
        None => None,
    };
    for (_, job, answers) in answered {
        let target = &targets[job.route];
        let Job { record, .. } = job;
        let request = record.request;
        let case = |outcome: Outcome, record: Record| Case {
            record: record.redacted(&target.redaction),
            outcome,
        };
        let error_record = |request: Request| {
            let mut record = Record::request(Some(&target.name), request, record.at_ms);
            record.urls = Some(target.urls.clone());
            record
        };
        let case = match (answers.monolith, answers.extracted) {
            (Err(message), _) => case(
                Outcome::Error {
                    side: "monolith".into(),
                    message,
                },
                error_record(request),
            ),
            (Ok(_), Err(message)) => case(
                Outcome::Error {
                    side: "extracted".into(),
                    message,
                },
                error_record(request),
            ),
            (Ok(monolith), Ok(extracted)) => {
                let verdict = compare(&target.rules, &noise[job.route], &monolith, &extracted);
                if verdict.is_match() {
                    case(
                        Outcome::Matched,
                        Record::request(Some(&target.name), request, record.at_ms),
                    )
                } else {
                    let mismatch = Record::mismatch(
                        &target.name,
                        request,
                        monolith,
                        extracted,
                        verdict,
                        target.urls.clone(),
                        record.at_ms,
                    );
                    if let Some(log) = &mut mismatch_log {
                        log.write(&mismatch, &target.redaction)?;
                    }
                    case(Outcome::Mismatched, mismatch)
                }
            }
        };
        cases[job.route].push(case);
    }
    if let Some(log) = &mut mismatch_log {
        log.flush()?;
    }
    for (index, record, reason) in skipped {
        let redacted = record.redacted(&targets[index].redaction);
        cases[index].push(Case {
            record: redacted,
            outcome: Outcome::Skipped { reason },
        });
    }

    let targets = Arc::try_unwrap(targets).unwrap_or_else(|_| unreachable!("the tasks are done"));
    let routes: Vec<RouteRun> = targets
        .into_iter()
        .zip(noise)
        .zip(cases)
        .map(|((target, noise), cases)| RouteRun {
            name: target.name,
            monolith_url: target.urls.monolith,
            extracted_url: target.urls.extracted,
            rules: target.rules,
            noise,
            cases,
        })
        .collect();
    let run = Run {
        corpus: args.corpus.display().to_string(),
        routes,
        seconds: started.elapsed().as_secs_f64(),
    };
    print_summary(&run);
    if let Some(path) = &args.junit {
        write(path, &report::junit(&run))?;
    }
    if let Some(path) = &args.html {
        write(path, &report::html(&run))?;
    }
    Ok(if run.passed() { 0 } else { 1 })
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// `name: value` pairs.
fn parse_headers(raw: &[String]) -> anyhow::Result<Vec<(http::HeaderName, http::HeaderValue)>> {
    raw.iter()
        .map(|pair| {
            let (name, value) = pair
                .split_once(':')
                .with_context(|| format!("--header `{pair}`: expected `NAME: VALUE`"))?;
            let name = http::HeaderName::from_bytes(name.trim().as_bytes()).with_context(|| {
                format!("--header `{pair}`: `{}` is not a header name", name.trim())
            })?;
            let value = http::HeaderValue::from_str(value.trim())
                .with_context(|| format!("--header `{pair}`: not a header value"))?;
            Ok((name, value))
        })
        .collect()
}

/// An upstream at a URL given on the command line (`https://` with the system's roots).
fn upstream_at(pool: &UpstreamPool, flag: &str, url: &str) -> anyhow::Result<Arc<Upstream>> {
    let url = UpstreamUrl::try_from(url.trim_end_matches('/').to_owned())
        .map_err(|e| anyhow::anyhow!("--{flag}: {e}"))?;
    let tls = if url.scheme == http::uri::Scheme::HTTPS {
        Some(ClientTls::new(None).map_err(|e| anyhow::anyhow!("--{flag}: {e}"))?)
    } else {
        None
    };
    let config = UpstreamConfig {
        url,
        connect_timeout_ms: 2_000,
        ca_file: None,
        tls,
    };
    Ok(pool.get(&format!("--{flag}"), &config))
}

fn url_of(upstream: &Upstream) -> String {
    format!("{}://{}", upstream.scheme, upstream.authority)
}

type Resolved<'a> = Result<(String, Box<dyn FnOnce() -> Target + 'a>), (String, String)>;

/// The route of a record (by the name it was recorded under, else by matching the routes
/// file) and, the first time, how to build its target; or why it cannot be replayed.
fn resolve<'a>(
    record: &Record,
    table: Option<&'a Table>,
    monolith_override: Option<&'a Arc<Upstream>>,
    extracted_override: Option<&'a Arc<Upstream>>,
) -> Resolved<'a> {
    let Some(table) = table else {
        let name = record.route.clone().unwrap_or_else(|| "default".to_owned());
        let (monolith, extracted) = (
            monolith_override.cloned().expect("checked"),
            extracted_override.cloned().expect("checked"),
        );
        let shown = name.clone();
        return Ok((
            name,
            Box::new(move || target(shown, monolith, extracted, Rules::default())),
        ));
    };
    let by_name = record
        .route
        .as_deref()
        .and_then(|name| table.routes.iter().find(|r| &*r.name == name));
    let route = match by_name {
        Some(route) => route,
        None => {
            let headers = header_map(&record.request.headers);
            let method =
                http::Method::from_bytes(record.request.method.as_bytes()).map_err(|_| {
                    (
                        "default".to_owned(),
                        format!("`{}` is not a method", record.request.method),
                    )
                })?;
            table.route(&method, &record.request.path, &headers)
        }
    };
    let name = route.name.to_string();
    if std::ptr::eq(route, &table.default_route) {
        return Err((name, "matches no route of the routes file".to_owned()));
    }
    let Some(extracted) = extracted_override.or(route.extracted.as_ref()).cloned() else {
        return Err((
            name,
            "the route has no extracted upstream (`serve`)".to_owned(),
        ));
    };
    let monolith = monolith_override.unwrap_or(&route.monolith).clone();
    let rules = table
        .file
        .routes
        .iter()
        .find(|r| r.name == name)
        .map(|r| r.parity.clone())
        .unwrap_or_default();
    let shown = name.clone();
    Ok((
        name,
        Box::new(move || target(shown, monolith, extracted, rules)),
    ))
}

fn target(name: String, monolith: Arc<Upstream>, extracted: Arc<Upstream>, rules: Rules) -> Target {
    Target {
        name,
        urls: Urls {
            monolith: url_of(&monolith),
            extracted: url_of(&extracted),
        },
        redaction: Redaction::of(&rules),
        rules,
        monolith,
        extracted,
    }
}

/// The target of a route whose requests are all skipped (nothing is sent).
fn unserved(name: &str, table: Option<&Table>, pool: &UpstreamPool) -> Target {
    let route = table.and_then(|t| t.routes.iter().find(|r| &*r.name == name));
    let rules = table
        .and_then(|t| t.file.routes.iter().find(|r| r.name == name))
        .map(|r| r.parity.clone())
        .unwrap_or_default();
    let monolith = match (route, table) {
        (Some(route), _) => route.monolith.clone(),
        (None, Some(table)) => table.default_route.monolith.clone(),
        (None, None) => upstream_at(pool, "unused", "http://0.0.0.0:9").expect("a valid URL"),
    };
    let mut target = target(name.to_owned(), monolith.clone(), monolith, rules);
    target.urls.extracted = "(none)".to_owned();
    target
}

fn header_map(headers: &[(String, Vec<u8>)]) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_bytes(value),
        ) {
            map.append(name, value);
        }
    }
    map
}

/// Sends the recorded request to one side and reads its answer (the body up to `max_body`).
async fn exchange(
    upstream: &Upstream,
    request: &Request,
    extra: &[(http::HeaderName, http::HeaderValue)],
    timeout: Duration,
    max_body: usize,
) -> Result<Exchange, String> {
    let uri = format!("{}{}", url_of(upstream), request.target());
    let mut builder = http::Request::builder()
        .method(request.method.as_bytes())
        .uri(&uri);
    let headers = builder.headers_mut().expect("a fresh builder");
    for (name, value) in &request.headers {
        let skip = ficus_parity::corpus::CONNECTION_HEADERS.contains(&name.as_str())
            || value == ficus_parity::redact::REDACTED.as_bytes()
            || extra
                .iter()
                .any(|(n, _)| n.as_str().eq_ignore_ascii_case(name));
        if skip {
            continue;
        }
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_bytes(value),
        ) {
            headers.append(name, value);
        }
    }
    for (name, value) in extra {
        headers.insert(name.clone(), value.clone());
    }
    let outgoing = builder
        .body(Body::full(request.body.clone()))
        .map_err(|e| format!("{uri}: {e}"))?;
    let answer = async {
        let response = upstream
            .client
            .request(outgoing)
            .await
            .map_err(|e| format!("{uri}: {}", chain(&e)))?;
        let (parts, mut body) = response.into_parts();
        let mut kept = Vec::new();
        let mut truncated = false;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("{uri}: reading the body: {e}"))?;
            if let Some(data) = frame.data_ref() {
                if kept.len() + data.len() > max_body {
                    truncated = true;
                    break;
                }
                kept.extend_from_slice(data);
            }
        }
        Ok(Exchange {
            status: parts.status.as_u16(),
            headers: parts
                .headers
                .iter()
                .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
                .collect(),
            body: Bytes::from(kept),
            truncated,
        })
    };
    match tokio::time::timeout(timeout, answer).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "{uri}: no answer within {} ms",
            timeout.as_millis()
        )),
    }
}

/// An error and its causes, `: `-separated.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn print_summary(run: &Run) {
    for route in &run.routes {
        println!(
            "{}: {} compared, {} matched, {} mismatched ({:.2} %, threshold {} %), {} monolith errors, {} skipped; noise from {} pairs{} — {}",
            route.name,
            route.compared(),
            route.matched(),
            route.mismatched(),
            route.mismatch_percent(),
            route.rules.max_mismatch_percent,
            route.monolith_errors(),
            route.skipped(),
            route.noise.pairs,
            if route.noise.paths.is_empty() {
                String::new()
            } else {
                format!(
                    ": {}",
                    route
                        .noise
                        .paths
                        .iter()
                        .map(|(p, n)| format!("{p} ({n})"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
            if route.passed() { "pass" } else { "FAIL" }
        );
        for case in &route.cases {
            match &case.outcome {
                Outcome::Mismatched => {
                    let request = &case.record.request;
                    println!("  mismatch {} {}", request.method, request.target());
                    for d in case
                        .record
                        .verdict
                        .iter()
                        .flat_map(|v| v.real_differences())
                        .take(5)
                    {
                        println!(
                            "    {}: monolith {} / extracted {}",
                            d.path,
                            d.monolith
                                .as_ref()
                                .map_or("(absent)".to_owned(), |v| v.to_string()),
                            d.extracted
                                .as_ref()
                                .map_or("(absent)".to_owned(), |v| v.to_string()),
                        );
                    }
                }
                Outcome::Error { side, message } => {
                    let request = &case.record.request;
                    println!(
                        "  error {} {} ({side}): {message}",
                        request.method,
                        request.target()
                    );
                }
                _ => {}
            }
        }
    }
    println!(
        "parity: {} — {:.1} s",
        if run.passed() { "pass" } else { "FAIL" },
        run.seconds
    );
}
