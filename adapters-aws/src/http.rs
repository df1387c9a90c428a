//! The one HTTP(S) client of the AWS adapters: every SDK client and the Cognito key-set fetch share it.
//!
//! It is the SDK's own hyper 1 + rustls (aws-lc) connector, with the same settings as the SDK's
//! default client (the system's root certificates, proxies from the environment), with one
//! difference: nothing is built until the first request. The SDK's default client builds a TLS
//! connector, and with it reads and parses the system's root certificates, every time an SDK client
//! is constructed, only to validate it; a function instance builds several clients at start-up and
//! most invocations of a cold start (a health check, a refused token, an empty batch) call no AWS
//! service at all. Here each connector is built on the first request that needs it and kept for the
//! life of the process (one per set of timeouts, as in the SDK), and the root certificates are read
//! once per process, so no invocation pays for them twice.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{LazyLock, PoisonError, RwLock};
use std::time::Duration;

use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::Provider;
use aws_smithy_http_client::tls::rustls_provider::CryptoMode;
use aws_smithy_http_client::{Connector, ConnectorBuilder};
use aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata;
use aws_smithy_runtime_api::client::http::{HttpClient, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;

/// The connectors of the process, by the timeouts they were built with.
static CONNECTORS: LazyLock<Connectors> = LazyLock::new(Connectors::default);

/// Connect and read timeouts: the only settings a connector is built from.
type Key = (Option<Duration>, Option<Duration>);

#[derive(Debug, Default)]
struct Connectors {
    by_timeouts: RwLock<HashMap<Key, SharedHttpConnector>>,
}

impl Connectors {
    /// The connector for `settings`, built on first use.
    fn get(&self, settings: &HttpConnectorSettings, components: Option<&RuntimeComponents>) -> SharedHttpConnector {
        let key = (settings.connect_timeout(), settings.read_timeout());
        // The maps only ever gain complete entries, so a poisoned lock still holds a usable map.
        if let Some(connector) = self
            .by_timeouts
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return connector.clone();
        }
        let mut map = self.by_timeouts.write().unwrap_or_else(PoisonError::into_inner);
        map.entry(key)
            .or_insert_with(|| SharedHttpConnector::new(build(settings, components)))
            .clone()
    }
}

/// A connector as the SDK's default HTTPS client builds one (`BehaviorVersion::latest()`).
fn build(settings: &HttpConnectorSettings, components: Option<&RuntimeComponents>) -> Connector {
    let mut builder: ConnectorBuilder = Connector::builder();
    builder.set_connector_settings(Some(settings.clone()));
    // Without a sleep implementation the builder takes the default (tokio's), which is what the
    // SDK clients use too; the key-set fetch has no runtime components to take it from.
    if let Some(components) = components {
        builder.set_sleep_impl(components.sleep_impl());
    }
    builder
        .proxy_config(ProxyConfig::from_env())
        .tls_provider(Provider::Rustls(CryptoMode::AwsLc))
        .build()
}

/// The process's HTTP client for SDK configurations (`SdkConfig::http_client`).
#[derive(Debug, Clone, Copy, Default)]
struct ProcessHttpClient;

impl HttpClient for ProcessHttpClient {
    fn http_connector(&self, settings: &HttpConnectorSettings, components: &RuntimeComponents) -> SharedHttpConnector {
        CONNECTORS.get(settings, Some(components))
    }

    // `validate_base_client_config` keeps its default (nothing to check), which is the point: the
    // SDK's own client builds a throwaway connector there.

    fn connector_metadata(&self) -> Option<ConnectorMetadata> {
        // The same as the SDK's default client says of itself (it goes into the user agent).
        Some(ConnectorMetadata::new("hyper", Some(Cow::Borrowed("1.x"))))
    }
}

/// The HTTP client to give every SDK configuration of the process.
pub fn http_client() -> SharedHttpClient {
    SharedHttpClient::new(ProcessHttpClient)
}

/// A connector of the process's client with the given timeouts, for requests made outside the SDK
/// (the Cognito key set): built on first use, shared afterwards.
pub(crate) fn connector(connect_timeout: Duration, read_timeout: Duration) -> SharedHttpConnector {
    let settings = HttpConnectorSettings::builder()
        .connect_timeout(connect_timeout)
        .read_timeout(read_timeout)
        .build();
    CONNECTORS.get(&settings, None)
}
