//! Removing a device through the application service deletes its push endpoint, once, and never fails
//! the removal because the provider did.

use rookery_adapters_memory::{FaultTarget, Faults, Faulty, MemoryEventStore, MemoryPushGateway};
use rookery_domain::Platform;
use rookery_ports::{AppError, Caller, EventStore, Idempotency};
use rookery_tests::fixtures::{Outcome, device, user};
use rookery_tests::memory::{app_with, memory_app, memory_media};

fn idempotency(key: &str) -> Idempotency {
    Idempotency {
        key: key.into(),
        fingerprint: format!("DELETE /v1/devices/phone {key}"),
    }
}

#[tokio::test]
async fn removing_a_device_deletes_its_endpoint() -> Outcome {
    let app = memory_app();
    let alice = Caller::new(user("alice")?);
    let (phone, tablet) = (device("phone")?, device("tablet")?);
    app.devices
        .register_device(&alice, &phone, Platform::Fcm, "tok-phone", None)
        .await?;
    app.devices
        .register_device(&alice, &tablet, Platform::Apns, "tok-tablet", None)
        .await?;
    let endpoints = app.store().devices(&alice.user).await?;
    let (gone, kept) = (&endpoints[&phone].endpoint, &endpoints[&tablet].endpoint);
    assert!(app.push_gateway().endpoint(gone)?.is_some());

    app.devices.remove_device(&alice, &phone, None).await?;
    assert_eq!(
        app.push_gateway().endpoint(gone)?,
        None,
        "the removed device's endpoint"
    );
    assert!(
        app.push_gateway().endpoint(kept)?.is_some(),
        "the other device's endpoint"
    );
    assert!(matches!(
        app.devices.remove_device(&alice, &phone, None).await,
        Err(AppError::NotFound)
    ));
    Ok(())
}

#[tokio::test]
async fn a_replayed_removal_does_not_delete_the_endpoint_of_a_device_registered_again() -> Outcome {
    let app = memory_app();
    let alice = Caller::new(user("alice")?);
    let phone = device("phone")?;
    app.devices
        .register_device(&alice, &phone, Platform::Fcm, "tok", None)
        .await?;
    let key = idempotency("remove-1");
    app.devices.remove_device(&alice, &phone, Some(&key)).await?;
    app.devices
        .register_device(&alice, &phone, Platform::Fcm, "tok", None)
        .await?;
    let endpoint = app.store().devices(&alice.user).await?[&phone].endpoint.clone();

    // The client retries its removal with the same key: the recorded answer, and nothing more.
    app.devices.remove_device(&alice, &phone, Some(&key)).await?;
    assert!(app.store().devices(&alice.user).await?.contains_key(&phone));
    assert!(
        app.push_gateway().endpoint(&endpoint)?.is_some_and(|e| e.enabled),
        "the registered device keeps its endpoint"
    );
    Ok(())
}

#[tokio::test]
async fn a_failed_endpoint_delete_still_removes_the_device() -> Outcome {
    let faults = Faults::new();
    faults.target(FaultTarget::Writes);
    let push = Faulty::new(MemoryPushGateway::new(), faults.clone());
    let app = app_with(MemoryEventStore::in_memory(), push, memory_media());
    let alice = Caller::new(user("alice")?);
    let phone = device("phone")?;
    app.devices
        .register_device(&alice, &phone, Platform::Fcm, "tok", None)
        .await?;
    let endpoint = app.store().devices(&alice.user).await?[&phone].endpoint.clone();

    // The next write the gateway sees is the delete.
    faults.fail_nth(1);
    app.devices.remove_device(&alice, &phone, None).await?;
    assert_eq!(faults.injected(), 1, "the delete was attempted and failed");
    assert!(
        app.store().devices(&alice.user).await?.is_empty(),
        "the device is removed"
    );
    assert!(
        app.push_gateway().inner().endpoint(&endpoint)?.is_some(),
        "the endpoint is left behind"
    );
    Ok(())
}
