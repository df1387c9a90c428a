//! `GET /v1/me/export` over a real server: the caller's whole stream and media as NDJSON, in order,
//! with the header and end lines, no push token and nothing of another user.

// Helpers outside `#[test]` functions fail their test by panicking, like the tests themselves.
#![allow(clippy::expect_used)]

use rookery_tests::http::spawn_app;
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
