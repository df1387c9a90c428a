//! `rookery serve --data-dir` on SQLite, in-process: a data directory written by the old file log is
//! imported once on the first start (every event as stored, every idempotency record, a torn tail left
//! out) and the log kept as a backup; later starts replay nothing; a corrupt database file, a log next to
//! a database that already holds events, and a second server on the same directory are clear errors.

// Helpers outside `#[test]` functions fail their test by panicking, like the tests themselves.
#![allow(clippy::expect_used, clippy::panic)]

use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use rookery_adapters_memory::{
    LOG_FILE, LocalMediaStore, MemoryEventStore, MemoryPushGateway, MemorySearchIndex, SystemClock, UlidIds,
};
use rookery_adapters_sqlite::DATABASE_FILE;
use rookery_domain::{CollectionName, Device, DeviceId, EventPayload, ItemId, ItemKey, Platform, UserId};
use rookery_entrypoints::feed::{INDEXER, PUSH_DISPATCHER};
use rookery_entrypoints::http::{RateLimit, Services};
use rookery_entrypoints::local::data_dir::IMPORTED_LOG_FILE;
use rookery_entrypoints::{LocalConfig, LocalServer, StartError};
use rookery_ports::dispatcher::push_key;
use rookery_ports::{Caller, ChangeFeed, EventStore, IdempotencyRecord, IdempotencyWrite, ServiceConfig};
use serde_json::{Map, Value, json};

fn config(dir: &Path) -> LocalConfig {
    LocalConfig {
        addr: "127.0.0.1:0".parse().expect("an address"),
        data_dir: Some(dir.to_owned()),
        rate_limit: RateLimit::off(),
        ..LocalConfig::default()
    }
}

fn caller(name: &str) -> Caller {
    Caller::new(UserId::parse(name).expect("a user id"))
}

fn data(value: Value) -> Map<String, Value> {
    value.as_object().cloned().expect("an object")
}

/// Writes what an older build's `rookery serve --data-dir` would have: items, a device, two messages (the
/// first already pushed, as its dispatcher remembers) into the file log of `dir`, and a torn tail after it.
/// Answers the number of events and the two message ids.
async fn old_data_dir(dir: &Path) -> (u64, String, String) {
    let store = MemoryEventStore::open(dir).expect("the old log opens");
    let app = Services::new(
        store.clone(),
        SystemClock::new(),
        UlidIds::new(),
        MemorySearchIndex::new(),
        // The endpoints file the server opens too, as `rookery serve --data-dir` always kept it.
        MemoryPushGateway::open(dir).expect("the push endpoints"),
        LocalMediaStore::in_memory("http://127.0.0.1:1", vec![7u8; 32]),
        ServiceConfig::default(),
    );
    let (alice, bob) = (caller("alice"), caller("bob"));
    let key = |id: &str| {
        ItemKey::new(
            CollectionName::parse("notes").expect("a collection"),
            ItemId::parse(id).expect("an id"),
        )
    };
    app.items
        .put_item(
            &alice,
            &key("n1"),
            data(json!({"text": "Packing list"})),
            None,
            Default::default(),
            None,
        )
        .await
        .expect("put");
    app.items
        .patch_item(
            &alice,
            &key("n1"),
            json!({"data": {"text": "Passport, charger"}}),
            Default::default(),
            None,
        )
        .await
        .expect("patch");
    app.items
        .put_item(
            &alice,
            &key("n2"),
            data(json!({"text": "walrus"})),
            None,
            Default::default(),
            None,
        )
        .await
        .expect("put");
    let phone = DeviceId::parse("phone").expect("a device id");
    app.devices
        .register_device(&bob, &phone, Platform::Fcm, "bob-token", None)
        .await
        .expect("device");
    let pushed = app
        .messages
        .send_message(&alice, bob.user.clone(), "already pushed".into(), Map::new(), None)
        .await
        .expect("message")
        .id
        .to_string();
    let fresh = app
        .messages
        .send_message(&alice, bob.user.clone(), "not pushed yet".into(), Map::new(), None)
        .await
        .expect("message")
        .id
        .to_string();
    // The old dispatcher remembered the first push, under the key it dedupes by.
    let device: Device = store.devices(&bob.user).await.expect("devices")[&phone].clone();
    let (events, _) = store.changes_after(0, 100).expect("the feed");
    let message = events
        .iter()
        .find_map(|e| match &e.payload {
            EventPayload::MessageReceived(m) if m.id.to_string() == pushed => Some(m.clone()),
            _ => None,
        })
        .expect("the pushed message");
    let now = rookery_domain::Timestamp::from_millis(
        u64::try_from(std::time::UNIX_EPOCH.elapsed().expect("a clock").as_millis()).expect("millis"),
    );
    let key = push_key(&message, &device);
    store
        .remember(IdempotencyWrite {
            owner: bob.user.clone(),
            record: IdempotencyRecord {
                key: key.clone(),
                fingerprint: key,
                outcome: json!({"push": "delivered"}),
                recorded_at: now,
            },
            expired_before: rookery_domain::Timestamp::from_millis(0),
        })
        .await
        .expect("remember");
    let count = store.commit_position().expect("a position");
    drop(app);
    drop(store);
    // A crash in the middle of a later write left part of a record.
    std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join(LOG_FILE))
        .expect("the log")
        .write_all(b"000001f4 1badc0de {\"op\":\"append\",\"torn")
        .expect("a torn tail");
    (count, pushed, fresh)
}

struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    fn new(server: &LocalServer) -> Self {
        Self {
            base: format!("http://{}", server.addr()),
            http: reqwest::Client::builder().no_proxy().build().expect("a client"),
        }
    }

    async fn token(&self, user: &str) -> String {
        let answer: Value = self
            .http
            .post(format!("{}/v1/dev/tokens", self.base))
            .json(&json!({"user_id": user}))
            .send()
            .await
            .expect("a token")
            .json()
            .await
            .expect("JSON");
        answer["token"].as_str().expect("a token").to_owned()
    }

    async fn get(&self, token: &str, path: &str) -> (StatusCode, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .expect("an answer");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_log_is_imported_once_on_the_first_start_and_kept_as_a_backup() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (events, pushed, fresh) = old_data_dir(dir.path()).await;

    let server = LocalServer::start(config(dir.path())).await.expect("the server starts");
    assert!(!dir.path().join(LOG_FILE).exists(), "the log is moved away");
    let backup = std::fs::read(dir.path().join(IMPORTED_LOG_FILE)).expect("the log is kept as a backup");
    assert!(
        backup.ends_with(b"torn"),
        "the backup is the log as it was, torn tail and all"
    );
    let store = server.store().expect("a SQLite store").clone();
    assert_eq!(
        store.commit_position(),
        events,
        "every intact event, none of the torn tail"
    );

    let api = Client::new(&server);
    let alice = api.token("alice").await;
    let (status, item) = api.get(&alice, "/v1/items/notes/n1").await;
    assert_eq!(status, StatusCode::OK, "{item}");
    assert_eq!(
        (item["version"].clone(), item["data"]["text"].clone()),
        (json!(2), json!("Passport, charger"))
    );
    let (_, history) = api.get(&alice, "/v1/items/notes/n1/history").await;
    assert_eq!(history["events"].as_array().map(Vec::len), Some(2));
    // The index is built from the imported events before the server answers.
    let (_, found) = api.get(&alice, "/v1/search?q=passport").await;
    assert_eq!(found["found"], 1, "{found}");
    let (_, sync) = api.get(&alice, "/v1/sync").await;
    let seqs: Vec<u64> = sync["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|c| c["seq"].as_u64().expect("a seq"))
        .collect();
    assert_eq!(seqs, vec![1, 2, 3], "the original seqs");

    // The push the old server remembered is not sent again; the other one is sent.
    let bob = api.token("bob").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, pushes) = api.get(&bob, "/v1/dev/pushes").await;
        let ids: Vec<String> = pushes["pushes"]
            .as_array()
            .expect("pushes")
            .iter()
            .filter_map(|p| p["message_id"].as_str().map(str::to_owned))
            .collect();
        assert!(
            !ids.contains(&pushed),
            "a push remembered before the import is not sent again"
        );
        if ids.contains(&fresh) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the message not pushed before the import is pushed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let position = ChangeFeed::commit_position(&store).expect("a position");
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.feed_position() < position {
        assert!(Instant::now() < deadline, "the consumers catch up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(store);
    server.shutdown().await.expect("a clean shutdown");

    // A second start imports nothing and replays nothing: each consumer goes on from its stored position.
    let again = LocalServer::start(config(dir.path()))
        .await
        .expect("the server restarts");
    let store = again.store().expect("a SQLite store");
    assert_eq!(store.commit_position(), events);
    assert_eq!(store.consumer_position(INDEXER).await.expect("stored"), events);
    assert_eq!(store.consumer_position(PUSH_DISPATCHER).await.expect("stored"), events);
    assert!(!dir.path().join(format!("{IMPORTED_LOG_FILE}.2")).exists());
    again.shutdown().await.expect("a clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_data_directories_are_refused_naming_the_file() {
    // A database file that is not one.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let database = dir.path().join(DATABASE_FILE);
    std::fs::write(&database, "not a database at all, ".repeat(400)).expect("a file");
    let error = LocalServer::start(config(dir.path()))
        .await
        .expect_err("a corrupt file is refused");
    match &error {
        StartError::DataDir { path, .. } => assert_eq!(path, &database),
        other => panic!("not a data directory error: {other}"),
    }
    assert!(error.to_string().contains(&database.display().to_string()), "{error}");

    // An old log next to a database that already holds events: never imported twice, never guessed at.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let server = LocalServer::start(config(dir.path())).await.expect("the server starts");
    let api = Client::new(&server);
    let alice = api.token("alice").await;
    let put = api
        .http
        .put(format!("{}/v1/items/notes/n1", api.base))
        .bearer_auth(&alice)
        .json(&json!({"data": {"text": "hi"}}))
        .send()
        .await
        .expect("an answer");
    assert_eq!(put.status(), StatusCode::CREATED);
    // A second server on the same directory is refused while the first runs.
    let second = LocalServer::start(config(dir.path()))
        .await
        .expect_err("the directory is in use");
    assert!(second.to_string().contains("in use"), "{second}");
    server.shutdown().await.expect("a clean shutdown");
    old_data_dir(dir.path()).await;
    let error = LocalServer::start(config(dir.path()))
        .await
        .expect_err("the log is refused");
    let log = dir.path().join(LOG_FILE);
    assert!(
        matches!(&error, StartError::DataDir { path, .. } if path == &log),
        "{error}"
    );
    assert!(error.to_string().contains("already holds events"), "{error}");
}
