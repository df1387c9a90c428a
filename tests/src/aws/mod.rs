//! Helpers for testing the AWS adapters: a moto server per test binary, a fake CloudSearch domain, an
//! OpenSearch stand-in, and the contract-suite factories that make fresh, isolated adapters on them.

pub mod cloudsearch_fake;
pub mod cognito;
pub mod connections;
pub mod moto;
pub mod opensearch_fake;

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rookery_adapters_aws::config::SearchBackend;
use rookery_adapters_aws::dynamo::Contention;
use rookery_adapters_aws::{
    AwsClients, AwsConfig, CloudSearchIndex, DynamoStore, OpenSearchIndex, OpenSearchService, S3MediaStore,
    SnsPushGateway,
};
use rookery_ports::SignedRequest;

use crate::contract::event_store::StoreFactory;
use crate::contract::media_store::MediaFactory;
use crate::contract::push_gateway::PushFactory;
use crate::contract::search_index::SearchFactory;
use crate::fixtures::BoxError;
use cloudsearch_fake::FakeCloudSearch;
use opensearch_fake::FakeOpenSearch;

/// How long a seq-less append may wait for its turn on moto: far longer than the store's default few
/// seconds, because moto runs every request of a test binary's parallel tests on one thread and copies the
/// table for each transaction, so a transaction there takes tens to hundreds of milliseconds, and every
/// losing try delays every other writer, which DynamoDB's do not.
pub fn moto_contention() -> Contention {
    Contention {
        deadline: Duration::from_secs(120),
        ..Contention::default()
    }
}

/// A DynamoDB event store on a new table of the test binary's moto server.
///
/// # Errors
/// When moto cannot be started or the table cannot be created.
pub async fn dynamo_store() -> Result<(AwsClients, DynamoStore), BoxError> {
    let clients = moto::clients().await?;
    clients.create_table().await?;
    let store = clients.event_store();
    Ok((clients, store))
}

/// Fresh DynamoDB event stores, one table each; with `page_limit`, every `Query` page holds at most that
/// many rows, so reads cross many pages (moto does not cut pages at 1 MB as DynamoDB does).
#[derive(Debug, Clone, Copy, Default)]
pub struct DynamoStores {
    /// Rows per query page, when smaller than the adapter's default.
    pub page_limit: Option<usize>,
}

impl StoreFactory for DynamoStores {
    type Store = DynamoStore;

    async fn fresh(&self) -> Result<DynamoStore, BoxError> {
        let store = dynamo_store().await?.1.with_contention(moto_contention());
        Ok(match self.page_limit {
            Some(rows) => store.with_page_limit(rows),
            None => store,
        })
    }
}

/// Fresh SNS push gateways, each with its own platform applications (made by `bootstrap`).
#[derive(Debug, Clone, Copy, Default)]
pub struct SnsGateways;

impl PushFactory for SnsGateways {
    type Gateway = SnsPushGateway;

    async fn fresh(&self) -> Result<SnsPushGateway, BoxError> {
        let (clients, _) = moto::bootstrapped().await?;
        Ok(clients.push_gateway())
    }

    async fn disable(&self, gateway: &SnsPushGateway, endpoint: &str) {
        // SNS disables an endpoint itself when the platform reports the token dead; this is the same attribute.
        if let Err(error) = gateway.set_endpoint(endpoint, None, false).await {
            eprintln!("could not disable the endpoint {endpoint}: {error}");
        }
    }
}

/// Fresh S3 media stores, one bucket each (made by `bootstrap`).
#[derive(Debug, Clone, Copy, Default)]
pub struct S3Stores;

fn http_request(request: &SignedRequest, body: Option<Vec<u8>>) -> Result<reqwest::RequestBuilder, String> {
    let method = reqwest::Method::from_bytes(request.method.as_bytes()).map_err(|e| e.to_string())?;
    let mut builder = reqwest::Client::new().request(method, &request.url);
    for (name, value) in &request.headers {
        // The HTTP client sets Content-Length from the body itself.
        if !name.eq_ignore_ascii_case("content-length") {
            builder = builder.header(name, value);
        }
    }
    if let Some(body) = body {
        builder = builder.body(body);
    }
    Ok(builder)
}

impl MediaFactory for S3Stores {
    type Store = S3MediaStore;

