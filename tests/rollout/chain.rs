//! The controller (`ficus rollout run`, the binary) against the demo chain: the real monolith
//! over its PostgreSQL, `ficus cdc` in-process streaming `people` into the broker, the real
//! `ficus-people` keeping its view, the real proxy; a load generator plays end users (each
//! with an `x-user-id`) reading people through the proxy.
//!
//! The candidate's faults are injected by a small forwarding server in front of the people
//! service (the service itself stays real): faithful, one field changed, or 500s.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use ficus_rollout::readings::{Source, Window, read_counters};
use ficus_testkit::{TestAdapter, TestMonolith, TestPrometheus, TestProxy, unique_suffix};
use serde_json::Value;

use crate::support::{PeopleChain, ServiceProcess};

const FICUS: &str = env!("CARGO_BIN_EXE_ficus");

const FAITHFUL: u8 = 0;
const MISMATCH: u8 = 1;
const FAILING: u8 = 2;

/// A forwarding server in front of the people service that can change its answers.
struct Candidate {
    addr: std::net::SocketAddr,
    fault: Arc<AtomicU8>,
}

#[derive(Clone)]
struct Forward {
    to: String,
    http: reqwest::Client,
    fault: Arc<AtomicU8>,
}

async fn forward(State(f): State<Forward>, request: Request) -> Response {
    let fault = f.fault.load(Ordering::Relaxed);
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let is_api = path.starts_with("/api/");
    if fault == FAILING && is_api {
        return Response::builder()
            .status(500)
            .header("content-type", "application/json")
            .body(Body::from(r#"{"error":"internal"}"#))
            .unwrap();
    }
    let headers = request.headers().clone();
    let send = || {
        let mut outgoing = f.http.get(format!("{}{path}", f.to));
        for (name, value) in &headers {
            if name != "host" {
                outgoing = outgoing.header(name, value);
            }
        }
        outgoing.send()
    };
    // One retry: a loaded machine drops a connection now and then; the candidate under test
    // is the service's answers, not this forwarder's luck.
    let answer = match send().await {
        Ok(answer) => answer,
        Err(_) => match send().await {
            Ok(answer) => answer,
            Err(error) => {
                return Response::builder()
                    .status(502)
                    .body(Body::from(error.to_string()))
                    .unwrap();
            }
        },
    };
    let status = answer.status();
    let mut builder = Response::builder().status(status.as_u16());
    for (name, value) in answer.headers() {
        if name != "content-length" && name != "transfer-encoding" && name != "connection" {
            builder = builder.header(name, value);
        }
    }
    let mut body = answer.bytes().await.unwrap().to_vec();
    if fault == MISMATCH && is_api {
        // One field differs: the person's display name.
        if let Ok(mut json) = serde_json::from_slice::<Value>(&body)
            && let Some(name) = json.get_mut("display_name")
        {
            *name = Value::String(format!("{} (v2)", name.as_str().unwrap_or_default()));
            body = serde_json::to_vec(&json).unwrap();
        }
    }
    builder.body(Body::from(body)).unwrap()
}

impl Candidate {
    async fn start(people: &ServiceProcess) -> Self {
        let fault = Arc::new(AtomicU8::new(FAITHFUL));
        let state = Forward {
            to: people.url(""),
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap(),
            fault: fault.clone(),
        };
        let app = axum::Router::new().fallback(forward).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, fault }
    }

    fn set(&self, fault: u8) {
        self.fault.store(fault, Ordering::Relaxed);
    }
}

/// The whole chain, people-read in mode monolith.
struct Chain {
    _monolith: TestMonolith,
    _adapter: TestAdapter,
    _people: ServiceProcess,
    proxy: TestProxy,
    candidate: Candidate,
    token: String,
    ids: Vec<i64>,
    dir: PathBuf,
    /// The internal token's signing key, shared by every proxy on the routes file.
    key: PathBuf,
}

impl Drop for Chain {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.key);
    }
}

