//! The two-user HTTP journey as steps any backend can run: the same requests and the same answers on
//! `rookery serve` (memory) and `rookery serve --backend aws` (moto), whatever the user ids look like.
//!
//! Each step takes two signed-in users with empty streams (fresh users), so steps do not depend on
//! each other. What differs between backends is only where users and their tokens come from
//! ([`Users`]: development tokens or Cognito), where a push can be seen ([`PushProbe`]) and what media
//! URLs look like (the media step returns its answers for the caller to check); [`whole`] runs every
//! step. Search is eventually consistent on every backend (the AWS one indexes through the stream
//! poller), so each step waits for a change to become searchable with a bounded deadline
//! ([`EVENTUALLY`]), never a fixed sleep, and then reads what is indexed as often as it likes.

use std::collections::BTreeSet;
use std::future::Future;

use reqwest::Method;
use reqwest::header::CONTENT_TYPE;
use serde_json::{Value, json};

use super::{Answer, ApiClient, EVENTUALLY, TestUser, eventually};
use crate::fixtures::unique;

fn versions(events: &Value) -> Vec<u64> {
    events
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["version"].as_u64()).collect())
        .unwrap_or_default()
}

/// Items: create, ETag and conditional GET, If-Match, conflicts with the missed events, merge patch,
/// public and private reads by another user, time travel, restore, delete, history and its pages.
pub async fn items(alice: &TestUser<'_>, bob: &TestUser<'_>) {
    let path = "/v1/items/notes/n1";
    let public_path = format!("/v1/users/{}/items/notes/n1", alice.id());
    let created = alice
        .put(
            path,
            &json!({"data": {"headline": "Trip", "text": "Packing list", "tags": ["travel"]}}),
        )
        .await
        .expect_status(201);
    assert_eq!(created.header("etag"), Some("\"1\""));
    assert_eq!(created.header("location"), Some(path));
    assert_eq!(created.body["owner"], alice.id());
    assert_eq!(created.body["collection"], "notes");
    assert_eq!(created.body["id"], "n1");
    assert_eq!(created.body["version"], 1);
    assert_eq!(created.body["visibility"], "private");
    assert_eq!(created.body["data"]["tags"], json!(["travel"]));
    let created_at = created.body["created_at"].as_str().expect("created_at").to_owned();
    // RFC 3339 in UTC with milliseconds, always the same length.
    assert_eq!(created_at.len(), "2026-11-25T10:00:00.123Z".len(), "{created_at}");
    assert!(created_at.ends_with('Z'), "{created_at}");

    let read = alice.get(path).await.expect_status(200);
    assert_eq!(read.header("etag"), Some("\"1\""));
    assert_eq!(read.body, created.body);
    let not_modified = alice
        .send(alice.request(Method::GET, path).header("if-none-match", "\"1\""))
        .await;
    assert_eq!(not_modified.status.as_u16(), 304);

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
    assert_eq!(replaced.body["visibility"], "private", "a replace keeps the visibility");
    assert_eq!(replaced.body["created_at"], created_at.as_str());

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
    // If-None-Match: * on an existing item is a conflict too.
    alice
        .send(
            alice
                .request(Method::PUT, path)
                .header("if-none-match", "*")
                .json(&json!({"data": {}})),
        )
        .await
        .expect_problem(409, "version_conflict");

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

    // Public: Bob reads it through the owner route; his own route does not see it.
    let public = bob.get(&public_path).await.expect_status(200);
    assert_eq!(public.body["version"], 3);
    assert_eq!(public.header("etag"), Some("\"3\""));
    bob.get(path).await.expect_problem(404, "not_found");

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

    let restored = alice
        .post(&format!("{path}/restore"), &json!({"version": 1}))
        .await
        .expect_status(200);
    assert_eq!(restored.body["version"], 4);
    assert_eq!(restored.body["visibility"], "private");
    assert_eq!(restored.body["data"]["tags"], json!(["travel"]));
    assert_eq!(restored.header("etag"), Some("\"4\""));
    // Private again: to Bob it does not exist (never 403); the owner may still use the owner route.
    bob.get(&public_path).await.expect_problem(404, "not_found");
    alice.get(&public_path).await.expect_status(200);

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
    assert_eq!(
        history.body["events"][4]["item"],
        Value::Null,
        "a deletion carries no item"
    );
    assert_eq!(history.body["next_cursor"], Value::Null);
    let seqs: Vec<u64> = history.body["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["seq"].as_u64())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
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
}

/// Listing: pages of live items by id, per user; idempotent writes replay, a reused key is refused.
pub async fn listing_and_idempotency(alice: &TestUser<'_>, bob: &TestUser<'_>) {
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
    for refused in ["/v1/items/todo?limit=101", "/v1/items/todo?limit=-1", "/v1/items/Todo"] {
        alice.get(refused).await.expect_problem(400, "invalid_request");
    }

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
    let bobs = bob
        .send(
            bob.request(Method::PUT, "/v1/items/todo/k")
                .header("idempotency-key", "key-1")
                .json(&json!({"data": {"n": 1}})),
        )
        .await;
    assert_eq!(bobs.expect_status(201).body["owner"], bob.id());
}

/// `GET /v1/search?q=<query>` as `user`.
pub async fn search(user: &TestUser<'_>, query: &str) -> Answer {
    user.send(user.request(Method::GET, "/v1/search").query(&[("q", query)]))
        .await
}

/// Follows `/v1/sync` from the start until `has_more` is false, returning every change and the last cursor.
pub async fn sync_all(user: &TestUser<'_>, limit: u32) -> (Vec<Value>, String) {
    let mut changes = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/sync?limit={limit}&since={c}"),
            None => format!("/v1/sync?limit={limit}"),
        };
        let page = user.get(&path).await.expect_status(200);
        changes.extend(page.body["changes"].as_array().expect("changes").iter().cloned());
        cursor = Some(
            page.body["next_cursor"]
                .as_str()
                .expect("next_cursor is always a string")
                .to_owned(),
        );
        if page.body["has_more"] == false {
            break;
        }
    }
    (changes, cursor.unwrap_or_default())
}

