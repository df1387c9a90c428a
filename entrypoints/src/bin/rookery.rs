//! The `rookery` binary: `rookery serve` runs the server (embedded adapters, or AWS with `--backend aws`),
//! `rookery reindex` rebuilds and checks the local search index, `rookery backup` copies a data directory's
//! database while the server runs, `rookery aws bootstrap` creates the AWS resources, `rookery aws reindex`
//! rebuilds the production search index from the table.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use rookery_adapters_aws::config::ConfigError;
use rookery_adapters_aws::config::SearchBackend;
use rookery_adapters_memory::LOG_FILE;
use rookery_adapters_sqlite::DATABASE_FILE;
use rookery_entrypoints::aws::reindex as reindex_aws;
use rookery_entrypoints::aws::{self, AwsServeConfig, AwsServer, BootstrapError, ServeOptions};
use rookery_entrypoints::http::RateLimit;
use rookery_entrypoints::local::{LocalConfig, LocalServer, OidcConfig};
use rookery_entrypoints::realtime::RealtimeConfig;
use rookery_entrypoints::reindex::{self, ReindexReport};
use rookery_entrypoints::telemetry::{self, LogFormat};

/// mimalloc instead of the system allocator: a request allocates many small short-lived buffers, and
/// glibc's malloc spent about 13% of the server's time on them under load (docs/PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Rookery: an event-sourced mobile backend.
#[derive(Debug, Parser)]
#[command(
    name = "rookery",
    version,
    about = "Rookery: an event-sourced mobile backend (the server, on embedded adapters or AWS, and maintenance commands)"
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Backend {
    /// Embedded adapters and the development identity provider.
    Memory,
    /// DynamoDB, S3, SNS, Cognito and OpenSearch, CloudSearch or an in-process index, configured by the environment.
    Aws,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the HTTP API: embedded adapters and the development identity provider by default, or the AWS adapters.
    ///
    /// With `--backend aws` the AWS SDK's environment (`AWS_REGION`, credentials, `AWS_ENDPOINT_URL` for an
    /// emulator) and the `ROOKERY_*` variables of docs/DEPLOY.md configure the adapters; the Cognito pool
    /// and client are required, and there are no development routes.
    Serve {
        /// Which adapters to run on.
        #[arg(long, env = "ROOKERY_BACKEND", value_enum, default_value = "memory")]
        backend: Backend,
        /// Address to listen on (port 0 picks a free one).
        #[arg(long, env = "ROOKERY_ADDR", default_value = "127.0.0.1:8080")]
        addr: SocketAddr,
        /// Directory for the SQLite database (event log, projections, search index), the identity key, media and
        /// push endpoints; in memory when omitted (memory backend only). An older build's event log in it is imported once.
        #[arg(long, env = "ROOKERY_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Requests per second per user (burst twice that); 0 turns rate limiting off.
        #[arg(long, env = "ROOKERY_RATE_LIMIT", default_value_t = 50)]
        rate_limit: u32,
        /// The most `/v1/realtime` sockets open at once; one more handshake answers `503`.
        #[arg(long, env = "ROOKERY_REALTIME_MAX_CONNECTIONS", default_value_t = RealtimeConfig::default().max_connections,
              value_parser = positive_count)]
        realtime_max_connections: usize,
        /// The most `/v1/realtime` sockets one user may have open; one more handshake answers `429`.
        #[arg(long, env = "ROOKERY_REALTIME_MAX_PER_USER", default_value_t = RealtimeConfig::default().max_connections_per_user,
              value_parser = positive_count)]
        realtime_max_per_user: usize,
        /// An OpenID Connect issuer whose tokens are accepted instead of development tokens (memory backend);
        /// its keys come from `<issuer>/.well-known/openid-configuration`, and the development routes are gone.
        #[arg(long, env = "ROOKERY_OIDC_ISSUER", requires = "oidc_audience")]
        oidc_issuer: Option<String>,
        /// The audience the issuer's tokens must carry in `aud` (usually the client id).
        #[arg(long, env = "ROOKERY_OIDC_AUDIENCE", requires = "oidc_issuer")]
        oidc_audience: Option<String>,
        /// Log line format.
        #[arg(long, env = "ROOKERY_LOG_FORMAT", value_enum, default_value = "text")]
        log_format: LogFormatArg,
    },
    /// Rebuilds the search index from the event log and checks it against a live replay.
    ///
    /// On a data directory the live replay is the index the server kept, brought to the end of the change
    /// feed first; the rebuilt index replaces it. Exits non-zero when the two indexes differ. Run it while
    /// the server is stopped: it locks the data directory, as the server does.
    Reindex {
        /// The data directory of `rookery serve`.
        #[arg(long, env = "ROOKERY_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Log line format.
        #[arg(long, env = "ROOKERY_LOG_FORMAT", value_enum, default_value = "text")]
        log_format: LogFormatArg,
    },
    /// Copies the data directory's database to FILE, consistently, while the server may be running.
    ///
    /// Uses SQLite's online backup API: the copy is the database as of one commit, checked, written beside
    /// FILE and renamed over it. The media blobs, identity key and push endpoints are plain files in the
    /// data directory; copy them as files.
    Backup {
        /// The data directory of `rookery serve`.
        #[arg(long, env = "ROOKERY_DATA_DIR")]
        data_dir: PathBuf,
        /// Where to write the copy (replaced if it exists).
        file: PathBuf,
        /// Log line format.
        #[arg(long, env = "ROOKERY_LOG_FORMAT", value_enum, default_value = "text")]
        log_format: LogFormatArg,
    },
    /// Commands for running on AWS services (or an emulator such as moto).
    Aws {
        #[command(subcommand)]
        command: AwsCommand,
    },
}

