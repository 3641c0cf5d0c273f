//! Reads from the views, one SQL text for both stores. A service writes its queries in
//! PostgreSQL's `$1` style with `CAST(... AS ...)` (valid in both dialects); on SQLite the kit
//! turns `$N` into `?N` (the same parameter by number). [`fetch!`](crate::fetch) runs a query on
//! whichever store the service was given:
//!
//! ```ignore
//! let rows: Vec<Person> = ficus_kit::fetch!(&store, Person, fetch_all, SQL, email, limit, offset)?;
//! ```

use std::borrow::Cow;

/// `sql` with `$N` parameters written as SQLite's `?N`.
pub fn sqlite_params(sql: &str) -> Cow<'_, str> {
    if !sql.contains('$') {
        return Cow::Borrowed(sql);
    }
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('?');
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Runs `sqlx::query_as::<_, $row>($sql)` with the binds on the store's pool and calls
/// `$fetch` (`fetch_all`, `fetch_one`, `fetch_optional`); evaluates to its `Result`.
#[macro_export]
macro_rules! fetch {
    ($store:expr, $row:ty, $fetch:ident, $sql:expr $(, $bind:expr)* $(,)?) => {{
        let sql: &str = $sql;
        match $store {
            $crate::Store::Sqlite(pool) => {
                let sql = $crate::db::sqlite_params(sql);
                $crate::sqlx::query_as::<_, $row>(&sql)$(.bind($bind))*.$fetch(pool).await
            }
            $crate::Store::Postgres(pool) => {
                $crate::sqlx::query_as::<_, $row>(sql)$(.bind($bind))*.$fetch(pool).await
            }
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollar_parameters_become_numbered_question_marks() {
        assert_eq!(
            sqlite_params("WHERE (CAST($1 AS TEXT) IS NULL OR email = $1) LIMIT $2 OFFSET $10"),
            "WHERE (CAST(?1 AS TEXT) IS NULL OR email = ?1) LIMIT ?2 OFFSET ?10"
        );
        assert_eq!(sqlite_params("SELECT '$'"), "SELECT '$'");
    }
}
