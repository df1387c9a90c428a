//! The HTTP load harness: throughput and latency of `rookery serve` (authenticated item GET, item PUT,
//! search) next to a bare axum JSON handler, measured in the same run on the same machine.
//!
//! Run by hand, not in CI (CI only builds it); `docs/PERFORMANCE.md` gives the command and the figures.
//! Each server runs in its own process (the `rookery` binary, and this binary's `bare-server` mode),
//! with rate limiting off. Every scenario keeps a fixed number of connections busy for a warm-up and
//! then a measured period; latencies are kept whole and sorted, so percentiles are exact.
//! Traffic goes to 127.0.0.1 only, and every loop ends by itself when its time is up.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::routing::get;
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};

/// The same allocator as the `rookery` binary, so the bare server is compared on equal terms (this also
/// serves the load generator, which runs in this process too).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long a server may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Users the connections are spread over by default (connection `c` acts as user `c % users`).
const USERS: usize = 16;
/// Distinct words in the preloaded items; each search asks for one of them.
const WORDS: usize = 100;
/// The line the bare server prints once it listens.
const BARE_READY: &str = "bare listening on http://";
/// The line `rookery serve` prints once it listens.
const ROOKERY_READY: &str = "rookery listening on http://";

/// Why the harness stopped.
type Failure = String;

/// The harness's settings, from the command line.
#[derive(Debug, Clone)]
struct Options {
    rookery: PathBuf,
    connections: usize,
    warmup: Duration,
    duration: Duration,
    runs: usize,
    items: usize,
    users: usize,
    durable: bool,
    client_threads: usize,
    taskset: Option<String>,
    scenarios: Vec<Scenario>,
}

/// What one scenario sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    /// `GET /bare` on the bare axum server.
    Bare,
    /// Authenticated `GET /v1/items/notes/{id}`, rotating over the user's preloaded items.
    ItemGet,
    /// Authenticated `PUT /v1/items/bench/{id}`, a distinct id each time, without `If-Match`.
    ItemPut,
    /// Authenticated `GET /v1/search?q=<word>` over the preloaded (public) items.
    Search,
    /// Authenticated `GET /v1/devices` of a user with none: the API's fixed cost (edge, token check,
    /// one store read) without an item. Not in the default set; for diagnosis.
    Devices,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Bare => "bare",
            Scenario::ItemGet => "get",
            Scenario::ItemPut => "put",
            Scenario::Search => "search",
            Scenario::Devices => "devices",
        }
    }

    fn parse(name: &str) -> Result<Self, Failure> {
        match name {
            "bare" => Ok(Scenario::Bare),
            "get" => Ok(Scenario::ItemGet),
            "put" => Ok(Scenario::ItemPut),
            "search" => Ok(Scenario::Search),
            "devices" => Ok(Scenario::Devices),
            other => Err(format!("unknown scenario {other:?} (bare, get, put, search, devices)")),
        }
    }
}

const USAGE: &str = "\
usage: rookery-load [options]
       rookery-load bare-server

options:
  --rookery PATH        the rookery binary (default: next to this one)
  --connections N       concurrent connections (default 64)
  --warmup SECS         warm-up per scenario, not measured (default 2)
  --duration SECS       measured time per scenario (default 10)
  --runs N              runs; medians are reported (default 3)
  --items N             items preloaded for the get and search scenarios (default 1000)
  --users N             users the connections are spread over (default 16; 1 measures one user's
                        writes serialized by the store)
  --durable             give rookery a fresh --data-dir (fsync on every write) instead of memory only
  --client-threads N    worker threads of the load generator (default 2)
  --taskset CPUS        start the servers under `taskset -c CPUS` (pin the generator yourself)
  --scenarios LIST      comma-separated list of bare,get,put,search,devices
                        (default bare,get,put,search; devices is for diagnosis)
";

fn parse_number<T: std::str::FromStr>(flag: &str, value: Option<String>) -> Result<T, Failure> {
    let value = value.ok_or_else(|| format!("{flag} needs a value"))?;
    value.parse().map_err(|_| format!("{flag}: {value:?} is not a number"))
}

