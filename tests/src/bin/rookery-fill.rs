//! Fills a running `rookery serve` with many events through its HTTP API, then (optionally) reads them
//! back under load: the harness behind the 10-million-event figures of `docs/PERFORMANCE.md`.
//!
//! Run by hand, not in CI (CI only builds it). `tests/bench/fill.sh` drives it around a real server:
//! fill, restart, memory at rest and under reads, bytes per event, `rookery reindex`.
//!
//! `fill` spreads `--connections` writers over `--users` users. Each user owns `--items` items, written
//! in turn: the first pass creates them, later passes replace them (each write is one event), so the log
//! grows to `--events` events while the number of live items stays bounded, as in a real app.
//! `get` reads random items of those users for `--duration` seconds and reports throughput and latency.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::Client;
use serde_json::{Value, json};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Failure = String;

const USAGE: &str = "usage: rookery-fill fill|get --url URL [options]
  --url URL             the server (default http://127.0.0.1:8080)
  --users N             users the writers or readers are spread over (default 64)
  --connections N       concurrent requests (default 64)
  --items N             items per user (default 20000)
  --events N            fill: events to write in total (default 10000000)
  --duration SECS       get: how long to read (default 30)";

#[derive(Debug, Clone)]
struct Options {
    url: String,
    users: u64,
    connections: u64,
    items: u64,
    events: u64,
    duration: Duration,
}

fn parse(args: &[String]) -> Result<(String, Options), Failure> {
    let mut args = args.iter();
    let mode = args.next().ok_or(USAGE)?.clone();
    let mut options = Options {
        url: "http://127.0.0.1:8080".to_owned(),
        users: 64,
        connections: 64,
        items: 20_000,
        events: 10_000_000,
        duration: Duration::from_secs(30),
    };
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        let number = |v: &String| v.parse::<u64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--url" => options.url = value()?.trim_end_matches('/').to_owned(),
            "--users" => options.users = number(value()?)?,
            "--connections" => options.connections = number(value()?)?,
            "--items" => options.items = number(value()?)?,
            "--events" => options.events = number(value()?)?,
            "--duration" => options.duration = Duration::from_secs(number(value()?)?),
            _ => return Err(format!("unknown flag {flag}\n{USAGE}")),
        }
    }
    if options.users == 0 || options.connections == 0 || options.items == 0 {
        return Err("--users, --connections and --items must be at least 1".to_owned());
    }
    Ok((mode, options))
}

async fn tokens(client: &Client, options: &Options) -> Result<Arc<Vec<String>>, Failure> {
    let mut tokens = Vec::new();
    for user in 0..options.users {
        let body: Value = client
            .post(format!("{}/v1/dev/tokens", options.url))
            .json(&json!({"user_id": format!("fill{user}")}))
            .send()
            .await
            .map_err(|e| format!("token request: {e}"))?
            .json()
            .await
            .map_err(|e| format!("token answer: {e}"))?;
        let token = body["token"].as_str().ok_or(format!("no token in {body}"))?;
        tokens.push(token.to_owned());
    }
    Ok(Arc::new(tokens))
}

/// A small, deterministic pseudo-random sequence (xorshift), so runs are repeatable without a dependency.
struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

const WORDS: [&str; 16] = [
    "harbour", "lantern", "meadow", "copper", "violet", "granite", "willow", "ember", "saffron", "tundra", "orchard",
    "quartz", "juniper", "cobalt", "marble", "thistle",
];

