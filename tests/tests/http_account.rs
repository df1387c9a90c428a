//! `GET /v1/me/export` over a real server: the caller's whole stream and media as NDJSON, in order,
//! with the header and end lines, no push token and nothing of another user; and `DELETE /v1/me`: the
//! account erased (in memory and in a data directory, where no byte of it stays on disk), every later
//! request of the user answered `410 account_erased`, and everyone else untouched.

// Helpers outside `#[test]` functions fail their test by panicking, like the tests themselves.
#![allow(clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use reqwest::Method;
use reqwest::header::CONTENT_TYPE;
use rookery_entrypoints::http::RateLimit;
use rookery_entrypoints::local::LocalConfig;
use rookery_tests::http::{Answer, TestApp, TestUser, eventually, spawn_app, spawn_app_with};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_holds_every_event_then_every_media_object_and_counts_them() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    alice
        .put("/v1/items/notes/n1", &json!({"data": {"text": "mine"}}))
        .await
        .expect_status(201);
    alice
        .patch("/v1/items/notes/n1", &json!({"data": {"more": true}}))
        .await
        .expect_status(200);
    bob.put("/v1/items/notes/n1", &json!({"data": {"text": "bob's own secret"}}))
        .await
        .expect_status(201);
    bob.post("/v1/messages", &json!({"to": "alice", "text": "hi alice"}))
        .await
        .expect_status(202);
    alice
        .put(
            "/v1/devices/phone",
            &json!({"platform": "fcm", "token": "alice-device-token"}),
        )
        .await
        .expect_status(200);
    let media = alice
        .post("/v1/media", &json!({"content_type": "image/png", "size": 10}))
        .await
        .expect_status(201);

    let export = alice.get("/v1/me/export").await.expect_status(200);
    assert_eq!(export.content_type(), Some("application/x-ndjson"));
    let lines: Vec<Value> = export
        .text
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    let kinds: Vec<&str> = lines.iter().filter_map(|l| l["type"].as_str()).collect();
    assert_eq!(
        kinds,
        [
            "export",
            "item.created",
            "item.patched",
            "message.received",
            "device.changed",
            "media.declared",
            "media",
            "end"
        ]
    );
    assert_eq!(lines[0]["user_id"], "alice");
    assert_eq!(lines[0]["format"], 1);
    let seqs: Vec<u64> = lines[1..6].iter().filter_map(|l| l["seq"].as_u64()).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5], "every event, oldest first, in the feed's shape");
    assert_eq!(lines[6]["id"], media.body["id"]);
    assert_eq!(lines[6]["status"], "pending");
    assert_eq!(lines[6]["download"], Value::Null);
    assert_eq!(lines[7], json!({"type": "end", "events": 5}));
    assert!(!export.text.contains("alice-device-token"), "no push token");
    assert!(!export.text.contains("bob's own secret"), "nothing of another user");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_needs_a_token() {
    let app = spawn_app().await;
    let answer = rookery_tests::http::Answer::read(
        app.anonymous(reqwest::Method::GET, "/v1/me/export")
            .send()
            .await
            .expect("an answer"),
    )
    .await;
    answer.expect_problem(401, "unauthorized");
    app.shutdown().await;
}

/// A word only Alice's items hold, to look for in the index and on disk.
const ALICE_WORD: &str = "zanzibarquokka";
/// A word only Bob's item holds: the control that the scan can find text at all.
const BOB_WORD: &str = "bobolinkmarmoset";
/// The text of the message Alice sends Bob, which stays in Bob's stream.
const SENT_TEXT: &str = "wombatcarousel from alice";
/// The bytes Alice uploads.
const ALICE_BYTES: &[u8] = b"alicepixelsnarwhal";

