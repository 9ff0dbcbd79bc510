//! Logs: JSON lines on stderr, one per delivery (the core's `scalehook::delivery` event),
//! filtered by `RUST_LOG`. Stdout stays free for command output.

use tracing_subscriber::EnvFilter;

/// `serve` logs every delivery by default; the other commands only warnings, since their
/// output already says what happened to each delivery.
pub fn init(server: bool) {
    let default = if server { "info" } else { "warn" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // A second init (never expected) must not abort the command.
    let _ = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
