//! `GET /v1/me/export` and `DELETE /v1/me` on `rookery serve --backend aws`, against moto (Cognito,
//! DynamoDB and its stream, S3, SNS) and a search stand-in (OpenSearch, then CloudSearch): after the
//! erasure every route answers `410 account_erased` for the user, and a look behind the API finds
//! nothing of theirs: no row of their partition in the table (only the marker), no object under their
//! prefix in the bucket, no document of theirs in the index, no SNS endpoint of their device; the other
//! user keeps everything, the message the erased user sent included; and a restarted server, which
//! reads the table's stream again from its oldest record, brings no document of theirs back.

// Helpers outside `#[test]` functions fail their test by panicking, like the tests themselves.
#![allow(clippy::expect_used)]

use reqwest::Method;
use rookery_adapters_aws::OpenSearchService;
use rookery_adapters_aws::cloudsearch::document_id;
use rookery_domain::{ItemKey, UserId};
use rookery_tests::aws::cloudsearch_fake::FakeCloudSearch;
use rookery_tests::aws::moto;
use rookery_tests::aws::opensearch_fake::FakeOpenSearch;
use rookery_tests::http::aws::{AwsSearch, AwsTestApp, spawn_aws_app_with};
use rookery_tests::http::journey::search;
use rookery_tests::http::{Answer, EVENTUALLY, TestUser, eventually};
use serde_json::{Value, json};

/// A word only Alice's items hold.
const ALICE_WORD: &str = "zanzibarquokka";
/// A word only Bob's item holds.
const BOB_WORD: &str = "bobolinkmarmoset";
/// The text of the message Alice sends Bob, which stays in Bob's stream.
const SENT_TEXT: &str = "wombatcarousel from alice";
/// The bytes Alice uploads.
const ALICE_BYTES: &[u8] = b"alicepixelsnarwhal";

/// The search stand-in the server uses, kept to look into after the erasure.
enum Engine {
    OpenSearch(FakeOpenSearch),
    CloudSearch(FakeCloudSearch),
}

impl Engine {
    fn config(&self) -> AwsSearch {
        match self {
            Engine::OpenSearch(fake) => AwsSearch::OpenSearch {
                endpoint: fake.endpoint.clone(),
                service: OpenSearchService::Domain,
            },
            Engine::CloudSearch(fake) => AwsSearch::CloudSearch {
                doc: fake.endpoint.clone(),
                search: fake.endpoint.clone(),
            },
        }
    }

    /// How many documents (tombstones included) the index holds of `owner`, among `keys` for
    /// CloudSearch (whose stand-in is read by document id).
    fn documents_of(&self, owner: &UserId, keys: &[ItemKey]) -> usize {
        match self {
            Engine::OpenSearch(fake) => fake
                .documents("rookery-items")
                .iter()
                .filter(|d| d.source["owner"] == owner.as_str())
                .count(),
            Engine::CloudSearch(fake) => keys
                .iter()
                .filter(|key| fake.document(&document_id(owner, key)).is_some())
                .count(),
        }
    }
}

fn key(collection: &str, id: &str) -> ItemKey {
    ItemKey::new(
        collection.parse().expect("a collection name"),
        id.parse().expect("an item id"),
    )
}

/// Every row of the server's table, each as the `pk` and the row's text (its attributes, debug-printed).
async fn table_rows(app: &AwsTestApp) -> Vec<(String, String)> {
    let client = app.clients().dynamodb();
    let table = app.clients().config().table.clone();
    let mut rows = Vec::new();
    let mut start = None;
    for pages in 0.. {
        assert!(pages < 10_000, "the scan never ended");
        let page = client
            .scan()
            .table_name(&table)
            .consistent_read(true)
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .expect("a scan of the table");
        for row in page.items() {
            let pk = row.get("pk").and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
            rows.push((pk, format!("{row:?}")));
        }
        match page.last_evaluated_key {
            Some(key) if !key.is_empty() => start = Some(key),
            _ => break,
        }
    }
    rows
}

/// Every key of the server's bucket under `prefix`.
async fn bucket_keys(app: &AwsTestApp, prefix: &str) -> Vec<String> {
    let page = app
        .clients()
        .s3()
        .list_objects_v2()
        .bucket(app.clients().config().bucket.clone())
        .prefix(prefix)
        .send()
        .await
        .expect("a listing of the bucket");
    page.contents
        .unwrap_or_default()
        .into_iter()
        .filter_map(|o| o.key)
        .collect()
}

/// The ARNs of the SNS endpoints ever made for `token` (moto's state dump keeps deleted ones too).
async fn endpoints_made_for(token: &str) -> Vec<String> {
    let state = moto::state().await.expect("moto's state dump");
    state["sns"]["PlatformEndpoint"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|e| e["token"] == token)
        .filter_map(|e| e["arn"].as_str().map(str::to_owned))
        .collect()
}

