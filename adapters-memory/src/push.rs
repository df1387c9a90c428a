//! The local push gateway: platform endpoints like SNS's, and a record of every push it would have sent.
//!
//! `rookery serve` shows the record at `/v1/dev/pushes`; tests read it to check delivery, and disable
//! endpoints or refuse tokens to play the provider's part.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use rookery_domain::{DeviceId, Platform, Timestamp, UserId};
use rookery_ports::{Clock, Failure, PushError, PushGateway, PushOutcome};

use crate::SystemClock;

/// How many sent pushes are kept by default; older ones are forgotten first.
pub const DEFAULT_SENT_CAPACITY: usize = 10_000;

/// The longest token the gateway accepts, as SNS's limit for a platform token.
const MAX_TOKEN_BYTES: usize = 4096;

/// A push the gateway accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentPush {
    /// Its position among every push this gateway sent (1, 2, ...).
    pub seq: u64,
    /// When it was sent, by the gateway's clock.
    pub at: Timestamp,
    /// The endpoint it went to.
    pub endpoint: String,
    /// The user the endpoint was registered for.
    pub owner: UserId,
    /// The device the endpoint was registered for.
    pub device_id: DeviceId,
    /// The endpoint's platform.
    pub platform: Platform,
    /// The platform JSON, as sent.
    pub payload: String,
}

impl SentPush {
    /// The id of the message this push announces, read from the payload (`message_id` at the top level
    /// for APNs, under `data` for FCM); `None` if the payload has none.
    pub fn message_id(&self) -> Option<String> {
        let value: serde_json::Value = serde_json::from_str(&self.payload).ok()?;
        let id = value
            .get("message_id")
            .or_else(|| value.get("data")?.get("message_id"))?;
        id.as_str().map(str::to_owned)
    }
}

/// A platform endpoint, as the gateway holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Its handle (`ep-<n>`).
    pub id: String,
    /// Its platform.
    pub platform: Platform,
    /// The device token it delivers to.
    pub token: String,
    /// The user it was last registered for.
    pub owner: UserId,
    /// The device it was last registered for.
    pub device_id: DeviceId,
    /// False once disabled, until registered again.
    pub enabled: bool,
}

#[derive(Debug)]
struct State {
    endpoints: BTreeMap<String, Endpoint>,
    by_token: HashMap<(Platform, String), String>,
    rejected_tokens: HashSet<String>,
    next_endpoint: u64,
    sent: VecDeque<SentPush>,
    sent_total: u64,
    capacity: usize,
}

/// A [`PushGateway`] that records what it sends instead of sending it. Clones share the same gateway.
#[derive(Clone)]
pub struct MemoryPushGateway<C: Clock = SystemClock> {
    state: Arc<Mutex<State>>,
    clock: C,
}

/// A summary, never the contents (tokens and payloads): a gateway's `Debug` ends up in logs.
impl<C: Clock> std::fmt::Debug for MemoryPushGateway<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut out = f.debug_struct("MemoryPushGateway");
        if let Ok(state) = self.state.try_lock() {
            out.field("endpoints", &state.endpoints.len())
                .field("sent", &state.sent_total);
        }
        out.field("clock", &self.clock).finish_non_exhaustive()
    }
}

impl MemoryPushGateway<SystemClock> {
    /// A gateway timing pushes by the system clock.
    pub fn new() -> Self {
        Self::with_clock(SystemClock::new())
    }
}

impl Default for MemoryPushGateway<SystemClock> {
    fn default() -> Self {
        Self::new()
    }
}

fn poisoned() -> Failure {
    Failure::permanent("the push gateway's lock was poisoned by a panic")
}

