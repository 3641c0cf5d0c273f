//! The embedded store: a SQLite file in WAL mode, created when missing. One connection writes
//! (SQLite has one writer); readers of the service share the same pool.

use std::str::FromStr;
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use crate::error::ViewError;

pub(super) async fn open(location: &str) -> Result<SqlitePool, ViewError> {
    let options = if location.starts_with("sqlite:") {
        SqliteConnectOptions::from_str(location)
            .map_err(|_| ViewError::Location(location.to_owned()))?
    } else {
        SqliteConnectOptions::new().filename(location)
    };
    let options = options
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // WAL with synchronous=NORMAL: a committed batch survives a process crash (kill -9);
        // only a power loss can take back the last transactions, offsets and rows together.
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(10));
    SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await
        .map_err(ViewError::store("opening the SQLite store"))
}
