//! Keeps the stream consistent with the snapshot.
//!
//! A snapshot reads a table at an exported snapshot whose consistent point is an LSN: every
//! transaction with a commit record below it is in the rows read, every one at or above it is
//! not. The stream starts at the slot's position, which is at or below that point, so the
//! changes in between are already in the snapshot and must not be applied again.
//!
//! After a crash, a table's snapshot resumes after its last finished chunk at a new exported
//! snapshot. Its keys are then split in segments, each read at its own LSN: keys up to the
//! first segment's last key at the first LSN, the next ones at the next, and so on. A change of
//! a key is kept if and only if its transaction commits at or above the LSN of the key's segment.
//! Each row's history is thus: its snapshot state, then every change after it; no gap, no
//! double.
//!
//! One exception, after a crash: the chunk that was being sent when the adapter died may be
//! partly in the topic, read at the older segment's LSN. The new segment reads those keys again,
//! and the filter keeps their changes from the older LSN on, so their final state is right;
//! only those keys (at most one chunk) may see a state repeated or briefly older.

use std::cmp::Ordering;
use std::collections::HashMap;

use sqlx::PgPool;

use crate::catalog::Catalog;
use crate::decode::types::Kind;
use crate::error::CdcError;

/// Keys up to `upper` (inclusive; `None`: to the end) were read at `lsn`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub lsn: u64,
    pub upper: Option<Vec<String>>,
}

#[derive(Debug, Clone)]
struct TableWindow {
    segments: Vec<Segment>,
    /// SQL types of the key columns, for comparisons Rust cannot do (collations...).
    key_types: Vec<String>,
    key_kinds: Vec<Kind>,
}

/// The snapshot windows of every snapshotted table.
pub struct SnapshotFilter {
    tables: HashMap<(String, String), TableWindow>,
    max_lsn: u64,
    pool: Option<PgPool>,
}

impl SnapshotFilter {
    /// A filter that keeps everything.
    pub fn none() -> Self {
        Self {
            tables: HashMap::new(),
            max_lsn: 0,
            pool: None,
        }
    }

    /// The windows recorded in `_ficus.snapshot_progress` for `slot`.
    pub async fn load(catalog: &mut Catalog, slot: &str) -> Result<Self, CdcError> {
        // A segment's keys: up to its last acknowledged chunk, and the chunk in flight when
        // it was interrupted (its rows may be in the topic).
        type ProgressRow = (String, String, i32, String, Option<Vec<String>>, bool);
        type Segments = Vec<(u64, Option<Vec<String>>, bool)>;
        let rows: Vec<ProgressRow> = sqlx::query_as(
            "SELECT table_schema, table_name, segment, snapshot_lsn::text, \
                    COALESCE(inflight_key, last_key), done \
             FROM _ficus.snapshot_progress WHERE slot_name = $1 \
             ORDER BY table_schema, table_name, segment",
        )
        .bind(slot)
        .fetch_all(catalog.pool())
        .await
        .map_err(CdcError::pg("reading snapshot progress"))?;
        let mut grouped: HashMap<(String, String), Segments> = HashMap::new();
        for (schema, table, _segment, lsn, last_key, done) in rows {
            let lsn = pg_walstream::parse_lsn(&lsn)
                .map_err(|e| CdcError::Snapshot(format!("bad snapshot_lsn {lsn}: {e}")))?;
            grouped
                .entry((schema, table))
                .or_default()
                .push((lsn, last_key, done));
        }
        let mut tables = HashMap::new();
        for ((schema, table), rows) in grouped {
            let mut segments = Vec::new();
            for (lsn, last_key, done) in rows {
                if done {
                    segments.push(Segment { lsn, upper: None });
                    break;
                }
                if let Some(key) = last_key {
                    segments.push(Segment {
                        lsn,
                        upper: Some(key),
                    });
                }
            }
            if segments.is_empty() {
                continue;
            }
            let (key_types, key_kinds) = match catalog.table(&schema, &table).await? {
                Some(info) => {
                    let types = info.key_sql_types();
                    let mut kinds = Vec::new();
                    for name in &info.spec.primary_key {
                        let column = info
                            .spec
                            .columns
                            .iter()
                            .find(|c| &c.name == name)
                            .expect("a key column is a column");
                        kinds.push(catalog.kind(column.type_oid, column.type_modifier).await?);
                    }
                    (types, kinds)
                }
                None => (Vec::new(), Vec::new()),
            };
            tables.insert(
                (schema, table),
                TableWindow {
                    segments,
                    key_types,
                    key_kinds,
                },
            );
        }
        Ok(Self::from_windows(tables, Some(catalog.pool().clone())))
    }

