//! Properties of the domain: fold determinism, version monotonicity, merge-patch laws, push payload limits,
//! and golden fixtures of every stored event schema.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // Test code: a failed unwrap is a failed test.

use proptest::prelude::*;
use rookery_domain::event::{decode, decode_slice};
use rookery_domain::history::{item_after, replay};
use rookery_domain::item::decide;
use rookery_domain::projection::push_payload;
use rookery_domain::{
    CollectionName, EventId, EventMeta, ItemCommand, ItemHead, ItemId, ItemKey, Limits, Message, MessageId, NewEvent,
    Platform, Precondition, Seq, StoredEvent, Timestamp, UserId, Version, Visibility,
};
use serde_json::{Map, Value, json};

fn owner() -> UserId {
    UserId::parse("alice").unwrap()
}

fn key() -> ItemKey {
    ItemKey::new(CollectionName::parse("notes").unwrap(), ItemId::parse("n1").unwrap())
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i32>().prop_map(Value::from),
        "[a-z ]{0,8}".prop_map(Value::from),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-d]", inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn json_object() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::btree_map("[a-d]", json_value(), 0..4).prop_map(|m| m.into_iter().collect())
}

fn command() -> impl Strategy<Value = ItemCommand> {
    prop_oneof![
        (
            json_object(),
            prop::option::of(prop_oneof![Just(Visibility::Private), Just(Visibility::Public)])
        )
            .prop_map(|(data, visibility)| ItemCommand::Put { data, visibility }),
        json_object().prop_map(|patch| ItemCommand::Patch {
            patch: json!({ "data": patch })
        }),
        Just(ItemCommand::Delete),
    ]
}

/// Runs commands in order, returning the stored events that were accepted.
fn run(commands: Vec<ItemCommand>) -> Vec<StoredEvent> {
    let mut events: Vec<StoredEvent> = Vec::new();
    for (i, command) in commands.into_iter().enumerate() {
        let head = replay(&owner(), &events);
        let now = Timestamp::from_millis(1_000 + i as u64);
        if let Ok(payload) = decide(&key(), &head, command, Precondition::None, now, &Limits::default()) {
            let event = NewEvent {
                event_id: EventId::parse(format!("e{i}")).unwrap(),
                at: now,
                payload,
                meta: EventMeta::default(),
            };
            events.push(event.stored(&owner(), Seq(events.len() as u64 + 1)));
        }
    }
    events
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn versions_grow_by_one_per_accepted_command(commands in prop::collection::vec(command(), 0..24)) {
        let events = run(commands);
        for (i, event) in events.iter().enumerate() {
            prop_assert_eq!(event.payload.as_item().map(|c| c.version), Some(Version(i as u64 + 1)));
        }
    }

    #[test]
    fn folding_is_deterministic_and_matches_the_last_event(commands in prop::collection::vec(command(), 1..24)) {
        let events = run(commands);
        let head = replay(&owner(), &events);
        prop_assert_eq!(&head, &replay(&owner(), &events));
        match events.last() {
            Some(last) => {
                prop_assert_eq!(head.version, last.payload.as_item().map(|c| c.version).unwrap());
                prop_assert_eq!(head.item, item_after(last));
            }
            None => prop_assert_eq!(head, ItemHead::default()),
        }
    }

    #[test]
    fn stored_events_round_trip_through_json(commands in prop::collection::vec(command(), 1..12)) {
        for event in run(commands) {
            let text = serde_json::to_vec(&event).unwrap();
            prop_assert_eq!(decode_slice(&text).unwrap(), event);
        }
    }

    #[test]
    fn a_merge_patch_applied_twice_equals_applied_once(data in json_object(), patch in json_object()) {
        let created = run(vec![ItemCommand::Put { data, visibility: None }]);
        let patch = json!({ "data": patch });
        let once = run_on(&created, ItemCommand::Patch { patch: patch.clone() });
        let twice = run_on(&once, ItemCommand::Patch { patch });
        prop_assert_eq!(
            replay(&owner(), &once).item.map(|i| i.data),
            replay(&owner(), &twice).item.map(|i| i.data)
        );
    }

    #[test]
    fn push_payloads_fit_the_platform_limit_and_keep_a_prefix_of_the_text(
        text in "\\PC{0,5000}",
        data in json_object(),
        platform in prop_oneof![Just(Platform::Apns), Just(Platform::ApnsSandbox), Just(Platform::Fcm)],
    ) {
        let message = Message {
            id: MessageId::parse("m1").unwrap(),
            from: UserId::parse("bob").unwrap(),
            to: owner(),
            text: text.clone(),
            data,
            sent_at: Timestamp::from_millis(0),
        };
        let payload = push_payload(platform, &message);
        prop_assert!(payload.len() <= platform.payload_limit());
        let parsed: Value = serde_json::from_str(&payload).unwrap();
        let body = match platform {
            Platform::Fcm => &parsed["notification"]["body"],
            _ => &parsed["aps"]["alert"]["body"],
        };
        let body = body.as_str().unwrap();
        let kept = body.strip_suffix('…').unwrap_or(body);
        prop_assert!(text.starts_with(kept), "body {kept:?} is not a prefix of the text");
    }
}

