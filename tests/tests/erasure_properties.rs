//! Account erasure (issue 14) under concurrent writes and change-log redeliveries: erasing one user leaves
//! nothing of them and loses nothing of anyone else. On the memory adapters, and on the SQLite store.
//!
//! A case runs three users' writes (items, messages to each other, devices, media declarations and
//! uploads) as concurrent tasks on a current-thread runtime, erases one user at a random point while the
//! writes go on, and meanwhile feeds the change log to the indexer and the push dispatcher shuffled and
//! with repeats. After the writes, the whole log is delivered once more: the erased user's events too, as
//! DynamoDB Streams would still hold them after the erasure. The event store is wrapped so that every
//! call first yields to the other tasks a scheduled number of times (the case fixes the interleaving, so a
//! failing case is reproducible from its seed), and so that every committed event is recorded: that
//! record stands in for the change log.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use rookery_adapters_memory::{
    LocalMediaStore, ManualClock, MemoryEventStore, MemoryPushGateway, MemorySearchIndex, SequentialIds, UPLOAD_PATH,
    Upload, UploadError,
};
use rookery_adapters_sqlite::SqliteStore;
use rookery_domain::Device;
use rookery_domain::device::{DeviceEvent, Devices};
use rookery_domain::{
    CollectionName, EventPayload, Item, ItemHead, ItemId, ItemKey, MediaId, MediaObject, Platform, Precondition, Seq,
    StoredEvent, Timestamp, UserId, Version, Visibility,
};
use rookery_entrypoints::http::Services;
use rookery_ports::dispatcher::push_key;
use rookery_ports::{
    AppError, AppendBatch, AppendError, Backoff, Caller, ChangeFeed, Clock, EventStore, Idempotency, IdempotencyRecord,
    IdempotencyWrite, Indexer, MediaStore, ObjectStatus, PushDispatcher, Rebase, Scope, SearchIndex, SearchQuery,
    ServiceConfig, StoreError,
};
use rookery_tests::fixtures::{BoxError, key, object, user};
use serde_json::json;

/// Runs one case's async body on a fresh current-thread runtime.
fn run(body: impl Future<Output = Result<(), BoxError>>) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| TestCaseError::fail(format!("runtime: {e}")))?;
    runtime.block_on(body).map_err(|e| TestCaseError::fail(e.to_string()))
}

const USERS: [&str; 3] = ["alice", "bob", "carol"];
const WORDS: [&str; 4] = ["amber", "basil", "cedar", "dune"];
const KEYS: [(&str, &str); 3] = [("notes", "a"), ("notes", "b"), ("todos", "c")];
const DEVICES: usize = 3;

/// One thing a user does.
#[derive(Debug, Clone)]
enum Act {
    /// `PUT` of a document with a word, the item's tag, and a visibility.
    Put { key: usize, word: usize, public: bool },
    /// `PATCH` of the word.
    Patch { key: usize, word: usize },
    /// `DELETE`.
    Delete { key: usize },
    /// `POST /v1/messages` to another user (or, for `to` equal to the sender, to the next one).
    Message { to: usize, word: usize },
    /// `PUT /v1/devices/{id}` with a token never used before.
    Register { device: usize },
    /// `POST /v1/media`.
    Declare,
    /// The upload through the signed URL of one of the user's earlier declarations (if any).
    Upload { which: usize },
}

/// A user's act, on one of their two lanes (two clients of theirs writing at once).
#[derive(Debug, Clone)]
struct Step {
    user: usize,
    lane: usize,
    act: Act,
    /// With an idempotency key.
    keyed: bool,
    /// Yields before the act.
    pause: u8,
}

