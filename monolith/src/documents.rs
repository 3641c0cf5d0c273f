//! Documents: binary uploads up to a limit (50 MB by default), streamed both ways.
//!
//! `POST /api/documents?name=` takes the raw body with its `Content-Type`; the body is written
//! in chunks of [`CHUNK_BYTES`] to `document_chunks` inside one transaction as it arrives, so
//! memory stays bounded and an upload that breaks or grows past the limit leaves nothing behind.
//! `GET /api/documents/{id}` streams the chunks back one query at a time.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{PathParam, Query};
use crate::http::{Page, PageParams, created, json_with_etag, not_modified};

/// Size of one stored chunk.
pub const CHUNK_BYTES: usize = 256 * 1024;

/// A document's metadata.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct Document {
    pub id: Uuid,
    pub name: String,
    pub content_type: String,
    pub size_bytes: i64,
    pub sha256: String,
    pub owner_id: Option<i64>,
    pub created_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, name, content_type, size_bytes, sha256, owner_id, created_at";

#[derive(Deserialize)]
pub(crate) struct UploadQuery {
    name: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct ListQuery {
    page: Option<u32>,
    per_page: Option<u32>,
}

fn valid_name(raw: Option<String>) -> ApiResult<String> {
    let name = raw.unwrap_or_else(|| "untitled".to_owned());
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 255 || name.contains(['/', '\\', '\0']) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "name: must be 1 to 255 characters without path separators",
        ));
    }
    Ok(name.to_owned())
}

fn content_type(headers: &HeaderMap) -> ApiResult<String> {
    match headers.get(header::CONTENT_TYPE) {
        None => Ok("application/octet-stream".to_owned()),
        Some(value) => {
            let text = value
                .to_str()
                .map_err(|_| ApiError::unsupported_media_type("content-type is not valid ASCII"))?;
            let essence = text.split(';').next().unwrap_or_default().trim();
            let valid = essence.split_once('/').is_some_and(|(kind, sub)| {
                !kind.is_empty() && !sub.is_empty() && !sub.contains('/')
            });
            if !valid || text.len() > 255 {
                return Err(ApiError::unsupported_media_type(format!(
                    "content-type `{text}` is not a media type"
                )));
            }
            Ok(text.trim().to_owned())
        }
    }
}

/// `POST /api/documents?name=`: the body is the document.
pub(crate) async fn upload(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Query(query): Query<UploadQuery>,
    body: Body,
) -> ApiResult<Response> {
    caller.require("documents:write")?;
    let name = valid_name(query.name)?;
    let content_type = content_type(&headers)?;
    let limit = state.config.max_document_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(ApiError::payload_too_large(limit));
    }

    let id = Uuid::new_v4();
    let db_err = |context| move |e| ApiError::from_db(context, e);
    // Dropping `tx` on any early return rolls the whole upload back.
    let mut tx = state.db.begin().await.map_err(db_err("begin upload"))?;
    sqlx::query(
        "INSERT INTO documents (id, name, content_type, size_bytes, sha256, owner_id) \
         VALUES ($1, $2, $3, 0, '', $4)",
    )
    .bind(id)
    .bind(&name)
    .bind(&content_type)
    .bind(caller.id)
    .execute(&mut *tx)
    .await
    .map_err(db_err("insert document"))?;

    let mut stream = body.into_data_stream();
    let mut pending = BytesMut::with_capacity(CHUNK_BYTES);
    let mut hasher = Sha256::new();
    let mut size: u64 = 0;
    let mut seq: i32 = 0;
    loop {
        let frame = stream.next().await;
        let done = frame.is_none();
        if let Some(frame) = frame {
            let data = frame.map_err(|_| {
                ApiError::bad_request("upload_interrupted", "the upload ended before its end")
            })?;
            size += data.len() as u64;
            if size > limit {
                return Err(ApiError::payload_too_large(limit));
            }
            hasher.update(&data);
            pending.extend_from_slice(&data);
        }
        while pending.len() >= CHUNK_BYTES || (done && !pending.is_empty()) {
            let take = pending.len().min(CHUNK_BYTES);
            let chunk = pending.split_to(take);
            sqlx::query("INSERT INTO document_chunks (document_id, seq, data) VALUES ($1, $2, $3)")
                .bind(id)
                .bind(seq)
                .bind(&chunk[..])
                .execute(&mut *tx)
                .await
                .map_err(db_err("insert chunk"))?;
            seq += 1;
        }
        if done {
            break;
        }
    }
    let sha256: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let document: Document = sqlx::query_as(&format!(
        "UPDATE documents SET size_bytes = $2, sha256 = $3 WHERE id = $1 RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(size as i64)
    .bind(&sha256)
    .fetch_one(&mut *tx)
    .await
    .map_err(db_err("finish document"))?;
    tx.commit().await.map_err(db_err("commit upload"))?;
    tracing::info!(document = %id, size, by = caller.id, "document uploaded");
    created(format!("/api/documents/{id}"), &document)
}

async fn fetch(state: &AppState, id: Uuid) -> ApiResult<Document> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM documents WHERE id = $1"))
        .bind(id)
        .fetch_optional(&state.db)
        .await
        .map_err(|e| ApiError::from_db("read document", e))?
        .ok_or_else(|| ApiError::not_found("document", id))
}

