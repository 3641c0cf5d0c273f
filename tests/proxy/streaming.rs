//! Bodies stream through the proxy in both directions. The proxy runs as its own process
//! (`ficus proxy`), so its memory is measured apart from the test process, where the client,
//! the upstreams and every test running in parallel allocate too.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use ficus_testkit::TestUpstream;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

const FICUS: &str = env!("CARGO_BIN_EXE_ficus");

/// Four times the proxy's default body limit, and far more than any buffer it has.
const SIZE: u64 = 256 * 1024 * 1024;
/// How much the proxy's peak resident memory may grow while one body passes: connection and
/// socket buffers, allocator slack; an eighth of the body.
const ALLOWED_GROWTH: u64 = SIZE / 8;

fn generated() -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    const PIECE: u64 = 64 * 1024;
    futures_util::stream::iter(
        (0..SIZE / PIECE).map(|i| Ok(Bytes::from(vec![(i % 253) as u8; PIECE as usize]))),
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `ficus proxy` as a child process over a routes file in a temporary directory.
struct ProxyProcess {
    child: tokio::process::Child,
    port: u16,
    dir: PathBuf,
}

impl ProxyProcess {
    async fn start(routes: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("ficus-stream-{}", ficus_testkit::unique_suffix()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("routes.toml");
        std::fs::write(&path, routes).unwrap();
        let (port, admin_port) = (free_port(), free_port());
        let child = tokio::process::Command::new(FICUS)
            .args(["proxy", "--routes"])
            .arg(&path)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--admin-listen", &format!("127.0.0.1:{admin_port}")])
            .args(["--workers", "2"])
            .env("FICUS_PROXY__HTTP1", crate::HTTP1.as_str())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("starting ficus proxy");
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = http
                .get(format!("http://127.0.0.1:{admin_port}/readyz"))
                .send()
                .await
                && r.status() == 200
            {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "ficus proxy did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self { child, port, dir }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// A line of the proxy's `/proc/<pid>/status`, in bytes (`VmHWM`: peak resident memory).
    fn status_bytes(&self, field: &str) -> u64 {
        let pid = self.child.id().expect("the proxy runs");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status
            .lines()
            .find(|l| l.starts_with(field))
            .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"));
        let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kb * 1024
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn mib(bytes: u64) -> u64 {
    bytes / 1024 / 1024
}

#[tokio::test]
async fn bodies_far_larger_than_any_buffer_stream_both_ways_in_bounded_memory() {
    let monolith = TestUpstream::start("monolith").await;
    let proxy = ProxyProcess::start(&format!(
        "[proxy]\ndefault = \"monolith\"\nmax_body_bytes = {}\n[upstreams.monolith]\nurl = \"{}\"\n",
        2 * SIZE,
        monolith.url()
    ))
    .await;
    let http = reqwest::Client::new();

    // Warm up both directions (pools, buffers, allocator arenas) before the baseline.
    let warm = http
        .post(proxy.url("/warm"))
        .body(vec![7u8; 4 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(warm.status(), 200);
    let warm = http
        .get(proxy.url(&format!("/warm?bytes={}", 4 * 1024 * 1024)))
        .send()
        .await
        .unwrap();
    assert_eq!(warm.bytes().await.unwrap().len(), 4 * 1024 * 1024);
    let baseline = proxy.status_bytes("VmHWM:");

    // Upload: the upstream hashes what arrives, so the whole body went through.
    let mut expected = Sha256::new();
    let mut stream = Box::pin(generated());
    while let Some(piece) = stream.next().await {
        expected.update(piece.unwrap());
    }
    let expected: String = expected
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let response = http
        .post(proxy.url("/api/documents"))
        .body(reqwest::Body::wrap_stream(generated()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let echo: serde_json::Value = response.json().await.unwrap();
    assert_eq!(echo["body_bytes"], SIZE);
    assert_eq!(echo["body_sha256"], expected.as_str());
    let after_upload = proxy.status_bytes("VmHWM:");
    assert!(
        after_upload.saturating_sub(baseline) < ALLOWED_GROWTH,
        "uploading {} MiB grew the proxy's peak memory from {} MiB to {} MiB",
        mib(SIZE),
        mib(baseline),
        mib(after_upload)
    );

    // Download.
    let response = http
        .get(proxy.url(&format!("/download?bytes={SIZE}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut received = 0u64;
    let mut body = response.bytes_stream();
    while let Some(piece) = body.next().await {
        received += piece.unwrap().len() as u64;
    }
    assert_eq!(received, SIZE);
    let after_download = proxy.status_bytes("VmHWM:");
    assert!(
        after_download.saturating_sub(baseline) < ALLOWED_GROWTH,
        "downloading {} MiB grew the proxy's peak memory from {} MiB to {} MiB",
        mib(SIZE),
        mib(baseline),
        mib(after_download)
    );
}
