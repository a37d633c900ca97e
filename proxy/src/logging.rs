//! Log lines on standard error (journald keeps them): `key=value` text by default, one JSON
//! object per line with `[log] format = "json"` (switched on reload too). `RUST_LOG` overrides
//! the default filter, [`DEFAULT_FILTER`].

use std::sync::{Mutex, OnceLock};

use mcp_edge_policies::config::LogFormat;
use tracing_subscriber::prelude::*;
use tracing_subscriber::{Registry, reload};

/// What is logged unless `RUST_LOG` says otherwise. Turned off: Pingora's line per failed
/// request (`pingora_proxy`: the access log tells of it) and per health change
/// (`pingora_load_balancing`: `health` logs its own, with route and URL), and its connection
/// pool's "failed to acquire reusable stream" (`pingora_core::connectors`: a race between a
/// pooled connection's idle watcher and a request taking it, after which a new connection is
/// made; dozens a second under load, with nothing to act on). foyer's start-up notes are
/// debug matter.
pub const DEFAULT_FILTER: &str = "info,pingora=warn,pingora_proxy=off,pingora_load_balancing=off,\
     pingora_core::connectors=off,foyer=warn,redis=error,opentelemetry=warn,opentelemetry_sdk=warn,\
     opentelemetry_otlp=warn,opentelemetry-otlp=warn";

/// A line formatter: text or JSON.
type Formatter = Box<dyn tracing_subscriber::Layer<Registry> + Send + Sync>;

/// Swaps the formatter on a reload, and the one in use.
static FORMAT: OnceLock<(reload::Handle<Formatter, Registry>, Mutex<LogFormat>)> = OnceLock::new();

/// Sets up logging, as text until a configuration says otherwise.
///
/// The filter is static per call site (an `EnvFilter`, and the disk error counter's), so a
/// disabled `debug!` or access line costs one cached check; the format is swapped whole
/// (`reload`), not decided per line.
pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_FILTER));
    let (formatter, handle) = reload::Layer::new(formatter(LogFormat::Text));
    let _ = FORMAT.set((handle, Mutex::new(LogFormat::Text)));
    tracing_subscriber::registry()
        .with(formatter.with_filter(filter))
        .with(crate::metrics::disk_errors_counter())
        .init();
}

fn formatter(format: LogFormat) -> Formatter {
    match format {
        LogFormat::Text => {
            // Colours only on a terminal: journald and log files get plain text.
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
            tracing_subscriber::fmt::layer().with_ansi(ansi).with_writer(std::io::stderr).boxed()
        }
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_writer(std::io::stderr)
            .boxed(),
    }
}

/// Writes lines in `format` from now on (at start and on each reload).
pub fn set_format(format: LogFormat) {
    let Some((handle, current)) = FORMAT.get() else { return };
    let mut current = current.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if *current != format && handle.reload(formatter(format)).is_ok() {
        *current = format;
    }
}
