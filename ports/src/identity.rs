//! The identity port: a bearer token in, a verified principal out.

use std::future::Future;

use rookery_domain::{Timestamp, UserId};

/// A verified caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's `sub`.
    pub user: UserId,
    /// The token's `exp`.
    pub expires_at: Timestamp,
}

/// Why a token was refused. Every variant is a `401` at the edge; the variant is for logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token was presented.
    #[error("no bearer token")]
    Missing,
    /// The token is not a well-formed JWT.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// `alg` is not RS256 (this includes `none` and every HMAC algorithm).
    #[error("algorithm {0} is not accepted")]
    Algorithm(String),
    /// No key with the token's `kid`, even after refreshing the key set.
    #[error("unknown signing key")]
    UnknownKey,
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// `exp` is in the past.
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("token not yet valid")]
    NotYetValid,
    /// `iss` is not the configured issuer.
    #[error("wrong issuer")]
    WrongIssuer,
    /// `aud` (ID token) or `client_id` (access token) is not the configured client.
    #[error("wrong audience")]
    WrongAudience,
    /// `token_use` is missing or not accepted.
    #[error("wrong token use")]
    WrongTokenUse,
    /// `sub` is missing or not a valid user id.
    #[error("bad subject")]
    BadSubject,
    /// The key set could not be fetched: the token may be fine, but cannot be checked now.
    #[error("key set unavailable: {0}")]
    Unavailable(String),
}

/// Turns a bearer token into a principal.
pub trait IdentityVerifier: Clone + Send + Sync + std::fmt::Debug + 'static {
    /// Verifies `token` (the text after `Bearer `).
    ///
    /// Implementations MUST accept only RS256 tokens signed by a key of the configured key set,
    /// selected by `kid`, and MUST check `exp`, `nbf` (when present), `iss` and the audience.
    ///
    /// # Errors
    /// The first [`AuthError`] that applies; [`AuthError::Unavailable`] only when the key set
    /// cannot be obtained, never for a token that is simply wrong.
    fn verify(&self, token: &str) -> impl Future<Output = Result<Principal, AuthError>> + Send;
}

/// Where the identity provider keeps its users, for erasing one (`DELETE /v1/me` on AWS deletes the
/// Cognito user). A provider that keeps no user records (the development provider, or an OpenID
/// Connect issuer that Rookery does not administer) has no directory to erase from.
pub trait IdentityDirectory: Clone + Send + Sync + std::fmt::Debug + 'static {
    /// Deletes `user` from the provider, so that it can no longer sign in or get a token.
    ///
    /// Harmless to repeat: a user the provider does not know (never existed, or already deleted)
    /// is `Ok`.
    ///
    /// # Errors
    /// `Failure` when the provider could not be asked or refused; the user may still exist.
    fn delete_user(&self, user: &UserId) -> impl Future<Output = Result<(), crate::Failure>> + Send;
}

/// The directory of a provider that keeps no user records Rookery administers (the development
/// provider, whose tokens are signed on demand for any id, or an OpenID Connect issuer run by someone
/// else): there is nothing to delete, so every deletion is `Ok` at once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoDirectory;

impl IdentityDirectory for NoDirectory {
    fn delete_user(&self, user: &UserId) -> impl Future<Output = Result<(), crate::Failure>> + Send {
        let _ = user;
        async { Ok(()) }
    }
}

/// A directory that may not be configured: `None` (no user pool configured) deletes nothing, like
/// [`NoDirectory`].
impl<D: IdentityDirectory> IdentityDirectory for Option<D> {
    async fn delete_user(&self, user: &UserId) -> Result<(), crate::Failure> {
        match self {
            Some(directory) => directory.delete_user(user).await,
            None => Ok(()),
        }
    }
}
