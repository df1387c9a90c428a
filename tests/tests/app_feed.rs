//! The application service's feed over events it does not show (devices, media): pages are only short at the end.

use rookery_domain::{Platform, Precondition};
use rookery_ports::Caller;
use rookery_tests::fixtures::{Outcome, device, key, object, user};
use rookery_tests::memory::memory_app;
use serde_json::json;

#[tokio::test]
async fn sync_reads_past_device_events_so_pages_are_full_until_the_end() -> Outcome {
    let app = memory_app();
    let alice = Caller::new(user("alice")?);
    let phone = device("phone")?;
    let mut written = Vec::new();
    for i in 0..6 {
        let note = key("notes", &format!("n{i}"))?;
        app.items
            .put_item(&alice, &note, object(json!({"i": i})), None, Precondition::None, None)
            .await?;
        written.push(note.id.to_string());
        // Between two item changes, many events the feed does not show.
        for t in 0..30 {
            app.devices
                .register_device(&alice, &phone, Platform::Fcm, &format!("token-{i}-{t}"), None)
                .await?;
        }
    }
    let mut cursor: Option<String> = None;
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let page = app.sync.sync(&alice, cursor.as_deref(), Some(2)).await?;
        pages += 1;
        assert!(
            page.changes.len() == 2 || !page.has_more,
            "a short page before the end: {page:?}"
        );
        for change in &page.changes {
            let value = serde_json::to_value(change)?;
            seen.push(value["id"].as_str().unwrap_or_default().to_owned());
        }
        cursor = Some(page.next_cursor);
        if !page.has_more {
            break;
        }
    }
    assert_eq!(seen, written);
    assert_eq!(pages, 3);
    // Caught up: an empty page hands back the cursor that was sent.
    let again = app.sync.sync(&alice, cursor.as_deref(), Some(2)).await?;
    assert!(again.changes.is_empty() && !again.has_more);
    assert_eq!(Some(again.next_cursor), cursor);
    Ok(())
}
