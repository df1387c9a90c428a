//! The local push gateway: platform endpoints like SNS's, and a record of every push it would have sent.
//!
//! `rookery serve` shows the record at `/v1/dev/pushes`; tests read it to check delivery, and disable
//! endpoints or refuse tokens to play the provider's part.
//!
//! Opened on a directory ([`MemoryPushGateway::open`]), the gateway keeps its endpoints in
//! [`ENDPOINTS_FILE`], rewritten whole after every change (a temporary file, fsynced, then renamed over
//! the old one), so the endpoint handles devices were given before a restart still deliver after it.
//! The record of sent pushes is a diagnostic and stays in memory.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use rookery_domain::{DeviceId, Platform, Timestamp, UserId};
use rookery_ports::{Clock, Failure, PushError, PushGateway, PushOutcome};
use serde::{Deserialize, Serialize};

use crate::SystemClock;

/// How many sent pushes are kept by default; older ones are forgotten first.
pub const DEFAULT_SENT_CAPACITY: usize = 10_000;

/// How many endpoints a gateway holds at most by default; registering a new token past it fails.
///
/// Endpoints are one per registered device (at most `max_devices` per user, and deleted with the
/// device), so this bounds what the number of users does not: the file rewritten on every change.
pub const DEFAULT_MAX_ENDPOINTS: usize = 100_000;

/// The endpoints' file in the directory a gateway is opened on.
pub const ENDPOINTS_FILE: &str = "push-endpoints.json";

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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

/// What [`ENDPOINTS_FILE`] holds.
#[derive(Debug, Serialize, Deserialize)]
struct Saved {
    /// The number in the next new endpoint's handle, so that no handle is ever issued twice.
    next_endpoint: u64,
    endpoints: Vec<Endpoint>,
}

/// The endpoints and the handle counter: the part of the state that is saved, and restored when a save fails.
#[derive(Debug, Clone, Default)]
struct Endpoints {
    by_id: BTreeMap<String, Endpoint>,
    by_token: HashMap<(Platform, String), String>,
    next: u64,
}

impl Endpoints {
    fn from_saved(saved: Saved) -> Self {
        let mut endpoints = Self {
            next: saved.next_endpoint.max(1),
            ..Self::default()
        };
        for endpoint in saved.endpoints {
            endpoints
                .by_token
                .insert((endpoint.platform, endpoint.token.clone()), endpoint.id.clone());
            endpoints.by_id.insert(endpoint.id.clone(), endpoint);
        }
        endpoints
    }

    fn to_saved(&self) -> Saved {
        Saved {
            next_endpoint: self.next,
            endpoints: self.by_id.values().cloned().collect(),
        }
    }
}

#[derive(Debug)]
struct State {
    endpoints: Endpoints,
    /// Where the endpoints are saved, if anywhere.
    file: Option<PathBuf>,
    max_endpoints: usize,
    rejected_tokens: HashSet<String>,
    sent: VecDeque<SentPush>,
    sent_total: u64,
    capacity: usize,
}

impl State {
    /// Runs `change` on the endpoints and saves them; when the save fails, the change is undone.
    /// Nothing is saved when `change` answers an error.
    fn change_endpoints<R>(
        &mut self,
        change: impl FnOnce(&mut Endpoints) -> Result<R, PushError>,
    ) -> Result<R, PushError> {
        let Some(file) = &self.file else {
            return change(&mut self.endpoints);
        };
        let before = self.endpoints.clone();
        let outcome = change(&mut self.endpoints)?;
        if let Err(error) = save(file, &self.endpoints.to_saved()) {
            self.endpoints = before;
            return Err(PushError::Unavailable(Failure::transient(format!(
                "saving push endpoints to {}: {error}",
                file.display()
            ))));
        }
        Ok(outcome)
    }
}

