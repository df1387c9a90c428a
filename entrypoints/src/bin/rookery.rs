//! The `rookery` binary: `rookery serve` runs the local server, `rookery reindex` rebuilds and checks the search index.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use rookery_entrypoints::http::RateLimit;
use rookery_entrypoints::local::{LocalConfig, LocalServer};
use rookery_entrypoints::reindex::{self, ReindexReport};
use rookery_entrypoints::telemetry::{self, LogFormat};

/// Rookery: an event-sourced mobile backend.
#[derive(Debug, Parser)]
#[command(
    name = "rookery",
    version,
    about = "Rookery: an event-sourced mobile backend (local server and maintenance commands)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the HTTP API on this machine with embedded adapters and the development identity provider.
    Serve {
        /// Address to listen on (port 0 picks a free one).
        #[arg(long, env = "ROOKERY_ADDR", default_value = "127.0.0.1:8080")]
        addr: SocketAddr,
        /// Directory for the durable event log, identity key and media; in memory when omitted.
        #[arg(long, env = "ROOKERY_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Requests per second per user (burst twice that); 0 turns rate limiting off.
        #[arg(long, env = "ROOKERY_RATE_LIMIT", default_value_t = 50)]
        rate_limit: u32,
        /// Log line format.
        #[arg(long, env = "ROOKERY_LOG_FORMAT", value_enum, default_value = "text")]
        log_format: LogFormatArg,
    },
    /// Rebuilds the search index from the event log and checks it against a live replay.
    ///
    /// Exits non-zero when the two indexes differ. Run it while the server is stopped:
    /// only one process may have the log open.
    Reindex {
        /// The data directory of `rookery serve`.
        #[arg(long, env = "ROOKERY_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Log line format.
        #[arg(long, env = "ROOKERY_LOG_FORMAT", value_enum, default_value = "text")]
        log_format: LogFormatArg,
    },
}

fn log_format(arg: LogFormatArg) -> LogFormat {
    match arg {
        LogFormatArg::Text => LogFormat::Text,
        LogFormatArg::Json => LogFormat::Json,
    }
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

async fn serve(config: LocalConfig) -> ExitCode {
    let server = match LocalServer::start(config).await {
        Ok(server) => server,
        Err(error) => {
            eprintln!("rookery: {error}");
            return ExitCode::FAILURE;
        }
    };
    // Tests and scripts read this line to find the port when listening on port 0.
    println!("rookery listening on http://{}", server.addr());
    match server.run_until(shutdown_signal()).await {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("rookery: server failed: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn reindex_command(data_dir: Option<PathBuf>) -> ExitCode {
    let mut last_percent = None;
    let progress = |done: u64, total: u64| {
        let percent = done.saturating_mul(100).checked_div(total).unwrap_or(100);
        if last_percent != Some(percent) {
            last_percent = Some(percent);
            eprint!("\rreindexing: {done}/{total} events ({percent}%)");
        }
    };
    match reindex::run(data_dir.as_deref(), progress).await {
        Ok(ReindexReport {
            events,
            entries,
            matches_live_replay: true,
            ..
        }) => {
            eprintln!();
            println!("reindexed {events} events into {entries} index entries; equal to the live replay's index");
            ExitCode::SUCCESS
        }
        Ok(report) => {
            eprintln!();
            println!(
                "reindexed {} events into {} index entries, but the live replay produced {} entries that differ ({} mismatches)",
                report.events, report.entries, report.live_entries, report.differences
            );
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!();
            eprintln!("rookery: reindex failed: {error}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("rookery: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Serve {
            addr,
            data_dir,
            rate_limit,
            log_format: format,
        } => {
            telemetry::init(log_format(format));
            let config = LocalConfig {
                addr,
                data_dir,
                rate_limit: RateLimit::per_second(rate_limit),
                ..LocalConfig::default()
            };
            runtime.block_on(serve(config))
        }
        Command::Reindex {
            data_dir,
            log_format: format,
        } => {
            telemetry::init(log_format(format));
            runtime.block_on(reindex_command(data_dir))
        }
    }
}
