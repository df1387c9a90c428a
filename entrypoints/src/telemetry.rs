//! Logging set-up for the binaries: human-readable text or one JSON object per line, filtered by `RUST_LOG`.
//!
//! Lines are formatted on the thread that logs them and written to stderr by a background thread, so a
//! request never waits on the terminal or pipe behind stderr. The thread writes every line it finds
//! queued with one write and flushes as soon as the queue is empty, so no line is held back.
//! No line is dropped: when the writer falls behind, logging waits for it. The [`LogGuard`] that
//! [`init`] returns flushes every line still queued when it is dropped, so `main` keeps it until it returns.

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable text.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Keeps the background log writer running; dropping it writes out every queued line and stops it.
#[must_use = "dropping the guard stops the log writer: keep it until the program ends"]
#[derive(Debug)]
pub struct LogGuard {
    _worker: Option<WorkerGuard>,
}

/// How many lines may wait for the writer before logging waits for it.
const QUEUED_LINES: usize = 16 * 1024;

/// The writer thread's buffer, in bytes.
const WRITE_BUFFER: usize = 64 * 1024;

/// Installs the global subscriber writing to stderr; `RUST_LOG` overrides the default `info` level.
/// Does nothing if a subscriber is already installed (tests may call it more than once).
pub fn init(format: LogFormat) -> LogGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (writer, worker) = NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(QUEUED_LINES)
        .thread_name("rookery-log-writer")
        // The writer thread writes every line it finds queued into this buffer and flushes it once the
        // queue is empty: one `write` per burst of lines instead of one per line.
        .finish(std::io::BufWriter::with_capacity(WRITE_BUFFER, std::io::stderr()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().with_current_span(true).try_init(),
    };
    // An error only means a subscriber is in place already (and this writer is unused), which is fine.
    LogGuard {
        _worker: result.is_ok().then_some(worker),
    }
}