/// `GET /api/documents/{id}`: the content, streamed, with its type, length and ETag.
pub(crate) async fn download(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    PathParam(id): PathParam<Uuid>,
) -> ApiResult<Response> {
    caller.require("documents:read")?;
    let document = fetch(&state, id).await?;
    let etag = format!("\"{}\"", document.sha256);
    let etag_value = HeaderValue::from_str(&etag).expect("hex is a valid header value");
    if not_modified(&headers, &etag) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag_value)]).into_response());
    }
    let db = state.db.clone();
    // One chunk per query: bounded memory, and the body owns everything it needs.
    let chunks = futures_util::stream::unfold(Some(0i32), move |seq| {
        let db = db.clone();
        async move {
            let seq = seq?;
            let row: Result<Option<(Vec<u8>,)>, sqlx::Error> = sqlx::query_as(
                "SELECT data FROM document_chunks WHERE document_id = $1 AND seq = $2",
            )
            .bind(id)
            .bind(seq)
            .fetch_optional(&db)
            .await;
            match row {
                Ok(Some((data,))) => Some((Ok(Bytes::from(data)), Some(seq + 1))),
                Ok(None) => None,
                Err(error) => {
                    tracing::error!(%error, document = %id, seq, "reading a chunk failed");
                    Some((Err(error), None))
                }
            }
        }
    });
    let disposition = format!(
        "attachment; filename=\"{}\"",
        document.name.replace(['"', '\\'], "_")
    );
    let mut response = Response::new(Body::from_stream(chunks));
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&document.content_type)
            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    h.insert(
        header::CONTENT_LENGTH,
        HeaderValue::from(document.size_bytes),
    );
    h.insert(header::ETAG, etag_value);
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        h.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

/// `GET /api/documents/{id}/metadata`
pub(crate) async fn metadata(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    PathParam(id): PathParam<Uuid>,
) -> ApiResult<Response> {
    caller.require("documents:read")?;
    json_with_etag(StatusCode::OK, &headers, &fetch(&state, id).await?)
}

/// `GET /api/documents`
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> ApiResult<Response> {
    caller.require("documents:read")?;
    let paging = PageParams::new(query.page, query.per_page).validate()?;
    let (total,): (i64,) = sqlx::query_as("SELECT count(*) FROM documents")
        .fetch_one(&state.db)
        .await
        .map_err(|e| ApiError::from_db("count documents", e))?;
    let items: Vec<Document> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM documents ORDER BY created_at, id LIMIT $1 OFFSET $2"
    ))
    .bind(paging.limit())
    .bind(paging.offset())
    .fetch_all(&state.db)
    .await
    .map_err(|e| ApiError::from_db("list documents", e))?;
    Page::new(items, paging, total, "/api/documents", &[]).respond(&headers)
}

/// `DELETE /api/documents/{id}`: the chunks go with it (ON DELETE CASCADE).
pub(crate) async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    PathParam(id): PathParam<Uuid>,
) -> ApiResult<StatusCode> {
    caller.require("documents:write")?;
    let deleted = sqlx::query("DELETE FROM documents WHERE id = $1")
        .bind(id)
        .execute(&state.db)
        .await
        .map_err(|e| ApiError::from_db("delete document", e))?
        .rows_affected();
    if deleted == 0 {
        return Err(ApiError::not_found("document", id));
    }
    tracing::info!(document = %id, by = caller.id, "document deleted");
    Ok(StatusCode::NO_CONTENT)
}
