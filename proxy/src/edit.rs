//! Editing a routes file in place (`ficus routes flip`), keeping its comments and layout: the
//! edited text goes through the same check as the proxy's loader ([`crate::check`]) before it
//! is written (atomically), so a flip never writes a file the proxy would refuse.

use std::path::Path;

use toml_edit::{DocumentMut, Table, Value, value};

use crate::check::check;
use crate::config::{Mode, Problems};

/// The changes to one route.
#[derive(Debug, Default, Clone)]
pub struct Flip {
    pub mode: Option<Mode>,
    pub percent: Option<f64>,
    pub sticky: Option<String>,
    pub serve: Option<String>,
    pub fallback: Option<bool>,
}

/// Why an edit was refused.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    #[error("the routes file is not valid TOML: {0}")]
    Syntax(String),
    #[error("no route named \"{0}\"")]
    NoSuchRoute(String),
    #[error("the proxy would refuse the edited file: {0}")]
    Invalid(Problems),
}

/// Applies `flip` to route `name` in `text`; returns the new text, checked as the proxy would
/// check it (files it names are read from `base_dir` when relative).
pub fn flip(text: &str, name: &str, flip: &Flip, base_dir: &Path) -> Result<String, EditError> {
    let mut doc: DocumentMut = text
        .parse()
        .map_err(|e: toml_edit::TomlError| EditError::Syntax(e.to_string()))?;
    let routes = doc
        .get_mut("route")
        .and_then(|r| r.as_array_of_tables_mut())
        .ok_or_else(|| EditError::NoSuchRoute(name.to_owned()))?;
    let route = routes
        .iter_mut()
        .find(|t| t.get("name").and_then(|v| v.as_str()) == Some(name))
        .ok_or_else(|| EditError::NoSuchRoute(name.to_owned()))?;
    if let Some(mode) = flip.mode {
        set(route, "mode", mode.as_str().into());
    }
    if let Some(percent) = flip.percent {
        // Whole percents stay integers in the file, as a person would write them.
        if percent.fract() == 0.0 {
            set(route, "percent", (percent as i64).into());
        } else {
            set(route, "percent", percent.into());
        }
    }
    if let Some(sticky) = &flip.sticky {
        set(route, "sticky", sticky.as_str().into());
    }
    if let Some(serve) = &flip.serve {
        set(route, "serve", serve.as_str().into());
    }
    if let Some(fallback) = flip.fallback {
        set(route, "fallback", fallback.into());
    }
    let edited = doc.to_string();
    check(&edited, base_dir).map_err(EditError::Invalid)?;
    Ok(edited)
}

/// Sets `key` to `new`, keeping the spacing and trailing comment of the value it replaces.
fn set(table: &mut Table, key: &str, new: Value) {
    match table.get_mut(key).and_then(|item| item.as_value_mut()) {
        Some(existing) => {
            let decor = existing.decor().clone();
            *existing = new;
            *existing.decor_mut() = decor;
        }
        None => table[key] = value(new),
    }
}

/// Writes `text` to `path` atomically (a temporary file in the same directory, flushed to
/// disk, then a rename), so a watching proxy never reads half a file.
pub fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let dir = crate::check::base_dir(path);
    let file_name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("the routes path has no file name"))?;
    let temp = dir.join(format!(
        ".{}.{}.tmp",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let written = std::fs::File::create(&temp)
        .and_then(|mut file| {
            file.write_all(text.as_bytes())?;
            file.sync_all()
        })
        .and_then(|()| std::fs::rename(&temp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Sticky;

    fn here() -> &'static Path {
        Path::new(".")
    }

    const FILE: &str = r#"# The demo's routes.
[proxy]
default = "monolith"   # everyone else

[upstreams.monolith]
url = "http://127.0.0.1:8080"
[upstreams.people]
url = "http://127.0.0.1:8081"

# Step one.
[[route]]
name = "people-read"
path = "/api/people/{id}"
serve = "people"
mode = "monolith"   # flipped by the platform team
"#;

    #[test]
    fn flip_keeps_comments_and_layout() {
        let edited = flip(
            FILE,
            "people-read",
            &Flip {
                mode: Some(Mode::Canary),
                percent: Some(25.0),
                ..Flip::default()
            },
            here(),
        )
        .unwrap();
        assert!(edited.contains("# The demo's routes."));
        assert!(edited.contains("default = \"monolith\"   # everyone else"));
        assert!(edited.contains("# Step one."));
        assert!(
            edited.contains("mode = \"canary\"   # flipped by the platform team"),
            "{edited}"
        );
        assert!(edited.contains("percent = 25\n"), "{edited}");
        let file = check(&edited, here()).unwrap().file;
        assert_eq!(file.routes[0].mode, Mode::Canary);
    }

    #[test]
    fn an_edit_that_would_not_validate_is_refused() {
        let too_much = flip(
            FILE,
            "people-read",
            &Flip {
                mode: Some(Mode::Canary),
                percent: Some(140.0),
                ..Flip::default()
            },
            here(),
        )
        .unwrap_err();
        assert!(
            too_much
                .to_string()
                .contains("route \"people-read\": percent: 140 is not in 0..=100"),
            "{too_much}"
        );
        let no_percent = flip(
            FILE,
            "people-read",
            &Flip {
                mode: Some(Mode::Canary),
                ..Flip::default()
            },
            here(),
        );
        assert!(matches!(no_percent, Err(EditError::Invalid(_))));
        assert!(matches!(
            flip(FILE, "nobody", &Flip::default(), here()),
            Err(EditError::NoSuchRoute(_))
        ));
    }

    #[test]
    fn an_edit_of_a_file_the_proxy_would_refuse_is_refused() {
        // Valid as text, but its keys file is missing: the loader would refuse it, so does flip.
        let dir = std::env::temp_dir().join(format!("ficus-edit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let with_auth = FILE.replace(
            "[upstreams.monolith]",
            "[auth]\nissuer = \"i\"\naudience = [\"a\"]\nkeys_file = \"jwks.json\"\n\n[upstreams.monolith]",
        );
        let sticky = Flip {
            sticky: Some("cookie:session".to_owned()),
            ..Flip::default()
        };
        let refused = flip(&with_auth, "people-read", &sticky, &dir).unwrap_err();
        let EditError::Invalid(problems) = &refused else {
            panic!("{refused}");
        };
        assert_eq!(problems.keys().collect::<Vec<_>>(), ["auth.keys_file"]);
        // With the keys file next to the routes file, the same edit goes through.
        std::fs::write(dir.join("jwks.json"), r#"{"keys": []}"#).unwrap();
        let edited = flip(&with_auth, "people-read", &sticky, &dir).unwrap();
        let file = check(&edited, &dir).unwrap().file;
        let rule = file.routes[0].sticky.as_ref().map(|s| s.rule.clone());
        assert_eq!(rule, Some(Sticky::Cookie("session".to_owned())));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn writes_are_atomic_and_leave_no_temporary_file() {
        let dir = std::env::temp_dir().join(format!("ficus-write-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("routes.toml");
        std::fs::write(&path, "old").unwrap();
        write_atomically(&path, FILE).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), FILE);
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["routes.toml"]);
        let _ = std::fs::remove_dir_all(dir);
    }
}
