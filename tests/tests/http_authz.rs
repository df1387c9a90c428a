//! The authorization matrix over real HTTP: every route of `API.md` against every kind of refused token
//! (none, malformed, expired, wrongly signed, `alg: none`, HS256, wrong issuer or audience), against
//! another user's valid token, and against the owner's token.
//!
//! Refused tokens get `401` with a `Bearer` challenge and an `unauthorized` problem document, and change
//! nothing; another user gets `404` for private things (never `403`) and only their own data elsewhere;
//! the owner gets `2xx`. No answer to anyone but the owner carries any of the owner's private data.

// Helpers outside `#[test]` functions fail their test by panicking, like the tests themselves.
#![allow(clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, RequestBuilder};
use rookery_adapters_memory::identity::{DevIdentityProvider, KEY_FILE};
use rookery_domain::{Timestamp, UserId};
use rookery_entrypoints::LocalConfig;
use rookery_entrypoints::http::RateLimit;
use rookery_tests::http::{Answer, ApiClient, EVENTUALLY, TestApp, TestUser, eventually, spawn_app_with};
use rsa::pkcs1::EncodeRsaPrivateKey as _;
use rsa::pkcs8::DecodePrivateKey as _;
use serde_json::{Value, json};

/// Words that only Alice's private data contains: none may appear in an answer to anyone else.
const SECRET_WORD: &str = "quetzalsecret";
const SECRET_TEXT: &str = "vault combination 4471-9083";
const SECRET_DEVICE_TOKEN: &str = "alice-apns-token-9f3b7d";
const SECRET_MESSAGE: &str = "meet at the hidden dock 5512";
const PUBLIC_WORD: &str = "heronpublic";

/// One request of the matrix: a route of `API.md` with the path and body Alice's data needs.
#[derive(Debug, Clone)]
struct Route {
    name: &'static str,
    method: Method,
    path: String,
    body: Option<Value>,
}

impl Route {
    fn new(name: &'static str, method: Method, path: impl Into<String>, body: Option<Value>) -> Self {
        Self {
            name,
            method,
            path: path.into(),
            body,
        }
    }

    /// The request, without credentials.
    fn request(&self, api: &ApiClient) -> RequestBuilder {
        let request = api.anonymous(self.method.clone(), &self.path);
        match &self.body {
            Some(body) if self.method == Method::PATCH => request
                .header(CONTENT_TYPE, "application/merge-patch+json")
                .body(body.to_string()),
            Some(body) => request.json(body),
            None => request,
        }
    }
}

/// Every authenticated route of `API.md` (plus the development pushes route), aimed at Alice's things.
fn routes(media_id: &str) -> Vec<Route> {
    let item = "/v1/items/notes/secret";
    vec![
        Route::new(
            "put item",
            Method::PUT,
            item,
            Some(json!({"data": {"text": "overwritten"}})),
        ),
        Route::new(
            "patch item",
            Method::PATCH,
            item,
            Some(json!({"data": {"text": "patched"}})),
        ),
        Route::new("get item", Method::GET, item, None),
        Route::new("get item version", Method::GET, format!("{item}?version=1"), None),
        Route::new("list items", Method::GET, "/v1/items/notes", None),
        Route::new("history", Method::GET, format!("{item}/history"), None),
        Route::new(
            "restore",
            Method::POST,
            format!("{item}/restore"),
            Some(json!({"version": 1})),
        ),
        Route::new(
            "public read of a private item",
            Method::GET,
            "/v1/users/alice/items/notes/secret",
            None,
        ),
        Route::new(
            "public read of a public item",
            Method::GET,
            "/v1/users/alice/items/notes/shared",
            None,
        ),
        Route::new("sync", Method::GET, "/v1/sync", None),
        Route::new("search", Method::GET, format!("/v1/search?q={SECRET_WORD}"), None),
        Route::new(
            "send message",
            Method::POST,
            "/v1/messages",
            Some(json!({"to": "bob", "text": "forged"})),
        ),
        Route::new("messages", Method::GET, "/v1/messages", None),
        Route::new(
            "register device",
            Method::PUT,
            "/v1/devices/alice-phone",
            Some(json!({"platform": "fcm", "token": "hijacked-token"})),
        ),
        Route::new("devices", Method::GET, "/v1/devices", None),
        Route::new(
            "declare media",
            Method::POST,
            "/v1/media",
            Some(json!({"content_type": "image/png", "size": 10})),
        ),
        Route::new("get media", Method::GET, format!("/v1/media/{media_id}"), None),
        Route::new("dev pushes", Method::GET, "/v1/dev/pushes", None),
        Route::new("remove device", Method::DELETE, "/v1/devices/alice-phone", None),
        Route::new("delete item", Method::DELETE, item, None),
    ]
}

