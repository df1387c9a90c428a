//! One socket of `GET /v1/realtime`: the handshake (behind the token gate, within the connection caps)
//! and the task that serves the protocol until the socket ends.
//!
//! A socket's task does one thing at a time: it reads a client frame, or sends a live change, or
//! replays from the store, and every send is bounded by the send timeout, the hub's "too slow" signal
//! and the shutdown signal, so nothing waits forever on a client that stopped reading.
//!
//! # The switch from replay to live
//!
//! The socket is registered with the hub before the upgrade, so every event the fan-out routes from
//! then on reaches its queue. A `resume` reads the user's head, then replays from the store after
//! `since` up to it, in pages; between pages it drains the queue, dropping what it finds but raising
//! the replay's target to the highest seq it saw, because the store has those events too. Once the
//! replay has reached the target and the queue was empty, the socket sends `ready` and goes live: a
//! queued change at or below the last seq sent is a duplicate and is dropped; one right after it is
//! sent; one further on means a gap, which is read from the store. An event committed before the
//! registration is in the store when the replay reads; one committed after it reaches the queue; so
//! nothing is lost, and the seq check sends nothing twice. The queue never holds more than its bound,
//! whatever the replay's length.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::http::header::{HeaderValue, RETRY_AFTER, UPGRADE};
use axum::response::{IntoResponse, Response};
use rookery_domain::{Seq, UserId};
use rookery_ports::EventStore;
use rookery_ports::cursor::parse_seq;
use tokio::time::Instant;

use super::RealtimeConfig;
use super::hub::{Delivery, Hub, Kicked, Queue, Refusal, Registration, Signal, Slot};
use super::protocol::{ClientFrame, Close, MAX_CLIENT_FRAME, MAX_REPLAY, ServerFrame, change_frame};
use crate::http::{Authed, Code, Problem};

/// How many events a replay reads from the store at a time.
const REPLAY_PAGE: u64 = 100;

/// The read buffer of a socket, in bytes (a longer frame is read in several steps).
const READ_BUFFER: usize = 4 * 1024;

/// How long the server tries to send its close frame, and then waits for the client's.
pub(crate) const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);

/// What the handshake handler needs: the store to replay from and the hub to register with.
#[derive(Debug)]
pub(crate) struct Endpoint<S> {
    pub(crate) store: S,
    pub(crate) hub: Arc<Hub>,
}

/// `GET /v1/realtime`: a WebSocket handshake of a verified caller (the gate has already answered `401`
/// without a good token), refused with a problem document over the connection caps.
pub(crate) async fn handshake<S: EventStore>(
    State(endpoint): State<Arc<Endpoint<S>>>,
    Authed(caller): Authed,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => return not_a_handshake(&rejection).into_response(),
    };
    let registration = match endpoint.hub.register(&caller.user) {
        Ok(registration) => registration,
        Err(refusal) => return refused(refusal, endpoint.hub.config()).into_response(),
    };
    let store = endpoint.store.clone();
    let config = *endpoint.hub.config();
    // The WebSocket layer allocates its read buffer up front (128 KiB by default); client frames are
    // small, and an idle socket should cost kilobytes, not a tenth of a megabyte.
    upgrade
        .read_buffer_size(READ_BUFFER)
        .max_message_size(MAX_CLIENT_FRAME)
        .max_frame_size(MAX_CLIENT_FRAME)
        .on_failed_upgrade(|error| tracing::debug!(%error, "realtime upgrade failed"))
        .on_upgrade(move |socket| Connection::new(socket, store, registration, config).run())
}

/// The answer to a request to `/v1/realtime` that is not a WebSocket handshake.
fn not_a_handshake(rejection: &WebSocketUpgradeRejection) -> Problem {
    let status = match rejection.status() {
        StatusCode::METHOD_NOT_ALLOWED => StatusCode::METHOD_NOT_ALLOWED,
        _ => StatusCode::UPGRADE_REQUIRED,
    };
    let detail = format!("this resource is a WebSocket: {}", rejection.body_text());
    Problem::new(status, Code::InvalidRequest, detail).with_header(UPGRADE, HeaderValue::from_static("websocket"))
}

/// The answer to a handshake over a connection cap.
fn refused(refusal: Refusal, config: &RealtimeConfig) -> Problem {
    let (status, code, detail) = match refusal {
        Refusal::UserFull => (
            StatusCode::TOO_MANY_REQUESTS,
            Code::RateLimited,
            format!(
                "this user already has {} realtime connections open; close one first",
                config.max_connections_per_user
            ),
        ),
        Refusal::ServerFull => (
            StatusCode::SERVICE_UNAVAILABLE,
            Code::Internal,
            "the server holds as many realtime connections as it may; retry later".to_owned(),
        ),
        Refusal::ShuttingDown => (
            StatusCode::SERVICE_UNAVAILABLE,
            Code::Internal,
            "the server is shutting down; retry later".to_owned(),
        ),
    };
    tracing::debug!(?refusal, "realtime connection refused");
    Problem::new(status, code, detail).with_header(RETRY_AFTER, HeaderValue::from_static("1"))
}

