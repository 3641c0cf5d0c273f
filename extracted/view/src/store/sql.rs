//! The SQL of a view's store, written once for both dialects (SQLite `?N`, PostgreSQL `$N::type`).
//! Every write carries the guard: a change lands only if its source position supersedes the
//! row's, the key's last delete and the view's last truncate (see [`crate::event::Position`]).

use crate::view::{COMMIT_LSN_COLUMN, ColumnType, LSN_COLUMN, PARTITION_COLUMN, ViewSpec};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// The bookkeeping tables, beside the views' own.
pub const OFFSETS_TABLE: &str = "ficus_view_offsets";
pub const DELETES_TABLE: &str = "ficus_view_deletes";
pub const TRUNCATES_TABLE: &str = "ficus_view_truncates";
/// Per group of transactional views: the position of the last transaction END applied.
pub const TRANSACTIONS_TABLE: &str = "ficus_view_transactions";

impl Dialect {
    /// Parameter `n` (1-based) of SQL type `ty` (PostgreSQL casts, so nulls and text-encoded
    /// values take the column's type).
    fn param(self, n: usize, ty: &str) -> String {
        match self {
            Dialect::Sqlite => format!("?{n}"),
            Dialect::Postgres => format!("${n}::{ty}"),
        }
    }

    fn column_type(self, ty: ColumnType) -> &'static str {
        match self {
            Dialect::Sqlite => ty.sqlite(),
            Dialect::Postgres => ty.postgres(),
        }
    }

    fn int8(self) -> &'static str {
        match self {
            Dialect::Sqlite => "INTEGER",
            Dialect::Postgres => "bigint",
        }
    }

    /// The bookkeeping tables.
    pub fn bookkeeping_ddl(self) -> Vec<String> {
        let int8 = self.int8();
        vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {OFFSETS_TABLE} (view TEXT NOT NULL, topic TEXT NOT NULL, \
                 \"partition\" INTEGER NOT NULL, next_offset {int8} NOT NULL, events {int8} NOT NULL, \
                 PRIMARY KEY (view, topic, \"partition\"))"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {DELETES_TABLE} (view TEXT NOT NULL, key TEXT NOT NULL, \
                 commit_lsn {int8}, lsn {int8} NOT NULL, \"partition\" INTEGER, appended_ms {int8}, \
                 PRIMARY KEY (view, key))"
            ),
            format!(
                "CREATE INDEX IF NOT EXISTS {DELETES_TABLE}_by_age ON {DELETES_TABLE} \
                 (view, \"partition\", appended_ms)"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {TRUNCATES_TABLE} (view TEXT NOT NULL PRIMARY KEY, \
                 commit_lsn {int8}, lsn {int8} NOT NULL)"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {TRANSACTIONS_TABLE} (view TEXT NOT NULL PRIMARY KEY, \
                 last_end_lsn {int8} NOT NULL)"
            ),
        ]
    }

    /// Parameters: group, the last END's position.
    pub fn store_last_end_sql(self) -> String {
        format!(
            "INSERT INTO {TRANSACTIONS_TABLE} (view, last_end_lsn) VALUES ({}, {}) \
             ON CONFLICT (view) DO UPDATE SET last_end_lsn = excluded.last_end_lsn",
            self.param(1, "text"),
            self.param(2, self.int8()),
        )
    }

    /// Parameters: group, its transaction topic. Forgets where the group stands in the
    /// transaction topic (a rebuild of its views).
    pub fn forget_group_offsets_sql(self) -> String {
        format!(
            "DELETE FROM {OFFSETS_TABLE} WHERE view = {} AND topic = {}",
            self.param(1, "text"),
            self.param(2, "text")
        )
    }

    /// Parameters: group. Forgets the last END the group took (a rebuild of its views).
    pub fn forget_last_end_sql(self) -> String {
        format!(
            "DELETE FROM {TRANSACTIONS_TABLE} WHERE view = {}",
            self.param(1, "text")
        )
    }

    /// Parameters: group.
    pub fn load_last_end_sql(self) -> String {
        format!(
            "SELECT last_end_lsn FROM {TRANSACTIONS_TABLE} WHERE view = {}",
            self.param(1, "text")
        )
    }
}