async fn fill(client: &Client, options: &Options) -> Result<(), Failure> {
    let tokens = tokens(client, options).await?;
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut writers = Vec::new();
    for writer in 0..options.connections {
        let (client, tokens, next, done, options) = (
            client.clone(),
            tokens.clone(),
            next.clone(),
            done.clone(),
            options.clone(),
        );
        writers.push(tokio::spawn(async move {
            let mut random = Xorshift(0x9E37_79B9_7F4A_7C15 ^ (writer + 1));
            loop {
                // Event n goes to user n % users, item (n / users) % items: every user's items in turn.
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= options.events {
                    return Ok::<(), Failure>(());
                }
                let user = n % options.users;
                let item = (n / options.users) % options.items;
                let pass = n / (options.users * options.items);
                let words: Vec<&str> = (0..6).map(|_| WORDS[(random.next() % 16) as usize]).collect();
                let body = json!({
                    "data": {
                        "title": format!("Note {item}, pass {pass}"),
                        "text": words.join(" "),
                        "done": pass % 2 == 1,
                        "rank": random.next() % 1000,
                    },
                    "visibility": if item % 4 == 0 { "public" } else { "private" },
                });
                let response = client
                    .put(format!("{}/v1/items/notes/n{item}", options.url))
                    .bearer_auth(&tokens[user as usize])
                    .json(&body)
                    .send()
                    .await
                    .map_err(|e| format!("write {n}: {e}"))?;
                if !response.status().is_success() {
                    let status = response.status();
                    let text = response.text().await.unwrap_or_default();
                    return Err(format!("write {n} answered {status}: {text}"));
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let progress = {
        let done = done.clone();
        let total = options.events;
        tokio::spawn(async move {
            let mut last = 0;
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                let now = done.load(Ordering::Relaxed);
                let elapsed = started.elapsed().as_secs_f64();
                eprintln!(
                    "{now} / {total} events ({:.1}%), {:.0} events/s over the last 10 s, {:.0} s elapsed",
                    now as f64 * 100.0 / total as f64,
                    (now - last) as f64 / 10.0,
                    elapsed
                );
                last = now;
            }
        })
    };
    let mut failure = None;
    for writer in writers {
        if let Err(e) = writer.await.map_err(|e| format!("writer task: {e}")).and_then(|r| r) {
            failure.get_or_insert(e);
        }
    }
    progress.abort();
    if let Some(e) = failure {
        return Err(e);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let written = done.load(Ordering::Relaxed);
    println!(
        "filled {written} events over {} users in {elapsed:.1} s: {:.0} events/s",
        options.users,
        written as f64 / elapsed
    );
    Ok(())
}

async fn get(client: &Client, options: &Options) -> Result<(), Failure> {
    let tokens = tokens(client, options).await?;
    let deadline = Instant::now() + options.duration;
    let mut readers = Vec::new();
    for reader in 0..options.connections {
        let (client, tokens, options) = (client.clone(), tokens.clone(), options.clone());
        readers.push(tokio::spawn(async move {
            let mut random = Xorshift(0xD1B5_4A32_D192_ED03 ^ (reader + 1));
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            while Instant::now() < deadline {
                let user = random.next() % options.users;
                let item = random.next() % options.items;
                let sent = Instant::now();
                let ok = match client
                    .get(format!("{}/v1/items/notes/n{item}", options.url))
                    .bearer_auth(&tokens[user as usize])
                    .send()
                    .await
                {
                    Ok(response) => response.status().is_success() && response.bytes().await.is_ok(),
                    Err(_) => false,
                };
                latencies.push(sent.elapsed().as_micros() as u64);
                errors += u64::from(!ok);
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for reader in readers {
        let (mine, failed) = reader.await.map_err(|e| format!("reader task: {e}"))?;
        latencies.extend(mine);
        errors += failed;
    }
    latencies.sort_unstable();
    let at = |p: f64| latencies.get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)));
    println!(
        "read {} items in {:.0} s: {:.0} req/s, p50 {} µs, p99 {} µs, {errors} errors",
        latencies.len(),
        options.duration.as_secs_f64(),
        latencies.len() as f64 / options.duration.as_secs_f64(),
        at(0.50).copied().unwrap_or(0),
        at(0.99).copied().unwrap_or(0),
    );
    if errors > 0 {
        return Err(format!("{errors} reads failed"));
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mode, options) = match parse(&args) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let client = match Client::builder()
        .pool_max_idle_per_host(options.connections as usize)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(60))
        .no_proxy()
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            eprintln!("cannot build the HTTP client: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match mode.as_str() {
            "fill" => fill(&client, &options).await,
            "get" => get(&client, &options).await,
            other => Err(format!("unknown mode {other}\n{USAGE}")),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rookery-fill: {e}");
            ExitCode::FAILURE
        }
    }
}
