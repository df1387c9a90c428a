//! `rookery aws reindex`: rebuilds the production search index from the events table
//! (`docs/decisions/0009-opensearch-blue-green-reindex.md`).
//!
//! On OpenSearch the index is rebuilt beside the one in use, blue/green: a new generation
//! (`<alias>-<n+1>`) is built from a consistent scan of the table's item heads, checked against a second
//! scan, put behind the alias in one `_aliases` request, and then brought up to date by a third scan
//! through the alias (the indexer keeps writing to the old generation until the switch, so a change made
//! during the rebuild reaches the new one by that catch-up, or by the indexer after the switch). Every
//! write is guarded by version, so writing a head twice, or after a newer change, changes nothing.
//!
//! On CloudSearch, which has no aliases, the one domain is repaired in place: every head is uploaded
//! again, documents of no item are deleted, and a last scan writes again whatever is behind the table.
//!
//! A checkpoint in the table itself (one row, `pk = "reindex"`) records the stage and the scan's position
//! after each acknowledged page, so an interrupted run continues where it stopped, and a finished one makes
//! a second run a no-op. The table and index are reached through [`HeadSource`] and [`CheckpointStore`],
//! so the same pipeline runs over moto in the tests and over an in-memory table in the benchmark.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rookery_adapters_aws::cloudsearch::{CloudSearchListed, document_id};
use rookery_adapters_aws::dynamo::{HeadPage, ItemHeadRow, ItemHeads, ScanPosition};
use rookery_adapters_aws::{CloudSearchIndex, DynamoStore, HeldDocument, OpenSearchIndex};
use rookery_domain::{CollectionName, ItemId, ItemKey, Timestamp, UserId, Version};
use rookery_ports::{EventStore, Failure, SearchIndex};
use serde::{Deserialize, Serialize};

/// The most verification problems a report lists (all are counted).
const MAX_LISTED_PROBLEMS: usize = 20;
/// Documents per page of a listing of an index.
const LIST_PAGE: usize = 1000;
/// The most ids of documents without an item a CloudSearch sweep holds before deleting them.
const MAX_SWEEP_IDS: usize = 100_000;
/// How many generation names are tried when the next ones already exist.
const MAX_GENERATION_TRIES: u64 = 50;

/// Where the item heads come from: the events table, or a stand-in for it.
pub trait HeadSource {
    /// The table's approximate row count, when known (for progress only).
    fn approximate_rows(&self) -> impl Future<Output = Result<Option<u64>, Failure>> + Send;
    /// One page of heads after `after`, read consistently.
    fn page(&self, after: Option<&ScanPosition>) -> impl Future<Output = Result<HeadPage, Failure>> + Send;
    /// The heads of `items` that exist.
    fn get(
        &self,
        items: &[(UserId, ItemKey)],
    ) -> impl Future<Output = Result<HashMap<(UserId, ItemKey), ItemHeadRow>, Failure>> + Send;
    /// When the change that moved an item to `version` happened, if known.
    fn changed_at(
        &self,
        owner: &UserId,
        key: &ItemKey,
        version: Version,
    ) -> impl Future<Output = Result<Option<Timestamp>, Failure>> + Send;
    /// True when `owner`'s account is erased (its documents must go).
    fn erased(&self, owner: &UserId) -> impl Future<Output = Result<bool, Failure>> + Send;
}

/// Where the checkpoint is kept.
pub trait CheckpointStore {
    /// The checkpoint `name`, as JSON, if any.
    fn load(&self, name: &str) -> impl Future<Output = Result<Option<String>, Failure>> + Send;
    /// Stores `json` as the checkpoint `name`.
    fn save(&self, name: &str, json: &str) -> impl Future<Output = Result<(), Failure>> + Send;
}

/// The events table: its item heads, its event store (for erasure markers) and its checkpoint row.
#[derive(Debug, Clone)]
pub struct TableSource {
    /// The item heads and checkpoints.
    pub heads: ItemHeads,
    /// The event store on the same table.
    pub store: DynamoStore,
}

impl HeadSource for TableSource {
    async fn approximate_rows(&self) -> Result<Option<u64>, Failure> {
        self.heads.approximate_rows().await
    }

    async fn page(&self, after: Option<&ScanPosition>) -> Result<HeadPage, Failure> {
        self.heads.page(after).await
    }

    async fn get(&self, items: &[(UserId, ItemKey)]) -> Result<HashMap<(UserId, ItemKey), ItemHeadRow>, Failure> {
        self.heads.get(items).await
    }

