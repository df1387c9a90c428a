//! The fan-out: one consumer of the change feed that routes each committed event to the open sockets of
//! its owner, through a bounded queue per socket.
//!
//! The hub is the realtime endpoint's only consumer of the change log, as the indexer and the push
//! dispatcher are theirs: it follows [`ChangeFeed`] from the commit position at start (a socket resumes
//! from its own cursor, so the hub needs no stored position) and is never called by the write path.
//! Routing never waits for a socket: an event is rendered once, and offered to each of its owner's
//! queues with `try_send`. A queue that is full (in frames or in bytes) means the client is not reading,
//! so its socket is told to close and its slot is freed at once; the server's memory never grows with a
//! client's backlog. A socket that misses a live event this way, or in any other way, sees the gap in
//! the seqs and reads the missing changes from the event store.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use rookery_domain::{Seq, StoredEvent, UserId};
use rookery_ports::{ChangeFeed, EventStore};
use tokio::sync::{mpsc, watch};

use super::RealtimeConfig;
use super::protocol::{Close, change_frame};

/// How many events the fan-out reads from the change feed at a time.
const BATCH_SIZE: usize = 256;

/// The first wait after the change feed failed; doubled on each further failure up to [`MAX_BACKOFF`].
const INITIAL_BACKOFF: Duration = Duration::from_millis(50);

/// The longest wait between two reads of a failing change feed.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A committed event on its way to one socket: its seq, and its `change` frame, rendered once for
/// every socket of the owner (cloning it shares the bytes).
#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    pub(crate) seq: Seq,
    pub(crate) frame: Utf8Bytes,
}

/// Why a socket was refused before the upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The user has as many sockets open as one user may.
    UserFull,
    /// The server has as many sockets open as it may.
    ServerFull,
    /// The server is shutting down.
    ShuttingDown,
}

/// The hub's side of one socket.
#[derive(Debug)]
struct Subscriber {
    id: u64,
    queue: mpsc::Sender<Delivery>,
    queued_bytes: Arc<AtomicUsize>,
    /// Tells the socket to close, and with which close frame.
    kick: watch::Sender<Option<Close>>,
}

/// What an offer to one subscriber came to.
enum Offer {
    Queued,
    /// The socket is ending: its queue is closed.
    Gone,
    /// The queue is full: the client is not reading.
    TooSlow,
}

impl Subscriber {
    fn offer(&self, delivery: &Delivery, max_bytes: usize) -> Offer {
        let len = delivery.frame.len();
        // Counted before the send, so the socket's subtraction on receipt can never come first.
        let before = self.queued_bytes.fetch_add(len, Ordering::AcqRel);
        // One frame larger than the budget is let through on an empty queue, or a large item could
        // never be delivered at all.
        if before > 0 && before + len > max_bytes {
            self.queued_bytes.fetch_sub(len, Ordering::AcqRel);
            return Offer::TooSlow;
        }
        match self.queue.try_send(delivery.clone()) {
            Ok(()) => Offer::Queued,
            Err(error) => {
                self.queued_bytes.fetch_sub(len, Ordering::AcqRel);
                match error {
                    mpsc::error::TrySendError::Full(_) => Offer::TooSlow,
                    mpsc::error::TrySendError::Closed(_) => Offer::Gone,
                }
            }
        }
    }
}

/// The open sockets, by user.
#[derive(Debug, Default)]
struct Registry {
    users: HashMap<UserId, Vec<Subscriber>>,
    connections: usize,
}

impl Registry {
    fn remove(&mut self, user: &UserId, id: u64) {
        let Some(subscribers) = self.users.get_mut(user) else {
            return;
        };
        let before = subscribers.len();
        subscribers.retain(|s| s.id != id);
        self.connections -= before - subscribers.len();
        if subscribers.is_empty() {
            self.users.remove(user);
        }
    }
}

/// The registry of open sockets and the signals every socket follows.
#[derive(Debug)]
pub(crate) struct Hub {
    config: RealtimeConfig,
    registry: Mutex<Registry>,
    /// How many registrations are alive: sockets open or being upgraded, including those told to close.
    open: watch::Sender<usize>,
    shutdown: watch::Sender<bool>,
    next_id: AtomicU64,
}

impl Hub {
    pub(crate) fn new(config: RealtimeConfig) -> Arc<Self> {
        Arc::new(Self {
            config,
            registry: Mutex::new(Registry::default()),
            open: watch::Sender::new(0),
            shutdown: watch::Sender::new(false),
            next_id: AtomicU64::new(1),
        })
    }

    pub(crate) fn config(&self) -> &RealtimeConfig {
        &self.config
    }