/// The chain's routes file; `people_read` is appended to the route under rollout.
fn routes(
    monolith: std::net::SocketAddr,
    candidate: std::net::SocketAddr,
    key: &Path,
    people_read: &str,
) -> String {
    let key = key.display();
    format!(
        r#"# The chain's routes; `ficus rollout` steps people-read through its plan.
[proxy]
default = "monolith"
expose_headers = true

[auth]
jwks_url = "http://{monolith}/.well-known/jwks.json"
issuer = "ficus-monolith"
audience = ["ficus"]
default = "authenticated"

[auth.internal_token]
header = "x-ficus-identity"
audience = "ficus-services"
key_file = "{key}"              # every proxy on this file signs alike

[upstreams.monolith]
url = "http://{monolith}"

[upstreams.people]
url = "http://{candidate}"

[[route]]
name = "login"
path = "/api/login"
methods = ["POST"]
auth = {{ public = true }}

# Reads of one person: the route under rollout.
[[route]]
name = "people-read"
path = "/api/people/{{id}}"
methods = ["GET"]
serve = "people"
mode = "monolith"               # the controller moves this
sticky = "header:x-user-id"     # users keep their side
fallback = true
timeout_ms = 2000
auth = {{ require = ["people:read"] }}
{people_read}

# The list: a second route a plan may move.
[[route]]
name = "people-list"
path = "/api/people"
methods = ["GET"]
serve = "people"
mode = "monolith"
sticky = "header:x-user-id"
fallback = true
timeout_ms = 2000
auth = {{ require = ["people:read"] }}
"#
    )
}

impl Chain {
    async fn start() -> Self {
        Self::start_with("").await
    }

    /// The chain with `people_read` added to the route under rollout (its `shadow`).
    async fn start_with(people_read: &str) -> Self {
        let people: Vec<(String, String)> = (0..5)
            .map(|i| (format!("p{i}@example.test"), format!("Person {i}")))
            .collect();
        let key = std::env::temp_dir().join(format!("ficus-rollout-key-{}", unique_suffix()));
        let seed: [u8; 32] = rand::random();
        let hex: String = seed.iter().map(|b| format!("{b:02x}")).collect();
        std::fs::write(&key, hex).unwrap();
        // people-read on the monolith, its service not known yet.
        let chain = PeopleChain::start(&people, |monolith| {
            routes(monolith, "127.0.0.1:9".parse().unwrap(), &key, people_read)
        })
        .await;
        let dir = chain.proxy.routes_path.parent().unwrap().to_path_buf();
        let candidate = Candidate::start(&chain.people).await;
        chain
            .proxy
            .write_routes(&routes(
                chain.monolith.addr,
                candidate.addr,
                &key,
                people_read,
            ))
            .await;
        Self {
            _monolith: chain.monolith,
            _adapter: chain.adapter,
            _people: chain.people,
            proxy: chain.proxy,
            candidate,
            token: chain.token,
            ids: chain.ids,
            dir,
            key,
        }
    }

    /// Writes `rollout.toml` beside routes.toml with a short plan for people-read.
    fn plan(&self, shadow_min_compared: u64, max_mismatch_rate: f64) -> PathBuf {
        self.plan_of(&["people-read"], shadow_min_compared, max_mismatch_rate)
    }

    /// Writes `rollout.toml` beside routes.toml with the same short plan for each of `routes`.
    fn plan_of(
        &self,
        routes: &[&str],
        shadow_min_compared: u64,
        max_mismatch_rate: f64,
    ) -> PathBuf {
        let admin = [self.proxy.admin_url("")];
        self.plan_read_from(&admin, routes, shadow_min_compared, max_mismatch_rate)
    }

    /// [`Chain::plan_of`], the proxies read at `admins` (their admin listeners).
    fn plan_read_from(
        &self,
        admins: &[String],
        routes: &[&str],
        shadow_min_compared: u64,
        max_mismatch_rate: f64,
    ) -> PathBuf {
        let source = format!("proxy_admin_urls = {admins:?}");
        self.plan_with_source(&source, routes, shadow_min_compared, max_mismatch_rate)
    }

    /// [`Chain::plan_of`], the proxies read as `source` says (a `[controller]` line naming
    /// their admin listeners or a Prometheus server).
    fn plan_with_source(
        &self,
        source: &str,
        routes: &[&str],
        shadow_min_compared: u64,
        max_mismatch_rate: f64,
    ) -> PathBuf {
        let path = self.dir.join("rollout.toml");
        let mut text = format!("[controller]\n{source}\npoll_interval_ms = 250\n");
        for route in routes {
            text.push_str(&format!(
                r#"
[[route]]
name = "{route}"
shadow = {{ min_duration_ms = 1000, min_compared = {shadow_min_compared} }}
canary = {{ percents = [20, 50], min_duration_ms = 1000, min_requests = 30 }}
gates = {{ max_mismatch_rate = {max_mismatch_rate}, max_error_rate_increase = 0.1, max_p95_ratio = 20, p95_slack_ms = 500, max_view_lag_events = 1000 }}
"#
            ));
        }
        std::fs::write(&path, text).unwrap();
        path
    }