    async fn changed_at(&self, owner: &UserId, key: &ItemKey, version: Version) -> Result<Option<Timestamp>, Failure> {
        self.heads.changed_at(owner, key, version).await
    }

    async fn erased(&self, owner: &UserId) -> Result<bool, Failure> {
        Ok(self
            .store
            .erased(owner)
            .await
            .map_err(|e| Failure::transient(e.to_string()))?
            .is_some())
    }
}

impl CheckpointStore for TableSource {
    async fn load(&self, name: &str) -> Result<Option<String>, Failure> {
        self.heads.checkpoint(name).await
    }

    async fn save(&self, name: &str, json: &str) -> Result<(), Failure> {
        self.heads.save_checkpoint(name, json).await
    }
}

/// A step of a rebuild, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// OpenSearch: writing every head into the new generation.
    Build,
    /// OpenSearch: checking the new generation against the table.
    Verify,
    /// OpenSearch: pointing the alias at the new generation.
    Switch,
    /// OpenSearch: writing every head again, through the alias.
    CatchUp,
    /// CloudSearch: uploading every head again.
    Upload,
    /// CloudSearch: deleting documents of no item.
    Sweep,
    /// CloudSearch: writing again whatever is behind the table.
    Repair,
    /// Finished.
    Done,
}

impl Stage {
    /// Its name, as the progress display shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Build => "build",
            Stage::Verify => "verify",
            Stage::Switch => "switch",
            Stage::CatchUp => "catch-up",
            Stage::Upload => "upload",
            Stage::Sweep => "sweep",
            Stage::Repair => "repair",
            Stage::Done => "done",
        }
    }
}

/// What a rebuild has done so far.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Heads written into the new generation (or uploaded again, on CloudSearch).
    pub built: u64,
    /// Of those, live items.
    pub built_live: u64,
    /// Heads checked against the new generation.
    pub checked: u64,
    /// Heads changed since the rebuild began, newer in the table than in the new generation (expected
    /// before the catch-up; not a disagreement).
    pub behind: u64,
    /// Documents deleted: of erased accounts (OpenSearch), of no item (CloudSearch).
    pub deleted: u64,
    /// Heads written again through the alias after the switch (OpenSearch) or repaired (CloudSearch).
    pub caught_up: u64,
    /// Documents the catch-up found without an item and could not explain (OpenSearch, after the switch).
    pub unexplained: u64,
}

/// The rebuild's checkpoint, stored as JSON after each acknowledged page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// `opensearch` or `cloudsearch`.
    pub engine: String,
    /// The generation the alias pointed at when the rebuild began (OpenSearch; none if no alias yet).
    pub old: Option<String>,
    /// The generation being built (OpenSearch).
    pub target: Option<String>,
    /// The current step.
    pub stage: Stage,
    /// Where the current step's scan stands (`pk`, `sk` of the last row read), `None` at its start.
    pub position: Option<(String, String)>,
    /// When the rebuild began (milliseconds since the epoch): changes after it may be behind before the catch-up.
    pub started_at: u64,
    /// When the rebuild finished, if it did.
    pub finished_at: Option<u64>,
    /// What has been done.
    pub counts: Counts,
    /// True once the old generation was deleted (`--delete-old`).
    pub old_deleted: bool,
}

impl Checkpoint {
    fn position(&self) -> Option<ScanPosition> {
        self.position.as_ref().map(|(pk, sk)| ScanPosition {
            pk: pk.clone(),
            sk: sk.clone(),
        })
    }
}

/// How a rebuild runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReindexOptions {
    /// Heads per `_bulk` request (or CloudSearch batch), at least 1.
    pub batch: usize,
    /// Delete the old generation once the rebuild is finished (OpenSearch).
    pub delete_old: bool,
    /// Start a new rebuild even when a finished or unfinished checkpoint exists.
    pub fresh: bool,
}

impl Default for ReindexOptions {
    fn default() -> Self {
        Self {
            batch: 1000,
            delete_old: false,
            fresh: false,
        }
    }
}

/// Where a rebuild stands, for the progress display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// The current step.
    pub stage: Stage,
    /// Rows read by this step's scan so far (this run only).
    pub scanned: u64,
    /// The table's approximate row count, when known.
    pub rows: Option<u64>,
    /// Heads handled by this step so far (this run only).
    pub heads: u64,
}

/// Whether a rebuild goes on after a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Go on.
    Continue,
    /// Stop here, as an interruption would (the checkpoint holds the page).
    Stop,
}

