//! Development tokens for the entrypoints' tests: one ephemeral identity provider per test binary, a
//! verifier of its tokens, and tokens for any user.

use std::sync::OnceLock;
use std::time::Duration;

use rookery_adapters_aws::jwt::{JwksConfig, JwksVerifier, KeySource};
use rookery_adapters_memory::SystemClock;
use rookery_adapters_memory::identity::DevIdentityProvider;
use rookery_domain::{Timestamp, UserId};

/// One RSA key per test binary: generating one takes a while.
fn identity() -> &'static DevIdentityProvider {
    static IDENTITY: OnceLock<DevIdentityProvider> = OnceLock::new();
    IDENTITY.get_or_init(|| DevIdentityProvider::ephemeral().unwrap())
}

/// A verifier of the tokens [`token`] issues, as the functions verify Cognito's.
pub(crate) fn verifier() -> JwksVerifier<SystemClock> {
    let provider = identity().verifier_config();
    JwksVerifier::new(
        JwksConfig::new(provider.issuer, provider.audience, KeySource::Static(provider.jwks)),
        SystemClock::new(),
    )
    .unwrap()
}

/// A token for `user`, valid for an hour from now.
pub(crate) fn token(user: &str) -> String {
    let now = Timestamp::from_millis(u64::try_from(std::time::UNIX_EPOCH.elapsed().unwrap().as_millis()).unwrap());
    identity()
        .issue(&UserId::parse(user).unwrap(), now, Duration::from_secs(3600))
        .unwrap()
        .0
}
