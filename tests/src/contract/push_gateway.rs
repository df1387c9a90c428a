//! The push gateway contract: every MUST of `rookery_ports::PushGateway`.
//!
//! How a provider comes to report an endpoint disabled (an app uninstalled, a token expired) is the
//! adapter's business, so the factory knows how to bring it about; everything else goes through the port.

use std::future::Future;

use rookery_domain::projection::push_payload;
use rookery_domain::{Message, MessageId, Platform};
use rookery_ports::{PushGateway, PushOutcome};
use serde_json::Map;

use crate::fixtures::{BoxError, Outcome, at, device, unique, user};

/// Makes a fresh push gateway for one check, and can make its provider report an endpoint disabled.
pub trait PushFactory: Send + Sync {
    /// The adapter under test.
    type Gateway: PushGateway;

    /// A new gateway that shares no endpoints with any gateway made before.
    ///
    /// # Errors
    /// When the adapter cannot be set up (an emulator unreachable, a table not created).
    fn fresh(&self) -> impl Future<Output = Result<Self::Gateway, BoxError>> + Send;

    /// From now on, the provider behind `gateway` reports `endpoint` disabled (until it is registered again).
    fn disable(&self, gateway: &Self::Gateway, endpoint: &str) -> impl Future<Output = ()> + Send;
}

const PLATFORMS: [Platform; 3] = [Platform::Apns, Platform::ApnsSandbox, Platform::Fcm];

/// A platform payload for a small message, as the dispatcher would send it.
fn payload(platform: Platform) -> Result<String, BoxError> {
    let message = Message {
        id: MessageId::parse(unique("m"))?,
        from: user("alice")?,
        to: user("bob")?,
        text: "Hello from the contract suite ✓".into(),
        data: Map::new(),
        sent_at: at(0),
    };
    Ok(push_payload(platform, &message))
}

/// A token that looks like the platform's (hex for APNs, a long opaque string for FCM), unique per call.
fn token(platform: Platform) -> String {
    let seed = unique("");
    let hex: String = seed.bytes().map(|b| format!("{b:02x}")).collect();
    match platform {
        Platform::Apns | Platform::ApnsSandbox => format!("{hex:0>64}"),
        Platform::Fcm => format!("fcm-{hex}:APA91b{}", "x".repeat(100)),
    }
}

/// Registering the same token again gives the same endpoint (with or without the current one named);
/// another token gives another endpoint.
pub async fn check_register_is_idempotent_per_token<F: PushFactory>(factory: &F) -> Outcome {
    let gateway = factory.fresh().await?;
    let bob = user("bob")?;
    for platform in PLATFORMS {
        let (phone, tablet) = (device("phone")?, device("tablet")?);
        let t1 = token(platform);
        let e1 = gateway.register(&bob, &phone, platform, &t1, None).await?;
        assert!(!e1.is_empty(), "an endpoint handle");
        assert_eq!(
            gateway.register(&bob, &phone, platform, &t1, None).await?,
            e1,
            "{platform:?}: same token, same endpoint"
        );
        assert_eq!(
            gateway.register(&bob, &phone, platform, &t1, Some(&e1)).await?,
            e1,
            "{platform:?}: with current named"
        );
        let e2 = gateway
            .register(&bob, &tablet, platform, &token(platform), None)
            .await?;
        assert_ne!(e2, e1, "{platform:?}: another token, another endpoint");
    }
    Ok(())
}

/// A send to an enabled endpoint is delivered, on every platform.
pub async fn check_send_to_an_enabled_endpoint_is_delivered<F: PushFactory>(factory: &F) -> Outcome {
    let gateway = factory.fresh().await?;
    let bob = user("bob")?;
    for platform in PLATFORMS {
        let endpoint = gateway
            .register(&bob, &device("phone")?, platform, &token(platform), None)
            .await?;
        let outcome = gateway.send(&endpoint, platform, &payload(platform)?).await?;
        assert_eq!(outcome, PushOutcome::Delivered, "{platform:?}");
    }
    Ok(())
}

/// A send to an endpoint the provider reports disabled is `Ok(EndpointDisabled)`, not an error, every
/// time; other endpoints are unaffected.
pub async fn check_disabled_endpoint_is_reported_not_failed<F: PushFactory>(factory: &F) -> Outcome {
    let gateway = factory.fresh().await?;
    let bob = user("bob")?;
    for platform in PLATFORMS {
        let gone = gateway
            .register(&bob, &device("phone")?, platform, &token(platform), None)
            .await?;
        let kept = gateway
            .register(&bob, &device("tablet")?, platform, &token(platform), None)
            .await?;
        factory.disable(&gateway, &gone).await;
        for attempt in 0..2 {
            let outcome = gateway.send(&gone, platform, &payload(platform)?).await;
            assert_eq!(
                outcome,
                Ok(PushOutcome::EndpointDisabled),
                "{platform:?}, attempt {attempt}"
            );
        }
        assert_eq!(
            gateway.send(&kept, platform, &payload(platform)?).await?,
            PushOutcome::Delivered,
            "{platform:?}"
        );
    }
    Ok(())
}