fn parse_options(mut args: impl Iterator<Item = String>) -> Result<Options, Failure> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let mut options = Options {
        rookery: exe.with_file_name(format!("rookery{}", std::env::consts::EXE_SUFFIX)),
        connections: 64,
        warmup: Duration::from_secs(2),
        duration: Duration::from_secs(10),
        runs: 3,
        items: 1000,
        users: USERS,
        durable: false,
        client_threads: 2,
        taskset: None,
        scenarios: vec![Scenario::Bare, Scenario::ItemGet, Scenario::ItemPut, Scenario::Search],
    };
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--rookery" => options.rookery = PathBuf::from(args.next().ok_or("--rookery needs a path")?),
            "--connections" => options.connections = parse_number(&flag, args.next())?,
            "--warmup" => options.warmup = Duration::from_secs_f64(parse_number(&flag, args.next())?),
            "--duration" => options.duration = Duration::from_secs_f64(parse_number(&flag, args.next())?),
            "--runs" => options.runs = parse_number(&flag, args.next())?,
            "--items" => options.items = parse_number(&flag, args.next())?,
            "--users" => options.users = parse_number(&flag, args.next())?,
            "--durable" => options.durable = true,
            "--client-threads" => options.client_threads = parse_number(&flag, args.next())?,
            "--taskset" => options.taskset = Some(args.next().ok_or("--taskset needs a CPU list")?),
            "--scenarios" => {
                let list = args.next().ok_or("--scenarios needs a list")?;
                options.scenarios = list.split(',').map(Scenario::parse).collect::<Result<_, _>>()?;
            }
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown option {other:?}\n{USAGE}")),
        }
    }
    if options.connections == 0 || options.runs == 0 || options.client_threads == 0 || options.users == 0 {
        return Err("--connections, --runs, --client-threads and --users must be at least 1".to_owned());
    }
    if options.items < options.users {
        return Err(format!("--items must be at least --users ({})", options.users));
    }
    Ok(options)
}

/// A server process of the benchmark; killed when dropped.
#[derive(Debug)]
struct ServerProcess {
    child: Child,
    addr: SocketAddr,
}

impl ServerProcess {
    /// Runs `program args` (under `taskset` when asked) and waits for the line `ready<address>`.
    fn start(program: &PathBuf, args: &[String], ready: &'static str, taskset: Option<&str>) -> Result<Self, Failure> {
        let mut command = match taskset {
            Some(cpus) => {
                let mut command = Command::new("taskset");
                command.arg("-c").arg(cpus).arg(program);
                command
            }
            None => Command::new(program),
        };
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
        let (found, address) = mpsc::channel();
        if let Some(stdout) = child.stdout.take() {
            drain(stdout, ready, Some(found.clone()));
        }
        if let Some(stderr) = child.stderr.take() {
            drain(stderr, ready, Some(found));
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
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads a server's output so its pipe never fills, reporting the address line.
fn drain(source: impl Read + Send + 'static, ready: &'static str, found: Option<mpsc::Sender<String>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(source).lines() {
            let Ok(line) = line else { break };
            if let Some(found) = &found
                && let Some(rest) = line.split(ready).nth(1)
            {
                // The log line repeats the address with fields after it: keep the first word.
                let _ = found.send(rest.split_whitespace().next().unwrap_or_default().to_owned());
            }
        }
    });
}

/// The bare baseline: one JSON handler on axum, nothing else (no auth, no middleware, no state).
async fn bare_server() -> ExitCode {
    let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("bare server: cannot listen: {error}");
            return ExitCode::FAILURE;
        }
    };
    let addr = match listener.local_addr() {
        Ok(addr) => addr,
        Err(error) => {
            eprintln!("bare server: {error}");
            return ExitCode::FAILURE;
        }
    };
    let router = axum::Router::new().route(
        "/bare",
        get(|| async { Json(json!({"status": "ok", "service": "bare", "version": 1})) }),
    );
    println!("{BARE_READY}{addr}");
    match axum::serve(listener, router).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bare server failed: {error}");
            ExitCode::FAILURE
        }
    }
}

/// What the load generator needs to know about a running server.
#[derive(Debug, Clone)]
struct Target {
    base: String,
    /// One token per user (empty for the bare server).
    tokens: Arc<Vec<String>>,
    /// Items preloaded per user.
    items_per_user: usize,
    /// Which run this is, so PUT ids never repeat across runs.
    run: usize,
}

