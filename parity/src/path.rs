//! JSON paths: the concrete path of one value in an answer (`$.people[3].name`), where the
//! comparison reports a difference, and the patterns that rules write to select values
//! (`$.items[*].updated_at`, `$..password`).
//!
//! A pattern is `$` followed by steps: `.name` or `["any name"]` (a member), `[3]` (an element),
//! `.*` or `[*]` (any one member or element), and `..name` / `..*` (the step after it at any
//! depth). A pattern also covers everything under what it selects: ignoring `$.meta` ignores
//! `$.meta.generated_at`.

use std::fmt;

/// One step of a concrete path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Step {
    Key(String),
    Index(usize),
}

/// Renders steps as a JSON path: `$.people[3].name`, `$["odd key"]`.
pub fn render(steps: &[Step]) -> String {
    let mut out = String::from("$");
    for step in steps {
        push_step(&mut out, step);
    }
    out
}

/// Renders steps with every index as `[*]`: the form noise is learned in, so that a timestamp
/// seen differing in one element of a list is noise in every element.
pub fn render_general(steps: &[Step]) -> String {
    let mut out = String::from("$");
    for step in steps {
        match step {
            Step::Index(_) => out.push_str("[*]"),
            key => push_step(&mut out, key),
        }
    }
    out
}

fn push_step(out: &mut String, step: &Step) {
    match step {
        Step::Key(key) if is_identifier(key) => {
            out.push('.');
            out.push_str(key);
        }
        Step::Key(key) => {
            out.push('[');
            out.push_str(&serde_json::to_string(key).unwrap_or_default());
            out.push(']');
        }
        Step::Index(index) => {
            out.push('[');
            out.push_str(&index.to_string());
            out.push(']');
        }
    }
}

fn is_identifier(key: &str) -> bool {
    !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// One step of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PatternStep {
    Key(String),
    Index(usize),
    /// `.*` or `[*]`: any one member or element.
    Any,
    /// `..`: the rest of the pattern at any depth below.
    Descend,
}

/// A JSON path pattern, parsed once (see the module's documentation for the syntax).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    steps: Vec<PatternStep>,
}

