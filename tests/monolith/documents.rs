use bytes::Bytes;
use ficus_testkit::TestMonolith;
use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::expect_error;

const MIB: u64 = 1024 * 1024;

/// A deterministic body of `len` bytes, produced in 64 KiB pieces (never held whole).
fn generated(len: u64) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    const PIECE: u64 = 64 * 1024;
    futures_util::stream::iter((0..len.div_ceil(PIECE)).map(move |i| {
        let size = PIECE.min(len - i * PIECE) as usize;
        let piece: Vec<u8> = (0..size)
            .map(|j| ((i as usize * 31 + j * 7) % 251) as u8)
            .collect();
        Ok(Bytes::from(piece))
    }))
}

async fn sha256_of_stream(
    stream: impl futures_util::Stream<Item = Result<Bytes, impl std::fmt::Debug>>,
) -> (String, u64) {
    let mut hasher = Sha256::new();
    let mut len = 0;
    futures_util::pin_mut!(stream);
    while let Some(piece) = stream.next().await {
        let piece = piece.expect("a body piece");
        len += piece.len() as u64;
        hasher.update(&piece);
    }
    let hex = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    (hex, len)
}

#[tokio::test]
async fn a_50_mb_document_streams_up_and_down_intact() {
    let m = TestMonolith::start().await;
    let token = m.admin_token().await;
    let size = 50 * MIB;
    let (expected_sha, _) = sha256_of_stream(generated(size)).await;

    // Chunked upload: the client never holds the body, nor declares its length.
    let response = m
        .http()
        .post(m.url("/api/documents?name=big%20scan.pdf"))
        .bearer_auth(&token)
        .header("content-type", "application/pdf")
        .body(reqwest::Body::wrap_stream(generated(size)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let document: Value = response.json().await.unwrap();
    assert_eq!(document["name"], "big scan.pdf");
    assert_eq!(document["content_type"], "application/pdf");
    assert_eq!(document["size_bytes"], size);
    assert_eq!(document["sha256"], expected_sha.as_str());

    let path = format!("/api/documents/{}", document["id"].as_str().unwrap());
    let response = m
        .http()
        .get(m.url(&path))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/pdf");
    assert_eq!(
        response.headers()["content-length"],
        size.to_string().as_str()
    );
    assert!(
        response.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("big scan.pdf")
    );
    let etag = response.headers()["etag"].to_str().unwrap().to_owned();
    let (downloaded_sha, downloaded_len) = sha256_of_stream(response.bytes_stream()).await;
    assert_eq!(downloaded_len, size);
    assert_eq!(downloaded_sha, expected_sha);

    let cached = m
        .http()
        .get(m.url(&path))
        .bearer_auth(&token)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(cached.status(), StatusCode::NOT_MODIFIED);
}

#[tokio::test]
async fn documents_list_metadata_and_delete() {
    let m = TestMonolith::start().await;
    let token = m.admin_token().await;
    let mut ids = Vec::new();
    for (name, content_type, body) in [
        ("a.txt", Some("text/plain; charset=utf-8"), "hello"),
        ("b.bin", None, ""),
    ] {
        let mut request = m
            .http()
            .post(m.url(&format!("/api/documents?name={name}")))
            .bearer_auth(&token)
            .body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let document: Value = response.json().await.unwrap();
        assert_eq!(document["size_bytes"], body.len());
        ids.push(document["id"].as_str().unwrap().to_owned());
    }
    let list: Value = m
        .http()
        .get(m.url("/api/documents"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["total"], 2);
    assert_eq!(list["items"][1]["content_type"], "application/octet-stream");

    let meta: Value = m
        .http()
        .get(m.url(&format!("/api/documents/{}/metadata", ids[0])))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(meta["content_type"], "text/plain; charset=utf-8");
    let body = m
        .http()
        .get(m.url(&format!("/api/documents/{}", ids[0])))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(body.headers()["content-type"], "text/plain; charset=utf-8");
    assert_eq!(body.text().await.unwrap(), "hello");
    let empty = m
        .http()
        .get(m.url(&format!("/api/documents/{}", ids[1])))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(empty.status(), StatusCode::OK);
    assert_eq!(empty.bytes().await.unwrap().len(), 0);

    let deleted = m
        .http()
        .delete(m.url(&format!("/api/documents/{}", ids[0])))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let (chunks,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM document_chunks WHERE document_id = $1::uuid")
            .bind(&ids[0])
            .fetch_one(&m.db.pool)
            .await
            .unwrap();
    assert_eq!(chunks, 0, "the chunks go with the document");
    for path in [
        format!("/api/documents/{}", ids[0]),
        format!("/api/documents/{}/metadata", ids[0]),
    ] {
        let response = m
            .http()
            .get(m.url(&path))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        expect_error(response, StatusCode::NOT_FOUND, "not_found").await;
    }
    let response = m
        .http()
        .get(m.url("/api/documents/not-a-uuid"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let error = expect_error(response, StatusCode::BAD_REQUEST, "invalid_path").await;
    assert!(error["message"].as_str().unwrap().contains("UUID"));
}

#[tokio::test]
async fn oversize_and_malformed_uploads_are_refused_and_leave_nothing() {
    let m = TestMonolith::start_with(ficus_monolith::MonolithConfig {
        max_document_bytes: MIB,
        ..Default::default()
    })
    .await;
    let token = m.admin_token().await;

    // Declared too large: refused before a byte is read.
    let response = m
        .http()
        .post(m.url("/api/documents?name=big"))
        .bearer_auth(&token)
        .body(vec![0u8; (MIB + 1) as usize])
        .send()
        .await
        .unwrap();
    let error = expect_error(response, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    assert!(error["message"].as_str().unwrap().contains("1048576"));

    // Undeclared and too large: refused once the limit is crossed, mid-stream.
    let response = m
        .http()
        .post(m.url("/api/documents?name=sneaky"))
        .bearer_auth(&token)
        .body(reqwest::Body::wrap_stream(generated(3 * MIB)))
        .send()
        .await;
    if let Ok(response) = response {
        // The server may also cut the connection while the client is still sending.
        expect_error(response, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    }

    let response = m
        .http()
        .post(m.url("/api/documents?name=x"))
        .bearer_auth(&token)
        .header("content-type", "not a media type")
        .body("x")
        .send()
        .await
        .unwrap();
    expect_error(
        response,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    let response = m
        .http()
        .post(m.url("/api/documents?name=a/b"))
        .bearer_auth(&token)
        .body("x")
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::BAD_REQUEST, "invalid_query").await;

    let (documents, chunks): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM documents), (SELECT count(*) FROM document_chunks)",
    )
    .fetch_one(&m.db.pool)
    .await
    .unwrap();
    assert_eq!((documents, chunks), (0, 0), "refused uploads leave nothing");

    // Exactly at the limit is fine.
    let response = m
        .http()
        .post(m.url("/api/documents?name=edge"))
        .bearer_auth(&token)
        .body(reqwest::Body::wrap_stream(generated(MIB)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
}
