//! The decision ledger (JSON lines, `rollout.ledger.jsonl` beside routes.toml): every start,
//! promote, rollback, pause, resume and done, and each change of a hold's verdict, with its
//! inputs, thresholds and the routes.toml diff. It is also the controller's state: where each
//! route stands and whether it is paused are read back from it, so a restarted controller (and
//! `ficus rollout pause` from another process) agree with the running one.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What a line records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Start,
    Promote,
    Hold,
    Rollback,
    Pause,
    Resume,
    Done,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Start => "start",
            Action::Promote => "promote",
            Action::Hold => "hold",
            Action::Rollback => "rollback",
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Done => "done",
        }
    }
}

/// One line of the ledger. The first fields are the contract the dashboard reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// RFC 3339, UTC.
    pub ts: String,
    pub route: String,
    pub action: Action,
    /// The step the route is at after this line: `shadow`, `canary 5%`, `extracted`.
    pub step: String,
    pub step_index: usize,
    /// `pass`, `fail`, `inconclusive`, or null (pause, resume, start).
    pub verdict: Option<String>,
    /// One line: why.
    pub reason: String,
    #[serde(default)]
    pub inputs: Value,
    #[serde(default)]
    pub thresholds: Value,
    /// Unified diff of routes.toml, when this decision edited it.
    pub diff: Option<String>,
    /// Who wrote the line: `controller`, or the person's `ficus rollout pause|resume`.
    #[serde(default)]
    pub by: String,
    /// Whether the route is paused after this line.
    #[serde(default)]
    pub paused: bool,
}

impl Entry {
    pub fn now() -> String {
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    }
}

/// Where a route stands, as the ledger says.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteState {
    pub step_index: usize,
    pub step: String,
    pub paused: bool,
    pub done: bool,
    /// The last line about the route.
    pub last: Entry,
    /// The last line with a verdict.
    pub last_decision: Option<Entry>,
}

/// Why the ledger could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: not a ledger line: {message}")]
    Line {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// The ledger file, read incrementally.
#[derive(Debug)]
pub struct Ledger {
    path: PathBuf,
    /// Bytes already read.
    offset: u64,
    lines: usize,
    pub states: BTreeMap<String, RouteState>,
}

impl Ledger {
    /// Opens (and reads whole) the ledger at `path`; a missing file is an empty ledger.
    pub fn open(path: &Path) -> Result<Self, LedgerError> {
        let mut ledger = Self {
            path: path.to_path_buf(),
            offset: 0,
            lines: 0,
            states: BTreeMap::new(),
        };
        ledger.refresh()?;
        Ok(ledger)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the lines appended since the last read (by this process or another) and
    /// returns them; the states follow.
    pub fn refresh(&mut self) -> Result<Vec<Entry>, LedgerError> {
        let io = |source| LedgerError::Io {
            path: self.path.clone(),
            source,
        };
        let mut file = match std::fs::File::open(&self.path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(e)),
        };
        file.seek(SeekFrom::Start(self.offset)).map_err(io)?;
        let mut text = String::new();
        file.read_to_string(&mut text).map_err(io)?;
        // Only whole lines: a writer may be in the middle of one.
        let whole = text.rfind('\n').map(|i| i + 1).unwrap_or(0);
        let mut entries = Vec::new();
        for line in text[..whole].lines() {
            self.lines += 1;
            if line.trim().is_empty() {
                continue;
            }
            let entry: Entry = serde_json::from_str(line).map_err(|e| LedgerError::Line {
                path: self.path.clone(),
                line: self.lines,
                message: e.to_string(),
            })?;
            self.apply(&entry);
            entries.push(entry);
        }
        self.offset += whole as u64;
        Ok(entries)
    }

    fn apply(&mut self, entry: &Entry) {
        let decision = entry.verdict.is_some().then(|| entry.clone());
        let state = self
            .states
            .entry(entry.route.clone())
            .or_insert_with(|| RouteState {
                step_index: entry.step_index,
                step: entry.step.clone(),
                paused: false,
                done: false,
                last: entry.clone(),
                last_decision: None,
            });
        state.step_index = entry.step_index;
        state.step = entry.step.clone();
        state.paused = entry.paused;
        state.done = match entry.action {
            Action::Done => true,
            Action::Start => false,
            _ => state.done,
        };
        state.last = entry.clone();
        if decision.is_some() {
            state.last_decision = decision;
        }
    }

    /// Appends `entry` as one line (one write, so concurrent writers never interleave inside
    /// a line), flushed to disk, and applies it.
    pub fn append(&mut self, entry: &Entry) -> Result<(), LedgerError> {
        // Lines another process appended first are read before ours.
        self.refresh()?;
        let io = |source| LedgerError::Io {
            path: self.path.clone(),
            source,
        };
        let mut line = serde_json::to_string(entry).expect("a ledger entry serializes");
        line.push('\n');
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(io)?;
        file.write_all(line.as_bytes()).map_err(io)?;
        file.sync_data().map_err(io)?;
        self.refresh()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(route: &str, action: Action, index: usize, paused: bool) -> Entry {
        Entry {
            ts: Entry::now(),
            route: route.into(),
            action,
            step: format!("step {index}"),
            step_index: index,
            verdict: matches!(action, Action::Promote | Action::Hold | Action::Rollback)
                .then(|| "pass".to_owned()),
            reason: "because".into(),
            inputs: serde_json::json!({"compared": 3}),
            thresholds: serde_json::json!({}),
            diff: None,
            by: "controller".into(),
            paused,
        }
    }

    #[test]
    fn the_state_is_read_back_and_other_writers_are_seen() {
        let dir = std::env::temp_dir().join(format!("ficus-ledger-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("rollout.ledger.jsonl");
        let _ = std::fs::remove_file(&path);
        let mut a = Ledger::open(&path).unwrap();
        a.append(&entry("people-read", Action::Start, 0, false))
            .unwrap();
        a.append(&entry("people-read", Action::Promote, 1, false))
            .unwrap();
        // Another process (a person's pause) writes; the first sees it on refresh.
        let mut b = Ledger::open(&path).unwrap();
        assert_eq!(b.states["people-read"].step_index, 1);
        b.append(&entry("people-read", Action::Pause, 1, true))
            .unwrap();
        let seen = a.refresh().unwrap();
        assert_eq!(seen.len(), 1);
        assert!(a.states["people-read"].paused);
        assert_eq!(
            a.states["people-read"]
                .last_decision
                .as_ref()
                .unwrap()
                .action,
            Action::Promote
        );
        // The contract fields, exactly.
        let text = std::fs::read_to_string(&path).unwrap();
        let line: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        for key in [
            "ts",
            "route",
            "action",
            "step",
            "step_index",
            "verdict",
            "reason",
            "inputs",
            "thresholds",
            "diff",
        ] {
            assert!(line.get(key).is_some(), "{key} missing in {line}");
        }
        assert_eq!(line["action"], "start");
        assert!(line["verdict"].is_null());
        let _ = std::fs::remove_dir_all(dir);
    }
}
