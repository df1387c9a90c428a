//! Every port contract suite, run against the memory adapters (and the event store's file-backed mode),
//! and a check that the file-backed store reopens to the same state.

use std::sync::atomic::{AtomicU64, Ordering};

use rookery_adapters_memory::media::{DOWNLOAD_PATH, UPLOAD_PATH, Upload};
use rookery_adapters_memory::{
    LocalMediaStore, ManualClock, MemoryEventStore, MemoryPushGateway, MemorySearchIndex, SequentialIds, SystemClock,
    UlidIds,
};
use rookery_ports::SignedRequest;
use rookery_tests::contract::event_store::StoreFactory;
use rookery_tests::contract::media_store::MediaFactory;
use rookery_tests::contract::push_gateway::PushFactory;
use rookery_tests::contract::reopen::{everything, write_a_little_of_everything};
use rookery_tests::contract::search_index::SearchFactory;
use rookery_tests::contract::system::{ClockFactory, IdsFactory};
use rookery_tests::fixtures::{BoxError, wall_clock};
use rookery_tests::{
    change_feed_contract, clock_contract, event_store_contract, id_source_contract, media_store_contract,
    media_store_signature_contract, push_gateway_contract, search_index_contract,
};

/// Fresh in-memory event stores.
struct InMemoryStores;

impl StoreFactory for InMemoryStores {
    type Store = MemoryEventStore;

    async fn fresh(&self) -> Result<MemoryEventStore, BoxError> {
        Ok(MemoryEventStore::in_memory())
    }
}

event_store_contract!(memory_event_store, InMemoryStores);
change_feed_contract!(memory_change_feed, InMemoryStores);
rookery_tests::erasure_contract!(memory_erasure, InMemoryStores);
rookery_tests::erasure_feed_contract!(memory_erasure_feed, InMemoryStores);

/// Fresh file-backed event stores, each in its own directory under one temporary directory that lives
/// as long as the factory (one test).
struct FileStores {
    dir: tempfile::TempDir,
    next: AtomicU64,
}

impl FileStores {
    fn new() -> Result<Self, BoxError> {
        Ok(Self {
            dir: tempfile::tempdir()?,
            next: AtomicU64::new(0),
        })
    }
}

impl StoreFactory for FileStores {
    type Store = MemoryEventStore;

    async fn fresh(&self) -> Result<MemoryEventStore, BoxError> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        Ok(MemoryEventStore::open(&self.dir.path().join(format!("store-{n}")))?)
    }
}

event_store_contract!(file_event_store, FileStores::new()?);

/// Fresh memory search indexes.
struct MemoryIndexes;

impl SearchFactory for MemoryIndexes {
    type Index = MemorySearchIndex;

    async fn fresh(&self) -> Result<MemorySearchIndex, BoxError> {
        Ok(MemorySearchIndex::new())
    }
}

search_index_contract!(memory_search_index, MemoryIndexes);

/// Fresh recording push gateways; disabling an endpoint is the gateway's own test hook.
struct MemoryGateways;

impl PushFactory for MemoryGateways {
    type Gateway = MemoryPushGateway;

    async fn fresh(&self) -> Result<MemoryPushGateway, BoxError> {
        Ok(MemoryPushGateway::new())
    }

    async fn disable(&self, gateway: &MemoryPushGateway, endpoint: &str) {
        assert_eq!(
            gateway.disable_endpoint(endpoint),
            Ok(true),
            "endpoint {endpoint} exists"
        );
    }
}

push_gateway_contract!(memory_push_gateway, MemoryGateways);

/// Fresh local media stores, in memory or in a temporary directory; a signed request is performed the
/// way the local server's routes perform it: the URL taken apart, then `accept_upload` or `fetch`.
struct LocalMedia {
    dir: Option<tempfile::TempDir>,
    next: AtomicU64,
}

const BASE_URL: &str = "http://127.0.0.1:0";

impl LocalMedia {
    fn in_memory() -> Self {
        Self {
            dir: None,
            next: AtomicU64::new(0),
        }
    }

    fn in_dir() -> Result<Self, BoxError> {
        Ok(Self {
            dir: Some(tempfile::tempdir()?),
            next: AtomicU64::new(0),
        })
    }
}

