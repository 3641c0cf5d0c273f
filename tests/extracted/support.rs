//! What the services' tests share: the service binaries (built once per test run with the
//! workspace's cargo, so they are never stale), a service process on `127.0.0.1:0`, the
//! proxy's routes file for the chain, and the people chain started whole ([`PeopleChain`]).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ficus_testkit::{TestAdapter, TestMonolith, TestProxy, kafka};

/// The directory of the binaries cargo builds for this test run (`target/debug` or
/// `target/release`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's path");
    // target/debug/deps/extracted-<hash>
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps")
        .to_path_buf()
}

/// The path of a service binary, built (once per process) by the cargo running this test.
pub fn binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let target_dir = profile_dir()
            .parent()
            .expect("the target directory")
            .to_path_buf();
        let mut cargo = Command::new(env!("CARGO"));
        // The compiler beside that cargo, named outright. Run outside cargo (scripts/test runs
        // the test binaries itself), a bare `rustc` would be rustup's proxy, which follows the
        // rust-toolchain.toml of a dependency being compiled (sqlx asks for 1.78) and fails
        // where that toolchain is not installed.
        let rustc = Path::new(env!("CARGO")).with_file_name("rustc");
        if std::env::var_os("RUSTC").is_none() && rustc.is_file() {
            cargo.env("RUSTC", rustc);
        }
        cargo.args([
            "build",
            "--quiet",
            "-p",
            "ficus-people",
            "-p",
            "ficus-tasks",
        ]);
        // A release test run (the lag benchmark) runs release services.
        if profile_dir().ends_with("release") {
            cargo.arg("--release");
        }
        let status = cargo
            .arg("--manifest-path")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
            .env("CARGO_TARGET_DIR", target_dir)
            .status()
            .expect("running cargo build for the service binaries");
        assert!(status.success(), "building the service binaries failed");
    });
    profile_dir().join(name)
}

/// A service binary running as a child process. Dropping it kills it.
pub struct ServiceProcess {
    pub name: &'static str,
    pub addr: SocketAddr,
    child: Child,
}

/// How a service is started.
#[derive(Clone)]
pub struct ServiceConfig {
    pub store: String,
    pub topic_prefix: String,
    pub jwks_url: String,
    pub batch_max_events: usize,
    /// `bootstrap.servers`: the shared test broker ([`kafka::brokers`]) or a private one.
    pub brokers: String,
}

/// `ficus-<name>` with the settings of `config` in its environment.
fn command(name: &str, config: &ServiceConfig) -> Command {
    let section = name.to_ascii_uppercase();
    let var = |key: &str| format!("FICUS_{section}__{key}");
    let mut command = Command::new(binary(&format!("ficus-{name}")));
    command
        .env(var("LISTEN"), "127.0.0.1:0")
        .env(var("STORE"), &config.store)
        .env(var("TOPIC_PREFIX"), &config.topic_prefix)
        .env(var("KAFKA__BROKERS"), &config.brokers)
        .env(var("IDENTITY__JWKS_URL"), &config.jwks_url)
        .env(
            var("VIEWS__BATCH_MAX_EVENTS"),
            config.batch_max_events.to_string(),
        )
        .env(var("VIEWS__WATERMARK_INTERVAL_MS"), "100")
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".to_owned()),
        );
    command
}

