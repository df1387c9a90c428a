//! Measures the OpenSearch adapter against the in-process stand-in (`tests/src/aws/opensearch_fake.rs`):
//! events per second written through `SearchIndex::apply` for each bulk batch size, the size in bytes of
//! the `_bulk` and `_search` requests the adapter sends, and the time of a query. The figures of
//! `docs/PERFORMANCE.md`, "OpenSearch".
//!
//! Run by hand with a release build, not in CI (CI only builds it):
//! `rookery-opensearch-bench [--events N] [--batches 1,10,100,500] [--owners N] [--service es|aoss]`.
//! The stand-in runs in the same process, so the figures are the adapter's and the stand-in's cost
//! together, over loopback HTTP, on one machine: they say nothing of a real cluster's indexing speed.
//!
//! With `--reindex N` it measures `rookery aws reindex` instead: the real pipeline
//! ([`run_opensearch`]) rebuilds an index of N item heads, generated page by page by an in-memory head
//! source (the table's stand-in), into a stand-in running in a child process (this binary again, with
//! `--stand-in`), over loopback HTTP: build, verification, alias switch and catch-up. It prints the wall
//! time of each step, heads per second, the peak RSS of this process and of the stand-in's, the sizes of
//! the requests the stand-in received, and the load average before and after.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitCode, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use rookery_adapters_aws::OpenSearchService;
use rookery_adapters_aws::dynamo::{HeadPage, ItemHeadRow, ScanPosition};
use rookery_domain::projection::{IndexChange, search_document};
use rookery_domain::{CollectionName, Item, ItemId, ItemKey, Timestamp, UserId, Version, Visibility};
use rookery_entrypoints::aws::reindex::{
    CheckpointStore, Flow, HeadSource, Progress, ReindexHooks, ReindexOptions, Stage, render_report, run_opensearch,
};
use rookery_ports::{Failure as PortFailure, Scope, SearchIndex, SearchQuery};
use rookery_tests::aws::opensearch_fake::FakeOpenSearch;
use rookery_tests::aws::{opensearch_index, opensearch_index_at};
use serde_json::{Map, json};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Failure = Box<dyn std::error::Error + Send + Sync>;

/// How many documents the query is timed over.
const QUERY_INDEX_EVENTS: usize = 2_000;

const USAGE: &str =
    "usage: rookery-opensearch-bench [--events N] [--batches 1,10,100,500] [--owners N] [--service es|aoss]
       rookery-opensearch-bench --reindex N [--owners N] [--batch N] [--page N] [--service es|aoss]";

/// Words the items' text is drawn from, so queries match a realistic share of them.
const WORDS: [&str; 16] = [
    "tea", "coffee", "trip", "packing", "list", "museum", "train", "ticket", "garden", "recipe", "bread", "walk",
    "river", "notes", "meeting", "book",
];

struct Options {
    events: u64,
    batches: Vec<usize>,
    owners: u64,
    service: OpenSearchService,
    /// Heads to rebuild with `rookery aws reindex`'s pipeline, instead of the adapter's throughput.
    reindex: Option<u64>,
    /// Heads per `_bulk` request of the rebuild.
    batch: usize,
    /// Heads per page of the head source (the table scan's page).
    page: u64,
    /// Run as the stand-in for the service, for a parent bench.
    stand_in: Option<String>,
}

fn parse(args: &[String]) -> Result<Options, Failure> {
    let mut options = Options {
        events: 20_000,
        batches: vec![1, 10, 100, 500],
        owners: 100,
        service: OpenSearchService::Domain,
        reindex: None,
        batch: ReindexOptions::default().batch,
        page: 1000,
        stand_in: None,
    };
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--events" => options.events = value.parse()?,
            "--reindex" => options.reindex = Some(value.parse::<u64>()?.max(1)),
            "--batch" => options.batch = value.parse::<usize>()?.max(1),
            "--page" => options.page = value.parse::<u64>()?.max(1),
            "--stand-in" => options.stand_in = Some(value.clone()),
            "--service" => {
                options.service =
                    OpenSearchService::parse(value).ok_or(format!("--service must be es or aoss\n{USAGE}"))?;
            }
            "--owners" => options.owners = value.parse::<u64>()?.max(1),
            "--batches" => {
                options.batches = value
                    .split(',')
                    .map(|b| b.trim().parse::<usize>().map(|n| n.max(1)))
                    .collect::<Result<_, _>>()?;
            }
            _ => return Err(format!("unknown flag {flag}\n{USAGE}").into()),
        }
    }
    Ok(options)
}