#[derive(Debug, Subcommand)]
enum AwsCommand {
    /// Creates, if missing, the events table with its stream, the media bucket and the SNS platform applications.
    ///
    /// Reads `ROOKERY_TABLE`, `ROOKERY_BUCKET` and the AWS SDK's environment (`AWS_ENDPOINT_URL` points it
    /// at an emulator). Prints comments and `export` lines for the platform application ARNs, so
    /// `eval "$(rookery aws bootstrap)"` prepares the shell for `rookery serve --backend aws`.
    Bootstrap {
        /// Log line format.
        #[arg(long, env = "ROOKERY_LOG_FORMAT", value_enum, default_value = "text")]
        log_format: LogFormatArg,
    },
    /// Rebuilds the production search index from the events table, safely while the indexer runs.
    ///
    /// OpenSearch (`ROOKERY_SEARCH=opensearch`): builds a new index `<alias>-<n+1>` from a consistent
    /// scan of the table, checks it against the table, switches the alias to it in one request, then
    /// writes every item again through the alias so no change made meanwhile is lost; the old index is
    /// kept unless `--delete-old`. CloudSearch (`ROOKERY_SEARCH=cloudsearch`): uploads every item again,
    /// deletes documents of no item, and repairs what changed meanwhile. A checkpoint kept in the table
    /// lets an interrupted run continue where it stopped; a finished one makes a second run do nothing.
    /// Reads `ROOKERY_TABLE`, the search variables of docs/DEPLOY.md and the AWS SDK's environment.
    Reindex {
        /// Items per bulk request.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=10_000))]
        batch: u64,
        /// Rows per scan page (and checkpoint).
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
        scan_rows: u64,
        /// After a finished rebuild, delete the old index (OpenSearch; never the one in use).
        #[arg(long)]
        delete_old: bool,
        /// Start a new rebuild even when the checkpoint holds a finished or unfinished one.
        #[arg(long)]
        fresh: bool,
        /// Log line format.
        #[arg(long, env = "ROOKERY_LOG_FORMAT", value_enum, default_value = "text")]
        log_format: LogFormatArg,
    },
}