/// Sync pages every change once, in order, with messages; search finds changes soon, scoped by owner
/// and visibility, and forgets deleted items.
pub async fn sync_and_search(alice: &TestUser<'_>, bob: &TestUser<'_>) {
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
    bob.post("/v1/messages", &json!({"to": alice.id(), "text": "hi alice"}))
        .await
        .expect_status(202);

    let (changes, cursor) = sync_all(alice, 3).await;
    let seqs: Vec<u64> = changes.iter().filter_map(|c| c["seq"].as_u64()).collect();
    assert_eq!(seqs, (1..=10).collect::<Vec<_>>(), "gap-free and ordered");
    assert_eq!(changes[7]["type"], "item.patched");
    assert_eq!(changes[8]["type"], "item.deleted");
    assert_eq!(changes[8]["item"], Value::Null);
    assert_eq!(changes[9]["type"], "message.received");
    assert_eq!(changes[9]["message"]["from"], bob.id());
    // An empty page keeps the cursor, so a device can store it and poll.
    let empty = alice.get(&format!("/v1/sync?since={cursor}")).await.expect_status(200);
    assert_eq!(empty.body["changes"], json!([]));
    assert_eq!(empty.body["next_cursor"], cursor.as_str());
    assert_eq!(empty.body["has_more"], false);
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

    alice
        .put(
            "/v1/items/trips/t1",
            &json!({"data": {"headline": "Zanzibar trip", "notes": {"deep": ["snorkel gear"]}}, "visibility": "public"}),
        )
        .await
        .expect_status(201);
    alice
        .put("/v1/items/trips/t2", &json!({"data": {"headline": "Zanzibar secret"}}))
        .await
        .expect_status(201);
    let found = eventually(EVENTUALLY, || async {
        let answer = search(alice, "zanzibar").await.expect_status(200);
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
    let nested = search(alice, "SNORKEL Zanzibar").await.expect_status(200);
    assert_eq!(nested.body["found"], 1);
    assert_eq!(nested.body["hits"][0]["id"], "t1");
    // Bob sees only the public one; his own scope holds nothing of Alice's.
    let for_bob = search(bob, "zanzibar").await.expect_status(200);
    assert_eq!(for_bob.body["found"], 1);
    assert_eq!(for_bob.body["hits"][0]["owner"], alice.id());
    assert_eq!(for_bob.body["hits"][0]["item"]["visibility"], "public");
    let mine = bob
        .send(
            bob.request(Method::GET, "/v1/search")
                .query(&[("q", "zanzibar"), ("scope", "mine")]),
        )
        .await;
    assert_eq!(mine.expect_status(200).body["found"], 0);
    // Query syntax is just text.
    let syntax = search(alice, "(and title:'x') \"zanzibar\"").await.expect_status(200);
    assert_eq!(syntax.body["found"], 0);
    alice.delete("/v1/items/trips/t2").await.expect_status(204);
    eventually(EVENTUALLY, || async {
        (search(alice, "secret").await.body["found"] == 0).then_some(())
    })
    .await
    .expect("the deleted item leaves the index");
    search(alice, "").await.expect_problem(400, "invalid_request");
    bob.send(
        bob.request(Method::GET, "/v1/search")
            .query(&[("q", "x"), ("scope", "everyone")]),
    )
    .await
    .expect_problem(400, "invalid_request");
}

/// A device as the journey registers it.
#[derive(Debug, Clone)]
pub struct TestDevice {
    /// Its id in the API.
    pub id: String,
    /// `apns`, `apns_sandbox` or `fcm`.
    pub platform: String,
    /// Its push token (unique per test run, since an emulator is shared by the tests of a binary).
    pub token: String,
}

/// A push as a backend delivered it.
#[derive(Debug, Clone)]
pub struct Delivered {
    /// The device it went to.
    pub device_id: String,
    /// The device's platform.
    pub platform: String,
    /// The platform payload.
    pub payload: Value,
}

impl Delivered {
    /// The message id the payload carries (at the top for APNs, in `data` for FCM).
    pub fn message_id(&self) -> Option<&str> {
        self.payload["message_id"]
            .as_str()
            .or_else(|| self.payload["data"]["message_id"].as_str())
    }
}

/// Where a backend's pushes can be seen.
pub trait PushProbe {
    /// Every push delivered so far to `devices` of `user`.
    fn delivered(&self, user: &TestUser<'_>, devices: &[TestDevice]) -> impl Future<Output = Vec<Delivered>>;
}

/// The local push gateway's record, `GET /v1/dev/pushes`.
#[derive(Debug, Clone, Copy, Default)]
pub struct DevPushes;

impl PushProbe for DevPushes {
    async fn delivered(&self, user: &TestUser<'_>, devices: &[TestDevice]) -> Vec<Delivered> {
        let answer = user.get("/v1/dev/pushes").await.expect_status(200);
        answer.body["pushes"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|p| devices.iter().any(|d| p["device_id"] == d.id.as_str()))
            .map(|p| Delivered {
                device_id: p["device_id"].as_str().unwrap_or_default().to_owned(),
                platform: p["platform"].as_str().unwrap_or_default().to_owned(),
                payload: p["payload"].clone(),
            })
            .collect()
    }
}

async fn pushes_of<P: PushProbe>(
    probe: &P,
    user: &TestUser<'_>,
    devices: &[TestDevice],
    message_id: &str,
) -> Vec<Delivered> {
    probe
        .delivered(user, devices)
        .await
        .into_iter()
        .filter(|d| d.message_id() == Some(message_id))
        .collect()
}

/// Messages and devices: register (idempotently), list, send, the inbox, one push per enabled device
/// formatted for its platform, unregister (no pushes after), and refused bodies.
pub async fn messages_and_devices<P: PushProbe>(alice: &TestUser<'_>, bob: &TestUser<'_>, probe: &P) {
    let phone = TestDevice {
        id: "phone-1".into(),
        platform: "apns".into(),
        token: unique("bob-phone-token"),
    };
    let tablet = TestDevice {
        id: "tablet".into(),
        platform: "fcm".into(),
        token: unique("bob-tablet-token"),
    };
    for device in [&phone, &tablet, &phone] {
        let registered = bob
            .put(
                &format!("/v1/devices/{}", device.id),
                &json!({"platform": device.platform, "token": device.token}),
            )
            .await
            .expect_status(200);
        assert_eq!(
            registered.body,
            json!({"device_id": device.id, "platform": device.platform, "enabled": true})
        );
    }
    let listed = bob.get("/v1/devices").await.expect_status(200);
    assert_eq!(
        listed.body["devices"].as_array().map(Vec::len),
        Some(2),
        "{}",
        listed.text
    );
    bob.put("/v1/devices/phone-2", &json!({"platform": "pager", "token": "x"}))
        .await
        .expect_problem(400, "invalid_request");

    let send = |text: &str| {
        let body = json!({"to": bob.id(), "text": text, "data": {"thread": "t-1"}});
        async move { alice.post("/v1/messages", &body).await }
    };
    let accepted = send("Dinner at 8?").await.expect_status(202);
    assert_eq!(accepted.body["status"], "accepted");
    let message_id = accepted.body["id"].as_str().expect("a message id").to_owned();
    let inbox = bob.get("/v1/messages").await.expect_status(200);
    let message = &inbox.body["messages"][0];
    assert_eq!(message["id"], message_id.as_str());
    assert_eq!(message["from"], alice.id());
    assert_eq!(message["to"], bob.id());
    assert_eq!(message["text"], "Dinner at 8?");
    assert_eq!(message["data"], json!({"thread": "t-1"}));
    assert!(message["sent_at"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert_eq!(inbox.body["next_cursor"], Value::Null);
    assert_eq!(alice.get("/v1/messages").await.body["messages"], json!([]));

    let both = [phone.clone(), tablet.clone()];
    let pushes = eventually(EVENTUALLY, || async {
        let ours = pushes_of(probe, bob, &both, &message_id).await;
        (ours.len() == 2).then_some(ours)
    })
    .await
    .expect("both of Bob's devices get the push");
    let devices: BTreeSet<&str> = pushes.iter().map(|p| p.device_id.as_str()).collect();
    assert_eq!(devices, BTreeSet::from(["phone-1", "tablet"]));
    for push in &pushes {
        match push.platform.as_str() {
            "apns" => assert_eq!(push.payload["aps"]["alert"]["body"], "Dinner at 8?"),
            "fcm" => assert_eq!(push.payload["notification"]["body"], "Dinner at 8?"),
            other => panic!("unexpected platform {other:?}"),
        }
    }

    bob.delete("/v1/devices/tablet").await.expect_status(204);
    bob.delete("/v1/devices/tablet").await.expect_problem(404, "not_found");
    let left = bob.get("/v1/devices").await.expect_status(200);
    assert_eq!(left.body["devices"].as_array().map(Vec::len), Some(1));
    // Messages are pushed in order, so once the phone has the last one, the removed tablet would
    // have had the earlier one by then if it were still pushed to.
    let after = send("After the tablet left").await.expect_status(202);
    let last = send("Last one").await.expect_status(202);
    let last_id = last.body["id"].as_str().expect("a message id").to_owned();
    eventually(EVENTUALLY, || async {
        (!pushes_of(probe, bob, std::slice::from_ref(&phone), &last_id)
            .await
            .is_empty())
        .then_some(())
    })
    .await
    .expect("the phone gets the last message");
    let after_id = after.body["id"].as_str().expect("a message id");
    assert_eq!(
        pushes_of(probe, bob, std::slice::from_ref(&phone), after_id)
            .await
            .len(),
        1
    );
    for id in [after_id, last_id.as_str()] {
        assert!(
            pushes_of(probe, bob, std::slice::from_ref(&tablet), id)
                .await
                .is_empty(),
            "the removed tablet got message {id}"
        );
    }

    alice
        .post("/v1/messages", &json!({"to": bob.id(), "text": "x".repeat(4001)}))
        .await
        .expect_problem(400, "invalid_request");
    alice
        .post("/v1/messages", &json!({"to": "not a user", "text": "x"}))
        .await
        .expect_problem(400, "invalid_request");
}

/// What the media step saw, for backend-specific checks of the URLs.
#[derive(Debug, Clone)]
pub struct MediaSeen {
    /// The answer to the declaration (`POST /v1/media`).
    pub declared: Answer,
    /// The answer to `GET /v1/media/{id}` after the upload.
    pub uploaded: Answer,
}

/// Media: declare, pending to the owner and absent to others, upload through the signed URL with its
/// headers, then uploaded with a download URL that serves the bytes; refused declarations.
pub async fn media(alice: &TestUser<'_>, bob: &TestUser<'_>) -> MediaSeen {
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
    assert!(upload["expires_at"].as_str().is_some_and(|t| t.ends_with('Z')));

    let pending = alice.get(&format!("/v1/media/{id}")).await.expect_status(200);
    assert_eq!(pending.body["status"], "pending");
    assert_eq!(pending.body["download"], Value::Null);
    bob.get(&format!("/v1/media/{id}"))
        .await
        .expect_problem(404, "not_found");

    let client = alice.app().client();
    let mut put = client
        .put(upload["url"].as_str().expect("an upload URL"))
        .body(bytes.to_vec());
    for (name, value) in upload["headers"].as_object().expect("upload headers") {
        // The HTTP client writes Content-Length from the body itself.
        if !name.eq_ignore_ascii_case("content-length") {
            put = put.header(name, value.as_str().expect("a header value"));
        }
    }
    let uploaded = put.send().await.expect("the upload is sent");
    assert!(uploaded.status().is_success(), "upload answered {}", uploaded.status());

    let ready = alice.get(&format!("/v1/media/{id}")).await.expect_status(200);
    assert_eq!(ready.body["status"], "uploaded");
    assert_eq!(ready.body["content_type"], "image/png");
    assert_eq!(ready.body["size"], bytes.len());
    assert!(ready.body["download"]["expires_at"].as_str().is_some());
    let download = ready.body["download"]["url"].as_str().expect("a download URL");
    let fetched = client.get(download).send().await.expect("the download is sent");
    assert_eq!(fetched.status().as_u16(), 200);
    assert_eq!(fetched.headers()[CONTENT_TYPE], "image/png");
    assert_eq!(fetched.bytes().await.expect("bytes").as_ref(), bytes);

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
    MediaSeen {
        declared,
        uploaded: ready,
    }
}

/// Where the journey's users come from: fresh users, each signed in with a token the server accepts.
pub trait Users {
    /// A fresh user called `name`, signed in the way a step's first user (Alice) is.
    fn first(&self, name: &str) -> impl Future<Output = TestUser<'_>>;
    /// A fresh user called `name`, signed in the way a step's second user (Bob) is.
    fn second(&self, name: &str) -> impl Future<Output = TestUser<'_>>;
}

/// Development tokens (`POST /v1/dev/tokens`) for both users: the local server.
impl Users for ApiClient {
    async fn first(&self, name: &str) -> TestUser<'_> {
        self.user(name).await
    }

    async fn second(&self, name: &str) -> TestUser<'_> {
        self.user(name).await
    }
}

/// Search as you type: the last word of `q` also matches as a prefix, of nested strings too; an earlier
/// word matches whole words only; a prefix never reaches another user's private item; a `*` is text.
pub async fn search_as_you_type(alice: &TestUser<'_>, bob: &TestUser<'_>) {
    alice
        .put(
            "/v1/items/trips/k1",
            &json!({"data": {"headline": "Kilimanjaro at dawn", "gear": ["passport", "head torch"]}, "visibility": "public"}),
        )
        .await
        .expect_status(201);
    alice
        .put(
            "/v1/items/trips/k2",
            &json!({"data": {"headline": "Kilimanjaro budget"}}),
        )
        .await
        .expect_status(201);
    eventually(EVENTUALLY, || async {
        (search(alice, "kilimanjaro").await.expect_status(200).body["found"] == 2).then_some(())
    })
    .await
    .expect("both trips become searchable");
    let typed = search(bob, "kilim").await.expect_status(200);
    assert_eq!(
        typed.body["found"], 1,
        "Bob finds the public trip as he types: {}",
        typed.text
    );
    assert_eq!(typed.body["hits"][0]["id"], "k1");
    assert_eq!(typed.body["hits"][0]["owner"], alice.id());
    let own = search(alice, "kilimanjaro bud").await.expect_status(200);
    assert_eq!(own.body["found"], 1, "{}", own.text);
    assert_eq!(own.body["hits"][0]["id"], "k2");
    let nested = search(alice, "PASS").await.expect_status(200);
    assert_eq!(nested.body["found"], 1, "a prefix of a nested string: {}", nested.text);
    assert_eq!(nested.body["hits"][0]["id"], "k1");
    for (query, why) in [
        ("kilim budget", "an earlier word matches whole words only"),
        ("anjaro", "a prefix, not any part of a word"),
        ("kilimanjaros", "the last word is not shortened"),
    ] {
        assert_eq!(
            search(alice, query).await.expect_status(200).body["found"],
            0,
            "{query:?}: {why}"
        );
    }
    assert_eq!(
        search(bob, "kilimanjaro bud").await.expect_status(200).body["found"],
        0,
        "a prefix never reaches another user's private item"
    );
    let stars = search(bob, "kilim*").await.expect_status(200);
    assert_eq!(
        stars.body["found"], 1,
        "a `*` is text, the same as `kilim`: {}",
        stars.text
    );
    alice.delete("/v1/items/trips/k1").await.expect_status(204);
    eventually(EVENTUALLY, || async {
        (search(bob, "kilim").await.expect_status(200).body["found"] == 0).then_some(())
    })
    .await
    .expect("the deleted trip is no longer found as Bob types");
}

/// Every step of the journey, each with two fresh users of `users` named after it (`alice-items`,
/// `bob-items`, ...), pushes seen through `probe`; returns what the media step saw.
pub async fn whole<U: Users, P: PushProbe>(users: &U, probe: &P) -> MediaSeen {
    items(&users.first("alice-items").await, &users.second("bob-items").await).await;
    listing_and_idempotency(&users.first("alice-list").await, &users.second("bob-list").await).await;
    sync_and_search(&users.first("alice-sync").await, &users.second("bob-sync").await).await;
    search_as_you_type(&users.first("alice-type").await, &users.second("bob-type").await).await;
    messages_and_devices(&users.first("alice-msg").await, &users.second("bob-msg").await, probe).await;
    media(&users.first("alice-media").await, &users.second("bob-media").await).await
}