    /// The registry. Nothing panics while holding it, and every change to it is one step, so a poisoned
    /// lock still guards a consistent registry.
    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes a slot for a socket of `user`, within the caps.
    pub(crate) fn register(self: &Arc<Self>, user: &UserId) -> Result<Registration, Refusal> {
        if *self.shutdown.borrow() {
            return Err(Refusal::ShuttingDown);
        }
        let (queue, receiver) = mpsc::channel(self.config.queue_frames.max(1));
        let (kick, kicked) = watch::channel(None);
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        {
            let mut registry = self.registry();
            if registry.connections >= self.config.max_connections {
                return Err(Refusal::ServerFull);
            }
            let subscribers = registry.users.entry(user.clone()).or_default();
            if subscribers.len() >= self.config.max_connections_per_user {
                return Err(Refusal::UserFull);
            }
            subscribers.push(Subscriber {
                id,
                queue,
                queued_bytes: queued_bytes.clone(),
                kick,
            });
            registry.connections += 1;
        }
        self.open.send_modify(|n| *n += 1);
        Ok(Registration {
            slot: Slot {
                hub: self.clone(),
                user: user.clone(),
                id,
            },
            queue: Queue { receiver, queued_bytes },
            kicked: Kicked(kicked),
            shutdown: Signal(self.shutdown.subscribe()),
        })
    }

    /// How many sockets are registered (those told to close no longer count).
    pub(crate) fn connections(&self) -> usize {
        self.registry().connections
    }

    /// The users with a socket open.
    fn users(&self) -> Vec<UserId> {
        self.registry().users.keys().cloned().collect()
    }

    /// Tells every socket of `user` to close with `close`, and frees their slots at once.
    pub(crate) fn close_user(&self, user: &UserId, close: Close) {
        let mut registry = self.registry();
        let Some(subscribers) = registry.users.remove(user) else {
            return;
        };
        registry.connections -= subscribers.len();
        for subscriber in &subscribers {
            subscriber.kick.send_replace(Some(close));
        }
    }

    /// Whether `user` has a socket open.
    fn listens(&self, user: &UserId) -> bool {
        self.registry().users.contains_key(user)
    }

    /// Offers `delivery` to every socket of `user`; tells a socket that cannot take it to close.
    fn deliver(&self, user: &UserId, delivery: &Delivery) {
        let max_bytes = self.config.queue_bytes;
        let mut registry = self.registry();
        let Some(subscribers) = registry.users.get_mut(user) else {
            return;
        };
        let before = subscribers.len();
        subscribers.retain(|subscriber| match subscriber.offer(delivery, max_bytes) {
            Offer::Queued => true,
            Offer::Gone => false,
            Offer::TooSlow => {
                tracing::info!(user = %user, "realtime client too slow; closing its socket");
                subscriber.kick.send_replace(Some(Close::TOO_SLOW));
                false
            }
        });
        let removed = before - subscribers.len();
        if subscribers.is_empty() {
            registry.users.remove(user);
        }
        registry.connections -= removed;
    }

    /// Routes a batch of the change feed: each event to the sockets of its owner, rendered only when
    /// someone listens.
    pub(crate) fn route(&self, events: &[StoredEvent]) {
        for event in events {
            if !self.listens(&event.owner) {
                continue;
            }
            match change_frame(event) {
                Ok(frame) => self.deliver(&event.owner, &Delivery { seq: event.seq, frame }),
                // The sockets see the gap and read the event from the store, where it fails again and
                // is reported to the client.
                Err(error) => {
                    tracing::error!(%error, owner = %event.owner, seq = event.seq.0, "rendering a change failed")
                }
            }
        }
    }

    /// Tells every socket to close and refuses new ones.
    pub(crate) fn shut_down(&self) {
        self.shutdown.send_replace(true);
    }

    /// Waits until every registration has ended (each socket sent its close frame, or gave up).
    pub(crate) async fn closed(&self) {
        let mut open = self.open.subscribe();
        let _ = open.wait_for(|n| *n == 0).await;
    }
}

/// What a registered socket holds: its slot, its end of the queue and the two signals it follows.
#[derive(Debug)]
pub(crate) struct Registration {
    slot: Slot,
    queue: Queue,
    kicked: Kicked,
    shutdown: Signal,
}

impl Registration {
    /// The parts, to be held and awaited separately.
    pub(crate) fn split(self) -> (Slot, Queue, Kicked, Signal) {
        (self.slot, self.queue, self.kicked, self.shutdown)
    }
}

/// A socket's slot in the hub; dropping it frees the slot.
#[derive(Debug)]
pub(crate) struct Slot {
    hub: Arc<Hub>,
    user: UserId,
    id: u64,
}

