//! A database per test.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, Executor, PgConnection, PgPool};

use crate::{DATABASE_URL_VAR, service_env, unique_suffix};

/// A database created for one test and dropped when the value is dropped.
pub struct TestDatabase {
    /// Its name, `ficus_t_<random>`.
    pub name: String,
    /// A URL that connects to it.
    pub url: String,
    /// A small pool connected to it.
    pub pool: PgPool,
    server_url: String,
}

impl TestDatabase {
    /// An empty database.
    pub async fn new() -> Self {
        let server_url = service_env(DATABASE_URL_VAR);
        let name = format!("ficus_t_{}", unique_suffix());
        let mut admin = PgConnection::connect(&server_url)
            .await
            .unwrap_or_else(|e| panic!("connecting to {DATABASE_URL_VAR} ({server_url}): {e}"));
        admin
            .execute(format!("CREATE DATABASE \"{name}\"").as_str())
            .await
            .unwrap_or_else(|e| panic!("creating database {name}: {e}"));
        admin.close().await.ok();
        let url = database_url(&server_url, &name);
        let options = PgConnectOptions::from_str(&url).expect("a valid database URL");
        let pool = PgPoolOptions::new()
            .max_connections(5)
            .connect_with(options)
            .await
            .unwrap_or_else(|e| panic!("connecting to {name}: {e}"));
        Self {
            name,
            url,
            pool,
            server_url,
        }
    }

    /// A database with the monolith's schema applied.
    pub async fn migrated() -> Self {
        let db = Self::new().await;
        ficus_monolith::MIGRATOR
            .run(&db.pool)
            .await
            .expect("applying the monolith's migrations");
        db
    }
}

/// `url` with its database name replaced.
pub(crate) fn database_url(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base[authority_end..].find('/') {
        Some(slash) => &base[..authority_end + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{database}?{query}"),
        None => format!("{base}/{database}"),
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop runs outside any async context we could borrow; a thread of its own with a small
        // runtime does the cleanup. The pool is not closed gracefully: that would wait for
        // connections that tasks of the (now blocked) test runtime still hold. WITH (FORCE)
        // ends them on the server side instead.
        let server_url = self.server_url.clone();
        let name = self.name.clone();
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a cleanup runtime");
            runtime.block_on(async move {
                if let Ok(mut admin) = PgConnection::connect(&server_url).await {
                    let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                    if let Err(error) = admin.execute(sql.as_str()).await {
                        eprintln!("dropping test database {name}: {error}");
                    }
                }
            });
        });
        let _ = cleanup.join();
    }
}

#[cfg(test)]
mod tests {
    use super::database_url;

    #[test]
    fn replaces_the_database_and_keeps_the_query() {
        assert_eq!(
            database_url("postgres://u:p@127.0.0.1:5/postgres", "x"),
            "postgres://u:p@127.0.0.1:5/x"
        );
        assert_eq!(
            database_url("postgres://u:p@h:5/postgres?sslmode=disable", "x"),
            "postgres://u:p@h:5/x?sslmode=disable"
        );
        assert_eq!(database_url("postgres://h:5", "x"), "postgres://h:5/x");
    }
}
