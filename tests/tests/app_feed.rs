//! The feed carries every event of the user's stream (items, devices, media), so its seqs are
//! consecutive and a page is only short at the end.

use rookery_domain::{Platform, Precondition};
use rookery_ports::Caller;
use rookery_tests::fixtures::{Outcome, device, key, object, user};
use rookery_tests::memory::memory_app;
use serde_json::{Value, json};

#[tokio::test]
async fn the_feed_carries_every_event_with_consecutive_seqs_and_no_push_token() -> Outcome {
    let app = memory_app();
    let alice = Caller::new(user("alice")?);
    let phone = device("phone")?;
    let mut written = Vec::new();
    for i in 0..6 {
        let note = key("notes", &format!("n{i}"))?;
        app.items
            .put_item(&alice, &note, object(json!({"i": i})), None, Precondition::None, None)
            .await?;
        written.push(("item.created".to_owned(), note.id.to_string()));
        for t in 0..3 {
            app.devices
                .register_device(&alice, &phone, Platform::Fcm, &format!("token-{i}-{t}"), None)
                .await?;
            written.push(("device.changed".to_owned(), phone.to_string()));
        }
    }
    let created = app.media.create_media(&alice, "image/png", 10, None).await?;
    written.push(("media.declared".to_owned(), created.id.to_string()));
    app.devices.remove_device(&alice, &phone, None).await?;
    written.push(("device.changed".to_owned(), phone.to_string()));

    let mut cursor: Option<String> = None;
    let mut seen: Vec<Value> = Vec::new();
    let mut pages = 0;
    loop {
        let page = app.sync.sync(&alice, cursor.as_deref(), Some(4)).await?;
        pages += 1;
        assert!(
            page.changes.len() == 4 || !page.has_more,
            "a short page before the end: {page:?}"
        );
        for change in &page.changes {
            seen.push(serde_json::to_value(change)?);
        }
        cursor = Some(page.next_cursor);
        if !page.has_more {
            break;
        }
    }
    assert_eq!(pages, written.len().div_ceil(4));
    let seqs: Vec<u64> = seen.iter().filter_map(|c| c["seq"].as_u64()).collect();
    assert_eq!(
        seqs,
        (1..=written.len() as u64).collect::<Vec<_>>(),
        "consecutive from 1"
    );
    let shown: Vec<(String, String)> = seen
        .iter()
        .map(|c| {
            let kind = c["type"].as_str().unwrap_or_default().to_owned();
            let id = c["id"]
                .as_str()
                .or_else(|| c["device"]["device_id"].as_str())
                .or_else(|| c["media"]["id"].as_str())
                .unwrap_or_default()
                .to_owned();
            (kind, id)
        })
        .collect();
    assert_eq!(shown, written);
    let text = serde_json::to_string(&seen)?;
    assert!(!text.contains("token-"), "no push token in the feed: {text}");
    let last = seen.last().ok_or("a last change")?;
    assert_eq!(
        last["device"],
        json!({"device_id": "phone", "platform": "fcm", "enabled": false, "removed": true})
    );
    // Caught up: an empty page hands back the cursor that was sent.
    let again = app.sync.sync(&alice, cursor.as_deref(), Some(2)).await?;
    assert!(again.changes.is_empty() && !again.has_more);
    assert_eq!(Some(again.next_cursor), cursor);
    Ok(())
}
