//! Editing a routes file in place (`ficus routes flip`), keeping its comments and layout, and
//! refusing any edit that would not validate.

use toml_edit::{DocumentMut, Table, Value, value};

use crate::config::{ConfigErrors, Mode, RoutesFile};

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
    #[error("the edit would make the routes file invalid: {0}")]
    Invalid(ConfigErrors),
}

/// Applies `flip` to route `name` in `text`; returns the new text, validated.
pub fn flip(text: &str, name: &str, flip: &Flip) -> Result<String, EditError> {
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
    RoutesFile::parse(&edited).map_err(EditError::Invalid)?;
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

/// Writes `text` to `path` atomically (a temporary file in the same directory, then a rename),
/// so a watching proxy never reads half a file.
pub fn write_atomically(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => std::path::PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("the routes path has no file name"))?;
    let temp = dir.join(format!(
        ".{}.{}.tmp",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    std::fs::write(&temp, text)?;
    std::fs::rename(&temp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let file = RoutesFile::parse(&edited).unwrap();
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
        );
        assert!(matches!(no_percent, Err(EditError::Invalid(_))));
        assert!(matches!(
            flip(FILE, "nobody", &Flip::default()),
            Err(EditError::NoSuchRoute(_))
        ));
    }
}