/// Runs `ficus-<name> rebuild` to its end; panics unless it succeeds.
pub fn rebuild(name: &str, config: &ServiceConfig) -> String {
    let output = command(name, config)
        .arg("rebuild")
        .output()
        .unwrap_or_else(|e| panic!("running ficus-{name} rebuild: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "ficus-{name} rebuild failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

impl ServiceProcess {
    /// Starts `ficus-<name>` listening on port 0, and waits for the address it prints.
    pub fn start(name: &'static str, config: &ServiceConfig) -> Self {
        let mut child = command(name, config)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting ficus-{name}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("reading the service's stdout");
        let addr = line
            .trim()
            .rsplit(' ')
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("ficus-{name} did not print its address: {line:?}"));
        Self { name, addr, child }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// SIGKILL: no shutdown, no last batch, as a crash.
    pub fn kill9(mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reaping the service");
    }

    /// `/readyz`'s status.
    pub async fn ready(&self) -> bool {
        match reqwest::get(self.url("/readyz")).await {
            Ok(response) => response.status() == 200,
            Err(_) => false,
        }
    }

    /// Waits until `/readyz` answers 200; panics after `timeout`.
    pub async fn wait_ready(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.ready().await {
            assert!(
                Instant::now() < deadline,
                "ficus-{} not ready within {timeout:?}: {}",
                self.name,
                reqwest::get(self.url("/readyz"))
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// One series of `/metrics` (name and labels as printed), 0 when absent.
    pub async fn metric(&self, series: &str) -> f64 {
        let text = reqwest::get(self.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|line| {
                line.strip_prefix(series)?
                    .strip_prefix(' ')?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap_or(0.0)
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The proxy's routes file for the chain: the monolith by default, the people and tasks read
/// routes in `mode` on their services, the monolith's own keys at the edge, the identity
/// forwarded to the services as an internal token.
pub fn routes(monolith: SocketAddr, people: &str, tasks: &str, mode: &str) -> String {
    format!(
        r#"
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

[upstreams.monolith]
url = "http://{monolith}"

[upstreams.people]
url = "{people}"

[upstreams.tasks]
url = "{tasks}"

[[route]]
name = "login"
path = "/api/login"
methods = ["POST"]
auth = {{ public = true }}

[[route]]
name = "people-list"
path = "/api/people"
methods = ["GET"]
serve = "people"
mode = "{mode}"
auth = {{ require = ["people:read"] }}

[[route]]
name = "people-read"
path = "/api/people/{{id}}"
methods = ["GET"]
serve = "people"
mode = "{mode}"
auth = {{ require = ["people:read"] }}

[[route]]
name = "tasks-list"
path = "/api/tasks"
methods = ["GET"]
serve = "tasks"
mode = "{mode}"
auth = {{ require = ["tasks:read"] }}

[[route]]
name = "tasks-read"
path = "/api/tasks/{{id}}"
methods = ["GET"]
serve = "tasks"
mode = "{mode}"
auth = {{ require = ["tasks:read"] }}
"#
    )
}

/// The people chain, started in its order: the monolith with some people, the adapter
/// streaming `public.people` (its snapshot done), the proxy, and `ficus-people` keeping its
/// view from the adapter's topic (its store beside the proxy's routes file) and verifying
/// identities with the proxy's keys, ready.
pub struct PeopleChain {
    pub monolith: TestMonolith,
    /// The monolith's admin token (reads people).
    pub token: String,
    /// The ids of the people created, in order.
    pub ids: Vec<i64>,
    pub adapter: TestAdapter,
    pub proxy: TestProxy,
    pub people: ServiceProcess,
}

impl PeopleChain {
    /// Creates `people` (`(email, display name)`) in the monolith and starts the chain; the
    /// proxy starts on `routes(monolith)` (the service is not up yet: its routes come after).
    pub async fn start(
        people: &[(impl AsRef<str>, impl AsRef<str>)],
        routes: impl FnOnce(SocketAddr) -> String,
    ) -> Self {
        Self::start_on(&kafka::brokers(), people, routes).await
    }

    /// [`PeopleChain::start`] with the adapter and the service on `brokers` (a
    /// [`ficus_testkit::PrivateBroker`] for an outage test).
    pub async fn start_on(
        brokers: &str,
        people: &[(impl AsRef<str>, impl AsRef<str>)],
        routes: impl FnOnce(SocketAddr) -> String,
    ) -> Self {
        let monolith = TestMonolith::start().await;
        let token = monolith.admin_token().await;
        let mut ids = Vec::new();
        for (email, name) in people {
            let person = monolith
                .create_person(&token, email.as_ref(), name.as_ref(), None)
                .await;
            ids.push(person["id"].as_i64().expect("a person's id"));
        }
        let mut settings = ficus_testkit::SERVICE_FORM.to_vec();
        settings.push(("KAFKA__BROKERS", brokers));
        let adapter =
            TestAdapter::start_with(&monolith.db.url, &["public.people"], 1, &settings).await;
        adapter
            .wait_snapshot_complete(Duration::from_secs(180))
            .await;
        // The proxy before the service: the service verifies identities with the proxy's keys.
        let proxy = TestProxy::start(&routes(monolith.addr)).await;
        let dir = proxy
            .routes_path
            .parent()
            .expect("the routes file's directory");
        let people = ServiceProcess::start(
            "people",
            &ServiceConfig {
                store: dir.join("people.db").display().to_string(),
                topic_prefix: adapter.prefix.clone(),
                jwks_url: proxy.admin_url("/.well-known/jwks.json"),
                batch_max_events: 1000,
                brokers: brokers.to_owned(),
            },
        );
        people.wait_ready(Duration::from_secs(60)).await;
        Self {
            monolith,
            token,
            ids,
            adapter,
            proxy,
            people,
        }
    }
}

/// The people service's read targets a parity or shadow test sends: each person by id, then the
/// list with its pagination and filters, and the misses (an unknown id, a malformed one).
pub fn people_reads(ids: &[i64]) -> Vec<String> {
    let mut targets: Vec<String> = ids.iter().map(|id| format!("/api/people/{id}")).collect();
    targets.extend(
        [
            "/api/people",
            "/api/people?per_page=2",
            "/api/people?page=2&per_page=2",
            "/api/people?email=bob@example.test",
            "/api/people?page=0",
            "/api/people/999999",
            "/api/people/abc",
        ]
        .map(str::to_owned),
    );
    targets
}

/// Percentile `p` (0..=100) of sorted durations.
pub fn percentile(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (sorted.len() * p).div_ceil(100).max(1) - 1;
    sorted[rank.min(sorted.len() - 1)]
}