/// `a` supersedes `b`, positions given as SQL expressions (commit LSN, change LSN).
pub(super) fn newer(a: (&str, &str), b: (&str, &str)) -> String {
    let ((ac, al), (bc, bl)) = (a, b);
    format!(
        "(CASE WHEN {ac} IS NOT NULL AND {bc} IS NOT NULL \
         THEN ({ac} > {bc} OR ({ac} = {bc} AND {al} > {bl})) ELSE {al} > {bl} END)"
    )
}

pub(super) fn quote(name: &str) -> String {
    format!("\"{name}\"")
}

/// The statements of one view, generated once.
#[derive(Debug, Clone)]
pub struct Statements {
    pub dialect: Dialect,
    pub create_table: String,
    /// Parameters: every column in declaration order, commit LSN, LSN, view, key text,
    /// partition.
    pub upsert: String,
    /// Parameters: key columns, commit LSN, LSN.
    pub delete_row: String,
    /// Parameters: view, key text, commit LSN, LSN, partition, append time (ms).
    pub record_delete: String,
    /// Parameters: view, partition, cutoff (ms). Forgets the partition's deletes appended
    /// before the cutoff.
    pub prune_deletes: String,
    /// Parameters: key columns, view, key text.
    pub tombstone: String,
    /// Parameters: commit LSN, LSN.
    pub truncate_rows: String,
    /// Parameters: view, commit LSN, LSN.
    pub record_truncate: String,
    /// Parameters: view, topic, partition, next offset, events.
    pub store_offset: String,
    /// Parameters: view, topic.
    pub load_offsets: String,
    /// Empties the view's table.
    pub rebuild_table: String,
    /// Parameters: view. Forgets the view's deletes, truncate and offsets (and, under a
    /// group's name, the group's last transaction END).
    pub rebuild: Vec<String>,
    /// With joins: the joined views' tables (when missing), an index on each foreign key, and
    /// the SQL view `<name>_joined` created anew (see [`crate::join`]).
    pub joined_ddl: Vec<String>,
    spec: ViewSpec,
}