/// The figures of one scenario in one run.
#[derive(Debug, Clone, Copy)]
struct Measurement {
    requests: u64,
    errors: u64,
    seconds: f64,
    p50_us: u64,
    p99_us: u64,
    p999_us: u64,
    max_us: u64,
}

impl Measurement {
    fn throughput(&self) -> f64 {
        self.requests as f64 / self.seconds
    }
}

/// The request connection `conn` sends as its `n`-th in `scenario`.
fn request(client: &Client, target: &Target, scenario: Scenario, conn: usize, n: u64) -> reqwest::RequestBuilder {
    let user = conn % target.tokens.len().max(1);
    let token = target.tokens.get(user).map(String::as_str).unwrap_or_default();
    match scenario {
        Scenario::Bare => client.get(format!("{}/bare", target.base)),
        Scenario::ItemGet => {
            let item = (conn / target.tokens.len().max(1) + n as usize) % target.items_per_user;
            client
                .get(format!("{}/v1/items/notes/i{item}", target.base))
                .bearer_auth(token)
        }
        Scenario::ItemPut => client
            .request(
                Method::PUT,
                format!("{}/v1/items/bench/r{}-c{conn}-n{n}", target.base, target.run),
            )
            .bearer_auth(token)
            .json(&json!({"data": {"text": "a load test item", "n": n, "tags": ["load", "bench"]}})),
        Scenario::Search => {
            let word = (conn * 7 + n as usize) % WORDS;
            client
                .get(format!("{}/v1/search?q=word{word}", target.base))
                .bearer_auth(token)
        }
        Scenario::Devices => client.get(format!("{}/v1/devices", target.base)).bearer_auth(token),
    }
}

