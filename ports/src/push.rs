//! The push port: platform endpoints for devices, sending one notification to one endpoint, and
//! deleting the endpoint of a removed device.

use std::future::Future;

use rookery_domain::{DeviceId, Platform, UserId};

use crate::Failure;

/// What became of one push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// The provider accepted it.
    Delivered,
    /// The provider reports the endpoint disabled or unregistered: do not push to it again.
    EndpointDisabled,
}

/// Why a push operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// The provider refused the token or platform for good (a client error).
    #[error("rejected: {0}")]
    Rejected(String),
    /// The provider could not be reached or throttled us.
    #[error(transparent)]
    Unavailable(#[from] Failure),
}

/// Delivers notifications to devices (SNS mobile push on AWS; a recording gateway locally).
pub trait PushGateway: Clone + Send + Sync + std::fmt::Debug + 'static {
    /// Makes sure an endpoint exists for `token` on `platform` and is enabled, and returns its handle.
    ///
    /// Implementations MUST be idempotent: the same token gives the same endpoint. `current` is the
    /// device's previous endpoint, if any; an implementation MAY reuse it for a new token (updating
    /// the token and re-enabling it) instead of creating another.
    ///
    /// # Errors
    /// [`PushError::Rejected`] when the provider refuses the token; [`PushError::Unavailable`] otherwise.
    fn register(
        &self,
        owner: &UserId,
        device_id: &DeviceId,
        platform: Platform,
        token: &str,
        current: Option<&str>,
    ) -> impl Future<Output = Result<String, PushError>> + Send;

    /// Sends `payload` (the platform's JSON, already within its size limit) to `endpoint`.
    ///
    /// Implementations MUST answer `Ok(EndpointDisabled)`, not an error, when the provider says the
    /// endpoint is disabled, unregistered or gone.
    ///
    /// # Errors
    /// [`PushError::Unavailable`] when the provider cannot be reached (the push may be retried);
    /// [`PushError::Rejected`] when it refuses this payload for good.
    fn send(
        &self,
        endpoint: &str,
        platform: Platform,
        payload: &str,
    ) -> impl Future<Output = Result<PushOutcome, PushError>> + Send;

    /// Deletes `endpoint` because `owner` removed the device `device_id`, so the provider stops holding
    /// its token.
    ///
    /// Implementations MUST be idempotent: deleting an endpoint that does not exist (never did, or is
    /// already deleted) is `Ok`. After a delete, [`send`](Self::send) to that endpoint MUST answer
    /// `Ok(EndpointDisabled)`, and registering its token again MUST give an endpoint that delivers.
    /// Since the same token gives the same endpoint, one endpoint can stand for devices of several
    /// users (one phone, signed into in turn): implementations MUST leave the endpoint in place, and
    /// answer `Ok`, when it was last registered for another owner or device; an endpoint whose last
    /// registration they cannot tell MAY be deleted.
    ///
    /// # Errors
    /// [`PushError::Unavailable`] when the provider cannot be reached (the endpoint may be left behind);
    /// [`PushError::Rejected`] when the provider refuses the handle for good (not one of its endpoints).
    fn delete(
        &self,
        owner: &UserId,
        device_id: &DeviceId,
        endpoint: &str,
    ) -> impl Future<Output = Result<(), PushError>> + Send;

    /// Forgets whatever the gateway keeps about `owner` besides the endpoints [`delete`](Self::delete)
    /// removes (a record of the pushes sent to them), because their account is erased.
    ///
    /// A gateway that keeps nothing per owner but endpoints (SNS) has nothing to do: the default answers
    /// `Ok`. Implementations that keep more MUST override it, and MUST answer `Ok` on a repeat.
    ///
    /// # Errors
    /// [`PushError::Unavailable`]; trying again is safe.
    fn forget_owner(&self, owner: &UserId) -> impl Future<Output = Result<(), PushError>> + Send {
        let _ = owner;
        async { Ok(()) }
    }
}