/// Writes `saved` to `path` atomically: a temporary file beside it, fsynced, renamed over it, and the
/// directory fsynced so the rename survives a crash. Device tokens are private, so the file is owner-only.
fn save(path: &Path, saved: &Saved) -> io::Result<()> {
    let bytes = serde_json::to_vec(saved).map_err(io::Error::other)?;
    let temporary = path.with_extension("json.tmp");
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(&temporary)?;
    file.write_all(&bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&temporary, path)?;
    #[cfg(unix)]
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Reads the endpoints saved at `path`; no file is no endpoints.
fn load(path: &Path) -> io::Result<Endpoints> {
    match fs::read(path) {
        Ok(bytes) => {
            let saved: Saved = serde_json::from_slice(&bytes)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", path.display())))?;
            Ok(Endpoints::from_saved(saved))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Endpoints {
            next: 1,
            ..Endpoints::default()
        }),
        Err(e) => Err(e),
    }
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
            out.field("endpoints", &state.endpoints.by_id.len())
                .field("file", &state.file)
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

impl MemoryPushGateway<SystemClock> {
    /// A gateway keeping its endpoints in [`ENDPOINTS_FILE`] under `dir` (which must exist), starting
    /// with the endpoints saved there.
    ///
    /// # Errors
    /// When the file cannot be read or does not hold endpoints.
    pub fn open(dir: &Path) -> io::Result<Self> {
        Self::open_with_clock(dir, SystemClock::new())
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
        Self::from_parts(
            Endpoints {
                next: 1,
                ..Endpoints::default()
            },
            None,
            clock,
        )
    }

    /// [`MemoryPushGateway::open`] with another clock.
    ///
    /// # Errors
    /// When the file cannot be read or does not hold endpoints.
    pub fn open_with_clock(dir: &Path, clock: C) -> io::Result<Self> {
        let file = dir.join(ENDPOINTS_FILE);
        let endpoints = load(&file)?;
        Ok(Self::from_parts(endpoints, Some(file), clock))
    }

    fn from_parts(endpoints: Endpoints, file: Option<PathBuf>, clock: C) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                endpoints,
                file,
                max_endpoints: DEFAULT_MAX_ENDPOINTS,
                rejected_tokens: HashSet::new(),
                sent: VecDeque::new(),
                sent_total: 0,
                capacity: DEFAULT_SENT_CAPACITY,
            })),
            clock,
        }
    }

    /// Holds at most `max` endpoints (at least one): registering a new token past that fails.
    #[must_use]
    pub fn with_max_endpoints(self, max: usize) -> Self {
        if let Ok(mut state) = self.state.lock() {
            state.max_endpoints = max.max(1);
        }
        self
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
    /// A [`Failure`] when the gateway's lock was poisoned or the endpoints could not be saved.
    pub fn disable_token(&self, token: &str) -> Result<usize, Failure> {
        self.disable(|e| e.token == token)
    }

    /// Disables one endpoint. Returns false when there is no such endpoint.
    ///
    /// # Errors
    /// A [`Failure`] when the gateway's lock was poisoned or the endpoints could not be saved.
    pub fn disable_endpoint(&self, endpoint: &str) -> Result<bool, Failure> {
        let exists = self.state()?.endpoints.by_id.contains_key(endpoint);
        self.disable(|e| e.id == endpoint)?;
        Ok(exists)
    }

    /// Disables the enabled endpoints `which` picks, and answers how many there were.
    fn disable(&self, which: impl Fn(&Endpoint) -> bool) -> Result<usize, Failure> {
        let changed = self.state()?.change_endpoints(|endpoints| {
            let mut disabled = 0;
            for endpoint in endpoints.by_id.values_mut().filter(|e| e.enabled && which(e)) {
                endpoint.enabled = false;
                disabled += 1;
            }
            Ok(disabled)
        });
        changed.map_err(|error| match error {
            PushError::Unavailable(failure) => failure,
            PushError::Rejected(why) => Failure::permanent(why),
        })
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
        Ok(self.state()?.endpoints.by_id.get(id).cloned())
    }

    /// Every endpoint, by id.
    ///
    /// # Errors
    /// A [`Failure`] when the gateway's lock was poisoned.
    pub fn endpoints(&self) -> Result<Vec<Endpoint>, Failure> {
        Ok(self.state()?.endpoints.by_id.values().cloned().collect())
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
        let max = state.max_endpoints;
        state.change_endpoints(|endpoints| {
            let token_key = (platform, token.to_owned());
            // The same token gives the same endpoint; else the device's previous endpoint is reused for the new token.
            let id = match endpoints.by_token.get(&token_key).cloned() {
                Some(id) => id,
                None => match current.filter(|id| endpoints.by_id.contains_key(*id)) {
                    Some(id) => id.to_owned(),
                    None if endpoints.by_id.len() >= max => {
                        return Err(PushError::Unavailable(Failure::permanent(format!(
                            "the local push gateway holds its maximum of {max} endpoints"
                        ))));
                    }
                    None => {
                        let id = format!("ep-{}", endpoints.next);
                        endpoints.next += 1;
                        id
                    }
                },
            };
            if let Some(old) = endpoints.by_id.get(&id).map(|e| (e.platform, e.token.clone()))
                && old != token_key
            {
                endpoints.by_token.remove(&old);
            }
            endpoints.by_token.insert(token_key, id.clone());
            endpoints.by_id.insert(
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
        })
    }

    async fn send(&self, endpoint: &str, platform: Platform, payload: &str) -> Result<PushOutcome, PushError> {
        let mut state = self.state()?;
        let Some(target) = state.endpoints.by_id.get(endpoint).filter(|e| e.enabled).cloned() else {
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
            .by_id
            .get(endpoint)
            .is_some_and(|e| e.owner == *owner && e.device_id == *device_id);
        if !ours {
            return Ok(());
        }
        state.change_endpoints(|endpoints| {
            if let Some(gone) = endpoints.by_id.remove(endpoint) {
                endpoints.by_token.remove(&(gone.platform, gone.token));
            }
            Ok(())
        })
    }

    /// Drops the record of pushes to `owner`'s devices, and any endpoint still registered for them (one
    /// registered while their devices' endpoints were being deleted).
    async fn forget_owner(&self, owner: &UserId) -> Result<(), PushError> {
        let mut state = self.state()?;
        state.sent.retain(|push| push.owner != *owner);
        if !state.endpoints.by_id.values().any(|e| e.owner == *owner) {
            return Ok(());
        }
        state.change_endpoints(|endpoints| {
            let gone: Vec<Endpoint> = endpoints
                .by_id
                .values()
                .filter(|e| e.owner == *owner)
                .cloned()
                .collect();
            for endpoint in gone {
                endpoints.by_id.remove(&endpoint.id);
                endpoints.by_token.remove(&(endpoint.platform, endpoint.token));
            }
            Ok(())
        })
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

    const FCM: &str = r#"{"notification":{"title":"a","body":"b"},"data":{"message_id":"m1"}}"#;

    #[tokio::test]
    async fn endpoints_outlive_a_reopen_of_the_same_directory() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let (alice, phone) = ids("alice");
        let (bob, tablet) = ids("bob");
        let (kept, disabled, deleted) = {
            let push = MemoryPushGateway::open(dir.path())?;
            let kept = push.register(&alice, &phone, Platform::Fcm, "tok-a", None).await?;
            let disabled = push.register(&bob, &tablet, Platform::Fcm, "tok-b", None).await?;
            let deleted = push.register(&bob, &phone, Platform::Apns, "tok-c", None).await?;
            assert!(push.disable_endpoint(&disabled)?);
            push.delete(&bob, &phone, &deleted).await?;
            (kept, disabled, deleted)
        };

        let push = MemoryPushGateway::open(dir.path())?;
        assert_eq!(push.send(&kept, Platform::Fcm, FCM).await?, PushOutcome::Delivered);
        assert_eq!(push.sent_to(&alice)?[0].device_id, phone, "owner and device are kept");
        assert_eq!(
            push.send(&disabled, Platform::Fcm, FCM).await?,
            PushOutcome::EndpointDisabled
        );
        assert_eq!(push.endpoint(&deleted)?, None);
        // The same token still gives the same endpoint, and a new token a handle never issued before.
        assert_eq!(push.register(&alice, &phone, Platform::Fcm, "tok-a", None).await?, kept);
        let fresh = push.register(&alice, &phone, Platform::Apns, "tok-d", None).await?;
        assert!(
            ![&kept, &disabled, &deleted].contains(&&fresh),
            "{fresh} was issued before"
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_change_that_cannot_be_saved_fails_and_is_undone() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let push = MemoryPushGateway::open(dir.path())?;
        let (alice, phone) = ids("alice");
        let ep = push.register(&alice, &phone, Platform::Fcm, "tok-a", None).await?;
        // A directory where the temporary file goes makes every save fail.
        std::fs::create_dir(dir.path().join(ENDPOINTS_FILE).with_extension("json.tmp"))?;
        assert!(matches!(
            push.register(&alice, &phone, Platform::Fcm, "tok-b", Some(&ep)).await,
            Err(PushError::Unavailable(_))
        ));
        assert_eq!(push.endpoint(&ep)?.map(|e| e.token), Some("tok-a".into()), "undone");
        assert!(push.disable_endpoint(&ep).is_err());
        assert_eq!(push.send(&ep, Platform::Fcm, FCM).await?, PushOutcome::Delivered);
        Ok(())
    }

    #[tokio::test]
    async fn a_file_that_is_not_endpoints_is_refused() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join(ENDPOINTS_FILE), b"{not json")?;
        let refused = MemoryPushGateway::open(dir.path()).map(|_| ());
        assert_eq!(refused.map_err(|e| e.kind()), Err(std::io::ErrorKind::InvalidData));
        Ok(())
    }

    #[tokio::test]
    async fn new_tokens_past_the_maximum_are_refused() -> Result<(), Box<dyn std::error::Error>> {
        let push = MemoryPushGateway::new().with_max_endpoints(2);
        let (alice, phone) = ids("alice");
        let a = push.register(&alice, &phone, Platform::Fcm, "a", None).await?;
        let b = push.register(&alice, &phone, Platform::Fcm, "b", None).await?;
        assert!(matches!(
            push.register(&alice, &phone, Platform::Fcm, "c", None).await,
            Err(PushError::Unavailable(_))
        ));
        // Known tokens and a reused current endpoint still work; a delete makes room.
        assert_eq!(push.register(&alice, &phone, Platform::Fcm, "a", None).await?, a);
        assert_eq!(push.register(&alice, &phone, Platform::Fcm, "c", Some(&b)).await?, b);
        push.delete(&alice, &phone, &a).await?;
        push.register(&alice, &phone, Platform::Fcm, "d", None).await?;
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
