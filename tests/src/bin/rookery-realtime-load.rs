//! The realtime load harness: `GET /v1/realtime` of `rookery serve` under many sockets (issue 13's
//! "Measure"), on the memory store and on a fresh `--data-dir` (SQLite).
//!
//! Run by hand, not in CI (CI only builds it); `docs/PERFORMANCE.md` gives the command and the figures.
//! Two scenarios, each on a fresh server process (rate limiting off):
//!
//! - `idle`: opens many sockets (each sends `resume` and waits for `ready`) spread over enough users to
//!   stay under the per-user cap, and reads the server's resident memory (`VmRSS` of
//!   `/proc/<pid>/status`) before, with all of them open, and after they closed.
//! - `active`: opens sockets over a few users, then writes items over HTTP at a fixed rate spread over
//!   the users, and measures, for every write, the time from its acknowledgement (the HTTP response
//!   received) to the change frame arriving on each socket of its user; every socket checks that it got
//!   every seq of its user, consecutively, and no write is left undelivered.
//!
//! Handshakes the server refuses (a connection cap: `429` per user, `503` in total) are counted and
//! reported with their status, never retried. Traffic goes to 127.0.0.1 only; every wait has a deadline.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use reqwest::Client;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::http::header::AUTHORIZATION;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The same allocator as the `rookery` binary (this process is only the load generator).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long a server may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one handshake, `resume` and `ready` may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the sockets may take to receive the last writes once the writing stopped.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the memory is left to settle before each reading.
const SETTLE: Duration = Duration::from_secs(2);
/// The line `rookery serve` prints once it listens.
const ROOKERY_READY: &str = "rookery listening on http://";
/// The collection the active scenario writes to; item `w<n>` is the `n`th write of the run.
const COLLECTION: &str = "rt";

/// Why the harness stopped.
type Failure = String;

/// A WebSocket to the server.
type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// The harness's settings, from the command line.
#[derive(Debug, Clone)]
struct Options {
    rookery: PathBuf,
    runs: usize,
    stores: Vec<Store>,
    scenarios: Vec<Scenario>,
    idle_connections: usize,
    idle_users: usize,
    active_connections: usize,
    active_users: usize,
    rate: u64,
    duration: Duration,
    opening: usize,
    client_threads: usize,
    per_user_cap: Option<usize>,
}

/// Which store the server runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Store {
    Memory,
    Durable,
}

impl Store {
    fn name(self) -> &'static str {
        match self {
            Store::Memory => "memory",
            Store::Durable => "sqlite",
        }
    }
}

/// What one run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Scenario {
    Idle,
    Active,
}

const USAGE: &str = "\
usage: rookery-realtime-load [options]

options:
  --rookery PATH            the rookery binary (default: next to this one)
  --runs N                  runs of each scenario on each store; medians are reported (default 3)
  --stores LIST             memory,sqlite (default both; sqlite is a fresh --data-dir per run)
  --scenarios LIST          idle,active (default both)
  --idle-connections N      sockets of the idle scenario (default 10000)
  --idle-users N            users they are spread over (default 1000)
  --active-connections N    sockets of the active scenario (default 1000)
  --active-users N          users they are spread over (default 50)
  --rate N                  writes per second in the active scenario, over all users (default 100)
  --duration SECS           how long the active scenario writes (default 30)
  --opening N               handshakes in flight at once (default 64)
  --client-threads N        worker threads of the load generator (default 2)
  --per-user-cap N          the server's sockets per user (--realtime-max-per-user; default: the server's)
";

fn parse_number<T: std::str::FromStr>(flag: &str, value: Option<String>) -> Result<T, Failure> {
    let value = value.ok_or_else(|| format!("{flag} needs a value"))?;
    value.parse().map_err(|_| format!("{flag}: {value:?} is not a number"))
}