/// Registering a disabled device's token again gives an enabled endpoint (the same one or a new one),
/// whether or not the disabled endpoint is named as current.
pub async fn check_register_again_enables<F: PushFactory>(factory: &F) -> Outcome {
    let gateway = factory.fresh().await?;
    let bob = user("bob")?;
    for platform in PLATFORMS {
        for name_current in [true, false] {
            let phone = device("phone")?;
            let t = token(platform);
            let endpoint = gateway.register(&bob, &phone, platform, &t, None).await?;
            factory.disable(&gateway, &endpoint).await;
            let current = name_current.then_some(endpoint.as_str());
            let again = gateway.register(&bob, &phone, platform, &t, current).await?;
            let outcome = gateway.send(&again, platform, &payload(platform)?).await?;
            assert_eq!(
                outcome,
                PushOutcome::Delivered,
                "{platform:?}, current named: {name_current}"
            );
        }
    }
    Ok(())
}

/// A new token for a device with a current endpoint gives an endpoint that delivers, and registering
/// that new token again is idempotent.
pub async fn check_new_token_for_a_device_delivers<F: PushFactory>(factory: &F) -> Outcome {
    let gateway = factory.fresh().await?;
    let bob = user("bob")?;
    for platform in PLATFORMS {
        let phone = device("phone")?;
        let old = gateway.register(&bob, &phone, platform, &token(platform), None).await?;
        let fresh_token = token(platform);
        let new = gateway
            .register(&bob, &phone, platform, &fresh_token, Some(&old))
            .await?;
        assert_eq!(
            gateway.send(&new, platform, &payload(platform)?).await?,
            PushOutcome::Delivered,
            "{platform:?}"
        );
        assert_eq!(
            gateway
                .register(&bob, &phone, platform, &fresh_token, Some(&new))
                .await?,
            new,
            "{platform:?}"
        );
    }
    Ok(())
}

/// A deleted endpoint answers `Ok(EndpointDisabled)`; deleting it again is `Ok`; registering its token again gives an endpoint that delivers; other endpoints are unaffected.
pub async fn check_delete_is_idempotent_and_stops_delivery<F: PushFactory>(factory: &F) -> Outcome {
    let gateway = factory.fresh().await?;
    let bob = user("bob")?;
    for platform in PLATFORMS {
        let (phone, tablet) = (device("phone")?, device("tablet")?);
        let t = token(platform);
        let gone = gateway.register(&bob, &phone, platform, &t, None).await?;
        let kept = gateway
            .register(&bob, &tablet, platform, &token(platform), None)
            .await?;
        gateway.delete(&bob, &phone, &gone).await?;
        assert_eq!(
            gateway.send(&gone, platform, &payload(platform)?).await,
            Ok(PushOutcome::EndpointDisabled),
            "{platform:?}: a deleted endpoint"
        );
        gateway.delete(&bob, &phone, &gone).await?;
        assert_eq!(
            gateway.send(&kept, platform, &payload(platform)?).await?,
            PushOutcome::Delivered,
            "{platform:?}: another endpoint"
        );
        let again = gateway.register(&bob, &phone, platform, &t, Some(&gone)).await?;
        assert_eq!(
            gateway.send(&again, platform, &payload(platform)?).await?,
            PushOutcome::Delivered,
            "{platform:?}: the token registered again"
        );
    }
    Ok(())
}

/// One token signed into by two users in turn has one endpoint: the first user's removal leaves it to
/// the second, whose pushes are still delivered; the second user's removal deletes it.
pub async fn check_delete_leaves_an_endpoint_registered_again_by_another_device<F: PushFactory>(
    factory: &F,
) -> Outcome {
    let gateway = factory.fresh().await?;
    let (alice, bob) = (user("alice")?, user("bob")?);
    for platform in PLATFORMS {
        let phone = device("phone")?;
        let t = token(platform);
        let first = gateway.register(&alice, &phone, platform, &t, None).await?;
        let second = gateway.register(&bob, &phone, platform, &t, None).await?;
        assert_eq!(second, first, "{platform:?}: same token, same endpoint");
        gateway.delete(&alice, &phone, &first).await?;
        assert_eq!(
            gateway.send(&second, platform, &payload(platform)?).await?,
            PushOutcome::Delivered,
            "{platform:?}: the endpoint is bob's now and stays"
        );
        gateway.delete(&bob, &phone, &second).await?;
        assert_eq!(
            gateway.send(&second, platform, &payload(platform)?).await,
            Ok(PushOutcome::EndpointDisabled),
            "{platform:?}: bob's removal deletes it"
        );
    }
    Ok(())
}

/// Expands to one `#[tokio::test]` per push gateway check, inside `mod $name`, for the factory `$factory`.
#[macro_export]
macro_rules! push_gateway_contract {
    ($name:ident, $factory:expr) => {
        $crate::contract_tests!($name, push_gateway, $factory;
            check_register_is_idempotent_per_token,
            check_send_to_an_enabled_endpoint_is_delivered,
            check_disabled_endpoint_is_reported_not_failed,
            check_register_again_enables,
            check_new_token_for_a_device_delivers,
            check_delete_is_idempotent_and_stops_delivery,
            check_delete_leaves_an_endpoint_registered_again_by_another_device,
        );
    };
}