    fn from_windows(tables: HashMap<(String, String), TableWindow>, pool: Option<PgPool>) -> Self {
        let max_lsn = tables
            .values()
            .flat_map(|t| t.segments.iter().map(|s| s.lsn))
            .max()
            .unwrap_or(0);
        Self {
            tables,
            max_lsn,
            pool,
        }
    }

    /// Whether a transaction committing at `commit_lsn` may fall in a snapshot window; when
    /// not (the usual case once streaming has passed the snapshot), nothing needs checking.
    pub fn active(&self, commit_lsn: u64) -> bool {
        commit_lsn < self.max_lsn
    }

    /// Whether a change of `key` (`None`: a table without primary key) in `schema.table`,
    /// committed at `commit_lsn`, is to be sent.
    pub async fn keep(
        &self,
        schema: &str,
        table: &str,
        key: Option<&[String]>,
        commit_lsn: u64,
    ) -> Result<bool, CdcError> {
        if !self.active(commit_lsn) {
            return Ok(true);
        }
        let Some(window) = self.tables.get(&(schema.to_owned(), table.to_owned())) else {
            return Ok(true);
        };
        let Some(key) = key else {
            // Without a key, a table is one segment: the last one read.
            let lsn = window.segments.last().map(|s| s.lsn).unwrap_or(0);
            return Ok(commit_lsn >= lsn);
        };
        for segment in &window.segments {
            let inside = match &segment.upper {
                None => true,
                Some(upper) => self.compare(window, key, upper).await? != Ordering::Greater,
            };
            if inside {
                return Ok(commit_lsn >= segment.lsn);
            }
        }
        // Beyond every segment read (the snapshot of this table never finished): the stream
        // is all there is.
        Ok(true)
    }

    /// A truncate is table-wide: sent when it commits at or above the table's latest segment
    /// (an earlier one is in every row read after it; a truncate between two segments of a
    /// resumed snapshot cannot be represented exactly and is dropped with a warning).
    pub fn keep_truncate(&self, schema: &str, table: &str, commit_lsn: u64) -> bool {
        let Some(window) = self.tables.get(&(schema.to_owned(), table.to_owned())) else {
            return true;
        };
        let first = window.segments.first().map(|s| s.lsn).unwrap_or(0);
        let last = window.segments.last().map(|s| s.lsn).unwrap_or(0);
        if commit_lsn >= last {
            return true;
        }
        if commit_lsn >= first {
            tracing::warn!(
                %schema, %table,
                "a truncate committed between two segments of a resumed snapshot; consumers may keep rows of the earlier segments"
            );
        }
        false
    }

    async fn compare(
        &self,
        window: &TableWindow,
        a: &[String],
        b: &[String],
    ) -> Result<Ordering, CdcError> {
        if let Some(ordering) = compare_fast(&window.key_kinds, a, b) {
            return Ok(ordering);
        }
        let Some(pool) = &self.pool else {
            return Ok(a.cmp(b));
        };
        // Let PostgreSQL compare, with the key's types and collations: the order the
        // snapshot's keyset pagination used.
        let n = window.key_types.len();
        let left: Vec<String> = (0..n)
            .map(|i| format!("(${}::text)::{}", i + 1, window.key_types[i]))
            .collect();
        let right: Vec<String> = (0..n)
            .map(|i| format!("(${}::text)::{}", n + i + 1, window.key_types[i]))
            .collect();
        let sql = format!(
            "SELECT CASE WHEN ROW({l}) < ROW({r}) THEN -1 WHEN ROW({l}) = ROW({r}) THEN 0 ELSE 1 END",
            l = left.join(", "),
            r = right.join(", ")
        );
        let mut query = sqlx::query_as::<_, (i32,)>(&sql);
        for value in a.iter().chain(b.iter()) {
            query = query.bind(value);
        }
        let (c,) = query
            .fetch_one(pool)
            .await
            .map_err(CdcError::pg("comparing a key with a snapshot boundary"))?;
        Ok(c.cmp(&0))
    }
}

