//! Consumers of the change log: what a stream of stored events (a DynamoDB stream, a Lambda event
//! source mapping, a local poller) is handed to, batch by batch.
//!
//! The two use cases that follow the log, [`Indexer`] and [`PushDispatcher`], are batch handlers, so a
//! transport that delivers batches (an adapter's poller, a Lambda function) needs to know only this
//! trait, not which use case it feeds.

use std::future::Future;

use rookery_domain::StoredEvent;

use crate::app::Ports;
use crate::error::BatchFailure;
use crate::{Indexer, PushDispatcher, SearchIndex};

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

impl<P: Ports> BatchHandler for PushDispatcher<P> {
    fn handle(&self, events: &[StoredEvent]) -> impl Future<Output = Result<(), BatchFailure>> + Send {
        PushDispatcher::handle(self, events)
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