/// Asserts that `answer` shows none of Alice's private data, naming `context` otherwise.
#[track_caller]
fn assert_no_leak(answer: &Answer, secrets: &[&str], context: &str) {
    for secret in secrets {
        assert!(
            !answer.text.contains(secret),
            "{context}: the answer leaks {secret:?}: {}",
            answer.text
        );
    }
}

/// Seconds since the epoch, now.
fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}

/// The claims of a development ID token for `sub`, valid for an hour from now.
fn claims(sub: &str) -> Value {
    let now = now_secs();
    json!({
        "iss": rookery_adapters_memory::identity::DEFAULT_ISSUER,
        "sub": sub,
        "aud": rookery_adapters_memory::identity::DEFAULT_AUDIENCE,
        "token_use": "id",
        "auth_time": now,
        "iat": now,
        "exp": now + 3600,
    })
}

/// A JWT with the given header and claims and a raw signature part, encoded by hand
/// (for algorithms a signing library refuses to produce).
fn raw_token(header: &Value, claims: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

/// Every kind of token the server must refuse, named, all claiming to be `sub`.
///
/// `data_dir` holds the server's signing key (so expired tokens and tokens with a wrong issuer or
/// audience are correctly signed); `other_dir` receives a different RSA key for forged signatures.
fn refused_tokens(data_dir: &Path, other_dir: &Path, sub: &str) -> Vec<(&'static str, Option<String>)> {
    let server_key = DevIdentityProvider::open(data_dir).expect("the server's key loads");
    let kid = server_key.kid().to_owned();
    let user = UserId::parse(sub).expect("a user id");

    // Signed with the right key, but expired an hour ago (well past any leeway).
    let two_hours_ago = Timestamp::from_millis((now_secs() - 7200) * 1000);
    let (expired, _) = server_key
        .issue(&user, two_hours_ago, Duration::from_secs(3600))
        .expect("an expired token");
    let now = Timestamp::from_millis(now_secs() * 1000);
    let (wrong_issuer, _) = server_key
        .clone()
        .with_issuer("https://evil.example")
        .issue(&user, now, Duration::from_secs(3600))
        .expect("a token from another issuer");
    let (wrong_audience, _) = server_key
        .clone()
        .with_audience("another-app")
        .issue(&user, now, Duration::from_secs(3600))
        .expect("a token for another client");

    // Another RSA key, presented under the server key's kid.
    DevIdentityProvider::open(other_dir).expect("another key is generated");
    let other_pem = std::fs::read_to_string(other_dir.join(KEY_FILE)).expect("the other key's file");
    let other_der = rsa::PrivateKey::from_pkcs8_pem(&other_pem)
        .expect("a PKCS#8 RSA key")
        .to_pkcs1_der()
        .expect("PKCS#1 DER");
    let other_key = EncodingKey::from_rsa_der(other_der.as_bytes());
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.clone());
    let wrongly_signed = jsonwebtoken::encode(&header, &claims(sub), &other_key).expect("signed");

    // The classic algorithm confusion: HMAC keyed with the server's public key material.
    let public_n = server_key.jwks()["keys"][0]["n"]
        .as_str()
        .expect("the key's modulus")
        .to_owned();
    let mut hs_header = Header::new(Algorithm::HS256);
    hs_header.kid = Some(kid.clone());
    let hs256 =
        jsonwebtoken::encode(&hs_header, &claims(sub), &EncodingKey::from_secret(public_n.as_bytes())).expect("signed");

    let none = raw_token(&json!({"alg": "none", "typ": "JWT", "kid": kid}), &claims(sub), "");
    let none_upper = raw_token(&json!({"alg": "NONE", "kid": kid}), &claims(sub), "");
    // A valid token whose signature was cut off.
    let (valid, _) = server_key
        .issue(&user, now, Duration::from_secs(3600))
        .expect("a valid token");
    let unsigned = valid
        .rsplit_once('.')
        .map(|(head, _)| format!("{head}."))
        .expect("three parts");
    // A valid token's header and signature around claims for someone else.
    let mut parts = valid.split('.');
    let (head, _, signature) = (parts.next(), parts.next(), parts.next());
    let swapped_claims = format!(
        "{}.{}.{}",
        head.expect("a header"),
        URL_SAFE_NO_PAD.encode(claims("mallory").to_string()),
        signature.expect("a signature")
    );
    let unknown_kid = {
        let provider = DevIdentityProvider::open(other_dir).expect("the other key");
        provider
            .issue(&user, now, Duration::from_secs(3600))
            .expect("a token under an unknown kid")
            .0
    };

    vec![
        ("no token", None),
        ("empty bearer", Some(String::new())),
        ("malformed", Some("not.a.jwt".to_owned())),
        ("one segment", Some("abcdef".to_owned())),
        ("four segments", Some("a.b.c.d".to_owned())),
        ("huge garbage", Some("A".repeat(8 * 1024))),
        ("expired", Some(expired)),
        ("wrong issuer", Some(wrong_issuer)),
        ("wrong audience", Some(wrong_audience)),
        ("wrongly signed under the server's kid", Some(wrongly_signed)),
        ("unknown kid", Some(unknown_kid)),
        ("alg none", Some(none)),
        ("alg NONE", Some(none_upper)),
        ("HS256 keyed with the public key", Some(hs256)),
        ("signature stripped", Some(unsigned)),
        ("claims swapped under a valid signature", Some(swapped_claims)),
    ]
}

