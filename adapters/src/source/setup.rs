//! Before streaming: logical decoding is on, no role is named like ficus's schema, the
//! publication exists (created when missing, for
//! all tables or the listed ones, plus ficus's heartbeat and the outboxes), and the slot exists
//! (created with `pgoutput` when missing).

use sqlx::PgPool;

use crate::catalog::quote_ident;
use crate::config::{CdcConfig, split_table};
use crate::error::CdcError;
use crate::migrations;

/// PostgreSQL's `duplicate_object`: someone created it first.
const DUPLICATE_OBJECT: &str = "42710";

/// Refuses a server without `wal_level = logical`.
/// Checks the server can serve logical decoding; returns its version number
/// (`server_version_num`, e.g. 150004).
pub async fn check_server(pool: &PgPool) -> Result<u32, CdcError> {
    let (wal_level,): (String,) = sqlx::query_as("SHOW wal_level")
        .fetch_one(pool)
        .await
        .map_err(CdcError::pg("reading wal_level"))?;
    if wal_level != "logical" {
        return Err(CdcError::Operator {
            cause: "wal_level",
            message: format!(
                "the server runs with wal_level = {wal_level}; logical decoding needs wal_level = logical (and a restart)"
            ),
        });
    }
    let (version,): (i32,) = sqlx::query_as("SELECT current_setting('server_version_num')::int")
        .fetch_one(pool)
        .await
        .map_err(CdcError::pg("reading server_version_num"))?;
    Ok(u32::try_from(version).unwrap_or_default())
}

/// Refuses a database where a role is named like ficus's schema ([`migrations::SCHEMA`]).
///
/// PostgreSQL's default `search_path` is `"$user", public`: every session of such a role
/// would resolve unqualified names into ficus's schema first, so an application connecting as
/// that role would create its tables there and write rows the adapter never captures. Roles
/// are cluster-wide, so any role of that name counts, whoever the adapter connects as.
pub async fn check_schema_role(pool: &PgPool) -> Result<(), CdcError> {
    let role: Option<(String, bool)> =
        sqlx::query_as("SELECT rolname::text, rolcanlogin FROM pg_roles WHERE rolname = $1")
            .bind(migrations::SCHEMA)
            .fetch_optional(pool)
            .await
            .map_err(CdcError::pg("reading pg_roles"))?;
    match role {
        None => Ok(()),
        Some((name, can_login)) => Err(CdcError::Operator {
            cause: "schema_role",
            message: format!(
                "a role named {name:?}{} exists: with PostgreSQL's default search_path (\"$user\", public) \
                 its sessions resolve unqualified table names into ficus's own schema {schema:?}, so an \
                 application connecting as it would create tables there that are never captured; \
                 rename the role (ALTER ROLE \"{name}\" RENAME TO ...) and start the adapter again",
                if can_login { " (a login role)" } else { "" },
                schema = migrations::SCHEMA,
            ),
        }),
    }
}

/// Creates the publication when missing; adds missing listed tables to a listed one.
pub async fn ensure_publication(pool: &PgPool, config: &CdcConfig) -> Result<(), CdcError> {
    let existing: Option<(bool,)> =
        sqlx::query_as("SELECT puballtables FROM pg_publication WHERE pubname = $1")
            .bind(&config.publication)
            .fetch_optional(pool)
            .await
            .map_err(CdcError::pg("reading pg_publication"))?;
    let mut wanted: Vec<String> = config.tables.clone();
    if !wanted.is_empty() {
        wanted.push("_ficus.heartbeat".to_owned());
        wanted.extend(config.outbox.iter().map(|o| o.table.clone()));
        wanted.dedup();
    }
    let qualified = |name: &str| {
        let (schema, table) = split_table(name).unwrap_or(("public", name));
        format!("{}.{}", quote_ident(schema), quote_ident(table))
    };
    match existing {
        Some((true,)) => Ok(()),
        Some((false,)) => {
            if wanted.is_empty() {
                return Ok(());
            }
            let present: Vec<(String,)> = sqlx::query_as(
                "SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = $1",
            )
            .bind(&config.publication)
            .fetch_all(pool)
            .await
            .map_err(CdcError::pg("reading the publication's tables"))?;
            for table in &wanted {
                if present.iter().any(|(p,)| p == table) {
                    continue;
                }
                let sql = format!(
                    "ALTER PUBLICATION {} ADD TABLE {}",
                    quote_ident(&config.publication),
                    qualified(table)
                );
                sqlx::query(&sql)
                    .execute(pool)
                    .await
                    .map_err(CdcError::pg(format!("adding {table} to the publication")))?;
                tracing::info!(publication = %config.publication, %table, "table added to the publication");
            }
            Ok(())
        }
        None => {
            let sql = if wanted.is_empty() {
                format!(
                    "CREATE PUBLICATION {} FOR ALL TABLES",
                    quote_ident(&config.publication)
                )
            } else {
                let tables: Vec<String> = wanted.iter().map(|t| qualified(t)).collect();
                format!(
                    "CREATE PUBLICATION {} FOR TABLE {}",
                    quote_ident(&config.publication),
                    tables.join(", ")
                )
            };
            match sqlx::query(&sql).execute(pool).await {
                Ok(_) => {
                    tracing::info!(publication = %config.publication, "publication created");
                    Ok(())
                }
                Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some(DUPLICATE_OBJECT) => {
                    Ok(())
                }
                Err(e) => Err(CdcError::pg(format!(
                    "creating publication {}",
                    config.publication
                ))(e)),
            }
        }
    }
}

/// Creates the slot when missing; says whether it did. An existing slot must be a logical
/// `pgoutput` slot of this database.
pub async fn ensure_slot(pool: &PgPool, slot: &str) -> Result<bool, CdcError> {
    let existing: Option<(Option<String>, Option<String>, String)> = sqlx::query_as(
        "SELECT plugin::text, database::text, current_database()::text \
         FROM pg_replication_slots WHERE slot_name = $1",
    )
    .bind(slot)
    .fetch_optional(pool)
    .await
    .map_err(CdcError::pg("reading pg_replication_slots"))?;
    if let Some((plugin, database, current)) = existing {
        if plugin.as_deref() != Some("pgoutput") {
            return Err(CdcError::Operator {
                cause: "slot_plugin",
                message: format!(
                    "slot {slot} exists with output plugin {} instead of pgoutput: drop it or configure another slot name",
                    plugin.as_deref().unwrap_or("none (a physical slot)")
                ),
            });
        }
        if database.as_deref() != Some(current.as_str()) {
            return Err(CdcError::Operator {
                cause: "slot_database",
                message: format!(
                    "slot {slot} belongs to database {}, not {current}: configure another slot name",
                    database.as_deref().unwrap_or("?")
                ),
            });
        }
        return Ok(false);
    }
    match sqlx::query("SELECT pg_create_logical_replication_slot($1, 'pgoutput')")
        .bind(slot)
        .execute(pool)
        .await
    {
        Ok(_) => {
            tracing::info!(%slot, "replication slot created");
            Ok(true)
        }
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some(DUPLICATE_OBJECT) => Ok(false),
        Err(e) => Err(CdcError::pg(format!("creating replication slot {slot}"))(e)),
    }
}