/// What a rebuild reports as it goes, and a chance to act between pages (the tests interrupt there).
pub trait ReindexHooks {
    /// Called after each page and at each step's start.
    fn progress(&mut self, progress: &Progress);
    /// Called after each page is acknowledged and checkpointed.
    fn after_page(&mut self, stage: Stage, page: u64) -> impl Future<Output = Flow> + Send;
}

/// Hooks that do nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Quiet;

impl ReindexHooks for Quiet {
    fn progress(&mut self, _progress: &Progress) {}

    async fn after_page(&mut self, _stage: Stage, _page: u64) -> Flow {
        Flow::Continue
    }
}

/// What a finished rebuild did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReindexReport {
    /// The checkpoint as it ended.
    pub checkpoint: Checkpoint,
    /// True when this run found the rebuild finished already and did nothing but, perhaps, delete the old generation.
    pub already_done: bool,
    /// How long this run took.
    pub elapsed: Duration,
}

/// Why a rebuild stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReindexError {
    /// The table, the index or the checkpoint failed.
    #[error("{0}")]
    Failed(#[from] Failure),
    /// The hooks stopped the rebuild (an interruption); run again to continue.
    #[error("interrupted during {}; run again to continue from the checkpoint", .0.as_str())]
    Interrupted(Stage),
    /// The new generation disagrees with the table: the alias was not switched.
    #[error(
        "{target} disagrees with the table in {count} places, so the alias was not switched: {}",
        problems.join("; ")
    )]
    Disagrees {
        /// The new generation.
        target: String,
        /// How many disagreements.
        count: u64,
        /// The first of them.
        problems: Vec<String>,
    },
    /// The alias points somewhere the checkpoint does not expect.
    #[error(
        "the alias {alias} points at {found:?}, neither the old index {old:?} nor the new {target}: stopping rather than guessing"
    )]
    AliasMoved {
        /// The alias.
        alias: String,
        /// Where it points.
        found: Vec<String>,
        /// The old generation of the checkpoint.
        old: Option<String>,
        /// The new generation of the checkpoint.
        target: String,
    },
    /// The checkpoint names an index that does not exist.
    #[error("the checkpoint names {0}, which no longer exists: run with --fresh to start a new rebuild")]
    MissingIndex(String),
    /// The checkpoint cannot be read, or is another engine's.
    #[error("the checkpoint {name} cannot be used: {why}")]
    BadCheckpoint {
        /// The checkpoint's name.
        name: String,
        /// Why.
        why: String,
    },
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

async fn load_checkpoint(
    store: &impl CheckpointStore,
    name: &str,
    engine: &str,
) -> Result<Option<Checkpoint>, ReindexError> {
    let Some(json) = store.load(name).await? else {
        return Ok(None);
    };
    let checkpoint: Checkpoint = serde_json::from_str(&json).map_err(|e| ReindexError::BadCheckpoint {
        name: name.to_owned(),
        why: e.to_string(),
    })?;
    if checkpoint.engine != engine {
        return Err(ReindexError::BadCheckpoint {
            name: name.to_owned(),
            why: format!("it is for {}", checkpoint.engine),
        });
    }
    Ok(Some(checkpoint))
}

async fn save_checkpoint(
    store: &impl CheckpointStore,
    name: &str,
    checkpoint: &Checkpoint,
) -> Result<(), ReindexError> {
    let json = serde_json::to_string(checkpoint).map_err(|e| Failure::permanent(format!("checkpoint: {e}")))?;
    store.save(name, &json).await?;
    Ok(())
}

/// The name of the OpenSearch checkpoint for an alias.
pub fn opensearch_checkpoint_name(alias: &str) -> String {
    format!("opensearch#{alias}")
}

/// The name of the CloudSearch checkpoint.
pub const CLOUDSEARCH_CHECKPOINT: &str = "cloudsearch";