/// Why a socket's task stops.
#[derive(Debug)]
enum End {
    /// The client closed the socket, or it broke: nothing more can be sent.
    Gone,
    /// The server closes the socket with this close frame.
    Close(Close),
}

/// The outcome of one step of a socket's task: go on, or stop.
type Step = Result<(), End>;

/// A socket's state.
struct Connection<S> {
    socket: WebSocket,
    store: S,
    user: UserId,
    /// The socket's slot in the hub, freed when the task ends.
    _slot: Slot,
    queue: Queue,
    kicked: Kicked,
    shutdown: Signal,
    config: RealtimeConfig,
    /// Whether a `resume` is in effect, so that live changes are sent.
    following: bool,
    /// The seq of the last change sent since the last `resume`.
    last: Seq,
}

impl<S: EventStore> Connection<S> {
    fn new(socket: WebSocket, store: S, registration: Registration, config: RealtimeConfig) -> Self {
        let (slot, queue, kicked, shutdown) = registration.split();
        Self {
            socket,
            store,
            user: slot.user().clone(),
            _slot: slot,
            queue,
            kicked,
            shutdown,
            config,
            following: false,
            last: Seq(0),
        }
    }

    /// Serves the protocol until the client leaves or the server closes the socket.
    async fn run(mut self) {
        tracing::debug!(user = %self.user, "realtime socket opened");
        let age = tokio::time::sleep_until(after(self.config.max_age));
        let idle = tokio::time::sleep_until(after(self.config.idle_timeout));
        tokio::pin!(age, idle);
        let end = loop {
            let step = tokio::select! {
                biased;
                () = self.shutdown.raised() => Err(End::Close(Close::SHUTDOWN)),
                close = self.kicked.raised() => Err(End::Close(close)),
                () = &mut age => Err(End::Close(Close::TOO_OLD)),
                () = &mut idle => Err(End::Close(Close::IDLE)),
                // Changes already routed go out before the next client frame is read, so a `pong`
                // follows every change routed before its `ping` was read.
                delivery = self.queue.next() => match delivery {
                    Some(delivery) => self.on_delivery(delivery).await,
                    // The hub let go of this socket: it was told to close.
                    None => Err(End::Close(self.kicked.close().unwrap_or(Close::TOO_SLOW))),
                },
                frame = self.socket.recv() => {
                    idle.as_mut().reset(after(self.config.idle_timeout));
                    self.on_frame(frame).await
                }
            };
            if let Err(end) = step {
                break end;
            }
        };
        self.finish(end).await;
    }

