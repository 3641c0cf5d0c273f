//! The routes and their JSON: the same fields, order, filters and pagination as the monolith's
//! `GET /api/people[/{id}]`, written from its behaviour (its crate is never imported).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use chrono::{DateTime, Utc};
use ficus_kit::{ApiError, ApiResult, Caller, Page, PageParams, PathParam, Query, Store};
use serde::{Deserialize, Serialize};

/// A person as the API shows it.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct Person {
    id: i64,
    email: String,
    display_name: String,
    /// `admin` or `member`.
    role: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

const SELECT: &str = "SELECT id, email, display_name, role, created_at, updated_at FROM people";
/// `?email=`: exact match on the normalized (trimmed, lower-cased) address.
const FILTER: &str = "WHERE (CAST($1 AS TEXT) IS NULL OR email = $1)";

#[derive(Deserialize)]
pub struct ListQuery {
    page: Option<u32>,
    per_page: Option<u32>,
    email: Option<String>,
}

/// `GET /api/people?email=&page=&per_page=`
pub async fn list(
    State(store): State<Store>,
    caller: Caller,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> ApiResult<Response> {
    caller.require("people:read")?;
    let paging = PageParams::new(query.page, query.per_page).validate()?;
    let email = query.email.map(|e| e.trim().to_lowercase());
    let (total,): (i64,) = ficus_kit::fetch!(
        &store,
        (i64,),
        fetch_one,
        &format!("SELECT count(*) FROM people {FILTER}"),
        email.clone()
    )
    .map_err(|e| ApiError::from_db("count people", e))?;
    let items: Vec<Person> = ficus_kit::fetch!(
        &store,
        Person,
        fetch_all,
        &format!("{SELECT} {FILTER} ORDER BY id LIMIT $2 OFFSET $3"),
        email.clone(),
        paging.limit(),
        paging.offset()
    )
    .map_err(|e| ApiError::from_db("list people", e))?;
    let filters: Vec<(&str, String)> = email.into_iter().map(|e| ("email", e)).collect();
    Page::new(items, paging, total, "/api/people", &filters).respond(&headers)
}

/// `GET /api/people/{id}`
pub async fn read(
    State(store): State<Store>,
    caller: Caller,
    headers: HeaderMap,
    PathParam(id): PathParam<i64>,
) -> ApiResult<Response> {
    caller.require("people:read")?;
    let person: Person = ficus_kit::fetch!(
        &store,
        Person,
        fetch_optional,
        &format!("{SELECT} WHERE id = $1"),
        id
    )
    .map_err(|e| ApiError::from_db("read person", e))?
    .ok_or_else(|| ApiError::not_found("person", id))?;
    ficus_kit::json_with_etag(StatusCode::OK, &headers, &person)
}