impl<C: Clock> MemoryPushGateway<C> {
    /// A gateway timing pushes by `clock`, keeping the last [`DEFAULT_SENT_CAPACITY`] pushes.
    pub fn with_clock(clock: C) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                endpoints: BTreeMap::new(),
                by_token: HashMap::new(),
                rejected_tokens: HashSet::new(),
                next_endpoint: 1,
                sent: VecDeque::new(),
                sent_total: 0,
                capacity: DEFAULT_SENT_CAPACITY,
            })),
            clock,
        }
    }

    /// Keeps only the last `capacity` sent pushes (at least one).
    #[must_use]
    pub fn with_capacity(self, capacity: usize) -> Self {
        if let Ok(mut state) = self.state.lock() {
            state.capacity = capacity.max(1);
            let excess = state.sent.len().saturating_sub(state.capacity);
            state.sent.drain(..excess);
        }
        self
    }

    fn state(&self) -> Result<MutexGuard<'_, State>, Failure> {
        self.state.lock().map_err(|_| poisoned())
    }

    /// Disables every endpoint holding `token`, as a provider does when the app is uninstalled.
    /// Returns how many endpoints were disabled.
    ///
    /// # Errors
    /// A [`Failure`] when the gateway's lock was poisoned.
    pub fn disable_token(&self, token: &str) -> Result<usize, Failure> {
        let mut state = self.state()?;
        let mut disabled = 0;
        for endpoint in state.endpoints.values_mut().filter(|e| e.token == token && e.enabled) {
            endpoint.enabled = false;
            disabled += 1;
        }
        Ok(disabled)
    }

    /// Disables one endpoint. Returns false when there is no such endpoint.
    ///
    /// # Errors
    /// A [`Failure`] when the gateway's lock was poisoned.
    pub fn disable_endpoint(&self, endpoint: &str) -> Result<bool, Failure> {
        Ok(self
            .state()?
            .endpoints
            .get_mut(endpoint)
            .map(|e| e.enabled = false)
            .is_some())
    }

    /// Makes the gateway refuse `token` from now on, as a provider refuses a malformed token.
    ///
    /// # Errors
    /// A [`Failure`] when the gateway's lock was poisoned.
    pub fn reject_token(&self, token: &str) -> Result<(), Failure> {
        self.state()?.rejected_tokens.insert(token.to_owned());
        Ok(())
    }

    /// One endpoint.
    ///
    /// # Errors
    /// A [`Failure`] when the gateway's lock was poisoned.
    pub fn endpoint(&self, id: &str) -> Result<Option<Endpoint>, Failure> {
        Ok(self.state()?.endpoints.get(id).cloned())
    }

    /// Every endpoint, by id.
    ///
    /// # Errors
    /// A [`Failure`] when the gateway's lock was poisoned.
    pub fn endpoints(&self) -> Result<Vec<Endpoint>, Failure> {
        Ok(self.state()?.endpoints.values().cloned().collect())
    }

    /// The pushes kept, oldest first.
    ///
    /// # Errors
    /// A [`Failure`] when the gateway's lock was poisoned.
    pub fn sent(&self) -> Result<Vec<SentPush>, Failure> {
        Ok(self.state()?.sent.iter().cloned().collect())
    }

    /// The pushes kept that went to `owner`'s devices, oldest first.
    ///
    /// # Errors
    /// A [`Failure`] when the gateway's lock was poisoned.
    pub fn sent_to(&self, owner: &UserId) -> Result<Vec<SentPush>, Failure> {
        Ok(self
            .state()?
            .sent
            .iter()
            .filter(|p| p.owner == *owner)
            .cloned()
            .collect())
    }

    /// How many pushes were sent in all, including those no longer kept.
    ///
    /// # Errors
    /// A [`Failure`] when the gateway's lock was poisoned.
    pub fn sent_total(&self) -> Result<u64, Failure> {
        Ok(self.state()?.sent_total)
    }
}

fn acceptable_token(token: &str) -> bool {
    !token.is_empty() && token.len() <= MAX_TOKEN_BYTES && token.bytes().all(|b| b.is_ascii_graphic())
}

impl<C: Clock> PushGateway for MemoryPushGateway<C> {
    async fn register(
        &self,
        owner: &UserId,
        device_id: &DeviceId,
        platform: Platform,
        token: &str,
        current: Option<&str>,
    ) -> Result<String, PushError> {
        let mut state = self.state()?;
        if !acceptable_token(token) || state.rejected_tokens.contains(token) {
            return Err(PushError::Rejected(format!(
                "the {} provider refuses this token",
                platform.as_str()
            )));
        }
        let token_key = (platform, token.to_owned());
        // The same token gives the same endpoint; else the device's previous endpoint is reused for the new token.
        let id = match state.by_token.get(&token_key).cloned() {
            Some(id) => id,
            None => match current.filter(|id| state.endpoints.contains_key(*id)) {
                Some(id) => id.to_owned(),
                None => {
                    let id = format!("ep-{}", state.next_endpoint);
                    state.next_endpoint += 1;
                    id
                }
            },
        };
        if let Some(old) = state.endpoints.get(&id).map(|e| (e.platform, e.token.clone()))
            && old != token_key
        {
            state.by_token.remove(&old);
        }
        state.by_token.insert(token_key, id.clone());
        state.endpoints.insert(
            id.clone(),
            Endpoint {
                id: id.clone(),
                platform,
                token: token.to_owned(),
                owner: owner.clone(),
                device_id: device_id.clone(),
                enabled: true,
            },
        );
        Ok(id)
    }