/// Alice writes a public and a private item, registers a device, uploads media, sends Bob a message and
/// receives one; Bob writes an item of his own. Waits until Alice's public item is searchable.
async fn alice_and_bob_write(app: &TestApp, alice: &TestUser<'_>, bob: &TestUser<'_>) {
    alice
        .put(
            "/v1/items/notes/pub",
            &json!({"data": {"text": format!("{ALICE_WORD} public")}, "visibility": "public"}),
        )
        .await
        .expect_status(201);
    alice
        .put(
            "/v1/items/notes/priv",
            &json!({"data": {"text": format!("{ALICE_WORD} private")}}),
        )
        .await
        .expect_status(201);
    alice
        .put(
            "/v1/devices/phone",
            &json!({"platform": "fcm", "token": "alice-device-token"}),
        )
        .await
        .expect_status(200);
    let media = alice
        .post(
            "/v1/media",
            &json!({"content_type": "image/png", "size": ALICE_BYTES.len()}),
        )
        .await
        .expect_status(201);
    let url = media.body["upload"]["url"].as_str().expect("an upload URL");
    let uploaded = app
        .client()
        .put(url)
        .header(CONTENT_TYPE, "image/png")
        .body(ALICE_BYTES.to_vec())
        .send()
        .await
        .expect("sent");
    assert!(uploaded.status().is_success(), "the upload is stored");
    alice
        .post("/v1/messages", &json!({"to": "bob", "text": SENT_TEXT}))
        .await
        .expect_status(202);
    bob.post("/v1/messages", &json!({"to": "alice", "text": "hello alice"}))
        .await
        .expect_status(202);
    bob.put(
        "/v1/items/notes/mine",
        &json!({"data": {"text": BOB_WORD}, "visibility": "public"}),
    )
    .await
    .expect_status(201);
    eventually(Duration::from_secs(10), || async {
        let alice_public = bob.get(&format!("/v1/search?q={ALICE_WORD}&scope=public")).await;
        let bob_public = bob.get(&format!("/v1/search?q={BOB_WORD}&scope=public")).await;
        (alice_public.body["found"] == 1 && bob_public.body["found"] == 1).then_some(())
    })
    .await
    .expect("both public items become searchable");
}

/// Alice's token answers `410 account_erased` on every route, and her id gets no new token.
async fn every_route_is_gone_for(app: &TestApp, alice: &TestUser<'_>) {
    let routes: [(Method, &str, Option<Value>); 16] = [
        (Method::GET, "/v1/items/notes/pub", None),
        (Method::PUT, "/v1/items/notes/new", Some(json!({"data": {}}))),
        (Method::PATCH, "/v1/items/notes/pub", Some(json!({"data": {}}))),
        (Method::DELETE, "/v1/items/notes/pub", None),
        (Method::GET, "/v1/items/notes", None),
        (Method::GET, "/v1/items/notes/pub/history", None),
        (Method::GET, "/v1/users/bob/items/notes/mine", None),
        (Method::GET, "/v1/sync", None),
        (Method::GET, "/v1/search?q=anything", None),
        (
            Method::POST,
            "/v1/messages",
            Some(json!({"to": "bob", "text": "again"})),
        ),
        (Method::GET, "/v1/messages", None),
        (Method::GET, "/v1/devices", None),
        (
            Method::POST,
            "/v1/media",
            Some(json!({"content_type": "image/png", "size": 3})),
        ),
        (Method::GET, "/v1/me/export", None),
        (Method::DELETE, "/v1/me", None),
        (Method::GET, "/v1/dev/pushes", None),
    ];
    for (method, path, body) in routes {
        let mut request = alice.request(method.clone(), path);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer = alice.send(request).await;
        assert_eq!(
            answer.status.as_u16(),
            410,
            "{method} {path} answered {}",
            answer.status
        );
        answer.expect_problem(410, "account_erased");
    }
    // The WebSocket handshake goes through the same gate, with the token in the query.
    let handshake = app
        .anonymous(Method::GET, &format!("/v1/realtime?access_token={}", alice.token()))
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .expect("sent");
    Answer::read(handshake).await.expect_problem(410, "account_erased");
    let token = app
        .anonymous(Method::POST, "/v1/dev/tokens")
        .json(&json!({"user_id": "alice"}))
        .send()
        .await
        .expect("sent");
    Answer::read(token).await.expect_problem(410, "account_erased");
}

