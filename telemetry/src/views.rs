//! The reading side of an extracted service's `/views` (written by `ficus-view`'s telemetry
//! router): each view's readiness and lag, typed once for everything that reads it — the
//! proxy's dashboard (shown per service) and the rollout controller (a route never moves to a
//! service whose view is behind).
//!
//! `/views` answers 200 when every view is ready and 503 when one is not; both carry the
//! report. Fields this reader does not use (partitions, positions) are ignored rather than
//! refused: the writer may add fields without breaking its readers.

use serde::{Deserialize, Serialize};

/// A service's `/views` report.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct ViewsReport {
    /// Every view is ready.
    pub ready: bool,
    pub views: Vec<ViewReport>,
}

/// One view's line of the report.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct ViewReport {
    pub view: String,
    /// Caught up with its topic since it was assigned (and not behind its limit now).
    pub ready: bool,
    /// Events on the topic not applied yet.
    pub lag_events: i64,
    /// How far the last applied change's commit time is behind (0 when caught up).
    pub lag_seconds: f64,
    /// Why the view stopped, when it did.
    #[serde(default)]
    pub failure: Option<String>,
}

/// Why an answer of `/views` is not a report.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ViewsError {
    #[error("answered {0} (a views report comes with 200 or 503)")]
    Status(u16),
    #[error("not a views report: {0}")]
    Shape(String),
}

impl ViewsReport {
    /// The report in an answer of `/views` with `status`.
    pub fn from_answer(status: u16, body: &[u8]) -> Result<Self, ViewsError> {
        if status != 200 && status != 503 {
            return Err(ViewsError::Status(status));
        }
        let mut json = serde_json::Deserializer::from_slice(body);
        serde_path_to_error::deserialize(&mut json).map_err(|e| {
            let path = e.path().to_string();
            ViewsError::Shape(if path == "." {
                e.inner().to_string()
            } else {
                format!("{path}: {}", e.inner())
            })
        })
    }

    /// The view furthest behind in events (the first of equals), when there is a view.
    pub fn worst(&self) -> Option<&ViewReport> {
        self.views.iter().reduce(|worst, v| {
            if v.lag_events > worst.lag_events {
                v
            } else {
                worst
            }
        })
    }

    /// The largest lag in events of any view (0 without views).
    pub fn max_lag_events(&self) -> i64 {
        self.views
            .iter()
            .map(|v| v.lag_events)
            .max()
            .unwrap_or(0)
            .max(0)
    }

    /// The largest lag in seconds of any view (0 without views).
    pub fn max_lag_seconds(&self) -> f64 {
        self.views.iter().map(|v| v.lag_seconds).fold(0.0, f64::max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As `ficus-view` writes it (its fields beyond the report's included).
    const BODY: &str = r#"{"ready": false, "views": [
        {"view": "people", "topic": "ficus.public.people", "ready": true, "lag_events": 3,
         "lag_seconds": 0.5, "broker_up": true, "applied_position": "0/16B3748:0",
         "applied_lsn": 23805768, "source_ts_ms": 1, "failure": null, "partitions": []},
        {"view": "teams", "topic": "ficus.public.teams", "ready": false, "lag_events": 900,
         "lag_seconds": 12.0, "broker_up": true, "failure": "decode: bad row"}
    ]}"#;

    #[test]
    fn a_report_reads_with_its_worst_view() {
        let report = ViewsReport::from_answer(503, BODY.as_bytes()).unwrap();
        assert!(!report.ready);
        assert_eq!(report.views.len(), 2);
        assert_eq!(report.views[1].failure.as_deref(), Some("decode: bad row"));
        assert_eq!(report.worst().map(|v| v.view.as_str()), Some("teams"));
        assert_eq!(report.max_lag_events(), 900);
        assert_eq!(report.max_lag_seconds(), 12.0);
        let empty = ViewsReport::from_answer(200, br#"{"ready": true, "views": []}"#).unwrap();
        assert_eq!(empty.worst(), None);
        assert_eq!((empty.max_lag_events(), empty.max_lag_seconds()), (0, 0.0));
    }

    #[test]
    fn what_is_not_a_report_says_where() {
        assert_eq!(
            ViewsReport::from_answer(404, BODY.as_bytes()),
            Err(ViewsError::Status(404))
        );
        let Err(ViewsError::Shape(message)) = ViewsReport::from_answer(200, br#"{"views": []}"#)
        else {
            panic!("a report without `ready` was read");
        };
        assert!(message.contains("ready"), "{message}");
        let Err(ViewsError::Shape(message)) = ViewsReport::from_answer(
            200,
            br#"{"ready": true, "views": [{"view": "people", "ready": "yes"}]}"#,
        ) else {
            panic!("a view with a string `ready` was read");
        };
        assert!(message.starts_with("views[0].ready"), "{message}");
        assert!(matches!(
            ViewsReport::from_answer(200, b"<html>"),
            Err(ViewsError::Shape(_))
        ));
    }
}
