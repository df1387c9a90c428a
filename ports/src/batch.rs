//! Consumers of the change log, and the one seam every transport hands them batches through.
//!
//! The use cases that follow the log ([`Indexer`], [`PushDispatcher`]) are [`BatchHandler`]s. A
//! transport (a Lambda event source mapping, a stream poller, the local feed) receives records in its
//! own format and calls [`deliver`]: it decodes the records in order up to the first one that cannot
//! be decoded, hands the events to the handler, and says which record, if any, must be delivered again.
//! Everything before that record is done; that record and everything after it are not, so nothing is
//! skipped and nothing is lost.

use std::fmt;
use std::future::Future;

use rookery_domain::StoredEvent;

use crate::error::BatchFailure;
use crate::{Clock, EventStore, IdSource, Indexer, PushDispatcher, PushGateway, SearchIndex};

/// Something that consumes batches of stored events from the change log (the indexer, the push dispatcher).
pub trait BatchHandler: Send + Sync {
    /// Handles `events`, in order.
    ///
    /// # Errors
    /// [`BatchFailure`] naming the first event not handled; it and the rest are delivered again.
    fn handle(&self, events: &[StoredEvent]) -> impl Future<Output = Result<(), BatchFailure>> + Send;
}

impl<I: SearchIndex> BatchHandler for Indexer<I> {
    fn handle(&self, events: &[StoredEvent]) -> impl Future<Output = Result<(), BatchFailure>> + Send {
        Indexer::handle(self, events)
    }
}

impl<S: EventStore, C: Clock, I: IdSource, P: PushGateway> BatchHandler for PushDispatcher<S, C, I, P> {
    fn handle(&self, events: &[StoredEvent]) -> impl Future<Output = Result<(), BatchFailure>> + Send {
        PushDispatcher::handle(self, events)
    }
}

impl<H: BatchHandler> BatchHandler for &H {
    fn handle(&self, events: &[StoredEvent]) -> impl Future<Output = Result<(), BatchFailure>> + Send {
        (**self).handle(events)
    }
}

impl<H: BatchHandler> BatchHandler for std::sync::Arc<H> {
    fn handle(&self, events: &[StoredEvent]) -> impl Future<Output = Result<(), BatchFailure>> + Send {
        (**self).handle(events)
    }
}

/// A [`BatchHandler`] made of a closure that takes a batch by value (tests, ad-hoc consumers).
#[derive(Debug, Clone)]
pub struct HandlerFn<F>(pub F);

impl<F, Fut> BatchHandler for HandlerFn<F>
where
    F: Fn(Vec<StoredEvent>) -> Fut + Send + Sync,
    Fut: Future<Output = Result<(), BatchFailure>> + Send,
{
    fn handle(&self, events: &[StoredEvent]) -> impl Future<Output = Result<(), BatchFailure>> + Send {
        (self.0)(events.to_vec())
    }
}

/// A consumer of the change log that skips the events of erased accounts: a redelivered batch (or one
/// that was already on its way when the account was erased) must not re-create anything of theirs, an
/// index document or a push.
///
/// Each batch reads the marker of each of its owners once ([`EventStore::erased`]) and hands the inner
/// handler only the events of owners who are not erased, in their order; a failure the inner handler
/// reports is named at the event it came from. An owner whose marker cannot be read stops the batch at
/// that owner's first event, after the events before it are handled.
#[derive(Debug, Clone)]
pub struct SkipErased<S, H> {
    store: S,
    inner: H,
}

impl<S: EventStore, H: BatchHandler> SkipErased<S, H> {
    /// `inner`, skipping the events of the owners `store` knows as erased.
    pub fn new(store: S, inner: H) -> Self {
        Self { store, inner }
    }

    /// The handler the events of live owners go to.
    pub fn inner(&self) -> &H {
        &self.inner
    }

