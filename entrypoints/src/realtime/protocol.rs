//! The frames of `GET /v1/realtime` (`API.md`, Realtime) and the close codes Rookery ends a socket with.
//!
//! Every frame is a JSON text frame with a `type` member. The `change` frame carries exactly what
//! `/v1/sync` carries for the same event (the same [`FeedChangeDto`]), so a client applies both with one
//! code path and a cursor from either is good for the other.

use axum::extract::ws::Utf8Bytes;
use rookery_domain::projection::feed_change;
use rookery_domain::{Seq, StoredEvent};
use rookery_ports::cursor::seq_cursor;
use serde::{Deserialize, Serialize};

use crate::http::dto::FeedChangeDto;

/// The most changes a `resume` replays; further behind, the client gets `behind` and catches up with
/// `/v1/sync` (fixed by `API.md`).
pub const MAX_REPLAY: u64 = 1_000;

/// The largest frame a client may send. A `resume` with a cursor is under 100 bytes; anything much
/// larger is not a frame of this protocol, and a longer one closes the socket with [`MESSAGE_TOO_BIG`].
pub const MAX_CLIENT_FRAME: usize = 16 * 1024;

/// Close code 1001: the server is shutting down, or the connection reached its idle or age limit.
pub const GOING_AWAY: u16 = 1001;
/// Close code 1002: the client broke the WebSocket protocol itself.
pub const PROTOCOL_ERROR: u16 = 1002;
/// Close code 1008: the client did not read its frames fast enough.
pub const POLICY_VIOLATION: u16 = 1008;
/// Close code 1009: the client sent a frame over [`MAX_CLIENT_FRAME`].
pub const MESSAGE_TOO_BIG: u16 = 1009;
/// Close code 1011: the server failed.
pub const INTERNAL_ERROR: u16 = 1011;
/// Close code 4410 (private use, after HTTP's `410 Gone`): the account was erased; a new handshake
/// with its token is answered `410 account_erased`.
pub const ACCOUNT_ERASED: u16 = 4410;

/// Why the server closed a socket: the close frame's code and reason (at most 123 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Close {
    /// The close code.
    pub code: u16,
    /// The reason, for people reading logs and traces.
    pub reason: &'static str,
}

impl Close {
    /// The server is stopping.
    pub const SHUTDOWN: Close = Close {
        code: GOING_AWAY,
        reason: "the server is shutting down; reconnect and resume",
    };
    /// The client sent nothing for the idle timeout.
    pub const IDLE: Close = Close {
        code: GOING_AWAY,
        reason: "idle for too long; reconnect and resume",
    };
    /// The connection reached its maximum age.
    pub const TOO_OLD: Close = Close {
        code: GOING_AWAY,
        reason: "connection reached its maximum age; reconnect and resume",
    };
    /// The client did not read: its queue or a send ran over the limit.
    pub const TOO_SLOW: Close = Close {
        code: POLICY_VIOLATION,
        reason: "too slow: the client did not read its frames; reconnect and resume",
    };
    /// The client sent a frame over [`MAX_CLIENT_FRAME`].
    pub const TOO_BIG: Close = Close {
        code: MESSAGE_TOO_BIG,
        reason: "frame too large",
    };
    /// The client's frames could not be read as WebSocket frames.
    pub const BROKEN: Close = Close {
        code: PROTOCOL_ERROR,
        reason: "unreadable frame",
    };
    /// The account was erased while the socket was open.
    pub const ERASED: Close = Close {
        code: ACCOUNT_ERASED,
        reason: "account_erased: this account was erased",
    };
    /// The server failed.
    pub const INTERNAL: Close = Close {
        code: INTERNAL_ERROR,
        reason: "the server failed; reconnect and resume",
    };
}

/// A frame from the client.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    /// Deliver every change after `since` (the current head when absent), then keep delivering.
    Resume {
        /// A `/v1/sync` cursor or a frame's `cursor`.
        #[serde(default)]
        since: Option<String>,
    },
    /// Answered with `pong`.
    Ping,
}

impl ClientFrame {
    /// Reads a text frame.
    ///
    /// # Errors
    /// The detail of the `error` frame to answer with, when the text is not a frame of this protocol.
    pub fn parse(text: &str) -> Result<Self, String> {
        serde_json::from_str(text).map_err(|e| format!("not a resume or ping frame: {e}"))
    }
}