    /// Handles one frame from the client.
    async fn on_frame(&mut self, frame: Option<Result<Message, axum::Error>>) -> Step {
        let message = match frame {
            None => return Err(End::Gone),
            Some(Err(error)) => return Err(read_error(error)),
            Some(Ok(message)) => message,
        };
        match message {
            Message::Text(text) => match ClientFrame::parse(&text) {
                Ok(ClientFrame::Ping) => self.send_frame(&ServerFrame::Pong).await,
                Ok(ClientFrame::Resume { since }) => self.resume(since.as_deref()).await,
                Err(detail) => self.send_frame(&ServerFrame::invalid(detail)).await,
            },
            Message::Binary(_) => {
                self.send_frame(&ServerFrame::invalid("frames are JSON text, not binary"))
                    .await
            }
            // The WebSocket layer answers pings and a close itself; after a close the next read ends.
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) => Ok(()),
        }
    }

    /// `resume`: replay after `since` (from the head when absent), send `ready`, then go live.
    ///
    /// A bad cursor is answered with an `error` frame and leaves the previous `resume` in effect.
    async fn resume(&mut self, since: Option<&str>) -> Step {
        let Ok(since) = since.map(|cursor| parse_seq(Some(cursor))).transpose() else {
            return self
                .send_frame(&ServerFrame::invalid(
                    "invalid cursor: since must be a /v1/sync cursor or a frame's cursor",
                ))
                .await;
        };
        let head = match self.store.last_seq(&self.user).await {
            Ok(head) => head,
            Err(error) => return self.store_failed(&error).await,
        };
        let start = match since {
            None => head,
            Some(since) if since > head => {
                return self
                    .send_frame(&ServerFrame::invalid(
                        "invalid cursor: it is past the end of this user's feed",
                    ))
                    .await;
            }
            Some(since) if head.0 - since.0 > MAX_REPLAY => {
                self.following = false;
                return self.send_frame(&ServerFrame::behind(since)).await;
            }
            Some(since) => since,
        };
        self.following = false;
        self.last = start;
        if self.catch_up(head).await? {
            self.following = true;
            self.send_frame(&ServerFrame::ready(self.last)).await?;
        }
        Ok(())
    }

    /// Sends the changes after `self.last` from the store, up to `target` and up to the highest seq
    /// queued meanwhile; true when done, false when the store failed (the client was told).
    async fn catch_up(&mut self, mut target: Seq) -> Result<bool, End> {
        loop {
            // Live changes queued meanwhile are dropped, not kept: the store has them, and reading them
            // from there keeps the socket's memory bounded however long the replay takes.
            while let Some(delivery) = self.queue.try_next() {
                target = target.max(delivery.seq);
            }
            if self.last >= target {
                return Ok(true);
            }
            let page = (target.0 - self.last.0).min(REPLAY_PAGE) as usize;
            let events = match self.store.read_feed(&self.user, self.last, page).await {
                Ok(events) if !events.is_empty() => events,
                Ok(_) => {
                    // The queue named a seq the store does not have: never spin on it.
                    tracing::error!(user = %self.user, last = self.last.0, target = target.0, "the feed is behind a routed change");
                    self.store_failed(&"the feed is behind a routed change").await?;
                    return Ok(false);
                }
                Err(error) => {
                    self.store_failed(&error).await?;
                    return Ok(false);
                }
            };
            for event in &events {
                let frame = match change_frame(event) {
                    Ok(frame) => frame,
                    Err(error) => {
                        self.store_failed(&error).await?;
                        return Ok(false);
                    }
                };
                self.send(frame).await?;
                self.last = event.seq;
            }
        }
    }

    /// Handles a change the hub routed to this socket.
    async fn on_delivery(&mut self, delivery: Delivery) -> Step {
        if !self.following || delivery.seq <= self.last {
            return Ok(());
        }
        if delivery.seq.0 == self.last.0 + 1 {
            self.send(delivery.frame).await?;
            self.last = delivery.seq;
            return Ok(());
        }
        // A gap: the changes before this one did not come through the queue; the store has them.
        self.catch_up(delivery.seq).await.map(|_| ())
    }

    /// Tells the client that the store failed and that it must resume again; live delivery stops.
    async fn store_failed(&mut self, error: &(dyn std::fmt::Display + Sync)) -> Step {
        tracing::error!(user = %self.user, %error, "realtime replay failed");
        self.following = false;
        self.send_frame(&ServerFrame::Error {
            code: "internal",
            detail: "the server could not read the feed; resume again".to_owned(),
        })
        .await
    }

    async fn send_frame(&mut self, frame: &ServerFrame) -> Step {
        match frame.render() {
            Ok(text) => self.send(text).await,
            Err(error) => {
                tracing::error!(%error, "rendering a realtime frame failed");
                Err(End::Close(Close::INTERNAL))
            }
        }
    }

    /// Sends one text frame, unless the client is too slow to take it within the send timeout, the hub
    /// has told the socket to close, or the server is shutting down.
    async fn send(&mut self, text: Utf8Bytes) -> Step {
        let send = tokio::time::timeout(self.config.send_timeout, self.socket.send(Message::Text(text)));
        tokio::select! {
            biased;
            () = self.shutdown.raised() => Err(End::Close(Close::SHUTDOWN)),
            close = self.kicked.raised() => Err(End::Close(close)),
            sent = send => match sent {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) => Err(End::Gone),
                Err(_) => Err(End::Close(Close::TOO_SLOW)),
            },
        }
    }

    /// Sends the close frame, if there is one to send, and waits a little for the client's.
    async fn finish(mut self, end: End) {
        let End::Close(close) = end else {
            tracing::debug!(user = %self.user, "realtime socket closed by the client");
            return;
        };
        tracing::debug!(user = %self.user, code = close.code, reason = close.reason, "closing realtime socket");
        let frame = Message::Close(Some(CloseFrame {
            code: close.code,
            reason: Utf8Bytes::from_static(close.reason),
        }));
        if let Ok(Ok(())) = tokio::time::timeout(CLOSE_TIMEOUT, self.socket.send(frame)).await {
            // The client answers with its own close frame; after that, the stream ends.
            let drained = async { while let Some(Ok(_)) = self.socket.recv().await {} };
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, drained).await;
        }
    }
}

/// The instant `wait` from now; a wait too long to represent is a century.
fn after(wait: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(wait)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 60 * 60))
}

/// How a failed read ends the socket: a frame over the limit is `1009`, a broken connection needs no
/// close frame, anything else is a protocol error.
fn read_error(error: axum::Error) -> End {
    match error.into_inner().downcast::<tungstenite::Error>() {
        Ok(error) => match *error {
            tungstenite::Error::Capacity(_) => End::Close(Close::TOO_BIG),
            tungstenite::Error::Protocol(_) | tungstenite::Error::Utf8(_) => End::Close(Close::BROKEN),
            _ => End::Gone,
        },
        Err(_) => End::Gone,
    }
}