/// A count of at least one, for the connection caps.
fn positive_count(raw: &str) -> Result<usize, String> {
    match raw.parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_owned()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// `/v1/realtime`'s limits with the two caps given on the command line.
fn realtime_caps(max_connections: usize, max_connections_per_user: usize) -> RealtimeConfig {
    RealtimeConfig {
        max_connections,
        max_connections_per_user,
        ..RealtimeConfig::default()
    }
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

/// Prints every configuration problem, one per line.
fn config_failure(error: &ConfigError) -> ExitCode {
    eprintln!("rookery: invalid configuration:");
    for problem in &error.problems {
        eprintln!("  - {problem}");
    }
    ExitCode::FAILURE
}

async fn serve_aws(options: ServeOptions, data_dir: Option<PathBuf>) -> ExitCode {
    let mut problems = Vec::new();
    if let Some(dir) = data_dir {
        problems.push(format!(
            "--data-dir / ROOKERY_DATA_DIR ({}) applies only to --backend memory: on AWS the data lives in DynamoDB and S3",
            dir.display()
        ));
    }
    let (config, problems) = AwsServeConfig::aws_from_vars(|name| std::env::var(name).ok(), problems);
    let clients = match aws::load_clients(config, problems).await {
        Ok(clients) => clients,
        Err(error) => return config_failure(&error),
    };
    let server = match AwsServer::start_with(options, clients).await {
        Ok(server) => server,
        Err(aws::AwsStartError::Config(error)) => return config_failure(&error),
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

async fn bootstrap_command() -> ExitCode {
    let (config, problems) = aws::config_from_vars(&|name: &str| std::env::var(name).ok(), Vec::new());
    let clients = match aws::load_clients(config, problems).await {
        Ok(clients) => clients,
        Err(error) => return config_failure(&error),
    };
    match aws::run_bootstrap(&clients).await {
        Ok(report) => {
            print!(
                "{}",
                aws::render_report(&report, clients.config(), clients.region().as_deref())
            );
            ExitCode::SUCCESS
        }
        Err(BootstrapError::Config(error)) => config_failure(&error),
        Err(error) => {
            eprintln!("rookery: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The progress of `rookery aws reindex` on stderr: one line redrawn in place on a terminal, a line
/// every ten seconds otherwise.
struct ProgressLine {
    terminal: bool,
    last: Option<std::time::Instant>,
    stage_began: std::time::Instant,
    stage: Option<reindex_aws::Stage>,
}

impl ProgressLine {
    fn new() -> Self {
        use std::io::IsTerminal as _;
        Self {
            terminal: std::io::stderr().is_terminal(),
            last: None,
            stage_began: std::time::Instant::now(),
            stage: None,
        }
    }

    fn render(progress: &reindex_aws::Progress, elapsed: std::time::Duration) -> String {
        let seconds = elapsed.as_secs_f64().max(0.001);
        let rate = progress.heads as f64 / seconds;
        let share = match progress.rows {
            Some(rows) if rows > 0 => {
                let percent = (progress.scanned.saturating_mul(100) / rows).min(100);
                format!("{}/~{rows} rows ({percent}%)", progress.scanned)
            }
            _ => format!("{} rows", progress.scanned),
        };
        format!(
            "{}: {share}, {} items, {rate:.0} items/s, {:.0} s",
            progress.stage.as_str(),
            progress.heads,
            seconds
        )
    }
}

impl reindex_aws::ReindexHooks for ProgressLine {
    fn progress(&mut self, progress: &reindex_aws::Progress) {
        let now = std::time::Instant::now();
        if self.stage != Some(progress.stage) {
            if self.stage.is_some() && self.terminal {
                eprintln!();
            }
            self.stage = Some(progress.stage);
            self.stage_began = now;
            self.last = None;
        }
        let every = if self.terminal {
            std::time::Duration::from_millis(200)
        } else {
            std::time::Duration::from_secs(10)
        };
        if self.last.is_some_and(|last| now.duration_since(last) < every) {
            return;
        }
        self.last = Some(now);
        let line = Self::render(progress, now.duration_since(self.stage_began));
        if self.terminal {
            eprint!("\r\x1b[2K{line}");
        } else {
            eprintln!("{line}");
        }
    }

    async fn after_page(&mut self, _stage: reindex_aws::Stage, _page: u64) -> reindex_aws::Flow {
        reindex_aws::Flow::Continue
    }
}

async fn aws_reindex_command(options: reindex_aws::ReindexOptions, scan_rows: usize) -> ExitCode {
    // The bucket is not used by a rebuild: do not ask for it.
    let var = |name: &str| {
        std::env::var(name)
            .ok()
            .or_else(|| (name == "ROOKERY_BUCKET").then(|| "unused".to_owned()))
    };
    let (config, mut problems) = aws::config_from_vars(&var, Vec::new());
    if problems.is_empty() && config.search == SearchBackend::Memory {
        problems.push(
            "ROOKERY_SEARCH must be opensearch or cloudsearch: `rookery aws reindex` rebuilds the production index (the in-process one is rebuilt at every start)"
                .into(),
        );
    }
    let clients = match aws::load_clients(config, problems).await {
        Ok(clients) => clients,
        Err(error) => return config_failure(&error),
    };
    let source = reindex_aws::TableSource {
        heads: clients.item_heads().with_page_rows(scan_rows),
        store: clients.event_store(),
    };
    let mut hooks = ProgressLine::new();
    let outcome = if let Some(index) = clients.opensearch_index() {
        reindex_aws::run_opensearch(&index, &source, &source, options, &mut hooks).await
    } else if let Some(index) = clients.cloudsearch_index() {
        reindex_aws::run_cloudsearch(&index, &source, &source, options, &mut hooks).await
    } else {
        eprintln!("rookery: no search index is configured");
        return ExitCode::FAILURE;
    };
    if hooks.terminal && hooks.stage.is_some() {
        eprintln!();
    }
    match outcome {
        Ok(report) => {
            print!("{}", reindex_aws::render_report(&report));
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("rookery: aws reindex: {error}");
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

async fn backup_command(data_dir: PathBuf, file: PathBuf) -> ExitCode {
    let database = data_dir.join(DATABASE_FILE);
    if !database.exists() {
        let hint = if data_dir.join(LOG_FILE).exists() {
            format!(" (it holds an older build's {LOG_FILE}: start `rookery serve` on it once to import it)")
        } else {
            String::new()
        };
        eprintln!("rookery: backup: there is no database at {}{hint}", database.display());
        return ExitCode::FAILURE;
    }
    let started = std::time::Instant::now();
    let copy = {
        let (database, file) = (database.clone(), file.clone());
        tokio::task::spawn_blocking(move || rookery_adapters_sqlite::backup(&database, &file)).await
    };
    match copy {
        Ok(Ok(report)) => {
            println!(
                "backed up {} events (up to feed position {}, {} bytes) from {} to {} in {} ms",
                report.events,
                report.position,
                report.bytes,
                database.display(),
                file.display(),
                started.elapsed().as_millis()
            );
            ExitCode::SUCCESS
        }
        Ok(Err(error)) => {
            eprintln!("rookery: backup failed: {error}");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("rookery: backup stopped: {error}");
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
            backend: Backend::Aws,
            addr,
            data_dir,
            rate_limit,
            realtime_max_connections,
            realtime_max_per_user,
            oidc_issuer,
            log_format: format,
            ..
        } => {
            if oidc_issuer.is_some() {
                eprintln!("rookery: --oidc-issuer is for the memory backend; --backend aws verifies its Cognito pool");
                return ExitCode::from(2);
            }
            let _log = telemetry::init(log_format(format));
            let options = ServeOptions {
                addr,
                rate_limit: RateLimit::per_second(rate_limit),
                realtime: realtime_caps(realtime_max_connections, realtime_max_per_user),
                ..ServeOptions::default()
            };
            runtime.block_on(serve_aws(options, data_dir))
        }
        Command::Serve {
            backend: Backend::Memory,
            addr,
            data_dir,
            rate_limit,
            realtime_max_connections,
            realtime_max_per_user,
            oidc_issuer,
            oidc_audience,
            log_format: format,
        } => {
            let _log = telemetry::init(log_format(format));
            // clap makes each of the two require the other.
            let oidc = oidc_issuer
                .zip(oidc_audience)
                .map(|(issuer, audience)| OidcConfig { issuer, audience });
            let config = LocalConfig {
                addr,
                data_dir,
                rate_limit: RateLimit::per_second(rate_limit),
                oidc,
                realtime: realtime_caps(realtime_max_connections, realtime_max_per_user),
                ..LocalConfig::default()
            };
            runtime.block_on(serve(config))
        }
        Command::Reindex {
            data_dir,
            log_format: format,
        } => {
            let _log = telemetry::init(log_format(format));
            runtime.block_on(reindex_command(data_dir))
        }
        Command::Backup {
            data_dir,
            file,
            log_format: format,
        } => {
            let _log = telemetry::init(log_format(format));
            runtime.block_on(backup_command(data_dir, file))
        }
        Command::Aws {
            command: AwsCommand::Bootstrap { log_format: format },
        } => {
            let _log = telemetry::init(log_format(format));
            runtime.block_on(bootstrap_command())
        }
        Command::Aws {
            command:
                AwsCommand::Reindex {
                    batch,
                    scan_rows,
                    delete_old,
                    fresh,
                    log_format: format,
                },
        } => {
            let _log = telemetry::init(log_format(format));
            let options = reindex_aws::ReindexOptions {
                batch: usize::try_from(batch).unwrap_or(1000),
                delete_old,
                fresh,
            };
            runtime.block_on(aws_reindex_command(options, usize::try_from(scan_rows).unwrap_or(1000)))
        }
    }
}
