//! What `/healthz` reports: healthy, or stopped by a failure no retry fixes (its class, cause
//! and message, and the refused record), and in either case the records set aside in the
//! dead-letter topic so far (`errors.tolerance = "all"`). The supervisor ([`crate::pipeline`]) records the failure here; the HTTP
//! serving code only asks [`Health::report`], so it can be swapped without touching this; and
//! `ficus cdc status` reads the same report back over HTTP ([`fetch`]).

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{CdcError, ErrorClass, RecordInfo};

/// The adapter's health as `/healthz` serves it (JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthReport {
    /// `ok` or `failed`.
    pub status: String,
    /// `operator` or `never` when failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    /// The cause label (`wal_level`, `slot_plugin`, `record_too_large`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    /// The error, in full.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The refused record, for a `never` failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<RecordInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Records sent to the dead-letter topic (with a placeholder in their place) since start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letters: Option<DeadLetters>,
}

/// The dead-letter count and the last record set aside.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetters {
    pub topic: String,
    pub count: u64,
    /// The cause label of the last one (`record_too_large`, `invalid_record`, ...).
    pub last_cause: String,
    pub last: RecordInfo,
}

impl HealthReport {
    pub fn is_ok(&self) -> bool {
        self.status == "ok"
    }

    /// 200 when healthy, 503 when stopped by a failure.
    pub fn http_status(&self) -> u16 {
        if self.is_ok() { 200 } else { 503 }
    }

    /// The response body (JSON).
    pub fn body(&self) -> String {
        serde_json::to_string(self).expect("a health report serializes")
    }
}

/// The failure that stopped the pipeline, if one did.
#[derive(Default)]
pub struct Health {
    failure: Mutex<Option<HealthReport>>,
    dead_letters: Mutex<Option<DeadLetters>>,
}

impl Health {
    /// Records the failure that stopped the pipeline (the first one stays).
    pub fn fail(&self, class: ErrorClass, cause: &str, error: &CdcError) {
        let record = match error {
            CdcError::Delivery(failure) => failure.record.clone(),
            _ => None,
        };
        let mut failure = self.failure.lock().expect("health");
        if failure.is_none() {
            *failure = Some(HealthReport {
                status: "failed".to_owned(),
                class: Some(class.as_str().to_owned()),
                cause: Some(cause.to_owned()),
                error: Some(error.to_string()),
                record,
                since: Some(chrono::Utc::now()),
                dead_letters: None,
            });
        }
    }

    /// Counts a record sent to the dead-letter topic `topic`.
    pub fn dead_lettered(&self, topic: &str, cause: &str, record: RecordInfo) {
        let mut letters = self.dead_letters.lock().expect("health");
        let count = letters.as_ref().map_or(0, |l| l.count) + 1;
        *letters = Some(DeadLetters {
            topic: topic.to_owned(),
            count,
            last_cause: cause.to_owned(),
            last: record,
        });
    }

    pub fn report(&self) -> HealthReport {
        let mut report = self
            .failure
            .lock()
            .expect("health")
            .clone()
            .unwrap_or_else(|| HealthReport {
                status: "ok".to_owned(),
                class: None,
                cause: None,
                error: None,
                record: None,
                since: None,
                dead_letters: None,
            });
        report.dead_letters = self.dead_letters.lock().expect("health").clone();
        report
    }
}

/// Asks a running adapter listening on `addr` for its health (`GET /healthz`); an unspecified
/// address (`0.0.0.0`) is asked on loopback. `Err` says why there was no answer.
pub async fn fetch(addr: SocketAddr) -> Result<HealthReport, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut addr = addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(
                format!("GET /healthz HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(3), exchange)
        .await
        .map_err(|_| format!("no answer from {addr} within 3 s"))?
        .map_err(|e| format!("no adapter answers on {addr}: {e}"))?;
    let text = String::from_utf8_lossy(&response);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body)
        .ok_or_else(|| format!("{addr} answered no HTTP response"))?;
    serde_json::from_str(body.trim())
        .map_err(|e| format!("{addr} answered an unexpected /healthz body ({e}): {body}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_failure_is_reported_with_its_cause() {
        let health = Health::default();
        assert!(health.report().is_ok());
        assert_eq!(health.report().http_status(), 200);
        let error = CdcError::Operator {
            cause: "wal_level",
            message: "wal_level = replica".to_owned(),
        };
        health.fail(ErrorClass::Operator, "wal_level", &error);
        health.fail(ErrorClass::Never, "record_too_large", &CdcError::Stopped);
        let report = health.report();
        assert_eq!(report.http_status(), 503);
        assert_eq!(report.cause.as_deref(), Some("wal_level"));
        assert_eq!(report.class.as_deref(), Some("operator"));
        let back: HealthReport = serde_json::from_str(&report.body()).unwrap();
        assert_eq!(back, report);
    }

    #[test]
    fn dead_letters_are_counted_and_the_last_one_named() {
        let health = Health::default();
        assert!(health.report().dead_letters.is_none());
        let record = |key: &[u8]| RecordInfo::new("public.t", "p.public.t", Some(key), 2_000_000);
        health.dead_lettered("dlq", "record_too_large", record(b"{\"id\":1}"));
        health.dead_lettered("dlq", "record_too_large", record(b"{\"id\":2}"));
        let report = health.report();
        assert!(report.is_ok(), "dead letters keep the adapter healthy");
        let letters = report.dead_letters.clone().unwrap();
        assert_eq!(letters.count, 2);
        assert_eq!(letters.last.key, "{\"id\":2}");
        let back: HealthReport = serde_json::from_str(&report.body()).unwrap();
        assert_eq!(back, report);
    }
}
