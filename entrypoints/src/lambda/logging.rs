//! Structured logs for the Lambda functions: one JSON object per line on stdout, which CloudWatch Logs
//! stores as is and Logs Insights queries by field.
//!
//! The level follows Lambda's advanced logging controls (`AWS_LAMBDA_LOG_LEVEL`), then `RUST_LOG`, then
//! `info`. Every line carries the fields of the spans it was written in, so a request's lines carry its
//! request id and a batch's lines carry the record they are about.

use tracing_subscriber::EnvFilter;

/// The level used when neither `AWS_LAMBDA_LOG_LEVEL` nor `RUST_LOG` says otherwise.
pub const DEFAULT_LEVEL: &str = "info";

/// The filter directive for the given variables' values (`AWS_LAMBDA_LOG_LEVEL` wins over `RUST_LOG`).
pub fn directive(lambda_level: Option<String>, rust_log: Option<String>) -> String {
    lambda_level
        .filter(|v| !v.trim().is_empty())
        .map(|v| v.trim().to_ascii_lowercase())
        .or(rust_log.filter(|v| !v.trim().is_empty()))
        .unwrap_or_else(|| DEFAULT_LEVEL.to_owned())
}

/// Installs the JSON subscriber for the process; called once, first thing in `main`.
///
/// A directive that does not parse falls back to [`DEFAULT_LEVEL`] rather than stopping the function,
/// and says so in the first log line.
pub fn init() {
    let wanted = directive(
        std::env::var("AWS_LAMBDA_LOG_LEVEL").ok(),
        std::env::var("RUST_LOG").ok(),
    );
    let (filter, rejected) = match EnvFilter::try_new(&wanted) {
        Ok(filter) => (filter, None),
        Err(error) => (EnvFilter::new(DEFAULT_LEVEL), Some(error)),
    };
    let installed = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .with_target(false)
        .with_ansi(false)
        .with_env_filter(filter)
        .try_init();
    if let Some(error) = rejected {
        tracing::warn!(%error, directive = %wanted, "log level not understood; using {DEFAULT_LEVEL}");
    }
    if let Err(error) = installed {
        // Only a second call gets here; the first subscriber keeps working.
        tracing::debug!(%error, "a log subscriber was already installed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lambda_log_level_wins_over_rust_log() {
        assert_eq!(directive(Some("DEBUG".into()), Some("warn".into())), "debug");
        assert_eq!(directive(None, Some("rookery=trace".into())), "rookery=trace");
        assert_eq!(directive(Some(" ".into()), None), DEFAULT_LEVEL);
    }
}
