//! Log lines on standard error (journald keeps them): `key=value` text by default, one JSON
//! object per line with `[log] format = "json"` (switched on reload too). `RUST_LOG` overrides
//! the default filter, [`DEFAULT_FILTER`].

use std::sync::atomic::{AtomicBool, Ordering};

use mcp_edge_policies::config::LogFormat;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::prelude::*;

/// What is logged unless `RUST_LOG` says otherwise. Turned off: Pingora's line per failed
/// request (`pingora_proxy`: the access log tells of it) and per health change
/// (`pingora_load_balancing`: `health` logs its own, with route and URL), and its connection
/// pool's "failed to acquire reusable stream" (`pingora_core::connectors`: a race between a
/// pooled connection's idle watcher and a request taking it, after which a new connection is
/// made; dozens a second under load, with nothing to act on). foyer's start-up notes are
/// debug matter.
pub const DEFAULT_FILTER: &str = "info,pingora=warn,pingora_proxy=off,pingora_load_balancing=off,\
     pingora_core::connectors=off,foyer=warn,redis=error";

/// Lines are written as JSON (else as text).
static JSON: AtomicBool = AtomicBool::new(false);

/// Sets up logging, as text until a configuration says otherwise.
pub fn init() {
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_FILTER))
    };
    // Colours only on a terminal: journald and log files get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let text = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .with_filter(filter())
        .with_filter(filter_fn(|_| !JSON.load(Ordering::Relaxed)));
    let json = tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_writer(std::io::stderr)
        .with_filter(filter())
        .with_filter(filter_fn(|_| JSON.load(Ordering::Relaxed)));
    tracing_subscriber::registry().with(text).with(json).with(crate::metrics::disk_errors_counter()).init();
}

/// Writes lines in `format` from now on (at start and on each reload).
pub fn set_format(format: LogFormat) {
    JSON.store(format == LogFormat::Json, Ordering::Relaxed);
}
