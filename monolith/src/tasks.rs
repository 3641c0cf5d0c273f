//! Tasks: `GET/POST /api/tasks`, `GET/PATCH/DELETE /api/tasks/{id}`.
//!
//! A task's JSON carries its assignee's display name, joined from people at read time. The
//! extracted tasks service must produce the same JSON from its own views of both tables, which
//! is what makes this route a good strangling exercise.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, PathParam, Query};
use crate::http::{Page, PageParams, created, double_option, json_with_etag};

/// Stored as the PostgreSQL enum `task_status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "task_status", rename_all = "snake_case")]
pub enum Status {
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

/// A task as the API shows it.
#[derive(Debug, Serialize)]
pub struct Task {
    pub id: i64,
    pub title: String,
    pub description: String,
    pub status: Status,
    pub assignee: Option<Assignee>,
    pub due_on: Option<NaiveDate>,
    pub tags: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The assignee as a task shows it.
#[derive(Debug, Serialize)]
pub struct Assignee {
    pub id: i64,
    pub display_name: String,
}

#[derive(sqlx::FromRow)]
struct TaskRow {
    id: i64,
    title: String,
    description: String,
    status: Status,
    assignee_id: Option<i64>,
    assignee_name: Option<String>,
    due_on: Option<NaiveDate>,
    tags: Vec<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<TaskRow> for Task {
    fn from(row: TaskRow) -> Self {
        let assignee = match (row.assignee_id, row.assignee_name) {
            (Some(id), Some(display_name)) => Some(Assignee { id, display_name }),
            _ => None,
        };
        Task {
            id: row.id,
            title: row.title,
            description: row.description,
            status: row.status,
            assignee,
            due_on: row.due_on,
            tags: row.tags,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// The joined projection, over a relation named `t` (the table or a CTE).
const SELECT_JOINED: &str = "SELECT t.id, t.title, t.description, t.status, t.assignee_id, \
     p.display_name AS assignee_name, t.due_on, t.tags, t.created_at, t.updated_at \
     FROM t LEFT JOIN people p ON p.id = t.assignee_id";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewTask {
    title: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    status: Option<Status>,
    #[serde(default)]
    assignee_id: Option<i64>,
    #[serde(default)]
    due_on: Option<NaiveDate>,
    #[serde(default)]
    tags: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TaskPatch {
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    status: Option<Status>,
    #[serde(default, deserialize_with = "double_option")]
    assignee_id: Option<Option<i64>>,
    #[serde(default, deserialize_with = "double_option")]
    due_on: Option<Option<NaiveDate>>,
    #[serde(default)]
    tags: Option<Vec<String>>,
}

#[derive(Deserialize)]
pub(crate) struct ListQuery {
    page: Option<u32>,
    per_page: Option<u32>,
    status: Option<Status>,
    assignee_id: Option<i64>,
    tag: Option<String>,
}

fn valid_title(raw: &str) -> ApiResult<String> {
    let title = raw.trim();
    if title.is_empty() || title.chars().count() > 200 {
        return Err(ApiError::invalid_field(
            "title",
            "must be 1 to 200 characters",
        ));
    }
    Ok(title.to_owned())
}

fn valid_description(raw: String) -> ApiResult<String> {
    if raw.chars().count() > 10_000 {
        return Err(ApiError::invalid_field(
            "description",
            "must be at most 10000 characters",
        ));
    }
    Ok(raw)
}

fn valid_tags(tags: Vec<String>) -> ApiResult<Vec<String>> {
    if tags.len() > 20 {
        return Err(ApiError::invalid_field("tags", "at most 20 tags"));
    }
    let mut out = Vec::with_capacity(tags.len());
    for (i, tag) in tags.into_iter().enumerate() {
        let tag = tag.trim().to_owned();
        if tag.is_empty() || tag.chars().count() > 40 {
            return Err(ApiError::invalid_field(
                format!("tags[{i}]"),
                "must be 1 to 40 characters",
            ));
        }
        if !out.contains(&tag) {
            out.push(tag);
        }
    }
    Ok(out)
}

/// `GET /api/tasks?status=&assignee_id=&tag=&page=&per_page=`
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> ApiResult<Response> {
    caller.require("tasks:read")?;
    let paging = PageParams::new(query.page, query.per_page).validate()?;
    const FILTER: &str = "($1::task_status IS NULL OR status = $1) \
        AND ($2::bigint IS NULL OR assignee_id = $2) \
        AND ($3::text IS NULL OR $3 = ANY(tags))";
    let (total,): (i64,) = sqlx::query_as(&format!("SELECT count(*) FROM tasks WHERE {FILTER}"))
        .bind(query.status)
        .bind(query.assignee_id)
        .bind(&query.tag)
        .fetch_one(&state.db)
        .await
        .map_err(|e| ApiError::from_db("count tasks", e))?;
    let rows: Vec<TaskRow> = sqlx::query_as(&format!(
        "WITH t AS (SELECT * FROM tasks WHERE {FILTER} ORDER BY id LIMIT $4 OFFSET $5) \
         {SELECT_JOINED} ORDER BY t.id"
    ))
    .bind(query.status)
    .bind(query.assignee_id)
    .bind(&query.tag)
    .bind(paging.limit())
    .bind(paging.offset())
    .fetch_all(&state.db)
    .await
    .map_err(|e| ApiError::from_db("list tasks", e))?;
    let mut filters = Vec::new();
    if let Some(status) = query.status {
        filters.push(("status", status.as_str().to_owned()));
    }
    if let Some(assignee) = query.assignee_id {
        filters.push(("assignee_id", assignee.to_string()));
    }
    if let Some(tag) = query.tag {
        filters.push(("tag", tag));
    }
    let items = rows.into_iter().map(Task::from).collect();
    Page::new(items, paging, total, "/api/tasks", &filters).respond(&headers)
}

/// `POST /api/tasks`
pub(crate) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<NewTask>,
) -> ApiResult<Response> {
    caller.require("tasks:write")?;
    let title = valid_title(&body.title)?;
    let description = valid_description(body.description)?;
    let tags = valid_tags(body.tags)?;
    let row: TaskRow = sqlx::query_as(&format!(
        "WITH t AS (INSERT INTO tasks (title, description, status, assignee_id, due_on, tags) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING *) {SELECT_JOINED}"
    ))
    .bind(title)
    .bind(description)
    .bind(body.status.unwrap_or(Status::Todo))
    .bind(body.assignee_id)
    .bind(body.due_on)
    .bind(tags)
    .fetch_one(&state.db)
    .await
    .map_err(|e| ApiError::from_db("insert task", e))?;
    let task = Task::from(row);
    tracing::info!(task = task.id, by = caller.id, "task created");
    created(format!("/api/tasks/{}", task.id), &task)
}

/// `GET /api/tasks/{id}`
pub(crate) async fn read(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    PathParam(id): PathParam<i64>,
) -> ApiResult<Response> {
    caller.require("tasks:read")?;
    let row: TaskRow = sqlx::query_as(&format!(
        "WITH t AS (SELECT * FROM tasks WHERE id = $1) {SELECT_JOINED}"
    ))
    .bind(id)
    .fetch_optional(&state.db)
    .await
    .map_err(|e| ApiError::from_db("read task", e))?
    .ok_or_else(|| ApiError::not_found("task", id))?;
    json_with_etag(StatusCode::OK, &headers, &Task::from(row))
}

/// `PATCH /api/tasks/{id}`: only the fields given change; `null` clears `assignee_id`/`due_on`.
pub(crate) async fn update(
    State(state): State<AppState>,
    caller: Caller,
    PathParam(id): PathParam<i64>,
    Json(patch): Json<TaskPatch>,
) -> ApiResult<Response> {
    caller.require("tasks:write")?;
    let title = patch.title.as_deref().map(valid_title).transpose()?;
    let description = patch.description.map(valid_description).transpose()?;
    let tags = patch.tags.map(valid_tags).transpose()?;
    let row: TaskRow = sqlx::query_as(&format!(
        "WITH t AS (UPDATE tasks SET \
            title = COALESCE($2, title), \
            description = COALESCE($3, description), \
            status = COALESCE($4, status), \
            assignee_id = CASE WHEN $5 THEN $6 ELSE assignee_id END, \
            due_on = CASE WHEN $7 THEN $8 ELSE due_on END, \
            tags = COALESCE($9, tags), \
            updated_at = now() \
         WHERE id = $1 RETURNING *) {SELECT_JOINED}"
    ))
    .bind(id)
    .bind(title)
    .bind(description)
    .bind(patch.status)
    .bind(patch.assignee_id.is_some())
    .bind(patch.assignee_id.flatten())
    .bind(patch.due_on.is_some())
    .bind(patch.due_on.flatten())
    .bind(tags)
    .fetch_optional(&state.db)
    .await
    .map_err(|e| ApiError::from_db("update task", e))?
    .ok_or_else(|| ApiError::not_found("task", id))?;
    tracing::info!(task = id, by = caller.id, "task updated");
    json_with_etag(StatusCode::OK, &HeaderMap::new(), &Task::from(row))
}

/// `DELETE /api/tasks/{id}`
pub(crate) async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    PathParam(id): PathParam<i64>,
) -> ApiResult<StatusCode> {
    caller.require("tasks:write")?;
    let deleted = sqlx::query("DELETE FROM tasks WHERE id = $1")
        .bind(id)
        .execute(&state.db)
        .await
        .map_err(|e| ApiError::from_db("delete task", e))?
        .rows_affected();
    if deleted == 0 {
        return Err(ApiError::not_found("task", id));
    }
    tracing::info!(task = id, by = caller.id, "task deleted");
    Ok(StatusCode::NO_CONTENT)
}