    fn ledger(&self) -> Vec<Value> {
        match std::fs::read_to_string(self.dir.join("rollout.ledger.jsonl")) {
            Ok(text) => text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Waits for a ledger line matching `wanted`; panics with the ledger after `timeout`.
    async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        wanted: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let ledger = self.ledger();
            if let Some(line) = ledger.iter().find(|l| wanted(l)) {
                return line.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no {what} in the ledger after {timeout:?}:\n{}",
                pretty(&ledger)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn mode(&self) -> String {
        self.mode_of("people-read")
    }

    /// `route`'s step as routes.toml has it now: `shadow`, `canary 20%`, ...
    fn mode_of(&self, name: &str) -> String {
        let text = std::fs::read_to_string(&self.proxy.routes_path).unwrap();
        let file = ficus_proxy::check(&text, Path::new(".")).unwrap().file;
        let route = file.routes.iter().find(|r| r.name == name).unwrap();
        match route.percent {
            Some(p) if route.mode.as_str() == "canary" => {
                format!("canary {}%", f64::from(p.basis_points) / 100.0)
            }
            _ => route.mode.as_str().to_owned(),
        }
    }

    /// A second proxy on the same routes file, as behind a load balancer.
    async fn second_proxy(&self) -> ficus_proxy::Running {
        let listeners = ficus_proxy::Listeners {
            client: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
            admin: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        };
        ficus_proxy::start(
            &self.proxy.routes_path,
            ficus_proxy::ServerSettings::default(),
            listeners,
        )
        .unwrap()
    }

    /// Reads people-read through each proxy at `bases` (`count` each, users of their own), and
    /// waits until each proxy's admin listener at `admins` counts them compared.
    async fn read_through(&self, bases: &[String], admins: &[std::net::SocketAddr], count: u64) {
        let http = reqwest::Client::new();
        for (i, base) in bases.iter().enumerate() {
            for n in 0..count as usize {
                let id = self.ids[n % self.ids.len()];
                let response = http
                    .get(format!("{base}/api/people/{id}"))
                    .bearer_auth(&self.token)
                    .header("x-user-id", format!("user-{i}-{n}"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
                response.bytes().await.unwrap();
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut counts = Vec::new();
            for admin in admins {
                counts.push(compared(*admin).await);
            }
            if counts.iter().all(|c| *c == count) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "compared {counts:?} of {count} each"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// End users reading people through the proxy, one every `every`, until stopped.
    fn load(&self, every: Duration) -> Load {
        self.load_on(every, false)
    }

    /// [`Chain::load`]; with `lists`, every other request reads the list instead of a person.
    fn load_on(&self, every: Duration, lists: bool) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let url = self.proxy.url("");
        let token = self.token.clone();
        let ids = self.ids.clone();
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut sides: BTreeMap<u32, Vec<String>> = BTreeMap::new();
            let mut n: u64 = 0;
            while !flag.load(Ordering::Relaxed) {
                n += 1;
                // 200 users, in an order that mixes them.
                let user = (n.wrapping_mul(2_654_435_761) % 200) as u32;
                let id = ids[(n % ids.len() as u64) as usize];
                let target = if lists && n.is_multiple_of(2) {
                    "/api/people?per_page=3".to_owned()
                } else {
                    format!("/api/people/{id}")
                };
                let sent = http
                    .get(format!("{url}{target}"))
                    .bearer_auth(&token)
                    .header("x-user-id", format!("user-{user}"))
                    .send()
                    .await;
                if let Ok(response) = sent {
                    let side = response
                        .headers()
                        .get("x-ficus-side")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("?")
                        .to_owned();
                    let _ = response.bytes().await;
                    let seen = sides.entry(user).or_default();
                    if seen.last() != Some(&side) {
                        seen.push(side);
                    }
                }
                tokio::time::sleep(every).await;
            }
            (n, sides)
        });
        Load { stop, task }
    }
}

struct Load {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(u64, BTreeMap<u32, Vec<String>>)>,
}

impl Load {
    /// Stops and returns the requests sent and, per user, the sides seen in order (changes
    /// only).
    async fn stop(self) -> (u64, BTreeMap<u32, Vec<String>>) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap()
    }
}

/// `ficus rollout run` as a child process; killed when dropped.
struct RolloutProcess {
    child: Child,
    log: PathBuf,
}

impl RolloutProcess {
    fn start(plan: &Path) -> Self {
        let log = plan.with_file_name(format!(
            "rollout-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let child = Command::new(FICUS)
            .args(["rollout", "run", "--plan"])
            .arg(plan)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting ficus rollout run");
        Self { child, log }
    }

    fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for RolloutProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ficus(args: &[&str]) -> (i32, String) {
    let output = Command::new(FICUS)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("running ficus");
    (
        output.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

fn pretty(ledger: &[Value]) -> String {
    ledger
        .iter()
        .map(|l| {
            format!(
                "{} {} [{}] {} — {}",
                l["action"], l["step"], l["verdict"], l["by"], l["reason"]
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn actions(ledger: &[Value]) -> Vec<String> {
    ledger
        .iter()
        .filter(|l| l["action"] != "hold")
        .map(|l| {
            format!(
                "{} {}",
                l["action"].as_str().unwrap(),
                l["step"].as_str().unwrap()
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_read_rolls_out_from_shadow_to_extracted() {
    let chain = Chain::start().await;
    let plan = chain.plan(30, 0.1);
    let load = chain.load(Duration::from_millis(5));
    let controller = RolloutProcess::start(&plan);
    let started = Instant::now();
    chain
        .wait_for("done", Duration::from_secs(120), |l| l["action"] == "done")
        .await;
    let took = started.elapsed();
    // Every route of the plan done: the controller exits by itself, successfully.
    let mut controller = controller;
    let exited = {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = controller.child.try_wait().unwrap() {
                break Some(status);
            }
            if Instant::now() > deadline {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    assert!(
        exited.is_some_and(|s| s.success()),
        "the controller did not exit after the plan was done: {exited:?}"
    );
    // A little more load on the extracted route, then stop.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (sent, sides) = load.stop().await;
    let log = controller.stop();
    let ledger = chain.ledger();
    println!(
        "{}\n(rollout took {took:?}, {sent} requests)",
        pretty(&ledger)
    );
    assert_eq!(
        actions(&ledger),
        [
            "start shadow",
            "promote canary 20%",
            "promote canary 50%",
            "promote extracted",
            "done extracted"
        ],
        "{log}"
    );
    assert_eq!(chain.mode(), "extracted");
    // Every promotion carries its evidence and the routes.toml diff; comments kept.
    for line in ledger.iter().filter(|l| l["action"] == "promote") {
        assert_eq!(line["verdict"], "pass");
        let diff = line["diff"]
            .as_str()
            .expect("a promotion edits routes.toml");
        assert!(
            diff.contains("+mode = \"") || diff.contains("+percent = "),
            "{diff}"
        );
        assert!(
            line["inputs"]["elapsed_ms"].as_u64().unwrap() >= 1000,
            "{line}"
        );
        assert!(line["thresholds"]["confidence_percent"] == 95.0, "{line}");
        // The views gate read the real service's `/views` (through the candidate's URL).
        let views = &line["inputs"]["views"];
        assert_eq!(views["ready"], true, "{line}");
        assert_eq!(views["worst"], "people", "{line}");
        assert!(
            line["reason"].as_str().unwrap().ends_with("views ready"),
            "{line}"
        );
    }
    let first = &ledger.iter().find(|l| l["action"] == "promote").unwrap();
    assert!(
        first["inputs"]["compared"].as_u64().unwrap() >= 30,
        "{first}"
    );
    assert_eq!(first["inputs"]["mismatched"], 0, "{first}");
    let routes = std::fs::read_to_string(&chain.proxy.routes_path).unwrap();
    assert!(routes.contains("# the controller moves this"), "{routes}");
    // No user went back to the monolith once on the service.
    let back: Vec<_> = sides
        .iter()
        .filter(|(_, seen)| {
            seen.iter()
                .skip_while(|s| *s != "extracted")
                .any(|s| s == "monolith")
        })
        .collect();
    assert!(back.is_empty(), "users moved back and forth: {back:?}");
    // `ficus rollout status` says where it stands and why.
    let (code, status) = ficus(&["rollout", "status", "--plan", plan.to_str().unwrap()]);
    println!("{status}");
    assert_eq!(code, 0, "{status}");
    assert!(status.contains("step 4/4: extracted (done)"), "{status}");
    assert!(status.contains("routes.toml: extracted"), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_routes_of_one_plan_both_roll_out_from_shadow_to_extracted() {
    let chain = Chain::start().await;
    let plan = chain.plan_of(&["people-read", "people-list"], 30, 0.1);
    let load = chain.load_on(Duration::from_millis(5), true);
    let mut controller = RolloutProcess::start(&plan);
    for route in ["people-read", "people-list"] {
        chain
            .wait_for(&format!("{route} done"), Duration::from_secs(150), |l| {
                l["route"] == route && l["action"] == "done"
            })
            .await;
    }
    // Both done: the controller exits by itself.
    let deadline = Instant::now() + Duration::from_secs(10);
    let exited = loop {
        if let Some(status) = controller.child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let _ = load.stop().await;
    let log = controller.stop();
    let ledger = chain.ledger();
    println!("{}", pretty(&ledger));
    assert!(exited.is_some_and(|s| s.success()), "{exited:?}\n{log}");
    for route in ["people-read", "people-list"] {
        let own: Vec<Value> = ledger
            .iter()
            .filter(|l| l["route"] == route)
            .cloned()
            .collect();
        assert_eq!(
            actions(&own),
            [
                "start shadow",
                "promote canary 20%",
                "promote canary 50%",
                "promote extracted",
                "done extracted"
            ],
            "{route}: {log}"
        );
        assert_eq!(chain.mode_of(route), "extracted");
        // Each promotion judged on the route's own traffic.
        let first = own.iter().find(|l| l["action"] == "promote").unwrap();
        assert!(
            first["inputs"]["compared"].as_u64().unwrap() >= 30,
            "{first}"
        );
    }
    let (code, status) = ficus(&["rollout", "status", "--plan", plan.to_str().unwrap()]);
    println!("{status}");
    assert_eq!(code, 0, "{status}");
    assert_eq!(
        status.matches("step 4/4: extracted (done)").count(),
        2,
        "{status}"
    );
}

/// `people-read`'s mode in the table `proxy` has in force.
fn mode_in(proxy: &ficus_proxy::Proxy) -> String {
    let table = proxy.table();
    let route = table.file.routes.iter().find(|r| r.name == "people-read");
    route
        .map(|r| r.mode.as_str().to_owned())
        .unwrap_or_default()
}

/// The controller of `plan`, once it has started and both proxies have loaded its first step
/// (shadow).
async fn started_on_both(
    chain: &Chain,
    second: &ficus_proxy::Running,
    plan: &Path,
) -> RolloutProcess {
    let controller = RolloutProcess::start(plan);
    chain
        .wait_for("the start", Duration::from_secs(30), |l| {
            l["action"] == "start"
        })
        .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while mode_in(&chain.proxy.proxy) != "shadow" || mode_in(&second.proxy) != "shadow" {
        assert!(Instant::now() < deadline, "the proxies did not load shadow");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    controller
}

/// `ficus_shadow_compared_total` of people-read on the admin listener at `admin`.
async fn compared(admin: std::net::SocketAddr) -> u64 {
    let text = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("ficus_shadow_compared_total{route=\"people-read\"} "))
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_proxy_instances_are_read_and_summed() {
    let chain = Chain::start().await;
    let second = chain.second_proxy().await;
    let admins = [
        chain.proxy.admin_url(""),
        format!("http://{}", second.admin_addr),
    ];
    // 30 comparisons before any decision: neither instance alone will have them.
    let plan = chain.plan_read_from(&admins, &["people-read"], 30, 0.1);
    let controller = started_on_both(&chain, &second, &plan).await;
    // The step's window begins at the controller's next reading (every 250 ms).
    tokio::time::sleep(Duration::from_secs(1)).await;

    // 20 reads through each proxy, then nothing.
    let (a, b) = (20, 20);
    chain
        .read_through(
            &[chain.proxy.url(""), format!("http://{}", second.addr)],
            &[chain.proxy.admin_addr, second.admin_addr],
            20,
        )
        .await;
    let promoted = chain
        .wait_for(
            "a promotion on both instances' sum",
            Duration::from_secs(15),
            |l| l["action"] == "promote",
        )
        .await;
    let log = controller.stop();
    println!("{}", pretty(&chain.ledger()));
    assert_eq!(promoted["step"], "canary 20%", "{log}");
    // Each instance compared at most 20: a window of 30 or more is their sum (read at any
    // moment after the minimum was reached, so not necessarily all 40).
    let summed = promoted["inputs"]["compared"].as_u64().unwrap();
    assert!(
        (30..=a + b).contains(&summed) && summed > a.max(b),
        "{summed} compared of {a} + {b}: {promoted}"
    );
    assert_eq!(promoted["inputs"]["mismatched"], 0, "{promoted}");
    assert_eq!(promoted["inputs"]["candidate_failures"], 0, "{promoted}");
    // Both instances follow the controller's edit.
    let deadline = Instant::now() + Duration::from_secs(10);
    while mode_in(&second.proxy) != "canary" {
        assert!(
            Instant::now() < deadline,
            "the second proxy did not load the canary"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    second.stop().await;
}

/// The window of people-read as `source` reads it now (counts since the proxies started).
async fn window_of(source: &Source) -> Window {
    read_counters(&reqwest::Client::new(), source, Duration::from_secs(5))
        .await
        .unwrap()
        .window("people-read")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_proxy_instances_are_read_through_a_real_prometheus_and_summed() {
    let chain = Chain::start().await;
    let second = chain.second_proxy().await;
    let admins = [chain.proxy.admin_addr, second.admin_addr];
    let prometheus = TestPrometheus::start(&admins.map(|a| a.to_string())).await;
    let plan = chain.plan_with_source(
        &format!("prometheus_url = {:?}", prometheus.url),
        &["people-read"],
        30,
        0.1,
    );
    let controller = started_on_both(&chain, &second, &plan).await;
    // The step's window begins at a reading of the federated counters: a scrape (1 s) and a
    // poll (250 ms) later, the base is what the proxies counted before this traffic.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    chain
        .read_through(
            &[chain.proxy.url(""), format!("http://{}", second.addr)],
            &admins,
            20,
        )
        .await;

    // Within a few scrapes, Prometheus' federated series sum to what the two admin listeners
    // count: answers per side and status, comparisons, duration buckets.
    let admin = Source::Admin(admins.map(|a| format!("http://{a}")).to_vec());
    let federated = Source::Prometheus(prometheus.url.clone());
    let expected = window_of(&admin).await;
    assert_eq!(expected.sides[0].answers, 40, "{expected:?}");
    assert_eq!(expected.compared, 40, "{expected:?}");
    assert!(
        expected.sides[0]
            .duration_buckets
            .last()
            .is_some_and(|(le, n)| le.is_infinite() && *n == 40.0),
        "{expected:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = window_of(&federated).await;
        if seen == expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus' federated window {seen:?}\n is not the admin listeners' {expected:?}\n{}",
            prometheus.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // The controller, reading only Prometheus, promotes on the two instances' sum.
    let promoted = chain
        .wait_for(
            "a promotion on the federated sum",
            Duration::from_secs(15),
            |l| l["action"] == "promote",
        )
        .await;
    let log = controller.stop();
    println!("{}", pretty(&chain.ledger()));
    assert_eq!(promoted["step"], "canary 20%", "{log}");
    let summed = promoted["inputs"]["compared"].as_u64().unwrap();
    assert!((30..=40).contains(&summed), "{summed} compared: {promoted}");
    assert_eq!(promoted["inputs"]["mismatched"], 0, "{promoted}");
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_mismatching_in_one_field_holds_at_shadow() {
    let chain = Chain::start().await;
    chain.candidate.set(MISMATCH);
    let plan = chain.plan(30, 0.1);
    let load = chain.load(Duration::from_millis(5));
    let controller = RolloutProcess::start(&plan);
    let failed = chain
        .wait_for("a failing hold", Duration::from_secs(60), |l| {
            l["action"] == "hold" && l["verdict"] == "fail"
        })
        .await;
    // Keep it under load a while: it never moves.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_sent, sides) = load.stop().await;
    let log = controller.stop();
    let ledger = chain.ledger();
    println!("{}", pretty(&ledger));
    assert_eq!(actions(&ledger), ["start shadow"], "{log}");
    assert_eq!(chain.mode(), "shadow");
    assert_eq!(failed["step"], "shadow");
    let reason = failed["reason"].as_str().unwrap();
    assert!(reason.contains("mismatch rate 100.0%"), "{reason}");
    assert!(reason.contains("over the 10.0% ceiling"), "{reason}");
    let inputs = &failed["inputs"];
    assert!(inputs["mismatched"].as_u64().unwrap() > 0, "{failed}");
    assert!(
        inputs["mismatched"].as_u64().unwrap() + inputs["candidate_failures"].as_u64().unwrap()
            >= 30,
        "{failed}"
    );
    // Holds are written when their kind changes, not every round.
    let holds = ledger.iter().filter(|l| l["action"] == "hold").count();
    assert!(holds <= 3, "{holds} holds:\n{}", pretty(&ledger));
    // Shadow: every user was served by the monolith.
    assert!(
        sides.values().all(|s| s == &["monolith".to_owned()]),
        "{sides:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_failing_in_the_canary_rolls_back_and_stays_paused_until_resumed() {
    let chain = Chain::start().await;
    let plan = chain.plan(30, 0.1);
    let load = chain.load(Duration::from_millis(5));
    let controller = RolloutProcess::start(&plan);
    chain
        .wait_for("the canary", Duration::from_secs(120), |l| {
            l["action"] == "promote" && l["step"] == "canary 20%"
        })
        .await;
    // The service starts failing.
    chain.candidate.set(FAILING);
    let rollback = chain
        .wait_for("a rollback", Duration::from_secs(60), |l| {
            l["action"] == "rollback"
        })
        .await;
    assert_eq!(chain.mode(), "shadow");
    assert_eq!(rollback["step"], "shadow");
    assert_eq!(rollback["verdict"], "fail");
    assert_eq!(rollback["paused"], true);
    let reason = rollback["reason"].as_str().unwrap();
    assert!(reason.starts_with("canary 20% failed: "), "{reason}");
    assert!(reason.contains("extracted error rate"), "{reason}");
    let diff = rollback["diff"].as_str().unwrap();
    assert!(
        diff.contains("-mode = \"canary\"") && diff.contains("+mode = \"shadow\""),
        "{diff}"
    );
    assert!(
        rollback["inputs"]["extracted"]["failed_attempts"]
            .as_u64()
            .unwrap()
            + rollback["inputs"]["extracted"]["errors_5xx"]
                .as_u64()
                .unwrap()
            > 0,
        "{rollback}"
    );
    let log = controller.stop();
    println!("{log}");

    // The service is fixed; a restarted controller keeps the pause.
    chain.candidate.set(FAITHFUL);
    let controller = RolloutProcess::start(&plan);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ledger = chain.ledger();
    assert_eq!(
        ledger.last().unwrap()["action"],
        "rollback",
        "{}",
        pretty(&ledger)
    );
    assert_eq!(chain.mode(), "shadow");
    let (_, status) = ficus(&["rollout", "status", "--plan", plan.to_str().unwrap()]);
    assert!(status.contains("shadow (paused)"), "{status}");
    assert!(status.contains("rollback (fail)"), "{status}");

    // A person resumes: the controller moves on again, on a fresh window.
    let (code, out) = ficus(&[
        "rollout",
        "resume",
        "people-read",
        "--plan",
        plan.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}");
    let resumed_at = chain.ledger().len();
    chain
        .wait_for(
            "a promotion after the resume",
            Duration::from_secs(60),
            |l| {
                l["action"] == "promote" && l["ts"].as_str() > ledger.last().unwrap()["ts"].as_str()
            },
        )
        .await;

    // A person pauses it in the canary: it stays where it is under load, past the step's
    // minimum duration and sample.
    let (code, out) = ficus(&[
        "rollout",
        "pause",
        "people-read",
        "--plan",
        plan.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}");
    // The controller reads the ledger every poll (250 ms).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (paused_mode, paused_at) = (chain.mode(), chain.ledger().len());
    tokio::time::sleep(Duration::from_secs(4)).await;
    let _ = load.stop().await;
    let log = controller.stop();
    let ledger = chain.ledger();
    println!("{}", pretty(&ledger));
    assert_eq!(ledger[resumed_at - 1]["action"], "resume", "{log}");
    assert_eq!(
        ledger[resumed_at - 1]["by"]
            .as_str()
            .map(|b| b != "controller"),
        Some(true)
    );
    let pause = ledger
        .iter()
        .rposition(|l| l["action"] == "pause")
        .unwrap_or_else(|| panic!("no pause in the ledger:\n{}", pretty(&ledger)));
    assert!(pause < paused_at, "{}", pretty(&ledger));
    assert!(
        ledger[pause + 1..].iter().all(|l| l["action"] == "hold"),
        "the controller moved a paused route:\n{}",
        pretty(&ledger)
    );
    assert_eq!(chain.mode(), paused_mode, "{log}");
    assert_ne!(
        paused_mode, "shadow",
        "the pause was meant to be in the canary"
    );
    let (_, status) = ficus(&["rollout", "status", "--plan", plan.to_str().unwrap()]);
    assert!(status.contains("(paused)"), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_that_keeps_comparing_rolls_back_on_its_own_mismatches() {
    // The route keeps comparing in its canary steps (`shadow.in_canary`): the candidate that
    // starts answering one field differently there, without a single error, is rolled back
    // on the canary's own comparisons.
    let chain = Chain::start_with("shadow = { in_canary = true }").await;
    let plan = chain.plan(30, 0.1);
    let load = chain.load(Duration::from_millis(5));
    let controller = RolloutProcess::start(&plan);
    chain
        .wait_for("the canary", Duration::from_secs(120), |l| {
            l["action"] == "promote" && l["step"] == "canary 20%"
        })
        .await;
    chain.candidate.set(MISMATCH);
    let rollback = chain
        .wait_for("a rollback", Duration::from_secs(60), |l| {
            l["action"] == "rollback"
        })
        .await;
    let _ = load.stop().await;
    let log = controller.stop();
    println!("{}", pretty(&chain.ledger()));
    assert_eq!(chain.mode(), "shadow", "{log}");
    assert_eq!(rollback["verdict"], "fail");
    let reason = rollback["reason"].as_str().unwrap();
    assert!(reason.starts_with("canary 20% failed: "), "{reason}");
    assert!(reason.contains("mismatch rate"), "{reason}");
    assert!(
        !reason.contains("error rate"),
        "no error, only mismatches: {reason}"
    );
    assert!(
        rollback["inputs"]["mismatched"].as_u64().unwrap() >= 1,
        "{rollback}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_low_traffic_route_never_promotes_on_too_few_samples() {
    let chain = Chain::start().await;
    // A 5 % ceiling needs 52 clean comparisons at 95 %; the route sees a few per second.
    let plan = chain.plan(10, 0.05);
    let load = chain.load(Duration::from_millis(300));
    let controller = RolloutProcess::start(&plan);
    tokio::time::sleep(Duration::from_secs(8)).await;
    let (sent, _) = load.stop().await;
    let log = controller.stop();
    let ledger = chain.ledger();
    println!("{}\n({sent} requests)", pretty(&ledger));
    assert!(sent < 40, "the load was meant to be low: {sent}");
    assert_eq!(actions(&ledger), ["start shadow"], "{log}");
    assert_eq!(chain.mode(), "shadow");
    let holds: Vec<&Value> = ledger.iter().filter(|l| l["action"] == "hold").collect();
    assert!(
        holds.iter().all(|l| l["verdict"] == "inconclusive"),
        "{}",
        pretty(&ledger)
    );
    assert!(
        holds
            .iter()
            .any(|l| l["reason"].as_str().unwrap().starts_with("too few samples")),
        "{}",
        pretty(&ledger)
    );
    // Past the minimum sample, the bound itself says "not yet".
    let bound = holds
        .iter()
        .find(|l| {
            l["reason"]
                .as_str()
                .unwrap()
                .starts_with("inconclusive: mismatch rate ")
        })
        .unwrap_or_else(|| panic!("{}", pretty(&ledger)));
    assert!(
        bound["inputs"]["mismatch_rate_high"].as_f64().unwrap() > 0.05,
        "{bound}"
    );
    assert!(
        bound["inputs"]["compared"].as_u64().unwrap() >= 10,
        "{bound}"
    );
}
