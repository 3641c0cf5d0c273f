//! `ficus-people`: `GET /api/people` and `GET /api/people/{id}`, cut out of the monolith and
//! served from a view of its `people` table that `ficus cdc` streams. Everything else a service
//! needs (identity, errors, pagination, ETags, readiness, metrics, settings, `rebuild`) is
//! `ficus-kit`'s; here are only the view ([`view`]) and the routes with their JSON ([`api`]).
//!
//! ```text
//! ficus.public.people --ficus-view--> people (SQLite or PostgreSQL) --api--> JSON as the monolith's
//! ```

mod api;
mod view;

use std::process::ExitCode;

use axum::Router;
use axum::routing::get;
use ficus_kit::{Ctx, Service};

fn main() -> ExitCode {
    ficus_kit::main(Service {
        name: "people",
        default_listen: ([127, 0, 0, 1], 8081).into(),
        views: |settings| vec![view::people(settings)],
        routes,
        // One view: nothing to keep in step.
        whole_transactions: false,
    })
}

fn routes() -> Router<Ctx> {
    Router::new()
        .route("/api/people", get(api::list))
        .route("/api/people/{id}", get(api::read))
}