fn parse_options(mut args: impl Iterator<Item = String>) -> Result<Options, Failure> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let mut options = Options {
        rookery: exe.with_file_name(format!("rookery{}", std::env::consts::EXE_SUFFIX)),
        runs: 3,
        stores: vec![Store::Memory, Store::Durable],
        scenarios: vec![Scenario::Idle, Scenario::Active],
        idle_connections: 10_000,
        idle_users: 1_000,
        active_connections: 1_000,
        active_users: 50,
        rate: 100,
        duration: Duration::from_secs(30),
        opening: 64,
        client_threads: 2,
        per_user_cap: None,
    };
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--rookery" => options.rookery = PathBuf::from(args.next().ok_or("--rookery needs a path")?),
            "--runs" => options.runs = parse_number(&flag, args.next())?,
            "--stores" => {
                let list = args.next().ok_or("--stores needs a list")?;
                options.stores = list
                    .split(',')
                    .map(|name| match name {
                        "memory" => Ok(Store::Memory),
                        "sqlite" | "durable" => Ok(Store::Durable),
                        other => Err(format!("unknown store {other:?} (memory, sqlite)")),
                    })
                    .collect::<Result<_, _>>()?;
            }
            "--scenarios" => {
                let list = args.next().ok_or("--scenarios needs a list")?;
                options.scenarios = list
                    .split(',')
                    .map(|name| match name {
                        "idle" => Ok(Scenario::Idle),
                        "active" => Ok(Scenario::Active),
                        other => Err(format!("unknown scenario {other:?} (idle, active)")),
                    })
                    .collect::<Result<_, _>>()?;
            }
            "--idle-connections" => options.idle_connections = parse_number(&flag, args.next())?,
            "--idle-users" => options.idle_users = parse_number(&flag, args.next())?,
            "--active-connections" => options.active_connections = parse_number(&flag, args.next())?,
            "--active-users" => options.active_users = parse_number(&flag, args.next())?,
            "--rate" => options.rate = parse_number(&flag, args.next())?,
            "--duration" => options.duration = Duration::from_secs_f64(parse_number(&flag, args.next())?),
            "--opening" => options.opening = parse_number(&flag, args.next())?,
            "--client-threads" => options.client_threads = parse_number(&flag, args.next())?,
            "--per-user-cap" => options.per_user_cap = Some(parse_number(&flag, args.next())?),
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown option {other:?}\n{USAGE}")),
        }
    }
    if options.runs == 0
        || options.idle_connections == 0
        || options.idle_users == 0
        || options.active_connections == 0
        || options.active_users == 0
        || options.rate == 0
        || options.opening == 0
        || options.client_threads == 0
        || options.per_user_cap == Some(0)
    {
        return Err("every count must be at least 1".to_owned());
    }
    Ok(options)
}

/// The soft and hard limits of open files of process `pid` (`self` for this one), from `/proc`.
fn open_files_limit(pid: &str) -> Option<(String, String)> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let mut words = line["Max open files".len()..].split_whitespace();
    Some((words.next()?.to_owned(), words.next()?.to_owned()))
}

/// Raises this process's soft limit of open files to its hard limit (the server, started as a child,
/// inherits it), with `prlimit(1)`: the workspace forbids `unsafe`, which `setrlimit(2)` through `libc`
/// would need. Returns the soft limit in force afterwards.
fn raise_open_files_limit() -> Option<(String, String)> {
    let before = open_files_limit("self")?;
    if before.0 != before.1 {
        let pid = std::process::id().to_string();
        let raised = Command::new("prlimit")
            .args(["--pid", &pid, &format!("--nofile={}:{}", before.1, before.1)])
            .status();
        if !raised.is_ok_and(|status| status.success()) {
            eprintln!("could not raise the open files limit from {} with prlimit", before.0);
        }
    }
    open_files_limit("self")
}

/// A `rookery serve` process; killed when dropped.
#[derive(Debug)]
struct ServerProcess {
    child: Child,
    addr: SocketAddr,
}

impl ServerProcess {
    /// Runs `rookery serve` and waits for the line with its address.
    fn start(program: &PathBuf, args: &[String]) -> Result<Self, Failure> {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
        let (found, address) = mpsc::channel();
        if let Some(stdout) = child.stdout.take() {
            drain(stdout, Some(found.clone()));
        }
        if let Some(stderr) = child.stderr.take() {
            drain(stderr, Some(found));
        }
        match address.recv_timeout(START_TIMEOUT) {
            Ok(text) => {
                let addr = text.parse().map_err(|e| format!("bad address {text:?}: {e}"))?;
                Ok(Self { child, addr })
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(format!("{} did not start", program.display()))
            }
        }
    }

    fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn realtime_url(&self) -> String {
        format!("ws://{}/v1/realtime", self.addr)
    }

