//! Pushes through SNS on moto, checked against what moto recorded, and the four flows of the reference
//! architecture end to end on the AWS adapters.
//!
//! These tests read moto's state dump (`/moto-api/data.json`), which serialises every service's state; they
//! live in their own test binary, so their moto server holds only their own small state and stays fast.

use rookery_domain::{Platform, Seq, Visibility};
use rookery_ports::{EventStore, Indexer, PushGateway, PushOutcome};
use rookery_tests::aws::{cloudsearch_index, moto};
use rookery_tests::fixtures::{BoxError, Outcome, device, key, object, user};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sns_records_the_platform_payload_and_reports_disabled_endpoints() -> Outcome {
    let (clients, report) = moto::bootstrapped().await?;
    assert_eq!(report.platform_applications.len(), 3, "one application per platform");
    let gateway = clients.push_gateway();
    let bob = user("bob")?;
    let mut sent = Vec::new();
    for (platform, key) in [
        (Platform::Apns, "APNS"),
        (Platform::ApnsSandbox, "APNS_SANDBOX"),
        (Platform::Fcm, "GCM"),
    ] {
        let token = format!("token-{}", rookery_tests::fixtures::unique(key));
        let endpoint = gateway
            .register(&bob, &device("phone")?, platform, &token, None)
            .await?;
        let payload = json!({"hello": key}).to_string();
        assert_eq!(
            gateway.send(&endpoint, platform, &payload).await?,
            PushOutcome::Delivered
        );

        gateway.set_endpoint(&endpoint, None, false).await?;
        assert_eq!(
            gateway.send(&endpoint, platform, &payload).await?,
            PushOutcome::EndpointDisabled
        );
        assert_eq!(
            gateway.send(&endpoint, platform, &payload).await?,
            PushOutcome::EndpointDisabled,
            "every time"
        );
        let again = gateway
            .register(&bob, &device("phone")?, platform, &token, Some(&endpoint))
            .await?;
        assert_eq!(again, endpoint, "registering the token again re-enables its endpoint");
        assert_eq!(gateway.send(&again, platform, &payload).await?, PushOutcome::Delivered);
        sent.push((endpoint, key, payload));
    }
    assert_eq!(
        gateway
            .send(
                "arn:aws:sns:us-east-1:123456789012:endpoint/GCM/none/gone",
                Platform::Fcm,
                "{}"
            )
            .await?,
        PushOutcome::EndpointDisabled,
        "an endpoint that does not exist"
    );
    // Moto's state dump holds what each endpoint received; read it once (it dumps every service's state).
    let state = moto::state().await?;
    for (endpoint, key, payload) in sent {
        let messages = moto::published_in(&state, &endpoint);
        assert_eq!(messages.len(), 2, "{key}: two deliveries, nothing while disabled");
        for message in messages {
            let message: serde_json::Value = serde_json::from_str(&message)?;
            assert_eq!(
                message[key], payload,
                "{key}: the payload under the platform's key, as a JSON string"
            );
            assert_eq!(
                message.as_object().map(|m| m.len()),
                Some(2),
                "{key}: the platform key and `default`"
            );
        }
    }
    Ok(())
}

