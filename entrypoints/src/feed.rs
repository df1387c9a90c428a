//! The in-process change feed: what DynamoDB Streams and the event source mappings do on AWS, done by
//! one background task per consumer for `rookery serve`.
//!
//! Each consumer (the indexer, the push dispatcher, and whatever follows the log next) has its own
//! task and its own position, as each Lambda function has its own event source mapping on AWS, so a
//! consumer that keeps failing holds back only itself. A task is generic over the store's
//! [`ChangeFeed`]: it starts from the position the consumer stored there, waits for commits with
//! [`ChangeFeed::wait_for_commit`], reads the feed in batches with [`ChangeFeed::changes_after`], hands
//! each batch to its [`BatchHandler`] and then stores its new position, so a store that keeps its
//! projections on disk (SQLite) replays nothing at start, and one that keeps them in memory replays
//! everything. A handler that stops at a record ([`BatchFailure`]) gets the batch again from that
//! record, after a capped exponential backoff, so nothing is skipped and nothing is lost; a record it
//! already handled is not given to it again while the driver runs (after a restart, the events after
//! the last stored position are, which every consumer of the log tolerates).

use std::time::Duration;

use rookery_domain::StoredEvent;
use rookery_ports::{BatchFailure, BatchHandler, ChangeFeed};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The name the indexer's position is stored under.
pub const INDEXER: &str = "indexer";

/// The name the push dispatcher's position is stored under.
pub const PUSH_DISPATCHER: &str = "push dispatcher";

/// How many events one batch holds. A batch is handled without yielding to the runtime (the memory
/// index applies it under its lock), so this bounds how long the driver keeps a worker thread from the
/// requests queued on it; under a burst of writes, small batches taken one after another index as fast
/// as large ones and keep request latency even.
pub const BATCH_SIZE: usize = 64;

/// The most events one batch holds while the consumer is behind: each full batch doubles the next one,
/// up to this, and a batch that is not full goes back to [`BATCH_SIZE`]. On the SQLite store every
/// batch of the indexer waits for a group commit, so batches of 64 behind a sustained write load fell
/// ever further behind (a million events at 4,000 writes a second); larger ones catch up.
pub const MAX_BATCH_SIZE: usize = 1024;

/// The first wait after a failure; each further failure doubles it, up to [`MAX_BACKOFF`].
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(50);

/// The longest wait between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Capped exponential backoff.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Self {
        Self { next: INITIAL_BACKOFF }
    }

    fn step(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(MAX_BACKOFF);
        wait
    }

    fn reset(&mut self) {
        self.next = INITIAL_BACKOFF;
    }
}

/// Drives one consumer of the change log from a store's change feed.
#[derive(Debug)]
pub struct FeedDriver<F, H> {
    consumer: &'static str,
    feed: F,
    handler: H,
    start: Option<u64>,
}

