//! Fail points: the process exits on the spot at a named crash window, so tests can prove
//! that a crash there loses nothing (supabase/etl's `failpoints.rs` is the model; this is a
//! hand-written equivalent of the `fail` crate's `N*off->return`, without the dependency).
//!
//! Compiled only with the cargo feature `failpoints` (the root package's tests enable it
//! through a dev-dependency); without it [`hit`] is an empty inline function. With it, the
//! environment variable `FICUS_CDC_FAILPOINTS` lists `name=N` pairs separated by `,`: the `N`th
//! time the point `name` is reached, the process logs it and exits with status
//! [`EXIT_CODE`] (no shutdown path runs: nothing is flushed, nothing confirmed).
//!
//! The windows:
//! - [`AFTER_ACK_BEFORE_CONFIRM`]: the broker acknowledged events, the position covering them
//!   is not yet confirmed to PostgreSQL (a restart sends them again: duplicates, no loss);
//! - [`SNAPSHOT_CHUNK_PUBLISHED`]: a snapshot chunk is acknowledged by the broker, its progress
//!   row not yet written (a restart sends the chunk again).

/// The broker acknowledged events whose position is not confirmed to PostgreSQL yet.
pub const AFTER_ACK_BEFORE_CONFIRM: &str = "after_ack_before_confirm";
/// A snapshot chunk is acknowledged, its progress row not written yet.
pub const SNAPSHOT_CHUNK_PUBLISHED: &str = "snapshot_chunk_published";
/// The exit status of a process stopped at a fail point.
pub const EXIT_CODE: i32 = 86;
/// The environment variable that arms fail points.
pub const ENV: &str = "FICUS_CDC_FAILPOINTS";

/// Reaching fail point `name`: exits the process when it is armed and its count is reached.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit(_name: &'static str) {}

/// Reaching fail point `name`: exits the process when it is armed and its count is reached.
#[cfg(feature = "failpoints")]
pub fn hit(name: &'static str) {
    if armed::reached(name) {
        tracing::error!(
            failpoint = name,
            "fail point reached: exiting with status {EXIT_CODE}"
        );
        eprintln!("ficus cdc: fail point {name} reached; exiting");
        std::process::exit(EXIT_CODE);
    }
}

#[cfg(feature = "failpoints")]
mod armed {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::sync::OnceLock;

    /// Remaining hits before each armed point fires.
    fn points() -> &'static Mutex<HashMap<String, u64>> {
        static POINTS: OnceLock<Mutex<HashMap<String, u64>>> = OnceLock::new();
        POINTS.get_or_init(|| Mutex::new(parse(&std::env::var(super::ENV).unwrap_or_default())))
    }

    pub(super) fn parse(spec: &str) -> HashMap<String, u64> {
        spec.split(',')
            .filter_map(|item| {
                let (name, count) = item.trim().split_once('=')?;
                Some((name.trim().to_owned(), count.trim().parse().ok()?))
            })
            .collect()
    }

    /// Counts a hit of `name`; true when it is the armed one.
    pub(super) fn reached(name: &str) -> bool {
        let mut points = points().lock().expect("fail points");
        match points.get_mut(name) {
            Some(left) if *left <= 1 => {
                *left = 0;
                true
            }
            Some(left) => {
                *left -= 1;
                false
            }
            None => false,
        }
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn the_spec_lists_points_and_counts() {
            let points = super::parse("a=3, b=1,bad,c=x");
            assert_eq!(points.len(), 2);
            assert_eq!(points["a"], 3);
            assert_eq!(points["b"], 1);
        }
    }
}
