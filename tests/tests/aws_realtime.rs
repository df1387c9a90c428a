//! Realtime on AWS: the connection registry against moto's DynamoDB, and the realtime Lambda function's
//! handler on real API Gateway WebSocket events (`tests/fixtures/realtime/`) and DynamoDB stream batches.
//!
//! What runs where: the connections table and the events table are moto's DynamoDB (it emulates both,
//! strongly consistent reads and TTL attributes included, though it never expires rows itself, so expiry
//! is tested through the registry's clock). The `@connections` management API is a recording stand-in
//! ([`RecordingConnections`]): moto accepts any `PostToConnection` and never answers `410 Gone`, so it
//! could not show a gone connection being forgotten.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // Test code: a failed unwrap is a failed test.

use rookery_adapters_aws::realtime::{CONNECTION_TTL, MAX_CONNECTIONS_PER_USER, Registered};
use rookery_tests::aws::moto;
use rookery_tests::fixtures::{Outcome, at, user};

/// A registry on a fresh connections table of the test binary's moto server.
async fn registry() -> Result<rookery_adapters_aws::realtime::ConnectionRegistry, rookery_tests::fixtures::BoxError> {
    let clients = moto::clients().await?;
    let table = moto::unique_name("connections-");
    clients.create_connections_table(&table).await?;
    Ok(clients.connection_registry(&table))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_is_live_for_its_owner_only_after_resume_and_gone_after_disconnect() -> Outcome {
    let registry = registry().await?;
    let (alice, bob) = (user("alice")?, user("bob")?);
    assert_eq!(registry.connect("c1=", &alice, at(0)).await?, Registered::Recorded);
    assert_eq!(registry.connect("c2=", &alice, at(0)).await?, Registered::Recorded);
    assert_eq!(registry.connect("c3=", &bob, at(0)).await?, Registered::Recorded);
    assert_eq!(registry.owner_of("c1=", at(1)).await?, Some(alice.clone()));
    assert_eq!(registry.owner_of("c3=", at(1)).await?, Some(bob.clone()));
    assert_eq!(registry.owner_of("nope", at(1)).await?, None);
    assert!(
        registry.following(&alice, at(1)).await?.is_empty(),
        "nobody resumed yet"
    );

    assert!(registry.follow("c1=", &alice).await?);
    assert!(registry.follow("c3=", &bob).await?);
    assert_eq!(registry.following(&alice, at(2)).await?, vec!["c1=".to_owned()]);
    assert_eq!(registry.following(&bob, at(2)).await?, vec!["c3=".to_owned()]);

    assert_eq!(registry.disconnect("c1=").await?, Some(alice.clone()));
    assert!(registry.following(&alice, at(3)).await?.is_empty());
    assert_eq!(registry.owner_of("c1=", at(3)).await?, None);
    assert!(
        !registry.follow("c1=", &alice).await?,
        "a forgotten connection cannot go live"
    );
    assert_eq!(
        registry.disconnect("c1=").await?,
        None,
        "disconnecting twice is harmless"
    );
    assert_eq!(registry.following(&bob, at(3)).await?, vec!["c3=".to_owned()]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_expire_after_api_gateways_two_hours() -> Outcome {
    let registry = registry().await?;
    let alice = user("alice")?;
    registry.connect("old=", &alice, at(0)).await?;
    registry.follow("old=", &alice).await?;
    let ttl = u64::try_from(CONNECTION_TTL.as_millis())?;
    assert_eq!(
        registry.following(&alice, at(ttl - 1_000)).await?,
        vec!["old=".to_owned()]
    );
    assert!(registry.following(&alice, at(ttl)).await?.is_empty());
    assert_eq!(registry.owner_of("old=", at(ttl)).await?, None);
    // An expired connection does not count against the user's limit, and its rows still delete.
    for i in 0..MAX_CONNECTIONS_PER_USER {
        assert_eq!(
            registry.connect(&format!("new{i}="), &alice, at(ttl)).await?,
            Registered::Recorded
        );
    }
    assert_eq!(registry.disconnect("old=").await?, Some(alice));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_holds_at_most_sixteen_connections() -> Outcome {
    let registry = registry().await?;
    let alice = user("alice")?;
    for i in 0..MAX_CONNECTIONS_PER_USER {
        assert_eq!(
            registry.connect(&format!("c{i}="), &alice, at(0)).await?,
            Registered::Recorded
        );
    }
    assert_eq!(registry.connect("one-more=", &alice, at(0)).await?, Registered::TooMany);
    assert_eq!(registry.owner_of("one-more=", at(0)).await?, None);
    assert_eq!(
        registry.connect("c0=", &alice, at(0)).await?,
        Registered::Recorded,
        "recording a connection again is not one more"
    );
    registry.disconnect("c5=").await?;
    assert_eq!(
        registry.connect("one-more=", &alice, at(0)).await?,
        Registered::Recorded
    );
    assert_eq!(
        registry.connect("other=", &user("bob")?, at(0)).await?,
        Registered::Recorded
    );
    Ok(())
}

mod function {
    //! The realtime function's handler on fixture events, over moto's DynamoDB and the recording stand-in.

    use std::sync::OnceLock;
    use std::time::Duration;

    use rookery_adapters_aws::DynamoStore;
    use rookery_adapters_aws::jwt::{JwksConfig, JwksVerifier, KeySource};
    use rookery_adapters_aws::realtime::ConnectionRegistry;
    use rookery_adapters_memory::identity::DevIdentityProvider;
    use rookery_adapters_memory::{MemoryEventStore, SystemClock};
    use rookery_domain::{Seq, StoredEvent, Version, Visibility};
    use rookery_entrypoints::lambda::realtime::{FanOut, RealtimeHandler, RealtimeRoutes};
    use rookery_entrypoints::lambda::stream::decode_lambda_record;
    use rookery_entrypoints::realtime::protocol::change_frame;
    use rookery_ports::cursor::seq_cursor;
    use rookery_ports::{AppendBatch, EventStore};
    use rookery_tests::aws::connections::RecordingConnections;
    use rookery_tests::aws::{dynamo_store, moto};
    use rookery_tests::fixtures::{BoxError, Outcome, item_payload, key, new_event, object, user, wall_clock};
    use serde_json::{Value, json};

    fn identity() -> &'static DevIdentityProvider {
        static IDENTITY: OnceLock<DevIdentityProvider> = OnceLock::new();
        IDENTITY.get_or_init(|| DevIdentityProvider::ephemeral().unwrap())
    }

    fn token(name: &str) -> String {
        identity()
            .issue(&user(name).unwrap(), wall_clock(), Duration::from_secs(3600))
            .unwrap()
            .0
    }

    /// A fixture of `tests/fixtures/realtime/` for `connection`, with `token` in its query string.
    fn fixture(name: &str, connection: &str, token: &str) -> Value {
        let path = format!("{}/fixtures/realtime/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(path).unwrap();
        serde_json::from_str(&text.replace("{{CONNECTION}}", connection).replace("{{TOKEN}}", token)).unwrap()
    }

    fn message(connection: &str, body: &str) -> Value {
        let mut event = fixture("message-resume.json", connection, "");
        event["body"] = json!(body);
        event
    }

    struct Deployment<H> {
        store: DynamoStore,
        table: String,
        registry: ConnectionRegistry,
        api: RecordingConnections,
        handler: H,
    }

    async fn deployment() -> Result<Deployment<impl Handle>, BoxError> {
        let (clients, store) = dynamo_store().await?;
        let table = moto::unique_name("connections-");
        clients.create_connections_table(&table).await?;
        let registry = clients.connection_registry(&table);
        let api = RecordingConnections::new();
        let config = identity().verifier_config();
        let verifier = JwksVerifier::new(
            JwksConfig::new(config.issuer, config.audience, KeySource::Static(config.jwks)),
            SystemClock::new(),
        )?;
        let routes = RealtimeRoutes::new(
            store.clone(),
            verifier,
            registry.clone(),
            api.clone(),
            SystemClock::new(),
        );
        let fan_out = FanOut::new(registry.clone(), api.clone(), SystemClock::new());
        let handler = RealtimeHandler::new(routes, decode_lambda_record, fan_out);
        Ok(Deployment {
            table: clients.config().table.clone(),
            store,
            registry,
            api,
            handler,
        })
    }

    /// The handler, whatever its record decoder's type.
    trait Handle {
        async fn call(&self, payload: &Value) -> Result<Value, String>;
    }

    impl<S, V, A, K, D> Handle for RealtimeHandler<S, V, A, K, D>
    where
        S: EventStore,
        V: rookery_ports::IdentityVerifier,
        A: rookery_adapters_aws::realtime::ConnectionsApi,
        K: rookery_ports::Clock,
        D: rookery_entrypoints::lambda::RecordDecoder,
    {
        async fn call(&self, payload: &Value) -> Result<Value, String> {
            self.handle(&payload.to_string()).await.map_err(|e| e.to_string())
        }
    }

    /// Appends `count` item creations to `owner`'s stream.
    async fn write(store: &DynamoStore, owner: &str, count: u64) -> Result<Vec<StoredEvent>, BoxError> {
        let owner = user(owner)?;
        let head = store.last_seq(&owner).await?;
        let mut events = Vec::new();
        for i in 0..count {
            let key = key("notes", &format!("n{}", head.0 + i))?;
            let data = object(json!({"text": format!("note {i}")}));
            events.push(new_event(
                item_payload(&key, Version(1), Some(data), Visibility::Private, true, wall_clock()),
                wall_clock(),
            )?);
        }
        let mut stored = Vec::new();
        for chunk in events.chunks(25) {
            stored.extend(
                store
                    .append(AppendBatch {
                        owner: owner.clone(),
                        expected_seq: Some(Seq(head.0 + stored.len() as u64)),
                        item_versions: Vec::new(),
                        events: chunk.to_vec(),
                        idempotency: None,
                    })
                    .await?,
            );
        }
        Ok(stored)
    }

    /// One call to moto's DynamoDB Streams API, as the SDK would make it.
    async fn streams_call(target: &str, body: Value) -> Result<Value, BoxError> {
        let response = reqwest::Client::new()
            .post(&moto::moto()?.endpoint)
            .header("Content-Type", "application/x-amz-json-1.0")
            .header("X-Amz-Target", target)
            .header(
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=testing/20261206/us-east-1/dynamodb/aws4_request, SignedHeaders=host, Signature=0",
            )
            .body(body.to_string())
            .send()
            .await?
            .error_for_status()?;
        Ok(response.json().await?)
    }

    /// Every record of `table`'s stream so far, as a Lambda event source mapping hands them over.
    async fn stream_batch(table: &str) -> Result<Value, BoxError> {
        let described = streams_call("DynamoDB_20120810.DescribeTable", json!({"TableName": table})).await?;
        let arn = described["Table"]["LatestStreamArn"]
            .as_str()
            .ok_or("no stream")?
            .to_owned();
        let stream = streams_call("DynamoDBStreams_20120810.DescribeStream", json!({"StreamArn": arn})).await?;
        let mut records = Vec::new();
        for shard in stream["StreamDescription"]["Shards"].as_array().ok_or("no shards")? {
            let iterator = streams_call(
                "DynamoDBStreams_20120810.GetShardIterator",
                json!({"StreamArn": arn, "ShardId": shard["ShardId"], "ShardIteratorType": "TRIM_HORIZON"}),
            )
            .await?;
            let page = streams_call(
                "DynamoDBStreams_20120810.GetRecords",
                json!({"ShardIterator": iterator["ShardIterator"], "Limit": 1000}),
            )
            .await?;
            for record in page["Records"].as_array().ok_or("no records")? {
                let mut record = record.clone();
                record["eventSourceARN"] = json!(arn);
                records.push(record);
            }
        }
        Ok(json!({ "Records": records }))
    }

    fn changes(frames: &[Value]) -> Vec<u64> {
        frames
            .iter()
            .filter(|f| f["type"] == "change")
            .map(|f| f["change"]["seq"].as_u64().unwrap())
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connect_takes_the_query_or_header_token_and_refuses_others_with_401() -> Outcome {
        let d = deployment().await?;
        let answer = d
            .handler
            .call(&fixture("connect-query-token.json", "c1=", &token("alice")))
            .await?;
        assert_eq!(answer["statusCode"], 200, "{answer}");
        assert_eq!(d.registry.owner_of("c1=", wall_clock()).await?, Some(user("alice")?));

        let mut header = fixture("connect-query-token.json", "c2=", "");
        header["queryStringParameters"] = Value::Null;
        header["multiValueQueryStringParameters"] = Value::Null;
        let unauthenticated = d.handler.call(&header).await?;
        assert_eq!(unauthenticated["statusCode"], 401, "{unauthenticated}");
        header["headers"]["Authorization"] = json!(format!("Bearer {}", token("bob")));
        assert_eq!(d.handler.call(&header).await?["statusCode"], 200);
        assert_eq!(d.registry.owner_of("c2=", wall_clock()).await?, Some(user("bob")?));

        let forged = d
            .handler
            .call(&fixture("connect-query-token.json", "c3=", "not.a.token"))
            .await?;
        assert_eq!(forged["statusCode"], 401, "{forged}");
        assert_eq!(d.registry.owner_of("c3=", wall_clock()).await?, None);

        let gone = d.handler.call(&fixture("disconnect.json", "c1=", "")).await?;
        assert_eq!(gone["statusCode"], 200);
        assert_eq!(d.registry.owner_of("c1=", wall_clock()).await?, None);
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn resume_replays_from_the_table_then_sends_ready() -> Outcome {
        let d = deployment().await?;
        let events = write(&d.store, "alice", 3).await?;
        d.handler
            .call(&fixture("connect-query-token.json", "c1=", &token("alice")))
            .await?;

        let since = seq_cursor(Seq(1));
        let body = json!({"type": "resume", "since": since}).to_string();
        assert_eq!(d.handler.call(&message("c1=", &body)).await?["statusCode"], 200);
        let frames = d.api.frames("c1=");
        let expected: Vec<Value> = events[1..]
            .iter()
            .map(|e| serde_json::from_str(change_frame(e).unwrap().as_str()).unwrap())
            .collect();
        assert_eq!(
            frames[..2],
            expected[..],
            "the same change frames as rookery serve sends"
        );
        assert_eq!(frames[2], json!({"type": "ready", "cursor": seq_cursor(Seq(3))}));
        assert_eq!(
            d.registry.following(&user("alice")?, wall_clock()).await?,
            vec!["c1=".to_owned()]
        );

        // Without since: from the head, nothing replayed. The fixture's own frame is that resume.
        d.handler.call(&fixture("message-resume.json", "c1=", "")).await?;
        assert_eq!(
            d.api.frames("c1=")[3],
            json!({"type": "ready", "cursor": seq_cursor(Seq(3))})
        );
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ping_bad_frames_and_bad_cursors_are_answered_and_unknown_connections_closed() -> Outcome {
        let d = deployment().await?;
        d.handler
            .call(&fixture("connect-query-token.json", "c1=", &token("alice")))
            .await?;
        d.handler.call(&fixture("message-default-ping.json", "c1=", "")).await?;
        d.handler.call(&message("c1=", "hello")).await?;
        d.handler
            .call(&message("c1=", r#"{"type":"resume","since":"bogus"}"#))
            .await?;
        let past = json!({"type": "resume", "since": seq_cursor(Seq(5))}).to_string();
        d.handler.call(&message("c1=", &past)).await?;
        let frames = d.api.frames("c1=");
        assert_eq!(frames[0], json!({"type": "pong"}));
        for frame in &frames[1..] {
            assert_eq!(frame["type"], "error", "{frame}");
            assert_eq!(frame["code"], "invalid_request", "{frame}");
        }
        assert_eq!(frames.len(), 4);

        d.handler.call(&fixture("message-resume.json", "stranger=", "")).await?;
        assert_eq!(d.api.closed(), vec!["stranger=".to_owned()]);
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "slow: 1,002 appends take about six minutes on moto; run with --ignored"]
    async fn a_resume_more_than_a_thousand_behind_is_told_to_catch_up() -> Outcome {
        let d = deployment().await?;
        write(&d.store, "alice", 1_002).await?;
        d.handler
            .call(&fixture("connect-query-token.json", "c1=", &token("alice")))
            .await?;
        let body = json!({"type": "resume", "since": seq_cursor(Seq(1))}).to_string();
        d.handler.call(&message("c1=", &body)).await?;
        assert_eq!(
            d.api.frames("c1="),
            vec![json!({"type": "behind", "cursor": seq_cursor(Seq(1))})]
        );
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_fan_out_posts_each_change_to_its_owners_live_connections_only() -> Outcome {
        let d = deployment().await?;
        for (connection, name) in [("a1=", "alice"), ("a2=", "alice"), ("b1=", "bob"), ("gone=", "alice")] {
            d.handler
                .call(&fixture("connect-query-token.json", connection, &token(name)))
                .await?;
        }
        for live in ["a1=", "b1=", "gone="] {
            d.handler.call(&fixture("message-resume.json", live, "")).await?;
        }
        d.api.make_gone("gone=");
        write(&d.store, "alice", 2).await?;
        write(&d.store, "bob", 1).await?;
        let batch = stream_batch(&d.table).await?;
        let answer = d.handler.call(&batch).await?;
        assert_eq!(answer["batchItemFailures"], json!([]), "{answer}");
        assert_eq!(changes(&d.api.frames("a1=")), vec![1, 2]);
        assert_eq!(changes(&d.api.frames("b1=")), vec![1]);
        assert!(
            d.api.frames("a2=").is_empty(),
            "a connection that never resumed gets nothing"
        );
        assert_eq!(
            d.registry.owner_of("gone=", wall_clock()).await?,
            None,
            "410 Gone forgets it"
        );
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn changes_of_an_erased_owner_delivered_again_reach_none_of_their_connections() -> Outcome {
        let d = deployment().await?;
        for (connection, name) in [("a1=", "alice"), ("b1=", "bob")] {
            d.handler
                .call(&fixture("connect-query-token.json", connection, &token(name)))
                .await?;
            d.handler.call(&fixture("message-resume.json", connection, "")).await?;
        }
        write(&d.store, "alice", 2).await?;
        write(&d.store, "bob", 1).await?;
        // Erased after the changes were written, before their stream records reach the fan-out: the
        // records stay in the stream, as a redelivery within its 24 hours would bring them.
        d.store.erase_owner(&user("alice")?, wall_clock()).await?;
        let answer = d.handler.call(&stream_batch(&d.table).await?).await?;
        assert_eq!(answer["batchItemFailures"], json!([]), "{answer}");
        assert!(
            changes(&d.api.frames("a1=")).is_empty(),
            "nothing of the erased owner is posted to the socket they still had open"
        );
        assert_eq!(
            changes(&d.api.frames("b1=")),
            vec![1],
            "another owner's change still goes out"
        );
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_post_names_its_record_and_a_redelivery_completes_the_feed() -> Outcome {
        let d = deployment().await?;
        d.handler
            .call(&fixture("connect-query-token.json", "a1=", &token("alice")))
            .await?;
        d.handler.call(&fixture("message-resume.json", "a1=", "")).await?;
        write(&d.store, "alice", 3).await?;
        d.api.set_failing("a1=", true);
        let batch = stream_batch(&d.table).await?;
        let answer = d.handler.call(&batch).await?;
        let failed = answer["batchItemFailures"][0]["itemIdentifier"].clone();
        let records = batch["Records"].as_array().unwrap();
        let first_event = records
            .iter()
            .find(|r| r["eventName"] == "INSERT" && r["dynamodb"]["NewImage"]["kind"]["S"] == "event")
            .unwrap();
        assert_eq!(failed, first_event["dynamodb"]["SequenceNumber"], "{answer}");

        // Lambda delivers the batch again from that record.
        d.api.set_failing("a1=", false);
        let from = records
            .iter()
            .position(|r| r["dynamodb"]["SequenceNumber"] == failed)
            .unwrap();
        let again = json!({"Records": records[from..]});
        assert_eq!(d.handler.call(&again).await?["batchItemFailures"], json!([]));
        assert_eq!(changes(&d.api.frames("a1=")), vec![1, 2, 3]);
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_change_too_large_for_api_gateway_becomes_behind() -> Outcome {
        let d = deployment().await?;
        d.handler
            .call(&fixture("connect-query-token.json", "a1=", &token("alice")))
            .await?;
        d.handler.call(&fixture("message-resume.json", "a1=", "")).await?;
        write(&d.store, "alice", 1).await?;
        d.api.limit_frames(100);
        let answer = d.handler.call(&stream_batch(&d.table).await?).await?;
        assert_eq!(answer["batchItemFailures"], json!([]));
        let frames = d.api.frames("a1=");
        assert_eq!(frames[0]["type"], "ready", "the resume's");
        assert_eq!(frames[1..], [json!({"type": "behind", "cursor": seq_cursor(Seq(0))})]);
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn realtime_connect_refuses_an_erased_account_with_410() -> Outcome {
        // The marker comes from the event store port; the memory store answers it as every store must.
        let store = MemoryEventStore::in_memory();
        store.erase_owner(&user("erased")?, wall_clock()).await?;
        let clients = moto::clients().await?;
        let table = moto::unique_name("connections-");
        clients.create_connections_table(&table).await?;
        let registry = clients.connection_registry(&table);
        let api = RecordingConnections::new();
        let config = identity().verifier_config();
        let verifier = JwksVerifier::new(
            JwksConfig::new(config.issuer, config.audience, KeySource::Static(config.jwks)),
            SystemClock::new(),
        )?;
        let routes = RealtimeRoutes::new(store, verifier, registry.clone(), api.clone(), SystemClock::new());
        let fan_out = FanOut::new(registry.clone(), api.clone(), SystemClock::new());
        let handler = RealtimeHandler::new(routes, decode_lambda_record, fan_out);

        let answer = handler
            .call(&fixture("connect-query-token.json", "e1=", &token("erased")))
            .await?;
        assert_eq!(answer["statusCode"], 410, "{answer}");
        let body: Value = serde_json::from_str(answer["body"].as_str().ok_or("a body")?)?;
        assert_eq!(body["code"], "account_erased", "{body}");
        assert_eq!(
            registry.owner_of("e1=", wall_clock()).await?,
            None,
            "an erased user's connection is never recorded"
        );
        let live = handler
            .call(&fixture("connect-query-token.json", "a1=", &token("alice")))
            .await?;
        assert_eq!(live["statusCode"], 200, "another user still connects: {live}");
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_payload_of_neither_kind_is_an_error() -> Outcome {
        let d = deployment().await?;
        assert!(d.handler.call(&json!({"hello": "world"})).await.is_err());
        assert!(
            d.handler
                .call(&json!({"Records": [{"eventSource": "aws:sqs"}]}))
                .await
                .is_err()
        );
        Ok(())
    }
}
