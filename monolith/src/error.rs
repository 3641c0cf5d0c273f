//! The one error type of the monolith's HTTP API.
//!
//! Every failure a client can cause maps to a precise 4xx with a JSON body
//! `{"error": {"code", "message", "field"?}}` that names what was wrong. Server-side failures are
//! logged once, here, and answered with a 500 whose body says nothing about internals.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An API failure: the status, a stable machine-readable code, a human message and, for
/// validation errors, the offending field as a JSON path (`tags[2]`, `assignee_id`).
#[derive(Debug, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    /// 400: the request cannot be read at all (malformed JSON, bad query string, bad path).
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 401: no credentials, or credentials that do not verify.
    pub fn unauthenticated(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }

    /// 403: a verified caller without the right to do this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404 for a resource kind and id: `person 42 not found`.
    pub fn not_found(resource: &str, id: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{resource} {id} not found"),
        )
    }

    /// 405: the path exists but not for this method.
    pub fn method_not_allowed(method: &str, path: &str) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{method} is not allowed on {path}"),
        )
    }

    /// 409: the request conflicts with existing state (a duplicate email).
    pub fn conflict(field: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message).with_field(field)
    }

    /// 413: the body is larger than this endpoint accepts.
    pub fn payload_too_large(limit_bytes: u64) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body exceeds the limit of {limit_bytes} bytes"),
        )
    }

    /// 415: the body is not of a media type this endpoint reads.
    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            message,
        )
    }

    /// 422: the body parses but a field's value is wrong.
    pub fn invalid_field(field: impl Into<String>, message: impl Into<String>) -> Self {
        let field = field.into();
        let message = format!("{field}: {}", message.into());
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", message).with_field(field)
    }

    /// 500 for a failure of ours. The detail is logged, never sent.
    pub fn internal(context: &'static str, error: &dyn std::error::Error) -> Self {
        tracing::error!(%error, context, "request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the server failed to handle this request",
        )
    }

    fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// Maps a database error for an operation (`"insert person"`): constraint violations become
    /// the client's 409/422, everything else a logged 500.
    pub fn from_db(context: &'static str, error: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &error {
            let constraint = db.constraint().unwrap_or_default();
            match db.code().as_deref() {
                // unique_violation
                Some("23505") if constraint == "people_email_key" => {
                    return Self::conflict("email", "a person with this email already exists");
                }
                // foreign_key_violation
                Some("23503") if constraint == "tasks_assignee_id_fkey" => {
                    return Self::invalid_field("assignee_id", "no person with this id");
                }
                _ => {}
            }
        }
        Self::internal(context, &error)
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: Detail<'a>,
}

#[derive(Serialize)]
struct Detail<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body {
            error: Detail {
                code: self.code,
                message: &self.message,
                field: self.field.as_deref(),
            },
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            let challenge = match self.code {
                "missing_token" => "Bearer realm=\"ficus-monolith\"".to_owned(),
                code => format!("Bearer realm=\"ficus-monolith\", error=\"{code}\""),
            };
            if let Ok(value) = HeaderValue::from_str(&challenge) {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, value);
            }
        }
        response
    }
}

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;
