//! `ficus-parity`: the one comparison engine of ficus. The proxy's live shadow and `ficus
//! parity` (CI replay of a recorded corpus) both use it, with the same rules (a route's
//! `[route.parity]` table in routes.toml) and the same calibration. It knows nothing of HTTP
//! servers or clients: callers hand it answers as [`Exchange`]s.
//!
//! ```text
//!  request ──► monolith ─► Exchange ─┐
//!         ├──► monolith ─► Exchange ─┼─ Noise::learn (a calibration sample: the monolith twice)
//!         └──► extracted ─► Exchange ┴─ compare(rules, noise, monolith, extracted) ─► Verdict
//!                                            │ real / noise / ignored differences, JSON paths
//!                                            ▼
//!            Record (request, both answers, verdict, curl per side) ─► CorpusWriter (redacted,
//!            bounded JSON lines) ─► mismatch log / corpus ─► CorpusReader ─► `ficus parity`
//!                                                                         ─► report (JUnit, HTML)
//! ```
//!
//! Files: [`path`] JSON paths and patterns; [`exchange`] an answer and its body encoding;
//! [`rules`] a route's rules (serde, `deny_unknown_fields`) and the stable sample;
//! [`compare`] the structural comparison and the [`Verdict`]; [`noise`] calibration;
//! [`redact`] redaction; [`corpus`] records, the bounded writer, the reader and `curl`s;
//! [`report`] JUnit XML and the self-contained HTML report.

pub mod compare;
pub mod corpus;
pub mod exchange;
pub mod noise;
pub mod path;
pub mod redact;
pub mod report;
pub mod rules;

pub use compare::{BodyCheck, Difference, Kind, Verdict, compare};
pub use corpus::{
    CorpusError, CorpusReader, CorpusWriter, Curls, Record, Request, Urls, Written, sample_key,
};
pub use exchange::Exchange;
pub use noise::Noise;
pub use redact::Redaction;
pub use rules::{Rules, sampled};
