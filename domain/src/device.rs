//! Devices that receive push notifications, and the events that change them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{DeviceId, Limits, Timestamp};

/// A push platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Platform {
    /// Apple Push Notification service, production.
    Apns,
    /// Apple Push Notification service, sandbox.
    ApnsSandbox,
    /// Firebase Cloud Messaging.
    Fcm,
}

impl Platform {
    /// The largest payload the platform accepts, in bytes.
    pub fn payload_limit(self) -> usize {
        4096
    }

    /// The name used in the API and in stored events.
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Apns => "apns",
            Platform::ApnsSandbox => "apns_sandbox",
            Platform::Fcm => "fcm",
        }
    }
}

/// A registered device, as the registry projection holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// The app's id for the device.
    pub device_id: DeviceId,
    /// Its push platform.
    pub platform: Platform,
    /// The platform's token for it.
    pub token: String,
    /// The push gateway's handle for it (an SNS endpoint ARN on AWS).
    pub endpoint: String,
    /// False once the provider reported the endpoint disabled, until it is registered again.
    pub enabled: bool,
    /// When it was last registered.
    pub registered_at: Timestamp,
}

/// A change to a user's devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum DeviceEvent {
    /// Registered, or registered again with a new token: enabled from now on.
    Registered {
        /// The device.
        device_id: DeviceId,
        /// Its platform.
        platform: Platform,
        /// Its token.
        token: String,
        /// The gateway's handle.
        endpoint: String,
    },
    /// The provider reported this endpoint disabled or unregistered.
    Disabled {
        /// The device.
        device_id: DeviceId,
        /// The endpoint that was disabled; a later registration with another endpoint is unaffected.
        endpoint: String,
        /// The device's platform, for the feed; absent from events recorded before it was kept.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        platform: Option<Platform>,
    },
    /// The user unregistered the device.
    Removed {
        /// The device.
        device_id: DeviceId,
        /// The device's platform, for the feed; absent from events recorded before it was kept.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        platform: Option<Platform>,
    },
}

/// Why a device registration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceRejection {
    /// The token is empty, too long, or holds whitespace or control characters.
    #[error("token must be 1 to {max} visible ASCII characters")]
    BadToken {
        /// The limit in bytes.
        max: usize,
    },
    /// The user has as many devices as allowed.
    #[error("at most {max} devices per user")]
    TooMany {
        /// The limit.
        max: usize,
    },
}

/// Checks a device token.
///
/// # Errors
/// [`DeviceRejection::BadToken`].
pub fn check_token(token: &str, limits: &Limits) -> Result<(), DeviceRejection> {
    let ok = !token.is_empty() && token.len() <= limits.max_token_bytes && token.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(DeviceRejection::BadToken {
            max: limits.max_token_bytes,
        })
    }
}

/// The user's devices, a projection of their device events.
pub type Devices = BTreeMap<DeviceId, Device>;

/// Folds one device event, committed at `at`, into the registry.
pub fn evolve(devices: &mut Devices, event: &DeviceEvent, at: Timestamp) {
    match event {
        DeviceEvent::Registered {
            device_id,
            platform,
            token,
            endpoint,
        } => {
            devices.insert(
                device_id.clone(),
                Device {
                    device_id: device_id.clone(),
                    platform: *platform,
                    token: token.clone(),
                    endpoint: endpoint.clone(),
                    enabled: true,
                    registered_at: at,
                },
            );
        }
        DeviceEvent::Disabled {
            device_id, endpoint, ..
        } => {
            if let Some(device) = devices.get_mut(device_id)
                && device.endpoint == *endpoint
            {
                device.enabled = false;
            }
        }
        DeviceEvent::Removed { device_id, .. } => {
            devices.remove(device_id);
        }
    }
}
