//! Measures the OpenSearch adapter against the in-process stand-in (`tests/src/aws/opensearch_fake.rs`):
//! events per second written through `SearchIndex::apply` for each bulk batch size, the size in bytes of
//! the `_bulk` and `_search` requests the adapter sends, and the time of a query. The figures of
//! `docs/PERFORMANCE.md`, "OpenSearch".
//!
//! Run by hand with a release build, not in CI (CI only builds it):
//! `rookery-opensearch-bench [--events N] [--batches 1,10,100,500] [--owners N] [--service es|aoss]`.
//! The stand-in runs in the same process, so the figures are the adapter's and the stand-in's cost
//! together, over loopback HTTP, on one machine: they say nothing of a real cluster's indexing speed.

use std::process::ExitCode;
use std::time::Instant;

use rookery_adapters_aws::OpenSearchService;
use rookery_domain::projection::{IndexChange, search_document};
use rookery_domain::{CollectionName, Item, ItemId, Timestamp, UserId, Version, Visibility};
use rookery_ports::{Scope, SearchIndex, SearchQuery};
use rookery_tests::aws::opensearch_index;
use serde_json::{Map, json};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Failure = Box<dyn std::error::Error + Send + Sync>;

/// How many documents the query is timed over.
const QUERY_INDEX_EVENTS: usize = 2_000;

const USAGE: &str =
    "usage: rookery-opensearch-bench [--events N] [--batches 1,10,100,500] [--owners N] [--service es|aoss]";

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
}

fn parse(args: &[String]) -> Result<Options, Failure> {
    let mut options = Options {
        events: 20_000,
        batches: vec![1, 10, 100, 500],
        owners: 100,
        service: OpenSearchService::Domain,
    };
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--events" => options.events = value.parse()?,
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
    match runtime.block_on(run(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("rookery-opensearch-bench: {error}");
            ExitCode::FAILURE
        }
    }
}
