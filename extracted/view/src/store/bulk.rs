//! The PostgreSQL store's batch apply (store -> one transaction): a batch's changes in a few
//! multi-row statements instead of one round trip per change. Every statement passes its rows
//! as arrays (`unnest($1::bigint[], $2::text[], ...)`) and keeps the guard in the SQL.
//!
//! Changes of different keys commute; only a key's own changes and truncates are ordered. So
//! the changes between two truncates are laid out in groups of one kind (upserts with the same
//! unchanged-TOAST columns, deletes, tombstones), each change in the first group of its kind
//! after its key's previous group: `u u d t u` over distinct keys is three statements, and a
//! batch of updates is one. Within a group a key may come several times; the statement writes
//! the newest of them (the one that supersedes the others) and counts as applied exactly the
//! changes the one-by-one apply would have applied: those newer than every earlier change of
//! their key in the group (decided here) and than the stored row, the key's last delete and the
//! view's last truncate (decided in SQL, against the state before the statement).

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::PgConnection;

use super::sql::{DELETES_TABLE, Statements, TRUNCATES_TABLE, newer, quote};
use super::{Batch, Change, Outcome, Progress, lsn};
use crate::error::ViewError;
use crate::event::Position;
use crate::view::{COMMIT_LSN_COLUMN, Cell, ColumnType, LSN_COLUMN, PARTITION_COLUMN, ViewSpec};

/// What a group's statement does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Upserts whose unchanged (not carried) columns are these bits.
    Upsert(u64),
    Delete,
    Tombstone,
}

fn unchanged_mask(cells: &[Cell]) -> u64 {
    cells
        .iter()
        .enumerate()
        .filter(|(_, c)| **c == Cell::Unchanged)
        .fold(0u64, |mask, (i, _)| mask | (1 << i.min(63)))
}

/// One array parameter: a column's values, typed as the column.
enum Array {
    Bool(Vec<Option<bool>>),
    Int(Vec<Option<i64>>),
    Float(Vec<Option<f64>>),
    Text(Vec<Option<String>>),
    Timestamp(Vec<Option<DateTime<Utc>>>),
    Date(Vec<Option<NaiveDate>>),
}

impl Array {
    fn new(ty: ColumnType) -> Self {
        match ty {
            ColumnType::Bool => Array::Bool(Vec::new()),
            ColumnType::BigInt => Array::Int(Vec::new()),
            ColumnType::Double => Array::Float(Vec::new()),
            ColumnType::Text | ColumnType::Numeric | ColumnType::Json => Array::Text(Vec::new()),
            ColumnType::TimestampTz => Array::Timestamp(Vec::new()),
            ColumnType::Date => Array::Date(Vec::new()),
        }
    }

    /// Appends a cell; a cell of another type than the column's (cells are decoded by the
    /// column's type, so only by a bug) is refused.
    fn push(&mut self, cell: &Cell) -> Result<(), String> {
        match (self, cell) {
            (Array::Bool(v), Cell::Null | Cell::Unchanged) => v.push(None),
            (Array::Int(v), Cell::Null | Cell::Unchanged) => v.push(None),
            (Array::Float(v), Cell::Null | Cell::Unchanged) => v.push(None),
            (Array::Text(v), Cell::Null | Cell::Unchanged) => v.push(None),
            (Array::Timestamp(v), Cell::Null | Cell::Unchanged) => v.push(None),
            (Array::Date(v), Cell::Null | Cell::Unchanged) => v.push(None),
            (Array::Bool(v), Cell::Bool(b)) => v.push(Some(*b)),
            (Array::Int(v), Cell::Int(i)) => v.push(Some(*i)),
            (Array::Float(v), Cell::Float(f)) => v.push(Some(*f)),
            (Array::Float(v), Cell::Int(i)) => v.push(Some(*i as f64)),
            (Array::Text(v), Cell::Text(t)) => v.push(Some(t.clone())),
            (Array::Timestamp(v), Cell::Timestamp(t)) => v.push(Some(*t)),
            (Array::Date(v), Cell::Date(d)) => v.push(Some(*d)),
            (_, other) => return Err(format!("a {other:?} in a column of another type")),
        }
        Ok(())
    }
}

/// Binds the arrays on a query (`query` or `query_as`) in order.
macro_rules! bind_arrays {
    ($query:expr, $arrays:expr) => {{
        let mut query = $query;
        for array in $arrays {
            query = match array {
                Array::Bool(v) => query.bind(v),
                Array::Int(v) => query.bind(v),
                Array::Float(v) => query.bind(v),
                Array::Text(v) => query.bind(v),
                Array::Timestamp(v) => query.bind(v),
                Array::Date(v) => query.bind(v),
            };
        }
        query
    }};
}