    async fn fresh(&self) -> Result<S3MediaStore, BoxError> {
        let (clients, _) = moto::bootstrapped().await?;
        Ok(clients.media_store()?)
    }

    async fn upload(&self, _store: &S3MediaStore, request: &SignedRequest, body: Vec<u8>) -> Result<(), String> {
        let response = http_request(request, Some(body))?
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("S3 answered {}", response.status()))
        }
    }

    async fn download(&self, _store: &S3MediaStore, request: &SignedRequest) -> Result<Vec<u8>, String> {
        let response = http_request(request, None)?.send().await.map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("S3 answered {}", response.status()));
        }
        Ok(response.bytes().await.map_err(|e| e.to_string())?.to_vec())
    }
}

/// A CloudSearch index on a fresh fake domain (no moto needed).
///
/// # Errors
/// When the fake cannot bind a port.
pub async fn cloudsearch_index() -> Result<(FakeCloudSearch, CloudSearchIndex), BoxError> {
    let fake = FakeCloudSearch::spawn().await?;
    let mut config = AwsConfig::new("unused", "unused").with_emulator(&fake.endpoint);
    config.search = SearchBackend::CloudSearch;
    config.cloudsearch_doc_endpoint = Some(fake.endpoint.clone());
    config.cloudsearch_search_endpoint = Some(fake.endpoint.clone());
    let index = AwsClients::load(config)
        .await
        .cloudsearch_index()
        .ok_or("no CloudSearch index configured")?;
    Ok((fake, index))
}

/// Fresh CloudSearch indexes, each on its own fake domain, kept running as long as the factory.
#[derive(Debug, Default)]
pub struct CloudSearchFakes {
    fakes: Mutex<Vec<FakeCloudSearch>>,
}

impl SearchFactory for CloudSearchFakes {
    type Index = CloudSearchIndex;

    async fn fresh(&self) -> Result<CloudSearchIndex, BoxError> {
        let (fake, index) = cloudsearch_index().await?;
        self.fakes.lock().unwrap_or_else(PoisonError::into_inner).push(fake);
        Ok(index)
    }
}

/// An OpenSearch index on a fresh stand-in, signed for `service` (no moto needed): configured the way
/// `ROOKERY_SEARCH=opensearch` configures it, with the emulator's fixed credentials and region.
///
/// # Errors
/// When the stand-in cannot bind a port.
pub async fn opensearch_index(service: OpenSearchService) -> Result<(FakeOpenSearch, OpenSearchIndex), BoxError> {
    let fake = FakeOpenSearch::spawn(service.signing_name()).await?;
    let index = opensearch_index_at(&fake.endpoint, service).await?;
    Ok((fake, index))
}

/// The OpenSearch index at `endpoint` (a stand-in running elsewhere, such as in another process),
/// signed for `service` and configured as [`opensearch_index`] configures it.
///
/// # Errors
/// When the configuration names no OpenSearch index (it always does).
pub async fn opensearch_index_at(endpoint: &str, service: OpenSearchService) -> Result<OpenSearchIndex, BoxError> {
    let mut config = AwsConfig::new("unused", "unused").with_emulator(endpoint);
    config.search = SearchBackend::OpenSearch;
    config.opensearch_endpoint = Some(endpoint.to_owned());
    config.opensearch_service = service;
    let index = AwsClients::load(config)
        .await
        .opensearch_index()
        .ok_or("no OpenSearch index configured")?;
    Ok(index)
}

/// Fresh OpenSearch indexes, each on its own stand-in, kept running as long as the factory.
#[derive(Debug, Default)]
pub struct OpenSearchFakes {
    /// A domain (`es`) or a Serverless collection (`aoss`).
    pub service: OpenSearchService,
    fakes: Mutex<Vec<FakeOpenSearch>>,
}

impl OpenSearchFakes {
    /// Stand-ins for `service`.
    pub fn new(service: OpenSearchService) -> Self {
        Self {
            service,
            fakes: Mutex::default(),
        }
    }
}

impl SearchFactory for OpenSearchFakes {
    type Index = OpenSearchIndex;

    async fn fresh(&self) -> Result<OpenSearchIndex, BoxError> {
        let (fake, index) = opensearch_index(self.service).await?;
        self.fakes.lock().unwrap_or_else(PoisonError::into_inner).push(fake);
        Ok(index)
    }
}
