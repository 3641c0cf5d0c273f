use bytes::Bytes;
use ficus_testkit::TestProxy;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use crate::{routes_file, upstreams};

const SIZE: u64 = 50 * 1024 * 1024;

fn generated() -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    const PIECE: u64 = 64 * 1024;
    futures_util::stream::iter(
        (0..SIZE / PIECE).map(|i| Ok(Bytes::from(vec![(i % 253) as u8; PIECE as usize]))),
    )
}

/// Peak resident memory of this process, in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

#[tokio::test]
async fn fifty_megabytes_stream_both_ways_with_bounded_memory() {
    let (monolith, people) = upstreams().await;
    let proxy = TestProxy::start(&routes_file(&monolith.url(), &people.url(), "")).await;
    let http = reqwest::Client::new();
    let before = peak_rss();

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

    // Neither body was held whole anywhere in this process (proxy, upstream or client).
    let grown = peak_rss().saturating_sub(before);
    assert!(
        grown < 40 * 1024 * 1024,
        "peak memory grew by {} MiB",
        grown / 1024 / 1024
    );
}
