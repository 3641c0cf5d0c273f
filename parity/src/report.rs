//! The reports of a `ficus parity` run: JUnit XML (one test suite per route, one test case per
//! request, the JSON path of each difference in the failure) and one self-contained HTML file
//! (inline CSS, no script, no external asset: per-route summary, the noise learned, each
//! mismatch's differences side by side with their paths, the `curl` for each side).
//!
//! A route fails when a monolith request failed, or when its mismatched requests (an extracted
//! side that could not answer counts as mismatched) exceed its `max_mismatch_percent`. Mismatches
//! within the threshold are listed but pass (JUnit `system-out`), so the XML agrees with the exit
//! code.

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;

use crate::compare::{Difference, Kind};
use crate::corpus::Record;
use crate::noise::Noise;
use crate::rules::Rules;

/// How one replayed request ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum Outcome {
    Matched,
    Mismatched,
    /// A side could not be asked or did not answer (`side` is `monolith` or `extracted`).
    Error {
        side: String,
        message: String,
    },
    /// Not replayed (no extracted side for its route, a body cut at recording, ...).
    Skipped {
        reason: String,
    },
}

/// One replayed request: the record (redacted: request, both answers, verdict, curls) and how
/// it ended.
#[derive(Debug, Clone, Serialize)]
pub struct Case {
    pub record: Record,
    pub outcome: Outcome,
}

/// One route's part of a run.
#[derive(Debug, Clone, Serialize)]
pub struct RouteRun {
    pub name: String,
    pub monolith_url: String,
    pub extracted_url: String,
    pub rules: Rules,
    pub noise: Noise,
    pub cases: Vec<Case>,
}

impl RouteRun {
    fn count(&self, pick: impl Fn(&Outcome) -> bool) -> usize {
        self.cases.iter().filter(|c| pick(&c.outcome)).count()
    }
    pub fn matched(&self) -> usize {
        self.count(|o| *o == Outcome::Matched)
    }
    /// Mismatched, the extracted side's errors included.
    pub fn mismatched(&self) -> usize {
        self.count(|o| {
            matches!(o, Outcome::Mismatched)
                || matches!(o, Outcome::Error { side, .. } if side != "monolith")
        })
    }
    /// Requests the monolith did not answer: they cannot be judged, and fail the route.
    pub fn monolith_errors(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Error { side, .. } if side == "monolith"))
    }
    pub fn skipped(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Skipped { .. }))
    }
    /// Requests compared (or that should have been: the extracted side's errors count).
    pub fn compared(&self) -> usize {
        self.matched() + self.mismatched()
    }
    pub fn mismatch_percent(&self) -> f64 {
        match self.compared() {
            0 => 0.0,
            n => self.mismatched() as f64 * 100.0 / n as f64,
        }
    }
    /// Within the route's threshold, and every request judged.
    pub fn passed(&self) -> bool {
        self.monolith_errors() == 0 && self.mismatch_percent() <= self.rules.max_mismatch_percent
    }
}

/// A whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// What was replayed (the corpus file).
    pub corpus: String,
    pub routes: Vec<RouteRun>,
    pub seconds: f64,
}

impl Run {
    pub fn passed(&self) -> bool {
        self.routes.iter().all(RouteRun::passed)
    }
}

fn xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters XML 1.0 cannot carry.
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\t' | '\r') => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// A value as shown: scalars compact, structures indented, absence said.
fn shown(value: Option<&Value>) -> String {
    match value {
        None => "(absent)".to_owned(),
        Some(Value::Object(_) | Value::Array(_)) => {
            serde_json::to_string_pretty(value.unwrap_or(&Value::Null)).unwrap_or_default()
        }
        Some(value) => value.to_string(),
    }
}

fn case_name(record: &Record) -> String {
    format!("{} {}", record.request.method, record.request.target())
}

fn differences(record: &Record) -> &[Difference] {
    record
        .verdict
        .as_ref()
        .map(|v| v.differences.as_slice())
        .unwrap_or_default()
}

/// What a mismatch says in text: each real difference, then the curls.
fn mismatch_text(case: &Case) -> (String, String) {
    let record = &case.record;
    let real: Vec<&Difference> = differences(record)
        .iter()
        .filter(|d| d.kind == Kind::Real)
        .collect();
    let total = record.verdict.as_ref().map_or(real.len(), |v| v.real);
    let paths: Vec<&str> = real.iter().map(|d| d.path.as_str()).collect();
    let message = format!(
        "{total} difference{}: {}",
        if total == 1 { "" } else { "s" },
        paths.join(", ")
    );
    let mut body = String::new();
    for d in &real {
        let _ = writeln!(
            body,
            "{}: monolith {} / extracted {}",
            d.path,
            shown(d.monolith.as_ref()),
            shown(d.extracted.as_ref())
        );
    }
    if let Some(curl) = &record.curl {
        let _ = writeln!(body, "curl (monolith): {}", curl.monolith);
        let _ = writeln!(body, "curl (extracted): {}", curl.extracted);
    }
    (message, body)
}