/// Whether SNS still has the endpoint `arn`: `GetEndpointAttributes` over the query protocol (moto
/// routes by the credential scope and checks no signature), answered `NotFound` when it is gone.
async fn endpoint_exists(arn: &str) -> bool {
    let endpoint = &moto::moto().expect("moto runs").endpoint;
    let response = reqwest::Client::new()
        .post(format!("{endpoint}/"))
        .header(
            "Authorization",
            "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/sns/aws4_request, SignedHeaders=host, Signature=00",
        )
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!(
            "Action=GetEndpointAttributes&Version=2010-03-31&EndpointArn={}",
            arn.replace(':', "%3A").replace('/', "%2F")
        ))
        .send()
        .await
        .expect("an answer from moto");
    let status = response.status();
    let text = response.text().await.expect("a body");
    if status.is_success() {
        return true;
    }
    assert!(
        text.contains("NotFound"),
        "GetEndpointAttributes answered {status}: {text}"
    );
    false
}

/// Alice writes a public and a private item, registers a device, uploads media, sends Bob a message and
/// receives one; Bob writes an item of his own. Waits until both public items are searchable.
async fn alice_and_bob_write(app: &AwsTestApp, alice: &TestUser<'_>, bob: &TestUser<'_>, token: &str) {
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
        .put("/v1/devices/phone", &json!({"platform": "fcm", "token": token}))
        .await
        .expect_status(200);
    let media = alice
        .post(
            "/v1/media",
            &json!({"content_type": "image/png", "size": ALICE_BYTES.len()}),
        )
        .await
        .expect_status(201);
    let upload = &media.body["upload"];
    let mut put = app.client().put(upload["url"].as_str().expect("an upload URL"));
    for (name, value) in upload["headers"].as_object().expect("upload headers") {
        if !name.eq_ignore_ascii_case("content-length") {
            put = put.header(name, value.as_str().expect("a header value"));
        }
    }
    let uploaded = put.body(ALICE_BYTES.to_vec()).send().await.expect("sent");
    assert!(
        uploaded.status().is_success(),
        "the upload is stored: {}",
        uploaded.status()
    );
    alice
        .post("/v1/messages", &json!({"to": bob.id(), "text": SENT_TEXT}))
        .await
        .expect_status(202);
    bob.post("/v1/messages", &json!({"to": alice.id(), "text": "hello alice"}))
        .await
        .expect_status(202);
    bob.put(
        "/v1/items/notes/mine",
        &json!({"data": {"text": BOB_WORD}, "visibility": "public"}),
    )
    .await
    .expect_status(201);
    eventually(EVENTUALLY, || async {
        let alice_public = search(bob, ALICE_WORD).await;
        let bob_public = search(bob, BOB_WORD).await;
        (alice_public.body["found"] == 1 && bob_public.body["found"] == 1).then_some(())
    })
    .await
    .expect("both public items become searchable");
}

