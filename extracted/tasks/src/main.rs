//! `ficus-tasks`: `GET /api/tasks` and `GET /api/tasks/{id}`, cut out of the monolith. A task's
//! JSON carries its assignee's display name, which the monolith joins from `people` at read
//! time; this service keeps views of both change topics, the tasks view joined to the people
//! view in its own store ([`view`]), so a renamed person shows renamed in every task without
//! asking the monolith. Both views are applied a monolith transaction at a time
//! (`views.whole_transactions`, on by default here): a transaction that renames the assignee
//! and edits the task shows in both at once, never half.
//!
//! ```text
//! ficus.public.tasks  --ficus-view--> tasks  \
//!                                              >-- tasks_joined (assignee_name) --api--> JSON
//! ficus.public.people --ficus-view--> people /
//! ```

mod api;
mod view;

use std::process::ExitCode;

use axum::Router;
use axum::routing::get;
use ficus_kit::{Ctx, Service};

fn main() -> ExitCode {
    ficus_kit::main(Service {
        name: "tasks",
        default_listen: ([127, 0, 0, 1], 8082).into(),
        views: |settings| vec![view::tasks(settings), view::people(settings)],
        routes,
        // A task and its assignee's name come from two views: a monolith transaction that
        // renames the assignee and edits the task shows in both at once (it needs the adapter's
        // `provide.transaction.metadata`).
        whole_transactions: true,
    })
}

fn routes() -> Router<Ctx> {
    Router::new()
        .route("/api/tasks", get(api::list))
        .route("/api/tasks/{id}", get(api::read))
}