    /// The server's resident memory in kB.
    fn rss_kb(&self) -> Result<u64, Failure> {
        rss_kb(&self.child.id().to_string())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `VmRSS` of process `pid`, in kB.
fn rss_kb(pid: &str) -> Result<u64, Failure> {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| format!("cannot read /proc/{pid}: {e}"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kb| kb.parse().ok())
        .ok_or_else(|| format!("no VmRSS in /proc/{pid}/status"))
}

/// Reads a server's output so its pipe never fills, reporting the address line.
fn drain(source: impl Read + Send + 'static, found: Option<mpsc::Sender<String>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(source).lines() {
            let Ok(line) = line else { break };
            if let Some(found) = &found
                && let Some(rest) = line.split(ROOKERY_READY).nth(1)
            {
                let _ = found.send(rest.split_whitespace().next().unwrap_or_default().to_owned());
            }
        }
    });
}

/// Starts a fresh server on `store`; with a data directory, also returns it for removal.
fn start_server(options: &Options, store: Store, run: usize) -> Result<(ServerProcess, Option<PathBuf>), Failure> {
    let mut args: Vec<String> = ["serve", "--addr", "127.0.0.1:0", "--rate-limit", "0"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    if let Some(cap) = options.per_user_cap {
        args.extend(["--realtime-max-per-user".to_owned(), cap.to_string()]);
    }
    let data_dir = match store {
        Store::Memory => None,
        Store::Durable => {
            let dir = std::env::temp_dir().join(format!("rookery-rt-load-{}-{run}", std::process::id()));
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(|e| format!("cannot clear {}: {e}", dir.display()))?;
            }
            std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            args.push("--data-dir".to_owned());
            args.push(dir.display().to_string());
            Some(dir)
        }
    };
    let server = ServerProcess::start(&options.rookery, &args)?;
    Ok((server, data_dir))
}