impl Pattern {
    /// Parses `$...`; the error says what is wrong and where.
    pub fn parse(text: &str) -> Result<Self, String> {
        let fail = |at: usize, what: &str| {
            Err(format!(
                "`{text}` is not a JSON path: {what} at byte {at} (write e.g. `$.items[*].updated_at`)"
            ))
        };
        let bytes = text.as_bytes();
        if bytes.first() != Some(&b'$') {
            return fail(0, "it must start with `$`");
        }
        let mut steps = Vec::new();
        let mut i = 1;
        while i < bytes.len() {
            match bytes[i] {
                b'.' => {
                    i += 1;
                    if bytes.get(i) == Some(&b'.') {
                        steps.push(PatternStep::Descend);
                        i += 1;
                        if bytes.get(i) == Some(&b'[') {
                            continue;
                        }
                    }
                    let start = i;
                    while i < bytes.len() && bytes[i] != b'.' && bytes[i] != b'[' {
                        i += 1;
                    }
                    match &text[start..i] {
                        "" => return fail(start, "a member name is missing"),
                        "*" => steps.push(PatternStep::Any),
                        name => steps.push(PatternStep::Key(name.to_owned())),
                    }
                }
                b'[' => {
                    let Some(close) = text[i..].find(']').map(|at| at + i) else {
                        return fail(i, "`[` is not closed");
                    };
                    let inner = &text[i + 1..close];
                    if inner == "*" {
                        steps.push(PatternStep::Any);
                    } else if let Ok(index) = inner.parse::<usize>() {
                        steps.push(PatternStep::Index(index));
                    } else if inner.starts_with('"') {
                        // A quoted name may hold `]`: read it as a JSON string.
                        let mut stream = serde_json::Deserializer::from_str(&text[i + 1..])
                            .into_iter::<String>();
                        match stream.next() {
                            Some(Ok(name)) => {
                                let end = i + 1 + stream.byte_offset();
                                if bytes.get(end) != Some(&b']') {
                                    return fail(end, "expected `]` after the quoted name");
                                }
                                steps.push(PatternStep::Key(name));
                                i = end + 1;
                                continue;
                            }
                            _ => return fail(i + 1, "a quoted name is not a JSON string"),
                        }
                    } else {
                        return fail(i + 1, "expected an index, `*` or a quoted name in `[...]`");
                    }
                    i = close + 1;
                }
                _ => return fail(i, "expected `.` or `[`"),
            }
        }
        if steps.last() == Some(&PatternStep::Descend) {
            return fail(text.len(), "`..` must be followed by a step");
        }
        Ok(Self {
            text: text.to_owned(),
            steps,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The path itself when the pattern has no wildcard and no descent.
    pub fn concrete(&self) -> Option<Vec<Step>> {
        self.steps
            .iter()
            .map(|step| match step {
                PatternStep::Key(key) => Some(Step::Key(key.clone())),
                PatternStep::Index(index) => Some(Step::Index(*index)),
                PatternStep::Any | PatternStep::Descend => None,
            })
            .collect()
    }

    /// Whether the pattern selects exactly this path.
    pub fn matches(&self, path: &[Step]) -> bool {
        matches(&self.steps, path)
    }

    /// Whether the pattern selects this path or a value it lies under.
    pub fn covers(&self, path: &[Step]) -> bool {
        (0..=path.len()).any(|end| matches(&self.steps, &path[..end]))
    }
}

fn matches(pattern: &[PatternStep], path: &[Step]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((PatternStep::Descend, rest)) => {
            (0..=path.len()).any(|skip| matches(rest, &path[skip..]))
        }
        Some((step, rest)) => match path.split_first() {
            None => false,
            Some((first, tail)) => {
                let one = match (step, first) {
                    (PatternStep::Any, _) => true,
                    (PatternStep::Key(want), Step::Key(got)) => want == got,
                    (PatternStep::Index(want), Step::Index(got)) => want == got,
                    _ => false,
                };
                one && matches(rest, tail)
            }
        },
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(text: &str) -> Vec<Step> {
        // Test helper: `a.3.b` → [Key a, Index 3, Key b].
        text.split('.')
            .filter(|s| !s.is_empty())
            .map(|s| match s.parse() {
                Ok(i) => Step::Index(i),
                Err(_) => Step::Key(s.to_owned()),
            })
            .collect()
    }

    #[test]
    fn renders_paths_as_json_paths() {
        assert_eq!(render(&path("people.3.name")), "$.people[3].name");
        assert_eq!(render(&[Step::Key("odd key".into())]), r#"$["odd key"]"#);
        assert_eq!(render(&[]), "$");
        assert_eq!(
            render_general(&path("items.7.tags.0")),
            "$.items[*].tags[*]"
        );
    }

    #[test]
    fn wildcards_and_descent_match() {
        let p = Pattern::parse("$.items[*].updated_at").unwrap();
        assert!(p.matches(&path("items.0.updated_at")));
        assert!(p.matches(&path("items.41.updated_at")));
        assert!(!p.matches(&path("items.0.created_at")));
        assert!(!p.matches(&path("items.0")));
        assert!(p.covers(&path("items.2.updated_at.nanos")));
        assert!(!p.covers(&path("items.2")));

        let any = Pattern::parse("$.*.id").unwrap();
        assert!(any.matches(&path("person.id")) && any.matches(&path("5.id")));

        let deep = Pattern::parse("$..password").unwrap();
        assert!(deep.matches(&path("password")));
        assert!(deep.matches(&path("user.credentials.password")));
        assert!(!deep.matches(&path("user.password_hint")));

        let quoted = Pattern::parse(r#"$["a.b"][2]"#).unwrap();
        assert!(quoted.matches(&[Step::Key("a.b".into()), Step::Index(2)]));
        let exact = Pattern::parse("$.people[3].name").unwrap();
        assert!(exact.matches(&path("people.3.name")) && !exact.matches(&path("people.4.name")));
        assert!(
            Pattern::parse("$")
                .unwrap()
                .covers(&path("anything.at.all"))
        );
    }

    #[test]
    fn bad_patterns_are_refused_with_the_place() {
        for bad in ["items", "$.", "$.a[", "$.a[x]", "$..", "$a", r#"$["a"x]"#] {
            let error = Pattern::parse(bad).unwrap_err();
            assert!(error.contains("is not a JSON path"), "{bad}: {error}");
        }
    }
}
