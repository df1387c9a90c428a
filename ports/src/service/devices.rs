//! Devices: registering a device's push token obtains its endpoint from the push gateway before the
//! registration is recorded; removing one records the removal, then deletes the endpoint. The push
//! dispatcher marks a device disabled through [`DeviceService::disable_endpoint`].
//!
//! Unlike item writes, device writes name the stream's seq they read: each decision depends on the whole
//! registry (the device limit, the current endpoint), and the seq is the one guard every store offers over
//! all of it. Device writes are rare next to item writes, and the write path plans a moved one again.

use std::sync::Mutex;

use rookery_domain::device::{self, Device, DeviceEvent};
use rookery_domain::{DeviceId, EventPayload, Platform, UserId};
use serde::{Deserialize, Serialize};

use super::write::{Done, Planned, Writer};
use super::{Caller, Idempotency};
use crate::{AppError, Clock, EventStore, Failure, IdSource, PushError, PushGateway};

/// A device as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceView {
    /// The app's id for it.
    pub device_id: DeviceId,
    /// Its platform.
    pub platform: Platform,
    /// False once its endpoint was reported disabled.
    pub enabled: bool,
}

impl From<&Device> for DeviceView {
    fn from(device: &Device) -> Self {
        Self {
            device_id: device.device_id.clone(),
            platform: device.platform,
            enabled: device.enabled,
        }
    }
}

/// What a device removal recorded: the endpoint to delete, known only to the request that removed it.
///
/// The endpoint is not part of the recorded outcome (`{}`, as [`Done`]'s), so a replay of the same
/// idempotency key reads `None` and deletes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct DeviceRemoved {
    #[serde(skip)]
    endpoint: Option<String>,
}

/// The device registry use cases.
#[derive(Debug, Clone)]
pub struct DeviceService<S, C, I, P> {
    writer: Writer<S, C, I>,
    push: P,
}

impl<S: EventStore, C: Clock, I: IdSource, P: PushGateway> DeviceService<S, C, I, P> {
    /// The service over the shared write path and the push gateway that manages endpoints.
    pub fn new(writer: Writer<S, C, I>, push: P) -> Self {
        Self { writer, push }
    }

    /// `PUT /v1/devices/{device_id}`: register, refresh or re-enable a device.
    ///
    /// # Errors
    /// `Invalid` for a bad token, a token the provider refuses, or too many devices; `Unavailable`.
    pub async fn register_device(
        &self,
        caller: &Caller,
        device_id: &DeviceId,
        platform: Platform,
        token: &str,
        idem: Option<&Idempotency>,
    ) -> Result<DeviceView, AppError> {
        device::check_token(token, &self.writer.config().limits).map_err(|e| AppError::Invalid(e.to_string()))?;
        let user = &caller.user;
        // The endpoint the last attempt obtained, to delete if the owner turns out to be erased.
        let obtained: Mutex<Option<String>> = Mutex::new(None);
        let slot = &obtained;
        let registered = self
            .writer
            .write(caller, idem, |_now| async move {
                let seq = self.writer.store().last_seq(user).await.map_err(Failure::from)?;
                let devices = self.writer.store().devices(user).await.map_err(Failure::from)?;
                let current = devices.get(device_id);
                let outcome = DeviceView {
                    device_id: device_id.clone(),
                    platform,
                    enabled: true,
                };
                let unchanged = current.is_some_and(|d| d.enabled && d.platform == platform && d.token == token);
                if unchanged {
                    return Ok(Planned::after(user, seq, Vec::new(), outcome));
                }
                let max = self.writer.config().limits.max_devices;
                if current.is_none() && devices.len() >= max {
                    return Err(AppError::Invalid(format!("at most {max} devices per user")));
                }
                let previous = current.filter(|d| d.platform == platform).map(|d| d.endpoint.as_str());
                let endpoint = self
                    .push
                    .register(user, device_id, platform, token, previous)
                    .await
                    .map_err(|e| match e {
                        PushError::Rejected(why) => {
                            AppError::Invalid(format!("the push provider refused the token: {why}"))
                        }
                        PushError::Unavailable(failure) => AppError::Unavailable(failure),
                    })?;
                if let Ok(mut kept) = slot.lock() {
                    *kept = Some(endpoint.clone());
                }
                let event = DeviceEvent::Registered {
                    device_id: device_id.clone(),
                    platform,
                    token: token.to_owned(),
                    endpoint,
                };
                Ok(Planned::after(user, seq, vec![EventPayload::Device(event)], outcome))
            })
            .await;
        // The account was erased while this request was under way (after the gateway made the endpoint,
        // or before: the plan reads an empty registry either way): the endpoint holds the erased user's
        // token and no device of theirs names it, so nothing else would ever delete it.
        if matches!(registered, Err(AppError::Erased))
            && let Some(endpoint) = obtained.lock().ok().and_then(|mut slot| slot.take())
            && let Err(error) = self.push.delete(user, device_id, &endpoint).await
        {
            tracing::warn!(user = %user, device = %device_id, %error, "an erased user's new push endpoint was not deleted");
        }
        registered
    }

