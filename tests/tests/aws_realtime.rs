//! Realtime on AWS: the connection registry against moto's DynamoDB, and the realtime Lambda function's
//! handler on real API Gateway WebSocket events (`tests/fixtures/realtime/`) and DynamoDB stream batches.
//!
//! What runs where: the connections table and the events table are moto's DynamoDB (it emulates both,
//! strongly consistent reads and TTL attributes included, though it never expires rows itself, so expiry
//! is tested through the registry's clock). The `@connections` management API is a recording stand-in
//! ([`RecordingConnections`]): moto accepts any `PostToConnection` and never answers `410 Gone`, so it
//! could not show a gone connection being forgotten.

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
