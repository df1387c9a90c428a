//! Turns: the appends of one process to one user's stream, taken one at a time.
//!
//! DynamoDB serializes a user's appends with the condition on the user head, and a loser has to try again.
//! Losers are not free: each failed transaction costs a round trip and write capacity, and when many
//! requests of one process race for one head (`rookery serve --backend aws` under a user's burst), most
//! attempts fail and throughput collapses. So appends of one store (and its clones) to the same user
//! queue here and go one at a time, while appends to different users never wait for each other.
//! Appends from other processes (other Lambda instances) still race on the head; the store's retry
//! loop covers those.
//!
//! A turn also carries the seq the previous append of this process left the head at, so an append that
//! follows another in the queue tries there directly instead of reading the head first; if another
//! process moved the head since, the cancellation says where it went.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use rookery_domain::{Seq, UserId};
use tokio::sync::OwnedMutexGuard;

/// One user's queue: the seq this process last saw the head at, if an append left it recently.
type Slot = Arc<tokio::sync::Mutex<Option<Seq>>>;

/// The users with an append of this process in progress or waiting.
#[derive(Debug, Default)]
pub(super) struct Turns {
    users: Mutex<HashMap<UserId, Slot>>,
}

impl Turns {
    /// Waits for `owner`'s turn. The map entry is dropped when the last holder or waiter is done, so
    /// the map holds only users with appends in flight.
    pub(super) async fn take(self: &Arc<Self>, owner: &UserId) -> Turn {
        let slot = {
            let mut users = self.users.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(users.entry(owner.clone()).or_default())
        };
        let guard = Arc::clone(&slot).lock_owned().await;
        Turn {
            guard: Some(guard),
            slot,
            owner: owner.clone(),
            turns: Arc::clone(self),
        }
    }

    /// How many users have an entry (tests only).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.users.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

/// The right to append to one user's stream, for this process, until dropped.
#[derive(Debug)]
pub(super) struct Turn {
    guard: Option<OwnedMutexGuard<Option<Seq>>>,
    slot: Slot,
    owner: UserId,
    turns: Arc<Turns>,
}

impl Turn {
    /// The seq the previous append of this process left the head at, if known.
    pub(super) fn known_seq(&self) -> Option<Seq> {
        self.guard.as_deref().copied().flatten()
    }

    /// Records where this append left the head (`None`: unknown), for the next append in the queue.
    pub(super) fn leave_at(&mut self, seq: Option<Seq>) {
        if let Some(guard) = self.guard.as_mut() {
            **guard = seq;
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        // Release the user's lock first, so a waiter can go on while the map is tidied.
        self.guard = None;
        let mut users = self.turns.users.lock().unwrap_or_else(PoisonError::into_inner);
        // Only the map and this turn hold the slot: nobody waits, so the entry can go. Others clone the
        // slot only under the map's lock, which is held here, so none can appear in between.
        if Arc::strong_count(&self.slot) == 2 {
            users.remove(&self.owner);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn user(name: &str) -> UserId {
        UserId::parse(name).unwrap()
    }

    #[tokio::test]
    async fn one_users_appends_take_turns_and_pass_on_the_seq() {
        let turns = Arc::new(Turns::default());
        let mut first = turns.take(&user("alice")).await;
        assert_eq!(first.known_seq(), None);
        let waiting = tokio::spawn({
            let turns = Arc::clone(&turns);
            async move { turns.take(&user("alice")).await.known_seq() }
        });
        // On this single-threaded runtime, yielding lets the spawned task run up to where it waits.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!waiting.is_finished(), "the second waits for the first");
        first.leave_at(Some(Seq(7)));
        drop(first);
        assert_eq!(
            waiting.await.unwrap(),
            Some(Seq(7)),
            "and starts where it left the head"
        );
        assert_eq!(turns.len(), 0, "an idle user leaves no entry");
    }

    #[tokio::test]
    async fn different_users_never_wait_for_each_other() {
        let turns = Arc::new(Turns::default());
        let _alice = turns.take(&user("alice")).await;
        let bob = tokio::time::timeout(Duration::from_secs(5), turns.take(&user("bob"))).await;
        assert!(bob.is_ok());
        assert_eq!(turns.len(), 2);
    }
}
