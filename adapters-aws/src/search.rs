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

/// How many owners an [`ErasureAwareIndex`] remembers as being erased (the oldest is forgotten first).
const ERASING_KEPT: usize = 1024;
/// How long it remembers one: by then the erasure has written its marker, or failed and left the
/// account live.
const ERASING_FOR: std::time::Duration = std::time::Duration::from_secs(600);

/// A search index that applies no change of an erased owner: the [`SearchIndex::erase_owner`] contract
/// (removal and refusal in one step) for an index that cannot refuse by itself, such as OpenSearch and
/// CloudSearch fed by a DynamoDB stream, which keeps an erased user's `INSERT` records for 24 hours and
/// is read again from its oldest record when a server starts.
///
/// Before a slice is applied, each of its owners is looked up: an owner whose erasure this process has
/// started (remembered for `ERASING_FOR`, since the store's marker is written last), or whom the store
/// marks erased, has its changes dropped. A slice holds a shared lock while it is checked and applied,
/// and [`SearchIndex::erase_owner`] takes it exclusively to note the owner before deleting, so a change
/// applied concurrently is either deleted with the rest or dropped. Clones share what they remember.
///
/// An erasure that fails before its marker leaves the account live; changes of the owner dropped
/// meanwhile are not indexed until the index is rebuilt (`rookery aws reindex`).
#[derive(Debug, Clone)]
pub struct ErasureAwareIndex<X, S> {
    index: X,
    store: S,
    erasing: std::sync::Arc<tokio::sync::RwLock<std::collections::VecDeque<(UserId, std::time::Instant)>>>,
}

impl<X: SearchIndex, S: rookery_ports::EventStore> ErasureAwareIndex<X, S> {
    /// `index`, applying no change of an owner `store` marks erased.
    pub fn new(index: X, store: S) -> Self {
        Self {
            index,
            store,
            erasing: std::sync::Arc::default(),
        }
    }

    /// The index it guards.
    pub fn inner(&self) -> &X {
        &self.index
    }

    /// The positions in `changes` of the changes whose owner is neither being erased nor erased.
    async fn live(
        &self,
        changes: &[IndexChange],
        erasing: &std::collections::VecDeque<(UserId, std::time::Instant)>,
    ) -> Result<Vec<usize>, rookery_ports::Failure> {
        let mut owners: std::collections::BTreeMap<&UserId, bool> = std::collections::BTreeMap::new();
        let mut live = Vec::with_capacity(changes.len());
        for (position, change) in changes.iter().enumerate() {
            let owner = change.target().0;
            let keep = match owners.get(owner) {
                Some(keep) => *keep,
                None => {
                    let noted = erasing
                        .iter()
                        .any(|(user, at)| user == owner && at.elapsed() < ERASING_FOR);
                    let keep = !noted && self.store.erased(owner).await?.is_none();
                    if !keep {
                        tracing::debug!(user = %owner, "search changes of an erased user dropped");
                    }
                    owners.insert(owner, keep);
                    keep
                }
            };
            if keep {
                live.push(position);
            }
        }
        Ok(live)
    }
}

impl<X: SearchIndex, S: rookery_ports::EventStore> SearchIndex for ErasureAwareIndex<X, S> {
    async fn apply(&self, changes: &[IndexChange]) -> Result<(), SearchError> {
        self.apply_each(changes).await.map_err(|failed| failed.error)
    }

    async fn apply_each(&self, changes: &[IndexChange]) -> Result<(), ApplyFailure> {
        let erasing = self.erasing.read().await;
        let live = self.live(changes, &erasing).await.map_err(|failure| ApplyFailure {
            index: 0,
            error: SearchError::Unavailable(failure),
        })?;
        if live.len() == changes.len() {
            return self.index.apply_each(changes).await;
        }
        let kept: Vec<IndexChange> = live.iter().filter_map(|&i| changes.get(i).cloned()).collect();
        if kept.is_empty() {
            return Ok(());
        }
        self.index.apply_each(&kept).await.map_err(|mut failed| {
            // Back to a position in the slice given: every change before it was applied or dropped.
            failed.index = live.get(failed.index).copied().unwrap_or(0);
            failed
        })
    }

    async fn query(&self, query: &SearchQuery) -> Result<SearchPage, SearchError> {
        self.index.query(query).await
    }

    async fn erase_owner(&self, owner: &UserId) -> Result<(), SearchError> {
        {
            let mut erasing = self.erasing.write().await;
            erasing.retain(|(user, at)| user != owner && at.elapsed() < ERASING_FOR);
            if erasing.len() >= ERASING_KEPT {
                erasing.pop_front();
            }
            erasing.push_back((owner.clone(), std::time::Instant::now()));
        }
        self.index.erase_owner(owner).await
    }
}