/// JUnit XML of a run.
pub fn junit(run: &Run) -> String {
    let total: usize = run.routes.iter().map(|r| r.cases.len()).sum();
    let failing = |r: &RouteRun| if r.passed() { 0 } else { r.mismatched() };
    let failures: usize = run.routes.iter().map(failing).sum();
    let errors: usize = run.routes.iter().map(RouteRun::monolith_errors).sum();
    let skipped: usize = run.routes.iter().map(RouteRun::skipped).sum();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"ficus parity\" tests=\"{total}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"{skipped}\" time=\"{:.3}\">",
        run.seconds
    );
    for route in &run.routes {
        let _ = writeln!(
            out,
            "  <testsuite name=\"parity.{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\">",
            xml(&route.name),
            route.cases.len(),
            failing(route),
            route.monolith_errors(),
            route.skipped()
        );
        out.push_str("    <properties>\n");
        let mut property = |name: &str, value: String| {
            let _ = writeln!(
                out,
                "      <property name=\"{}\" value=\"{}\"/>",
                xml(name),
                xml(&value)
            );
        };
        property("monolith", route.monolith_url.clone());
        property("extracted", route.extracted_url.clone());
        property(
            "mismatch_percent",
            format!("{:.2}", route.mismatch_percent()),
        );
        property(
            "max_mismatch_percent",
            route.rules.max_mismatch_percent.to_string(),
        );
        property("noise.pairs", route.noise.pairs.to_string());
        for (path, count) in &route.noise.paths {
            property(&format!("noise {path}"), count.to_string());
        }
        out.push_str("    </properties>\n");
        for case in &route.cases {
            let _ = write!(
                out,
                "    <testcase classname=\"parity.{}\" name=\"{}\"",
                xml(&route.name),
                xml(&case_name(&case.record))
            );
            match &case.outcome {
                Outcome::Matched => out.push_str("/>\n"),
                Outcome::Mismatched => {
                    let (message, body) = mismatch_text(case);
                    if route.passed() {
                        let _ = writeln!(
                            out,
                            ">\n      <system-out>within the route's threshold: {}\n{}</system-out>\n    </testcase>",
                            xml(&message),
                            xml(&body)
                        );
                    } else {
                        let _ = writeln!(
                            out,
                            ">\n      <failure type=\"mismatch\" message=\"{}\">{}</failure>\n    </testcase>",
                            xml(&message),
                            xml(&body)
                        );
                    }
                }
                Outcome::Error { side, message } => {
                    let element = if side == "monolith" || !route.passed() {
                        if side == "monolith" {
                            "error"
                        } else {
                            "failure"
                        }
                    } else {
                        "system-out"
                    };
                    let text = format!("{side}: {message}");
                    if element == "system-out" {
                        let _ = writeln!(
                            out,
                            ">\n      <system-out>within the route's threshold: {}</system-out>\n    </testcase>",
                            xml(&text)
                        );
                    } else {
                        let _ = writeln!(
                            out,
                            ">\n      <{element} type=\"{side}\" message=\"{}\">{}</{element}>\n    </testcase>",
                            xml(&text),
                            xml(&text)
                        );
                    }
                }
                Outcome::Skipped { reason } => {
                    let _ = writeln!(
                        out,
                        ">\n      <skipped message=\"{}\"/>\n    </testcase>",
                        xml(reason)
                    );
                }
            }
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

const STYLE: &str = "body{font:14px/1.45 system-ui,sans-serif;margin:2em;color:#1b1b1b}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f3f3f3}.pass{color:#0a6b2b;font-weight:600}.fail{color:#b00020;font-weight:600}
pre{background:#f6f6f6;padding:.5em;overflow-x:auto;white-space:pre-wrap;margin:.2em 0}
code{font-family:ui-monospace,monospace}.path{font-family:ui-monospace,monospace;font-weight:600}
.noise,.ignored{color:#666}details{margin:.6em 0;border-left:3px solid #ddd;padding-left:.8em}
details.mismatch{border-color:#b00020}details.error{border-color:#e08000}summary{cursor:pointer}";

/// The self-contained HTML report of a run.
pub fn html(run: &Run) -> String {
    let mut out = String::new();
    let verdict = |passed: bool| {
        if passed {
            "<span class=\"pass\">pass</span>"
        } else {
            "<span class=\"fail\">FAIL</span>"
        }
    };
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>ficus parity: {}</title><style>{STYLE}</style></head><body>\n",
        xml(&run.corpus)
    );
    let _ = writeln!(
        out,
        "<h1>ficus parity {}</h1><p>Corpus <code>{}</code>, {} routes, {:.1} s.</p>",
        verdict(run.passed()),
        xml(&run.corpus),
        run.routes.len(),
        run.seconds
    );
    out.push_str("<table><tr><th>route</th><th>monolith</th><th>extracted</th><th>compared</th><th>matched</th><th>mismatched</th><th>monolith errors</th><th>skipped</th><th>mismatch %</th><th>threshold %</th><th>noise pairs</th><th></th></tr>\n");
    for route in &run.routes {
        let _ = writeln!(
            out,
            "<tr><td><a href=\"#route-{0}\">{0}</a></td><td><code>{1}</code></td><td><code>{2}</code></td><td>{3}</td><td>{4}</td><td>{5}</td><td>{6}</td><td>{7}</td><td>{8:.2}</td><td>{9}</td><td>{10}</td><td>{11}</td></tr>",
            xml(&route.name),
            xml(&route.monolith_url),
            xml(&route.extracted_url),
            route.compared(),
            route.matched(),
            route.mismatched(),
            route.monolith_errors(),
            route.skipped(),
            route.mismatch_percent(),
            route.rules.max_mismatch_percent,
            route.noise.pairs,
            verdict(route.passed()),
        );
    }
    out.push_str("</table>\n");
    for route in &run.routes {
        let _ = writeln!(
            out,
            "<h2 id=\"route-{0}\">{0} {1}</h2>",
            xml(&route.name),
            verdict(route.passed())
        );
        if route.noise.paths.is_empty() {
            let _ = writeln!(
                out,
                "<p>Noise: nothing differed between the monolith's answers ({} pairs).</p>",
                route.noise.pairs
            );
        } else {
            let _ = writeln!(
                out,
                "<p>Noise learned from {} pairs of monolith answers (differences there do not count):</p><table><tr><th>path</th><th>pairs that differed</th></tr>",
                route.noise.pairs
            );
            for (path, count) in &route.noise.paths {
                let _ = writeln!(
                    out,
                    "<tr><td class=\"path\">{}</td><td>{count}</td></tr>",
                    xml(path)
                );
            }
            out.push_str("</table>\n");
        }
        let cases: Vec<&Case> = route
            .cases
            .iter()
            .filter(|c| !matches!(c.outcome, Outcome::Matched))
            .collect();
        if cases.is_empty() {
            out.push_str("<p>Every compared request matched.</p>\n");
        }
        for case in cases {
            case_html(&mut out, case);
        }
    }
    out.push_str("</body></html>\n");
    out
}

fn case_html(out: &mut String, case: &Case) {
    let record = &case.record;
    let (class, label) = match &case.outcome {
        Outcome::Matched => return,
        Outcome::Mismatched => ("mismatch", "mismatch".to_owned()),
        Outcome::Error { side, message } => {
            ("error", format!("error on the {side} side: {message}"))
        }
        Outcome::Skipped { reason } => ("skipped", format!("skipped: {reason}")),
    };
    let _ = writeln!(
        out,
        "<details class=\"{class}\" open><summary><code>{}</code> — {}</summary>",
        xml(&case_name(record)),
        xml(&label)
    );
    if let Some(verdict) = &record.verdict {
        let _ = writeln!(
            out,
            "<p>{} real, {} noise, {} ignored{}.</p>",
            verdict.real,
            verdict.noise,
            verdict.ignored,
            if verdict.omitted > 0 {
                format!(", {} more not searched", verdict.omitted)
            } else {
                String::new()
            }
        );
        let row = |out: &mut String, d: &Difference| {
            let _ = writeln!(
                out,
                "<tr class=\"{}\"><td class=\"path\">{}</td><td><pre>{}</pre></td><td><pre>{}</pre></td><td>{}</td></tr>",
                match d.kind {
                    Kind::Real => "real",
                    Kind::Noise => "noise",
                    Kind::Ignored => "ignored",
                },
                xml(&d.path),
                xml(&shown(d.monolith.as_ref())),
                xml(&shown(d.extracted.as_ref())),
                match d.kind {
                    Kind::Real => "real",
                    Kind::Noise => "noise",
                    Kind::Ignored => "ignored",
                }
            );
        };
        let header = "<table><tr><th>path</th><th>monolith</th><th>extracted</th><th></th></tr>\n";
        let (real, suppressed): (Vec<&Difference>, Vec<&Difference>) = verdict
            .differences
            .iter()
            .partition(|d| d.kind == Kind::Real);
        if !real.is_empty() {
            out.push_str(header);
            for d in real {
                row(out, d);
            }
            out.push_str("</table>\n");
        }
        if !suppressed.is_empty() {
            let _ = writeln!(
                out,
                "<details><summary>{} suppressed (noise or ignored)</summary>{header}",
                suppressed.len()
            );
            for d in suppressed {
                row(out, d);
            }
            out.push_str("</table></details>\n");
        }
    }
    if let Some(curl) = &record.curl {
        let _ = writeln!(
            out,
            "<p>Reproduce (redacted headers come from the environment):</p><pre>{}</pre><pre>{}</pre>",
            xml(&curl.monolith),
            xml(&curl.extracted)
        );
    }
    out.push_str("</details>\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::compare;
    use crate::corpus::{Request, Urls};
    use crate::exchange::Exchange;
    use crate::redact::Redaction;
    use bytes::Bytes;
    use serde_json::json;

    fn answer(body: Value) -> Exchange {
        Exchange {
            status: 200,
            headers: vec![("content-type".into(), b"application/json".to_vec())],
            body: Bytes::from(body.to_string()),
            truncated: false,
        }
    }

    fn run(max_mismatch_percent: f64) -> Run {
        let rules = Rules {
            max_mismatch_percent,
            ..Rules::default()
        };
        let request = |path: &str| Request {
            method: "GET".into(),
            path: path.into(),
            headers: vec![("authorization".into(), b"Bearer s3cret".to_vec())],
            ..Request::default()
        };
        let urls = Urls {
            monolith: "http://m".into(),
            extracted: "http://e".into(),
        };
        let (m, e) = (
            answer(json!({"name": "<Bob>"})),
            answer(json!({"name": "Rob"})),
        );
        let verdict = compare(&rules, &Noise::default(), &m, &e);
        let mismatch = Record::mismatch(
            "people-read",
            request("/api/people/2"),
            m,
            e,
            verdict,
            urls.clone(),
            None,
        )
        .redacted(&Redaction::default());
        let matched = Record::request(Some("people-read"), request("/api/people/1"), None);
        Run {
            corpus: "corpus.jsonl".into(),
            seconds: 1.0,
            routes: vec![RouteRun {
                name: "people-read".into(),
                monolith_url: urls.monolith,
                extracted_url: urls.extracted,
                rules,
                noise: Noise::default(),
                cases: vec![
                    Case {
                        record: matched,
                        outcome: Outcome::Matched,
                    },
                    Case {
                        record: mismatch,
                        outcome: Outcome::Mismatched,
                    },
                ],
            }],
        }
    }

    #[test]
    fn reports_name_the_path_and_agree_with_the_threshold() {
        let failing = run(0.0);
        assert!(!failing.passed());
        let xml = junit(&failing);
        assert!(xml.contains("failures=\"1\""), "{xml}");
        assert!(
            xml.contains("<failure type=\"mismatch\" message=\"1 difference: $.name\">"),
            "{xml}"
        );
        assert!(
            xml.contains("$.name: monolith &quot;&lt;Bob&gt;&quot; / extracted &quot;Rob&quot;"),
            "{xml}"
        );
        assert!(xml.contains("authorization: $AUTHORIZATION"), "{xml}");
        assert!(!xml.contains("s3cret"));
        let page = html(&failing);
        assert!(page.contains("<td class=\"path\">$.name</td>"), "{page}");
        assert!(page.contains("&quot;&lt;Bob&gt;&quot;"));
        assert!(
            !page.contains("<script") && !page.contains("src=") && !page.contains("href=\"http")
        );
        assert!(page.contains("FAIL"));

        // 1 of 2 mismatched is 50 %: within a 50 % threshold the route passes, listed only.
        let passing = run(50.0);
        assert!(passing.passed());
        let xml = junit(&passing);
        assert!(
            xml.contains("failures=\"0\"") && !xml.contains("<failure"),
            "{xml}"
        );
        assert!(
            xml.contains("within the route's threshold: 1 difference: $.name"),
            "{xml}"
        );
    }
}
