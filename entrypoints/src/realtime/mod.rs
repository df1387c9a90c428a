//! `GET /v1/realtime`: each user's changes pushed over a WebSocket as they commit, resumable from a
//! cursor without loss (`API.md`, Realtime), for `rookery serve` on any store with a change feed.
//!
//! Delivery comes from the change log, like every other consumer of it: one fan-out task ([`hub`])
//! follows the store's [`ChangeFeed`] and routes each committed event to the sockets of its owner
//! through a bounded queue per socket; a `resume` replays the user's stream from the [`EventStore`]
//! ([`socket`] explains how the switch from replay to live loses and repeats nothing). The write path
//! knows nothing of it. Every buffer is bounded: a socket's queue in frames and in bytes, each send in
//! time; a client that does not read is closed (`1008`) and never grows the server's memory. The caps
//! on sockets per user and in total, the idle timeout and the maximum age are in [`RealtimeConfig`].
//!
//! A server without a [`ChangeFeed`] of its own (`rookery serve --backend aws`, whose log is the
//! DynamoDB table's stream) starts the endpoint with [`Realtime::spawn_fed`] and routes the events its own
//! stream consumer reads through the [`RealtimeFeed`] it gets: the same hub, frames and limits.
//!
//! A socket of a user whose account is erased while it is open is closed with `4410` ([`protocol::Close::ERASED`])
//! within [`RealtimeConfig::erasure_check`]; the token gate refuses a new handshake with `410`.
//!
//! The routes go behind the same token gate as every other route ([`crate::Api::merge_authenticated`]),
//! which also takes the token from the `access_token` query parameter of a WebSocket handshake.

mod hub;
pub mod protocol;
mod socket;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use rookery_domain::StoredEvent;
use rookery_ports::{BatchFailure, BatchHandler, ChangeFeed, EventStore};
use tokio::task::JoinHandle;

use hub::Hub;
use socket::{CLOSE_TIMEOUT, Endpoint};

/// The limits of the realtime endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RealtimeConfig {
    /// The most sockets open at once; one more handshake is `503`.
    pub max_connections: usize,
    /// The most sockets one user may have open; one more handshake is `429`.
    pub max_connections_per_user: usize,
    /// The most live changes queued for one socket; one more closes it as too slow.
    pub queue_frames: usize,
    /// The most bytes of live changes queued for one socket (a single larger change still goes through
    /// an empty queue); more closes it as too slow.
    pub queue_bytes: usize,
    /// How long one frame may take to send; longer closes the socket as too slow.
    pub send_timeout: Duration,
    /// A socket whose client sent nothing for this long is closed (`1001`).
    pub idle_timeout: Duration,
    /// A socket open this long is closed (`1001`), as API Gateway does after two hours.
    pub max_age: Duration,
    /// How often the users with a socket open are checked for erasure (one marker lookup per user);
    /// an erased user's sockets close within this.
    pub erasure_check: Duration,
}

impl Default for RealtimeConfig {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_connections_per_user: 16,
            queue_frames: 256,
            queue_bytes: 4 * 1024 * 1024,
            send_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(10 * 60),
            max_age: Duration::from_secs(2 * 60 * 60),
            erasure_check: Duration::from_secs(10),
        }
    }
}

/// The realtime endpoint of a running server: its fan-out task, its routes and its sockets.
#[derive(Debug)]
pub struct Realtime {
    hub: Arc<Hub>,
    routes: Router,
    /// The fan-out (when the endpoint follows a change feed itself) and the erasure watch.
    tasks: Vec<JoinHandle<()>>,
}

impl Realtime {
    /// Starts the fan-out from `store`'s current commit position, on the current tokio runtime.
    pub fn spawn<S: EventStore + ChangeFeed>(store: S, config: RealtimeConfig) -> Self {
        let (mut realtime, feed) = Self::spawn_fed(store.clone(), config);
        realtime.tasks.push(tokio::spawn(hub::fan_out(feed.hub, store)));
        realtime
    }

    /// Starts the endpoint without a fan-out of its own: the caller routes every event committed from
    /// now on through the [`RealtimeFeed`], in each user's seq order or not, at least once (a socket drops
    /// seqs it has sent and reads any gap from `store`).
    ///
    /// The caller's consumer must be reading the log from a position no later than now before the first
    /// socket opens: an event committed after a socket registers must reach the feed, while one committed
    /// before is read from `store` by the socket's replay.
    pub fn spawn_fed<S: EventStore>(store: S, config: RealtimeConfig) -> (Self, RealtimeFeed) {
        let hub = Hub::new(config);
        let erasures = tokio::spawn(hub::watch_erasures(hub.clone(), store.clone(), config.erasure_check));
        let endpoint = Arc::new(Endpoint {
            store,
            hub: hub.clone(),
        });
        let routes = Router::new()
            .route("/v1/realtime", get(socket::handshake::<S>))
            .with_state(endpoint);
        let feed = RealtimeFeed { hub: hub.clone() };
        let realtime = Self {
            hub,
            routes,
            tasks: vec![erasures],
        };
        (realtime, feed)
    }

    /// `GET /v1/realtime`, to merge behind the token gate.
    pub fn routes(&self) -> Router {
        self.routes.clone()
    }

    /// How many sockets are open.
    pub fn connections(&self) -> usize {
        self.hub.connections()
    }

    /// Closes every socket with a close frame (`1001`), waits for them (a client that does not take its
    /// close frame is given up on after a few seconds), and stops the fan-out.
    pub async fn stop(self) {
        self.hub.shut_down();
        if tokio::time::timeout(CLOSE_TIMEOUT * 3, self.hub.closed())
            .await
            .is_err()
        {
            tracing::warn!("some realtime sockets did not close in time");
        }
        for task in self.tasks {
            if let Err(error) = task.await {
                tracing::error!(%error, "a realtime task failed");
            }
        }
    }
}

/// Where a consumer of the change log that the endpoint does not run itself (a DynamoDB stream poller)
/// hands the events it reads: each goes to the open sockets of its owner, as the endpoint's own fan-out
/// would route it.
#[derive(Debug, Clone)]
pub struct RealtimeFeed {
    hub: Arc<Hub>,
}

impl RealtimeFeed {
    /// Routes `events` to the sockets of their owners. Never waits on a socket: a socket whose queue is
    /// full is told to close instead.
    pub fn route(&self, events: &[StoredEvent]) {
        self.hub.route(events);
    }
}

impl BatchHandler for RealtimeFeed {
    /// Routes the batch; never fails, so a stream consumer never holds back on account of the sockets.
    async fn handle(&self, events: &[StoredEvent]) -> Result<(), BatchFailure> {
        self.route(events);
        Ok(())
    }
}