/// Alice's token answers `410 account_erased` on every route.
async fn every_route_is_gone_for(alice: &TestUser<'_>, bob: &TestUser<'_>) {
    let bobs_item = format!("/v1/users/{}/items/notes/mine", bob.id());
    let routes: [(Method, &str, Option<Value>); 15] = [
        (Method::GET, "/v1/items/notes/pub", None),
        (Method::PUT, "/v1/items/notes/new", Some(json!({"data": {}}))),
        (Method::PATCH, "/v1/items/notes/pub", Some(json!({"data": {}}))),
        (Method::DELETE, "/v1/items/notes/pub", None),
        (Method::GET, "/v1/items/notes", None),
        (Method::GET, "/v1/items/notes/pub/history", None),
        (Method::GET, &bobs_item, None),
        (Method::GET, "/v1/sync", None),
        (Method::GET, "/v1/search?q=anything", None),
        (
            Method::POST,
            "/v1/messages",
            Some(json!({"to": bob.id(), "text": "again"})),
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
    ];
    for (method, path, body) in routes {
        let mut request = alice.request(method.clone(), path);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Answer = alice.send(request).await;
        assert_eq!(
            answer.status.as_u16(),
            410,
            "{method} {path} answered {}",
            answer.status
        );
        answer.expect_problem(410, "account_erased");
    }
}

/// The whole erasure on AWS with `engine` as the index.
async fn erasure_on_aws(engine: Engine) {
    let app = spawn_aws_app_with(engine.config()).await;
    let alice = app.user("alice@example.com").await;
    let bob = app.user("bob@example.com").await;
    let alice_id = UserId::parse(alice.id()).expect("a user id");
    let bob_id = UserId::parse(bob.id()).expect("a user id");
    let token = format!("alice-device-{}", moto::unique_name("t"));
    alice_and_bob_write(&app, &alice, &bob, &token).await;
    let alice_keys = [key("notes", "pub"), key("notes", "priv")];
    let bob_keys = [key("notes", "mine")];

    // Before: everything of Alice's is there, so each look below can see it.
    let export = alice.get("/v1/me/export").await.expect_status(200);
    let lines: Vec<Value> = export
        .text
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    let kinds: Vec<&str> = lines.iter().filter_map(|l| l["type"].as_str()).collect();
    for kind in [
        "export",
        "item.created",
        "message.received",
        "device.changed",
        "media.declared",
        "media",
        "end",
    ] {
        assert!(kinds.contains(&kind), "the export has a {kind} line: {kinds:?}");
    }
    assert!(export.text.contains(ALICE_WORD), "the export holds Alice's items");
    assert!(export.text.contains("hello alice"), "and the message Bob sent her");
    let media = lines.iter().find(|l| l["type"] == "media").expect("a media line");
    assert_eq!(media["status"], "uploaded");
    assert!(!export.text.contains(&token), "no push token");
    let alice_pk = format!("user#{alice_id}");
    let marker_pk = format!("erased#{alice_id}");
    assert!(table_rows(&app).await.iter().any(|(pk, _)| *pk == alice_pk));
    let alice_prefix = format!("media/{alice_id}/");
    assert_eq!(bucket_keys(&app, &alice_prefix).await.len(), 1);
    assert_eq!(engine.documents_of(&alice_id, &alice_keys), 2);
    let endpoints = endpoints_made_for(&token).await;
    assert_eq!(endpoints.len(), 1, "Alice's device has its endpoint");
    assert!(endpoint_exists(&endpoints[0]).await);

    let erased = alice.delete("/v1/me").await.expect_status(202);
    assert_eq!(erased.body, json!({"status": "erasing"}));
    every_route_is_gone_for(&alice, &bob).await;

    // The table: nothing of Alice's partition, her marker, and her id only in Bob's partition (the
    // message she sent him, with her as its sender) and the marker.
    let rows = table_rows(&app).await;
    assert!(
        rows.iter().all(|(pk, _)| *pk != alice_pk),
        "no row of Alice's partition is left"
    );
    assert_eq!(
        rows.iter().filter(|(pk, _)| *pk == marker_pk).count(),
        1,
        "the marker stays"
    );
    let bob_pk = format!("user#{bob_id}");
    for (pk, text) in &rows {
        assert!(!text.contains(ALICE_WORD), "{pk}: no row holds Alice's text");
        assert!(!text.contains(&token), "{pk}: no row holds Alice's push token");
        if text.contains(alice_id.as_str()) {
            assert!(
                *pk == marker_pk || *pk == bob_pk,
                "{pk}: Alice's id is only in the marker and Bob's stream: {text}"
            );
        }
    }
    assert!(
        rows.iter().any(|(pk, text)| *pk == bob_pk && text.contains(SENT_TEXT)),
        "the message Alice sent stays in Bob's stream"
    );

    // The bucket, the index, SNS.
    assert_eq!(bucket_keys(&app, &alice_prefix).await, Vec::<String>::new());
    assert_eq!(engine.documents_of(&alice_id, &alice_keys), 0, "no document of Alice's");
    assert_eq!(engine.documents_of(&bob_id, &bob_keys), 1, "Bob's document stays");
    assert!(!endpoint_exists(&endpoints[0]).await, "Alice's endpoint is gone");

    // Bob keeps everything of his, and the message Alice sent him; nothing of Alice's is found.
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
    assert_eq!(search(&bob, ALICE_WORD).await.expect_status(200).body["found"], 0);
    assert_eq!(search(&bob, BOB_WORD).await.expect_status(200).body["found"], 1);
    bob.get(&format!("/v1/users/{alice_id}/items/notes/pub"))
        .await
        .expect_problem(404, "not_found");

    // A restarted server reads the table's stream again from its oldest record, Alice's records
    // included: none of them brings a document of hers back.
    let (alice_token, bob_token) = (alice.token().to_owned(), bob.token().to_owned());
    let app = app.restart().await;
    let bob = app.user_with_token(bob_id.as_str(), &bob_token);
    bob.put(
        "/v1/items/notes/later",
        &json!({"data": {"text": format!("{BOB_WORD} later")}, "visibility": "public"}),
    )
    .await
    .expect_status(201);
    eventually(EVENTUALLY, || async {
        (search(&bob, "later").await.body["found"] == 1).then_some(())
    })
    .await
    .expect("the restarted indexer reaches Bob's new item, after every older record");
    assert_eq!(
        engine.documents_of(&alice_id, &alice_keys),
        0,
        "no document of Alice's came back"
    );
    assert_eq!(search(&bob, ALICE_WORD).await.expect_status(200).body["found"], 0);
    let alice = app.user_with_token(alice_id.as_str(), &alice_token);
    alice.get("/v1/sync").await.expect_problem(410, "account_erased");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erased_account_leaves_nothing_in_dynamodb_s3_sns_or_opensearch() {
    let fake = FakeOpenSearch::spawn("es").await.expect("an OpenSearch stand-in");
    erasure_on_aws(Engine::OpenSearch(fake)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erased_account_leaves_nothing_in_dynamodb_s3_sns_or_cloudsearch() {
    let fake = FakeCloudSearch::spawn().await.expect("a CloudSearch stand-in");
    erasure_on_aws(Engine::CloudSearch(fake)).await;
}
