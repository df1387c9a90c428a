//! Search (Lambda function 3): plain user text turned into a typed query, scoped to what the caller may see.

use rookery_domain::projection::words;
use rookery_domain::{CollectionName, Visibility};

use super::Caller;
use crate::cursor::page_size;
use crate::search::{Scope, SearchError, SearchHit, SearchQuery};
use crate::{AppError, SearchIndex};

/// A search request as the client sent it (validated here).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SearchRequest {
    /// The user's text.
    pub q: String,
    /// Only this collection.
    pub collection: Option<CollectionName>,
    /// Whose items.
    pub scope: Scope,
    /// Page size, if given.
    pub limit: Option<u64>,
    /// Cursor of a previous page.
    pub cursor: Option<String>,
}

/// Search results.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchResults {
    /// How many items match in all.
    pub found: u64,
    /// This page, best first.
    pub hits: Vec<SearchHit>,
    /// The next page's cursor.
    pub next_cursor: Option<String>,
}

/// The search use case: reads the index only.
#[derive(Debug, Clone)]
pub struct SearchService<X> {
    index: X,
    max_query_chars: usize,
}

impl<X: SearchIndex> SearchService<X> {
    /// The service over `index`, refusing text longer than `max_query_chars` (the contract's limit is
    /// [`rookery_domain::Limits::max_query_chars`]).
    pub fn new(index: X, max_query_chars: usize) -> Self {
        Self { index, max_query_chars }
    }

    /// `GET /v1/search`.
    ///
    /// # Errors
    /// `Invalid` for empty or overlong text, a bad limit or cursor; `Unavailable`.
    pub async fn search(&self, caller: &Caller, request: SearchRequest) -> Result<SearchResults, AppError> {
        let chars = request.q.chars().count();
        let max = self.max_query_chars;
        if chars == 0 || chars > max {
            return Err(AppError::Invalid(format!("q must be 1 to {max} characters")));
        }
        let limit = page_size(request.limit)?;
        let words: Vec<String> = words(&request.q).collect();
        if words.is_empty() {
            // Text with no letters or digits matches nothing; it is never read as syntax.
            if request.cursor.is_some() {
                return Err(AppError::Invalid("invalid cursor".into()));
            }
            return Ok(SearchResults {
                found: 0,
                hits: Vec::new(),
                next_cursor: None,
            });
        }
        let query = SearchQuery {
            caller: caller.user.clone(),
            words,
            collection: request.collection,
            scope: request.scope,
            limit,
            cursor: request.cursor,
        };
        let page = self.index.query(&query).await.map_err(|e| match e {
            SearchError::BadCursor => AppError::Invalid("invalid cursor".into()),
            SearchError::Unavailable(failure) => AppError::Unavailable(failure),
        })?;
        // The index promises scoping; this is the second lock on the same door.
        let hits = page
            .hits
            .into_iter()
            .filter(|hit| hit.item.visibility == Visibility::Public || hit.item.owner == caller.user)
            .collect();
        Ok(SearchResults {
            found: page.found,
            hits,
            next_cursor: page.next_cursor,
        })
    }
}