/// Alice's private and public data, a message to Bob, a device and a media object; returns the media id.
async fn seed(alice: &TestUser<'_>, bob: &TestUser<'_>) -> String {
    alice
        .put(
            "/v1/items/notes/secret",
            &json!({"data": {"headline": SECRET_WORD, "text": SECRET_TEXT}}),
        )
        .await
        .expect_status(201);
    alice
        .put(
            "/v1/items/notes/secret",
            &json!({"data": {"headline": SECRET_WORD, "text": SECRET_TEXT, "v": 2}}),
        )
        .await
        .expect_status(200);
    alice
        .put(
            "/v1/items/notes/shared",
            &json!({"data": {"headline": PUBLIC_WORD}, "visibility": "public"}),
        )
        .await
        .expect_status(201);
    alice
        .put(
            "/v1/devices/alice-phone",
            &json!({"platform": "apns", "token": SECRET_DEVICE_TOKEN}),
        )
        .await
        .expect_status(200);
    alice
        .post("/v1/messages", &json!({"to": "bob", "text": SECRET_MESSAGE}))
        .await
        .expect_status(202);
    bob.post("/v1/messages", &json!({"to": "alice", "text": SECRET_MESSAGE}))
        .await
        .expect_status(202);
    let media = alice
        .post("/v1/media", &json!({"content_type": "image/png", "size": 10}))
        .await
        .expect_status(201);
    let media_id = media.body["id"].as_str().expect("a media id").to_owned();
    // The index is asynchronous: wait until both of Alice's items are searchable, so that a search
    // by anyone else that finds nothing means "refused", not "not indexed yet".
    eventually(EVENTUALLY, || async {
        let mine = alice.get(&format!("/v1/search?q={SECRET_WORD}&scope=mine")).await;
        let public = alice.get(&format!("/v1/search?q={PUBLIC_WORD}")).await;
        (mine.body["found"] == 1 && public.body["found"] == 1).then_some(())
    })
    .await
    .expect("Alice's items become searchable");
    media_id
}

/// A server with a data directory, so the test can sign tokens with the server's own key.
async fn server(data_dir: &Path) -> TestApp {
    spawn_app_with(LocalConfig {
        addr: "127.0.0.1:0".parse().expect("loopback address"),
        data_dir: Some(data_dir.to_owned()),
        rate_limit: RateLimit::off(),
        ..LocalConfig::default()
    })
    .await
}