/// Runs one scan of the heads from the checkpoint's position to the end, handing each page to `each`
/// and checkpointing after it; the checkpoint's stage moves to `next` after the last page.
async fn scan<S, C, H, F, Fut>(
    source: &S,
    checkpoints: &C,
    name: &str,
    checkpoint: &mut Checkpoint,
    next: Stage,
    hooks: &mut H,
    mut each: F,
) -> Result<(), ReindexError>
where
    S: HeadSource,
    C: CheckpointStore,
    H: ReindexHooks,
    F: FnMut(Vec<ItemHeadRow>) -> Fut,
    Fut: Future<Output = Result<Counts, ReindexError>>,
{
    let stage = checkpoint.stage;
    let rows = source.approximate_rows().await?;
    let mut progress = Progress {
        stage,
        scanned: 0,
        rows,
        heads: 0,
    };
    hooks.progress(&progress);
    let mut pages = 0;
    loop {
        let page = source.page(checkpoint.position().as_ref()).await?;
        progress.scanned += page.scanned;
        progress.heads += page.heads.len() as u64;
        let added = each(page.heads).await?;
        add_counts(&mut checkpoint.counts, &added);
        checkpoint.position = page.next.map(|p| (p.pk, p.sk));
        let last = checkpoint.position.is_none();
        if last {
            checkpoint.stage = next;
        }
        save_checkpoint(checkpoints, name, checkpoint).await?;
        hooks.progress(&progress);
        pages += 1;
        if hooks.after_page(stage, pages).await == Flow::Stop {
            return Err(ReindexError::Interrupted(stage));
        }
        if last {
            return Ok(());
        }
    }
}

fn add_counts(to: &mut Counts, added: &Counts) {
    to.built += added.built;
    to.built_live += added.built_live;
    to.checked += added.checked;
    to.behind += added.behind;
    to.deleted += added.deleted;
    to.caught_up += added.caught_up;
    to.unexplained += added.unexplained;
}

fn doc_id(head: &ItemHeadRow) -> String {
    document_id(&head.owner, &head.key)
}

/// The owner and key a listed document names, when they are valid ids.
fn listed_key(owner: &str, collection: &str, item_id: &str) -> Option<(UserId, ItemKey)> {
    let owner = UserId::parse(owner).ok()?;
    let key = ItemKey::new(CollectionName::parse(collection).ok()?, ItemId::parse(item_id).ok()?);
    Some((owner, key))
}

/// Problems found by a verification: counted, the first few described.
#[derive(Debug, Default)]
struct Problems {
    count: u64,
    listed: Vec<String>,
}

impl Problems {
    fn add(&mut self, problem: String) {
        self.count += 1;
        if self.listed.len() < MAX_LISTED_PROBLEMS {
            self.listed.push(problem);
        }
    }
}

