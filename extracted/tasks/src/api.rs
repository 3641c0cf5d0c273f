//! The routes and their JSON: the same fields, order, filters and pagination as the monolith's
//! `GET /api/tasks[/{id}]`, written from its behaviour (its crate is never imported).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use chrono::{DateTime, NaiveDate, Utc};
use ficus_kit::{ApiError, ApiResult, Caller, Page, PageParams, PathParam, Query, Store};
use serde::{Deserialize, Serialize};

/// A task as the API shows it.
#[derive(Debug, Serialize)]
pub struct Task {
    id: i64,
    title: String,
    description: String,
    status: String,
    assignee: Option<Assignee>,
    due_on: Option<NaiveDate>,
    tags: Vec<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

#[derive(Debug, Serialize)]
pub struct Assignee {
    id: i64,
    display_name: String,
}

#[derive(sqlx::FromRow)]
struct TaskRow {
    id: i64,
    title: String,
    description: String,
    status: String,
    assignee_id: Option<i64>,
    assignee_name: Option<String>,
    due_on: Option<NaiveDate>,
    /// The JSON array the adapter wrote for the `text[]`.
    tags: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<TaskRow> for Task {
    type Error = ApiError;

    fn try_from(row: TaskRow) -> ApiResult<Task> {
        let tags = serde_json::from_str(&row.tags).map_err(|e| ApiError::internal("tags", &e))?;
        let assignee = match (row.assignee_id, row.assignee_name) {
            (Some(id), Some(display_name)) => Some(Assignee { id, display_name }),
            _ => None,
        };
        Ok(Task {
            id: row.id,
            title: row.title,
            description: row.description,
            status: row.status,
            assignee,
            due_on: row.due_on,
            tags,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

/// Tasks with their assignee's name, from the joined view (see [`crate::view`]).
const SELECT: &str = "SELECT id, title, description, status, assignee_id, assignee_name, \
     due_on, tags, created_at, updated_at FROM tasks_joined";

/// The monolith's `task_status`; an unknown value is a 400 naming it, as there.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Status {
    Todo,
    InProgress,
    Done,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Todo => "todo",
            Status::InProgress => "in_progress",
            Status::Done => "done",
        }
    }
}

#[derive(Deserialize)]
pub struct ListQuery {
    page: Option<u32>,
    per_page: Option<u32>,
    status: Option<Status>,
    assignee_id: Option<i64>,
    tag: Option<String>,
}

/// `?status=&assignee_id=&tag=`; a tag matches an element of the JSON array.
fn filter(store: &Store) -> &'static str {
    match store {
        Store::Sqlite(_) => {
            "(CAST($1 AS TEXT) IS NULL OR status = $1) \
             AND (CAST($2 AS BIGINT) IS NULL OR assignee_id = $2) \
             AND (CAST($3 AS TEXT) IS NULL OR EXISTS (SELECT 1 FROM json_each(tags) WHERE json_each.value = $3))"
        }
        Store::Postgres(_) => {
            "(CAST($1 AS TEXT) IS NULL OR status = $1) \
             AND (CAST($2 AS BIGINT) IS NULL OR assignee_id = $2) \
             AND (CAST($3 AS TEXT) IS NULL OR CAST(tags AS jsonb) ? $3)"
        }
    }
}

/// `GET /api/tasks?status=&assignee_id=&tag=&page=&per_page=`
pub async fn list(
    State(store): State<Store>,
    caller: Caller,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> ApiResult<Response> {
    caller.require("tasks:read")?;
    let paging = PageParams::new(query.page, query.per_page).validate()?;
    let status = query.status.map(|s| s.as_str().to_owned());
    let where_ = filter(&store);
    let (total,): (i64,) = ficus_kit::fetch!(
        &store,
        (i64,),
        fetch_one,
        &format!("SELECT count(*) FROM tasks_joined WHERE {where_}"),
        status.clone(),
        query.assignee_id,
        query.tag.clone()
    )
    .map_err(|e| ApiError::from_db("count tasks", e))?;
    let rows: Vec<TaskRow> = ficus_kit::fetch!(
        &store,
        TaskRow,
        fetch_all,
        &format!("{SELECT} WHERE {where_} ORDER BY id LIMIT $4 OFFSET $5"),
        status.clone(),
        query.assignee_id,
        query.tag.clone(),
        paging.limit(),
        paging.offset()
    )
    .map_err(|e| ApiError::from_db("list tasks", e))?;
    let mut filters = Vec::new();
    if let Some(status) = status {
        filters.push(("status", status));
    }
    if let Some(assignee) = query.assignee_id {
        filters.push(("assignee_id", assignee.to_string()));
    }
    if let Some(tag) = query.tag {
        filters.push(("tag", tag));
    }
    let items = rows
        .into_iter()
        .map(Task::try_from)
        .collect::<ApiResult<Vec<_>>>()?;
    Page::new(items, paging, total, "/api/tasks", &filters).respond(&headers)
}

/// `GET /api/tasks/{id}`
pub async fn read(
    State(store): State<Store>,
    caller: Caller,
    headers: HeaderMap,
    PathParam(id): PathParam<i64>,
) -> ApiResult<Response> {
    caller.require("tasks:read")?;
    let row: TaskRow = ficus_kit::fetch!(
        &store,
        TaskRow,
        fetch_optional,
        &format!("{SELECT} WHERE id = $1"),
        id
    )
    .map_err(|e| ApiError::from_db("read task", e))?
    .ok_or_else(|| ApiError::not_found("task", id))?;
    ficus_kit::json_with_etag(StatusCode::OK, &headers, &Task::try_from(row)?)
}
