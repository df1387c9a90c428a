//! The one write path every service shares: replay an idempotent repeat, plan against the current
//! state, append atomically under the conditions the plan was based on, and plan again (a bounded number
//! of times, after a jittered wait) when another writer got there first.
//!
//! Most writes append at the end of the user's stream without naming its seq: the store serializes a
//! user's appends, so writes of one user to different items never refuse each other. Only the item's
//! version guards an item write. When it moved, the write is planned again against the new state: a
//! client's `If-Match` is re-checked then, so it becomes a conflict carrying the events the client missed,
//! while a write without one (a merge patch from a second device, say) applies on top of the other.
//! Device writes, whose plan reads the whole registry, still name the seq they read.

use std::future::Future;

use rookery_domain::{EventId, EventMeta, EventPayload, ItemKey, NewEvent, Seq, Timestamp, UserId, Version};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{Caller, Idempotency, ServiceConfig};
use crate::store::{AppendBatch, AppendError, IdempotencyRecord, IdempotencyWrite, Rebase};
use crate::{AppError, Clock, EventStore, Failure, IdSource};

/// The outcome of a write that answers with no body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Done {}

/// What a write attempt decided: the events to append where, under which expectations, and the answer.
pub(crate) struct Planned<T> {
    pub(crate) owner: UserId,
    /// The stream's seq the plan depends on; `None` for a plan that holds wherever the stream is.
    pub(crate) expected_seq: Option<Seq>,
    pub(crate) item_versions: Vec<(ItemKey, Version)>,
    pub(crate) payloads: Vec<EventPayload>,
    pub(crate) outcome: T,
    /// How the store may re-plan the write in place when its one item moved (see [`Rebase`]); the
    /// service then learns the outcome from what the rebase decided.
    pub(crate) rebase: Option<Rebase>,
}

impl<T> Planned<T> {
    /// A plan that appends `payloads` at the end of `owner`'s stream, guarding no item.
    pub(crate) fn at_end(owner: &UserId, payloads: Vec<EventPayload>, outcome: T) -> Self {
        Self {
            owner: owner.clone(),
            expected_seq: None,
            item_versions: Vec::new(),
            payloads,
            outcome,
            rebase: None,
        }
    }

    /// A plan that appends `payloads` to `owner`'s stream only if its last seq is still `seq`: for a
    /// decision that depends on the state of the whole stream.
    pub(crate) fn after(owner: &UserId, seq: Seq, payloads: Vec<EventPayload>, outcome: T) -> Self {
        Self {
            expected_seq: Some(seq),
            ..Self::at_end(owner, payloads, outcome)
        }
    }

    /// The same plan with another outcome.
    pub(crate) fn map<U>(self, f: impl FnOnce(T, &[EventPayload]) -> U) -> Planned<U> {
        let outcome = f(self.outcome, &self.payloads);
        Planned {
            owner: self.owner,
            expected_seq: self.expected_seq,
            item_versions: self.item_versions,
            payloads: self.payloads,
            outcome,
            rebase: self.rebase,
        }
    }
}

/// The shared write path over the event store, the clock and the id source.
#[derive(Debug, Clone)]
pub struct Writer<S, C, I> {
    store: S,
    clock: C,
    ids: I,
    config: ServiceConfig,
}

impl<S: EventStore, C: Clock, I: IdSource> Writer<S, C, I> {
    /// The write path over these adapters.
    pub fn new(store: S, clock: C, ids: I, config: ServiceConfig) -> Self {
        Self {
            store,
            clock,
            ids,
            config,
        }
    }

    /// The event store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The clock.
    pub fn clock(&self) -> &C {
        &self.clock
    }

    /// The configuration.
    pub fn config(&self) -> &ServiceConfig {
        &self.config
    }

    /// A fresh id, parsed as the id type it will be.
    pub(crate) fn fresh_id<T>(&self, parse: fn(String) -> Result<T, rookery_domain::IdError>) -> Result<T, AppError> {
        parse(self.ids.new_id()).map_err(|e| AppError::Unavailable(Failure::permanent(format!("id source: {e}"))))
    }

    /// Idempotency records made before the instant this answers are forgotten at `now` (the configured TTL ago).
    pub fn expired_before(&self, now: Timestamp) -> Timestamp {
        let ttl = u64::try_from(self.config.idempotency_ttl.as_millis()).unwrap_or(u64::MAX);
        Timestamp::from_millis(now.as_millis().saturating_sub(ttl))
    }

