//! An identity provider's user directory in memory, for tests: it records whom it was asked to delete.

use std::sync::{Arc, Mutex, PoisonError};

use rookery_domain::UserId;
use rookery_ports::{Failure, IdentityDirectory};

/// A directory of users that records every deletion (tests check that an erasure deleted the user from
/// the provider, and how many times). It can be told to fail, to test that a failed deletion is retried.
#[derive(Debug, Clone, Default)]
pub struct MemoryDirectory {
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    deleted: Vec<UserId>,
    failing: bool,
}

impl MemoryDirectory {
    /// An empty directory.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every user deleted so far, in order, repeats included.
    pub fn deleted(&self) -> Vec<UserId> {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .deleted
            .clone()
    }

    /// Makes every later deletion fail (transiently) until called with `false`.
    pub fn fail(&self, failing: bool) {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).failing = failing;
    }
}

impl IdentityDirectory for MemoryDirectory {
    async fn delete_user(&self, user: &UserId) -> Result<(), Failure> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.failing {
            return Err(Failure::transient("the memory directory was told to fail"));
        }
        state.deleted.push(user.clone());
        Ok(())
    }
}