/// Development tokens of users `<prefix>0` .. `<prefix>{users-1}`, a few requests at a time.
async fn tokens(client: &Client, base: &str, prefix: &str, users: usize) -> Result<Vec<String>, Failure> {
    let requests = (0..users).map(|user| {
        let client = client.clone();
        let url = format!("{base}/v1/dev/tokens");
        let user_id = format!("{prefix}{user}");
        async move {
            let response = client
                .post(url)
                .json(&json!({"user_id": user_id}))
                .send()
                .await
                .map_err(|e| format!("token request: {e}"))?;
            let body: Value = response.json().await.map_err(|e| format!("token answer: {e}"))?;
            body["token"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("no token in the answer: {body}"))
        }
    });
    futures_util::stream::iter(requests)
        .buffered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// How a socket's opening ended.
#[derive(Debug)]
enum Opened {
    /// Handshake done, `resume` sent, `ready` received.
    Ready(Box<Socket>),
    /// The server answered the handshake with this status instead of upgrading.
    Refused(u16),
    /// Anything else (a reset, a timeout, a closed socket), in words.
    Failed(String),
}

/// Opens a socket as the holder of `token`, sends `resume` (from the head) and waits for `ready`.
async fn open(url: &str, token: &str) -> Opened {
    let attempt = async {
        let mut request = match url.into_client_request() {
            Ok(request) => request,
            Err(error) => return Opened::Failed(format!("bad request: {error}")),
        };
        match HeaderValue::from_str(&format!("Bearer {token}")) {
            Ok(value) => {
                request.headers_mut().insert(AUTHORIZATION, value);
            }
            Err(error) => return Opened::Failed(format!("bad token header: {error}")),
        }
        let mut socket = match tokio_tungstenite::connect_async(request).await {
            Ok((socket, _)) => socket,
            Err(WsError::Http(response)) => return Opened::Refused(response.status().as_u16()),
            Err(error) => return Opened::Failed(format!("handshake: {error}")),
        };
        if let Err(error) = socket.send(Message::text(r#"{"type":"resume"}"#)).await {
            return Opened::Failed(format!("resume: {error}"));
        }
        while let Some(message) = socket.next().await {
            match message {
                Ok(Message::Text(text)) => {
                    let frame: Value = serde_json::from_str(text.as_str()).unwrap_or(Value::Null);
                    if frame["type"] == "ready" {
                        return Opened::Ready(Box::new(socket));
                    }
                }
                Ok(Message::Close(close)) => return Opened::Failed(format!("closed before ready: {close:?}")),
                Ok(_) => {}
                Err(error) => return Opened::Failed(format!("before ready: {error}")),
            }
        }
        Opened::Failed("ended before ready".to_owned())
    };
    tokio::time::timeout(OPEN_TIMEOUT, attempt)
        .await
        .unwrap_or_else(|_| Opened::Failed("no ready in time".to_owned()))
}

/// The handshakes of one scenario that did not give a socket.
#[derive(Debug, Default)]
struct Refusals {
    /// Refused handshakes by status.
    by_status: BTreeMap<u16, usize>,
    /// Other failures, by their description.
    failures: BTreeMap<String, usize>,
}

impl Refusals {
    fn total(&self) -> usize {
        self.by_status.values().sum::<usize>() + self.failures.values().sum::<usize>()
    }

    fn describe(&self) -> String {
        let mut parts: Vec<String> = self.by_status.iter().map(|(s, n)| format!("{n} × HTTP {s}")).collect();
        parts.extend(self.failures.iter().map(|(what, n)| format!("{n} × {what}")));
        if parts.is_empty() {
            "none".to_owned()
        } else {
            parts.join(", ")
        }
    }

    fn count(&mut self, opened: &Opened) {
        match opened {
            Opened::Ready(_) => {}
            Opened::Refused(status) => *self.by_status.entry(*status).or_default() += 1,
            Opened::Failed(what) => *self.failures.entry(what.clone()).or_default() += 1,
        }
    }
}

/// What the idle scenario measured.
#[derive(Debug, Clone, Default)]
struct IdleResult {
    opened: usize,
    refused: usize,
    open_seconds: f64,
    rss_before_kb: u64,
    rss_open_kb: u64,
    rss_after_kb: u64,
    closed_by_server: usize,
    harness_rss_kb: u64,
}

impl IdleResult {
    fn per_connection_kb(&self) -> f64 {
        if self.opened == 0 {
            0.0
        } else {
            self.rss_open_kb.saturating_sub(self.rss_before_kb) as f64 / self.opened as f64
        }
    }
}

/// Opens `--idle-connections` sockets over `--idle-users` users and reads the server's memory.
async fn idle(options: &Options, client: &Client, store: Store, run: usize) -> Result<IdleResult, Failure> {
    let (server, data_dir) = start_server(options, store, run)?;
    if run == 1 {
        let limit = open_files_limit(&server.child.id().to_string());
        println!("    the server's open files limit (soft, hard): {limit:?}");
    }
    let tokens = Arc::new(tokens(client, &server.base(), "idle", options.idle_users).await?);
    tokio::time::sleep(SETTLE).await;
    let rss_before_kb = server.rss_kb()?;
    let url = Arc::new(server.realtime_url());
    let opening = Arc::new(Semaphore::new(options.opening));
    let closed_by_server = Arc::new(AtomicUsize::new(0));
    let (stop, stopped) = watch::channel(false);
    let (report, mut reports) = tokio::sync::mpsc::unbounded_channel();
    let started = Instant::now();
    let mut holders = Vec::with_capacity(options.idle_connections);
    for c in 0..options.idle_connections {
        let (url, tokens, opening, closed_by_server) =
            (url.clone(), tokens.clone(), opening.clone(), closed_by_server.clone());
        let (report, mut stopped) = (report.clone(), stopped.clone());
        holders.push(tokio::spawn(async move {
            let permit = opening.acquire_owned().await;
            let opened = open(&url, &tokens[c % tokens.len()]).await;
            drop(permit);
            let socket = match opened {
                Opened::Ready(socket) => {
                    let _ = report.send(None);
                    socket
                }
                other => {
                    let _ = report.send(Some(other));
                    return;
                }
            };
            hold(socket, &mut stopped, &closed_by_server).await;
        }));
    }
    drop(report);
    let mut refusals = Refusals::default();
    let mut opened = 0;
    for _ in 0..options.idle_connections {
        match reports.recv().await {
            Some(None) => opened += 1,
            Some(Some(failure)) => refusals.count(&failure),
            None => break,
        }
    }
    let open_seconds = started.elapsed().as_secs_f64();
    tokio::time::sleep(SETTLE).await;
    let rss_open_kb = server.rss_kb()?;
    let harness_rss_kb = rss_kb("self")?;
    if refusals.total() > 0 {
        println!("    refused or failed handshakes: {}", refusals.describe());
    }
    let _ = stop.send(true);
    for holder in holders {
        let _ = holder.await;
    }
    tokio::time::sleep(SETTLE).await;
    let rss_after_kb = server.rss_kb()?;
    drop(server);
    if let Some(dir) = data_dir {
        let _ = std::fs::remove_dir_all(dir);
    }
    Ok(IdleResult {
        opened,
        refused: refusals.total(),
        open_seconds,
        rss_before_kb,
        rss_open_kb,
        rss_after_kb,
        closed_by_server: closed_by_server.load(Ordering::Relaxed),
        harness_rss_kb,
    })
}

/// Keeps an idle socket open (reading, so a ping is answered) until told to stop, then closes it.
async fn hold(mut socket: Box<Socket>, stopped: &mut watch::Receiver<bool>, closed_by_server: &AtomicUsize) {
    loop {
        tokio::select! {
            _ = stopped.changed() => {
                let _ = WebSocketStream::close(&mut socket, None).await;
                return;
            }
            message = socket.next() => match message {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                    closed_by_server.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Some(Ok(_)) => {}
            },
        }
    }
}

/// What one socket of the active scenario saw.
#[derive(Debug, Default)]
struct Received {
    /// The user the socket belongs to.
    user: usize,
    /// Each change frame's write number and when it arrived.
    arrivals: Vec<(u64, Instant)>,
    /// Frames whose seq was not the one after the previous one (a gap, a repeat, or out of order).
    seq_breaks: u64,
    /// `behind`, `error` or unreadable frames.
    odd_frames: u64,
    /// Whether the server closed the socket before the end.
    closed_early: bool,
}

/// Reads change frames until told to stop, recording each arrival and checking the seqs.
async fn receive(
    mut socket: Box<Socket>,
    user: usize,
    progress: Arc<AtomicU64>,
    mut stopped: watch::Receiver<bool>,
) -> Received {
    let mut received = Received {
        user,
        ..Received::default()
    };
    // Every user is fresh: its first change is seq 1.
    let mut last_seq = 0;
    loop {
        tokio::select! {
            _ = stopped.changed() => {
                let _ = WebSocketStream::close(&mut socket, None).await;
                return received;
            }
            message = socket.next() => {
                let at = Instant::now();
                match message {
                    Some(Ok(Message::Text(text))) => {
                        let frame: Value = serde_json::from_str(text.as_str()).unwrap_or(Value::Null);
                        let change = &frame["change"];
                        let write = change["id"].as_str().and_then(|id| id.strip_prefix('w')).and_then(|n| n.parse().ok());
                        match (frame["type"].as_str(), change["seq"].as_u64(), write) {
                            (Some("change"), Some(seq), Some(write)) => {
                                if seq != last_seq + 1 {
                                    received.seq_breaks += 1;
                                }
                                last_seq = last_seq.max(seq);
                                received.arrivals.push((write, at));
                                progress.fetch_add(1, Ordering::Relaxed);
                            }
                            (Some("pong"), _, _) => {}
                            _ => received.odd_frames += 1,
                        }
                    }
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                        received.closed_early = true;
                        return received;
                    }
                    Some(Ok(_)) => {}
                }
            }
        }
    }
}

/// What the active scenario measured.
#[derive(Debug, Clone, Default)]
struct ActiveResult {
    sockets: usize,
    refused: usize,
    writes: u64,
    write_errors: u64,
    write_rate: f64,
    frames: u64,
    /// Per frame: acknowledgement to arrival on one socket, µs.
    frame_p50_us: u64,
    frame_p99_us: u64,
    /// Per write: acknowledgement to arrival on the last socket of its user, µs.
    all_p50_us: u64,
    all_p99_us: u64,
    all_max_us: u64,
    /// Frames that arrived before the HTTP response did (counted as 0 µs).
    early_frames: u64,
    lost: u64,
    seq_breaks: u64,
    odd_frames: u64,
    closed_early: usize,
    write_p50_us: u64,
    write_p99_us: u64,
}

/// The `p`th percentile (nearest rank) of sorted `values`.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// One write's outcome: its number, its user, and when its acknowledgement arrived (`None`: failed).
type Ack = (u64, usize, Option<Instant>, Duration);

/// Opens `--active-connections` sockets over `--active-users` users, writes at `--rate` for
/// `--duration`, and checks and times every delivery.
async fn active(options: &Options, client: &Client, store: Store, run: usize) -> Result<ActiveResult, Failure> {
    let (server, data_dir) = start_server(options, store, run)?;
    let base = server.base();
    let users = options.active_users;
    let tokens = Arc::new(tokens(client, &base, "active", users).await?);
    let url = server.realtime_url();
    let (stop, stopped) = watch::channel(false);

    // Open the sockets, a few at a time; socket `c` belongs to user `c % users`.
    let opening = Arc::new(Semaphore::new(options.opening));
    let mut openings = Vec::with_capacity(options.active_connections);
    for c in 0..options.active_connections {
        let (url, tokens, opening) = (url.clone(), tokens.clone(), opening.clone());
        openings.push(tokio::spawn(async move {
            let _permit = opening.acquire_owned().await;
            (c % users, open(&url, &tokens[c % users]).await)
        }));
    }
    let mut refusals = Refusals::default();
    let mut receivers: Vec<(usize, Arc<AtomicU64>, JoinHandle<Received>)> = Vec::new();
    for opening in openings {
        let (user, opened) = opening.await.map_err(|e| format!("opening task: {e}"))?;
        match opened {
            Opened::Ready(socket) => {
                let progress = Arc::new(AtomicU64::new(0));
                let task = tokio::spawn(receive(socket, user, progress.clone(), stopped.clone()));
                receivers.push((user, progress, task));
            }
            other => refusals.count(&other),
        }
    }
    if refusals.total() > 0 {
        println!("    refused or failed handshakes: {}", refusals.describe());
    }

    // Write at a fixed rate, each write its own item, user by user in turn.
    let total = (options.rate as f64 * options.duration.as_secs_f64()).round() as u64;
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / options.rate as f64));
    let write_errors: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let mut writes = Vec::with_capacity(total as usize);
    let started = Instant::now();
    for n in 0..total {
        ticks.tick().await;
        let user = (n % users as u64) as usize;
        let (client, tokens, errors) = (client.clone(), tokens.clone(), write_errors.clone());
        let url = format!("{base}/v1/items/{COLLECTION}/w{n}");
        writes.push(tokio::spawn(async move {
            let sent = Instant::now();
            let response = client
                .put(url)
                .bearer_auth(&tokens[user])
                .json(&json!({"data": {"n": n, "text": "a realtime benchmark write"}}))
                .send()
                .await;
            let acked = Instant::now();
            let failure = match response {
                Ok(response) if response.status().is_success() => {
                    let _ = response.bytes().await;
                    None
                }
                Ok(response) => Some(format!("HTTP {}", response.status().as_u16())),
                Err(error) => Some(format!("{error}")),
            };
            if let Some(failure) = failure {
                if let Ok(mut errors) = errors.lock() {
                    *errors.entry(failure).or_default() += 1;
                }
                return (n, user, None, acked - sent);
            }
            (n, user, Some(acked), acked - sent)
        }));
    }
    let mut acks: Vec<Ack> = Vec::with_capacity(writes.len());
    for write in writes {
        acks.push(write.await.map_err(|e| format!("write task: {e}"))?);
    }
    let write_rate = total as f64 / started.elapsed().as_secs_f64();

    // Wait (with a deadline) until every socket has every acknowledged write of its user.
    let mut expected = vec![0u64; users];
    for (_, user, acked, _) in &acks {
        if acked.is_some() {
            expected[*user] += 1;
        }
    }
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    while Instant::now() < deadline
        && receivers
            .iter()
            .any(|(user, progress, _)| progress.load(Ordering::Relaxed) < expected[*user])
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop.send(true);
    let mut received = Vec::with_capacity(receivers.len());
    for (_, _, task) in receivers {
        received.push(task.await.map_err(|e| format!("receiver task: {e}"))?);
    }
    drop(server);
    if let Some(dir) = data_dir {
        let _ = std::fs::remove_dir_all(dir);
    }

    // Join the arrivals with the acknowledgements.
    let ack_at: BTreeMap<u64, Instant> = acks.iter().filter_map(|(n, _, at, _)| at.map(|at| (*n, at))).collect();
    let mut frame_latencies = Vec::new();
    let mut last_arrival: BTreeMap<u64, u64> = BTreeMap::new();
    let mut result = ActiveResult {
        sockets: received.len(),
        refused: refusals.total(),
        writes: total,
        write_rate,
        ..ActiveResult::default()
    };
    for socket in &received {
        result.seq_breaks += socket.seq_breaks;
        result.odd_frames += socket.odd_frames;
        result.closed_early += usize::from(socket.closed_early);
        let mut got = std::collections::BTreeSet::new();
        for (n, at) in &socket.arrivals {
            result.frames += 1;
            got.insert(*n);
            let Some(acked) = ack_at.get(n) else { continue };
            if at < acked {
                result.early_frames += 1;
            }
            let latency = at.saturating_duration_since(*acked).as_micros() as u64;
            frame_latencies.push(latency);
            let slowest = last_arrival.entry(*n).or_default();
            *slowest = (*slowest).max(latency);
        }
        let missing = acks
            .iter()
            .filter(|(n, user, at, _)| *user == socket.user && at.is_some() && !got.contains(n))
            .count();
        result.lost += missing as u64;
    }
    result.write_errors = write_errors.lock().map_or(0, |errors| errors.values().sum());
    if result.write_errors > 0
        && let Ok(errors) = write_errors.lock()
    {
        println!("    failed writes: {errors:?}");
    }
    frame_latencies.sort_unstable();
    result.frame_p50_us = percentile(&frame_latencies, 0.50);
    result.frame_p99_us = percentile(&frame_latencies, 0.99);
    let mut all: Vec<u64> = last_arrival.into_values().collect();
    all.sort_unstable();
    result.all_p50_us = percentile(&all, 0.50);
    result.all_p99_us = percentile(&all, 0.99);
    result.all_max_us = all.last().copied().unwrap_or_default();
    let mut write_latencies: Vec<u64> = acks.iter().map(|(_, _, _, took)| took.as_micros() as u64).collect();
    write_latencies.sort_unstable();
    result.write_p50_us = percentile(&write_latencies, 0.50);
    result.write_p99_us = percentile(&write_latencies, 0.99);
    Ok(result)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn mb(kb: f64) -> f64 {
    kb / 1024.0
}