/// The array type of a column's parameter.
fn array_type(ty: ColumnType) -> String {
    format!("{}[]", ty.postgres())
}

/// Writes a batch's changes, prunes and offsets on `conn` (inside a transaction).
pub(super) async fn apply(
    conn: &mut PgConnection,
    spec: &ViewSpec,
    statements: &Statements,
    batch: &Batch,
) -> Result<Outcome, ViewError> {
    let mut outcome = Outcome::default();
    let mut groups: Vec<(Kind, Vec<&Change>)> = Vec::new();
    let mut last_group: HashMap<&str, usize> = HashMap::new();
    for change in &batch.changes {
        let (kind, key) = match change {
            Change::Upsert { key, cells, .. } => (Kind::Upsert(unchanged_mask(cells)), key),
            Change::Delete { key, .. } => (Kind::Delete, key),
            Change::Tombstone { key, .. } => (Kind::Tombstone, key),
            Change::Truncate { position } => {
                // A barrier: everything before it, then it, then what follows.
                for (kind, members) in groups.drain(..) {
                    run_group(conn, spec, kind, &members, &mut outcome).await?;
                }
                last_group.clear();
                truncate(conn, spec, statements, position, &mut outcome).await?;
                continue;
            }
        };
        let from = last_group.get(key.as_str()).copied().unwrap_or(0);
        let at = match groups.iter().skip(from).position(|(k, _)| *k == kind) {
            Some(i) => from + i,
            None => {
                groups.push((kind, Vec::new()));
                groups.len() - 1
            }
        };
        groups[at].1.push(change);
        last_group.insert(key, at);
    }
    for (kind, members) in groups {
        run_group(conn, spec, kind, &members, &mut outcome).await?;
    }
    for (partition, cutoff_ms) in &batch.prune_deletes {
        let result = sqlx::query(&statements.prune_deletes)
            .bind(Some(spec.name.clone()))
            .bind(Some(*partition))
            .bind(Some(*cutoff_ms))
            .execute(&mut *conn)
            .await
            .map_err(ViewError::store("pruning deletes"))?;
        outcome.pruned += result.rows_affected();
    }
    store_offsets(conn, &spec.name, &spec.topic, &batch.offsets).await?;
    Ok(outcome)
}

/// The offsets of a batch's partitions, in one statement.
pub(super) async fn store_offsets(
    conn: &mut PgConnection,
    view: &str,
    topic: &str,
    offsets: &BTreeMap<i32, Progress>,
) -> Result<(), ViewError> {
    if offsets.is_empty() {
        return Ok(());
    }
    let partitions: Vec<i32> = offsets.keys().copied().collect();
    let next: Vec<i64> = offsets.values().map(|p| p.next_offset).collect();
    let events: Vec<i64> = offsets.values().map(|p| p.events).collect();
    sqlx::query(&format!(
        "INSERT INTO {} (view, topic, \"partition\", next_offset, events) \
         SELECT $1::text, $2::text, p, o, e FROM unnest($3::integer[], $4::bigint[], $5::bigint[]) AS u(p, o, e) \
         ON CONFLICT (view, topic, \"partition\") DO UPDATE SET \
         next_offset = excluded.next_offset, events = {0}.events + excluded.events",
        super::OFFSETS_TABLE
    ))
    .bind(view)
    .bind(topic)
    .bind(partitions)
    .bind(next)
    .bind(events)
    .execute(&mut *conn)
    .await
    .map_err(ViewError::store("storing offsets"))?;
    Ok(())
}

async fn truncate(
    conn: &mut PgConnection,
    spec: &ViewSpec,
    statements: &Statements,
    position: &Position,
    outcome: &mut Outcome,
) -> Result<(), ViewError> {
    sqlx::query(&statements.truncate_rows)
        .bind(position.commit_lsn.map(lsn))
        .bind(Some(lsn(position.lsn)))
        .execute(&mut *conn)
        .await
        .map_err(ViewError::store("truncating"))?;
    let result = sqlx::query(&statements.record_truncate)
        .bind(Some(spec.name.clone()))
        .bind(position.commit_lsn.map(lsn))
        .bind(Some(lsn(position.lsn)))
        .execute(&mut *conn)
        .await
        .map_err(ViewError::store("recording a truncate"))?;
    if result.rows_affected() > 0 {
        outcome.applied += 1;
    } else {
        outcome.stale += 1;
    }
    Ok(())
}

