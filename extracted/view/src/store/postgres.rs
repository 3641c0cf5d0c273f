//! The PostgreSQL store, by URL: the view tables and the bookkeeping tables in the connection's
//! default schema of the service's own database (never the monolith's).

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::error::ViewError;

pub(super) async fn open(url: &str) -> Result<PgPool, ViewError> {
    PgPoolOptions::new()
        .max_connections(4)
        .connect(url)
        .await
        .map_err(ViewError::store("connecting to the PostgreSQL store"))
}