    async fn send(&self, endpoint: &str, platform: Platform, payload: &str) -> Result<PushOutcome, PushError> {
        let mut state = self.state()?;
        let Some(target) = state.endpoints.get(endpoint).filter(|e| e.enabled).cloned() else {
            // Unknown and disabled endpoints are alike to the caller: do not push there again.
            return Ok(PushOutcome::EndpointDisabled);
        };
        if target.platform != platform {
            return Err(PushError::Rejected(format!(
                "endpoint {endpoint} is for {}, not {}",
                target.platform.as_str(),
                platform.as_str()
            )));
        }
        if payload.len() > platform.payload_limit() {
            return Err(PushError::Rejected(format!(
                "a payload of {} bytes is over the {} limit of {} bytes",
                payload.len(),
                platform.as_str(),
                platform.payload_limit()
            )));
        }
        if serde_json::from_str::<serde_json::Value>(payload).is_err() {
            return Err(PushError::Rejected("the payload is not JSON".into()));
        }
        state.sent_total += 1;
        let push = SentPush {
            seq: state.sent_total,
            at: self.clock.now(),
            endpoint: target.id,
            owner: target.owner,
            device_id: target.device_id,
            platform,
            payload: payload.to_owned(),
        };
        if state.sent.len() >= state.capacity {
            state.sent.pop_front();
        }
        state.sent.push_back(push);
        Ok(PushOutcome::Delivered)
    }