/// Keeps `connections` requests in flight for `warmup`, then for `duration` while recording latencies.
async fn measure(
    client: &Client,
    target: &Target,
    scenario: Scenario,
    connections: usize,
    warmup: Duration,
    duration: Duration,
) -> Measurement {
    let started = Instant::now();
    let measure_from = started + warmup;
    let end = measure_from + duration;
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(connections);
    for conn in 0..connections {
        let client = client.clone();
        let target = target.clone();
        let errors = errors.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies: Vec<u32> = Vec::with_capacity(1 << 16);
            let mut n: u64 = 0;
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                n += 1;
                let outcome = request(&client, &target, scenario, conn, n).send().await;
                let ok = match outcome {
                    // The body is read whole: a request is done when its answer is.
                    Ok(response) => {
                        let status = response.status();
                        response.bytes().await.is_ok() && status.is_success()
                    }
                    Err(_) => false,
                };
                let done = Instant::now();
                if sent >= measure_from && done <= end {
                    if ok {
                        let micros = done.duration_since(sent).as_micros();
                        latencies.push(u32::try_from(micros).unwrap_or(u32::MAX));
                    } else {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        if let Ok(mut part) = task.await {
            latencies.append(&mut part);
        }
    }
    latencies.sort_unstable();
    let percentile = |p: f64| -> u64 {
        if latencies.is_empty() {
            return 0;
        }
        let rank = ((p / 100.0) * latencies.len() as f64).ceil() as usize;
        u64::from(latencies[rank.clamp(1, latencies.len()) - 1])
    };
    Measurement {
        requests: latencies.len() as u64,
        errors: errors.load(Ordering::Relaxed),
        seconds: duration.as_secs_f64(),
        p50_us: percentile(50.0),
        p99_us: percentile(99.0),
        p999_us: percentile(99.9),
        max_us: latencies.last().copied().map_or(0, u64::from),
    }
}

/// Signs in the users and preloads their items (public, so every search sees all of them).
async fn prepare(client: &Client, base: &str, items: usize, users: usize, run: usize) -> Result<Target, Failure> {
    let mut tokens = Vec::with_capacity(users);
    for user in 0..users {
        let response = client
            .post(format!("{base}/v1/dev/tokens"))
            .json(&json!({"user_id": format!("load{user}")}))
            .send()
            .await
            .map_err(|e| format!("token request: {e}"))?;
        let body: Value = response.json().await.map_err(|e| format!("token answer: {e}"))?;
        let token = body["token"].as_str().ok_or("no token in the answer")?;
        tokens.push(token.to_owned());
    }
    let items_per_user = items / users;
    // Loaded with a few connections at once, so the preload does not take long.
    let mut loaders = Vec::new();
    for (user, token) in tokens.iter().enumerate() {
        let client = client.clone();
        let base = base.to_owned();
        let token = token.clone();
        loaders.push(tokio::spawn(async move {
            for item in 0..items_per_user {
                let global = user * items_per_user + item;
                let body = json!({
                    "data": {
                        "headline": format!("Item {item} of user {user}"),
                        "text": format!("word{} and some ordinary text to index", global % WORDS),
                        "tags": ["load", format!("t{}", global % 10)],
                    },
                    "visibility": "public",
                });
                let response = client
                    .put(format!("{base}/v1/items/notes/i{item}"))
                    .bearer_auth(&token)
                    .json(&body)
                    .send()
                    .await
                    .map_err(|e| format!("preload: {e}"))?;
                if !response.status().is_success() {
                    return Err(format!("preload answered {}", response.status()));
                }
            }
            Ok::<(), Failure>(())
        }));
    }
    for loader in loaders {
        loader.await.map_err(|e| format!("preload task: {e}"))??;
    }
    // The index is asynchronous: wait (with a deadline) until every preloaded item is searchable.
    let deadline = Instant::now() + Duration::from_secs(60);
    let expected = (items_per_user * users).div_ceil(WORDS);
    loop {
        let response = client
            .get(format!("{base}/v1/search?q=word0&scope=public"))
            .bearer_auth(&tokens[0])
            .send()
            .await
            .map_err(|e| format!("search: {e}"))?;
        let ok = response.status() == StatusCode::OK;
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if ok && body["found"].as_u64() >= Some(expected as u64) {
            break;
        }
        if Instant::now() >= deadline {
            return Err(format!("the preloaded items were not indexed in time: {body}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(Target {
        base: base.to_owned(),
        tokens: Arc::new(tokens),
        items_per_user,
        run,
    })
}

/// A fresh, empty directory under the system's temporary directory, for a durable run.
fn fresh_data_dir(run: usize) -> Result<PathBuf, Failure> {
    let dir = std::env::temp_dir().join(format!("rookery-load-{}-{run}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| format!("cannot clear {}: {e}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Ok(dir)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

fn print_row(run: &str, scenario: Scenario, m: &Measurement) {
    println!(
        "{run:>6}  {:<7} {:>10.0} {:>9} {:>9} {:>9} {:>9} {:>7}",
        scenario.name(),
        m.throughput(),
        m.p50_us,
        m.p99_us,
        m.p999_us,
        m.max_us,
        m.errors
    );
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

async fn run_all(options: &Options) -> Result<bool, Failure> {
    let client = Client::builder()
        .pool_max_idle_per_host(options.connections)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .no_proxy()
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let own_exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let taskset = options.taskset.as_deref();
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    println!(
        "rookery-load: {} connections over {} users, {:?} warm-up + {:?} measured per scenario, {} runs, {} items, {} store, {} cores, client threads {}, load average {}",
        options.connections,
        options.users,
        options.warmup,
        options.duration,
        options.runs,
        options.items,
        if options.durable {
            "durable (--data-dir)"
        } else {
            "in-memory"
        },
        cores,
        options.client_threads,
        load_average()
    );
    println!(
        "{:>6}  {:<7} {:>10} {:>9} {:>9} {:>9} {:>9} {:>7}",
        "run", "scenario", "req/s", "p50 µs", "p99 µs", "p99.9 µs", "max µs", "errors"
    );
    let mut results: Vec<(Scenario, Vec<Measurement>)> = options.scenarios.iter().map(|s| (*s, Vec::new())).collect();
    for run in 1..=options.runs {
        for (scenario, measurements) in &mut results {
            let measurement = if *scenario == Scenario::Bare {
                let server = ServerProcess::start(&own_exe, &["bare-server".to_owned()], BARE_READY, taskset)?;
                let target = Target {
                    base: server.base(),
                    tokens: Arc::new(Vec::new()),
                    items_per_user: 1,
                    run,
                };
                measure(
                    &client,
                    &target,
                    *scenario,
                    options.connections,
                    options.warmup,
                    options.duration,
                )
                .await
            } else {
                // A fresh server per scenario, so one scenario's writes do not slow the next one.
                let mut args: Vec<String> = ["serve", "--addr", "127.0.0.1:0", "--rate-limit", "0"]
                    .iter()
                    .map(|s| (*s).to_owned())
                    .collect();
                let data_dir = if options.durable {
                    let dir = fresh_data_dir(run)?;
                    args.push("--data-dir".to_owned());
                    args.push(dir.display().to_string());
                    Some(dir)
                } else {
                    None
                };
                let server = ServerProcess::start(&options.rookery, &args, ROOKERY_READY, taskset)?;
                let target = prepare(&client, &server.base(), options.items, options.users, run).await?;
                let measurement = measure(
                    &client,
                    &target,
                    *scenario,
                    options.connections,
                    options.warmup,
                    options.duration,
                )
                .await;
                drop(server);
                if let Some(dir) = data_dir {
                    let _ = std::fs::remove_dir_all(dir);
                }
                measurement
            };
            print_row(&run.to_string(), *scenario, &measurement);
            measurements.push(measurement);
        }
    }

    println!();
    println!(
        "medians over {} runs (load average now {}):",
        options.runs,
        load_average()
    );
    println!(
        "{:>6}  {:<7} {:>10} {:>9} {:>9} {:>9} {:>9} {:>7}   {:>8}",
        "", "scenario", "req/s", "p50 µs", "p99 µs", "p99.9 µs", "max µs", "errors", "vs bare"
    );
    let medians: Vec<(Scenario, Measurement)> = results
        .iter()
        .map(|(scenario, ms)| {
            let pick = |f: &dyn Fn(&Measurement) -> f64| median(ms.iter().map(f).collect());
            let m = Measurement {
                requests: pick(&|m| m.requests as f64) as u64,
                errors: ms.iter().map(|m| m.errors).sum(),
                seconds: options.duration.as_secs_f64(),
                p50_us: pick(&|m| m.p50_us as f64) as u64,
                p99_us: pick(&|m| m.p99_us as f64) as u64,
                p999_us: pick(&|m| m.p999_us as f64) as u64,
                max_us: pick(&|m| m.max_us as f64) as u64,
            };
            (*scenario, m)
        })
        .collect();
    let bare = medians
        .iter()
        .find(|(s, _)| *s == Scenario::Bare)
        .map(|(_, m)| m.throughput());
    let mut all_met = true;
    for (scenario, m) in &medians {
        let ratio = bare.filter(|b| *b > 0.0).map(|b| m.throughput() / b);
        let ratio_text = ratio.map_or_else(|| "-".to_owned(), |r| format!("{:.0}%", r * 100.0));
        println!(
            "{:>6}  {:<7} {:>10.0} {:>9} {:>9} {:>9} {:>9} {:>7}   {:>8}",
            "median",
            scenario.name(),
            m.throughput(),
            m.p50_us,
            m.p99_us,
            m.p999_us,
            m.max_us,
            m.errors,
            ratio_text
        );
        // The targets of docs/PERFORMANCE.md: GET at least 60% of the bare handler, PUT at least 40%,
        // p99 under 10 ms for the API scenarios.
        let floor = match scenario {
            Scenario::ItemGet => Some(0.60),
            Scenario::ItemPut => Some(0.40),
            _ => None,
        };
        if let (Some(floor), Some(ratio)) = (floor, ratio)
            && ratio < floor
        {
            all_met = false;
            println!(
                "        MISSED: {} at {:.0}% of the bare handler (target {:.0}%)",
                scenario.name(),
                ratio * 100.0,
                floor * 100.0
            );
        }
        if *scenario != Scenario::Bare && m.p99_us >= 10_000 {
            all_met = false;
            println!(
                "        MISSED: {} p99 {:.1} ms (target < 10 ms)",
                scenario.name(),
                m.p99_us as f64 / 1000.0
            );
        }
        if m.errors > 0 {
            all_met = false;
            println!("        ERRORS: {} failed requests in {}", m.errors, scenario.name());
        }
    }
    Ok(all_met)
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1).peekable();
    let bare_mode = args.peek().is_some_and(|a| a == "bare-server");
    if bare_mode {
        // Two worker threads, like `rookery serve` on this machine (the runtime's default is one per core).
        return match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
            Ok(runtime) => runtime.block_on(bare_server()),
            Err(error) => {
                eprintln!("bare server: cannot start the runtime: {error}");
                ExitCode::FAILURE
            }
        };
    }
    let options = match parse_options(args) {
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
            eprintln!("rookery-load: {failure}");
            ExitCode::FAILURE
        }
    }
}
