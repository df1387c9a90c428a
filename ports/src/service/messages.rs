//! Messages (Lambda function 4's routes): a message is appended to the recipient's stream before the
//! sender hears `202`; the push dispatcher delivers it later, from the change log.

use rookery_domain::message::MessageRejection;
use rookery_domain::{EventPayload, Message, MessageId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::write::{Planned, Writer};
use super::{Caller, Idempotency, Page};
use crate::cursor::{page_size, parse_seq, seq_cursor};
use crate::{AppError, Clock, EventStore, Failure, IdSource};

/// The answer to `POST /v1/messages`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageAccepted {
    /// The message's id.
    pub id: MessageId,
    /// Always `accepted`.
    pub status: String,
}

/// The messages use cases.
#[derive(Debug, Clone)]
pub struct MessageService<S, C, I> {
    writer: Writer<S, C, I>,
}

impl<S: EventStore, C: Clock, I: IdSource> MessageService<S, C, I> {
    /// The service over the shared write path.
    pub fn new(writer: Writer<S, C, I>) -> Self {
        Self { writer }
    }

    /// `POST /v1/messages`: stored in the recipient's stream before answering; pushed later.
    ///
    /// # Errors
    /// `Invalid` for text or data over a limit (`TooLarge` for data size); `Unavailable`.
    pub async fn send_message(
        &self,
        caller: &Caller,
        to: UserId,
        text: String,
        data: Map<String, Value>,
        idem: Option<&Idempotency>,
    ) -> Result<MessageAccepted, AppError> {
        let id = self.writer.fresh_id(MessageId::parse)?;
        let message = Message::new(
            id.clone(),
            caller.user.clone(),
            to,
            text,
            data,
            self.writer.clock().now(),
            &self.writer.config().limits,
        )
        .map_err(|e| match e {
            MessageRejection::Data(rookery_domain::validate::DataError::TooLarge { .. }) => {
                AppError::TooLarge(e.to_string())
            }
            other => AppError::Invalid(other.to_string()),
        })?;
        self.writer
            .write(caller, idem, |_now| {
                let message = message.clone();
                let id = id.clone();
                async move {
                    let outcome = MessageAccepted {
                        id,
                        status: "accepted".into(),
                    };
                    let to = message.to.clone();
                    Ok(Planned::at_end(
                        &to,
                        vec![EventPayload::MessageReceived(message)],
                        outcome,
                    ))
                }
            })
            .await
    }

    /// `GET /v1/messages`: messages the caller received, oldest first.
    ///
    /// # Errors
    /// `Invalid` for a bad limit or cursor; `Unavailable`.
    pub async fn messages(
        &self,
        caller: &Caller,
        since: Option<&str>,
        limit: Option<u64>,
    ) -> Result<Page<Message>, AppError> {
        let limit = page_size(limit)?;
        let after = parse_seq(since)?;
        let events = self
            .writer
            .store()
            .read_messages(&caller.user, after, limit + 1)
            .await
            .map_err(Failure::from)?;
        let page = Page::cut(events, limit, |e| Some(seq_cursor(e.seq)));
        Ok(page.filter_map(|e| match e.payload {
            EventPayload::MessageReceived(message) => Some(message),
            _ => None,
        }))
    }
}
