//! The Lambda functions' handlers, run in-process on real event JSON (`tests/fixtures/`) with the memory
//! adapters behind the same ports the AWS adapters implement.
//!
//! API Gateway REST (v1) and HTTP API (v2) proxy requests, with and without a Cognito authorizer, go
//! through the same handler the binaries give the Lambda runtime; DynamoDB stream batches (INSERT,
//! MODIFY and REMOVE records, laid out as the DynamoDB event store writes its rows) go through the
//! stream consumer with the adapters' record decoder. Nothing here needs the Lambda runtime or AWS.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // Test code: a failed unwrap is a failed test.

mod common;

mod harness {
    //! Memory adapters composed like the AWS ones, development tokens, fixtures and stream batches.

    use std::path::PathBuf;

    use base64::Engine;
    use rookery_adapters_aws::jwt::JwksVerifier;
    use rookery_adapters_memory::{
        Faults, Faulty, LocalMediaStore, MemoryEventStore, MemoryPushGateway, MemorySearchIndex, SystemClock, UlidIds,
    };
    use rookery_domain::StoredEvent;
    use rookery_entrypoints::ApiConfig;
    use rookery_entrypoints::http::Services;
    use rookery_entrypoints::lambda::stream::decode_lambda_record;
    use rookery_entrypoints::lambda::{ApiHandler, Function, MessagesHandler, RecordDecoder, StreamConsumer};
    use rookery_ports::{Indexer, PushDispatcher, ServiceConfig};
    use serde_json::{Value, json};

    /// The memory adapters' services, with the index and push gateway wrapped for fault injection.
    pub(crate) type TestServices = Services<
        MemoryEventStore,
        SystemClock,
        UlidIds,
        Faulty<MemorySearchIndex>,
        Faulty<MemoryPushGateway>,
        LocalMediaStore,
    >;

    /// The push dispatcher of [`TestServices`].
    pub(crate) type TestDispatcher = PushDispatcher<MemoryEventStore, SystemClock, UlidIds, Faulty<MemoryPushGateway>>;

    /// What one deployment of the four functions shares: the store, index and push gateway.
    pub(crate) struct Harness {
        pub(crate) services: TestServices,
        pub(crate) store: MemoryEventStore,
        pub(crate) index: MemorySearchIndex,
        pub(crate) index_faults: Faults,
        pub(crate) push: MemoryPushGateway,
        pub(crate) push_faults: Faults,
        verifier: JwksVerifier<SystemClock>,
    }

    impl Harness {
        pub(crate) fn new() -> Self {
            let store = MemoryEventStore::in_memory();
            let index = MemorySearchIndex::new();
            let index_faults = Faults::new();
            let push = MemoryPushGateway::new();
            let push_faults = Faults::new();
            let services = Services::new(
                store.clone(),
                SystemClock::new(),
                UlidIds::new(),
                Faulty::new(index.clone(), index_faults.clone()),
                Faulty::new(push.clone(), push_faults.clone()),
                LocalMediaStore::in_memory("http://127.0.0.1:9", b"lambda-test-secret".to_vec()),
                ServiceConfig::default(),
            );
            let verifier = crate::common::verifier();
            Self {
                services,
                store,
                index,
                index_faults,
                push,
                push_faults,
                verifier,
            }
        }

        pub(crate) fn token(&self, user: &str) -> String {
            crate::common::token(user)
        }

        /// The handler a function's binary builds, over this deployment's adapters.
        pub(crate) fn api(&self, function: Function) -> ApiHandler {
            ApiHandler::new(
                self.services.router(self.verifier.clone(), ApiConfig::default()),
                function,
            )
        }

        pub(crate) fn indexer(&self) -> StreamConsumer<impl RecordDecoder + use<>, Indexer<Faulty<MemorySearchIndex>>> {
            StreamConsumer::new(
                decode_lambda_record,
                Indexer::new(Faulty::new(self.index.clone(), self.index_faults.clone())),
            )
        }