fn run_on(events: &[StoredEvent], command: ItemCommand) -> Vec<StoredEvent> {
    let mut events = events.to_vec();
    let head = replay(&owner(), &events);
    let now = Timestamp::from_millis(9_000 + events.len() as u64);
    if let Ok(payload) = decide(&key(), &head, command, Precondition::None, now, &Limits::default()) {
        let event = NewEvent {
            event_id: EventId::parse("p").unwrap(),
            at: now,
            payload,
            meta: EventMeta::default(),
        };
        events.push(event.stored(&owner(), Seq(events.len() as u64 + 1)));
    }
    events
}

#[test]
fn every_schema_1_event_in_the_golden_fixture_decodes_and_reencodes_unchanged() {
    let fixture = include_str!("fixtures/events-v1.jsonl");
    let mut types = std::collections::BTreeSet::new();
    for line in fixture.lines() {
        let original: Value = serde_json::from_str(line).unwrap();
        let event = decode(original.clone()).unwrap();
        types.insert(event.payload.type_name());
        assert_eq!(
            serde_json::to_value(&event).unwrap(),
            original,
            "re-encoding changed {line}"
        );
    }
    let expected = [
        "item.created",
        "item.replaced",
        "item.patched",
        "item.deleted",
        "item.restored",
        "message.received",
        "device.changed",
        "media.declared",
    ];
    assert_eq!(types, expected.into_iter().collect());
}

#[test]
fn an_event_from_a_future_schema_is_refused_not_misread() {
    let fixture = include_str!("fixtures/events-v1.jsonl");
    let mut event: Value = serde_json::from_str(fixture.lines().next().unwrap()).unwrap();
    event["schema"] = json!(2);
    assert!(decode(event).is_err());
}

#[test]
fn a_long_message_is_shortened_at_a_character_boundary() {
    let message = Message {
        id: MessageId::parse("m1").unwrap(),
        from: UserId::parse("bob").unwrap(),
        to: owner(),
        text: "é🦀".repeat(2000),
        data: Map::new(),
        sent_at: Timestamp::from_millis(0),
    };
    for platform in [Platform::Apns, Platform::Fcm] {
        let payload = push_payload(platform, &message);
        assert!(payload.len() <= 4096);
        assert!(payload.len() > 3500, "shortened more than needed: {}", payload.len());
        assert!(payload.contains('…'));
    }
}

#[test]
fn every_stored_event_is_in_the_feed_and_no_device_token_or_endpoint_is() {
    let fixture = include_str!("fixtures/events-v1.jsonl");
    for line in fixture.lines() {
        let event = decode(serde_json::from_str(line).unwrap()).unwrap();
        let change = rookery_domain::projection::feed_change(&event);
        assert_eq!(change.seq(), event.seq, "{line}");
        let shown = serde_json::to_value(&change).unwrap();
        assert_eq!(shown["type"], event.payload.type_name(), "{line}");
        let text = shown.to_string();
        for secret in ["\"token\"", "\"endpoint\"", "abc123", "ep-1", "ep-2"] {
            assert!(!text.contains(secret), "{secret} shown in {text}");
        }
        if event.payload.type_name() == "device.changed" {
            let device = &shown["device"];
            assert!(
                device["device_id"].is_string() && device["enabled"].is_boolean() && device["removed"].is_boolean()
            );
        }
    }
}