    /// `GET /v1/devices`.
    ///
    /// # Errors
    /// `Unavailable`.
    pub async fn devices(&self, caller: &Caller) -> Result<Vec<DeviceView>, AppError> {
        let devices = self.writer.store().devices(&caller.user).await.map_err(Failure::from)?;
        Ok(devices.values().map(DeviceView::from).collect())
    }

    /// `DELETE /v1/devices/{device_id}`: records the removal, then deletes the device's push endpoint.
    ///
    /// The removal is what the client asked for and is committed first; the endpoint is deleted after,
    /// and only by the request that committed the removal (an idempotent replay deletes nothing, since
    /// the device may have been registered again since). A failed delete is logged and the request
    /// still succeeds: the device is gone, no push goes to it any more, and the provider only keeps an
    /// endpoint nobody sends to; failing would make the client retry into a `404`.
    ///
    /// # Errors
    /// `NotFound` when no such device is registered; `Unavailable`.
    pub async fn remove_device(
        &self,
        caller: &Caller,
        device_id: &DeviceId,
        idem: Option<&Idempotency>,
    ) -> Result<Done, AppError> {
        let user = &caller.user;
        let removed = self
            .writer
            .write(caller, idem, |_now| async move {
                let seq = self.writer.store().last_seq(user).await.map_err(Failure::from)?;
                let devices = self.writer.store().devices(user).await.map_err(Failure::from)?;
                let Some(device) = devices.get(device_id) else {
                    return Err(AppError::NotFound);
                };
                let event = DeviceEvent::Removed {
                    device_id: device_id.clone(),
                    platform: Some(device.platform),
                };
                let outcome = DeviceRemoved {
                    endpoint: Some(device.endpoint.clone()),
                };
                Ok(Planned::after(user, seq, vec![EventPayload::Device(event)], outcome))
            })
            .await?;
        if let Some(endpoint) = removed.endpoint
            && let Err(error) = self.push.delete(user, device_id, &endpoint).await
        {
            tracing::warn!(user = %user, device = %device_id, %error, "removed device's push endpoint not deleted");
        }
        Ok(Done {})
    }

    /// Marks a device disabled because its provider reported `endpoint` disabled (used by the push dispatcher).
    /// Does nothing when the device has since been removed or registered with another endpoint.
    ///
    /// # Errors
    /// `Unavailable`.
    pub async fn disable_endpoint(&self, owner: &UserId, device_id: &DeviceId, endpoint: &str) -> Result<(), AppError> {
        let system = Caller::new(owner.clone());
        self.writer
            .write(&system, None, |_now| async move {
                let seq = self.writer.store().last_seq(owner).await.map_err(Failure::from)?;
                let devices = self.writer.store().devices(owner).await.map_err(Failure::from)?;
                let current = devices.get(device_id).filter(|d| d.enabled && d.endpoint == endpoint);
                let payloads = match current {
                    Some(device) => vec![EventPayload::Device(DeviceEvent::Disabled {
                        device_id: device_id.clone(),
                        endpoint: endpoint.to_owned(),
                        platform: Some(device.platform),
                    })],
                    None => Vec::new(),
                };
                Ok(Planned::after(owner, seq, payloads, Done {}))
            })
            .await
            .map(|_| ())
    }
}