/// Rebuilds the OpenSearch index behind `index`'s alias from `source`, blue/green (see the module).
///
/// # Errors
/// [`ReindexError`]: a failure of the table or the index, an interruption, a disagreement that keeps
/// the alias where it was, or a checkpoint that does not fit what the cluster holds.
pub async fn run_opensearch<S, C, H>(
    index: &OpenSearchIndex,
    source: &S,
    checkpoints: &C,
    options: ReindexOptions,
    hooks: &mut H,
) -> Result<ReindexReport, ReindexError>
where
    S: HeadSource + Sync,
    C: CheckpointStore + Sync,
    H: ReindexHooks,
{
    let began = Instant::now();
    let name = opensearch_checkpoint_name(index.alias());
    let batch = options.batch.max(1);
    source.approximate_rows().await?;
    let loaded = load_checkpoint(checkpoints, &name, "opensearch").await?;
    let mut checkpoint = match loaded {
        Some(done) if done.stage == Stage::Done && !options.fresh => {
            let done = finish_opensearch(index, checkpoints, &name, done, options).await?;
            return Ok(ReindexReport {
                checkpoint: done,
                already_done: true,
                elapsed: began.elapsed(),
            });
        }
        Some(unfinished) if !options.fresh => {
            if let Some(target) = &unfinished.target
                && !index.index_exists(target).await?
            {
                return Err(ReindexError::MissingIndex(target.clone()));
            }
            tracing::info!(stage = unfinished.stage.as_str(), target = ?unfinished.target, "resuming the rebuild");
            unfinished
        }
        _ => plan_opensearch(index, checkpoints, &name).await?,
    };
    let target = checkpoint
        .target
        .clone()
        .ok_or_else(|| Failure::permanent("an OpenSearch checkpoint without its target index"))?;

    if checkpoint.stage == Stage::Build {
        let target = target.clone();
        scan(
            source,
            checkpoints,
            &name,
            &mut checkpoint,
            Stage::Verify,
            hooks,
            |heads| {
                let target = target.clone();
                async move {
                    let changes: Vec<_> = heads.iter().map(ItemHeadRow::change).collect();
                    for chunk in changes.chunks(batch) {
                        index
                            .apply_into(&target, chunk)
                            .await
                            .map_err(|failed| Failure::transient(format!("writing into {target}: {}", failed.error)))?;
                    }
                    Ok(Counts {
                        built: heads.len() as u64,
                        built_live: heads.iter().filter(|h| h.item.is_some()).count() as u64,
                        ..Counts::default()
                    })
                }
            },
        )
        .await?;
    }

    if checkpoint.stage == Stage::Verify {
        // A verification starts over when resumed: it keeps no state worth a checkpoint but its counts.
        checkpoint.position = None;
        checkpoint.counts.checked = 0;
        checkpoint.counts.behind = 0;
        verify_opensearch(index, source, checkpoints, &name, &mut checkpoint, &target, hooks).await?;
    }

    if checkpoint.stage == Stage::Switch {
        let found = index.alias_indexes().await?;
        let expected: Vec<String> = checkpoint.old.iter().cloned().collect();
        if found == [target.clone()] {
            tracing::info!(%target, "the alias already points at the new index");
        } else if found == expected {
            match &checkpoint.old {
                Some(old) => index.switch_alias(old, &target).await?,
                None => index.attach_alias(&target).await?,
            }
        } else {
            return Err(ReindexError::AliasMoved {
                alias: index.alias().to_owned(),
                found,
                old: checkpoint.old.clone(),
                target,
            });
        }
        checkpoint.stage = Stage::CatchUp;
        checkpoint.position = None;
        save_checkpoint(checkpoints, &name, &checkpoint).await?;
    }

    if checkpoint.stage == Stage::CatchUp {
        let alias = index.alias().to_owned();
        let before = checkpoint.counts.caught_up;
        scan(
            source,
            checkpoints,
            &name,
            &mut checkpoint,
            Stage::CatchUp,
            hooks,
            |heads| {
                let alias = alias.clone();
                async move {
                    let changes: Vec<_> = heads.iter().map(ItemHeadRow::change).collect();
                    for chunk in changes.chunks(batch) {
                        index.apply_into(&alias, chunk).await.map_err(|failed| {
                            Failure::transient(format!("writing through {alias}: {}", failed.error))
                        })?;
                    }
                    Ok(Counts {
                        caught_up: heads.len() as u64,
                        ..Counts::default()
                    })
                }
            },
        )
        .await?;
        // Documents of accounts erased between the verification and the switch went from the old index
        // only: look for documents without an item when the count says there may be some.
        let written = checkpoint.counts.caught_up - before;
        if index.count_documents(&target).await? > written {
            let mut problems = Problems::default();
            let deleted = sweep_opensearch(index, source, &target, &mut problems).await?;
            checkpoint.counts.deleted += deleted;
            checkpoint.counts.unexplained += problems.count;
            for problem in &problems.listed {
                tracing::warn!(%problem, "after the switch");
            }
        }
        checkpoint.stage = Stage::Done;
        checkpoint.finished_at = Some(now_millis());
        save_checkpoint(checkpoints, &name, &checkpoint).await?;
    }

    let checkpoint = finish_opensearch(index, checkpoints, &name, checkpoint, options).await?;
    Ok(ReindexReport {
        checkpoint,
        already_done: false,
        elapsed: began.elapsed(),
    })
}

/// Picks the next generation, creates it, and stores the first checkpoint.
async fn plan_opensearch(
    index: &OpenSearchIndex,
    checkpoints: &impl CheckpointStore,
    name: &str,
) -> Result<Checkpoint, ReindexError> {
    let current = index.alias_indexes().await?;
    let old = match current.as_slice() {
        [] => None,
        [one] => Some(one.clone()),
        several => {
            return Err(Failure::permanent(format!(
                "the alias {} points at several indexes ({several:?}): point it at one first",
                index.alias()
            ))
            .into());
        }
    };
    let mut n = old.as_deref().and_then(|o| index.generation_of(o)).unwrap_or(0) + 1;
    let mut tries = 0;
    let target = loop {
        let candidate = index.generation(n);
        if index.create_generation(&candidate).await? {
            break candidate;
        }
        tries += 1;
        if tries >= MAX_GENERATION_TRIES {
            return Err(Failure::permanent(format!(
                "{} generations after {} exist already: delete the unused ones",
                MAX_GENERATION_TRIES,
                index.generation(n - tries)
            ))
            .into());
        }
        n += 1;
    };
    tracing::info!(old = ?old, new = %target, "rebuilding into a new OpenSearch index");
    let checkpoint = Checkpoint {
        engine: "opensearch".into(),
        old,
        target: Some(target),
        stage: Stage::Build,
        position: None,
        started_at: now_millis(),
        finished_at: None,
        counts: Counts::default(),
        old_deleted: false,
    };
    save_checkpoint(checkpoints, name, &checkpoint).await?;
    Ok(checkpoint)
}