impl Slot {
    /// The user the socket belongs to.
    pub(crate) fn user(&self) -> &UserId {
        &self.user
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.hub.registry().remove(&self.user, self.id);
        self.hub.open.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// A socket's end of its queue of live changes.
#[derive(Debug)]
pub(crate) struct Queue {
    receiver: mpsc::Receiver<Delivery>,
    queued_bytes: Arc<AtomicUsize>,
}

impl Queue {
    /// The next live change; `None` once the hub has let go of the socket (it was told to close).
    /// Cancel-safe.
    pub(crate) async fn next(&mut self) -> Option<Delivery> {
        let delivery = self.receiver.recv().await?;
        self.queued_bytes.fetch_sub(delivery.frame.len(), Ordering::AcqRel);
        Some(delivery)
    }

    /// A live change already queued, without waiting.
    pub(crate) fn try_next(&mut self) -> Option<Delivery> {
        let delivery = self.receiver.try_recv().ok()?;
        self.queued_bytes.fetch_sub(delivery.frame.len(), Ordering::AcqRel);
        Some(delivery)
    }
}

/// The hub telling one socket to close, with the close frame to send: its client is too slow, or its
/// account was erased.
#[derive(Debug)]
pub(crate) struct Kicked(watch::Receiver<Option<Close>>);

impl Kicked {
    /// The close frame the socket was told to close with, if it was.
    pub(crate) fn close(&self) -> Option<Close> {
        *self.0.borrow()
    }

    /// Completes with the close frame once the socket is told to close. Cancel-safe.
    pub(crate) async fn raised(&mut self) -> Close {
        match self.0.wait_for(Option::is_some).await {
            Ok(close) => close.unwrap_or(Close::TOO_SLOW),
            // A dropped sender: the hub has let go of the socket, which only a full queue does.
            Err(_) => Close::TOO_SLOW,
        }
    }
}

/// A signal every socket follows: the server shutting down.
#[derive(Debug)]
pub(crate) struct Signal(watch::Receiver<bool>);

impl Signal {
    /// Completes once the signal is raised. Cancel-safe.
    pub(crate) async fn raised(&mut self) {
        // A dropped sender ends the wait too: the hub has let go of the socket either way.
        let _ = self.0.wait_for(|raised| *raised).await;
    }
}

/// Follows the change feed from its current commit position until the hub shuts down or the store
/// closes, routing every committed event.
pub(crate) async fn fan_out<F: ChangeFeed>(hub: Arc<Hub>, feed: F) {
    let mut stopped = hub.shutdown.subscribe();
    let mut backoff = INITIAL_BACKOFF;
    let mut position = loop {
        match feed.commit_position() {
            Ok(position) => break position,
            Err(error) => {
                tracing::error!(%error, "reading the commit position failed; retrying");
                if pause(&mut stopped, &mut backoff).await {
                    return;
                }
            }
        }
    };
    tracing::debug!(position, "realtime fan-out started");
    loop {
        if *stopped.borrow() {
            break;
        }
        // With no socket open there is nobody to route to: skip to the head without reading the log.
        // The head is read before the registry, so a socket registered after the check replays from the
        // store everything up to that head (it registers before it reads); none is lost.
        if let Ok(head) = feed.commit_position()
            && hub.connections() == 0
        {
            position = position.max(head);
        }
        let (events, next) = match feed.changes_after(position, BATCH_SIZE).await {
            Ok(read) => read,
            Err(error) => {
                tracing::error!(%error, position, "reading the change feed failed; retrying");
                if pause(&mut stopped, &mut backoff).await {
                    break;
                }
                continue;
            }
        };
        backoff = INITIAL_BACKOFF;
        if events.is_empty() {
            // Completes at once if a commit landed after the read above: none is missed.
            tokio::select! {
                woke = feed.wait_for_commit(position) => if woke.is_none() { break },
                _ = stopped.wait_for(|stop| *stop) => break,
            }
            continue;
        }
        hub.route(&events);
        position = next;
        // Let the requests queued on this worker run before the next batch.
        tokio::task::yield_now().await;
    }
    tracing::debug!(position, "realtime fan-out stopped");
}

/// Every `interval` until the hub shuts down, asks `store` whether each user with a socket open was
/// erased, and closes that user's sockets (`4410`, [`Close::ERASED`]).
///
/// An erasure leaves no event in the change log (it removes the user's events from it), so the fan-out
/// cannot see one; the erasure marker can. This costs one marker lookup per connected user per
/// interval, and none while no socket is open. A new handshake of an erased user is refused by the
/// token gate (`410`), so only sockets opened before the erasure are ever closed here.
pub(crate) async fn watch_erasures<S: EventStore>(hub: Arc<Hub>, store: S, interval: Duration) {
    let mut stopped = hub.shutdown.subscribe();
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = stopped.wait_for(|stop| *stop) => return,
        }
        for user in hub.users() {
            match store.erased(&user).await {
                Ok(Some(at)) => {
                    tracing::info!(%user, %at, "account erased; closing its realtime sockets");
                    hub.close_user(&user, Close::ERASED);
                }
                Ok(None) => {}
                // Asked again at the next interval.
                Err(error) => tracing::warn!(%user, %error, "could not ask whether a realtime user was erased"),
            }
        }
    }
}