impl Statements {
    pub fn new(dialect: Dialect, spec: &ViewSpec) -> Self {
        let d = dialect;
        let table = quote(&spec.name);
        let int8 = d.int8();
        let key_names: Vec<String> = spec.key_columns().map(|c| quote(&c.name)).collect();
        let mut ddl: Vec<String> = spec
            .columns
            .iter()
            .map(|c| format!("{} {}", quote(&c.name), d.column_type(c.ty)))
            .collect();
        ddl.push(format!("{COMMIT_LSN_COLUMN} {int8}"));
        ddl.push(format!("{LSN_COLUMN} {int8} NOT NULL"));
        ddl.push(format!("{PARTITION_COLUMN} INTEGER"));
        ddl.push(format!("PRIMARY KEY ({})", key_names.join(", ")));
        let create_table = format!("CREATE TABLE IF NOT EXISTS {table} ({})", ddl.join(", "));

        let upsert = Self::upsert_sql(d, spec, 0);

        let key_params = |first: usize| -> String {
            spec.key_columns()
                .enumerate()
                .map(|(i, c)| {
                    format!(
                        "{table}.{} = {}",
                        quote(&c.name),
                        d.param(first + i, d.column_type(c.ty))
                    )
                })
                .collect::<Vec<_>>()
                .join(" AND ")
        };
        let k = key_names.len();
        let row_pos = (
            format!("{table}.{COMMIT_LSN_COLUMN}"),
            format!("{table}.{LSN_COLUMN}"),
        );
        let (kc, kl) = (d.param(k + 1, int8), d.param(k + 2, int8));
        let delete_row = format!(
            "DELETE FROM {table} WHERE {} AND {}",
            key_params(1),
            newer((&kc, &kl), (&row_pos.0, &row_pos.1))
        );
        let record_delete = format!(
            "INSERT INTO {DELETES_TABLE} (view, key, commit_lsn, lsn, \"partition\", appended_ms) \
             VALUES ({}, {}, {}, {}, {}, {}) \
             ON CONFLICT (view, key) DO UPDATE SET commit_lsn = excluded.commit_lsn, lsn = excluded.lsn, \
             \"partition\" = excluded.\"partition\", appended_ms = excluded.appended_ms \
             WHERE {}",
            d.param(1, "text"),
            d.param(2, "text"),
            d.param(3, int8),
            d.param(4, int8),
            d.param(5, "integer"),
            d.param(6, int8),
            newer(
                ("excluded.commit_lsn", "excluded.lsn"),
                (
                    &format!("{DELETES_TABLE}.commit_lsn"),
                    &format!("{DELETES_TABLE}.lsn")
                )
            )
        );
        let prune_deletes = format!(
            "DELETE FROM {DELETES_TABLE} WHERE view = {} AND \"partition\" = {} AND appended_ms < {}",
            d.param(1, "text"),
            d.param(2, "integer"),
            d.param(3, int8)
        );
        let tombstone = format!(
            "DELETE FROM {table} WHERE {} AND NOT EXISTS (SELECT 1 FROM {DELETES_TABLE} m \
             WHERE m.view = {} AND m.key = {} AND {})",
            key_params(1),
            d.param(k + 1, "text"),
            d.param(k + 2, "text"),
            newer((&row_pos.0, &row_pos.1), ("m.commit_lsn", "m.lsn"))
        );
        let truncate_rows = format!(
            "DELETE FROM {table} WHERE {}",
            newer(
                (&d.param(1, int8), &d.param(2, int8)),
                (&row_pos.0, &row_pos.1)
            )
        );
        let record_truncate = format!(
            "INSERT INTO {TRUNCATES_TABLE} (view, commit_lsn, lsn) VALUES ({}, {}, {}) \
             ON CONFLICT (view) DO UPDATE SET commit_lsn = excluded.commit_lsn, lsn = excluded.lsn \
             WHERE {}",
            d.param(1, "text"),
            d.param(2, int8),
            d.param(3, int8),
            newer(
                ("excluded.commit_lsn", "excluded.lsn"),
                (
                    &format!("{TRUNCATES_TABLE}.commit_lsn"),
                    &format!("{TRUNCATES_TABLE}.lsn")
                )
            )
        );
        let store_offset = Self::store_offset_sql(d);
        let load_offsets = format!(
            "SELECT \"partition\", next_offset, events FROM {OFFSETS_TABLE} \
             WHERE view = {} AND topic = {}",
            d.param(1, "text"),
            d.param(2, "text")
        );
        let rebuild_table = format!("DELETE FROM {table}");
        let rebuild = vec![
            format!(
                "DELETE FROM {DELETES_TABLE} WHERE view = {}",
                d.param(1, "text")
            ),
            format!(
                "DELETE FROM {TRUNCATES_TABLE} WHERE view = {}",
                d.param(1, "text")
            ),
            format!(
                "DELETE FROM {OFFSETS_TABLE} WHERE view = {}",
                d.param(1, "text")
            ),
            format!(
                "DELETE FROM {TRANSACTIONS_TABLE} WHERE view = {}",
                d.param(1, "text")
            ),
        ];
        Self {
            dialect,
            create_table,
            upsert,
            delete_row,
            record_delete,
            prune_deletes,
            tombstone,
            truncate_rows,
            record_truncate,
            store_offset,
            load_offsets,
            rebuild_table,
            rebuild,
            joined_ddl: Self::joined_ddl(d, spec),
            spec: spec.clone(),
        }
    }

    /// Parameters: view, topic, partition, next offset, events (the same for every view).
    pub fn store_offset_sql(d: Dialect) -> String {
        let int8 = d.int8();
        format!(
            "INSERT INTO {OFFSETS_TABLE} (view, topic, \"partition\", next_offset, events) \
             VALUES ({}, {}, {}, {}, {}) ON CONFLICT (view, topic, \"partition\") DO UPDATE SET \
             next_offset = excluded.next_offset, events = {OFFSETS_TABLE}.events + excluded.events",
            d.param(1, "text"),
            d.param(2, "text"),
            d.param(3, "integer"),
            d.param(4, int8),
            d.param(5, int8),
        )
    }

