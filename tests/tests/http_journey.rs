//! A two-user journey over every route of `API.md`, against a real server on a loopback port.

// Helpers outside `#[test]` functions fail their test by panicking, like the tests themselves.
#![allow(clippy::expect_used)]

use std::collections::BTreeSet;

use reqwest::Method;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE};
use rookery_entrypoints::LocalConfig;
use rookery_entrypoints::http::RateLimit;
use rookery_tests::http::{Answer, EVENTUALLY, TestUser, eventually, spawn_app, spawn_app_with};
use serde_json::{Value, json};

fn versions(events: &Value) -> Vec<u64> {
    events
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["version"].as_u64()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_journey_covers_versions_conflicts_history_time_travel_restore_and_delete() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let path = "/v1/items/notes/n1";

    // Create: 201, ETag, Location, the full representation.
    let created = alice
        .put(
            path,
            &json!({"data": {"headline": "Trip", "text": "Packing list", "tags": ["travel"]}}),
        )
        .await
        .expect_status(201);
    assert_eq!(created.header("etag"), Some("\"1\""));
    assert_eq!(created.header("location"), Some(path));
    assert_eq!(created.body["owner"], "alice");
    assert_eq!(created.body["collection"], "notes");
    assert_eq!(created.body["id"], "n1");
    assert_eq!(created.body["version"], 1);
    assert_eq!(created.body["visibility"], "private");
    assert_eq!(created.body["data"]["tags"], json!(["travel"]));
    let created_at = created.body["created_at"].as_str().expect("created_at").to_owned();
    assert_eq!(created_at.len(), "2026-11-25T10:00:00.123Z".len(), "{created_at}");
    assert!(created_at.ends_with('Z'));

    // Read with ETag, and a conditional GET.
    let read = alice.get(path).await.expect_status(200);
    assert_eq!(read.header("etag"), Some("\"1\""));
    assert_eq!(read.body, created.body);
    let not_modified = alice
        .send(alice.request(Method::GET, path).header("if-none-match", "\"1\""))
        .await;
    assert_eq!(not_modified.status.as_u16(), 304);

    // Replace under If-Match: 200, version 2, visibility kept.
    let replaced = alice
        .send(
            alice
                .request(Method::PUT, path)
                .header("if-match", "\"1\"")
                .json(&json!({"data": {"headline": "Trip", "text": "Packing list, final"}})),
        )
        .await
        .expect_status(200);
    assert_eq!(replaced.header("etag"), Some("\"2\""));
    assert_eq!(replaced.body["version"], 2);
    assert_eq!(replaced.body["visibility"], "private");
    assert_eq!(replaced.body["created_at"], created_at.as_str());

    // A stale If-Match is a conflict carrying the current version and the missed events.
    let conflict = alice
        .send(
            alice
                .request(Method::PUT, path)
                .header("if-match", "\"1\"")
                .json(&json!({"data": {"headline": "Lost"}})),
        )
        .await
        .expect_problem(409, "version_conflict");
    assert_eq!(conflict.body["current_version"], 2);
    assert_eq!(versions(&conflict.body["events"]), vec![2]);
    assert_eq!(conflict.body["events"][0]["type"], "item.replaced");
    assert_eq!(
        conflict.body["events"][0]["item"]["data"]["text"],
        "Packing list, final"
    );
    // If-None-Match: * on an existing item is a conflict too; on a fresh id it creates.
    let absent_only = alice.send(
        alice
            .request(Method::PUT, path)
            .header("if-none-match", "*")
            .json(&json!({"data": {}})),
    );
    absent_only.await.expect_problem(409, "version_conflict");

    // Merge patch: change one field and make it public.
    let patched = alice
        .patch(
            path,
            &json!({"data": {"text": "Packing list v3", "tags": null}, "visibility": "public"}),
        )
        .await
        .expect_status(200);
    assert_eq!(patched.header("etag"), Some("\"3\""));
    assert_eq!(patched.body["visibility"], "public");
    assert_eq!(
        patched.body["data"],
        json!({"headline": "Trip", "text": "Packing list v3"})
    );

    // Bob may read it while public, through the owner route; his own route does not see it.
    let public = bob.get("/v1/users/alice/items/notes/n1").await.expect_status(200);
    assert_eq!(public.body["version"], 3);
    assert_eq!(public.header("etag"), Some("\"3\""));
    bob.get(path).await.expect_problem(404, "not_found");

    // Time travel.
    let v1 = alice.get(&format!("{path}?version=1")).await.expect_status(200);
    assert_eq!(v1.body["version"], 1);
    assert_eq!(v1.body["data"]["text"], "Packing list");
    alice
        .get(&format!("{path}?version=9"))
        .await
        .expect_problem(404, "not_found");
    alice
        .get(&format!("{path}?version=abc"))
        .await
        .expect_problem(400, "invalid_request");

    // Restore version 1: a new version with v1's state (private again).
    let restored = alice
        .post(&format!("{path}/restore"), &json!({"version": 1}))
        .await
        .expect_status(200);
    assert_eq!(restored.body["version"], 4);
    assert_eq!(restored.body["visibility"], "private");
    assert_eq!(restored.body["data"]["tags"], json!(["travel"]));
    assert_eq!(restored.header("etag"), Some("\"4\""));
    // Private again: to Bob it does not exist (never 403).
    bob.get("/v1/users/alice/items/notes/n1")
        .await
        .expect_problem(404, "not_found");
    // The owner can use the owner route for private items.
    alice.get("/v1/users/alice/items/notes/n1").await.expect_status(200);

    // Delete, then it is gone but its history stays.
    let deleted = alice.delete(path).await.expect_status(204);
    assert!(deleted.text.is_empty());
    alice.get(path).await.expect_problem(404, "not_found");
    alice.delete(path).await.expect_problem(404, "not_found");
    alice
        .patch(path, &json!({"data": {"x": 1}}))
        .await
        .expect_problem(404, "not_found");
    let history = alice.get(&format!("{path}/history")).await.expect_status(200);
    let types: Vec<&str> = history.body["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert_eq!(
        types,
        [
            "item.created",
            "item.replaced",
            "item.patched",
            "item.restored",
            "item.deleted"
        ]
    );
    assert_eq!(versions(&history.body["events"]), vec![1, 2, 3, 4, 5]);
    assert_eq!(history.body["events"][4]["item"], Value::Null);
    assert_eq!(history.body["next_cursor"], Value::Null);
    let seqs: Vec<u64> = history.body["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["seq"].as_u64())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");

    // History pages.
    let first = alice.get(&format!("{path}/history?limit=2")).await.expect_status(200);
    assert_eq!(versions(&first.body["events"]), vec![1, 2]);
    let cursor = first.body["next_cursor"].as_str().expect("a next page").to_owned();
    let second = alice
        .get(&format!("{path}/history?limit=2&cursor={cursor}"))
        .await
        .expect_status(200);
    assert_eq!(versions(&second.body["events"]), vec![3, 4]);
    alice
        .get("/v1/items/notes/never/history")
        .await
        .expect_problem(404, "not_found");

    // Delete is a change: writing again recreates the item at the next version.
    let again = alice
        .put(path, &json!({"data": {"headline": "Again"}}))
        .await
        .expect_status(201);
    assert_eq!(again.body["version"], 6);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_pages_through_live_items_by_id_and_idempotent_writes_replay() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    for id in ["c", "a", "e", "b", "d"] {
        alice
            .put(&format!("/v1/items/todo/{id}"), &json!({"data": {"title": id}}))
            .await
            .expect_status(201);
    }
    alice.delete("/v1/items/todo/d").await.expect_status(204);
    bob.put("/v1/items/todo/z", &json!({"data": {"title": "bob's"}}))
        .await
        .expect_status(201);

    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/items/todo?limit=2&cursor={c}"),
            None => "/v1/items/todo?limit=2".to_owned(),
        };
        let page = alice.get(&path).await.expect_status(200);
        pages += 1;
        ids.extend(
            page.body["items"]
                .as_array()
                .expect("items")
                .iter()
                .filter_map(|i| i["id"].as_str().map(str::to_owned)),
        );
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
        assert!(pages < 10, "pagination does not end");
    }
    assert_eq!(ids, ["a", "b", "c", "e"]);
    assert_eq!(pages, 2);
    let empty = alice.get("/v1/items/empty").await.expect_status(200);
    assert_eq!(empty.body, json!({"items": [], "next_cursor": null}));
    alice
        .get("/v1/items/todo?limit=101")
        .await
        .expect_problem(400, "invalid_request");
    alice
        .get("/v1/items/todo?limit=-1")
        .await
        .expect_problem(400, "invalid_request");
    alice.get("/v1/items/Todo").await.expect_problem(400, "invalid_request");

    // The same key and request replays the first answer; the same key with another body is refused.
    let put = |body: Value| {
        alice
            .request(Method::PUT, "/v1/items/todo/k")
            .header("idempotency-key", "key-1")
            .json(&body)
    };
    let first = alice.send(put(json!({"data": {"n": 1}}))).await.expect_status(201);
    let repeat = alice.send(put(json!({"data": {"n": 1}}))).await.expect_status(201);
    assert_eq!(first.body, repeat.body);
    assert_eq!(alice.get("/v1/items/todo/k").await.body["version"], 1);
    alice
        .send(put(json!({"data": {"n": 2}})))
        .await
        .expect_problem(422, "idempotency_key_reused");
    // Keys are per user: Bob's identical key is his own.
    let bobs = bob.send(
        bob.request(Method::PUT, "/v1/items/todo/k")
            .header("idempotency-key", "key-1")
            .json(&json!({"data": {"n": 1}})),
    );
    assert_eq!(bobs.await.expect_status(201).body["owner"], "bob");
    app.shutdown().await;
}