/// Deletes the old generation when asked and not done yet.
async fn finish_opensearch(
    index: &OpenSearchIndex,
    checkpoints: &impl CheckpointStore,
    name: &str,
    mut checkpoint: Checkpoint,
    options: ReindexOptions,
) -> Result<Checkpoint, ReindexError> {
    if options.delete_old
        && !checkpoint.old_deleted
        && let Some(old) = checkpoint.old.clone()
    {
        index.delete_generation(&old).await?;
        checkpoint.old_deleted = true;
        save_checkpoint(checkpoints, name, &checkpoint).await?;
        tracing::info!(%old, "deleted the old OpenSearch index");
    }
    Ok(checkpoint)
}

/// Checks one head against what the new generation holds for it.
async fn check_head(
    source: &impl HeadSource,
    head: &ItemHeadRow,
    held: Option<&HeldDocument>,
    started_at: u64,
    problems: &mut Problems,
) -> Result<bool, ReindexError> {
    let version = head.version.0;
    let live = head.item.is_some();
    let agrees = match held {
        Some(h) if h.version == version => h.live == live,
        None => !live,
        Some(h) if h.version > version => false,
        Some(h) => !h.live && !live,
    };
    if agrees {
        return Ok(false);
    }
    // Older in the index than in the table: expected when the head changed after the build read it.
    let older = held.is_none_or(|h| h.version < version);
    if older
        && let Some(at) = source.changed_at(&head.owner, &head.key, head.version).await?
        && at.as_millis() >= started_at
    {
        return Ok(true);
    }
    let state = |l: bool| if l { "live" } else { "deleted" };
    problems.add(match held {
        None => format!(
            "{}/{} {} missing (table: live at {version})",
            head.owner, head.key.collection, head.key.id
        ),
        Some(h) => format!(
            "{}/{} {}: index {} at {}, table {} at {version}",
            head.owner,
            head.key.collection,
            head.key.id,
            state(h.live),
            h.version,
            state(live)
        ),
    });
    Ok(false)
}

