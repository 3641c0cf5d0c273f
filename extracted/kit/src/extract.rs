//! Request extractors whose rejections are [`ApiError`]s worded as the monolith words them: a
//! bad query string or path parameter is a 400 naming it.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

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
