//! The local push gateway across restarts: the recording gateway keeps its endpoints in memory, while
//! the device registry (in the durable log) keeps the endpoint handles it was given.
//!
//! Without this, every device registered before a restart would point at an endpoint the fresh gateway
//! does not know, and the first push would mark it disabled. At start, [`LocalPushGateway::restore`]
//! registers every enabled device again and remembers which new endpoint stands for which old handle.
//! Handles issued from then on carry a prefix unique to this start, so an old handle can never be
//! mistaken for a new one that happens to have the same name inside the recording gateway.

use std::collections::HashMap;
use std::sync::Arc;

use rookery_adapters_memory::{MemoryEventStore, MemoryPushGateway};
use rookery_domain::{DeviceId, Platform, UserId};
use rookery_ports::{EventStore, Failure, PushError, PushGateway, PushOutcome};

/// A [`PushGateway`] over the recording gateway that honours endpoint handles from earlier runs.
#[derive(Debug, Clone)]
pub struct LocalPushGateway {
    inner: MemoryPushGateway,
    /// Prefix of the handles this run issues.
    boot: String,
    /// Handles from earlier runs, mapped to this run's endpoints.
    earlier: Arc<HashMap<String, String>>,
}

impl LocalPushGateway {
    /// A gateway with no earlier handles (a fresh store).
    pub fn new(inner: MemoryPushGateway) -> Self {
        Self {
            inner,
            boot: boot_prefix(),
            earlier: Arc::new(HashMap::new()),
        }
    }

    /// Registers every enabled device of `store` with `inner` again, so pushes to them keep working.
    ///
    /// # Errors
    /// A [`Failure`] when the store cannot be read or the gateway fails (a refused token only leaves
    /// that device to be disabled on its next push, as the provider would).
    pub async fn restore(inner: MemoryPushGateway, store: &MemoryEventStore) -> Result<Self, Failure> {
        let mut earlier = HashMap::new();
        let mut after: Option<UserId> = None;
        loop {
            let owners = store.owners(after.as_ref(), 100).await?;
            let Some(last) = owners.last().cloned() else { break };
            for owner in &owners {
                for device in store.devices(owner).await?.values().filter(|d| d.enabled) {
                    match inner
                        .register(owner, &device.device_id, device.platform, &device.token, None)
                        .await
                    {
                        Ok(endpoint) => {
                            earlier.insert(device.endpoint.clone(), endpoint);
                        }
                        Err(PushError::Rejected(reason)) => {
                            tracing::warn!(user = %owner, device = %device.device_id, %reason, "device not restored");
                        }
                        Err(PushError::Unavailable(failure)) => return Err(failure),
                    }
                }
            }
            after = Some(last);
        }
        if !earlier.is_empty() {
            tracing::info!(devices = earlier.len(), "push endpoints restored");
        }
        Ok(Self {
            inner,
            boot: boot_prefix(),
            earlier: Arc::new(earlier),
        })
    }

    /// The recording gateway (for `/v1/dev/pushes`).
    pub fn recorder(&self) -> &MemoryPushGateway {
        &self.inner
    }

    /// The recording gateway's endpoint for a handle, if it names one.
    fn resolve<'a>(&'a self, handle: &'a str) -> Option<&'a str> {
        match handle.strip_prefix(self.boot.as_str()) {
            Some(endpoint) => Some(endpoint),
            None => self.earlier.get(handle).map(String::as_str),
        }
    }
}

/// A prefix no earlier run used: the start time in milliseconds and a random number.
fn boot_prefix() -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!("run-{millis:x}-{:08x}/", fastrand::u32(..))
}

impl PushGateway for LocalPushGateway {
    async fn register(
        &self,
        owner: &UserId,
        device_id: &DeviceId,
        platform: Platform,
        token: &str,
        current: Option<&str>,
    ) -> Result<String, PushError> {
        let current = current.and_then(|handle| self.resolve(handle));
        let endpoint = self.inner.register(owner, device_id, platform, token, current).await?;
        Ok(format!("{}{endpoint}", self.boot))
    }

    async fn send(&self, endpoint: &str, platform: Platform, payload: &str) -> Result<PushOutcome, PushError> {
        match self.resolve(endpoint) {
            Some(endpoint) => self.inner.send(endpoint, platform, payload).await,
            // A handle of an earlier run whose device could not be restored: gone, as SNS would say.
            None => Ok(PushOutcome::EndpointDisabled),
        }
    }

    async fn delete(&self, owner: &UserId, device_id: &DeviceId, endpoint: &str) -> Result<(), PushError> {
        match self.resolve(endpoint) {
            Some(endpoint) => self.inner.delete(owner, device_id, endpoint).await,
            // A handle of an earlier run whose device could not be restored has nothing behind it.
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn handles_of_this_run_and_of_earlier_runs_reach_the_right_endpoints() {
        let inner = MemoryPushGateway::new();
        let gateway = LocalPushGateway::new(inner.clone());
        let alice = UserId::parse("alice").expect("user");
        let phone = DeviceId::parse("phone").expect("device");
        let handle = gateway
            .register(&alice, &phone, Platform::Fcm, "tok", None)
            .await
            .expect("register");
        assert!(handle.starts_with("run-"));
        let payload = r#"{"notification":{"title":"a","body":"b"},"data":{"message_id":"m1"}}"#;
        assert_eq!(
            gateway.send(&handle, Platform::Fcm, payload).await,
            Ok(PushOutcome::Delivered)
        );
        // A bare inner endpoint name is not a handle of this run.
        assert_eq!(
            gateway.send("ep-1", Platform::Fcm, payload).await,
            Ok(PushOutcome::EndpointDisabled)
        );
        // Same token again: same handle.
        let again = gateway
            .register(&alice, &phone, Platform::Fcm, "tok", Some(&handle))
            .await
            .expect("register");
        assert_eq!(again, handle);
        assert_eq!(inner.sent_to(&alice).expect("sent").len(), 1);
    }
}
