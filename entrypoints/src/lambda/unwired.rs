//! The port of a function that its routes never reach.
//!
//! Each function serves only its own routes (decision 0004), and most of them use only some of the
//! service's ports: function 1 never queries the search index, function 3 never pushes nor signs media
//! URLs, function 4 does neither search nor media. Building the SDK clients for a port a function never
//! uses costs its cold start, and its role has no permission to call that service anyway, so such a
//! port gets [`Unwired`] instead. It builds nothing, and every call fails: reaching it means a route
//! was served by a function composed without what that route needs, which is a composition bug. It is
//! logged as an error and answered as a permanent failure (a 5xx), never as an empty success.
//! `entrypoints/tests/function_ports.rs` drives every route of each function with its unwired ports in
//! place and checks that none reaches them.

use std::time::Duration;

use rookery_domain::projection::IndexChange;
use rookery_domain::{DeviceId, MediaObject, Platform, Timestamp, UserId};
use rookery_ports::{
    Failure, MediaError, MediaStore, ObjectStatus, PushError, PushGateway, PushOutcome, SearchError, SearchIndex,
    SearchPage, SearchQuery, SignedRequest,
};

/// A port this function does not wire; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unwired {
    /// The function, as its binary is named, for the error.
    function: &'static str,
}

impl Unwired {
    /// The unwired port of `function` (the binary's name, for the error it reports).
    pub const fn new(function: &'static str) -> Self {
        Self { function }
    }

    fn refuse(self, port: &'static str) -> Failure {
        let message = format!(
            "{} has no {port}: a route that needs it was sent to this function (see decision 0004)",
            self.function
        );
        tracing::error!(function = self.function, port, "{message}");
        Failure::permanent(message)
    }
}

impl SearchIndex for Unwired {
    async fn apply(&self, _changes: &[IndexChange]) -> Result<(), SearchError> {
        Err(self.refuse("search index").into())
    }

    async fn query(&self, _query: &SearchQuery) -> Result<SearchPage, SearchError> {
        Err(self.refuse("search index").into())
    }
}

impl PushGateway for Unwired {
    async fn register(
        &self,
        _owner: &UserId,
        _device_id: &DeviceId,
        _platform: Platform,
        _token: &str,
        _current: Option<&str>,
    ) -> Result<String, PushError> {
        Err(self.refuse("push gateway").into())
    }

    async fn send(&self, _endpoint: &str, _platform: Platform, _payload: &str) -> Result<PushOutcome, PushError> {
        Err(self.refuse("push gateway").into())
    }

    async fn delete(&self, _owner: &UserId, _device_id: &DeviceId, _endpoint: &str) -> Result<(), PushError> {
        Err(self.refuse("push gateway").into())
    }
}

impl MediaStore for Unwired {
    async fn upload_url(
        &self,
        _object: &MediaObject,
        _now: Timestamp,
        _ttl: Duration,
    ) -> Result<SignedRequest, MediaError> {
        Err(self.refuse("media store").into())
    }

    async fn download_url(
        &self,
        _object: &MediaObject,
        _now: Timestamp,
        _ttl: Duration,
    ) -> Result<SignedRequest, MediaError> {
        Err(self.refuse("media store").into())
    }

    async fn status(&self, _object: &MediaObject) -> Result<ObjectStatus, MediaError> {
        Err(self.refuse("media store").into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_call_fails_for_good_and_names_the_function() {
        let unwired = Unwired::new("rookery-items");
        let refused = unwired.apply(&[]).await;
        assert!(
            matches!(&refused, Err(SearchError::Unavailable(f))
                if !f.retryable && f.message.contains("rookery-items has no search index")),
            "an unwired index refuses for good: {refused:?}"
        );
        let endpoint = unwired
            .send("arn:aws:sns:us-east-1:1:endpoint/APNS/a/b", Platform::Apns, "{}")
            .await;
        assert!(matches!(endpoint, Err(PushError::Unavailable(f)) if !f.retryable));
    }
}