fn print_idle(label: &str, store: Store, r: &IdleResult) {
    println!(
        "{label:>6}  idle    {:<6} {:>7} {:>7} {:>7.1} {:>9.1} {:>9.1} {:>9.1} {:>8.1} {:>7} {:>9.1}",
        store.name(),
        r.opened,
        r.refused,
        r.open_seconds,
        mb(r.rss_before_kb as f64),
        mb(r.rss_open_kb as f64),
        mb(r.rss_after_kb as f64),
        r.per_connection_kb(),
        r.closed_by_server,
        mb(r.harness_rss_kb as f64),
    );
}

fn print_active(label: &str, store: Store, r: &ActiveResult) {
    let ms = |us: u64| us as f64 / 1000.0;
    println!(
        "{label:>6}  active  {:<6} {:>7} {:>7} {:>6} {:>6.1} {:>7} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>6} {:>5} {:>5} {:>5} {:>8.2} {:>6}",
        store.name(),
        r.sockets,
        r.refused,
        r.writes,
        r.write_rate,
        r.frames,
        ms(r.frame_p50_us),
        ms(r.frame_p99_us),
        ms(r.all_p50_us),
        ms(r.all_p99_us),
        ms(r.all_max_us),
        r.lost,
        r.seq_breaks,
        r.odd_frames,
        r.closed_early,
        ms(r.write_p99_us),
        r.early_frames,
    );
}