        pub(crate) fn messages(&self) -> MessagesHandler<impl RecordDecoder + use<>, TestDispatcher> {
            let dispatcher = PushDispatcher::new(
                self.store.clone(),
                Faulty::new(self.push.clone(), self.push_faults.clone()),
                SystemClock::new(),
                self.services.devices.clone(),
                ServiceConfig::default().idempotency_ttl,
            );
            MessagesHandler::new(
                self.api(Function::Messages),
                StreamConsumer::new(decode_lambda_record, dispatcher),
            )
        }

        /// A fixture with every `{{token:<user>}}` replaced by a valid token for that user.
        pub(crate) fn event(&self, name: &str) -> Value {
            let mut text = fixture_text(name);
            while let Some(start) = text.find("{{token:") {
                let end = start + text[start..].find("}}").unwrap();
                let user = text[start + "{{token:".len()..end].to_owned();
                text.replace_range(start..end + 2, &self.token(&user));
            }
            serde_json::from_str(&text).unwrap()
        }

        /// Answers one proxy event as `function` would.
        pub(crate) async fn call(&self, function: Function, event: &Value) -> Value {
            let request = serde_json::from_value(event.clone()).unwrap();
            let context = lambda_runtime::Context::default();
            self.api(function)
                .handle(lambda_runtime::LambdaEvent::new(request, context))
                .await
                .unwrap()
        }

        /// Every event committed so far, in commit order (what DynamoDB Streams would carry).
        pub(crate) fn committed(&self) -> Vec<StoredEvent> {
            self.store.changes_after(0, 10_000).unwrap().0
        }

        /// The index's entries as `(owner, collection/id, version, live)`.
        pub(crate) fn indexed(&self) -> Vec<(String, String, u64, bool)> {
            self.index
                .snapshot()
                .unwrap()
                .into_iter()
                .map(|e| (e.owner.to_string(), e.key.to_string(), e.version.0, e.item.is_some()))
                .collect()
        }
    }

    pub(crate) fn fixture_text(name: &str) -> String {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    pub(crate) fn fixture(name: &str) -> Value {
        serde_json::from_str(&fixture_text(name)).unwrap()
    }

    /// The JSON body of a proxy response.
    pub(crate) fn body(response: &Value) -> Value {
        let text = response["body"].as_str().unwrap_or_default();
        let bytes = if response["isBase64Encoded"] == true {
            base64::engine::general_purpose::STANDARD.decode(text).unwrap()
        } else {
            text.as_bytes().to_vec()
        };
        if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        }
    }