async fn verify_opensearch<S, C, H>(
    index: &OpenSearchIndex,
    source: &S,
    checkpoints: &C,
    name: &str,
    checkpoint: &mut Checkpoint,
    target: &str,
    hooks: &mut H,
) -> Result<(), ReindexError>
where
    S: HeadSource + Sync,
    C: CheckpointStore + Sync,
    H: ReindexHooks,
{
    let started_at = checkpoint.started_at;
    // Shared with the page closure, locked only between awaits.
    let found = std::sync::Arc::new(std::sync::Mutex::new((Problems::default(), 0u64)));
    // The stage stays `Verify` until every check passed, so an interruption never skips one.
    scan(source, checkpoints, name, checkpoint, Stage::Verify, hooks, |heads| {
        let ids: Vec<String> = heads.iter().map(doc_id).collect();
        let found = found.clone();
        async move {
            let held = index.held(target, &ids).await?;
            let mut counts = Counts {
                checked: heads.len() as u64,
                ..Counts::default()
            };
            let mut page_problems = Problems::default();
            let mut page_documents = 0;
            for (head, id) in heads.iter().zip(&ids) {
                let document = held.get(id);
                page_documents += u64::from(document.is_some());
                if check_head(source, head, document, started_at, &mut page_problems).await? {
                    counts.behind += 1;
                }
            }
            let mut found = found.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            found.1 += page_documents;
            found.0.count += page_problems.count;
            for problem in page_problems.listed {
                if found.0.listed.len() < MAX_LISTED_PROBLEMS {
                    found.0.listed.push(problem);
                }
            }
            Ok(counts)
        }
    })
    .await?;
    let (mut problems, with_document) =
        std::mem::take(&mut *found.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    // Every head's document was looked at; more documents than that are documents of no item.
    let documents = index.count_documents(target).await?;
    if documents > with_document {
        checkpoint.counts.deleted += sweep_opensearch(index, source, target, &mut problems).await?;
    }
    if problems.count > 0 {
        checkpoint.stage = Stage::Verify;
        checkpoint.position = None;
        save_checkpoint(checkpoints, name, checkpoint).await?;
        return Err(ReindexError::Disagrees {
            target: target.to_owned(),
            count: problems.count,
            problems: problems.listed,
        });
    }
    checkpoint.stage = Stage::Switch;
    checkpoint.position = None;
    save_checkpoint(checkpoints, name, checkpoint).await?;
    Ok(())
}

/// Lists every document of `target`, deleting those of erased accounts and counting other documents
/// of no item as problems; returns how many were deleted.
async fn sweep_opensearch(
    index: &OpenSearchIndex,
    source: &impl HeadSource,
    target: &str,
    problems: &mut Problems,
) -> Result<u64, ReindexError> {
    let mut after: Option<String> = None;
    let mut deleted = 0;
    let mut erased_owners: HashMap<String, bool> = HashMap::new();
    loop {
        let listed = index.list_documents(target, after.as_deref(), LIST_PAGE).await?;
        let Some(last) = listed.last() else {
            return Ok(deleted);
        };
        after = Some(last.doc_id.clone());
        let keys: Vec<(UserId, ItemKey)> = listed
            .iter()
            .filter_map(|d| listed_key(&d.owner, &d.collection, &d.item_id))
            .collect();
        let heads = source.get(&keys).await?;
        let mut erase = Vec::new();
        for document in &listed {
            let key = listed_key(&document.owner, &document.collection, &document.item_id);
            if key.as_ref().is_some_and(|k| heads.contains_key(k)) {
                continue;
            }
            let erased = match (erased_owners.get(&document.owner), &key) {
                (Some(erased), _) => *erased,
                (None, Some((owner, _))) => {
                    let erased = source.erased(owner).await?;
                    erased_owners.insert(document.owner.clone(), erased);
                    erased
                }
                (None, None) => false,
            };
            if erased {
                erase.push(document.doc_id.clone());
            } else if document.held.live {
                problems.add(format!(
                    "{}/{} {}: live in the index, no such item in the table",
                    document.owner, document.collection, document.item_id
                ));
            }
        }
        index.delete_documents(target, &erase).await?;
        deleted += erase.len() as u64;
        if listed.len() < LIST_PAGE {
            return Ok(deleted);
        }
    }
}

/// Repairs the CloudSearch domain in place from `source` (see the module).
///
/// # Errors
/// [`ReindexError`]: a failure of the table or the domain, or an interruption.
pub async fn run_cloudsearch<S, C, H>(
    index: &CloudSearchIndex,
    source: &S,
    checkpoints: &C,
    options: ReindexOptions,
    hooks: &mut H,
) -> Result<ReindexReport, ReindexError>
where
    S: HeadSource + Sync,
    C: CheckpointStore + Sync,
    H: ReindexHooks,
{
    let began = Instant::now();
    let name = CLOUDSEARCH_CHECKPOINT;
    let batch = options.batch.max(1);
    source.approximate_rows().await?;
    let mut checkpoint = match load_checkpoint(checkpoints, name, "cloudsearch").await? {
        Some(done) if done.stage == Stage::Done && !options.fresh => {
            return Ok(ReindexReport {
                checkpoint: done,
                already_done: true,
                elapsed: began.elapsed(),
            });
        }
        Some(unfinished) if !options.fresh => unfinished,
        _ => {
            let fresh = Checkpoint {
                engine: "cloudsearch".into(),
                old: None,
                target: None,
                stage: Stage::Upload,
                position: None,
                started_at: now_millis(),
                finished_at: None,
                counts: Counts::default(),
                old_deleted: false,
            };
            save_checkpoint(checkpoints, name, &fresh).await?;
            fresh
        }
    };

    if checkpoint.stage == Stage::Upload {
        scan(
            source,
            checkpoints,
            name,
            &mut checkpoint,
            Stage::Sweep,
            hooks,
            |heads| async move {
                let changes: Vec<_> = heads.iter().map(ItemHeadRow::change).collect();
                let mut built = 0;
                for chunk in changes.chunks(batch) {
                    built += index.rewrite(chunk).await?;
                }
                Ok(Counts {
                    built,
                    built_live: heads.iter().filter(|h| h.item.is_some()).count() as u64,
                    ..Counts::default()
                })
            },
        )
        .await?;
    }

    if checkpoint.stage == Stage::Sweep {
        checkpoint.counts.deleted += sweep_cloudsearch(index, source).await?;
        checkpoint.stage = Stage::Repair;
        checkpoint.position = None;
        save_checkpoint(checkpoints, name, &checkpoint).await?;
    }

    if checkpoint.stage == Stage::Repair {
        // CloudSearch has no version guard: an upload above may have put back an older state over a
        // change the indexer wrote meanwhile. Write again every head the domain holds behind the table.
        scan(
            source,
            checkpoints,
            name,
            &mut checkpoint,
            Stage::Done,
            hooks,
            |heads| async move {
                let ids: Vec<String> = heads.iter().map(doc_id).collect();
                let held = index.held_versions(&ids).await?;
                let behind: Vec<_> = heads
                    .iter()
                    .zip(&ids)
                    .filter(|(head, id)| match held.get(*id) {
                        Some(version) => *version < head.version.0,
                        None => head.item.is_some(),
                    })
                    .map(|(head, _)| head.change())
                    .collect();
                for chunk in behind.chunks(batch) {
                    index
                        .apply(chunk)
                        .await
                        .map_err(|e| Failure::transient(e.to_string()))?;
                }
                Ok(Counts {
                    caught_up: behind.len() as u64,
                    ..Counts::default()
                })
            },
        )
        .await?;
        checkpoint.finished_at = Some(now_millis());
        save_checkpoint(checkpoints, name, &checkpoint).await?;
    }

    Ok(ReindexReport {
        checkpoint,
        already_done: false,
        elapsed: began.elapsed(),
    })
}

/// Lists every document of the domain and deletes those whose item has no head; returns how many.
async fn sweep_cloudsearch(index: &CloudSearchIndex, source: &impl HeadSource) -> Result<u64, ReindexError> {
    let mut deleted = 0;
    loop {
        let mut cursor: Option<String> = None;
        let mut doomed: Vec<String> = Vec::new();
        loop {
            let (listed, next): (Vec<CloudSearchListed>, _) =
                index.list_documents(cursor.as_deref(), LIST_PAGE).await?;
            let keys: Vec<(UserId, ItemKey)> = listed
                .iter()
                .filter_map(|d| listed_key(&d.owner, &d.collection, &d.item_id))
                .collect();
            let heads = source.get(&keys).await?;
            for document in &listed {
                let key = listed_key(&document.owner, &document.collection, &document.item_id);
                if !key.is_some_and(|k| heads.contains_key(&k)) {
                    doomed.push(document.doc_id.clone());
                }
            }
            cursor = next;
            if cursor.is_none() || listed.len() < LIST_PAGE || doomed.len() >= MAX_SWEEP_IDS {
                break;
            }
        }
        // Deleted after the listing, so the listing's pages do not shift under it.
        let full = doomed.len() >= MAX_SWEEP_IDS;
        index.delete_documents(&doomed).await?;
        deleted += doomed.len() as u64;
        if !full {
            return Ok(deleted);
        }
    }
}

/// What a rebuild did, as lines for the operator.
pub fn render_report(report: &ReindexReport) -> String {
    let checkpoint = &report.checkpoint;
    let counts = &checkpoint.counts;
    let mut out = String::new();
    if report.already_done {
        out.push_str("the rebuild recorded in the checkpoint is finished; nothing to do (--fresh starts another)\n");
    }
    match (&checkpoint.target, &checkpoint.old) {
        (Some(target), old) => {
            out.push_str(&format!(
                "rebuilt {target}: {} items ({} live) written, {} checked against the table ({} changed during the rebuild), {} written again through the alias after the switch\n",
                counts.built, counts.built_live, counts.checked, counts.behind, counts.caught_up
            ));
            match old {
                Some(old) if checkpoint.old_deleted => out.push_str(&format!("the alias points at {target}; {old} was deleted\n")),
                Some(old) => out.push_str(&format!(
                    "the alias points at {target}; {old} is kept (--delete-old deletes it)\n"
                )),
                None => out.push_str(&format!("the alias points at {target}\n")),
            }
        }
        (None, _) => out.push_str(&format!(
            "re-uploaded {} documents ({} of live items), deleted {} documents of no item, repaired {} changed meanwhile\n",
            counts.built,
            counts.built_live,
            counts.deleted,
            counts.caught_up
        )),
    }
    if checkpoint.target.is_some() && counts.deleted > 0 {
        out.push_str(&format!("deleted {} documents of erased accounts\n", counts.deleted));
    }
    if counts.unexplained > 0 {
        out.push_str(&format!(
            "warning: {} live documents of no item were found after the switch (see the log)\n",
            counts.unexplained
        ));
    }
    out.push_str(&format!("took {:.1} s\n", report.elapsed.as_secs_f64()));
    out
}
