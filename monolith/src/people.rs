//! People: user management. `GET/POST /api/people`, `GET/PATCH/DELETE /api/people/{id}`.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::auth::{Caller, hash_password};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, PathParam, Query};
use crate::http::{Page, PageParams, created, double_option, json_with_etag};

/// What a person may do; stored as the PostgreSQL enum `person_role`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "person_role", rename_all = "snake_case")]
pub enum Role {
    Admin,
    Member,
}

/// A person as the API shows it (never with the password hash).
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct Person {
    pub id: i64,
    pub email: String,
    pub display_name: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, email, display_name, role, created_at, updated_at";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewPerson {
    email: String,
    display_name: String,
    #[serde(default)]
    role: Option<Role>,
    #[serde(default)]
    password: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PersonPatch {
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    role: Option<Role>,
    #[serde(default, deserialize_with = "double_option")]
    password: Option<Option<String>>,
}

#[derive(Deserialize)]
pub(crate) struct ListQuery {
    page: Option<u32>,
    per_page: Option<u32>,
    /// Exact email match.
    email: Option<String>,
}

/// Normalizes and checks an email: trimmed, lower-cased, one `@` with text on both sides.
fn valid_email(raw: &str) -> ApiResult<String> {
    let email = raw.trim().to_lowercase();
    let ok = email.len() <= 254
        && email.split('@').count() == 2
        && email.split('@').all(|part| !part.is_empty())
        && !email.contains(char::is_whitespace);
    if ok {
        Ok(email)
    } else {
        Err(ApiError::invalid_field(
            "email",
            format!("`{raw}` is not an email address"),
        ))
    }
}

fn valid_display_name(raw: &str) -> ApiResult<String> {
    let name = raw.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ApiError::invalid_field(
            "display_name",
            "must be 1 to 100 characters",
        ));
    }
    Ok(name.to_owned())
}

fn valid_password(raw: &str) -> ApiResult<()> {
    if raw.chars().count() < 8 || raw.len() > 256 {
        return Err(ApiError::invalid_field(
            "password",
            "must be 8 to 256 characters",
        ));
    }
    Ok(())
}

/// `GET /api/people`
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> ApiResult<Response> {
    caller.require("people:read")?;
    let paging = PageParams::new(query.page, query.per_page).validate()?;
    let email = query.email.as_deref().map(|e| e.trim().to_lowercase());
    let (total,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM people WHERE ($1::text IS NULL OR email = $1)")
            .bind(&email)
            .fetch_one(&state.db)
            .await
            .map_err(|e| ApiError::from_db("count people", e))?;
    let items: Vec<Person> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM people WHERE ($1::text IS NULL OR email = $1) \
         ORDER BY id LIMIT $2 OFFSET $3"
    ))
    .bind(&email)
    .bind(paging.limit())
    .bind(paging.offset())
    .fetch_all(&state.db)
    .await
    .map_err(|e| ApiError::from_db("list people", e))?;
    let filters: Vec<(&str, String)> = email.into_iter().map(|e| ("email", e)).collect();
    Page::new(items, paging, total, "/api/people", &filters).respond(&headers)
}

/// `POST /api/people`
pub(crate) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<NewPerson>,
) -> ApiResult<Response> {
    caller.require("people:write")?;
    let email = valid_email(&body.email)?;
    let display_name = valid_display_name(&body.display_name)?;
    let password_hash = match body.password {
        Some(password) => {
            valid_password(&password)?;
            Some(hash_password(password).await?)
        }
        None => None,
    };
    let person: Person = sqlx::query_as(&format!(
        "INSERT INTO people (email, display_name, role, password_hash) \
         VALUES ($1, $2, $3, $4) RETURNING {COLUMNS}"
    ))
    .bind(&email)
    .bind(&display_name)
    .bind(body.role.unwrap_or(Role::Member))
    .bind(password_hash)
    .fetch_one(&state.db)
    .await
    .map_err(|e| ApiError::from_db("insert person", e))?;
    tracing::info!(person = person.id, by = caller.id, "person created");
    created(format!("/api/people/{}", person.id), &person)
}

/// `GET /api/people/{id}`
pub(crate) async fn read(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    PathParam(id): PathParam<i64>,
) -> ApiResult<Response> {
    caller.require("people:read")?;
    let person = fetch(&state, id).await?;
    json_with_etag(StatusCode::OK, &headers, &person)
}

