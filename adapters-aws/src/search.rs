//! The search index an AWS deployment is configured with: OpenSearch or CloudSearch, chosen at start.
//!
//! An enum rather than a trait object: every service stays generic over one concrete [`SearchIndex`],
//! each binary is compiled once for both engines, and a call costs a `match`.

use rookery_domain::UserId;
use rookery_domain::projection::IndexChange;
use rookery_ports::{ApplyFailure, SearchError, SearchIndex, SearchPage, SearchQuery};

use crate::cloudsearch::CloudSearchIndex;
use crate::opensearch::OpenSearchIndex;

/// The configured search index (`ROOKERY_SEARCH=opensearch|cloudsearch`).
#[derive(Debug, Clone)]
pub enum AwsSearchIndex {
    /// An OpenSearch Service domain or Serverless collection.
    OpenSearch(OpenSearchIndex),
    /// A CloudSearch domain (accounts that still have one).
    CloudSearch(CloudSearchIndex),
}

impl SearchIndex for AwsSearchIndex {
    async fn apply(&self, changes: &[IndexChange]) -> Result<(), SearchError> {
        match self {
            AwsSearchIndex::OpenSearch(index) => index.apply(changes).await,
            AwsSearchIndex::CloudSearch(index) => index.apply(changes).await,
        }
    }

    async fn apply_each(&self, changes: &[IndexChange]) -> Result<(), ApplyFailure> {
        match self {
            AwsSearchIndex::OpenSearch(index) => index.apply_each(changes).await,
            AwsSearchIndex::CloudSearch(index) => index.apply_each(changes).await,
        }
    }

    async fn query(&self, query: &SearchQuery) -> Result<SearchPage, SearchError> {
        match self {
            AwsSearchIndex::OpenSearch(index) => index.query(query).await,
            AwsSearchIndex::CloudSearch(index) => index.query(query).await,
        }
    }

    async fn erase_owner(&self, owner: &UserId) -> Result<(), SearchError> {
        match self {
            AwsSearchIndex::OpenSearch(index) => SearchIndex::erase_owner(index, owner).await,
            AwsSearchIndex::CloudSearch(index) => SearchIndex::erase_owner(index, owner).await,
        }
    }
}
