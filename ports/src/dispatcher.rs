//! The push dispatcher (Lambda function 4's consumer): message events in, one push per enabled device out.
//!
//! Delivery is at least once and deduplicated by message id and device: a push that was accepted is
//! remembered (as an idempotency record of the recipient), so a redelivered event does not push again.
//! A provider that reports an endpoint disabled turns into a device event, and that device gets no
//! more pushes until it is registered again. A failure leaves the message where it is (in the
//! recipient's stream and inbox) and reports the event for redelivery.

use rookery_domain::projection::push_payload;
use rookery_domain::{Device, EventPayload, Message, StoredEvent, UserId};
use serde_json::json;

use crate::app::Ports;
use crate::store::{AppendError, IdempotencyRecord, IdempotencyWrite};
use crate::{App, AppError, BatchFailure, Clock, EventStore, Failure, PushError, PushGateway, PushOutcome};

/// Sends pushes for received messages.
#[derive(Debug)]
pub struct PushDispatcher<P: Ports> {
    app: App<P>,
}

impl<P: Ports> Clone for PushDispatcher<P> {
    fn clone(&self) -> Self {
        Self { app: self.app.clone() }
    }
}

fn app_failure(error: AppError) -> Failure {
    match error {
        AppError::Unavailable(failure) => failure,
        other => Failure::permanent(other.to_string()),
    }
}

/// The idempotency key under which a push of `message` to `device` is remembered.
pub fn push_key(message: &Message, device: &Device) -> String {
    format!("push:{}:{}", message.id, device.device_id)
}

impl<P: Ports> PushDispatcher<P> {
    /// A dispatcher using the service's store, push gateway and clock.
    pub fn new(app: App<P>) -> Self {
        Self { app }
    }

    /// Pushes every `message.received` event of the batch to the recipient's enabled devices.
    ///
    /// # Errors
    /// [`BatchFailure`] naming the first event whose pushes did not all complete; devices already
    /// pushed for it are remembered and will not be pushed again on redelivery.
    pub async fn handle(&self, events: &[StoredEvent]) -> Result<(), BatchFailure> {
        for (index, event) in events.iter().enumerate() {
            if let EventPayload::MessageReceived(message) = &event.payload {
                self.deliver(&event.owner, message)
                    .await
                    .map_err(|failure| BatchFailure { index, failure })?;
            }
        }
        Ok(())
    }

    async fn deliver(&self, owner: &UserId, message: &Message) -> Result<(), Failure> {
        let store = self.app.store();
        let devices = store.devices(owner).await?;
        let mut first_failure = None;
        for device in devices.values().filter(|d| d.enabled) {
            let key = push_key(message, device);
            let now = self.app.clock().now();
            let expired_before = self.app.expired_before(now);
            if store
                .idempotency(owner, &key)
                .await?
                .is_some_and(|r| r.recorded_at >= expired_before)
            {
                continue;
            }
            let payload = push_payload(device.platform, message);
            let outcome = self
                .app
                .push_gateway()
                .send(&device.endpoint, device.platform, &payload)
                .await;
            let remember = |status: &str| IdempotencyWrite {
                owner: owner.clone(),
                record: IdempotencyRecord {
                    key: key.clone(),
                    fingerprint: key.clone(),
                    outcome: json!({ "push": status }),
                    recorded_at: now,
                },
                expired_before,
            };
            match outcome {
                Ok(PushOutcome::Delivered) => match store.remember(remember("delivered")).await {
                    Ok(()) | Err(AppendError::KeyTaken) => {}
                    Err(error) => first_failure = first_failure.or(Some(Failure::transient(error.to_string()))),
                },
                Ok(PushOutcome::EndpointDisabled) => {
                    tracing::info!(user = %owner, device = %device.device_id, "push endpoint disabled; marking device");
                    if let Err(error) = self
                        .app
                        .disable_endpoint(owner, &device.device_id, &device.endpoint)
                        .await
                    {
                        first_failure = first_failure.or(Some(app_failure(error)));
                    }
                }
                Err(PushError::Rejected(reason)) => {
                    // Retrying cannot help; remember it so redelivery does not try again, and say so.
                    tracing::warn!(user = %owner, device = %device.device_id, %reason, "push rejected by the provider");
                    let _ = store.remember(remember("rejected")).await;
                }
                Err(PushError::Unavailable(failure)) => {
                    tracing::warn!(user = %owner, device = %device.device_id, error = %failure, "push failed; will retry");
                    first_failure = first_failure.or(Some(failure));
                }
            }
        }
        first_failure.map_or(Ok(()), Err)
    }
}
