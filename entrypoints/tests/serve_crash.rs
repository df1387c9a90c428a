//! Crash safety of `rookery serve` with a data directory (an SQLite database in WAL mode): the real
//! binary is killed with SIGKILL in the middle of concurrent writes, restarted on the same directory, and
//! every acknowledged write must still be there; then garbage is appended to the write-ahead log (a torn
//! tail, as a crash in the middle of a commit leaves) and the server must still start with all
//! acknowledged data, and keep later writes across yet another crash.
//!
//! SQLite's own journaling replaces the torn-tail repair the old file log did by hand: a WAL frame whose
//! checksum does not match ends the log at recovery, so a partial commit is never read. (The import of an
//! old file log with a torn tail is tested in `data_dir.rs`.)
//!
//! Checked after each restart: every acknowledged item write is present with at least its acknowledged
//! version (and that version holds the data that was acknowledged), every acknowledged message is in the
//! recipient's inbox, each user's `/v1/sync` is strictly ordered and yields every acknowledged change
//! exactly once with no version of any item missing, tokens issued before the crash still work (the
//! development signing key is kept), and search finds the items written before the crash (the index is
//! in the same database, and the indexer goes on from its stored position).

// Helpers outside `#[test]` functions fail their test by panicking, like the tests themselves.
#![allow(clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write as _};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

/// How long the server may take to start (a debug build, on a machine busy with other tests).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long asynchronous effects (indexing what the indexer had not reached before the crash) may take.
const EVENTUALLY: Duration = Duration::from_secs(20);
/// Users writing at once.
const USERS: usize = 4;
/// Acknowledged writes to collect before the crash.
const ACKED_BEFORE_CRASH: usize = 150;
/// The word every written item carries, for the search check.
const WORD: &str = "crashproofword";

/// A running `rookery serve`; killed when dropped.
#[derive(Debug)]
struct Server {
    child: Child,
    addr: SocketAddr,
    output: Arc<Mutex<String>>,
}

/// Copies everything `source` prints into `sink`, sending the listening address to `found`.
fn collect(source: impl Read + Send + 'static, sink: Arc<Mutex<String>>, found: Option<mpsc::Sender<String>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(source).lines() {
            let Ok(line) = line else { break };
            if let Some(found) = &found
                && let Some(rest) = line.split("rookery listening on http://").nth(1)
            {
                let _ = found.send(rest.trim().to_owned());
            }
            if let Ok(mut sink) = sink.lock() {
                sink.push_str(&line);
                sink.push('\n');
            }
        }
    });
}