/// Waits the current backoff (doubling it for next time), or until told to stop; true when stopped.
async fn pause(stopped: &mut watch::Receiver<bool>, backoff: &mut Duration) -> bool {
    let wait = *backoff;
    *backoff = (*backoff * 2).min(MAX_BACKOFF);
    if *stopped.borrow() {
        return true;
    }
    tokio::select! {
        () = tokio::time::sleep(wait) => false,
        _ = stopped.wait_for(|stop| *stop) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str) -> UserId {
        UserId::parse(id).expect("a user id")
    }

    fn delivery(seq: u64, bytes: usize) -> Delivery {
        Delivery {
            seq: Seq(seq),
            frame: Utf8Bytes::from("x".repeat(bytes)),
        }
    }

    fn config() -> RealtimeConfig {
        RealtimeConfig {
            max_connections: 3,
            max_connections_per_user: 2,
            queue_frames: 2,
            queue_bytes: 100,
            ..RealtimeConfig::default()
        }
    }

    #[test]
    fn caps_hold_per_user_and_in_total_and_free_on_drop() {
        let hub = Hub::new(config());
        let a1 = hub.register(&user("a")).expect("first");
        let _a2 = hub.register(&user("a")).expect("second");
        assert_eq!(hub.register(&user("a")).err(), Some(Refusal::UserFull));
        let _b1 = hub.register(&user("b")).expect("third");
        assert_eq!(hub.register(&user("c")).err(), Some(Refusal::ServerFull));
        drop(a1);
        assert_eq!(hub.connections(), 2);
        assert!(hub.register(&user("c")).is_ok());
        hub.shut_down();
        assert_eq!(hub.register(&user("d")).err(), Some(Refusal::ShuttingDown));
    }

    #[test]
    fn a_full_queue_closes_the_socket_and_frees_its_slot() {
        let hub = Hub::new(config());
        let (_r, mut reader, reader_kicked, _) = hub.register(&user("a")).expect("registered").split();
        let (_s, mut stuck, stuck_kicked, _) = hub.register(&user("a")).expect("registered").split();
        hub.deliver(&user("a"), &delivery(1, 10));
        hub.deliver(&user("a"), &delivery(2, 10));
        assert_eq!(reader.try_next().map(|d| d.seq), Some(Seq(1)));
        assert_eq!(reader.try_next().map(|d| d.seq), Some(Seq(2)));
        // The stuck socket's queue holds two frames: the third tells it to close.
        hub.deliver(&user("a"), &delivery(3, 10));
        assert_eq!(stuck_kicked.close(), Some(Close::TOO_SLOW));
        assert_eq!(reader_kicked.close(), None);
        assert_eq!(hub.connections(), 1);
        assert_eq!(reader.try_next().map(|d| d.seq), Some(Seq(3)));
        // What it had queued is still readable; then the queue ends.
        assert_eq!(stuck.try_next().map(|d| d.seq), Some(Seq(1)));
        assert_eq!(stuck.try_next().map(|d| d.seq), Some(Seq(2)));
        assert!(stuck.try_next().is_none());
    }

    #[test]
    fn closing_a_user_kicks_only_their_sockets_with_the_close_given() {
        let hub = Hub::new(config());
        let (_a1, _qa1, a1_kicked, _) = hub.register(&user("a")).expect("registered").split();
        let (_a2, _qa2, a2_kicked, _) = hub.register(&user("a")).expect("registered").split();
        let (_b, _qb, b_kicked, _) = hub.register(&user("b")).expect("registered").split();
        hub.close_user(&user("a"), Close::ERASED);
        assert_eq!(a1_kicked.close(), Some(Close::ERASED));
        assert_eq!(a2_kicked.close(), Some(Close::ERASED));
        assert_eq!(b_kicked.close(), None);
        assert_eq!(hub.connections(), 1);
        assert_eq!(hub.users(), vec![user("b")]);
        hub.close_user(&user("nobody"), Close::ERASED);
        assert_eq!(hub.connections(), 1);
    }

    #[test]
    fn the_byte_budget_lets_one_large_frame_through_but_not_two() {
        let hub = Hub::new(config());
        let (_slot, _queue, kicked, _) = hub.register(&user("a")).expect("registered").split();
        hub.deliver(&user("a"), &delivery(1, 500));
        assert_eq!(kicked.close(), None);
        hub.deliver(&user("a"), &delivery(2, 1));
        assert_eq!(kicked.close(), Some(Close::TOO_SLOW));
        assert_eq!(hub.connections(), 0);
    }
}