impl<F: ChangeFeed, H: BatchHandler + 'static> FeedDriver<F, H> {
    /// A driver feeding `handler` from `feed`, from the position stored for `consumer` (the name its
    /// position is stored under and the logs call it by; the beginning when none is stored).
    pub fn new(consumer: &'static str, feed: F, handler: H) -> Self {
        Self {
            consumer,
            feed,
            handler,
            start: None,
        }
    }

    /// Starts from feed position `position` instead of the stored one.
    #[must_use]
    pub fn from_position(mut self, position: u64) -> Self {
        self.start = Some(position);
        self
    }

    /// Starts the driver on the current tokio runtime.
    pub fn spawn(self) -> FeedHandle {
        let (stop, stopped) = watch::channel(false);
        let (position_tx, position) = watch::channel(self.start.unwrap_or(0));
        let task = tokio::spawn(self.run(stopped, position_tx));
        FeedHandle { stop, position, task }
    }

    /// The position to start from: the one given, or the stored one (retried until it can be read).
    async fn start_position(&self, stopped: &mut watch::Receiver<bool>, backoff: &mut Backoff) -> Option<u64> {
        if let Some(position) = self.start {
            return Some(position);
        }
        loop {
            match self.feed.consumer_position(self.consumer).await {
                Ok(position) => return Some(position),
                Err(error) => {
                    let consumer = self.consumer;
                    tracing::error!(consumer, %error, "reading the consumer's stored position failed; retrying");
                    if pause(stopped, backoff.step()).await {
                        return None;
                    }
                }
            }
        }
    }

    async fn run(self, mut stopped: watch::Receiver<bool>, position_tx: watch::Sender<u64>) {
        let mut backoff = Backoff::new();
        let consumer = self.consumer;
        let Some(mut position) = self.start_position(&mut stopped, &mut backoff).await else {
            return;
        };
        backoff.reset();
        position_tx.send_replace(position);
        tracing::debug!(consumer, position, "feed consumer started");
        let mut batch = BATCH_SIZE;
        loop {
            let (events, next) = match self.feed.changes_after(position, batch).await {
                Ok(read) => read,
                Err(error) => {
                    tracing::error!(consumer, %error, position, "reading the change feed failed; retrying");
                    if pause(&mut stopped, backoff.step()).await {
                        break;
                    }
                    continue;
                }
            };
            if events.is_empty() {
                // Completes at once if a commit landed after the read above: none is missed.
                tokio::select! {
                    woke = self.feed.wait_for_commit(position) => if woke.is_none() { break },
                    _ = stopped.changed() => break,
                }
                continue;
            }
            if !self.deliver(&events, &mut stopped, &mut backoff).await {
                break;
            }
            batch = if events.len() >= batch {
                (batch * 2).min(MAX_BATCH_SIZE)
            } else {
                BATCH_SIZE
            };
            position = next;
            if let Err(error) = self.feed.set_consumer_position(consumer, position).await {
                // Not fatal: after a restart the consumer handles these events again, which it tolerates.
                tracing::warn!(consumer, %error, position, "storing the consumer's position failed");
            }
            position_tx.send_replace(position);
            // A consumer with a backlog never finds the feed empty: without this, stopping would wait
            // until it had caught up with all of it.
            if *stopped.borrow() {
                break;
            }
            // Let the requests queued on this worker run before the next batch.
            tokio::task::yield_now().await;
        }
        tracing::debug!(consumer, position, "feed consumer stopped");
    }

    /// Hands one batch to the consumer until it has handled all of it; false when stopped first.
    async fn deliver(
        &self,
        events: &[StoredEvent],
        stopped: &mut watch::Receiver<bool>,
        backoff: &mut Backoff,
    ) -> bool {
        let mut handled = 0;
        while handled < events.len() {
            match self.handler.handle(&events[handled..]).await {
                Ok(()) => handled = events.len(),
                Err(failure) => {
                    handled += report(self.consumer, &failure);
                    if pause(stopped, backoff.step()).await {
                        return false;
                    }
                }
            }
        }
        backoff.reset();
        true
    }
}

/// Logs a consumer's failure and answers how many records of the slice it did handle.
fn report(consumer: &str, failure: &BatchFailure) -> usize {
    tracing::warn!(consumer, index = failure.index, error = %failure.failure, "change feed consumer failed; retrying from the failed record");
    failure.index
}

/// Waits `wait`, or until told to stop; true when stopped.
async fn pause(stopped: &mut watch::Receiver<bool>, wait: Duration) -> bool {
    if *stopped.borrow() {
        return true;
    }
    tokio::select! {
        () = tokio::time::sleep(wait) => false,
        _ = stopped.changed() => true,
    }
}

/// A running feed consumer.
#[derive(Debug)]
pub struct FeedHandle {
    stop: watch::Sender<bool>,
    position: watch::Receiver<u64>,
    task: JoinHandle<()>,
}

impl FeedHandle {
    /// The feed position the consumer has handled everything before.
    pub fn position(&self) -> u64 {
        *self.position.borrow()
    }

    /// Waits until the driver has handled everything before `target` (e.g. the store's commit position).
    /// Returns false if the driver stopped first.
    pub async fn caught_up_to(&self, target: u64) -> bool {
        let mut position = self.position.clone();
        position.wait_for(|p| *p >= target).await.is_ok()
    }

    /// Asks the driver to stop after the batch in hand, and waits for it.
    pub async fn stop(self) {
        self.stop.send_replace(true);
        if let Err(error) = self.task.await {
            tracing::error!(%error, "the feed driver task failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let mut backoff = Backoff::new();
        let waits: Vec<Duration> = (0..10).map(|_| backoff.step()).collect();
        assert_eq!(waits[0], INITIAL_BACKOFF);
        assert_eq!(waits[1], INITIAL_BACKOFF * 2);
        assert!(waits.iter().all(|w| *w <= MAX_BACKOFF));
        assert_eq!(waits[9], MAX_BACKOFF);
        backoff.reset();
        assert_eq!(backoff.step(), INITIAL_BACKOFF);
    }
}