    /// The recorded outcome of an earlier request with the same key, if it is still remembered.
    async fn replay<T: DeserializeOwned>(&self, user: &UserId, idem: &Idempotency) -> Result<Option<T>, AppError> {
        let Some(record) = self.store.idempotency(user, &idem.key).await.map_err(Failure::from)? else {
            return Ok(None);
        };
        if record.recorded_at < self.expired_before(self.clock.now()) {
            return Ok(None);
        }
        if record.fingerprint != idem.fingerprint {
            return Err(AppError::IdempotencyKeyReused);
        }
        serde_json::from_value(record.outcome)
            .map(Some)
            .map_err(|e| AppError::Unavailable(Failure::permanent(format!("recorded outcome unreadable: {e}"))))
    }

    /// Runs one write: replays a repeat, else plans and appends, planning again (after a jittered wait)
    /// while other writers move what the plan was based on.
    ///
    /// `plan` must re-read everything it decides on, each time it is called: an attempt after a moved
    /// version or seq is a new decision on the new state.
    pub(crate) async fn write<T, F, Fut>(
        &self,
        caller: &Caller,
        idem: Option<&Idempotency>,
        mut plan: F,
    ) -> Result<T, AppError>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut(Timestamp) -> Fut,
        Fut: Future<Output = Result<Planned<T>, AppError>>,
    {
        if let Some(idem) = idem
            && let Some(outcome) = self.replay(&caller.user, idem).await?
        {
            return Ok(outcome);
        }
        for attempt in 1..=self.config.max_write_attempts {
            let now = self.clock.now();
            let planned = plan(now).await?;
            if planned.payloads.is_empty() && idem.is_none() {
                return Ok(planned.outcome);
            }
            let rebase = planned.rebase.clone().filter(|_| idem.is_none());
            let (batch, outcome) = self.batch(caller, idem, now, planned)?;
            let own_stream = batch.owner == caller.user;
            let appended = match rebase {
                Some(rebase) => self.store.append_rebasing(batch, rebase).await,
                None => self.store.append(batch).await,
            };
            match appended {
                Ok(_) => return Ok(outcome),
                Err(moved @ (AppendError::SeqMoved { .. } | AppendError::VersionMoved { .. })) => {
                    tracing::debug!(attempt, %moved, "another writer got there first; planning again");
                    if attempt < self.config.max_write_attempts {
                        self.config.write_backoff.wait(attempt).await;
                    }
                }
                Err(AppendError::KeyTaken) => {
                    if let Some(idem) = idem
                        && let Some(outcome) = self.replay(&caller.user, idem).await?
                    {
                        return Ok(outcome);
                    }
                }
                Err(AppendError::TooLarge(why)) => return Err(AppError::TooLarge(why)),
                // Another user's erased stream (a message's recipient) is no one the caller can reach.
                Err(AppendError::Erased { .. }) if own_stream => return Err(AppError::Erased),
                Err(AppendError::Erased { .. }) => return Err(AppError::NotFound),
                Err(AppendError::Unavailable(failure)) => return Err(failure.into()),
            }
        }
        Err(AppError::Unavailable(Failure::transient(
            "other writes kept changing what this write depends on; try again",
        )))
    }

    /// The append a plan makes: its events with fresh ids and the caller's metadata, and the
    /// idempotency record of its outcome.
    fn batch<T: Serialize>(
        &self,
        caller: &Caller,
        idem: Option<&Idempotency>,
        now: Timestamp,
        planned: Planned<T>,
    ) -> Result<(AppendBatch, T), AppError> {
        let meta = EventMeta {
            request_id: caller.request_id.clone(),
            idempotency_key: idem.map(|i| i.key.clone()),
            actor: Some(caller.user.clone()),
        };
        let mut events = Vec::with_capacity(planned.payloads.len());
        for payload in planned.payloads {
            events.push(NewEvent {
                event_id: self.fresh_id(EventId::parse)?,
                at: now,
                payload,
                meta: meta.clone(),
            });
        }
        let idempotency = match idem {
            Some(idem) => Some(IdempotencyWrite {
                owner: caller.user.clone(),
                record: IdempotencyRecord {
                    key: idem.key.clone(),
                    fingerprint: idem.fingerprint.clone(),
                    outcome: serde_json::to_value(&planned.outcome)
                        .map_err(|e| AppError::Unavailable(Failure::permanent(e.to_string())))?,
                    recorded_at: now,
                },
                expired_before: self.expired_before(now),
            }),
            None => None,
        };
        let batch = AppendBatch {
            owner: planned.owner,
            expected_seq: planned.expected_seq,
            item_versions: planned.item_versions,
            events,
            idempotency,
        };
        Ok((batch, planned.outcome))
    }
}