/// Compares keys in Rust when every column's order is known: integers numerically, uuids and
/// booleans by their text (fixed-format, so the text order is the value order).
fn compare_fast(kinds: &[Kind], a: &[String], b: &[String]) -> Option<Ordering> {
    if kinds.is_empty() || kinds.len() != a.len() || a.len() != b.len() {
        return None;
    }
    for ((kind, x), y) in kinds.iter().zip(a).zip(b) {
        let ordering = match kind {
            Kind::Int(_) => x.parse::<i128>().ok()?.cmp(&y.parse::<i128>().ok()?),
            Kind::Uuid | Kind::Bool => x.to_ascii_lowercase().cmp(&y.to_ascii_lowercase()),
            _ => return None,
        };
        if ordering != Ordering::Equal {
            return Some(ordering);
        }
    }
    Some(Ordering::Equal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::types::{IntType, TextType};

    fn filter(segments: Vec<Segment>) -> SnapshotFilter {
        let mut tables = HashMap::new();
        tables.insert(
            ("public".to_owned(), "t".to_owned()),
            TableWindow {
                segments,
                key_types: vec!["bigint".to_owned()],
                key_kinds: vec![Kind::Int(IntType::Int32)],
            },
        );
        SnapshotFilter::from_windows(tables, None)
    }

    fn key(n: i64) -> Vec<String> {
        vec![n.to_string()]
    }

    #[tokio::test]
    async fn one_segment_drops_what_committed_before_it() {
        let f = filter(vec![Segment {
            lsn: 100,
            upper: None,
        }]);
        assert!(!f.keep("public", "t", Some(&key(5)), 99).await.unwrap());
        assert!(f.keep("public", "t", Some(&key(5)), 100).await.unwrap());
        assert!(f.keep("public", "other", Some(&key(5)), 1).await.unwrap());
        assert!(!f.active(100));
        assert!(f.active(99));
    }

    #[tokio::test]
    async fn each_key_is_judged_by_its_segment() {
        // Keys up to 10 read at LSN 100, the rest (a resumed snapshot) at LSN 300.
        let f = filter(vec![
            Segment {
                lsn: 100,
                upper: Some(key(10)),
            },
            Segment {
                lsn: 300,
                upper: None,
            },
        ]);
        assert!(f.keep("public", "t", Some(&key(10)), 150).await.unwrap());
        assert!(!f.keep("public", "t", Some(&key(11)), 150).await.unwrap());
        assert!(!f.keep("public", "t", Some(&key(3)), 99).await.unwrap());
        assert!(f.keep("public", "t", Some(&key(11)), 300).await.unwrap());
        assert!(!f.keep("public", "t", Some(&key(1000)), 299).await.unwrap());
        assert!(f.keep_truncate("public", "t", 300));
        assert!(!f.keep_truncate("public", "t", 200));
    }

    #[test]
    fn fast_comparisons() {
        assert_eq!(
            compare_fast(&[Kind::Int(IntType::Int32)], &key(9), &key(10)),
            Some(Ordering::Less)
        );
        assert_eq!(
            compare_fast(
                &[Kind::Int(IntType::Int32), Kind::Int(IntType::Int32)],
                &[s("1"), s("2")],
                &[s("1"), s("1")]
            ),
            Some(Ordering::Greater)
        );
        assert_eq!(
            compare_fast(&[Kind::Text(TextType::Plain)], &[s("a")], &[s("b")]),
            None
        );
    }

    fn s(v: &str) -> String {
        v.to_owned()
    }
}
