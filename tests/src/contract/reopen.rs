//! What a durable event store must show after it is closed and opened again: every answer it gave
//! before, read through the port. The file-backed memory store and the SQLite store run the same
//! scenario ([`write_a_little_of_everything`], then [`everything`] before and after reopening).

use rookery_adapters_memory::MemoryPushGateway;
use rookery_domain::{EventPayload, ItemKey, Platform, Precondition, Seq, UserId, Version, Visibility};
use rookery_ports::{Caller, EventStore, Idempotency};
use serde_json::json;

use crate::fixtures::{BoxError, device, key, object, user};
use crate::memory::{app_with, memory_media};

/// The users and items the scenario writes.
#[derive(Debug, Clone)]
pub struct Written {
    /// The users with a stream.
    pub owners: Vec<UserId>,
    /// The item keys used.
    pub keys: Vec<ItemKey>,
}

/// Writes items (created, patched, deleted, restored, one with an idempotency key), a message, a device
/// and a media object through the services over `store`.
///
/// # Errors
/// The first write that fails.
pub async fn write_a_little_of_everything<S: EventStore>(store: S) -> Result<Written, BoxError> {
    let (alice, bob) = (Caller::new(user("alice")?), Caller::new(user("bob")?));
    let keys = vec![key("notes", "a")?, key("notes", "b")?, key("todos", "a")?];
    let app = app_with(store, MemoryPushGateway::new(), memory_media());
    let idem = Idempotency {
        key: "idem-1".into(),
        fingerprint: "put a".into(),
    };
    for (i, k) in keys.iter().enumerate() {
        let data = object(json!({"i": i, "text": "ünïcødé"}));
        app.items
            .put_item(
                &alice,
                k,
                data,
                Some(Visibility::Public),
                Precondition::None,
                Some(&idem).filter(|_| i == 0),
            )
            .await?;
        let patch = json!({"data": {"patched": true}});
        app.items
            .patch_item(&alice, k, patch, Precondition::IfMatch(Version(1)), None)
            .await?;
    }
    app.items
        .delete_item(&alice, &keys[1], Precondition::None, None)
        .await?;
    app.items
        .restore_item(&alice, &keys[1], Version(1), Precondition::None, None)
        .await?;
    app.messages
        .send_message(&bob, alice.user.clone(), "hello".into(), Default::default(), None)
        .await?;
    app.devices
        .register_device(&alice, &device("phone")?, Platform::Fcm, "token-1", None)
        .await?;
    app.media.create_media(&alice, "image/png", 10, None).await?;
    let data = object(json!({"bob": 1}));
    app.items
        .put_item(&bob, &keys[0], data, None, Precondition::None, None)
        .await?;
    Ok(Written {
        owners: vec![alice.user, bob.user],
        keys,
    })
}

/// Everything `store` answers about what [`write_a_little_of_everything`] wrote, as text to compare.
///
/// # Errors
/// The first read that fails.
pub async fn everything<S: EventStore>(store: &S, written: &Written) -> Result<Vec<String>, BoxError> {
    let mut seen = vec![format!("{:?}", store.owners(None, 1_000).await?)];
    for owner in &written.owners {
        seen.push(format!("{:?}", store.last_seq(owner).await?));
        seen.push(format!("{:?}", store.read_feed(owner, Seq(0), 10_000).await?));
        seen.push(format!("{:?}", store.read_messages(owner, Seq(0), 10_000).await?));
        seen.push(format!("{:?}", store.devices(owner).await?));
        seen.push(format!("{:?}", store.idempotency(owner, "idem-1").await?));
        for key in &written.keys {
            seen.push(format!("{:?}", store.item_head(owner, key).await?));
            let history = store.item_history(owner, key, Version::NONE, 1_000).await?;
            seen.push(format!("{history:?}"));
            let listed = store.list_items(owner, &key.collection, None, 1_000).await?;
            seen.push(format!("{listed:?}"));
        }
        for event in store.read_feed(owner, Seq(0), 10_000).await? {
            if let EventPayload::MediaDeclared(object) = event.payload {
                seen.push(format!("{:?}", store.media(owner, &object.id).await?));
            }
        }
    }
    Ok(seen)
}