/// A frame to the client (every one but `change`, which [`change_frame`] renders once per event).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// Every change up to `cursor` has been sent since the last `resume`.
    Ready {
        /// The cursor after the last change sent.
        cursor: String,
    },
    /// More than [`MAX_REPLAY`] changes were missed: fetch them with `/v1/sync`, then resume.
    Behind {
        /// The `since` of the `resume`.
        cursor: String,
    },
    /// The answer to `ping`.
    Pong,
    /// A bad frame or cursor; the connection stays open.
    Error {
        /// A problem code of `API.md` (`invalid_request`, or `internal` when the store failed).
        code: &'static str,
        /// What was wrong, in words.
        detail: String,
    },
}

impl ServerFrame {
    /// `ready` after `seq`.
    pub fn ready(seq: Seq) -> Self {
        Self::Ready {
            cursor: seq_cursor(seq),
        }
    }

    /// `behind`, naming the cursor after `since`.
    pub fn behind(since: Seq) -> Self {
        Self::Behind {
            cursor: seq_cursor(since),
        }
    }

    /// An `invalid_request` error.
    pub fn invalid(detail: impl Into<String>) -> Self {
        Self::Error {
            code: "invalid_request",
            detail: detail.into(),
        }
    }

    /// The frame as JSON text.
    ///
    /// # Errors
    /// Only if serialization failed, which these plain shapes never make it do.
    pub fn render(&self) -> Result<Utf8Bytes, serde_json::Error> {
        serde_json::to_string(self).map(Utf8Bytes::from)
    }
}

/// The `change` frame of one event.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename = "change")]
struct ChangeFrame {
    cursor: String,
    change: FeedChangeDto,
}

/// Renders `event` as a `change` frame: its cursor and its `/v1/sync` change.
///
/// # Errors
/// Only if serialization failed (an item's data is already JSON, so it does not).
pub fn change_frame(event: &StoredEvent) -> Result<Utf8Bytes, serde_json::Error> {
    let frame = ChangeFrame {
        cursor: seq_cursor(event.seq),
        change: FeedChangeDto::from(feed_change(event)),
    };
    serde_json::to_string(&frame).map(Utf8Bytes::from)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    #[test]
    fn client_frames_are_read_by_type() {
        assert_eq!(ClientFrame::parse(r#"{"type":"ping"}"#), Ok(ClientFrame::Ping));
        assert_eq!(
            ClientFrame::parse(r#"{"type":"resume"}"#),
            Ok(ClientFrame::Resume { since: None })
        );
        assert_eq!(
            ClientFrame::parse(r#"{"type":"resume","since":"czo3"}"#),
            Ok(ClientFrame::Resume {
                since: Some("czo3".into())
            })
        );
        assert!(ClientFrame::parse(r#"{"type":"subscribe"}"#).is_err());
        assert!(ClientFrame::parse(r#"{"type":"resume","since":7}"#).is_err());
        assert!(ClientFrame::parse("[]").is_err());
        assert!(ClientFrame::parse("not json").is_err());
    }

    #[test]
    fn server_frames_have_the_contract_shapes() {
        let rendered =
            |frame: ServerFrame| -> Value { serde_json::from_str(&frame.render().expect("renders")).expect("JSON") };
        assert_eq!(
            rendered(ServerFrame::ready(Seq(3))),
            json!({"type": "ready", "cursor": seq_cursor(Seq(3))})
        );
        assert_eq!(
            rendered(ServerFrame::behind(Seq(0))),
            json!({"type": "behind", "cursor": seq_cursor(Seq(0))})
        );
        assert_eq!(rendered(ServerFrame::Pong), json!({"type": "pong"}));
        assert_eq!(
            rendered(ServerFrame::invalid("bad")),
            json!({"type": "error", "code": "invalid_request", "detail": "bad"})
        );
    }

    #[test]
    fn close_reasons_fit_a_close_frame() {
        for close in [
            Close::SHUTDOWN,
            Close::IDLE,
            Close::TOO_OLD,
            Close::TOO_SLOW,
            Close::TOO_BIG,
            Close::BROKEN,
            Close::INTERNAL,
            Close::ERASED,
        ] {
            assert!(close.reason.len() <= 123, "{close:?}");
        }
    }
}