/// What Alice's item looks like to Alice: its version and data.
async fn alice_item(alice: &TestUser<'_>) -> (Value, Value) {
    let item = alice.get("/v1/items/notes/secret").await.expect_status(200);
    (item.body["version"].clone(), item.body["data"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_tokens_get_401_on_every_route_and_change_nothing() {
    let data_dir = tempfile::tempdir().expect("a temporary directory");
    let other_dir = tempfile::tempdir().expect("a temporary directory");
    let app = server(data_dir.path()).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let media_id = seed(&alice, &bob).await;
    let before = alice_item(&alice).await;
    let devices_before = alice.get("/v1/devices").await.expect_status(200).body;
    let sync_before = alice.get("/v1/sync?limit=100").await.expect_status(200).body;

    let secrets = [
        SECRET_WORD,
        SECRET_TEXT,
        SECRET_DEVICE_TOKEN,
        SECRET_MESSAGE,
        PUBLIC_WORD,
        media_id.as_str(),
    ];
    let tokens = refused_tokens(data_dir.path(), other_dir.path(), "alice");
    let routes = routes(&media_id);
    let mut checked = 0;
    for (kind, token) in &tokens {
        for route in &routes {
            let context = format!("{} with {kind}", route.name);
            let mut request = route.request(&app);
            if let Some(token) = token {
                request = request.header("authorization", format!("Bearer {token}"));
            }
            let answer = Answer::read(request.send().await.expect("sent")).await;
            assert!(!answer.status.is_server_error(), "{context}: {}", answer.text);
            assert_eq!(answer.status.as_u16(), 401, "{context}: {}", answer.text);
            let answer = answer.expect_problem(401, "unauthorized");
            let challenge = answer.header("www-authenticate").unwrap_or_default();
            assert!(
                challenge == "Bearer" || challenge.starts_with("Bearer "),
                "{context}: challenge {challenge:?}"
            );
            assert!(answer.header("x-request-id").is_some(), "{context}");
            assert_no_leak(&answer, &secrets, &context);
            checked += 1;
        }
    }
    assert_eq!(checked, tokens.len() * routes.len());

    // Other schemes and a second Authorization header are refused too.
    for header in ["Basic YWxpY2U6cGFzc3dvcmQ=", "Token abc", "Bearer", "bearer  "] {
        let answer = Answer::read(
            app.anonymous(Method::GET, "/v1/items/notes/secret")
                .header("authorization", header)
                .send()
                .await
                .expect("sent"),
        )
        .await
        .expect_problem(401, "unauthorized");
        assert_no_leak(&answer, &secrets, header);
    }

    // Nothing the refused requests tried happened.
    assert_eq!(alice_item(&alice).await, before);
    assert_eq!(alice.get("/v1/devices").await.expect_status(200).body, devices_before);
    assert_eq!(
        alice.get("/v1/sync?limit=100").await.expect_status(200).body,
        sync_before,
        "a refused request committed a change"
    );
    let bobs_inbox = bob.get("/v1/messages").await.expect_status(200);
    assert!(!bobs_inbox.text.contains("forged"), "{}", bobs_inbox.text);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_user_gets_404_for_private_things_and_never_sees_them() {
    let data_dir = tempfile::tempdir().expect("a temporary directory");
    let app = server(data_dir.path()).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let mallory = app.user("mallory").await;
    let media_id = seed(&alice, &bob).await;
    let before = alice_item(&alice).await;
    let secrets = [
        SECRET_WORD,
        SECRET_TEXT,
        SECRET_DEVICE_TOKEN,
        SECRET_MESSAGE,
        media_id.as_str(),
    ];
    let check = |answer: Answer, status: u16, code: Option<&str>, context: &str| {
        assert!(!answer.status.is_server_error(), "{context}: {}", answer.text);
        assert_ne!(answer.status.as_u16(), 403, "{context}: never 403: {}", answer.text);
        let answer = match code {
            Some(code) => answer.expect_problem(status, code),
            None => answer.expect_status(status),
        };
        assert_no_leak(&answer, &secrets, context);
        answer
    };

    // Alice's private item, under every item route: Mallory's own namespace has no such item.
    let item = "/v1/items/notes/secret";
    check(mallory.get(item).await, 404, Some("not_found"), "get item");
    check(
        mallory.get(&format!("{item}?version=1")).await,
        404,
        Some("not_found"),
        "get item version",
    );
    check(
        mallory.get(&format!("{item}/history")).await,
        404,
        Some("not_found"),
        "history",
    );
    check(
        mallory.patch(item, &json!({"data": {"text": "patched"}})).await,
        404,
        Some("not_found"),
        "patch item",
    );
    check(
        mallory.post(&format!("{item}/restore"), &json!({"version": 1})).await,
        404,
        Some("not_found"),
        "restore",
    );
    check(mallory.delete(item).await, 404, Some("not_found"), "delete item");
    let listing = check(mallory.get("/v1/items/notes").await, 200, None, "list items");
    assert_eq!(listing.body["items"], json!([]));
    // The owner route: private is 404 exactly like an absent item, public is readable.
    let private = check(
        mallory.get("/v1/users/alice/items/notes/secret").await,
        404,
        Some("not_found"),
        "public read of a private item",
    );
    let absent = mallory
        .get("/v1/users/alice/items/notes/never-written")
        .await
        .expect_problem(404, "not_found");
    assert_eq!(
        private.body, absent.body,
        "a private item is indistinguishable from none"
    );
    let public = check(
        mallory.get("/v1/users/alice/items/notes/shared").await,
        200,
        None,
        "public read of a public item",
    );
    assert_eq!(public.body["data"]["headline"], PUBLIC_WORD);
    assert_eq!(public.body["owner"], "alice");

    // Search: never Alice's private item, in any scope or collection; her public item is found.
    for query in [
        format!("/v1/search?q={SECRET_WORD}"),
        format!("/v1/search?q={SECRET_WORD}&scope=mine"),
        format!("/v1/search?q={SECRET_WORD}&scope=public"),
        format!("/v1/search?q={SECRET_WORD}&scope=all&collection=notes"),
        "/v1/search?q=vault".to_owned(),
    ] {
        let found = check(mallory.get(&query).await, 200, None, &query);
        assert_eq!(found.body["found"], 0, "{query}: {}", found.text);
    }
    let public_hits = check(
        mallory.get(&format!("/v1/search?q={PUBLIC_WORD}&scope=public")).await,
        200,
        None,
        "search public",
    );
    assert_eq!(public_hits.body["found"], 1);

    // Feeds, inboxes, devices, pushes and media: only Mallory's own (empty) ones.
    let sync = check(mallory.get("/v1/sync").await, 200, None, "sync");
    assert_eq!(sync.body["changes"], json!([]));
    let inbox = check(mallory.get("/v1/messages").await, 200, None, "messages");
    assert_eq!(inbox.body["messages"], json!([]));
    let devices = check(mallory.get("/v1/devices").await, 200, None, "devices");
    assert_eq!(devices.body["devices"], json!([]));
    check(mallory.get("/v1/dev/pushes").await, 200, None, "dev pushes");
    check(
        mallory.get(&format!("/v1/media/{media_id}")).await,
        404,
        Some("not_found"),
        "get media",
    );
    check(
        mallory.delete("/v1/devices/alice-phone").await,
        404,
        Some("not_found"),
        "remove device",
    );

    // Writes by Mallory land in her own namespace and leave Alice's untouched.
    let hers = check(
        mallory.put(item, &json!({"data": {"text": "mallory's own"}})).await,
        201,
        None,
        "put item",
    );
    assert_eq!(hers.body["owner"], "mallory");
    assert_eq!(hers.body["version"], 1);
    check(
        mallory
            .put(
                "/v1/devices/alice-phone",
                &json!({"platform": "fcm", "token": "mallory-token"}),
            )
            .await,
        200,
        None,
        "register device",
    );
    check(
        mallory
            .post("/v1/messages", &json!({"to": "alice", "text": "hello from mallory"}))
            .await,
        202,
        None,
        "send message",
    );
    let media = check(
        mallory
            .post("/v1/media", &json!({"content_type": "image/png", "size": 10}))
            .await,
        201,
        None,
        "declare media",
    );
    assert_ne!(media.body["id"], media_id.as_str());
    // Mallory's sync now shows her own changes and still nothing of Alice's.
    let sync = check(mallory.get("/v1/sync").await, 200, None, "sync after writes");
    assert!(sync.body["changes"].as_array().is_some_and(|c| !c.is_empty()));

    assert_eq!(alice_item(&alice).await, before);
    let alice_devices = alice.get("/v1/devices").await.expect_status(200);
    assert_eq!(
        alice_devices.body["devices"],
        json!([{"device_id": "alice-phone", "platform": "apns", "enabled": true}])
    );
    // Once Alice makes her public item private, Mallory loses it: 404 and out of her search.
    alice
        .patch("/v1/items/notes/shared", &json!({"visibility": "private"}))
        .await
        .expect_status(200);
    check(
        mallory.get("/v1/users/alice/items/notes/shared").await,
        404,
        Some("not_found"),
        "public read after it went private",
    );
    eventually(EVENTUALLY, || async {
        let found = mallory.get(&format!("/v1/search?q={PUBLIC_WORD}")).await;
        (found.body["found"] == 0).then_some(())
    })
    .await
    .expect("the item leaves other users' search once private");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_gets_2xx_on_every_route() {
    let data_dir = tempfile::tempdir().expect("a temporary directory");
    let app = server(data_dir.path()).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let media_id = seed(&alice, &bob).await;
    let expected: &[(&str, u16)] = &[
        ("put item", 200),
        ("patch item", 200),
        ("get item", 200),
        ("get item version", 200),
        ("list items", 200),
        ("history", 200),
        ("restore", 200),
        ("public read of a private item", 200),
        ("public read of a public item", 200),
        ("sync", 200),
        ("search", 200),
        ("send message", 202),
        ("messages", 200),
        ("register device", 200),
        ("devices", 200),
        ("declare media", 201),
        ("get media", 200),
        ("dev pushes", 200),
        ("remove device", 204),
        ("delete item", 204),
    ];
    let routes = routes(&media_id);
    assert_eq!(routes.len(), expected.len(), "every route has an expectation");
    for (route, (name, status)) in routes.iter().zip(expected) {
        assert_eq!(route.name, *name);
        let answer = alice.send(route.request(&app).bearer_auth(alice.token())).await;
        assert_eq!(answer.status.as_u16(), *status, "{}: {}", route.name, answer.text);
    }
    // The reads answered Alice's own data.
    let history = alice.get("/v1/items/notes/secret/history").await.expect_status(200);
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
            "item.replaced",
            "item.patched",
            "item.restored",
            "item.deleted"
        ]
    );
    let search = alice.get(&format!("/v1/search?q={SECRET_WORD}&scope=mine")).await;
    assert!(search.status.is_success(), "{}", search.text);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_worked_is_refused_once_it_expires() {
    let data_dir = tempfile::tempdir().expect("a temporary directory");
    let app = server(data_dir.path()).await;
    let alice = app.user("alice").await;
    alice
        .put("/v1/items/notes/secret", &json!({"data": {"text": SECRET_TEXT}}))
        .await
        .expect_status(201);
    // Signed with the server's key, valid for one second (plus the verifier's few seconds of leeway).
    let key = DevIdentityProvider::open(data_dir.path()).expect("the server's key loads");
    let user = UserId::parse("alice").expect("a user id");
    let now = Timestamp::from_millis(now_secs() * 1000);
    let (short, _) = key
        .issue(&user, now, Duration::from_secs(1))
        .expect("a short-lived token");
    let short_lived = app.user_with_token("alice", &short);
    // Accepted first, so a verifier that remembers good tokens has remembered this one.
    short_lived.get("/v1/items/notes/secret").await.expect_status(200);
    let refused = eventually(Duration::from_secs(30), || async {
        let answer = short_lived.get("/v1/items/notes/secret").await;
        (answer.status.as_u16() == 401).then_some(answer)
    })
    .await
    .expect("the token is refused after it expires, remembered or not");
    let refused = refused.expect_problem(401, "unauthorized");
    assert_no_leak(&refused, &[SECRET_TEXT], "an expired token");
    app.shutdown().await;
}