/// Decodes `%XX` escapes; anything malformed is kept as it is (and will then fail the signature).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The key, `expires` and `sig` of a signed URL under `prefix`.
fn parse_signed(url: &str, prefix: &str) -> Result<(String, String, String), String> {
    let rest = url.strip_prefix(BASE_URL).ok_or("another host")?;
    let rest = rest.strip_prefix(prefix).ok_or("another route")?;
    let (path, query) = rest.split_once('?').ok_or("no query")?;
    let param = |name: &str| {
        query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| percent_decode(v))
            .ok_or(format!("no {name}"))
    };
    Ok((percent_decode(path), param("expires")?, param("sig")?))
}

fn header<'a>(request: &'a SignedRequest, name: &str) -> Option<&'a str> {
    request
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

impl MediaFactory for LocalMedia {
    type Store = LocalMediaStore;

    async fn fresh(&self) -> Result<LocalMediaStore, BoxError> {
        let secret = format!("secret-{}", self.next.fetch_add(1, Ordering::Relaxed)).into_bytes();
        Ok(match &self.dir {
            None => LocalMediaStore::in_memory(BASE_URL, secret),
            Some(dir) => {
                let blobs = dir.path().join(String::from_utf8_lossy(&secret).as_ref());
                LocalMediaStore::in_dir(BASE_URL, secret, &blobs)?
            }
        })
    }

    async fn upload(&self, store: &LocalMediaStore, request: &SignedRequest, body: Vec<u8>) -> Result<(), String> {
        if !request.method.eq_ignore_ascii_case("PUT") {
            return Err(format!("method {}", request.method));
        }
        let (key, expires, sig) = parse_signed(&request.url, UPLOAD_PATH)?;
        let content_length = match header(request, "content-length") {
            Some(length) => Some(length.parse().map_err(|_| "bad Content-Length")?),
            None => None,
        };
        let upload = Upload {
            key: &key,
            expires: &expires,
            sig: &sig,
            content_type: header(request, "content-type"),
            content_length,
            body: &body,
        };
        store
            .accept_upload(&upload, wall_clock())
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    async fn download(&self, store: &LocalMediaStore, request: &SignedRequest) -> Result<Vec<u8>, String> {
        let (key, expires, sig) = parse_signed(&request.url, DOWNLOAD_PATH)?;
        store
            .fetch(&key, &expires, &sig, wall_clock())
            .map(|fetched| fetched.bytes)
            .map_err(|e| e.to_string())
    }
}

media_store_contract!(local_media_in_memory, LocalMedia::in_memory());
media_store_signature_contract!(local_media_in_memory_signatures, LocalMedia::in_memory());
media_store_contract!(local_media_in_dir, LocalMedia::in_dir()?);
media_store_signature_contract!(local_media_in_dir_signatures, LocalMedia::in_dir()?);

/// The system clock.
struct SystemClocks;

impl ClockFactory for SystemClocks {
    type Clock = SystemClock;

    fn fresh(&self) -> SystemClock {
        SystemClock::new()
    }
}

clock_contract!(system_clock, SystemClocks);

/// A manual clock nobody moves: it must not go backwards on its own.
struct ManualClocks;

impl ClockFactory for ManualClocks {
    type Clock = ManualClock;

    fn fresh(&self) -> ManualClock {
        ManualClock::default()
    }
}

clock_contract!(manual_clock, ManualClocks);

/// ULID sources, each seeded from the process's randomness.
struct Ulids;

impl IdsFactory for Ulids {
    type Ids = UlidIds;

    fn fresh(&self) -> UlidIds {
        UlidIds::new()
    }
}

id_source_contract!(ulid_ids, Ulids);

/// Sequential ids; every instance gets its own prefix, as the port's "every other instance" demands.
struct Sequential(AtomicU64);

impl IdsFactory for Sequential {
    type Ids = SequentialIds;

    fn fresh(&self) -> SequentialIds {
        let n = self.0.fetch_add(1, Ordering::Relaxed);
        SequentialIds::with_prefix(&format!("s{n}"))
    }
}

id_source_contract!(sequential_ids, Sequential(AtomicU64::new(0)));

/// A file-backed store, reopened, answers every read exactly as it did before it was closed.
#[tokio::test]
async fn a_reopened_file_store_answers_as_before() -> Result<(), BoxError> {
    let dir = tempfile::tempdir()?;
    let store = MemoryEventStore::open(dir.path())?;
    let written = write_a_little_of_everything(store.clone()).await?;
    let before = everything(&store, &written).await?;
    drop(store);
    let reopened = MemoryEventStore::open(dir.path())?;
    assert_eq!(everything(&reopened, &written).await?, before);
    Ok(())
}