/// Of a group's changes, the ones to send (each newer than every earlier one of its key in the
/// group), with the newest of each key marked; the others are stale.
fn running_newest<'a>(
    members: &[&'a Change],
    key_position: impl Fn(&Change) -> (&str, Position),
) -> (Vec<(&'a Change, bool)>, u64) {
    let mut newest: HashMap<&str, (Position, usize)> = HashMap::new();
    let mut sent: Vec<(&'a Change, bool)> = Vec::new();
    let mut stale = 0;
    for change in members {
        let (key, position) = key_position(change);
        match newest.get_mut(key) {
            Some((top, _)) if !position.supersedes(top) => stale += 1,
            Some((top, at)) => {
                sent[*at].1 = false;
                *top = position;
                *at = sent.len();
                sent.push((change, true));
            }
            None => {
                newest.insert(key, (position, sent.len()));
                sent.push((change, true));
            }
        }
    }
    (sent, stale)
}

fn value_error(spec: &ViewSpec, message: String) -> ViewError {
    ViewError::Declaration(format!("view {}: {message}", spec.name))
}

async fn run_group(
    conn: &mut PgConnection,
    spec: &ViewSpec,
    kind: Kind,
    members: &[&Change],
    outcome: &mut Outcome,
) -> Result<(), ViewError> {
    match kind {
        Kind::Upsert(mask) => upserts(conn, spec, mask, members, outcome).await,
        Kind::Delete => deletes(conn, spec, members, outcome).await,
        Kind::Tombstone => tombstones(conn, spec, members, outcome).await,
    }
}

/// `unnest(...) AS u(c0, ..., cN-1, <extra names>)` over the given array types.
fn unnest(types: &[String], first_extra: usize, extras: &[(&str, &str)]) -> String {
    let mut params = Vec::new();
    let mut names = Vec::new();
    for (i, ty) in types.iter().enumerate() {
        params.push(format!("${}::{ty}", i + 1));
        names.push(format!("c{i}"));
    }
    for (j, (name, ty)) in extras.iter().enumerate() {
        params.push(format!("${}::{ty}", first_extra + j));
        names.push((*name).to_owned());
    }
    format!("unnest({}) AS u({})", params.join(", "), names.join(", "))
}

/// `t.k0 = i.c0 AND ...` over the key columns (their indexes among the unnest columns).
fn key_match(spec: &ViewSpec, key_indexes: &[usize]) -> String {
    spec.key_columns()
        .zip(key_indexes)
        .map(|(c, i)| format!("t.{} = i.c{i}", quote(&c.name)))
        .collect::<Vec<_>>()
        .join(" AND ")
}

fn row_position() -> (String, String) {
    (format!("t.{COMMIT_LSN_COLUMN}"), format!("t.{LSN_COLUMN}"))
}

fn upsert_sql(spec: &ViewSpec, mask: u64) -> String {
    let table = quote(&spec.name);
    let n = spec.columns.len();
    let types: Vec<String> = spec.columns.iter().map(|c| array_type(c.ty)).collect();
    let from = unnest(
        &types,
        n + 1,
        &[
            ("_c", "bigint[]"),
            ("_l", "bigint[]"),
            ("_k", "text[]"),
            ("_p", "integer[]"),
            ("_w", "boolean[]"),
        ],
    );
    let view = format!("${}::text", n + 6);
    let key_indexes: Vec<usize> = spec
        .columns
        .iter()
        .enumerate()
        .filter(|(_, c)| c.key)
        .map(|(i, _)| i)
        .collect();
    let input = ("i._c", "i._l");
    let (rc, rl) = row_position();
    let names: Vec<String> = spec.columns.iter().map(|c| quote(&c.name)).collect();
    let values: Vec<String> = (0..n).map(|i| format!("c{i}")).collect();
    let keys: Vec<String> = spec.key_columns().map(|c| quote(&c.name)).collect();
    let mut sets: Vec<String> = spec
        .columns
        .iter()
        .enumerate()
        .filter(|(i, c)| !c.key && mask & (1 << (*i).min(63)) == 0)
        .map(|(_, c)| format!("{0} = excluded.{0}", quote(&c.name)))
        .collect();
    for column in [COMMIT_LSN_COLUMN, LSN_COLUMN, PARTITION_COLUMN] {
        sets.push(format!("{column} = excluded.{column}"));
    }
    format!(
        "WITH i AS (SELECT * FROM {from}), \
         fresh AS (SELECT i.* FROM i \
           WHERE NOT EXISTS (SELECT 1 FROM {DELETES_TABLE} m WHERE m.view = {view} AND m.key = i._k AND NOT {m_newer}) \
           AND NOT EXISTS (SELECT 1 FROM {TRUNCATES_TABLE} x WHERE x.view = {view} AND NOT {x_newer}) \
           AND NOT EXISTS (SELECT 1 FROM {table} t WHERE {key_match} AND NOT {t_newer})), \
         up AS (INSERT INTO {table} ({names}, {COMMIT_LSN_COLUMN}, {LSN_COLUMN}, {PARTITION_COLUMN}) \
           SELECT {values}, _c, _l, _p FROM fresh WHERE _w \
           ON CONFLICT ({keys}) DO UPDATE SET {sets} WHERE {row_newer} RETURNING 1) \
         SELECT (SELECT count(*) FROM fresh), (SELECT count(*) FROM up)",
        m_newer = newer(input, ("m.commit_lsn", "m.lsn")),
        x_newer = newer(input, ("x.commit_lsn", "x.lsn")),
        key_match = key_match(spec, &key_indexes),
        t_newer = newer(input, (&rc, &rl)),
        names = names.join(", "),
        values = values.join(", "),
        keys = keys.join(", "),
        sets = sets.join(", "),
        row_newer = newer(
            (
                &format!("excluded.{COMMIT_LSN_COLUMN}"),
                &format!("excluded.{LSN_COLUMN}")
            ),
            (
                &format!("{table}.{COMMIT_LSN_COLUMN}"),
                &format!("{table}.{LSN_COLUMN}")
            )
        ),
    )
}

async fn upserts(
    conn: &mut PgConnection,
    spec: &ViewSpec,
    mask: u64,
    members: &[&Change],
    outcome: &mut Outcome,
) -> Result<(), ViewError> {
    let (sent, stale) = running_newest(members, |change| match change {
        Change::Upsert { key, position, .. } => (key.as_str(), *position),
        _ => unreachable!("an upsert group holds upserts"),
    });
    outcome.stale += stale;
    let mut columns: Vec<Array> = spec.columns.iter().map(|c| Array::new(c.ty)).collect();
    let (mut commits, mut lsns, mut keys, mut partitions, mut winners) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (change, winner) in &sent {
        let Change::Upsert {
            key,
            cells,
            position,
            partition,
        } = change
        else {
            unreachable!("an upsert group holds upserts")
        };
        for (array, cell) in columns.iter_mut().zip(cells) {
            array.push(cell).map_err(|m| value_error(spec, m))?;
        }
        commits.push(position.commit_lsn.map(lsn));
        lsns.push(lsn(position.lsn));
        keys.push(key.clone());
        partitions.push(*partition);
        winners.push(*winner);
    }
    let sql = upsert_sql(spec, mask);
    let query = bind_arrays!(sqlx::query_as::<_, (i64, i64)>(&sql), columns);
    let (fresh, _written): (i64, i64) = query
        .bind(commits)
        .bind(lsns)
        .bind(keys)
        .bind(partitions)
        .bind(winners)
        .bind(&spec.name)
        .fetch_one(&mut *conn)
        .await
        .map_err(ViewError::store("upserting rows"))?;
    let fresh = u64::try_from(fresh).unwrap_or(0);
    outcome.applied += fresh;
    outcome.stale += sent.len() as u64 - fresh.min(sent.len() as u64);
    Ok(())
}

fn key_arrays(spec: &ViewSpec) -> Vec<Array> {
    spec.key_columns().map(|c| Array::new(c.ty)).collect()
}

fn key_types(spec: &ViewSpec) -> Vec<String> {
    spec.key_columns().map(|c| array_type(c.ty)).collect()
}

async fn deletes(
    conn: &mut PgConnection,
    spec: &ViewSpec,
    members: &[&Change],
    outcome: &mut Outcome,
) -> Result<(), ViewError> {
    let (sent, stale) = running_newest(members, |change| match change {
        Change::Delete { key, position, .. } => (key.as_str(), *position),
        _ => unreachable!("a delete group holds deletes"),
    });
    outcome.stale += stale;
    let mut columns = key_arrays(spec);
    let (mut commits, mut lsns, mut keys, mut partitions, mut appended, mut winners) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    for (change, winner) in &sent {
        let Change::Delete {
            key,
            key_cells,
            position,
            partition,
            appended_ms,
        } = change
        else {
            unreachable!("a delete group holds deletes")
        };
        for (array, cell) in columns.iter_mut().zip(key_cells) {
            array.push(cell).map_err(|m| value_error(spec, m))?;
        }
        commits.push(position.commit_lsn.map(lsn));
        lsns.push(lsn(position.lsn));
        keys.push(key.clone());
        partitions.push(*partition);
        appended.push(*appended_ms);
        winners.push(*winner);
    }
    let table = quote(&spec.name);
    let k = columns.len();
    let from = unnest(
        &key_types(spec),
        k + 1,
        &[
            ("_c", "bigint[]"),
            ("_l", "bigint[]"),
            ("_k", "text[]"),
            ("_p", "integer[]"),
            ("_a", "bigint[]"),
            ("_w", "boolean[]"),
        ],
    );
    let view = format!("${}::text", k + 7);
    let key_indexes: Vec<usize> = (0..k).collect();
    let input = ("i._c", "i._l");
    let (rc, rl) = row_position();
    let sql = format!(
        "WITH i AS (SELECT * FROM {from}), \
         gone AS (DELETE FROM {table} t USING i WHERE i._w AND {key_match} AND {t_newer} RETURNING 1), \
         fresh AS (SELECT 1 FROM i WHERE NOT EXISTS (SELECT 1 FROM {DELETES_TABLE} m \
           WHERE m.view = {view} AND m.key = i._k AND NOT {m_newer})), \
         rec AS (INSERT INTO {DELETES_TABLE} (view, key, commit_lsn, lsn, \"partition\", appended_ms) \
           SELECT {view}, _k, _c, _l, _p, _a FROM i WHERE _w \
           ON CONFLICT (view, key) DO UPDATE SET commit_lsn = excluded.commit_lsn, lsn = excluded.lsn, \
           \"partition\" = excluded.\"partition\", appended_ms = excluded.appended_ms WHERE {d_newer} RETURNING 1) \
         SELECT (SELECT count(*) FROM fresh), (SELECT count(*) FROM gone) + (SELECT count(*) FROM rec)",
        key_match = key_match(spec, &key_indexes),
        t_newer = newer(input, (&rc, &rl)),
        m_newer = newer(input, ("m.commit_lsn", "m.lsn")),
        d_newer = newer(
            ("excluded.commit_lsn", "excluded.lsn"),
            (
                &format!("{DELETES_TABLE}.commit_lsn"),
                &format!("{DELETES_TABLE}.lsn")
            )
        ),
    );
    let query = bind_arrays!(sqlx::query_as::<_, (i64, i64)>(&sql), columns);
    let (fresh, _): (i64, i64) = query
        .bind(commits)
        .bind(lsns)
        .bind(keys)
        .bind(partitions)
        .bind(appended)
        .bind(winners)
        .bind(&spec.name)
        .fetch_one(&mut *conn)
        .await
        .map_err(ViewError::store("deleting rows"))?;
    let fresh = u64::try_from(fresh).unwrap_or(0);
    outcome.applied += fresh;
    outcome.stale += sent.len() as u64 - fresh.min(sent.len() as u64);
    Ok(())
}

async fn tombstones(
    conn: &mut PgConnection,
    spec: &ViewSpec,
    members: &[&Change],
    outcome: &mut Outcome,
) -> Result<(), ViewError> {
    let mut columns = key_arrays(spec);
    let mut keys = Vec::new();
    for change in members {
        let Change::Tombstone { key, key_cells } = change else {
            unreachable!("a tombstone group holds tombstones")
        };
        for (array, cell) in columns.iter_mut().zip(key_cells) {
            array.push(cell).map_err(|m| value_error(spec, m))?;
        }
        keys.push(key.clone());
    }
    let table = quote(&spec.name);
    let k = columns.len();
    let from = unnest(&key_types(spec), k + 1, &[("_k", "text[]")]);
    let view = format!("${}::text", k + 2);
    let key_indexes: Vec<usize> = (0..k).collect();
    let (rc, rl) = row_position();
    // A tombstone deletes its key unless the stored row is newer than the key's last delete.
    let sql = format!(
        "DELETE FROM {table} t USING (SELECT * FROM {from}) i WHERE {key_match} \
         AND NOT EXISTS (SELECT 1 FROM {DELETES_TABLE} m WHERE m.view = {view} AND m.key = i._k AND {row_newer})",
        key_match = key_match(spec, &key_indexes),
        row_newer = newer((&rc, &rl), ("m.commit_lsn", "m.lsn")),
    );
    let query = bind_arrays!(sqlx::query(&sql), columns);
    let result = query
        .bind(keys)
        .bind(&spec.name)
        .execute(&mut *conn)
        .await
        .map_err(ViewError::store("applying tombstones"))?;
    // A tombstone after its delete finds nothing to do: that is not staleness.
    outcome.applied += result.rows_affected();
    Ok(())
}
