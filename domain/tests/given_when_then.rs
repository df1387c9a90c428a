//! Given/when/then tests of the item aggregate: given past events, when a command arrives, then these events (or this rejection).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // Test code: a failed unwrap is a failed test.

use rookery_domain::event::{ItemChanged, ItemState};
use rookery_domain::history::{replay, state_at};
use rookery_domain::item::decide;
use rookery_domain::{
    CollectionName, EventId, EventMeta, EventPayload, ItemCommand, ItemHead, ItemId, ItemKey, ItemRejection, Limits,
    NewEvent, Precondition, Seq, StoredEvent, Timestamp, UserId, Version, Visibility,
};
use serde_json::{Map, Value, json};

const NOW: Timestamp = Timestamp::from_millis(1_795_600_800_000);

fn owner() -> UserId {
    UserId::parse("alice").unwrap()
}

fn key() -> ItemKey {
    ItemKey::new(CollectionName::parse("notes").unwrap(), ItemId::parse("n1").unwrap())
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

/// A scenario under test: the events so far, folded into a head.
struct Scenario {
    events: Vec<StoredEvent>,
    limits: Limits,
}

fn given(payloads: Vec<EventPayload>) -> Scenario {
    let events = payloads
        .into_iter()
        .enumerate()
        .map(|(i, payload)| {
            NewEvent {
                event_id: EventId::parse(format!("e{i}")).unwrap(),
                at: Timestamp::from_millis(NOW.as_millis() - 1000 + i as u64),
                payload,
                meta: EventMeta::default(),
            }
            .stored(&owner(), Seq(i as u64 + 1))
        })
        .collect();
    Scenario {
        events,
        limits: Limits::default(),
    }
}

fn nothing() -> Scenario {
    given(Vec::new())
}

impl Scenario {
    fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    fn head(&self) -> ItemHead {
        replay(&owner(), &self.events)
    }

    fn when(self, command: ItemCommand, precondition: Precondition) -> Outcome {
        Outcome(decide(&key(), &self.head(), command, precondition, NOW, &self.limits))
    }
}

struct Outcome(Result<EventPayload, ItemRejection>);

impl Outcome {
    #[track_caller]
    fn then(self, expected: EventPayload) {
        assert_eq!(self.0, Ok(expected));
    }

    #[track_caller]
    fn then_rejected(self, expected: ItemRejection) {
        assert_eq!(self.0, Err(expected));
    }

    #[track_caller]
    fn then_rejected_as(self, matches: fn(&ItemRejection) -> bool) {
        match self.0 {
            Err(rejection) => assert!(matches(&rejection), "unexpected rejection {rejection:?}"),
            Ok(event) => panic!("expected a rejection, got {event:?}"),
        }
    }
}

fn state(data: Value, visibility: Visibility, created_at: Timestamp) -> Option<ItemState> {
    Some(ItemState {
        visibility,
        created_at,
        data: object(data),
    })
}

fn changed(version: u64, state: Option<ItemState>) -> ItemChanged {
    ItemChanged {
        collection: key().collection,
        id: key().id,
        version: Version(version),
        state,
        restored_from: None,
    }
}

fn created(version: u64, data: Value) -> EventPayload {
    EventPayload::ItemCreated(changed(version, state(data, Visibility::Private, NOW)))
}

fn put(data: Value) -> ItemCommand {
    ItemCommand::Put {
        data: object(data),
        visibility: None,
    }
}

const CREATED_AT: Timestamp = Timestamp::from_millis(1_795_600_799_000);

fn history_created(data: Value) -> EventPayload {
    EventPayload::ItemCreated(changed(1, state(data, Visibility::Private, CREATED_AT)))
}

#[test]
fn put_on_an_unused_key_creates_version_one() {
    nothing()
        .when(put(json!({"a": 1})), Precondition::None)
        .then(created(1, json!({"a": 1})));
}

#[test]
fn put_on_a_live_item_replaces_it_and_keeps_visibility_and_creation_time() {
    given(vec![EventPayload::ItemCreated(changed(
        1,
        state(json!({"a": 1}), Visibility::Public, CREATED_AT),
    ))])
    .when(put(json!({"b": 2})), Precondition::None)
    .then(EventPayload::ItemReplaced(changed(
        2,
        state(json!({"b": 2}), Visibility::Public, CREATED_AT),
    )));
}

#[test]
fn put_after_a_delete_creates_again_with_the_next_version() {
    given(vec![
        history_created(json!({"a": 1})),
        EventPayload::ItemDeleted(changed(2, None)),
    ])
    .when(put(json!({"a": 2})), Precondition::None)
    .then(created(3, json!({"a": 2})));
}

#[test]
fn stale_if_match_is_a_conflict_naming_the_current_version() {
    given(vec![
        history_created(json!({})),
        EventPayload::ItemPatched(changed(2, state(json!({"x": 1}), Visibility::Private, CREATED_AT))),
    ])
    .when(put(json!({})), Precondition::IfMatch(Version(1)))
    .then_rejected(ItemRejection::VersionConflict {
        current: Some(Version(2)),
    });
}

#[test]
fn if_match_on_a_key_never_used_is_a_conflict_with_no_current_version() {
    nothing()
        .when(put(json!({})), Precondition::IfMatch(Version(1)))
        .then_rejected(ItemRejection::VersionConflict { current: None });
}

#[test]
fn if_match_on_a_deleted_item_is_a_conflict_because_it_has_no_current_representation() {
    given(vec![
        history_created(json!({})),
        EventPayload::ItemDeleted(changed(2, None)),
    ])
    .when(put(json!({})), Precondition::IfMatch(Version(2)))
    .then_rejected(ItemRejection::VersionConflict {
        current: Some(Version(2)),
    });
}

#[test]
fn if_none_match_star_creates_only() {
    nothing()
        .when(put(json!({})), Precondition::IfAbsent)
        .then(created(1, json!({})));
    given(vec![history_created(json!({}))])
        .when(put(json!({})), Precondition::IfAbsent)
        .then_rejected(ItemRejection::VersionConflict {
            current: Some(Version(1)),
        });
}

#[test]
fn patch_merges_per_rfc_7396_and_can_change_visibility() {
    given(vec![history_created(json!({"title": "Trip", "tags": ["a"], "gone": 1, "nested": {"x": 1, "y": 2}}))])
        .when(
            ItemCommand::Patch { patch: json!({"data": {"gone": null, "tags": ["b"], "nested": {"y": null, "z": 3}}, "visibility": "public"}) },
            Precondition::IfMatch(Version(1)),
        )
        .then(EventPayload::ItemPatched(changed(
            2,
            state(json!({"title": "Trip", "tags": ["b"], "nested": {"x": 1, "z": 3}}), Visibility::Public, CREATED_AT),
        )));
}

#[test]
fn patch_of_a_missing_or_deleted_item_is_not_found() {
    nothing()
        .when(
            ItemCommand::Patch {
                patch: json!({"data": {}}),
            },
            Precondition::None,
        )
        .then_rejected(ItemRejection::NotFound);
    given(vec![
        history_created(json!({})),
        EventPayload::ItemDeleted(changed(2, None)),
    ])
    .when(
        ItemCommand::Patch {
            patch: json!({"data": {}}),
        },
        Precondition::None,
    )
    .then_rejected(ItemRejection::NotFound);
}

#[test]
fn patch_that_breaks_the_shape_is_invalid() {
    let invalid = |r: &ItemRejection| matches!(r, ItemRejection::Invalid(_));
    for patch in [
        json!({"data": 5}),
        json!({"visibility": "secret"}),
        json!({"owner": "bob"}),
        json!([1]),
    ] {
        given(vec![history_created(json!({}))])
            .when(ItemCommand::Patch { patch }, Precondition::None)
            .then_rejected_as(invalid);
    }
}

#[test]
fn delete_of_a_live_item_records_a_delete_and_a_second_delete_is_not_found() {
    given(vec![history_created(json!({}))])
        .when(ItemCommand::Delete, Precondition::None)
        .then(EventPayload::ItemDeleted(changed(2, None)));
    given(vec![
        history_created(json!({})),
        EventPayload::ItemDeleted(changed(2, None)),
    ])
    .when(ItemCommand::Delete, Precondition::None)
    .then_rejected(ItemRejection::NotFound);
}

#[test]
fn restore_brings_back_an_earlier_state_as_a_new_version() {
    let scenario = given(vec![
        history_created(json!({"v": 1})),
        EventPayload::ItemReplaced(changed(2, state(json!({"v": 2}), Visibility::Private, CREATED_AT))),
        EventPayload::ItemDeleted(changed(3, None)),
    ]);
    let target = state_at(&scenario.events, Version(1));
    let mut expected = changed(4, state(json!({"v": 1}), Visibility::Private, NOW));
    expected.restored_from = Some(Version(1));
    scenario
        .when(
            ItemCommand::Restore {
                version: Version(1),
                target,
            },
            Precondition::None,
        )
        .then(EventPayload::ItemRestored(expected));
}

#[test]
fn restore_to_a_version_out_of_range_is_not_found_and_to_a_delete_is_invalid() {
    let scenario = || {
        given(vec![
            history_created(json!({})),
            EventPayload::ItemDeleted(changed(2, None)),
        ])
    };
    let events = scenario().events;
    scenario()
        .when(
            ItemCommand::Restore {
                version: Version(9),
                target: state_at(&events, Version(9)),
            },
            Precondition::None,
        )
        .then_rejected(ItemRejection::NotFound);
    scenario()
        .when(
            ItemCommand::Restore {
                version: Version(2),
                target: state_at(&events, Version(2)),
            },
            Precondition::None,
        )
        .then_rejected_as(|r| matches!(r, ItemRejection::Invalid(_)));
}

#[test]
fn data_over_the_size_limit_is_too_large_and_too_deep_data_is_refused() {
    nothing()
        .with_limits(Limits {
            max_data_bytes: 10,
            ..Limits::default()
        })
        .when(put(json!({"text": "far too long for ten bytes"})), Precondition::None)
        .then_rejected_as(|r| matches!(r, ItemRejection::TooLarge(_)));
    let mut deep = json!("leaf");
    for _ in 0..40 {
        deep = json!({ "d": deep });
    }
    nothing()
        .when(put(deep), Precondition::None)
        .then_rejected_as(|r| matches!(r, ItemRejection::TooDeep(_)));
}

#[test]
fn replaying_the_same_events_twice_gives_the_same_head() {
    let scenario = given(vec![
        history_created(json!({"a": 1})),
        EventPayload::ItemDeleted(changed(2, None)),
    ]);
    let once = scenario.head();
    let doubled: Vec<StoredEvent> = scenario.events.iter().chain(scenario.events.iter()).cloned().collect();
    assert_eq!(replay(&owner(), &doubled), once);
    assert_eq!(once.version, Version(2));
    assert!(once.item.is_none());
}