fn idle_header() {
    println!(
        "{:>6}  {:<7} {:<6} {:>7} {:>7} {:>7} {:>9} {:>9} {:>9} {:>8} {:>7} {:>9}",
        "run",
        "what",
        "store",
        "open",
        "refused",
        "open s",
        "RSS0 MB",
        "RSS MB",
        "RSSend MB",
        "kB/conn",
        "closed",
        "client MB"
    );
}

fn active_header() {
    println!(
        "{:>6}  {:<7} {:<6} {:>7} {:>7} {:>6} {:>6} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8} {:>6} {:>5} {:>5} {:>5} {:>8} {:>6}",
        "run",
        "what",
        "store",
        "sockets",
        "refused",
        "writes",
        "w/s",
        "frames",
        "f p50ms",
        "f p99ms",
        "all p50",
        "all p99",
        "all max",
        "lost",
        "seqbr",
        "odd",
        "clsd",
        "put p99",
        "early"
    );
}

async fn run_all(options: &Options) -> Result<bool, Failure> {
    let client = Client::builder()
        .pool_max_idle_per_host(256)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .no_proxy()
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let mut all_met = true;
    for scenario in &options.scenarios {
        for store in &options.stores {
            println!();
            match scenario {
                Scenario::Idle => {
                    println!(
                        "idle: {} sockets over {} users on {} (load average {})",
                        options.idle_connections,
                        options.idle_users,
                        store.name(),
                        load_average()
                    );
                    idle_header();
                    let mut results = Vec::new();
                    for run in 1..=options.runs {
                        let r = idle(options, &client, *store, run).await?;
                        print_idle(&run.to_string(), *store, &r);
                        results.push(r);
                    }
                    let pick = |f: &dyn Fn(&IdleResult) -> f64| median(results.iter().map(f).collect());
                    let m = IdleResult {
                        opened: pick(&|r| r.opened as f64) as usize,
                        refused: pick(&|r| r.refused as f64) as usize,
                        open_seconds: pick(&|r| r.open_seconds),
                        rss_before_kb: pick(&|r| r.rss_before_kb as f64) as u64,
                        rss_open_kb: pick(&|r| r.rss_open_kb as f64) as u64,
                        rss_after_kb: pick(&|r| r.rss_after_kb as f64) as u64,
                        closed_by_server: pick(&|r| r.closed_by_server as f64) as usize,
                        harness_rss_kb: pick(&|r| r.harness_rss_kb as f64) as u64,
                    };
                    print_idle("median", *store, &m);
                    let worst_open = results.iter().map(|r| r.rss_open_kb).max().unwrap_or_default();
                    if results.iter().any(|r| r.opened < options.idle_connections) {
                        all_met = false;
                        println!("        MISSED: not every socket opened");
                    }
                    if worst_open >= 500 * 1024 {
                        all_met = false;
                        println!(
                            "        MISSED: server RSS {:.0} MB with the sockets open (target < 500 MB)",
                            mb(worst_open as f64)
                        );
                    }
                }
                Scenario::Active => {
                    println!(
                        "active: {} sockets over {} users on {}, {} writes/s for {:?} (load average {})",
                        options.active_connections,
                        options.active_users,
                        store.name(),
                        options.rate,
                        options.duration,
                        load_average()
                    );
                    active_header();
                    let mut results = Vec::new();
                    for run in 1..=options.runs {
                        let r = active(options, &client, *store, run).await?;
                        print_active(&run.to_string(), *store, &r);
                        results.push(r);
                    }
                    let pick =
                        |f: &dyn Fn(&ActiveResult) -> u64| median(results.iter().map(|r| f(r) as f64).collect()) as u64;
                    let m = ActiveResult {
                        sockets: pick(&|r| r.sockets as u64) as usize,
                        refused: pick(&|r| r.refused as u64) as usize,
                        writes: pick(&|r| r.writes),
                        write_errors: results.iter().map(|r| r.write_errors).sum(),
                        write_rate: median(results.iter().map(|r| r.write_rate).collect()),
                        frames: pick(&|r| r.frames),
                        frame_p50_us: pick(&|r| r.frame_p50_us),
                        frame_p99_us: pick(&|r| r.frame_p99_us),
                        all_p50_us: pick(&|r| r.all_p50_us),
                        all_p99_us: pick(&|r| r.all_p99_us),
                        all_max_us: pick(&|r| r.all_max_us),
                        early_frames: pick(&|r| r.early_frames),
                        lost: results.iter().map(|r| r.lost).sum(),
                        seq_breaks: results.iter().map(|r| r.seq_breaks).sum(),
                        odd_frames: results.iter().map(|r| r.odd_frames).sum(),
                        closed_early: results.iter().map(|r| r.closed_early).sum(),
                        write_p50_us: pick(&|r| r.write_p50_us),
                        write_p99_us: pick(&|r| r.write_p99_us),
                    };
                    print_active("median", *store, &m);
                    if m.all_p99_us >= 100_000 {
                        all_met = false;
                        println!(
                            "        MISSED: p99 to every socket {:.1} ms (target < 100 ms)",
                            m.all_p99_us as f64 / 1000.0
                        );
                    }
                    if m.lost > 0 || m.seq_breaks > 0 || m.closed_early > 0 || m.write_errors > 0 {
                        all_met = false;
                        println!(
                            "        MISSED: {} lost, {} seq breaks, {} closed early, {} failed writes (sums over runs)",
                            m.lost, m.seq_breaks, m.closed_early, m.write_errors
                        );
                    }
                    if results.iter().any(|r| r.sockets < options.active_connections) {
                        all_met = false;
                        println!("        MISSED: not every socket opened");
                    }
                }
            }
        }
    }
    Ok(all_met)
}

fn main() -> ExitCode {
    let options = match parse_options(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    if !options.rookery.exists() {
        eprintln!(
            "no rookery binary at {}; build it with the same cargo command (see docs/PERFORMANCE.md) or pass --rookery",
            options.rookery.display()
        );
        return ExitCode::from(2);
    }
    let limit = raise_open_files_limit();
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    println!(
        "rookery-realtime-load: {} runs, {cores} cores, client threads {}, open files limit (soft, hard) {:?} (the server inherits it), load average {}",
        options.runs,
        options.client_threads,
        limit,
        load_average()
    );
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(options.client_threads)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run_all(&options)) {
        Ok(true) => {
            println!("all targets met");
            ExitCode::SUCCESS
        }
        Ok(false) => {
            println!("some targets missed (see above)");
            ExitCode::FAILURE
        }
        Err(failure) => {
            eprintln!("rookery-realtime-load: {failure}");
            ExitCode::FAILURE
        }
    }
}