/// Polls `poller` into `handler` until it has handled at least `wanted` events more (bounded: a stream
/// that never yields them fails the test instead of hanging it).
async fn drain<H: rookery_adapters_aws::BatchHandler>(
    poller: &mut rookery_adapters_aws::StreamPoller,
    handler: &H,
    wanted: usize,
) -> Result<usize, BoxError> {
    let mut handled = 0;
    for _ in 0..20 {
        handled += poller.poll_once(handler).await?;
        if handled >= wanted {
            return Ok(handled);
        }
    }
    Err(format!("the stream yielded {handled} events, {wanted} expected").into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_four_flows_run_on_the_aws_adapters() -> Outcome {
    use rookery_entrypoints::http::Services;
    use rookery_ports::service::SearchRequest;
    use rookery_ports::{Caller, PushDispatcher, ServiceConfig};

    let (clients, _) = moto::bootstrapped().await?;
    let (_fake, search) = cloudsearch_index().await?;
    // Every adapter of an AWS deployment, with the system clock and ULIDs (as the Lambda functions use).
    let clock = rookery_adapters_memory::SystemClock::new();
    let app = Services::new(
        clients.event_store(),
        clock.clone(),
        rookery_adapters_memory::UlidIds::new(),
        search.clone(),
        clients.push_gateway(),
        clients.media_store()?,
        ServiceConfig::default(),
    );
    let (alice, bob) = (Caller::new(user("alice")?), Caller::new(user("bob")?));
    let mut indexing = clients.stream_poller().await?;
    let mut pushing = clients.stream_poller().await?;
    let indexer = Indexer::new(search);
    let dispatcher = PushDispatcher::new(
        clients.event_store(),
        clients.push_gateway(),
        clock,
        app.devices.clone(),
        ServiceConfig::default().idempotency_ttl,
    );

    // Function 1: items. Function 2: the stream drives the indexer. Function 3: search.
    let note = key("notes", "n1")?;
    let written = app
        .items
        .put_item(
            &alice,
            &note,
            object(json!({"title": "Harbour walk"})),
            Some(Visibility::Public),
            Default::default(),
            None,
        )
        .await?;
    assert!(written.created);
    app.items
        .put_item(
            &alice,
            &key("notes", "n2")?,
            object(json!({"title": "Harbour secret"})),
            None,
            Default::default(),
            None,
        )
        .await?;
    drain(&mut indexing, &indexer, 2).await?;
    let found = app
        .search
        .search(
            &bob,
            SearchRequest {
                q: "harbour".into(),
                ..Default::default()
            },
        )
        .await?;
    assert_eq!(
        found.hits.iter().map(|h| h.item.id.as_str()).collect::<Vec<_>>(),
        vec!["n1"],
        "only the public item"
    );
    assert_eq!(found.hits.first().map(|h| &h.item), Some(&written.item));

    // Function 4: a message lands in bob's stream and the dispatcher pushes it to his device.
    let token = format!("fcm-{}", rookery_tests::fixtures::unique("tok"));
    app.devices
        .register_device(&bob, &device("phone")?, Platform::Fcm, &token, None)
        .await?;
    let endpoint = clients
        .event_store()
        .devices(&bob.user)
        .await?
        .get(&device("phone")?)
        .map(|d| d.endpoint.clone())
        .ok_or("no device")?;
    app.messages
        .send_message(
            &alice,
            bob.user.clone(),
            "See you at the harbour".into(),
            Default::default(),
            None,
        )
        .await?;
    // alice's two items, bob's device registration and his message.
    drain(&mut pushing, &dispatcher, 4).await?;
    let pushed = moto::published_in(&moto::state().await?, &endpoint);
    assert_eq!(pushed.len(), 1, "one push for one message");
    let message: serde_json::Value = serde_json::from_str(&pushed[0])?;
    let payload: serde_json::Value = serde_json::from_str(message["GCM"].as_str().ok_or("no GCM payload")?)?;
    assert_eq!(payload["notification"]["body"], "See you at the harbour");

    // A redelivered batch pushes nothing again (deduplicated by message id and device).
    let again = clients.event_store().read_messages(&bob.user, Seq(0), 10).await?;
    rookery_adapters_aws::BatchHandler::handle(&dispatcher, &again).await?;
    assert_eq!(
        moto::published_in(&moto::state().await?, &endpoint).len(),
        1,
        "no second push"
    );

    // SNS disables the endpoint: the next push marks the device disabled through a device event.
    clients.push_gateway().set_endpoint(&endpoint, None, false).await?;
    app.messages
        .send_message(
            &alice,
            bob.user.clone(),
            "Are you there?".into(),
            Default::default(),
            None,
        )
        .await?;
    drain(&mut pushing, &dispatcher, 1).await?;
    let devices = app.devices.devices(&bob).await?;
    assert_eq!(
        devices.iter().map(|d| d.enabled).collect::<Vec<_>>(),
        vec![false],
        "the device is disabled"
    );

    // Media: a signed upload to S3, then the object shows as uploaded with a download URL.
    let created = app.media.create_media(&alice, "image/png", 5, None).await?;
    let mut upload = reqwest::Client::new().put(&created.upload.url).body(b"12345".to_vec());
    for (name, value) in created.upload.headers.iter().flatten() {
        if !name.eq_ignore_ascii_case("content-length") {
            upload = upload.header(name, value);
        }
    }
    assert!(upload.send().await?.status().is_success());
    let view = app.media.get_media(&alice, &created.id).await?;
    assert_eq!(view.status, "uploaded");
    let download = view.download.ok_or("no download URL")?;
    assert_eq!(reqwest::get(&download.url).await?.bytes().await?.as_ref(), b"12345");
    Ok(())
}