impl Server {
    /// `rookery serve --addr 127.0.0.1:0 --data-dir <dir> --rate-limit 0`, once it prints its address.
    fn start(data_dir: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rookery"))
            .args(["serve", "--addr", "127.0.0.1:0", "--rate-limit", "0", "--data-dir"])
            .arg(data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("rookery runs");
        let output = Arc::new(Mutex::new(String::new()));
        let (found, address) = mpsc::channel();
        collect(child.stdout.take().expect("stdout"), output.clone(), Some(found));
        collect(child.stderr.take().expect("stderr"), output.clone(), None);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(text) = address.recv_timeout(Duration::from_millis(50)) {
                let addr = text.parse().expect("a socket address");
                return Self { child, addr, output };
            }
            let exited = child.try_wait().expect("the child's status");
            if exited.is_some() || Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                let log = output.lock().map(|s| s.clone()).unwrap_or_default();
                panic!("rookery did not start ({exited:?}):\n{log}");
            }
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn output(&self) -> String {
        self.output.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// SIGKILL, as a crash or the OOM killer would: no shutdown code runs.
    fn crash(mut self) {
        self.child.kill().expect("SIGKILL is sent");
        let status = self.child.wait().expect("the process is reaped");
        assert!(!status.success(), "a killed process does not exit cleanly: {status:?}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(30))
        .no_proxy()
        .build()
        .expect("an HTTP client")
}

/// A development token for `user`.
async fn token(client: &Client, server: &Server, user: &str) -> String {
    let response = client
        .post(server.url("/v1/dev/tokens"))
        .json(&json!({ "user_id": user }))
        .send()
        .await
        .expect("the token request");
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("token JSON");
    body["token"].as_str().expect("a token").to_owned()
}

/// `GET path` as the holder of `token`: status and JSON body.
async fn get(client: &Client, server: &Server, token: &str, path: &str) -> (StatusCode, Value) {
    let response = client
        .get(server.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = response.status();
    let text = response.text().await.expect("a body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Calls `probe` until it returns `Some` or `timeout` passes; the condition, not a fixed sleep, ends the wait.
async fn eventually<T, F, Fut>(timeout: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(value) = probe().await {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Everything the server acknowledged (answered `2xx`) before it was killed.
#[derive(Debug, Default)]
struct Acked {
    /// (owner, item id) → acknowledged versions, each with the `n` its data carried.
    items: BTreeMap<(String, String), BTreeMap<u64, u64>>,
    /// (recipient, message id) → text.
    messages: BTreeMap<(String, String), String>,
}

impl Acked {
    fn count(&self) -> usize {
        self.items.values().map(BTreeMap::len).sum::<usize>() + self.messages.len()
    }
}

/// What the writers share: where to write, and where to record acknowledgements.
#[derive(Debug, Clone)]
struct Writers {
    client: Client,
    base: String,
    acked: Arc<Mutex<Acked>>,
    writes: Arc<AtomicUsize>,
}

/// One writer: PUTs to its own few items (even lanes) or sends messages (odd lanes) until a request
/// fails, which is how it learns of the crash.
async fn writer(shared: Writers, user: String, token: String, lane: usize) {
    let Writers {
        client,
        base,
        acked,
        writes,
    } = shared;
    let mut n: u64 = 0;
    loop {
        n += 1;
        let result = if lane.is_multiple_of(2) {
            let id = format!("w{lane}-{}", n % 4);
            let body = json!({"data": {"n": n, "text": format!("{WORD} {user} {id}")}});
            let sent = client
                .put(format!("{base}/v1/items/notes/{id}"))
                .bearer_auth(&token)
                .json(&body)
                .send()
                .await;
            match sent {
                Ok(response) if response.status().is_success() => match response.json::<Value>().await {
                    Ok(item) => {
                        let version = item["version"].as_u64().expect("a version");
                        assert_eq!(item["data"]["n"], n);
                        let mut acked = acked.lock().expect("the ack lock");
                        acked.items.entry((user.clone(), id)).or_default().insert(version, n);
                        Ok(())
                    }
                    // The connection died while the answer was being read: not acknowledged.
                    Err(_) => Err(()),
                },
                Ok(response) => panic!("a write was refused: {}", response.status()),
                Err(_) => Err(()),
            }
        } else {
            let to = format!("user{}", (lane / 2 + 1) % USERS);
            let text = format!("message {n} from {user} lane {lane}");
            let sent = client
                .post(format!("{base}/v1/messages"))
                .bearer_auth(&token)
                .json(&json!({"to": to, "text": text}))
                .send()
                .await;
            match sent {
                Ok(response) if response.status() == StatusCode::ACCEPTED => match response.json::<Value>().await {
                    Ok(accepted) => {
                        let id = accepted["id"].as_str().expect("a message id").to_owned();
                        acked.lock().expect("the ack lock").messages.insert((to, id), text);
                        Ok(())
                    }
                    Err(_) => Err(()),
                },
                Ok(response) => panic!("a message was refused: {}", response.status()),
                Err(_) => Err(()),
            }
        };
        match result {
            Ok(()) => {
                writes.fetch_add(1, Ordering::Relaxed);
            }
            // The server is gone: this writer is done.
            Err(()) => return,
        }
    }
}

/// Every change in `token`'s feed, following `next_cursor` until `has_more` is false.
async fn sync_all(client: &Client, server: &Server, token: &str) -> Vec<Value> {
    let mut changes = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10_000 {
        let path = match &cursor {
            Some(c) => format!("/v1/sync?limit=100&since={c}"),
            None => "/v1/sync?limit=100".to_owned(),
        };
        let (status, page) = get(client, server, token, &path).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        changes.extend(page["changes"].as_array().expect("changes").iter().cloned());
        cursor = Some(
            page["next_cursor"]
                .as_str()
                .expect("next_cursor is always a string")
                .to_owned(),
        );
        if page["has_more"] == false {
            return changes;
        }
    }
    panic!("the feed never ended");
}

/// Checks everything acknowledged against the server, for every user.
async fn verify(client: &Client, server: &Server, tokens: &BTreeMap<String, String>, acked: &Acked) {
    // Items: present with at least the acknowledged version, and that version holds what was acknowledged.
    for ((owner, id), versions) in &acked.items {
        let token = &tokens[owner];
        let (&acked_version, _) = versions.last_key_value().expect("at least one version");
        let (status, item) = get(client, server, token, &format!("/v1/items/notes/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{owner}/{id} is gone after the crash: {item}");
        let version = item["version"].as_u64().expect("a version");
        assert!(
            version >= acked_version,
            "{owner}/{id} went back from acknowledged version {acked_version} to {version}"
        );
        for (&version, &n) in versions {
            let (status, old) = get(
                client,
                server,
                token,
                &format!("/v1/items/notes/{id}?version={version}"),
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{owner}/{id} lost version {version}: {old}");
            assert_eq!(old["data"]["n"], n, "{owner}/{id} version {version} holds other data");
        }
    }
    // Messages: in the recipient's inbox.
    for (user, token) in tokens {
        let mut inbox = BTreeSet::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/v1/messages?limit=100&since={c}"),
                None => "/v1/messages?limit=100".to_owned(),
            };
            let (status, page) = get(client, server, token, &path).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            for message in page["messages"].as_array().expect("messages") {
                inbox.insert(message["id"].as_str().expect("an id").to_owned());
            }
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        for ((to, id), text) in &acked.messages {
            if to == user {
                assert!(inbox.contains(id), "{user} lost the acknowledged message {text:?}");
            }
        }
    }
    // Feeds: strictly ordered, each change once, no item version missing, every acknowledged change there.
    for (user, token) in tokens {
        let changes = sync_all(client, server, token).await;
        let seqs: Vec<u64> = changes.iter().map(|c| c["seq"].as_u64().expect("a seq")).collect();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "{user}'s feed is not strictly ordered: {seqs:?}"
        );
        let mut item_versions: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        let mut received = BTreeSet::new();
        for change in &changes {
            match change["type"].as_str() {
                Some("message.received") => {
                    let id = change["message"]["id"].as_str().expect("a message id").to_owned();
                    assert!(received.insert(id.clone()), "{user}'s feed repeats message {id}");
                }
                Some(_) => {
                    let id = change["id"].as_str().expect("an item id").to_owned();
                    let version = change["version"].as_u64().expect("a version");
                    item_versions.entry(id).or_default().push(version);
                }
                None => panic!("a change without a type: {change}"),
            }
        }
        for (id, versions) in &item_versions {
            let expected: Vec<u64> = (1..=versions.len() as u64).collect();
            assert_eq!(
                versions, &expected,
                "{user}'s feed has a gap or a repeat in the versions of {id}"
            );
            let (_, item) = get(client, server, token, &format!("/v1/items/notes/{id}")).await;
            assert_eq!(
                item["version"].as_u64(),
                versions.last().copied(),
                "{user}/{id}: the feed and the item disagree"
            );
        }
        for ((owner, id), versions) in &acked.items {
            if owner == user {
                let seen = item_versions.get(id).map(Vec::as_slice).unwrap_or_default();
                for version in versions.keys() {
                    assert!(seen.contains(version), "{user}'s feed lacks {id} version {version}");
                }
            }
        }
        for (to, id) in acked.messages.keys() {
            if to == user {
                assert!(received.contains(id), "{user}'s feed lacks message {id}");
            }
        }
    }
    // Search: the index is in the database, and the indexer catches up with what it had not reached.
    for (user, token) in tokens {
        let expected = acked.items.keys().filter(|(owner, _)| owner == user).count();
        let path = format!("/v1/search?q={WORD}&scope=mine&limit=100");
        let found = eventually(EVENTUALLY, || async {
            let (status, results) = get(client, server, token, &path).await;
            (status == StatusCode::OK && results["found"].as_u64() >= Some(expected as u64)).then_some(results)
        })
        .await;
        assert!(
            found.is_some(),
            "{user}'s {expected} items are not all found after the restart"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill_and_a_torn_log_tail() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let client = client();
    let first = Server::start(dir.path());
    let mut tokens = BTreeMap::new();
    for i in 0..USERS {
        let user = format!("user{i}");
        let token = token(&client, &first, &user).await;
        tokens.insert(user, token);
    }

    // Concurrent writers, two per user (items and messages), until enough writes are acknowledged.
    let shared = Writers {
        client: client.clone(),
        base: format!("http://{}", first.addr),
        acked: Arc::new(Mutex::new(Acked::default())),
        writes: Arc::new(AtomicUsize::new(0)),
    };
    let mut tasks = Vec::new();
    for (i, (user, token)) in tokens.iter().enumerate() {
        for lane in [2 * i, 2 * i + 1] {
            tasks.push(tokio::spawn(writer(shared.clone(), user.clone(), token.clone(), lane)));
        }
    }
    let Writers { acked, writes, .. } = shared;
    let enough = eventually(Duration::from_secs(120), || async {
        (writes.load(Ordering::Relaxed) >= ACKED_BEFORE_CRASH).then_some(())
    })
    .await;
    assert!(enough.is_some(), "the writers did not get going:\n{}", first.output());
    // Killed while every writer still has requests in flight.
    first.crash();
    for task in tasks {
        task.await.expect("a writer ends once the server is gone");
    }
    let acked = Arc::into_inner(acked)
        .expect("the writers are done")
        .into_inner()
        .expect("the ack lock");
    assert!(acked.count() >= ACKED_BEFORE_CRASH, "{}", acked.count());
    assert!(!acked.messages.is_empty() && !acked.items.is_empty());

    // Restart on the same directory: everything acknowledged is there, old tokens work.
    let second = Server::start(dir.path());
    verify(&client, &second, &tokens, &acked).await;
    second.crash();

    // A torn tail: a crash in the middle of a commit leaves a partial frame at the end of the write-ahead log.
    let wal = dir.path().join("rookery.sqlite3-wal");
    assert!(
        wal.exists(),
        "a killed server leaves its write-ahead log at {}",
        wal.display()
    );
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&wal)
        .expect("the write-ahead log opens");
    let mut frame = vec![0u8; 24];
    frame[..4].copy_from_slice(&7u32.to_be_bytes());
    frame[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
    frame.extend_from_slice(&[0xab; 1500]);
    file.write_all(&frame).expect("garbage is appended");
    drop(file);
    let third = Server::start(dir.path());
    verify(&client, &third, &tokens, &acked).await;

    // Writes after the cut survive another crash: the torn tail did not hide what came after it.
    let token = &tokens["user0"];
    let response = client
        .put(third.url("/v1/items/notes/after-tear"))
        .bearer_auth(token)
        .json(&json!({"data": {"n": 1, "text": WORD}}))
        .send()
        .await
        .expect("a write after the restart");
    assert_eq!(response.status(), StatusCode::CREATED);
    third.crash();
    let fourth = Server::start(dir.path());
    let (status, item) = get(&client, &fourth, token, "/v1/items/notes/after-tear").await;
    assert_eq!(status, StatusCode::OK, "the write after the torn tail was lost: {item}");
    assert_eq!(item["version"], 1);
    verify(&client, &fourth, &tokens, &acked).await;
    assert!(fourth.output().contains("rookery listening on"), "{}", fourth.output());
}