    async fn handle_live(&self, events: &[StoredEvent]) -> Result<(), BatchFailure> {
        let mut erased: std::collections::HashMap<&rookery_domain::UserId, bool> = std::collections::HashMap::new();
        let mut live = Vec::with_capacity(events.len());
        let mut origins = Vec::with_capacity(events.len());
        let mut unreadable = None;
        for (index, event) in events.iter().enumerate() {
            let skip = match erased.get(&event.owner) {
                Some(skip) => *skip,
                None => match self.store.erased(&event.owner).await {
                    Ok(marker) => *erased.entry(&event.owner).or_insert(marker.is_some()),
                    Err(error) => {
                        unreadable = Some(BatchFailure {
                            index,
                            failure: error.into(),
                        });
                        break;
                    }
                },
            };
            if skip {
                tracing::debug!(owner = %event.owner, seq = event.seq.0, "event of an erased account skipped");
            } else {
                live.push(event.clone());
                origins.push(index);
            }
        }
        if !live.is_empty() {
            self.inner.handle(&live).await.map_err(|failure| BatchFailure {
                // The inner handler names a position in `live`; a position it was not given is passed on
                // past the batch's end, so `deliver` reports it as out of range rather than guessing.
                index: origins
                    .get(failure.index)
                    .copied()
                    .unwrap_or(events.len() + failure.index),
                failure: failure.failure,
            })?;
        }
        unreadable.map_or(Ok(()), Err)
    }
}

impl<S: EventStore, H: BatchHandler> BatchHandler for SkipErased<S, H> {
    fn handle(&self, events: &[StoredEvent]) -> impl Future<Output = Result<(), BatchFailure>> + Send {
        self.handle_live(events)
    }
}

/// Where a batch stopped: the first record not handled, and why (for the logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stopped {
    /// Position in the batch of the first record not handled.
    pub record: usize,
    /// Why.
    pub reason: String,
    /// True when delivering the record again may succeed (a failed handler); false for a record
    /// that cannot be decoded, which will fail again until the code that reads it changes.
    pub retryable: bool,
}

/// What became of a batch: how many events it carried, and where it stopped, if it did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Events decoded from the records and handed to the handler.
    pub events: usize,
    /// The first record not handled; `None` when every record was.
    pub stopped: Option<Stopped>,
}

/// A handler named an event it was not given: a bug in the handler, and no record can be named.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the handler reported event {index}, but it was given only {len}")]
pub struct FailureOutOfRange {
    /// The position the handler reported.
    pub index: usize,
    /// How many events it was given.
    pub len: usize,
}

/// Decodes `records` in order and hands the events they carry to `handler`.
///
/// `decode` answers the event a record carries, `Ok(None)` for a record that carries none (bookkeeping
/// rows, changes that are not inserts), or an error for a record that should carry one and cannot be
/// read. Decoding stops at the first such record; the events before it are still handled, so a bad
/// record costs no progress on the ones before it.
///
/// # Errors
/// [`FailureOutOfRange`] when the handler reports an event it was not given.
pub async fn deliver<R, E, H>(
    records: &[R],
    mut decode: impl FnMut(&R) -> Result<Option<StoredEvent>, E>,
    handler: &H,
) -> Result<Delivery, FailureOutOfRange>
where
    E: fmt::Display,
    H: BatchHandler + ?Sized,
{
    let mut events = Vec::with_capacity(records.len());
    // For each decoded event, the record it came from: the handler reports positions in `events`.
    let mut origins = Vec::with_capacity(records.len());
    let mut undecodable = None;
    for (index, record) in records.iter().enumerate() {
        match decode(record) {
            Ok(Some(event)) => {
                events.push(event);
                origins.push(index);
            }
            Ok(None) => {}
            Err(error) => {
                undecodable = Some(Stopped {
                    record: index,
                    reason: format!("record could not be decoded: {error}"),
                    retryable: false,
                });
                break;
            }
        }
    }
    if !events.is_empty()
        && let Err(failure) = handler.handle(&events).await
    {
        let Some(&record) = origins.get(failure.index) else {
            return Err(FailureOutOfRange {
                index: failure.index,
                len: events.len(),
            });
        };
        let stopped = Stopped {
            record,
            reason: failure.failure.to_string(),
            retryable: failure.failure.is_retryable(),
        };
        return Ok(Delivery {
            events: events.len(),
            stopped: Some(stopped),
        });
    }
    Ok(Delivery {
        events: events.len(),
        stopped: undecodable,
    })
}