/// Bob keeps everything of his, and the message Alice sent him; nothing of Alice's is found.
async fn bob_is_untouched(bob: &TestUser<'_>) {
    let mine = bob.get("/v1/items/notes/mine").await.expect_status(200);
    assert_eq!(mine.body["data"]["text"], BOB_WORD);
    let messages = bob.get("/v1/messages").await.expect_status(200);
    let texts: Vec<&str> = messages.body["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|m| m["text"].as_str())
        .collect();
    assert_eq!(texts, [SENT_TEXT], "the message Alice sent stays with Bob");
    let found = bob.get(&format!("/v1/search?q={ALICE_WORD}")).await.expect_status(200);
    assert_eq!(found.body["found"], 0, "none of Alice's documents is found");
    let found = bob.get(&format!("/v1/search?q={BOB_WORD}")).await.expect_status(200);
    assert_eq!(found.body["found"], 1, "Bob's document is");
    bob.get("/v1/users/alice/items/notes/pub")
        .await
        .expect_problem(404, "not_found");
    bob.post("/v1/messages", &json!({"to": "alice", "text": "are you there"}))
        .await
        .expect_problem(404, "not_found");
}

/// Alice exports, erases her account, and is gone; Bob is untouched.
async fn export_then_erase(app: &TestApp) {
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let export = alice.get("/v1/me/export").await.expect_status(200);
    assert!(export.text.contains(ALICE_WORD), "the export holds Alice's items");
    assert!(export.text.ends_with("\n") && export.text.contains("\"type\":\"end\""));

    let erased = alice.delete("/v1/me").await.expect_status(202);
    assert_eq!(erased.body, json!({"status": "erasing"}));

    every_route_is_gone_for(app, &alice).await;
    bob_is_untouched(&bob).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erased_account_is_gone_from_every_route_and_others_keep_theirs() {
    let app = spawn_app().await;
    {
        let alice = app.user("alice").await;
        let bob = app.user("bob").await;
        alice_and_bob_write(&app, &alice, &bob).await;
    }
    export_then_erase(&app).await;
    app.shutdown().await;
}

/// Every file under `dir` that holds `needle`, byte for byte.
fn files_holding(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(path) = pending.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).expect("a readable directory") {
                pending.push(entry.expect("an entry").path());
            }
        } else if let Ok(bytes) = std::fs::read(&path)
            && bytes.windows(needle.len()).any(|w| w == needle)
        {
            found.push(path.display().to_string());
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erased_account_leaves_no_byte_in_the_data_directory() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let app = spawn_app_with(LocalConfig {
        addr: "127.0.0.1:0".parse().expect("loopback address"),
        data_dir: Some(dir.path().to_owned()),
        rate_limit: RateLimit::off(),
        ..LocalConfig::default()
    })
    .await;
    {
        let alice = app.user("alice").await;
        let bob = app.user("bob").await;
        alice_and_bob_write(&app, &alice, &bob).await;
    }
    assert!(
        !files_holding(dir.path(), ALICE_WORD.as_bytes()).is_empty(),
        "Alice's text is on disk before the erasure (the scan can see it)"
    );
    assert!(
        !files_holding(dir.path(), ALICE_BYTES).is_empty(),
        "and her media bytes"
    );

    export_then_erase(&app).await;

    // While the server runs: the database, its WAL and shared memory, the media and the endpoints.
    assert_eq!(files_holding(dir.path(), ALICE_WORD.as_bytes()), Vec::<String>::new());
    assert_eq!(files_holding(dir.path(), ALICE_BYTES), Vec::<String>::new());
    assert_eq!(files_holding(dir.path(), b"alice-device-token"), Vec::<String>::new());
    assert!(
        !files_holding(dir.path(), BOB_WORD.as_bytes()).is_empty(),
        "Bob's text is still there"
    );
    assert!(
        !files_holding(dir.path(), SENT_TEXT.as_bytes()).is_empty(),
        "and the message Alice sent him"
    );
    app.shutdown().await;
    assert_eq!(files_holding(dir.path(), ALICE_WORD.as_bytes()), Vec::<String>::new());
}