/// The `n`th change: item `n` of owner `n % owners`, with a few words of text, public or private.
fn change(n: u64, owners: u64) -> Result<IndexChange, Failure> {
    let pick = |i: u64| WORDS[usize::try_from(i % 16).unwrap_or(0)];
    let mut data = Map::new();
    data.insert(
        "text".into(),
        json!(format!("{} {} {} item {n}", pick(n), pick(n / 16), pick(n / 256))),
    );
    let item = Item {
        owner: UserId::parse(format!("user{}", n % owners))?,
        collection: CollectionName::parse("notes")?,
        id: ItemId::parse(format!("n{n}"))?,
        version: Version(1),
        visibility: if n.is_multiple_of(2) {
            Visibility::Public
        } else {
            Visibility::Private
        },
        created_at: Timestamp::from_millis(1_700_000_000_000),
        updated_at: Timestamp::from_millis(1_700_000_000_000),
        data,
    };
    Ok(IndexChange::Upsert(search_document(&item)))
}

async fn run(options: Options) -> Result<(), Failure> {
    let changes: Vec<IndexChange> = (0..options.events)
        .map(|n| change(n, options.owners))
        .collect::<Result<_, _>>()?;
    println!(
        "{} events, {} owners, {} ({}), stand-in in process",
        options.events,
        options.owners,
        options.service.signing_name(),
        match options.service {
            OpenSearchService::Domain => "a domain: external versions",
            OpenSearchService::Serverless => "a collection: conditional upserts",
        }
    );
    println!("batch | seconds | events/s | bulk requests | bytes per bulk request | bytes per event");
    for &batch in &options.batches {
        let (fake, index) = opensearch_index(options.service).await?;
        // The index is created on the first write: do it before the clock starts.
        index.apply(&changes[..1]).await?;
        let started = Instant::now();
        for chunk in changes[1..].chunks(batch) {
            index.apply(chunk).await?;
        }
        let seconds = started.elapsed().as_secs_f64();
        let bulks: Vec<usize> = fake
            .request_sizes()
            .into_iter()
            .filter(|(line, _)| line.contains("/_bulk"))
            .map(|(_, bytes)| bytes)
            .skip(1)
            .collect();
        let total: usize = bulks.iter().sum();
        let written = options.events.saturating_sub(1);
        println!(
            "{batch} | {seconds:.2} | {:.0} | {} | {} | {:.0}",
            written as f64 / seconds,
            bulks.len(),
            total / bulks.len().max(1),
            total as f64 / written.max(1) as f64
        );
    }
    // The stand-in scores every document of the index for each query (no inverted index), so the query
    // is timed on a small index of its own: the time is the stand-in's, the body size is the adapter's.
    let small = changes.len().min(QUERY_INDEX_EVENTS);
    let (fake, index) = opensearch_index(options.service).await?;
    for chunk in changes[..small].chunks(500) {
        index.apply(chunk).await?;
    }
    let query = SearchQuery {
        caller: UserId::parse("user1")?,
        words: vec!["coffee".into(), "tr".into()],
        collection: None,
        scope: Scope::All,
        limit: 20,
        cursor: None,
    };
    let rounds = 20;
    let started = Instant::now();
    let mut found = 0;
    for _ in 0..rounds {
        found = index.query(&query).await?.found;
    }
    let per_query = started.elapsed().as_secs_f64() * 1000.0 / f64::from(rounds);
    let searches: Vec<usize> = fake
        .request_sizes()
        .into_iter()
        .filter(|(line, _)| line.contains("/_search"))
        .map(|(_, bytes)| bytes)
        .collect();
    println!(
        "query \"coffee tr\" (scope all, limit 20) over {small} documents: {found} found, {per_query:.1} ms per query (stand-in), {} bytes per _search request",
        searches.first().copied().unwrap_or(0)
    );
    Ok(())
}

