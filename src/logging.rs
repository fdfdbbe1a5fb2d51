//! drainit's own log lines on stderr, as text or JSON, with timestamps.
//!
//! Owns the tracing subscriber set-up; never writes to stdout (that is the
//! app's, and `--check`'s).

use tracing::level_filters::LevelFilter;

/// Installs the global subscriber. `level` and `format` were validated by
/// the CLI parser.
pub fn init(format: &str, level: &str) {
    let level = match level {
        "error" => LevelFilter::ERROR,
        "warn" => LevelFilter::WARN,
        "debug" => LevelFilter::DEBUG,
        "trace" => LevelFilter::TRACE,
        _ => LevelFilter::INFO,
    };
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_target(false)
        .with_ansi(false);
    let result = if format == "json" {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
    if let Err(e) = result {
        eprintln!("drainit: cannot set up logging: {e}");
    }
}