    async fn delete(&self, owner: &UserId, device_id: &DeviceId, endpoint: &str) -> Result<(), PushError> {
        let mut state = self.state()?;
        // An endpoint another device registered since is theirs now: it stays.
        let ours = state
            .endpoints
            .get(endpoint)
            .is_some_and(|e| e.owner == *owner && e.device_id == *device_id);
        if ours && let Some(gone) = state.endpoints.remove(endpoint) {
            state.by_token.remove(&(gone.platform, gone.token));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::ManualClock;

    use super::*;

    fn ids(name: &str) -> (UserId, DeviceId) {
        (
            UserId::parse(name).expect("user"),
            DeviceId::parse(format!("{name}-phone")).expect("device"),
        )
    }

    #[tokio::test]
    async fn the_same_token_gives_the_same_endpoint_and_current_is_reused() -> Result<(), PushError> {
        let push = MemoryPushGateway::new();
        let (alice, phone) = ids("alice");
        let first = push.register(&alice, &phone, Platform::Fcm, "tok-1", None).await?;
        assert_eq!(
            push.register(&alice, &phone, Platform::Fcm, "tok-1", None).await?,
            first
        );
        let other = push.register(&alice, &phone, Platform::Apns, "tok-1", None).await?;
        assert_ne!(other, first, "a token is per platform");
        // A new token for the same device keeps its endpoint; the old token no longer maps to it.
        let renewed = push
            .register(&alice, &phone, Platform::Fcm, "tok-2", Some(&first))
            .await?;
        assert_eq!(renewed, first);
        assert_eq!(push.endpoint(&first)?.map(|e| e.token), Some("tok-2".into()));
        let fresh = push.register(&alice, &phone, Platform::Fcm, "tok-1", None).await?;
        assert_ne!(fresh, first);
        // An unknown `current` is not reused.
        let new = push
            .register(&alice, &phone, Platform::Fcm, "tok-3", Some("ep-999"))
            .await?;
        assert!(push.endpoint(&new)?.is_some());
        assert_eq!(push.endpoint("ep-999")?, None);
        Ok(())
    }

    #[tokio::test]
    async fn sends_are_recorded_until_disabled_and_registering_again_enables() -> Result<(), Box<dyn std::error::Error>>
    {
        let clock = ManualClock::default();
        let push = MemoryPushGateway::with_clock(clock.clone());
        let (alice, phone) = ids("alice");
        let (bob, tablet) = ids("bob");
        let a = push.register(&alice, &phone, Platform::Apns, "tok-a", None).await?;
        let b = push.register(&bob, &tablet, Platform::Fcm, "tok-b", None).await?;
        let payload = r#"{"aps":{"alert":{"title":"bob","body":"hi"}},"message_id":"m1","from":"bob"}"#;
        assert_eq!(push.send(&a, Platform::Apns, payload).await?, PushOutcome::Delivered);
        let fcm = r#"{"notification":{"title":"a","body":"b"},"data":{"message_id":"m2","from":"alice"}}"#;
        assert_eq!(push.send(&b, Platform::Fcm, fcm).await?, PushOutcome::Delivered);
        let to_alice = push.sent_to(&alice)?;
        assert_eq!(to_alice.len(), 1);
        assert_eq!(to_alice[0].device_id, phone);
        assert_eq!(to_alice[0].at, clock.now());
        assert_eq!(to_alice[0].message_id().as_deref(), Some("m1"));
        assert_eq!(push.sent_to(&bob)?[0].message_id().as_deref(), Some("m2"));

        assert_eq!(push.disable_token("tok-a")?, 1);
        assert_eq!(
            push.send(&a, Platform::Apns, payload).await?,
            PushOutcome::EndpointDisabled
        );
        assert!(push.disable_endpoint(&b)?);
        assert_eq!(push.send(&b, Platform::Fcm, fcm).await?, PushOutcome::EndpointDisabled);
        assert_eq!(
            push.send("ep-404", Platform::Fcm, fcm).await?,
            PushOutcome::EndpointDisabled
        );
        assert_eq!(push.sent()?.len(), 2);

        assert_eq!(push.register(&alice, &phone, Platform::Apns, "tok-a", None).await?, a);
        assert_eq!(push.send(&a, Platform::Apns, payload).await?, PushOutcome::Delivered);
        assert_eq!(push.sent_total()?, 3);
        Ok(())
    }

    #[tokio::test]
    async fn bad_tokens_and_payloads_are_rejected() -> Result<(), Box<dyn std::error::Error>> {
        let push = MemoryPushGateway::new();
        let (alice, phone) = ids("alice");
        for token in ["", "has space", "tab\t", "é"] {
            assert!(matches!(
                push.register(&alice, &phone, Platform::Fcm, token, None).await,
                Err(PushError::Rejected(_))
            ));
        }
        push.reject_token("refused")?;
        assert!(matches!(
            push.register(&alice, &phone, Platform::Fcm, "refused", None).await,
            Err(PushError::Rejected(_))
        ));
        let ep = push.register(&alice, &phone, Platform::Fcm, "ok", None).await?;
        assert!(matches!(
            push.send(&ep, Platform::Apns, "{}").await,
            Err(PushError::Rejected(_))
        ));
        assert!(matches!(
            push.send(&ep, Platform::Fcm, "not json").await,
            Err(PushError::Rejected(_))
        ));
        let big = format!("{{\"x\":\"{}\"}}", "a".repeat(4096));
        assert!(matches!(
            push.send(&ep, Platform::Fcm, &big).await,
            Err(PushError::Rejected(_))
        ));
        assert!(push.sent()?.is_empty());
        Ok(())
    }

    #[tokio::test]
    async fn only_the_last_pushes_are_kept() -> Result<(), Box<dyn std::error::Error>> {
        let push = MemoryPushGateway::new().with_capacity(3);
        let (alice, phone) = ids("alice");
        let ep = push.register(&alice, &phone, Platform::Fcm, "t", None).await?;
        for i in 0..5 {
            push.send(&ep, Platform::Fcm, &format!("{{\"n\":{i}}}")).await?;
        }
        let kept: Vec<u64> = push.sent()?.iter().map(|p| p.seq).collect();
        assert_eq!(kept, [3, 4, 5]);
        assert_eq!(push.sent_total()?, 5);
        Ok(())
    }
}
