//! Messages between users: validated on the way in, stored in the recipient's stream.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::validate::{DataError, check_data};
use crate::{Limits, MessageId, Timestamp, UserId};

/// A message as stored and as clients see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Its id, from the id source.
    pub id: MessageId,
    /// The sender.
    pub from: UserId,
    /// The recipient.
    pub to: UserId,
    /// The text shown in the push notification.
    pub text: String,
    /// Optional structured data for the app.
    #[serde(default)]
    pub data: Map<String, Value>,
    /// When it was accepted.
    pub sent_at: Timestamp,
}

/// Why a message was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MessageRejection {
    /// `text` is longer than the limit.
    #[error("text is {chars} characters, more than the limit of {max}")]
    TextTooLong {
        /// Its length in characters.
        chars: usize,
        /// The limit.
        max: usize,
    },
    /// `data` breaks a limit.
    #[error("{0}")]
    Data(#[from] DataError),
}

impl Message {
    /// Validates and builds a message.
    ///
    /// # Errors
    /// [`MessageRejection`] when `text` or `data` break a limit.
    pub fn new(
        id: MessageId,
        from: UserId,
        to: UserId,
        text: String,
        data: Map<String, Value>,
        sent_at: Timestamp,
        limits: &Limits,
    ) -> Result<Self, MessageRejection> {
        let chars = text.chars().count();
        if chars > limits.max_message_chars {
            return Err(MessageRejection::TextTooLong {
                chars,
                max: limits.max_message_chars,
            });
        }
        check_data(&data, limits)?;
        Ok(Self {
            id,
            from,
            to,
            text,
            data,
            sent_at,
        })
    }
}
