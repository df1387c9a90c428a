//! A recording stand-in for API Gateway's `@connections` management API.
//!
//! moto accepts any `PostToConnection` (creating the connection on first use) and never answers
//! `410 Gone`, so the realtime function's tests record what it posts here instead, and say which
//! connections are gone, refuse frames for their size, or fail.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};

use rookery_adapters_aws::realtime::{ConnectionsApi, PostOutcome};
use rookery_ports::Failure;
use serde_json::Value;

#[derive(Debug, Default)]
struct State {
    posted: BTreeMap<String, Vec<String>>,
    gone: BTreeSet<String>,
    failing: BTreeSet<String>,
    closed: Vec<String>,
    max_frame: Option<usize>,
}

/// Records every frame posted to each connection, in order.
#[derive(Debug, Clone, Default)]
pub struct RecordingConnections {
    state: Arc<Mutex<State>>,
}

impl RecordingConnections {
    /// A stand-in where every connection exists and takes every frame.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// From now on, connection `id` answers `410 Gone`.
    pub fn make_gone(&self, id: &str) {
        self.with(|s| s.gone.insert(id.to_owned()));
    }

    /// From now on, posts to connection `id` fail with a transient failure (`fail = true`), or work again.
    pub fn set_failing(&self, id: &str, fail: bool) {
        self.with(|s| {
            if fail {
                s.failing.insert(id.to_owned())
            } else {
                s.failing.remove(id)
            }
        });
    }

    /// From now on, frames over `bytes` are refused as too large.
    pub fn limit_frames(&self, bytes: usize) {
        self.with(|s| s.max_frame = Some(bytes));
    }

    /// The frames connection `id` received, parsed, in order.
    pub fn frames(&self, id: &str) -> Vec<Value> {
        self.with(|s| s.posted.get(id).cloned().unwrap_or_default())
            .iter()
            .filter_map(|text| serde_json::from_str(text).ok())
            .collect()
    }

    /// The connections the function closed.
    pub fn closed(&self) -> Vec<String> {
        self.with(|s| s.closed.clone())
    }
}

impl ConnectionsApi for RecordingConnections {
    async fn post(&self, id: &str, frame: &str) -> Result<PostOutcome, Failure> {
        self.with(|s| {
            if s.gone.contains(id) {
                return Ok(PostOutcome::Gone);
            }
            if s.failing.contains(id) {
                return Err(Failure::transient(format!("{id}: LimitExceededException")));
            }
            if s.max_frame.is_some_and(|max| frame.len() > max) {
                return Ok(PostOutcome::TooLarge);
            }
            s.posted.entry(id.to_owned()).or_default().push(frame.to_owned());
            Ok(PostOutcome::Sent)
        })
    }

    async fn close(&self, id: &str) -> Result<(), Failure> {
        self.with(|s| s.closed.push(id.to_owned()));
        Ok(())
    }
}