/// More words for the generated notes' bodies, so documents are not all alike.
const BODY_WORDS: [&str; 32] = [
    "morning",
    "station",
    "platform",
    "market",
    "lunch",
    "dinner",
    "friends",
    "weekend",
    "bring",
    "remember",
    "call",
    "budget",
    "hotel",
    "flight",
    "umbrella",
    "camera",
    "charger",
    "passport",
    "sunscreen",
    "snacks",
    "water",
    "map",
    "route",
    "bridge",
    "castle",
    "harbour",
    "ferry",
    "island",
    "mountain",
    "valley",
    "lake",
    "forest",
];

/// The scan time the generated heads claim for their last change: long before any rebuild starts.
const LONG_AGO_MILLIS: u64 = 1_700_000_000_000;

/// A deterministic pseudo-random number from `n` and `salt` (splitmix64), for generated content.
fn mix(n: u64, salt: u64) -> u64 {
    let mut z = n.wrapping_add(salt.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `count` words drawn for item `n`, joined by spaces.
fn words(n: u64, salt: u64, count: u64) -> String {
    (0..count)
        .map(|i| {
            let r = mix(n, salt + i);
            if r.is_multiple_of(3) {
                WORDS[usize::try_from(r % 16).unwrap_or(0)]
            } else {
                BODY_WORDS[usize::try_from(r % 32).unwrap_or(0)]
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The head of item `n` of an in-memory table of `owners` owners: notes of a title, a body of 10 to 80
/// words, a few tags and flags (about 150 to 700 bytes of data), at versions 1 to 4; one in twenty is
/// deleted (a head without its item, indexed as a tombstone).
fn head(n: u64, owners: u64) -> Result<ItemHeadRow, Failure> {
    let owner = UserId::parse(format!("user-{:05}", n % owners))?;
    let key = ItemKey::new(CollectionName::parse("notes")?, ItemId::parse(format!("n{n}"))?);
    let version = Version(1 + mix(n, 1) % 4);
    if n % 20 == 7 {
        return Ok(ItemHeadRow {
            owner,
            key,
            version,
            item: None,
        });
    }
    let mut data = Map::new();
    data.insert("title".into(), json!(words(n, 10, 2 + mix(n, 2) % 4)));
    data.insert("body".into(), json!(words(n, 100, 10 + mix(n, 3) % 71)));
    let tags: Vec<String> = (0..mix(n, 4) % 4).map(|i| words(n, 200 + i, 1)).collect();
    data.insert("tags".into(), json!(tags));
    data.insert("done".into(), json!(mix(n, 5).is_multiple_of(2)));
    data.insert("priority".into(), json!(mix(n, 6) % 5));
    let at = Timestamp::from_millis(LONG_AGO_MILLIS);
    let item = Item {
        owner: owner.clone(),
        collection: key.collection.clone(),
        id: key.id.clone(),
        version,
        visibility: if mix(n, 7).is_multiple_of(3) {
            Visibility::Public
        } else {
            Visibility::Private
        },
        created_at: at,
        updated_at: at,
        data,
    };
    Ok(ItemHeadRow {
        owner,
        key,
        version,
        item: Some(item),
    })
}

/// The events table's stand-in: `heads` item heads, made when read (so that this process's memory is
/// the pipeline's, not the table's), a page at a time; and the checkpoint rows.
struct GeneratedTable {
    heads: u64,
    owners: u64,
    page: u64,
    checkpoints: Mutex<HashMap<String, String>>,
}

fn transient(error: &Failure) -> PortFailure {
    PortFailure::transient(error.to_string())
}

impl HeadSource for GeneratedTable {
    async fn approximate_rows(&self) -> Result<Option<u64>, PortFailure> {
        Ok(Some(self.heads))
    }

    async fn page(&self, after: Option<&ScanPosition>) -> Result<HeadPage, PortFailure> {
        let start = match after {
            None => 0,
            Some(position) => position
                .pk
                .parse::<u64>()
                .map_err(|e| PortFailure::permanent(format!("a position of another table: {e}")))?,
        };
        let end = start.saturating_add(self.page).min(self.heads);
        let heads = (start..end)
            .map(|n| head(n, self.owners))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| transient(&e))?;
        Ok(HeadPage {
            scanned: end - start,
            heads,
            next: (end < self.heads).then(|| ScanPosition {
                pk: end.to_string(),
                sk: String::new(),
            }),
        })
    }

    async fn get(&self, items: &[(UserId, ItemKey)]) -> Result<HashMap<(UserId, ItemKey), ItemHeadRow>, PortFailure> {
        let mut found = HashMap::new();
        for (owner, key) in items {
            let Some(n) = key.id.as_str().strip_prefix('n').and_then(|n| n.parse::<u64>().ok()) else {
                continue;
            };
            if n >= self.heads {
                continue;
            }
            let head = head(n, self.owners).map_err(|e| transient(&e))?;
            if &head.owner == owner && head.key == *key {
                found.insert((owner.clone(), key.clone()), head);
            }
        }
        Ok(found)
    }

    async fn changed_at(&self, _: &UserId, _: &ItemKey, _: Version) -> Result<Option<Timestamp>, PortFailure> {
        Ok(Some(Timestamp::from_millis(LONG_AGO_MILLIS)))
    }

    async fn erased(&self, _: &UserId) -> Result<bool, PortFailure> {
        Ok(false)
    }
}

impl CheckpointStore for GeneratedTable {
    async fn load(&self, name: &str) -> Result<Option<String>, PortFailure> {
        Ok(self
            .checkpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned())
    }

    async fn save(&self, name: &str, json: &str) -> Result<(), PortFailure> {
        self.checkpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_owned(), json.to_owned());
        Ok(())
    }
}

/// When each step of the rebuild started, and a progress line on stderr now and then.
struct StepClock {
    started: Instant,
    steps: Vec<(Stage, Duration)>,
    last_line: Instant,
}

impl ReindexHooks for StepClock {
    fn progress(&mut self, progress: &Progress) {
        if self.steps.last().is_none_or(|(stage, _)| *stage != progress.stage) {
            self.steps.push((progress.stage, self.started.elapsed()));
        }
        if self.last_line.elapsed() >= Duration::from_secs(5) {
            self.last_line = Instant::now();
            eprintln!(
                "  {:.0} s: {} {} heads",
                self.started.elapsed().as_secs_f64(),
                progress.stage.as_str(),
                progress.heads
            );
        }
    }

    async fn after_page(&mut self, _stage: Stage, _page: u64) -> Flow {
        Flow::Continue
    }
}

/// A field of `/proc/<pid>/status` in KiB (`VmHWM` is the peak resident set size).
fn status_kib(pid: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// Serves a stand-in for `service` until stdin closes, then prints what it received, by kind of
/// request, and its own peak RSS, as `report` lines on stdout.
async fn serve_stand_in(service: &str) -> Result<(), Failure> {
    let fake = FakeOpenSearch::spawn(service).await?;
    println!("endpoint {}", fake.endpoint);
    std::io::stdout().flush()?;
    tokio::task::spawn_blocking(|| {
        let mut sink = String::new();
        while std::io::stdin().read_line(&mut sink).is_ok_and(|n| n > 0) {
            sink.clear();
        }
    })
    .await?;
    let mut kinds: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
    for (line, bytes) in fake.request_sizes() {
        let kind = line
            .split_whitespace()
            .nth(1)
            .and_then(|path| path.split('?').next())
            .and_then(|path| path.rsplit('/').next())
            .filter(|last| last.starts_with('_'))
            .map_or_else(
                || line.split_whitespace().next().unwrap_or("?").to_owned(),
                str::to_owned,
            );
        let entry = kinds.entry(kind).or_default();
        entry.0 += 1;
        entry.1 += bytes as u64;
        entry.2 = entry.2.max(bytes as u64);
    }
    for (kind, (count, total, max)) in kinds {
        println!(
            "report {kind}: {count} requests, {} bytes on average, {max} at most",
            total / count.max(1)
        );
    }
    let peak = status_kib("self", "VmHWM").unwrap_or(0);
    let indices = fake.indices();
    let documents: usize = indices.iter().filter_map(|i| fake.document_count(i)).sum();
    println!("report documents held: {documents} in {indices:?}");
    println!("report stand-in peak RSS: {} MiB", peak / 1024);
    Ok(())
}

/// The stand-in in a child process: its endpoint, its pipes, and the process.
struct StandIn {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    endpoint: String,
}

impl StandIn {
    fn start(service: OpenSearchService) -> Result<Self, Failure> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(["--stand-in", service.signing_name()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().ok_or("the stand-in's stdout")?);
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        let endpoint = line
            .trim()
            .strip_prefix("endpoint ")
            .ok_or_else(|| format!("the stand-in said {line:?}"))?
            .to_owned();
        Ok(Self {
            child,
            stdin,
            stdout,
            endpoint,
        })
    }

    /// Closes the stand-in's stdin and returns its report lines once it has exited.
    fn finish(mut self) -> Result<Vec<String>, Failure> {
        drop(self.stdin.take());
        let mut lines = Vec::new();
        for line in self.stdout.lines() {
            let line = line?;
            if let Some(report) = line.strip_prefix("report ") {
                lines.push(report.to_owned());
            }
        }
        self.child.wait()?;
        Ok(lines)
    }
}

async fn run_reindex(options: &Options, heads: u64) -> Result<(), Failure> {
    let load_before = load_average();
    let stand_in = StandIn::start(options.service)?;
    let index = opensearch_index_at(&stand_in.endpoint, options.service).await?;
    let table = GeneratedTable {
        heads,
        owners: options.owners,
        page: options.page,
        checkpoints: Mutex::default(),
    };
    // The index in use before the rebuild: the first generation under the alias, with the first page
    // written by the indexer, so that the rebuild switches the alias from it rather than creating it.
    let first = table.page(None).await?;
    let changes: Vec<IndexChange> = first.heads.iter().map(ItemHeadRow::change).collect();
    index.apply(&changes).await?;
    drop((first, changes));

    let mut clock = StepClock {
        started: Instant::now(),
        steps: Vec::new(),
        last_line: Instant::now(),
    };
    let reindex = ReindexOptions {
        batch: options.batch,
        ..ReindexOptions::default()
    };
    let report = run_opensearch(&index, &table, &table, reindex, &mut clock).await?;
    let seconds = clock.started.elapsed().as_secs_f64();
    let peak = status_kib("self", "VmHWM").unwrap_or(0);
    let after = index.alias_indexes().await?;
    let load_after = load_average();
    let stand_in_report = stand_in.finish()?;

    println!(
        "rookery aws reindex of {heads} item heads ({} owners, one in twenty deleted) into a {} stand-in in another process; {} heads per _bulk request, {} per page",
        options.owners,
        options.service.signing_name(),
        options.batch,
        options.page
    );
    print!("{}", render_report(&report));
    println!("the alias now points at {after:?}");
    println!(
        "wall time {seconds:.1} s, {:.0} heads/s over the whole rebuild (each head is written twice: build and catch-up, and read once by the verification)",
        heads as f64 / seconds
    );
    let mut steps = clock.steps.clone();
    steps.push((Stage::Done, Duration::from_secs_f64(seconds)));
    for pair in steps.windows(2) {
        let [(stage, from), (_, to)] = pair else { continue };
        println!("  {}: {:.1} s", stage.as_str(), (*to - *from).as_secs_f64());
    }
    println!("bench process peak RSS: {} MiB", peak / 1024);
    for line in stand_in_report {
        println!("{line}");
    }
    println!("load average (1, 5, 15 min) before: {load_before}; after: {load_after}");
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = match parse(&args) {
        Ok(options) => options,
        Err(error) => {
            eprintln!("rookery-opensearch-bench: {error}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("rookery-opensearch-bench: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = match (&options.stand_in, options.reindex) {
        (Some(service), _) => runtime.block_on(serve_stand_in(service)),
        (None, Some(heads)) => runtime.block_on(run_reindex(&options, heads)),
        (None, None) => runtime.block_on(run(options)),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("rookery-opensearch-bench: {error}");
            ExitCode::FAILURE
        }
    }
}
