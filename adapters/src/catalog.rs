//! What the adapter asks PostgreSQL's catalog (over a regular connection, with sqlx): how to map
//! a type, a table's primary key and columns, a publication's tables.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

use sqlx::PgPool;

use crate::decode::relation::{ColumnFacts, ColumnSpec, TableSpec};
use crate::decode::types::{Kind, TextType, builtin_kind};
use crate::error::CdcError;

/// Resolves type OIDs to [`Kind`]s, caching what it learned.
pub struct Catalog {
    pool: PgPool,
    kinds: HashMap<(u32, i32), Kind>,
}

impl Catalog {
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            kinds: HashMap::new(),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The kind of `oid` with modifier `typmod`: built-ins directly, enums, domains and arrays
    /// from `pg_type`.
    pub fn kind(
        &mut self,
        oid: u32,
        typmod: i32,
    ) -> Pin<Box<dyn Future<Output = Result<Kind, CdcError>> + Send + '_>> {
        Box::pin(async move {
            if let Some(kind) = builtin_kind(oid, typmod) {
                return Ok(kind);
            }
            if let Some(kind) = self.kinds.get(&(oid, typmod)) {
                return Ok(kind.clone());
            }
            let row: Option<(String, String, i64, i64, String, i32, String)> = sqlx::query_as(
                "SELECT typtype::text, typcategory::text, typelem::int8, typbasetype::int8, \
                        typdelim::text, typtypmod, typname::text \
                 FROM pg_type WHERE oid = $1::int8::oid",
            )
            .bind(i64::from(oid))
            .fetch_optional(&self.pool)
            .await
            .map_err(CdcError::pg("looking up a type"))?;
            let kind = match row {
                None => Kind::Text(TextType::Plain),
                Some((typtype, category, elem, base, delim, domain_typmod, name)) => {
                    if typtype == "e" {
                        let (allowed,): (String,) = sqlx::query_as(
                            "SELECT coalesce(string_agg(enumlabel::text, ',' ORDER BY enumsortorder), '') \
                             FROM pg_enum WHERE enumtypid = $1::int8::oid",
                        )
                        .bind(i64::from(oid))
                        .fetch_one(&self.pool)
                        .await
                        .map_err(CdcError::pg("reading an enum's labels"))?;
                        Kind::Enum {
                            allowed: allowed.into(),
                        }
                    } else if typtype == "b" && name == "hstore" {
                        Kind::Hstore {
                            mode: Default::default(),
                        }
                    } else if typtype == "b" && name == "ltree" {
                        Kind::Text(TextType::Ltree)
                    } else if typtype == "d" && base != 0 {
                        let typmod = if domain_typmod >= 0 {
                            domain_typmod
                        } else {
                            typmod
                        };
                        self.kind(base as u32, typmod).await?
                    } else if category == "A" && elem != 0 && delim == "," {
                        Kind::Array(Box::new(self.kind(elem as u32, typmod).await?))
                    } else {
                        Kind::Text(TextType::Plain)
                    }
                }
            };
            self.kinds.insert((oid, typmod), kind.clone());
            Ok(kind)
        })
    }

    /// Kinds of every column of a spec.
    pub async fn kinds(&mut self, columns: &[ColumnSpec]) -> Result<Vec<Kind>, CdcError> {
        let mut kinds = Vec::with_capacity(columns.len());
        for column in columns {
            kinds.push(self.kind(column.type_oid, column.type_modifier).await?);
        }
        Ok(kinds)
    }

    /// Fills in what pgoutput does not say about `columns` of relation `relid`: nullability,
    /// default expression, type name (for the schema-wrapped form).
    pub async fn column_facts(
        &self,
        relid: u32,
        columns: &mut [ColumnSpec],
    ) -> Result<(), CdcError> {
        let rows: Vec<(String, bool, Option<String>, String)> = sqlx::query_as(
            "SELECT a.attname::text, a.attnotnull, pg_get_expr(d.adbin, d.adrelid), t.typname::text \
             FROM pg_attribute a \
             JOIN pg_type t ON t.oid = a.atttypid \
             LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
             WHERE a.attrelid = $1::int8::oid AND a.attnum > 0 AND NOT a.attisdropped",
        )
        .bind(i64::from(relid))
        .fetch_all(&self.pool)
        .await
        .map_err(CdcError::pg("reading column nullability and defaults"))?;
        let mut facts: HashMap<String, ColumnFacts> = rows
            .into_iter()
            .map(|(name, not_null, default, type_name)| {
                (
                    name,
                    ColumnFacts {
                        not_null,
                        default,
                        type_name,
                    },
                )
            })
            .collect();
        for column in columns {
            if let Some(found) = facts.remove(&column.name) {
                column.facts = found;
            }
        }
        Ok(())
    }

    /// The key's column names of a relation, in key order (empty: none): the primary key, or,
    /// without one, the unique index of `REPLICA IDENTITY USING INDEX` (as Debezium keys it).
    pub async fn primary_key(&self, relid: u32) -> Result<Vec<String>, CdcError> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "WITH i AS (SELECT indrelid, indkey FROM pg_index \
                        WHERE indrelid = $1::int8::oid AND (indisprimary OR indisreplident) \
                        ORDER BY indisprimary DESC LIMIT 1) \
             SELECT a.attname::text \
             FROM i \
             CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord) \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
             ORDER BY k.ord",
        )
        .bind(i64::from(relid))
        .fetch_all(&self.pool)
        .await
        .map_err(CdcError::pg("looking up a primary key"))?;
        Ok(rows.into_iter().map(|(name,)| name).collect())
    }

    /// A table as the catalog describes it now (for the snapshot): columns pgoutput would
    /// publish (not dropped, not generated), in order, and its primary key.
    pub async fn table(
        &self,
        schema: &str,
        table: &str,
    ) -> Result<Option<SnapshotTable>, CdcError> {
        let rows: Vec<(i64, String, i64, i32, String, String)> = sqlx::query_as(
            "SELECT c.oid::int8, a.attname::text, a.atttypid::int8, a.atttypmod, \
                    format_type(a.atttypid, a.atttypmod), \
                    CASE WHEN a.attcollation <> 0 AND a.attcollation <> 100 \
                         THEN ' COLLATE ' || quote_ident(co.collname) ELSE '' END \
             FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_attribute a ON a.attrelid = c.oid \
             LEFT JOIN pg_collation co ON co.oid = a.attcollation \
             WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 \
               AND NOT a.attisdropped AND a.attgenerated = '' \
             ORDER BY a.attnum",
        )
        .bind(schema)
        .bind(table)
        .fetch_all(&self.pool)
        .await
        .map_err(CdcError::pg(format!(
            "reading the columns of {schema}.{table}"
        )))?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let oid = first.0 as u32;
        let identity: (String,) =
            sqlx::query_as("SELECT relreplident::text FROM pg_class WHERE oid = $1::int8::oid")
                .bind(i64::from(oid))
                .fetch_one(&self.pool)
                .await
                .map_err(CdcError::pg("reading a replica identity"))?;
        let primary_key = self.primary_key(oid).await?;
        let sql_types = rows
            .iter()
            .map(|(_, name, _, _, ty, collate)| (name.clone(), format!("{ty}{collate}")))
            .collect();
        let mut columns: Vec<ColumnSpec> = rows
            .into_iter()
            .map(|(_, name, type_oid, type_modifier, _, _)| ColumnSpec {
                name,
                type_oid: type_oid as u32,
                type_modifier,
                facts: ColumnFacts::default(),
            })
            .collect();
        self.column_facts(oid, &mut columns).await?;
        Ok(Some(SnapshotTable {
            spec: TableSpec {
                oid,
                schema: schema.to_owned(),
                table: table.to_owned(),
                columns,
                primary_key,
                identity_full: identity.0 == "f",
            },
            sql_types,
        }))
    }

    /// The tables a publication covers now.
    pub async fn publication_tables(
        &self,
        publication: &str,
    ) -> Result<Vec<(String, String)>, CdcError> {
        sqlx::query_as(
            "SELECT schemaname::text, tablename::text FROM pg_publication_tables \
             WHERE pubname = $1 ORDER BY 1, 2",
        )
        .bind(publication)
        .fetch_all(&self.pool)
        .await
        .map_err(CdcError::pg("listing the publication's tables"))
    }
}

/// A table to snapshot: its spec plus each column's SQL type (with a non-default collation),
/// to cast key values back in keyset queries.
#[derive(Debug, Clone)]
pub struct SnapshotTable {
    pub spec: TableSpec,
    /// `(column, "type [COLLATE x]")`, in column order.
    pub sql_types: Vec<(String, String)>,
}

impl SnapshotTable {
    /// The SQL type of the primary key's columns, in key order.
    pub fn key_sql_types(&self) -> Vec<String> {
        self.spec
            .primary_key
            .iter()
            .map(|k| {
                self.sql_types
                    .iter()
                    .find(|(name, _)| name == k)
                    .map(|(_, ty)| ty.clone())
                    .unwrap_or_else(|| "text".to_owned())
            })
            .collect()
    }
}

/// `"name"` quoted as an SQL identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'text'` quoted as an SQL literal.
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}