    fn joined_ddl(d: Dialect, spec: &ViewSpec) -> Vec<String> {
        if spec.joins.is_empty() {
            return Vec::new();
        }
        let table = quote(&spec.name);
        let relation = quote(&spec.relation());
        let mut ddl = Vec::new();
        let mut select: Vec<String> = spec
            .columns
            .iter()
            .map(|c| format!("v.{}", quote(&c.name)))
            .collect();
        let mut from = format!("{table} v");
        for (i, join) in spec.joins.iter().enumerate() {
            ddl.push(Statements::new(d, &join.other).create_table);
            ddl.push(format!(
                "CREATE INDEX IF NOT EXISTS {} ON {table} ({})",
                quote(&format!("{}_by_{}", spec.name, join.on.join("_"))),
                join.on
                    .iter()
                    .map(|c| quote(c))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            let alias = format!("j{i}");
            let on: Vec<String> = join
                .other
                .key_columns()
                .zip(&join.on)
                .map(|(key, column)| format!("{alias}.{} = v.{}", quote(&key.name), quote(column)))
                .collect();
            from.push_str(&format!(
                " LEFT JOIN {} {alias} ON {}",
                quote(&join.other.name),
                on.join(" AND ")
            ));
            select.extend(
                join.take
                    .iter()
                    .map(|t| format!("{alias}.{} AS {}", quote(&t.column), quote(&t.name))),
            );
        }
        // Dropped and created anew, so a changed declaration takes effect (PostgreSQL's
        // CREATE OR REPLACE refuses a changed column list); inside the prepare transaction.
        ddl.push(format!("DROP VIEW IF EXISTS {relation}"));
        ddl.push(format!(
            "CREATE VIEW {relation} AS SELECT {} FROM {from}",
            select.join(", ")
        ));
        ddl
    }

    /// The upsert for a change whose value columns in `unchanged` (bit i: column i) were not
    /// carried (unchanged TOAST): on update they keep their stored value.
    pub fn upsert_for(&self, unchanged: u64) -> std::borrow::Cow<'_, str> {
        if unchanged == 0 {
            std::borrow::Cow::Borrowed(&self.upsert)
        } else {
            std::borrow::Cow::Owned(Self::upsert_sql(self.dialect, &self.spec, unchanged))
        }
    }

    fn upsert_sql(d: Dialect, spec: &ViewSpec, unchanged: u64) -> String {
        let table = quote(&spec.name);
        let int8 = d.int8();
        let n = spec.columns.len();
        let (pc, pl, pv, pk, pp) = (
            d.param(n + 1, int8),
            d.param(n + 2, int8),
            d.param(n + 3, "text"),
            d.param(n + 4, "text"),
            d.param(n + 5, "integer"),
        );
        let names: Vec<String> = spec.columns.iter().map(|c| quote(&c.name)).collect();
        let values: Vec<String> = spec
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| d.param(i + 1, d.column_type(c.ty)))
            .collect();
        let key_names: Vec<String> = spec.key_columns().map(|c| quote(&c.name)).collect();
        let mut sets: Vec<String> = spec
            .columns
            .iter()
            .enumerate()
            .filter(|(i, c)| !c.key && unchanged & (1 << i) == 0)
            .map(|(_, c)| format!("{0} = excluded.{0}", quote(&c.name)))
            .collect();
        sets.push(format!(
            "{COMMIT_LSN_COLUMN} = excluded.{COMMIT_LSN_COLUMN}"
        ));
        sets.push(format!("{LSN_COLUMN} = excluded.{LSN_COLUMN}"));
        sets.push(format!("{PARTITION_COLUMN} = excluded.{PARTITION_COLUMN}"));
        format!(
            "INSERT INTO {table} ({names}, {COMMIT_LSN_COLUMN}, {LSN_COLUMN}, {PARTITION_COLUMN}) \
             SELECT {values}, {pc}, {pl}, {pp} \
             WHERE NOT EXISTS (SELECT 1 FROM {DELETES_TABLE} m WHERE m.view = {pv} AND m.key = {pk} AND NOT {m_newer}) \
             AND NOT EXISTS (SELECT 1 FROM {TRUNCATES_TABLE} x WHERE x.view = {pv} AND NOT {x_newer}) \
             ON CONFLICT ({keys}) DO UPDATE SET {sets} WHERE {row_newer}",
            names = names.join(", "),
            values = values.join(", "),
            m_newer = newer((&pc, &pl), ("m.commit_lsn", "m.lsn")),
            x_newer = newer((&pc, &pl), ("x.commit_lsn", "x.lsn")),
            keys = key_names.join(", "),
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
}
