//! The tracing subscriber of every `ficus` process: key-value lines on stderr, filtered by
//! `RUST_LOG` or [`DEFAULT_FILTER`].
//!
//! The default must cost nothing per request: the proxy's per-request span has the target
//! [`REQUEST_SPAN_TARGET`], which the default filter turns off, so at the default level the
//! request path creates no span at all (the callsite is disabled once, statically). Turn it on
//! with `RUST_LOG=info,ficus_proxy::request=info`.

use tracing_subscriber::EnvFilter;

use crate::env::Env;

/// The target of the proxy's per-request span (`tracing::info_span!(target: ..., "request")`).
pub const REQUEST_SPAN_TARGET: &str = "ficus_proxy::request";

/// The filter when `RUST_LOG` is unset: `info`, without the per-request span.
pub const DEFAULT_FILTER: &str = "info,ficus_proxy::request=off";

/// The variable that replaces the default filter.
pub const FILTER_VAR: &str = "RUST_LOG";

/// The filter `env` asks for: `RUST_LOG` when set and valid, [`DEFAULT_FILTER`] otherwise
/// (an invalid `RUST_LOG` is reported on stderr, not silently ignored).
pub fn filter(env: &dyn Env) -> EnvFilter {
    match env.get(FILTER_VAR) {
        Some(directives) if !directives.trim().is_empty() => {
            EnvFilter::try_new(&directives).unwrap_or_else(|error| {
                eprintln!("{FILTER_VAR}={directives:?} is not a valid filter ({error}); using {DEFAULT_FILTER:?}");
                EnvFilter::new(DEFAULT_FILTER)
            })
        }
        _ => EnvFilter::new(DEFAULT_FILTER),
    }
}

/// Installs the process's subscriber: stderr (stdout is for what a command prints), colored
/// only on a terminal. Call once, from `main`.
pub fn init(env: &dyn Env) {
    let stderr = std::io::stderr();
    tracing_subscriber::fmt()
        .with_env_filter(filter(env))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&stderr))
        .init();
}

/// For tests: output captured per test, `RUST_LOG` or `warn`, installed once per process.
pub fn init_for_tests() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let filter = match std::env::var(FILTER_VAR) {
            Ok(directives) => {
                EnvFilter::try_new(directives).unwrap_or_else(|_| EnvFilter::new("warn"))
            }
            Err(_) => EnvFilter::new("warn"),
        };
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    /// Whether a span of `target` at info is enabled under `env`'s filter.
    fn request_span_enabled(env: &HashMap<String, String>, target_is_request: bool) -> bool {
        let subscriber = tracing_subscriber::registry().with(filter(env));
        tracing::subscriber::with_default(subscriber, || {
            let span = if target_is_request {
                tracing::info_span!(target: REQUEST_SPAN_TARGET, "request")
            } else {
                tracing::info_span!(target: "ficus_proxy::handler", "other")
            };
            !span.is_disabled()
        })
    }

    #[test]
    fn the_default_filter_turns_the_request_span_off_and_keeps_info() {
        let none = HashMap::new();
        assert!(
            !request_span_enabled(&none, true),
            "request span off by default"
        );
        assert!(
            request_span_enabled(&none, false),
            "other info spans stay on"
        );
    }

    #[test]
    fn rust_log_replaces_the_default() {
        let env: HashMap<String, String> = [(FILTER_VAR.to_owned(), "info".to_owned())].into();
        assert!(request_span_enabled(&env, true));
        let env: HashMap<String, String> = [(FILTER_VAR.to_owned(), "warn".to_owned())].into();
        assert!(!request_span_enabled(&env, false));
    }
}