    /// A header of a proxy response: HTTP API answers carry `headers`, REST API answers `multiValueHeaders`.
    pub(crate) fn header<'a>(response: &'a Value, name: &str) -> Option<&'a str> {
        response["headers"][name]
            .as_str()
            .or_else(|| response["multiValueHeaders"][name][0].as_str())
    }

    /// The sequence numbers a stream answer names.
    pub(crate) fn failures(answer: &Value) -> Vec<String> {
        answer["batchItemFailures"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["itemIdentifier"].as_str().unwrap().to_owned())
            .collect()
    }

    pub(crate) fn sequence_number(batch: &Value, record: usize) -> String {
        batch["Records"][record]["dynamodb"]["SequenceNumber"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// A Lambda DynamoDB stream batch carrying `events` as the event store's rows, each event row
    /// followed by the user head's MODIFY (bookkeeping the consumers must ignore).
    pub(crate) fn stream_batch(events: &[StoredEvent], first_sequence_number: u128) -> Value {
        let mut sequence_number = first_sequence_number;
        let mut next = || {
            sequence_number += 1;
            sequence_number.to_string()
        };
        let mut records = Vec::new();
        for event in events {
            let pk = json!({"S": format!("user#{}", event.owner)});
            let keys = json!({"pk": pk, "sk": {"S": format!("evt#{:020}", event.seq.0)}});
            let mut image = json!({
                "pk": pk,
                "sk": keys["sk"],
                "kind": {"S": "event"},
                "owner": {"S": event.owner.to_string()},
                "seq": {"N": event.seq.0.to_string()},
                "type": {"S": event.payload.type_name()},
                "event": {"S": serde_json::to_string(event).unwrap()},
            });
            if let Some(change) = event.payload.as_item() {
                image["collection"] = json!({"S": change.collection.to_string()});
                image["item_id"] = json!({"S": change.id.to_string()});
                image["version"] = json!({"N": change.version.0.to_string()});
            }
            records.push(record("INSERT", &keys, Some(image), &next()));
            let head_keys = json!({"pk": pk, "sk": {"S": "head"}});
            let head = json!({"pk": pk, "sk": {"S": "head"}, "kind": {"S": "head"}, "last_seq": {"N": event.seq.0.to_string()}});
            records.push(record("MODIFY", &head_keys, Some(head), &next()));
        }
        json!({ "Records": records })
    }

    fn record(name: &str, keys: &Value, image: Option<Value>, sequence_number: &str) -> Value {
        let mut dynamodb = json!({
            "ApproximateCreationDateTime": 1_795_600_800,
            "Keys": keys,
            "SequenceNumber": sequence_number,
            "SizeBytes": 256,
            "StreamViewType": "NEW_IMAGE",
        });
        if let Some(image) = image {
            dynamodb["NewImage"] = image;
        }
        json!({
            "eventID": format!("ev-{sequence_number}"),
            "eventName": name,
            "eventVersion": "1.1",
            "eventSource": "aws:dynamodb",
            "awsRegion": "us-east-1",
            "dynamodb": dynamodb,
            "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/rookery-events/stream/2026-11-25T09:00:00.000",
        })
    }
}

mod api {
    //! API Gateway proxy requests through the items, search and messages handlers.

    use rookery_entrypoints::lambda::Function;
    use serde_json::{Value, json};

    use crate::harness::{Harness, body, header};

    #[tokio::test]
    async fn http_api_health_check_carries_the_gateway_request_id() {
        let h = Harness::new();
        let response = h.call(Function::Items, &h.event("apigw-v2-healthz.json")).await;
        assert_eq!(response["statusCode"], 200);
        assert_eq!(body(&response), json!({"status": "ok"}));
        assert_eq!(header(&response, "x-request-id"), Some("Hc9zJgXyIAMEV-Q="));
    }

    #[tokio::test]
    async fn http_api_put_behind_a_cognito_authorizer_creates_the_item_of_the_token_subject() {
        let h = Harness::new();
        let response = h
            .call(Function::Items, &h.event("apigw-v2-put-item-cognito.json"))
            .await;
        assert_eq!(response["statusCode"], 201, "{response}");
        assert_eq!(header(&response, "etag"), Some("\"1\""));
        assert!(header(&response, "content-type").is_some_and(|v| v.starts_with("application/json")));
        let item = body(&response);
        assert_eq!(item["owner"], "alice");
        assert_eq!(item["version"], 1);
        assert_eq!(item["visibility"], "public");
        assert_eq!(item["data"]["headline"], "Trip to Lisbon");
        assert!(
            response
                .get("multiValueHeaders")
                .is_none_or(|m| m.as_object().is_none_or(|m| m.is_empty()))
        );
    }

    #[tokio::test]
    async fn authorizer_claims_never_stand_in_for_the_bearer_token() {
        let h = Harness::new();
        // The claims say mallory, the token says alice: the token wins.
        let mut event = h.event("apigw-v2-put-item-cognito.json");
        event["requestContext"]["authorizer"]["jwt"]["claims"]["sub"] = json!("mallory");
        let response = h.call(Function::Items, &event).await;
        assert_eq!(response["statusCode"], 201, "{response}");
        assert_eq!(body(&response)["owner"], "alice");

        // Claims without a token are not a caller.
        let mut event = h.event("apigw-v2-put-item-cognito.json");
        event["headers"].as_object_mut().unwrap().remove("authorization");
        event["headers"]["if-none-match"] = json!("*");
        let response = h.call(Function::Items, &event).await;
        assert_eq!(response["statusCode"], 401, "{response}");
        assert!(header(&response, "www-authenticate").is_some_and(|v| v.starts_with("Bearer")));
        assert_eq!(body(&response)["code"], "unauthorized");
    }

    #[tokio::test]
    async fn rest_api_get_on_a_stage_reaches_the_route_and_echoes_the_client_request_id() {
        let h = Harness::new();
        let created = h
            .call(Function::Items, &h.event("apigw-v2-put-item-cognito.json"))
            .await;
        assert_eq!(created["statusCode"], 201);

        let response = h
            .call(Function::Items, &h.event("apigw-v1-get-item-cognito.json"))
            .await;
        assert_eq!(
            response["statusCode"], 200,
            "the stage prefix never reaches the router: {response}"
        );
        assert_eq!(response["multiValueHeaders"]["x-request-id"], json!(["client-req-42"]));
        assert_eq!(response["multiValueHeaders"]["etag"], json!(["\"1\""]));
        assert_eq!(body(&response)["id"], "trip");
    }

    #[tokio::test]
    async fn a_route_of_another_function_is_not_found_there() {
        let h = Harness::new();
        let message = h.event("apigw-v1-post-message-cognito.json");
        let response = h.call(Function::Items, &message).await;
        assert_eq!(response["statusCode"], 404, "{response}");
        assert_eq!(body(&response)["code"], "not_found");
        assert_eq!(
            response["multiValueHeaders"]["content-type"],
            json!(["application/problem+json"])
        );
        assert!(header(&response, "x-request-id").is_some());
        assert!(h.committed().is_empty(), "the refused request wrote nothing");

        let put = h.event("apigw-v2-put-item-cognito.json");
        assert_eq!(h.call(Function::Search, &put).await["statusCode"], 404);
        assert_eq!(h.call(Function::Messages, &put).await["statusCode"], 404);
        assert_eq!(h.call(Function::Messages, &message).await["statusCode"], 202);

        // Every function answers the health check.
        let health = h.event("apigw-v2-healthz.json");
        for function in [Function::Items, Function::Search, Function::Messages] {
            assert_eq!(h.call(function, &health).await["statusCode"], 200, "{function:?}");
        }
    }

    #[tokio::test]
    async fn base64_encoded_bodies_are_decoded() {
        let h = Harness::new();
        let response = h.call(Function::Items, &h.event("apigw-v2-put-device.json")).await;
        assert_eq!(response["statusCode"], 200, "{response}");
        assert_eq!(
            body(&response),
            json!({"device_id": "phone", "platform": "fcm", "enabled": true})
        );
    }

    #[tokio::test]
    async fn rest_api_message_is_accepted_and_replayed_under_its_idempotency_key() {
        let h = Harness::new();
        let event = h.event("apigw-v1-post-message-cognito.json");
        let first = h.call(Function::Messages, &event).await;
        assert_eq!(first["statusCode"], 202, "{first}");
        let accepted = body(&first);
        assert_eq!(accepted["status"], "accepted");
        let again = h.call(Function::Messages, &event).await;
        assert_eq!(again["statusCode"], 202);
        assert_eq!(
            body(&again),
            accepted,
            "a retry by API Gateway or the app changes nothing"
        );
        let received: Vec<Value> = h
            .committed()
            .iter()
            .filter(|e| e.payload.type_name() == "message.received")
            .map(|e| serde_json::to_value(e).unwrap())
            .collect();
        assert_eq!(received.len(), 1);
        assert_eq!(received[0]["owner"], "bob");
        assert_eq!(received[0]["payload"]["text"], "Dinner at eight?");
    }
}

mod stream {
    //! DynamoDB stream batches through the indexer's consumer.

    use rookery_entrypoints::lambda::{Function, StreamError};
    use serde_json::{Value, json};

    use crate::harness::{Harness, body, failures, fixture, sequence_number, stream_batch};

    async fn index(h: &Harness, batch: &Value) -> Result<Value, StreamError> {
        let event = serde_json::from_value(batch.clone()).unwrap();
        let answer = h.indexer().handle(&event).await?;
        Ok(serde_json::to_value(answer).unwrap())
    }

    fn entry(owner: &str, key: &str, version: u64, live: bool) -> (String, String, u64, bool) {
        (owner.to_owned(), key.to_owned(), version, live)
    }

    #[tokio::test]
    async fn inserts_of_event_rows_are_indexed_and_modify_remove_and_bookkeeping_are_ignored() {
        let h = Harness::new();
        let batch = fixture("stream-mixed-batch.json");
        let answer = index(&h, &batch).await.unwrap();
        assert_eq!(answer, json!({"batchItemFailures": []}));
        assert_eq!(
            h.indexed(),
            vec![
                entry("alice", "notes/draft", 2, false),
                entry("alice", "notes/trip", 2, true),
                entry("bob", "recipes/soup", 1, true),
            ]
        );
        let trip = h
            .index
            .snapshot()
            .unwrap()
            .into_iter()
            .find(|e| e.key.id.as_str() == "trip")
            .unwrap();
        let item = trip.item.unwrap();
        assert_eq!(
            item.data["text"], "Packing list and tickets",
            "the patched state, not the head row's"
        );
    }

    #[tokio::test]
    async fn a_batch_delivered_twice_changes_nothing() {
        let h = Harness::new();
        let batch = fixture("stream-mixed-batch.json");
        index(&h, &batch).await.unwrap();
        let once = h.index.snapshot().unwrap();
        let answer = index(&h, &batch).await.unwrap();
        assert_eq!(answer, json!({"batchItemFailures": []}));
        assert_eq!(h.index.snapshot().unwrap(), once);

        // An older batch arriving after a newer one changes nothing either: versions guard the index.
        let records = batch["Records"].as_array().unwrap();
        let first_two = json!({"Records": records[..2]});
        index(&h, &first_two).await.unwrap();
        assert_eq!(h.index.snapshot().unwrap(), once);
    }

    #[tokio::test]
    async fn a_batch_whose_third_record_fails_to_index_reports_exactly_that_record() {
        let h = Harness::new();
        let batch = fixture("stream-five-events.json");
        // The whole-batch write fails, then the indexer retries change by change; the third fails again.
        h.index_faults.target(rookery_adapters_memory::FaultTarget::Writes);
        h.index_faults.fail_nth(1);
        h.index_faults.fail_nth(4);
        let answer = index(&h, &batch).await.unwrap();
        assert_eq!(failures(&answer), vec![sequence_number(&batch, 2)]);
        assert_eq!(
            h.indexed(),
            vec![entry("carol", "notes/n1", 1, true), entry("carol", "notes/n2", 1, true)]
        );

        // Lambda delivers the batch again from the reported record.
        h.index_faults.heal();
        let records = batch["Records"].as_array().unwrap();
        let retry = json!({"Records": records[2..]});
        assert_eq!(index(&h, &retry).await.unwrap(), json!({"batchItemFailures": []}));
        assert_eq!(h.indexed().len(), 5);
    }

    #[tokio::test]
    async fn an_event_row_that_does_not_decode_stops_the_batch_at_that_record() {
        let h = Harness::new();
        let batch = fixture("stream-undecodable.json");
        let answer = index(&h, &batch).await.unwrap();
        assert_eq!(failures(&answer), vec![sequence_number(&batch, 1)]);
        assert_eq!(
            h.indexed(),
            vec![entry("dave", "notes/ok1", 1, true)],
            "nothing after the bad record is handled"
        );
    }

    #[tokio::test]
    async fn a_failed_record_without_a_sequence_number_fails_the_whole_invocation() {
        let h = Harness::new();
        let mut batch = fixture("stream-undecodable.json");
        batch["Records"][1]["dynamodb"]
            .as_object_mut()
            .unwrap()
            .remove("SequenceNumber");
        assert_eq!(index(&h, &batch).await, Err(StreamError::NoSequenceNumber { index: 1 }));
    }

    #[tokio::test]
    async fn writes_through_the_items_function_become_searchable_through_the_stream() {
        let h = Harness::new();
        assert_eq!(
            h.call(Function::Items, &h.event("apigw-v2-put-item-cognito.json"))
                .await["statusCode"],
            201
        );
        let search = h.event("apigw-v2-search-named-stage.json");
        let before = h.call(Function::Search, &search).await;
        assert_eq!(before["statusCode"], 200, "{before}");
        assert_eq!(body(&before)["found"], 0, "the write path never touches the index");

        let batch = stream_batch(&h.committed(), 5_000_000_000_000_000_000);
        assert_eq!(index(&h, &batch).await.unwrap(), json!({"batchItemFailures": []}));

        let after = h.call(Function::Search, &search).await;
        let results = body(&after);
        assert_eq!(results["found"], 1, "{results}");
        assert_eq!(results["hits"][0]["owner"], "alice");
        assert_eq!(results["hits"][0]["id"], "trip");
        assert_eq!(results["hits"][0]["item"]["data"]["headline"], "Trip to Lisbon");
    }
}

mod messages {
    //! Function 4: both kinds of invocation through one handler.

    use rookery_entrypoints::lambda::{Function, InvocationError};
    use serde_json::{Value, json};

    use crate::harness::{Harness, body, failures, sequence_number, stream_batch};

    async fn invoke(h: &Harness, payload: &Value) -> Result<Value, InvocationError> {
        h.messages()
            .handle(&payload.to_string(), lambda_runtime::Context::default())
            .await
    }

    /// Bob registers a phone through the items function, alice messages him through the messages function.
    async fn message_to_bob(h: &Harness) -> String {
        assert_eq!(
            h.call(Function::Items, &h.event("apigw-v2-put-device.json")).await["statusCode"],
            200
        );
        let accepted = invoke(h, &h.event("apigw-v1-post-message-cognito.json")).await.unwrap();
        assert_eq!(accepted["statusCode"], 202, "{accepted}");
        body(&accepted)["id"].as_str().unwrap().to_owned()
    }

    #[tokio::test]
    async fn a_message_from_the_rest_api_is_pushed_once_from_the_stream_however_often_it_is_delivered() {
        let h = Harness::new();
        let id = message_to_bob(&h).await;
        let batch = stream_batch(&h.committed(), 6_000_000_000_000_000_000);
        assert_eq!(invoke(&h, &batch).await.unwrap(), json!({"batchItemFailures": []}));
        let sent = h.push.sent().unwrap();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].owner.as_str(), "bob");
        assert_eq!(sent[0].device_id.as_str(), "phone");
        assert_eq!(sent[0].message_id(), Some(id));

        assert_eq!(invoke(&h, &batch).await.unwrap(), json!({"batchItemFailures": []}));
        assert_eq!(
            h.push.sent().unwrap().len(),
            1,
            "a batch delivered twice pushes nothing twice"
        );
    }

    #[tokio::test]
    async fn a_failing_push_reports_the_message_record_and_the_retry_delivers_it() {
        let h = Harness::new();
        message_to_bob(&h).await;
        let batch = stream_batch(&h.committed(), 7_000_000_000_000_000_000);
        let message_record = batch["Records"]
            .as_array()
            .unwrap()
            .iter()
            .position(|r| r["dynamodb"]["NewImage"]["type"]["S"] == "message.received")
            .unwrap();
        h.push_faults.target(rookery_adapters_memory::FaultTarget::Writes);
        h.push_faults.fail_nth(1);
        let answer = invoke(&h, &batch).await.unwrap();
        assert_eq!(failures(&answer), vec![sequence_number(&batch, message_record)]);
        assert!(h.push.sent().unwrap().is_empty());

        let records = batch["Records"].as_array().unwrap();
        let retry = json!({"Records": records[message_record..]});
        assert_eq!(invoke(&h, &retry).await.unwrap(), json!({"batchItemFailures": []}));
        assert_eq!(h.push.sent().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_payload_of_neither_kind_is_an_error() {
        let h = Harness::new();
        assert!(matches!(
            invoke(&h, &json!({"hello": "world"})).await,
            Err(InvocationError::Unrecognized(_))
        ));
        let sqs = json!({"Records": [{"eventSource": "aws:sqs", "body": "{}"}]});
        assert!(matches!(invoke(&h, &sqs).await, Err(InvocationError::ForeignRecords(Some(s))) if s == "aws:sqs"));
        let broken = json!({"Records": [{"eventSource": "aws:dynamodb", "dynamodb": 7}]});
        assert!(matches!(
            invoke(&h, &broken).await,
            Err(InvocationError::MalformedStream(_))
        ));
    }

    #[tokio::test]
    async fn an_empty_stream_batch_is_a_success() {
        let h = Harness::new();
        assert_eq!(
            invoke(&h, &json!({"Records": []})).await.unwrap(),
            json!({"batchItemFailures": []})
        );
    }
}

mod erasure {
    //! Erasure on Lambda: the indexer skipping an erased owner's redelivered events, and the eraser
    //! function finishing erasures from marker INSERTs of the stream.

    use rookery_adapters_aws::streams::erased_owner;
    use rookery_adapters_memory::{LocalMediaStore, MemoryDirectory};
    use rookery_domain::{Timestamp, UserId};
    use rookery_entrypoints::lambda::StreamConsumer;
    use rookery_entrypoints::lambda::compose::{eraser_function, indexer_function};
    use rookery_entrypoints::lambda::stream::decode_lambda_record;
    use rookery_ports::EventStore;
    use serde_json::{Value, json};
    use tokio::time::Instant;

    use crate::harness::{Harness, failures, fixture, sequence_number};

    fn user(id: &str) -> UserId {
        UserId::parse(id).unwrap()
    }

    #[tokio::test]
    async fn the_indexer_skips_a_redelivered_batch_of_an_erased_owner() {
        let h = Harness::new();
        h.store
            .erase_owner(&user("alice"), Timestamp::from_millis(1))
            .await
            .unwrap();
        let indexer = StreamConsumer::new(decode_lambda_record, indexer_function(h.store.clone(), h.index.clone()));
        let batch = serde_json::from_value(fixture("stream-mixed-batch.json")).unwrap();
        let answer = serde_json::to_value(indexer.handle(&batch).await.unwrap()).unwrap();
        assert_eq!(answer, json!({"batchItemFailures": []}));
        let owners: Vec<String> = h.indexed().into_iter().map(|(owner, ..)| owner).collect();
        assert_eq!(owners, vec!["bob"], "nothing of the erased alice was indexed again");
    }

    #[tokio::test]
    async fn skip_erased_hands_on_only_live_owners_events_and_names_a_failure_at_its_own_event() {
        use std::sync::{Arc, Mutex};

        use rookery_ports::batch::HandlerFn;
        use rookery_ports::{BatchFailure, BatchHandler, Failure, SkipErased};

        let h = Harness::new();
        h.store
            .erase_owner(&user("alice"), Timestamp::from_millis(1))
            .await
            .unwrap();
        let batch = serde_json::from_value(fixture("stream-mixed-batch.json")).unwrap();
        let events: Vec<rookery_domain::StoredEvent> = batch_events(&batch);
        let owners: Vec<&str> = events.iter().map(|e| e.owner.as_str()).collect();
        assert!(owners.contains(&"alice") && owners.contains(&"bob"), "{owners:?}");

        // The inner handler sees bob's events only, and fails at its first one.
        let seen = Arc::new(Mutex::new(Vec::new()));
        let inner = {
            let seen = seen.clone();
            HandlerFn(move |events: Vec<rookery_domain::StoredEvent>| {
                let seen = seen.clone();
                async move {
                    seen.lock().unwrap().extend(events.iter().map(|e| e.owner.to_string()));
                    Err(BatchFailure {
                        index: 0,
                        failure: Failure::transient("the index is down"),
                    })
                }
            })
        };
        let skipping = SkipErased::new(h.store.clone(), inner);
        let failure = skipping.handle(&events).await.unwrap_err();
        assert!(seen.lock().unwrap().iter().all(|owner| owner == "bob"));
        let first_of_bob = owners.iter().position(|o| *o == "bob").unwrap();
        assert_eq!(failure.index, first_of_bob, "named at bob's event in the whole batch");
    }

    fn batch_events(batch: &aws_lambda_events::event::dynamodb::Event) -> Vec<rookery_domain::StoredEvent> {
        batch
            .records
            .iter()
            .filter_map(|record| decode_lambda_record(record).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn the_eraser_finishes_each_marker_and_reports_one_it_could_not_finish() {
        let h = Harness::new();
        // Alice's documents are in the index (the indexer ran before her erasure), and her marker is written.
        let events = serde_json::from_value(fixture("stream-mixed-batch.json")).unwrap();
        StreamConsumer::new(decode_lambda_record, rookery_ports::Indexer::new(h.index.clone()))
            .handle(&events)
            .await
            .unwrap();
        assert!(h.indexed().iter().any(|(owner, ..)| owner == "alice"));
        h.store
            .erase_owner(&user("alice"), Timestamp::from_millis(1))
            .await
            .unwrap();

        let directory = MemoryDirectory::new();
        let media = LocalMediaStore::in_memory("http://127.0.0.1:9", b"eraser-secret".to_vec());
        let eraser = eraser_function(
            erased_owner,
            h.store.clone(),
            h.index.clone(),
            h.push.clone(),
            media,
            directory.clone(),
        );
        // Bob's marker was never written (a forged or misrouted record): it is refused and reported,
        // and nothing of his is touched.
        let batch: Value = fixture("stream-erasure-markers.json");
        let event = serde_json::from_value(batch.clone()).unwrap();
        let deadline = Instant::now() + std::time::Duration::from_secs(30);
        let answer = serde_json::to_value(eraser.handle(&event, deadline).await.unwrap()).unwrap();
        assert_eq!(failures(&answer), vec![sequence_number(&batch, 1)]);
        assert_eq!(directory.deleted(), vec![user("alice")]);
        let owners: Vec<String> = h.indexed().into_iter().map(|(owner, ..)| owner).collect();
        assert_eq!(owners, vec!["bob"], "alice's documents are gone, bob's stay");

        // Delivered again (Lambda retries from the failed record; a repeat of alice's is harmless).
        let alice_only = json!({"Records": [batch["Records"][0]]});
        let event = serde_json::from_value(alice_only).unwrap();
        let answer = serde_json::to_value(eraser.handle(&event, deadline).await.unwrap()).unwrap();
        assert_eq!(answer, json!({"batchItemFailures": []}));
        assert_eq!(directory.deleted(), vec![user("alice"), user("alice")]);
    }

    #[tokio::test]
    async fn a_failing_step_reports_the_marker_and_a_retry_finishes_it() {
        let h = Harness::new();
        h.store
            .erase_owner(&user("alice"), Timestamp::from_millis(1))
            .await
            .unwrap();
        let directory = MemoryDirectory::new();
        directory.fail(true);
        let media = LocalMediaStore::in_memory("http://127.0.0.1:9", b"eraser-secret".to_vec());
        let eraser = eraser_function(
            erased_owner,
            h.store.clone(),
            h.index.clone(),
            h.push.clone(),
            media,
            directory.clone(),
        );
        let batch: Value = fixture("stream-erasure-markers.json");
        let alice_only = json!({"Records": [batch["Records"][0]]});
        let event = serde_json::from_value(alice_only).unwrap();
        let answer = serde_json::to_value(eraser.handle(&event, eraser.stop_at(0)).await.unwrap()).unwrap();
        assert_eq!(failures(&answer), vec![sequence_number(&batch, 0)]);
        assert!(directory.deleted().is_empty());

        directory.fail(false);
        let answer = serde_json::to_value(eraser.handle(&event, eraser.stop_at(0)).await.unwrap()).unwrap();
        assert_eq!(answer, json!({"batchItemFailures": []}));
        assert_eq!(directory.deleted(), vec![user("alice")]);
    }
}