#[cfg(test)]
mod tests {
    use rookery_domain::device::DeviceEvent;
    use rookery_domain::{DeviceId, EventId, EventMeta, EventPayload, Seq, Timestamp, UserId};

    use super::*;
    use crate::Failure;

    fn event(seq: u64) -> StoredEvent {
        let ids = (
            UserId::parse("u1".to_owned()),
            EventId::parse(format!("e{seq}")),
            DeviceId::parse("d1".to_owned()),
        );
        let (Ok(owner), Ok(event_id), Ok(device_id)) = ids else {
            unreachable!("fixed ids are valid")
        };
        StoredEvent {
            event_id,
            owner,
            seq: Seq(seq),
            schema: 1,
            at: Timestamp::from_millis(seq),
            payload: EventPayload::Device(DeviceEvent::Removed {
                device_id,
                platform: None,
            }),
            meta: EventMeta::default(),
        }
    }

    /// Records as a transport might see them: an event, nothing to deliver, or garbage.
    enum Record {
        Event(u64),
        Bookkeeping,
        Garbage,
    }

    fn decode(record: &Record) -> Result<Option<StoredEvent>, &'static str> {
        match record {
            Record::Event(seq) => Ok(Some(event(*seq))),
            Record::Bookkeeping => Ok(None),
            Record::Garbage => Err("not an event"),
        }
    }

    #[tokio::test]
    async fn a_handler_failure_is_reported_at_the_record_its_event_came_from() {
        let records = [
            Record::Bookkeeping,
            Record::Event(1),
            Record::Bookkeeping,
            Record::Event(2),
        ];
        let handler = HandlerFn(|events: Vec<StoredEvent>| async move {
            match events.iter().position(|e| e.seq == Seq(2)) {
                Some(index) => Err(BatchFailure {
                    index,
                    failure: Failure::transient("index down"),
                }),
                None => Ok(()),
            }
        });
        let stopped = deliver(&records, decode, &handler).await.map(|d| d.stopped);
        assert!(
            matches!(
                stopped,
                Ok(Some(Stopped {
                    record: 3,
                    retryable: true,
                    ..
                }))
            ),
            "{stopped:?}"
        );
    }

    #[tokio::test]
    async fn events_before_an_undecodable_record_are_handled_and_it_is_named() {
        let records = [Record::Event(1), Record::Garbage, Record::Event(3)];
        let seen = std::sync::Mutex::new(Vec::new());
        let handler = HandlerFn(|events: Vec<StoredEvent>| {
            if let Ok(mut seen) = seen.lock() {
                seen.extend(events.iter().map(|e| e.seq));
            }
            async { Ok(()) }
        });
        let stopped = deliver(&records, decode, &handler).await.map(|d| d.stopped);
        assert!(
            matches!(
                stopped,
                Ok(Some(Stopped {
                    record: 1,
                    retryable: false,
                    ..
                }))
            ),
            "{stopped:?}"
        );
        assert_eq!(seen.lock().map(|s| s.clone()).unwrap_or_default(), vec![Seq(1)]);
    }

    #[tokio::test]
    async fn a_handler_that_names_an_event_it_was_not_given_is_an_error() {
        let records = [Record::Event(1)];
        let handler = HandlerFn(|_events: Vec<StoredEvent>| async {
            Err(BatchFailure {
                index: 5,
                failure: Failure::transient("?"),
            })
        });
        let stopped = deliver(&records, decode, &handler).await.map(|d| d.stopped);
        assert_eq!(stopped, Err(FailureOutOfRange { index: 5, len: 1 }));
    }

    #[tokio::test]
    async fn a_batch_handled_whole_stops_nowhere() {
        let records = [Record::Event(1), Record::Bookkeeping];
        let handler = HandlerFn(|_events: Vec<StoredEvent>| async { Ok(()) });
        let delivery = deliver(&records, decode, &handler).await;
        assert_eq!(
            delivery,
            Ok(Delivery {
                events: 1,
                stopped: None
            })
        );
    }
}
