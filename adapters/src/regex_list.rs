//! Debezium's include and exclude lists (`message.prefix.include.list`, ...), parsed once at
//! configuration: comma-separated regular expressions, each matched against the whole name,
//! case-insensitively (Debezium's `Predicates.includes`/`excludes`).

use regex::{Regex, RegexBuilder};

/// One list: the names it matches.
#[derive(Debug, Clone)]
pub struct RegexList {
    patterns: Vec<Regex>,
}

impl RegexList {
    /// Parses `list`; the error names the pattern that is not a regular expression.
    pub fn parse(list: &str) -> Result<Self, String> {
        let patterns = list
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
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
    /// From the two properties; `None` when both are set.
    pub fn new(include: Option<&str>, exclude: Option<&str>) -> Result<Self, String> {
        fn blank(s: Option<&str>) -> Option<&str> {
            s.map(str::trim).filter(|s| !s.is_empty())
        }
        match (blank(include), blank(exclude)) {
            (Some(_), Some(_)) => {
                Err("an include list and an exclude list cannot both be set".to_owned())
            }
            (Some(list), None) => Ok(Self::Include(RegexList::parse(list)?)),
            (None, Some(list)) => Ok(Self::Exclude(RegexList::parse(list)?)),
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

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(Selection::new(None, Some("")).unwrap().includes("x"));
        let include = Selection::new(Some("a.*"), None).unwrap();
        assert!(include.includes("ab") && !include.includes("b"));
        let exclude = Selection::new(None, Some("a.*")).unwrap();
        assert!(!exclude.includes("ab") && exclude.includes("b"));
        assert!(Selection::new(Some("a"), Some("b")).is_err());
    }
}
