//! The push dispatcher (Lambda function 4's consumer): message events in, one push per enabled device out.
//!
//! Delivery is at least once and deduplicated by message id and device: a push that was accepted is
//! remembered (as an idempotency record of the recipient), so a redelivered event does not push again.
//! A message older than that memory is not pushed at all: whoever follows the log from an old position
//! (a poller after a restart, the local feed replayed) would otherwise push it a second time, late.
//! A provider that reports an endpoint disabled turns into a device event, and that device gets no
//! more pushes until it is registered again. A failure leaves the message where it is (in the
//! recipient's stream and inbox) and reports the event for redelivery.

use std::time::Duration;

use rookery_domain::projection::push_payload;
use rookery_domain::{Device, EventPayload, Message, StoredEvent, Timestamp, UserId};
use serde_json::json;

use crate::service::DeviceService;
use crate::store::{AppendError, IdempotencyRecord, IdempotencyWrite};
use crate::{AppError, BatchFailure, Clock, EventStore, Failure, IdSource, PushError, PushGateway, PushOutcome};

/// Sends pushes for received messages.
#[derive(Debug, Clone)]
pub struct PushDispatcher<S, C, I, P> {
    store: S,
    push: P,
    clock: C,
    devices: DeviceService<S, C, I, P>,
    remember_for: Duration,
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

fn ago(now: Timestamp, span: Duration) -> Timestamp {
    Timestamp::from_millis(
        now.as_millis()
            .saturating_sub(u64::try_from(span.as_millis()).unwrap_or(u64::MAX)),
    )
}

impl<S: EventStore, C: Clock, I: IdSource, P: PushGateway> PushDispatcher<S, C, I, P> {
    /// A dispatcher reading devices from `store`, sending through `push`, and disabling devices through
    /// `devices`; it remembers each push for the service's idempotency window, and pushes no message
    /// older than that.
    pub fn new(store: S, push: P, clock: C, devices: DeviceService<S, C, I, P>, remember_for: Duration) -> Self {
        Self {
            store,
            push,
            clock,
            devices,
            remember_for,
        }
    }

    /// Pushes every recent `message.received` event of the batch to the recipient's enabled devices.
    ///
    /// # Errors
    /// [`BatchFailure`] naming the first event whose pushes did not all complete; devices already
    /// pushed for it are remembered and will not be pushed again on redelivery.
    pub async fn handle(&self, events: &[StoredEvent]) -> Result<(), BatchFailure> {
        let oldest = ago(self.clock.now(), self.remember_for);
        for (index, event) in events.iter().enumerate() {
            if let EventPayload::MessageReceived(message) = &event.payload {
                if event.at < oldest {
                    tracing::debug!(message = %message.id, "message older than the push memory; not pushed");
                    continue;
                }
                self.deliver(&event.owner, message)
                    .await
                    .map_err(|failure| BatchFailure { index, failure })?;
            }
        }
        Ok(())
    }

    async fn deliver(&self, owner: &UserId, message: &Message) -> Result<(), Failure> {
        let devices = self.store.devices(owner).await?;
        let mut first_failure = None;
        for device in devices.values().filter(|d| d.enabled) {
            let key = push_key(message, device);
            let now = self.clock.now();
            let expired_before = ago(now, self.remember_for);
            if self
                .store
                .idempotency(owner, &key)
                .await?
                .is_some_and(|r| r.recorded_at >= expired_before)
            {
                continue;
            }
            let payload = push_payload(device.platform, message);
            let outcome = self.push.send(&device.endpoint, device.platform, &payload).await;
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
                Ok(PushOutcome::Delivered) => match self.store.remember(remember("delivered")).await {
                    // An erased recipient keeps nothing, not even the memory of a push.
                    Ok(()) | Err(AppendError::KeyTaken | AppendError::Erased { .. }) => {}
                    Err(error) => first_failure = first_failure.or(Some(Failure::transient(error.to_string()))),
                },
                Ok(PushOutcome::EndpointDisabled) => {
                    tracing::info!(user = %owner, device = %device.device_id, "push endpoint disabled; marking device");
                    if let Err(error) = self
                        .devices
                        .disable_endpoint(owner, &device.device_id, &device.endpoint)
                        .await
                        && error != AppError::Erased
                    {
                        first_failure = first_failure.or(Some(app_failure(error)));
                    }
                }
                Err(PushError::Rejected(reason)) => {
                    // Retrying cannot help; remember it so redelivery does not try again, and say so.
                    tracing::warn!(user = %owner, device = %device.device_id, %reason, "push rejected by the provider");
                    let _ = self.store.remember(remember("rejected")).await;
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