fn act() -> impl Strategy<Value = Act> {
    prop_oneof![
        4 => (0..KEYS.len(), 0..WORDS.len(), any::<bool>()).prop_map(|(key, word, public)| Act::Put { key, word, public }),
        2 => (0..KEYS.len(), 0..WORDS.len()).prop_map(|(key, word)| Act::Patch { key, word }),
        1 => (0..KEYS.len()).prop_map(|key| Act::Delete { key }),
        3 => (0..USERS.len(), 0..WORDS.len()).prop_map(|(to, word)| Act::Message { to, word }),
        2 => (0..DEVICES).prop_map(|device| Act::Register { device }),
        1 => Just(Act::Declare),
        1 => any::<usize>().prop_map(|which| Act::Upload { which }),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    (0..USERS.len(), 0usize..2, act(), proptest::bool::weighted(0.3), 0u8..4).prop_map(
        |(user, lane, act, keyed, pause)| Step {
            user,
            lane,
            act,
            keyed,
            pause,
        },
    )
}

/// A case: what the users do, whom to erase when, how the store's calls interleave, how the log is delivered.
#[derive(Debug, Clone)]
struct Plan {
    steps: Vec<Step>,
    erased: usize,
    /// Yields before the erasure starts.
    erase_after: u8,
    /// Yields before each store call, in turn.
    yields: Vec<u8>,
    /// Sort keys that shuffle each delivery.
    order: Vec<u32>,
    /// Events delivered again: (where in the delivery, which event).
    duplicates: Vec<(usize, usize)>,
    batch_sizes: Vec<usize>,
    /// Yields between the consumer's looks at the log.
    consumer_pause: u8,
}

fn plan() -> impl Strategy<Value = Plan> {
    (
        proptest::collection::vec(step(), 1..40),
        0..USERS.len(),
        0u8..80,
        proptest::collection::vec(0u8..3, 1..16),
        proptest::collection::vec(any::<u32>(), 64),
        proptest::collection::vec((any::<usize>(), any::<usize>()), 0..8),
        proptest::collection::vec(1usize..6, 1..4),
        0u8..6,
    )
        .prop_map(
            |(steps, erased, erase_after, yields, order, duplicates, batch_sizes, consumer_pause)| Plan {
                steps,
                erased,
                erase_after,
                yields,
                order,
                duplicates,
                batch_sizes,
                consumer_pause,
            },
        )
}

async fn yield_times(n: u8) {
    for _ in 0..n {
        tokio::task::yield_now().await;
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An event store that yields before each call as its schedule says, and records every event it commits
/// (the stand-in for the change log, which keeps an erased user's events after the erasure).
#[derive(Debug, Clone)]
struct Tapped<S> {
    inner: S,
    yields: Arc<Vec<u8>>,
    calls: Arc<AtomicUsize>,
    log: Arc<Mutex<Vec<StoredEvent>>>,
}

impl<S> Tapped<S> {
    fn new(inner: S, yields: Vec<u8>) -> Self {
        Self {
            inner,
            yields: Arc::new(yields),
            calls: Arc::new(AtomicUsize::new(0)),
            log: Arc::new(Mutex::new(Vec::new())),
        }
    }

    async fn pause(&self) {
        let n = self.calls.fetch_add(1, Ordering::Relaxed);
        yield_times(self.yields.get(n % self.yields.len().max(1)).copied().unwrap_or(0)).await;
    }

    fn tap(&self, appended: Result<Vec<StoredEvent>, AppendError>) -> Result<Vec<StoredEvent>, AppendError> {
        if let Ok(events) = &appended {
            lock(&self.log).extend(events.iter().cloned());
        }
        appended
    }

    /// Every event committed so far, in the order the appends returned.
    fn committed(&self) -> Vec<StoredEvent> {
        lock(&self.log).clone()
    }
}

impl<S: EventStore> EventStore for Tapped<S> {
    async fn append(&self, batch: AppendBatch) -> Result<Vec<StoredEvent>, AppendError> {
        self.pause().await;
        let appended = self.inner.append(batch).await;
        self.tap(appended)
    }

    async fn append_rebasing(&self, batch: AppendBatch, rebase: Rebase) -> Result<Vec<StoredEvent>, AppendError> {
        self.pause().await;
        let appended = self.inner.append_rebasing(batch, rebase).await;
        self.tap(appended)
    }

    async fn remember(&self, write: IdempotencyWrite) -> Result<(), AppendError> {
        self.pause().await;
        self.inner.remember(write).await
    }

    async fn idempotency(&self, owner: &UserId, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        self.pause().await;
        self.inner.idempotency(owner, key).await
    }

    async fn last_seq(&self, owner: &UserId) -> Result<Seq, StoreError> {
        self.pause().await;
        self.inner.last_seq(owner).await
    }

    async fn read_feed(&self, owner: &UserId, after: Seq, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        self.pause().await;
        self.inner.read_feed(owner, after, limit).await
    }

    async fn read_messages(&self, owner: &UserId, after: Seq, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        self.pause().await;
        self.inner.read_messages(owner, after, limit).await
    }

    async fn item_head(&self, owner: &UserId, key: &ItemKey) -> Result<ItemHead, StoreError> {
        self.pause().await;
        self.inner.item_head(owner, key).await
    }

    async fn item_history(
        &self,
        owner: &UserId,
        key: &ItemKey,
        after: Version,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        self.pause().await;
        self.inner.item_history(owner, key, after, limit).await
    }

    async fn list_items(
        &self,
        owner: &UserId,
        collection: &CollectionName,
        after: Option<&ItemId>,
        limit: usize,
    ) -> Result<Vec<Item>, StoreError> {
        self.pause().await;
        self.inner.list_items(owner, collection, after, limit).await
    }

    async fn devices(&self, owner: &UserId) -> Result<Devices, StoreError> {
        self.pause().await;
        self.inner.devices(owner).await
    }

    async fn media(&self, owner: &UserId, id: &MediaId) -> Result<Option<MediaObject>, StoreError> {
        self.pause().await;
        self.inner.media(owner, id).await
    }

    async fn owners(&self, after: Option<&UserId>, limit: usize) -> Result<Vec<UserId>, StoreError> {
        self.pause().await;
        self.inner.owners(after, limit).await
    }

    async fn erase_owner(&self, owner: &UserId, at: Timestamp) -> Result<Timestamp, StoreError> {
        self.pause().await;
        self.inner.erase_owner(owner, at).await
    }

    async fn erased(&self, owner: &UserId) -> Result<Option<Timestamp>, StoreError> {
        self.pause().await;
        self.inner.erased(owner).await
    }
}

type Push = MemoryPushGateway<ManualClock>;
type App<S, X> = Services<Tapped<S>, ManualClock, SequentialIds, X, Push, LocalMediaStore>;

/// One deployment: every service over the tapped store, and the adapters and consumers beside them.
#[derive(Debug, Clone)]
struct Deployment<S: EventStore, X: SearchIndex> {
    app: App<S, X>,
    store: Tapped<S>,
    index: X,
    push: Push,
    media: LocalMediaStore,
    clock: ManualClock,
    dispatcher: PushDispatcher<Tapped<S>, ManualClock, SequentialIds, Push>,
    indexer: Indexer<X>,
}

impl<S: EventStore, X: SearchIndex> Deployment<S, X> {
    fn new(store: S, index: X, yields: Vec<u8>) -> Self {
        let store = Tapped::new(store, yields);
        let clock = ManualClock::default();
        let push = MemoryPushGateway::with_clock(clock.clone());
        let media = LocalMediaStore::in_memory(MEDIA_BASE, b"erasure-properties".to_vec());
        // Re-planning waits no wall-clock time: the case's yields are the only schedule.
        let config = ServiceConfig {
            max_write_attempts: 64,
            write_backoff: Backoff::new(Duration::ZERO, Duration::ZERO),
            ..ServiceConfig::default()
        };
        let app = Services::new(
            store.clone(),
            clock.clone(),
            SequentialIds::new(),
            index.clone(),
            push.clone(),
            media.clone(),
            config.clone(),
        );
        let dispatcher = PushDispatcher::new(
            store.clone(),
            push.clone(),
            clock.clone(),
            app.devices.clone(),
            config.idempotency_ttl,
        );
        Self {
            indexer: Indexer::new(index.clone()),
            app,
            store,
            index,
            push,
            media,
            clock,
            dispatcher,
        }
    }

    /// Delivers `events` to the indexer and the push dispatcher: shuffled, with repeats, in batches.
    async fn deliver(&self, events: &[StoredEvent], plan: &Plan) -> Result<(), BoxError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut schedule: Vec<(u32, usize)> = (0..events.len())
            .map(|i| (plan.order[i % plan.order.len()], i))
            .collect();
        schedule.sort();
        let mut deliveries: Vec<StoredEvent> = schedule.into_iter().map(|(_, i)| events[i].clone()).collect();
        for (at, which) in &plan.duplicates {
            let position = at % (deliveries.len() + 1);
            deliveries.insert(position, events[which % events.len()].clone());
        }
        let mut start = 0;
        for size in plan.batch_sizes.iter().cycle() {
            if start >= deliveries.len() {
                break;
            }
            let end = (start + size).min(deliveries.len());
            let batch = &deliveries[start..end];
            self.indexer.handle(batch).await?;
            self.dispatcher.handle(batch).await?;
            start = end;
        }
        Ok(())
    }
}

const MEDIA_BASE: &str = "http://127.0.0.1:0";

/// The document a `PUT` writes: a word, and a tag unique to the owner and item.
fn document(owner: &UserId, k: &ItemKey, word: usize) -> serde_json::Map<String, serde_json::Value> {
    object(json!({"w": WORDS[word], "tag": tag(owner, k)}))
}

fn tag(owner: &UserId, k: &ItemKey) -> String {
    format!("tag{owner}{}{}", k.collection, k.id).replace(['-', '.', ':', '_'], "")
}

/// The bytes a user uploads: their name in them, so that a leftover is recognizable.
fn bytes_of(owner: &UserId, n: usize) -> Vec<u8> {
    format!("media bytes of {owner} number {n}").into_bytes()
}

/// A write that was acknowledged: what it committed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Ack {
    Item { key: ItemKey, version: Version },
    Deleted { key: ItemKey },
    Message { to: UserId, id: String },
    Device { id: String },
    Media { id: String },
    Uploaded { key: String },
}

/// The same, as an event of the stream shows it.
fn committed(event: &StoredEvent) -> Option<Ack> {
    match &event.payload {
        EventPayload::MessageReceived(message) => Some(Ack::Message {
            to: message.to.clone(),
            id: message.id.to_string(),
        }),
        EventPayload::Device(DeviceEvent::Registered { device_id, .. }) => Some(Ack::Device {
            id: device_id.to_string(),
        }),
        EventPayload::MediaDeclared(object) => Some(Ack::Media {
            id: object.id.to_string(),
        }),
        payload => {
            let change = payload.as_item()?;
            let key = ItemKey::new(change.collection.clone(), change.id.clone());
            Some(match change.state {
                Some(_) => Ack::Item {
                    key,
                    version: change.version,
                },
                None => Ack::Deleted { key },
            })
        }
    }
}

/// What became of one step.
#[derive(Debug)]
struct Outcome {
    step: Step,
    /// The idempotency key it was sent with.
    idem: Option<String>,
    /// Whether the erasure had answered before the step started.
    after_erasure: bool,
    result: Result<Ack, AppError>,
}

/// A user's client: performs acts, keeping the upload URLs of its declarations.
struct Client<S: EventStore, X: SearchIndex> {
    d: Deployment<S, X>,
    caller: Caller,
    uploads: Vec<(String, rookery_ports::service::SignedView, MediaId)>,
}

impl<S: EventStore, X: SearchIndex> Client<S, X> {
    async fn perform(&mut self, n: usize, act: &Act, idem: Option<&Idempotency>) -> Result<Ack, AppError> {
        let app = &self.d.app;
        let me = &self.caller.user;
        let item_key = |k: usize| key(KEYS[k].0, KEYS[k].1).map_err(|e| AppError::Invalid(e.to_string()));
        match act {
            Act::Put { key: k, word, public } => {
                let k = item_key(*k)?;
                let visibility = if *public {
                    Visibility::Public
                } else {
                    Visibility::Private
                };
                let written = app
                    .items
                    .put_item(
                        &self.caller,
                        &k,
                        document(me, &k, *word),
                        Some(visibility),
                        Precondition::None,
                        idem,
                    )
                    .await?;
                Ok(Ack::Item {
                    key: k,
                    version: written.item.version,
                })
            }
            Act::Patch { key: k, word } => {
                let k = item_key(*k)?;
                let patch = json!({"data": {"w": WORDS[*word]}});
                let item = app
                    .items
                    .patch_item(&self.caller, &k, patch, Precondition::None, idem)
                    .await?;
                Ok(Ack::Item {
                    key: k,
                    version: item.version,
                })
            }
            Act::Delete { key: k } => {
                let k = item_key(*k)?;
                app.items
                    .delete_item(&self.caller, &k, Precondition::None, idem)
                    .await?;
                Ok(Ack::Deleted { key: k })
            }
            Act::Message { to, word } => {
                let me_index = USERS.iter().position(|u| *u == me.as_str()).unwrap_or(0);
                let to = if *to == me_index { (to + 1) % USERS.len() } else { *to };
                let to = user(USERS[to]).map_err(|e| AppError::Invalid(e.to_string()))?;
                let text = format!("{} from {me}", WORDS[*word]);
                let accepted = app
                    .messages
                    .send_message(&self.caller, to.clone(), text, Default::default(), idem)
                    .await?;
                Ok(Ack::Message {
                    to,
                    id: accepted.id.to_string(),
                })
            }
            Act::Register { device } => {
                let id = rookery_tests::fixtures::device(&format!("d{device}"))
                    .map_err(|e| AppError::Invalid(e.to_string()))?;
                let token = format!("{me}-d{device}-t{n}");
                app.devices
                    .register_device(&self.caller, &id, Platform::Fcm, &token, idem)
                    .await?;
                Ok(Ack::Device { id: id.to_string() })
            }
            Act::Declare => {
                let body = bytes_of(me, n);
                let created = app
                    .media
                    .create_media(&self.caller, "image/png", body.len() as u64, idem)
                    .await?;
                let id = created.id.to_string();
                self.uploads.push((id.clone(), created.upload, created.id));
                Ok(Ack::Media { id })
            }
            Act::Upload { which } => {
                if self.uploads.is_empty() {
                    return Err(AppError::NotFound);
                }
                let (_, signed, id) = &self.uploads[which % self.uploads.len()];
                let (key, query) = signed
                    .url
                    .strip_prefix(MEDIA_BASE)
                    .and_then(|rest| rest.strip_prefix(UPLOAD_PATH))
                    .and_then(|rest| rest.split_once('?'))
                    .ok_or_else(|| AppError::Invalid(format!("an upload URL: {}", signed.url)))?;
                let (expires, sig) = query
                    .strip_prefix("expires=")
                    .and_then(|rest| rest.split_once("&sig="))
                    .ok_or_else(|| AppError::Invalid(format!("a signed query: {query}")))?;
                let headers = signed.headers.clone().unwrap_or_default();
                let body_size: u64 = headers.get("Content-Length").and_then(|l| l.parse().ok()).unwrap_or(0);
                // The body is the declared size, made of the owner's name.
                let mut body = bytes_of(me, 0);
                body.resize(usize::try_from(body_size).unwrap_or(0), b'x');
                let upload = Upload {
                    key,
                    expires,
                    sig,
                    content_type: headers.get("Content-Type").map(String::as_str),
                    content_length: Some(body_size),
                    body: &body,
                };
                match self.d.media.accept_upload(&upload, self.d.clock.now()) {
                    Ok(_) => Ok(Ack::Uploaded { key: key.to_owned() }),
                    Err(UploadError::Erased) => Err(AppError::Erased),
                    Err(other) => Err(AppError::Invalid(format!("upload of {id}: {other}"))),
                }
            }
        }
    }
}

/// Every event of `owner`'s stream, oldest first.
async fn whole_feed<S: EventStore>(store: &S, owner: &UserId) -> Result<Vec<StoredEvent>, BoxError> {
    let mut all: Vec<StoredEvent> = Vec::new();
    loop {
        let after = all.last().map_or(Seq(0), |e| e.seq);
        let page = store.read_feed(owner, after, 100).await?;
        if page.is_empty() {
            return Ok(all);
        }
        all.extend(page);
    }
}

/// Runs the plan on `d`: the users' lanes, the erasure and the log's consumer at once, then the whole log
/// again; answers every step's outcome and the erasure's answer.
async fn play<S: EventStore, X: SearchIndex>(
    d: &Deployment<S, X>,
    plan: &Plan,
) -> Result<(Vec<Outcome>, Timestamp), BoxError> {
    let callers: Vec<Caller> = USERS
        .iter()
        .map(|name| user(name).map(Caller::new))
        .collect::<Result<_, _>>()?;
    let erased_flag = Arc::new(AtomicBool::new(false));
    let writers_done = Arc::new(AtomicBool::new(false));

    let mut lanes = Vec::new();
    for (u, caller) in callers.iter().enumerate() {
        for lane in 0..2 {
            let steps: Vec<(usize, Step)> = plan
                .steps
                .iter()
                .enumerate()
                .filter(|(_, s)| s.user == u && s.lane == lane)
                .map(|(n, s)| (n, s.clone()))
                .collect();
            let mut client = Client {
                d: d.clone(),
                caller: caller.clone(),
                uploads: Vec::new(),
            };
            let erased_flag = erased_flag.clone();
            lanes.push(tokio::spawn(async move {
                let mut outcomes = Vec::new();
                for (n, step) in steps {
                    yield_times(step.pause).await;
                    let idem = step.keyed.then(|| Idempotency {
                        key: format!("k{n}"),
                        fingerprint: format!("f{n}"),
                    });
                    let after_erasure = erased_flag.load(Ordering::SeqCst);
                    let result = client.perform(n, &step.act, idem.as_ref()).await;
                    outcomes.push(Outcome {
                        step,
                        idem: idem.map(|i| i.key),
                        after_erasure,
                        result,
                    });
                }
                outcomes
            }));
        }
    }

    let eraser = {
        let (d, caller, erased_flag, pause) = (
            d.clone(),
            callers[plan.erased].clone(),
            erased_flag.clone(),
            plan.erase_after,
        );
        tokio::spawn(async move {
            yield_times(pause).await;
            let at = d.app.erasure.erase(&caller).await;
            erased_flag.store(true, Ordering::SeqCst);
            at
        })
    };

    let consumer = {
        let (d, plan, writers_done) = (d.clone(), plan.clone(), writers_done.clone());
        tokio::spawn(async move {
            let mut delivered = 0;
            loop {
                yield_times(plan.consumer_pause + 1).await;
                let finished = writers_done.load(Ordering::SeqCst);
                let log = d.store.committed();
                if delivered < log.len() {
                    d.deliver(&log[delivered..], &plan).await?;
                    delivered = log.len();
                } else if finished {
                    return Ok::<(), BoxError>(());
                }
            }
        })
    };

    let mut outcomes = Vec::new();
    for lane in lanes {
        outcomes.extend(lane.await?);
    }
    let at = eraser.await??;
    writers_done.store(true, Ordering::SeqCst);
    consumer.await??;

    // The change log redelivers everything once more, the erased user's old events included.
    d.deliver(&d.store.committed(), plan).await?;
    outcomes.sort_by_key(|o| (o.step.user, o.step.lane));
    Ok((outcomes, at))
}

/// Checks everything the property promises, after `play`.
async fn check<S: EventStore + ChangeFeed, X: SearchIndex>(
    d: &Deployment<S, X>,
    plan: &Plan,
    outcomes: &[Outcome],
    erased_at: Timestamp,
) -> Result<(), BoxError> {
    let users: Vec<UserId> = USERS.iter().map(|name| user(name)).collect::<Result<_, _>>()?;
    let gone = &users[plan.erased];
    let store = &d.store.inner;
    let keys: Vec<ItemKey> = KEYS.iter().map(|(c, i)| key(c, i)).collect::<Result<_, _>>()?;
    let log = d.store.committed();

    // The marker, and only it, is left of the erased user.
    assert_eq!(store.erased(gone).await?, Some(erased_at), "the erasure marker is kept");
    for other in users.iter().filter(|u| *u != gone) {
        assert_eq!(store.erased(other).await?, None, "{other} is not erased");
    }
    assert!(whole_feed(store, gone).await?.is_empty(), "no event of {gone} is left");
    assert_eq!(store.last_seq(gone).await?, Seq(0));
    assert!(
        store.read_messages(gone, Seq(0), 1000).await?.is_empty(),
        "no message to {gone}"
    );
    assert!(store.devices(gone).await?.is_empty(), "no device of {gone}");
    for k in &keys {
        assert_eq!(store.item_head(gone, k).await?, ItemHead::default(), "{k} of {gone}");
        assert!(store.item_history(gone, k, Version::NONE, 1000).await?.is_empty());
        assert!(store.list_items(gone, &k.collection, None, 1000).await?.is_empty());
    }
    assert!(!store.owners(None, 1000).await?.contains(gone), "owners skips {gone}");
    let (feed, _) = store.changes_after(0, 100_000).await?;
    assert!(
        feed.iter().all(|e| e.owner != *gone),
        "the change feed yields nothing of {gone}"
    );
    let caller = Caller::new(gone.clone());
    let page = d.app.sync.sync(&caller, None, Some(100)).await?;
    assert!(page.changes.is_empty(), "{gone} syncs nothing");
    let inbox = d.app.messages.messages(&caller, None, Some(100)).await?;
    assert!(inbox.entries.is_empty(), "{gone}'s inbox is empty");
    // Everything their stream ever held: media declared, idempotency keys, pushes remembered.
    let theirs: Vec<&StoredEvent> = log.iter().filter(|e| e.owner == *gone).collect();
    for event in &theirs {
        match &event.payload {
            EventPayload::MediaDeclared(object) => {
                assert_eq!(
                    store.media(gone, &object.id).await?,
                    None,
                    "media {} of {gone}",
                    object.id
                );
                assert_eq!(
                    d.app.media.get_media(&caller, &object.id).await,
                    Err(AppError::NotFound)
                );
                assert_eq!(
                    d.media.status(object).await?,
                    ObjectStatus::Pending,
                    "no bytes of {} are left",
                    object.key
                );
            }
            EventPayload::MessageReceived(message) => {
                for device in 0..DEVICES {
                    let device = Device {
                        device_id: rookery_tests::fixtures::device(&format!("d{device}"))?,
                        platform: Platform::Fcm,
                        token: String::new(),
                        endpoint: String::new(),
                        enabled: true,
                        registered_at: event.at,
                    };
                    let remembered = store.idempotency(gone, &push_key(message, &device)).await?;
                    assert_eq!(remembered, None, "no push of {} to {gone} is remembered", message.id);
                }
            }
            _ => {}
        }
    }
    for o in outcomes.iter().filter(|o| USERS[o.step.user] == gone.as_str()) {
        if let Some(k) = &o.idem {
            assert_eq!(store.idempotency(gone, k).await?, None, "{gone}'s key {k} is forgotten");
        }
    }
    // No push reached an erased user's device after the erasure: the gateway forgot the ones before it,
    // so any push recorded for them now came after. No endpoint of theirs is left either.
    assert_eq!(
        d.push.sent_to(gone)?,
        Vec::new(),
        "no push to {gone}'s devices after the erasure"
    );
    let endpoints = d.push.endpoints()?;
    assert!(
        endpoints.iter().all(|e| e.owner != *gone),
        "no push endpoint of {gone} is left: {endpoints:?}"
    );

    // Writes of the erased user that started after the erasure are refused; messages to them are not
    // delivered to anyone.
    for o in outcomes.iter().filter(|o| o.after_erasure) {
        let by_gone = USERS[o.step.user] == gone.as_str();
        match (&o.step.act, by_gone) {
            (Act::Message { .. }, true) => {}
            (Act::Message { .. }, false) => {
                if let Ok(Ack::Message { to, .. }) = &o.result {
                    assert_ne!(to, gone, "a message to {gone} after the erasure is refused: {o:?}");
                }
            }
            // A patch or delete finds no item (the plan refuses before any append), and an upload
            // may have no declaration to use.
            (Act::Patch { .. } | Act::Delete { .. } | Act::Upload { .. }, true) => {
                assert!(
                    matches!(o.result, Err(AppError::Erased | AppError::NotFound)),
                    "a write of {gone} after the erasure is refused: {o:?}"
                );
            }
            (_, true) => assert_eq!(
                o.result,
                Err(AppError::Erased),
                "a write of {gone} after the erasure is refused as erased: {o:?}"
            ),
            (_, false) => {}
        }
    }

    // The search index holds nothing of the erased user, whoever asks.
    for asker in &users {
        for k in &keys {
            for scope in [Scope::All, Scope::Public, Scope::Mine] {
                let query = SearchQuery {
                    caller: asker.clone(),
                    words: vec![tag(gone, k).to_lowercase()],
                    collection: None,
                    scope,
                    limit: 100,
                    cursor: None,
                };
                let page = d.index.query(&query).await?;
                assert!(
                    page.hits.is_empty() && page.found == 0,
                    "{asker} finds nothing of {gone}'s {k} ({scope:?})"
                );
            }
        }
        for word in WORDS {
            let query = SearchQuery {
                caller: asker.clone(),
                words: vec![word.to_owned()],
                collection: None,
                scope: Scope::All,
                limit: 100,
                cursor: None,
            };
            let page = d.index.query(&query).await?;
            assert!(
                page.hits.iter().all(|h| h.item.owner != *gone),
                "{asker} searching {word} finds nothing of {gone}"
            );
        }
    }

    // Nothing of anyone else is lost.
    let mut expected: BTreeMap<UserId, Vec<Ack>> = BTreeMap::new();
    for o in outcomes {
        let writer = &users[o.step.user];
        let Ok(ack) = &o.result else { continue };
        let owner = match ack {
            Ack::Message { to, .. } => to.clone(),
            Ack::Uploaded { .. } => continue,
            _ => writer.clone(),
        };
        if owner != *gone {
            expected.entry(owner).or_default().push(ack.clone());
        }
        if writer != gone
            && let Some(k) = &o.idem
        {
            assert!(
                store.idempotency(writer, k).await?.is_some(),
                "{writer}'s acknowledged key {k} is recorded"
            );
        }
    }
    let sent = d.push.sent()?;
    for owner in users.iter().filter(|u| *u != gone) {
        let stream = whole_feed(store, owner).await?;
        let seqs: Vec<u64> = stream.iter().map(|e| e.seq.0).collect();
        let consecutive: Vec<u64> = (1..=stream.len() as u64).collect();
        assert_eq!(seqs, consecutive, "{owner}'s stream is consecutive from 1");
        let mut found: Vec<Ack> = stream.iter().filter_map(committed).collect();
        let mut acked = expected.remove(owner).unwrap_or_default();
        found.sort();
        acked.sort();
        assert_eq!(found, acked, "{owner}'s stream holds exactly the acknowledged writes");

        // The feed a device follows is the same, and so is the global change feed.
        let caller = Caller::new(owner.clone());
        let mut cursor: Option<String> = None;
        let mut followed = Vec::new();
        for _ in 0..1000 {
            let page = d.app.sync.sync(&caller, cursor.as_deref(), Some(7)).await?;
            followed.extend(page.changes.iter().map(|c| c.seq().0));
            cursor = Some(page.next_cursor);
            if !page.has_more {
                break;
            }
        }
        assert_eq!(followed, consecutive, "{owner}'s feed is complete and consecutive");
        let in_feed: Vec<u64> = feed.iter().filter(|e| e.owner == *owner).map(|e| e.seq.0).collect();
        assert_eq!(
            in_feed, consecutive,
            "the change feed holds every event of {owner}, once, in order"
        );

        // Every item is searchable as it is now.
        for k in &keys {
            let head = store.item_head(owner, k).await?;
            let query = SearchQuery {
                caller: owner.clone(),
                words: vec![tag(owner, k).to_lowercase()],
                collection: Some(k.collection.clone()),
                scope: Scope::Mine,
                limit: 100,
                cursor: None,
            };
            let page = d.index.query(&query).await?;
            let hits: Vec<&Item> = page.hits.iter().map(|h| &h.item).collect();
            match &head.item {
                Some(item) => assert_eq!(hits, vec![item], "{owner}'s {k} is found as it is"),
                None => assert!(hits.is_empty(), "{owner}'s deleted {k} is not found"),
            }
        }

        // Every message is pushed once to each of the recipient's devices.
        let devices = store.devices(owner).await?;
        for message in stream.iter().filter_map(|e| match &e.payload {
            EventPayload::MessageReceived(m) => Some(m),
            _ => None,
        }) {
            for device in devices.values() {
                let pushes = sent
                    .iter()
                    .filter(|p| p.owner == *owner && p.device_id == device.device_id)
                    .filter(|p| p.message_id().as_deref() == Some(message.id.as_str()))
                    .count();
                assert_eq!(
                    pushes, 1,
                    "message {} is pushed once to {owner}'s {}",
                    message.id, device.device_id
                );
            }
        }

        // Media of others keep their bytes.
        for o in outcomes.iter().filter(|o| users[o.step.user] == *owner) {
            if let Ok(Ack::Uploaded { key }) = &o.result {
                let object = stream
                    .iter()
                    .find_map(|e| match &e.payload {
                        EventPayload::MediaDeclared(m) if m.key == *key => Some(m.clone()),
                        _ => None,
                    })
                    .ok_or("an uploaded object was declared")?;
                assert!(
                    matches!(d.media.status(&object).await?, ObjectStatus::Uploaded { .. }),
                    "{owner}'s upload {key} is kept"
                );
            }
        }
    }
    Ok(())
}

async fn erasure_on_memory_case(plan: Plan) -> Result<(), BoxError> {
    let d = Deployment::new(
        MemoryEventStore::in_memory(),
        MemorySearchIndex::new(),
        plan.yields.clone(),
    );
    let (outcomes, at) = play(&d, &plan).await?;
    check(&d, &plan, &outcomes, at).await?;
    // The index is exactly what the other users' streams, delivered in order, make of a fresh one.
    let gone = user(USERS[plan.erased])?;
    let reference = MemorySearchIndex::new();
    for name in USERS {
        let owner = user(name)?;
        Indexer::new(reference.clone())
            .handle(&whole_feed(&d.store.inner, &owner).await?)
            .await?;
    }
    let snapshot = d.index.snapshot()?;
    assert!(
        snapshot.iter().all(|e| e.owner != gone),
        "no document of {gone}, not even a tombstone"
    );
    assert_eq!(
        snapshot,
        reference.snapshot()?,
        "the index is that of the remaining streams"
    );
    Ok(())
}

async fn erasure_on_sqlite_case(plan: Plan) -> Result<(), BoxError> {
    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open(dir.path().join("rookery.sqlite3"))?;
    let index = store.search_index();
    let d = Deployment::new(store, index, plan.yields.clone());
    let (outcomes, at) = play(&d, &plan).await?;
    check(&d, &plan, &outcomes, at).await
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn erasure_during_concurrent_writes_and_redeliveries_leaves_nothing_and_loses_nothing(p in plan()) {
        run(erasure_on_memory_case(p))?;
    }
}

proptest! {
    // Each case opens a database file: fewer cases, the same generator.
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    #[test]
    fn erasure_on_sqlite_during_concurrent_writes_and_redeliveries(p in plan()) {
        run(erasure_on_sqlite_case(p))?;
    }
}
