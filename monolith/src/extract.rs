//! Request extractors whose rejections are [`ApiError`]s naming what was wrong.
//!
//! axum's own extractors answer with plain-text bodies; the monolith promises JSON errors that
//! tell a malformed body (400) from a well-formed body with a wrong field (422, with the field's
//! JSON path) from an oversize one (413) or one of the wrong media type (415).

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{StatusCode, header, request::Parts};
use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::AppState;
use crate::error::ApiError;

/// A JSON request body, read up to the configured limit.
pub struct Json<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| {
                let essence = ct.split(';').next().unwrap_or_default().trim();
                essence.eq_ignore_ascii_case("application/json")
                    || essence.to_ascii_lowercase().ends_with("+json")
            });
        if !is_json {
            return Err(ApiError::unsupported_media_type(
                "expected a body with content-type application/json",
            ));
        }
        let limit = state.config.max_json_bytes;
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > limit as u64) {
            return Err(ApiError::payload_too_large(limit as u64));
        }
        // The router's `DefaultBodyLimit` is `max_json_bytes`, so this stops reading past it.
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::payload_too_large(limit as u64)
            } else {
                ApiError::bad_request("body_unreadable", "the request body could not be read")
            }
        })?;
        parse_json(&bytes).map(Json)
    }
}

/// Parses JSON, telling a syntax error (400) from a data error on a field (422).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => {
                let field = if path == "." { "body".to_owned() } else { path };
                ApiError::invalid_field(field, strip_position(&inner.to_string()))
            }
            _ => ApiError::bad_request("malformed_json", format!("malformed JSON: {inner}")),
        }
    })?;
    // Trailing characters after the value make the document malformed.
    de.end()
        .map_err(|e| ApiError::bad_request("malformed_json", format!("malformed JSON: {e}")))?;
    Ok(value)
}

/// serde_json appends "at line 1 column 17" to data errors; the field path says more.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// A query string deserialized into `T`; a bad parameter is a 400 that names it.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|rejection| {
                let text = rejection.body_text();
                let detail = text
                    .strip_prefix("Failed to deserialize query string: ")
                    .unwrap_or(&text);
                ApiError::bad_request("invalid_query", format!("invalid query string: {detail}"))
            })
    }
}

/// The single path parameter of a route, parsed as `T`; a bad one is a 400 that names it.
pub struct PathParam<T>(pub T);

impl<T, S> FromRequestParts<S> for PathParam<T>
where
    T: std::str::FromStr + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Path(raw) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|r| ApiError::bad_request("invalid_path", r.body_text()))?;
        raw.parse::<T>().map(PathParam).map_err(|_| {
            ApiError::bad_request(
                "invalid_path",
                format!("`{raw}` is not a valid {}", short_type_name::<T>()),
            )
        })
    }
}

fn short_type_name<T>() -> &'static str {
    let name = std::any::type_name::<T>();
    match name {
        "i64" | "i32" | "u64" | "u32" => "integer id",
        n if n.ends_with("Uuid") => "UUID",
        n => n.rsplit("::").next().unwrap_or(n),
    }
}