/// `GET /v1/search?q=<query>` as `user`.
async fn search(user: &TestUser<'_>, query: &str) -> Answer {
    user.send(user.request(Method::GET, "/v1/search").query(&[("q", query)]))
        .await
}

/// Follows `/v1/sync` from the start until `has_more` is false, returning every change.
async fn sync_all(user: &TestUser<'_>, limit: u32) -> (Vec<Value>, String) {
    let mut changes = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/sync?limit={limit}&since={c}"),
            None => format!("/v1/sync?limit={limit}"),
        };
        let page = user.get(&path).await.expect_status(200);
        changes.extend(page.body["changes"].as_array().expect("changes").iter().cloned());
        let next = page.body["next_cursor"]
            .as_str()
            .expect("next_cursor is always a string")
            .to_owned();
        cursor = Some(next);
        if page.body["has_more"] == false {
            break;
        }
    }
    (changes, cursor.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_yields_every_change_once_in_order_and_search_finds_changes_soon() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    for i in 0..7 {
        alice
            .put(
                &format!("/v1/items/notes/s{i}"),
                &json!({"data": {"text": format!("note {i}")}}),
            )
            .await
            .expect_status(201);
    }
    alice
        .patch("/v1/items/notes/s3", &json!({"data": {"extra": true}}))
        .await
        .expect_status(200);
    alice.delete("/v1/items/notes/s5").await.expect_status(204);
    bob.post("/v1/messages", &json!({"to": "alice", "text": "hi alice"}))
        .await
        .expect_status(202);

    let (changes, cursor) = sync_all(&alice, 3).await;
    let seqs: Vec<u64> = changes.iter().filter_map(|c| c["seq"].as_u64()).collect();
    assert_eq!(seqs, (1..=10).collect::<Vec<_>>(), "gap-free and ordered");
    assert_eq!(changes[7]["type"], "item.patched");
    assert_eq!(changes[8]["type"], "item.deleted");
    assert_eq!(changes[8]["item"], Value::Null);
    assert_eq!(changes[9]["type"], "message.received");
    assert_eq!(changes[9]["message"]["from"], "bob");
    // An empty page keeps the cursor, so a device can store it and poll.
    let empty = alice.get(&format!("/v1/sync?since={cursor}")).await.expect_status(200);
    assert_eq!(empty.body["changes"], json!([]));
    assert_eq!(empty.body["next_cursor"], cursor.as_str());
    assert_eq!(empty.body["has_more"], false);
    // New changes appear after the stored cursor, exactly once.
    alice
        .put("/v1/items/notes/s9", &json!({"data": {}}))
        .await
        .expect_status(201);
    let later = alice.get(&format!("/v1/sync?since={cursor}")).await.expect_status(200);
    assert_eq!(later.body["changes"].as_array().map(Vec::len), Some(1));
    assert_eq!(later.body["changes"][0]["seq"], 11);
    alice
        .get("/v1/sync?since=garbage")
        .await
        .expect_problem(400, "invalid_request");

    // Search: public and private items, found within the freshness window, scoped correctly.
    alice
        .put("/v1/items/trips/t1", &json!({"data": {"headline": "Zanzibar trip", "notes": {"deep": ["snorkel gear"]}}, "visibility": "public"}))
        .await
        .expect_status(201);
    alice
        .put("/v1/items/trips/t2", &json!({"data": {"headline": "Zanzibar secret"}}))
        .await
        .expect_status(201);
    let found = eventually(EVENTUALLY, || async {
        let answer = search(&alice, "zanzibar").await.expect_status(200);
        (answer.body["found"] == 2).then_some(answer)
    })
    .await
    .expect("both trips become searchable");
    assert_eq!(found.body["hits"].as_array().map(Vec::len), Some(2));
    let hit = &found.body["hits"][0];
    for member in ["owner", "collection", "id", "version", "score", "item"] {
        assert!(hit.get(member).is_some(), "hit lacks {member}: {hit}");
    }
    // Nested strings are searchable, words are case-insensitive, and all words must match.
    let nested = search(&alice, "SNORKEL Zanzibar").await.expect_status(200);
    assert_eq!(nested.body["found"], 1);
    assert_eq!(nested.body["hits"][0]["id"], "t1");
    // Bob sees only the public one, whatever the scope; his own scope holds nothing of Alice's.
    let for_bob = search(&bob, "zanzibar").await.expect_status(200);
    assert_eq!(for_bob.body["found"], 1);
    assert_eq!(for_bob.body["hits"][0]["item"]["visibility"], "public");
    let mine = bob
        .send(
            bob.request(Method::GET, "/v1/search")
                .query(&[("q", "zanzibar"), ("scope", "mine")]),
        )
        .await;
    assert_eq!(mine.expect_status(200).body["found"], 0);
    // Query syntax is just text.
    let syntax = search(&alice, "(and title:'x') \"zanzibar\"").await.expect_status(200);
    assert_eq!(syntax.body["found"], 0);
    // A deleted item leaves the index.
    alice.delete("/v1/items/trips/t2").await.expect_status(204);
    eventually(EVENTUALLY, || async {
        (search(&alice, "secret").await.body["found"] == 0).then_some(())
    })
    .await
    .expect("the deleted item leaves the index");
    search(&alice, "").await.expect_problem(400, "invalid_request");
    bob.send(
        bob.request(Method::GET, "/v1/search")
            .query(&[("q", "x"), ("scope", "everyone")]),
    )
    .await
    .expect_problem(400, "invalid_request");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_reach_the_inbox_the_feed_and_registered_devices() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;

    let device = bob
        .put(
            "/v1/devices/phone-1",
            &json!({"platform": "apns", "token": "bob-token-1"}),
        )
        .await
        .expect_status(200);
    assert_eq!(
        device.body,
        json!({"device_id": "phone-1", "platform": "apns", "enabled": true})
    );
    bob.put(
        "/v1/devices/tablet",
        &json!({"platform": "fcm", "token": "bob-token-2"}),
    )
    .await
    .expect_status(200);
    // Registering the same token again is idempotent.
    bob.put(
        "/v1/devices/phone-1",
        &json!({"platform": "apns", "token": "bob-token-1"}),
    )
    .await
    .expect_status(200);
    let devices = bob.get("/v1/devices").await.expect_status(200);
    assert_eq!(devices.body["devices"].as_array().map(Vec::len), Some(2));
    bob.put("/v1/devices/phone-2", &json!({"platform": "pager", "token": "x"}))
        .await
        .expect_problem(400, "invalid_request");

    let accepted = alice
        .post(
            "/v1/messages",
            &json!({"to": "bob", "text": "Dinner at 8?", "data": {"thread": "t-1"}}),
        )
        .await
        .expect_status(202);
    assert_eq!(accepted.body["status"], "accepted");
    let message_id = accepted.body["id"].as_str().expect("a message id").to_owned();

    let inbox = bob.get("/v1/messages").await.expect_status(200);
    let message = &inbox.body["messages"][0];
    assert_eq!(message["id"], message_id.as_str());
    assert_eq!(message["from"], "alice");
    assert_eq!(message["to"], "bob");
    assert_eq!(message["text"], "Dinner at 8?");
    assert_eq!(message["data"], json!({"thread": "t-1"}));
    assert!(message["sent_at"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert_eq!(inbox.body["next_cursor"], Value::Null);
    assert_eq!(alice.get("/v1/messages").await.body["messages"], json!([]));

    // One push per device, formatted per platform, delivered asynchronously.
    let pushes = eventually(EVENTUALLY, || async {
        let answer = bob.get("/v1/dev/pushes").await.expect_status(200);
        let pushes = answer.body["pushes"].as_array().cloned().unwrap_or_default();
        let ours: Vec<Value> = pushes
            .into_iter()
            .filter(|p| p["message_id"] == message_id.as_str())
            .collect();
        (ours.len() == 2).then_some(ours)
    })
    .await
    .expect("both of Bob's devices get the push");
    let devices: BTreeSet<&str> = pushes.iter().filter_map(|p| p["device_id"].as_str()).collect();
    assert_eq!(devices, BTreeSet::from(["phone-1", "tablet"]));
    for push in &pushes {
        assert!(push["at"].as_str().is_some());
        match push["platform"].as_str() {
            Some("apns") => assert_eq!(push["payload"]["aps"]["alert"]["body"], "Dinner at 8?"),
            Some("fcm") => assert_eq!(push["payload"]["notification"]["body"], "Dinner at 8?"),
            other => panic!("unexpected platform {other:?}"),
        }
    }
    assert_eq!(
        alice.get("/v1/dev/pushes").await.expect_status(200).body["pushes"],
        json!([])
    );

    bob.delete("/v1/devices/tablet").await.expect_status(204);
    bob.delete("/v1/devices/tablet").await.expect_problem(404, "not_found");
    let left = bob.get("/v1/devices").await.expect_status(200);
    assert_eq!(left.body["devices"].as_array().map(Vec::len), Some(1));
    alice
        .post("/v1/messages", &json!({"to": "bob", "text": "x".repeat(4001)}))
        .await
        .expect_problem(400, "invalid_request");
    alice
        .post("/v1/messages", &json!({"to": "not a user", "text": "x"}))
        .await
        .expect_problem(400, "invalid_request");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_is_declared_uploaded_through_the_signed_url_and_downloaded() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let bytes: &[u8] = b"\x89PNG\r\n\x1a\nfake image";

    let declared = alice
        .post("/v1/media", &json!({"content_type": "image/png", "size": bytes.len()}))
        .await
        .expect_status(201);
    assert_eq!(declared.body["status"], "pending");
    let id = declared.body["id"].as_str().expect("a media id").to_owned();
    let upload = &declared.body["upload"];
    assert_eq!(upload["method"], "PUT");
    assert_eq!(upload["headers"]["Content-Type"], "image/png");
    assert_eq!(upload["headers"]["Content-Length"], bytes.len().to_string());
    let url = upload["url"].as_str().expect("an upload URL").to_owned();
    assert!(url.starts_with(app.base()), "{url}");

    let pending = alice.get(&format!("/v1/media/{id}")).await.expect_status(200);
    assert_eq!(pending.body["status"], "pending");
    assert_eq!(pending.body["download"], Value::Null);
    bob.get(&format!("/v1/media/{id}"))
        .await
        .expect_problem(404, "not_found");

    // The signed URL refuses another type, and a tampered signature.
    let client = app.client();
    let wrong_type = client
        .put(&url)
        .header(CONTENT_TYPE, "image/gif")
        .body(bytes.to_vec())
        .send()
        .await
        .expect("sent");
    Answer::read(wrong_type).await.expect_problem(400, "invalid_request");
    let tampered = client
        .put(format!("{url}0"))
        .header(CONTENT_TYPE, "image/png")
        .body(bytes.to_vec())
        .send()
        .await
        .expect("sent");
    Answer::read(tampered).await.expect_problem(403, "forbidden");

    let uploaded = client
        .put(&url)
        .header(CONTENT_TYPE, "image/png")
        .header(CONTENT_LENGTH, bytes.len())
        .body(bytes.to_vec())
        .send()
        .await
        .expect("sent");
    Answer::read(uploaded).await.expect_status(200);
    let twice = client
        .put(&url)
        .header(CONTENT_TYPE, "image/png")
        .body(bytes.to_vec())
        .send()
        .await
        .expect("sent");
    assert_eq!(Answer::read(twice).await.status.as_u16(), 409);

    let ready = alice.get(&format!("/v1/media/{id}")).await.expect_status(200);
    assert_eq!(ready.body["status"], "uploaded");
    assert_eq!(ready.body["content_type"], "image/png");
    assert_eq!(ready.body["size"], bytes.len());
    let download = ready.body["download"]["url"]
        .as_str()
        .expect("a download URL")
        .to_owned();
    assert!(ready.body["download"]["expires_at"].as_str().is_some());
    let fetched = client.get(&download).send().await.expect("sent");
    assert_eq!(fetched.status().as_u16(), 200);
    assert_eq!(fetched.headers()[CONTENT_TYPE], "image/png");
    assert_eq!(fetched.bytes().await.expect("bytes").as_ref(), bytes);
    let forged = client
        .get(download.replace("sig=", "sig=00"))
        .send()
        .await
        .expect("sent");
    Answer::read(forged).await.expect_problem(403, "forbidden");

    alice
        .post("/v1/media", &json!({"content_type": "text/html", "size": 10}))
        .await
        .expect_problem(400, "invalid_request");
    alice
        .post(
            "/v1/media",
            &json!({"content_type": "video/mp4", "size": 200u64 * 1024 * 1024}),
        )
        .await
        .expect_problem(413, "payload_too_large");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_authenticates_tags_requests_and_answers_problems() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;

    let health = Answer::read(app.anonymous(Method::GET, "/healthz").send().await.expect("sent"))
        .await
        .expect_status(200);
    assert_eq!(health.body, json!({"status": "ok"}));
    assert!(health.header("x-request-id").is_some_and(|id| !id.is_empty()));
    let openapi = Answer::read(app.anonymous(Method::GET, "/openapi.json").send().await.expect("sent"))
        .await
        .expect_status(200);
    assert!(openapi.body["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")));
    let jwks = Answer::read(
        app.anonymous(Method::GET, "/.well-known/jwks.json")
            .send()
            .await
            .expect("sent"),
    )
    .await
    .expect_status(200);
    assert_eq!(jwks.body["keys"][0]["kty"], "RSA");

    // No token, a bad token: 401 with the right challenge.
    let missing = Answer::read(
        app.anonymous(Method::GET, "/v1/items/notes")
            .send()
            .await
            .expect("sent"),
    )
    .await;
    let missing = missing.expect_problem(401, "unauthorized");
    assert_eq!(missing.header("www-authenticate"), Some("Bearer"));
    let bad = app
        .anonymous(Method::GET, "/v1/items/notes")
        .bearer_auth("not.a.jwt")
        .send()
        .await
        .expect("sent");
    let bad = Answer::read(bad).await.expect_problem(401, "unauthorized");
    assert_eq!(bad.header("www-authenticate"), Some("Bearer error=\"invalid_token\""));
    Answer::read(app.anonymous(Method::GET, "/v1/dev/pushes").send().await.expect("sent"))
        .await
        .expect_problem(401, "unauthorized");

    // Request ids are echoed when sane, replaced otherwise.
    let echoed = alice
        .send(
            alice
                .request(Method::GET, "/v1/devices")
                .header("x-request-id", "client-id-42"),
        )
        .await;
    assert_eq!(echoed.header("x-request-id"), Some("client-id-42"));
    let replaced = alice
        .send(
            alice
                .request(Method::GET, "/v1/devices")
                .header("x-request-id", "x".repeat(200)),
        )
        .await;
    assert!(
        replaced
            .header("x-request-id")
            .is_some_and(|id| id.len() <= 128 && !id.is_empty())
    );

    // Framework answers are problem documents too.
    Answer::read(app.anonymous(Method::GET, "/nowhere").send().await.expect("sent"))
        .await
        .expect_problem(404, "not_found");
    let wrong_method = Answer::read(app.anonymous(Method::DELETE, "/healthz").send().await.expect("sent")).await;
    assert_eq!(wrong_method.status.as_u16(), 405);
    assert_eq!(wrong_method.content_type(), Some("application/problem+json"));
    let not_json = alice
        .send(
            alice
                .request(Method::PUT, "/v1/items/notes/x")
                .header(CONTENT_TYPE, "text/plain")
                .body("{}"),
        )
        .await;
    not_json.expect_problem(415, "unsupported_media_type");
    let malformed = alice.send(
        alice
            .request(Method::PUT, "/v1/items/notes/x")
            .header(CONTENT_TYPE, "application/json")
            .body("{"),
    );
    malformed.await.expect_problem(400, "invalid_request");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_bodies_are_client_errors_never_server_errors() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let put = |body: String| {
        alice
            .request(Method::PUT, "/v1/items/notes/deep")
            .header(CONTENT_TYPE, "application/json; charset=utf-8")
            .body(body)
    };
    // Far beyond serde_json's recursion limit: a parse error, not a stack overflow.
    let very_deep = format!("{{\"data\": {}{}}}", "[".repeat(100_000), "]".repeat(100_000));
    alice.send(put(very_deep)).await.expect_problem(400, "invalid_request");
    // Within the parser's limit but over the contract's depth of 32.
    let deep = format!("{{\"data\": {{\"a\": {}1{}}}}}", "[".repeat(40), "]".repeat(40));
    alice.send(put(deep)).await.expect_problem(400, "invalid_request");
    // Over the 1 MiB body limit.
    let huge = format!("{{\"data\": {{\"blob\": \"{}\"}}}}", "x".repeat(1024 * 1024 + 10));
    alice.send(put(huge)).await.expect_problem(413, "payload_too_large");
    // Under the body limit, over the 256 KiB data limit.
    let large = format!("{{\"data\": {{\"blob\": \"{}\"}}}}", "x".repeat(300 * 1024));
    alice.send(put(large)).await.expect_problem(413, "payload_too_large");
    // Strict bodies: unknown members and non-object data.
    alice
        .send(put(r#"{"data": {}, "colour": "red"}"#.to_owned()))
        .await
        .expect_problem(400, "invalid_request");
    alice
        .send(put(r#"{"data": [1, 2]}"#.to_owned()))
        .await
        .expect_problem(400, "invalid_request");
    // Malformed preconditions and idempotency keys.
    let bad_if_match = alice
        .request(Method::PUT, "/v1/items/notes/p")
        .header("if-match", "W/\"1\"")
        .json(&json!({"data": {}}));
    alice.send(bad_if_match).await.expect_problem(400, "invalid_request");
    let bad_key = alice
        .request(Method::PUT, "/v1/items/notes/p")
        .header("idempotency-key", "k".repeat(129))
        .json(&json!({"data": {}}));
    alice.send(bad_key).await.expect_problem(400, "invalid_request");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_user_has_a_token_bucket_and_excess_is_429_with_retry_after() {
    let app = spawn_app_with(LocalConfig {
        addr: "127.0.0.1:0".parse().expect("address"),
        rate_limit: RateLimit::per_second(1),
        ..LocalConfig::default()
    })
    .await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    // A burst of 2N = 2 requests passes; the next one within the second is refused.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(alice.get("/v1/devices").await);
    }
    let limited = statuses
        .into_iter()
        .find(|a| a.status.as_u16() == 429)
        .expect("a request over the burst is limited");
    let limited = limited.expect_problem(429, "rate_limited");
    let retry_after: u64 = limited
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    assert!(retry_after >= 1);
    // Bob's bucket is his own.
    bob.get("/v1/devices").await.expect_status(200);
    app.shutdown().await;
}
