//! Debezium's include and exclude lists (`message.prefix.include.list`, ...), parsed once at
//! configuration (by `CdcConfig::validate`, which keeps the compiled [`Lists`]): comma-separated
//! regular expressions, a comma escaped with a backslash (`\,`) being part of its expression
//! (Debezium's `Strings.RegExSplitter`), each matched against the whole name,
//! case-insensitively (Debezium's `Predicates.includes`/`excludes`).

use regex::{Regex, RegexBuilder};

/// One list: the names it matches.
#[derive(Debug, Clone)]
pub struct RegexList {
    patterns: Vec<Regex>,
}

/// Splits a list of regular expressions as Debezium's `Strings.RegExSplitter` does: at each
/// comma not escaped by a backslash (a backslash escapes whatever follows it, so `\\,` is an
/// escaped backslash, then a separator), each part trimmed (Java's `trim`: characters up to
/// U+0020) and its `\,` turned into `,`; empty parts are dropped. A backslash ending the list
/// escapes nothing and is refused, as Debezium refuses it.
pub fn split_regex_list(list: &str) -> Result<Vec<String>, String> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut chars = list.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            // A backslash escapes the character after it (the guard consumes that character,
            // so an escaped comma does not split); at the end it escapes nothing.
            '\\' if chars.next().is_none() => {
                return Err(
                    "unterminated escape sequence at the end of the list (a '\\' escapes the character after it)"
                        .to_owned(),
                );
            }
            ',' => {
                parts.push(&list[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&list[start..]);
    Ok(parts
        .into_iter()
        .map(|part| part.trim_matches(|c: char| c <= ' ').replace("\\,", ","))
        .filter(|part| !part.is_empty())
        .collect())
}

impl RegexList {
    /// Parses `list` (see [`split_regex_list`]); the error names the pattern that is not a
    /// regular expression.
    pub fn parse(list: &str) -> Result<Self, String> {
        let patterns = split_regex_list(list)?
            .into_iter()
            .map(|pattern| {
                RegexBuilder::new(&format!("^(?:{pattern})$"))
                    .case_insensitive(true)
                    .build()
                    .map_err(|error| format!("{pattern:?} is not a regular expression: {error}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { patterns })
    }

    /// Whether one of the patterns matches the whole of `name`.
    pub fn matches(&self, name: &str) -> bool {
        self.patterns.iter().any(|p| p.is_match(name))
    }
}

/// An include list or an exclude list (Debezium refuses both for one kind), or neither: all in.
#[derive(Debug, Clone, Default)]
pub enum Selection {
    #[default]
    All,
    Include(RegexList),
    Exclude(RegexList),
}

impl Selection {
    /// From an include and an exclude property, each `(name, value)`; the error names the
    /// property at fault (the exclude one when both are set, as Debezium reports it) and its
    /// value.
    pub fn new(
        (include_name, include): (&str, Option<&str>),
        (exclude_name, exclude): (&str, Option<&str>),
    ) -> Result<Self, SelectionError> {
        fn blank(s: Option<&str>) -> Option<&str> {
            s.map(str::trim).filter(|s| !s.is_empty())
        }
        let error = |property: &str, problem: String| SelectionError {
            property: property.to_owned(),
            problem,
        };
        match (blank(include), blank(exclude)) {
            (Some(_), Some(list)) => Err(error(
                exclude_name,
                format!("{include_name:?} is already specified (set one of the two), got {list:?}"),
            )),
            (Some(list), None) => RegexList::parse(list)
                .map(Self::Include)
                .map_err(|problem| error(include_name, format!("{problem}, got {list:?}"))),
            (None, Some(list)) => RegexList::parse(list)
                .map(Self::Exclude)
                .map_err(|problem| error(exclude_name, format!("{problem}, got {list:?}"))),
            (None, None) => Ok(Self::All),
        }
    }

    pub fn includes(&self, name: &str) -> bool {
        match self {
            Self::All => true,
            Self::Include(list) => list.matches(name),
            Self::Exclude(list) => !list.matches(name),
        }
    }
}

/// Debezium's list properties of one configuration, compiled once (by
/// `CdcConfig::validate`, which names the property and its value when one is refused).
#[derive(Debug, Clone, Default)]
pub struct Lists {
    /// `schema.include.list` / `schema.exclude.list`, over schema names.
    pub schemas: Selection,
    /// `table.include.list` / `table.exclude.list`, over `schema.table`.
    pub tables: Selection,
    /// `column.include.list` / `column.exclude.list`, over `schema.table.column`.
    pub columns: Selection,
    /// `message.prefix.include.list` / `message.prefix.exclude.list`, over the prefixes of
    /// logical decoding messages.
    pub message_prefixes: Selection,
    /// `message.key.columns`.
    pub key_columns: KeyColumns,
}

impl Lists {
    /// Whether `schema.table` is captured: its schema passes the schema lists and
    /// `schema.table` the table lists (Debezium's `Selectors`: both must hold).
    pub fn captures(&self, schema: &str, table: &str) -> bool {
        self.schemas.includes(schema) && self.tables.includes(&format!("{schema}.{table}"))
    }
}

/// Debezium's `message.key.columns`: `<table>:<column>,<column>;<table>:<column>...`, each
/// table a regular expression matched against the whole `schema.table`, each column a
/// regular expression matched against the column's name (Debezium joins the two into one
/// pattern over `schema.table.column`, case-insensitive). A table's message key is the
/// columns matched, in the order the list names them (several columns matched by one name
/// in the table's order); a table none of whose columns match keeps its primary key.
#[derive(Debug, Clone, Default)]
pub struct KeyColumns {
    /// One pattern per `table.column`, in the order listed.
    patterns: Vec<Regex>,
}

/// `message.key.columns`'s format, as the errors name it.
pub const KEY_COLUMNS_FORMAT: &str =
    "<schema.table regex>:<column>[,<column>...], entries separated by ';'";

impl KeyColumns {
    /// Parses the property (Debezium's `CustomKeyMapper` and its validation: an empty value
    /// and an entry that is not `table:columns` are refused, each named).
    pub fn parse(list: &str) -> Result<Self, String> {
        if list.trim().is_empty() {
            return Err("must not be empty".to_owned());
        }
        let mut entries: Vec<&str> = list.split(';').collect();
        // Java's String.split drops trailing empty entries: `a:b;` is one entry.
        while entries.last().is_some_and(|e| e.is_empty()) {
            entries.pop();
        }
        let mut patterns = Vec::new();
        let mut problems = Vec::new();
        for entry in entries {
            let parsed = entry
                .split_once(':')
                .filter(|(table, columns)| {
                    !table.trim().is_empty()
                        && !columns.contains(':')
                        && columns.split(',').all(|c| !c.trim().is_empty())
                })
                .ok_or_else(|| format!("{entry:?} has an invalid format (expected {KEY_COLUMNS_FORMAT})"))
                .and_then(|(table, columns)| {
                    columns
                        .split(',')
                        .map(|column| {
                            let pattern = format!("{}.{}", table.trim(), column.trim());
                            RegexBuilder::new(&format!("^(?:{pattern})$"))
                                .case_insensitive(true)
                                .build()
                                .map_err(|error| {
                                    format!("{pattern:?} (of {entry:?}) is not a regular expression: {error}")
                                })
                        })
                        .collect::<Result<Vec<_>, _>>()
                });
            match parsed {
                Ok(list) => patterns.extend(list),
                Err(problem) => problems.push(problem),
            }
        }
        if problems.is_empty() {
            Ok(Self { patterns })
        } else {
            Err(problems.join("; "))
        }
    }

    /// The indexes of `columns` (of table `schema.table`) that form its message key, in the
    /// list's order; empty when none match (the table keeps its primary key).
    pub fn key_of<'a>(
        &self,
        schema: &str,
        table: &str,
        columns: impl Iterator<Item = &'a str> + Clone,
    ) -> Vec<usize> {
        let mut key = Vec::new();
        for pattern in &self.patterns {
            for (i, column) in columns.clone().enumerate() {
                if !key.contains(&i) && pattern.is_match(&format!("{schema}.{table}.{column}")) {
                    key.push(i);
                }
            }
        }
        key
    }
}

/// A refused include or exclude list: the property and what is wrong with its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectionError {
    pub property: String,
    pub problem: String,
}

impl std::fmt::Display for SelectionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.property, self.problem)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_key_columns_in_the_order_listed() {
        let keys = KeyColumns::parse(r"public\.ord.*:code, region ; Public.Lines:B;").unwrap();
        let cols = ["id", "region", "code", "v"];
        assert_eq!(
            keys.key_of("public", "orders", cols.iter().copied()),
            [2, 1]
        );
        assert_eq!(keys.key_of("public", "lines", ["a", "b"].into_iter()), [1]);
        // No column matched: the primary key stays.
        assert!(keys.key_of("public", "lines", ["a"].into_iter()).is_empty());
        assert!(
            keys.key_of("other", "orders", cols.iter().copied())
                .is_empty()
        );
        // A column regex matching several columns takes them in the table's order.
        let keys = KeyColumns::parse("public.t:c.*").unwrap();
        assert_eq!(
            keys.key_of("public", "t", ["cb", "x", "ca"].into_iter()),
            [0, 2]
        );
    }

    #[test]
    fn message_key_columns_refuse_what_debezium_refuses() {
        assert_eq!(KeyColumns::parse(" ").unwrap_err(), "must not be empty");
        let text = KeyColumns::parse("public.a:id;public.b;public.c:x,,y;:z").unwrap_err();
        for bad in [r#""public.b""#, r#""public.c:x,,y""#, r#"":z""#] {
            assert!(text.contains(bad), "{bad} missing from {text}");
        }
        assert!(!text.contains("public.a"), "{text}");
        let text = KeyColumns::parse("public.(a:id").unwrap_err();
        assert!(text.contains("not a regular expression"), "{text}");
    }

    #[test]
    fn an_escaped_comma_belongs_to_its_expression() {
        let split = |list| split_regex_list(list).unwrap();
        assert_eq!(split(r"a\,b, c ,,d"), ["a,b", "c", "d"]);
        assert_eq!(split(r"public\.t{1\,3}"), [r"public\.t{1,3}"]);
        // An escaped backslash, then a separator; an escaped dot stays for the regex.
        assert_eq!(split(r"a\\,b\.c"), [r"a\\", r"b\.c"]);
        assert_eq!(split(r"a\\\,b"), [r"a\\,b"]);
        assert_eq!(split(" , "), Vec::<String>::new());
        assert!(
            split_regex_list(r"a,b\")
                .unwrap_err()
                .contains("unterminated escape sequence")
        );
        // A repetition with a comma in one table pattern: `t{1,2}` matches t and tt.
        let list = RegexList::parse(r"public\.t{1\,2}, public\.other").unwrap();
        assert!(list.matches("public.t") && list.matches("public.tt"));
        assert!(list.matches("public.other"));
        assert!(!list.matches("public.ttt"));
        // A comma inside a character class.
        let list = RegexList::parse(r"a[\,;]b").unwrap();
        assert!(list.matches("a,b") && list.matches("a;b") && !list.matches("a"));
        // Unescaped, the same comma splits the expression (and `{1` is not a regex).
        assert!(RegexList::parse(r"public\.t{1,2}").is_err());
    }

    #[test]
    fn whole_names_case_insensitively() {
        let list = RegexList::parse("audit.*, Ops").unwrap();
        assert!(list.matches("audit"));
        assert!(list.matches("AUDIT-x"));
        assert!(list.matches("ops"));
        assert!(!list.matches("xops"), "anchored at both ends");
        assert!(!list.matches("opsx"));
        assert!(RegexList::parse("a(").unwrap_err().contains("\"a(\""));
    }

    #[test]
    fn include_or_exclude() {
        let new = |include, exclude| Selection::new(("x.include", include), ("x.exclude", exclude));
        assert!(new(None, Some("")).unwrap().includes("x"));
        let include = new(Some("a.*"), None).unwrap();
        assert!(include.includes("ab") && !include.includes("b"));
        let exclude = new(None, Some("a.*")).unwrap();
        assert!(!exclude.includes("ab") && exclude.includes("b"));
        assert_eq!(
            new(Some("a"), Some("b")).unwrap_err().to_string(),
            r#"x.exclude: "x.include" is already specified (set one of the two), got "b""#
        );
        let error = new(None, Some("ok,(bad")).unwrap_err();
        assert_eq!(error.property, "x.exclude");
        assert!(
            error
                .problem
                .starts_with(r#""(bad" is not a regular expression"#),
            "{error}"
        );
        assert!(error.problem.ends_with(r#", got "ok,(bad""#), "{error}");
        let error = new(Some(r"a,b\"), None).unwrap_err();
        assert_eq!(error.property, "x.include");
        assert!(
            error.problem.starts_with("unterminated escape sequence")
                && error.problem.ends_with(r#"got "a,b\\""#),
            "{error}"
        );
    }
}