pub(crate) async fn fetch(state: &AppState, id: i64) -> ApiResult<Person> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM people WHERE id = $1"))
        .bind(id)
        .fetch_optional(&state.db)
        .await
        .map_err(|e| ApiError::from_db("read person", e))?
        .ok_or_else(|| ApiError::not_found("person", id))
}

/// `PATCH /api/people/{id}`: only the fields given change.
pub(crate) async fn update(
    State(state): State<AppState>,
    caller: Caller,
    PathParam(id): PathParam<i64>,
    Json(patch): Json<PersonPatch>,
) -> ApiResult<Response> {
    caller.require("people:write")?;
    let email = patch.email.as_deref().map(valid_email).transpose()?;
    let display_name = patch
        .display_name
        .as_deref()
        .map(valid_display_name)
        .transpose()?;
    // Some(None) clears the password (the person can no longer log in).
    let (set_password, password_hash) = match patch.password {
        None => (false, None),
        Some(None) => (true, None),
        Some(Some(password)) => {
            valid_password(&password)?;
            (true, Some(hash_password(password).await?))
        }
    };
    let person: Person = sqlx::query_as(&format!(
        "UPDATE people SET \
            email = COALESCE($2, email), \
            display_name = COALESCE($3, display_name), \
            role = COALESCE($4, role), \
            password_hash = CASE WHEN $5 THEN $6 ELSE password_hash END, \
            updated_at = now() \
         WHERE id = $1 RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(email)
    .bind(display_name)
    .bind(patch.role)
    .bind(set_password)
    .bind(password_hash)
    .fetch_optional(&state.db)
    .await
    .map_err(|e| ApiError::from_db("update person", e))?
    .ok_or_else(|| ApiError::not_found("person", id))?;
    tracing::info!(person = id, by = caller.id, "person updated");
    json_with_etag(StatusCode::OK, &HeaderMap::new(), &person)
}

/// `DELETE /api/people/{id}`: their tasks become unassigned, their documents ownerless.
pub(crate) async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    PathParam(id): PathParam<i64>,
) -> ApiResult<StatusCode> {
    caller.require("people:write")?;
    let deleted = sqlx::query("DELETE FROM people WHERE id = $1")
        .bind(id)
        .execute(&state.db)
        .await
        .map_err(|e| ApiError::from_db("delete person", e))?
        .rows_affected();
    if deleted == 0 {
        return Err(ApiError::not_found("person", id));
    }
    tracing::info!(person = id, by = caller.id, "person deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/me`: the caller as this app sees it (from its own token), and the identity an edge
/// proxy in front forwarded (`x-ficus-*` headers), side by side.
pub(crate) async fn me(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let person = fetch(&state, caller.id).await?;
    let edge: serde_json::Map<String, serde_json::Value> = headers
        .iter()
        .filter(|(name, _)| name.as_str().starts_with("x-ficus-"))
        .filter_map(|(name, value)| Some((name.as_str().to_owned(), value.to_str().ok()?.into())))
        .collect();
    json_with_etag(
        StatusCode::OK,
        &headers,
        &serde_json::json!({ "person": person, "edge_identity": edge }),
    )
}

/// Ensures the bootstrap administrator exists. An existing person with that email is left as
/// it is: bootstrap is for a fresh database, not a way to reset passwords.
pub(crate) async fn ensure_admin(
    db: &sqlx::PgPool,
    admin: &crate::config::AdminAccount,
) -> Result<(), crate::StartError> {
    let email = valid_email(&admin.email)
        .map_err(|e| crate::StartError::Config(format!("bootstrap admin: {e}")))?;
    valid_password(&admin.password)
        .map_err(|e| crate::StartError::Config(format!("bootstrap admin: {e}")))?;
    let hash = hash_password(admin.password.clone())
        .await
        .map_err(|e| crate::StartError::Config(format!("bootstrap admin: {e}")))?;
    sqlx::query(
        "INSERT INTO people (email, display_name, role, password_hash) \
         VALUES ($1, $2, 'admin', $3) \
         ON CONFLICT (email) DO NOTHING",
    )
    .bind(email)
    .bind(&admin.display_name)
    .bind(hash)
    .execute(db)
    .await
    .map_err(crate::StartError::Database)?;
    Ok(())
}
