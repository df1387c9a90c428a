//! The connection registry: which user each open WebSocket connection belongs to, in its own table.
//!
//! Layout (`pk`, `sk` strings, like the events table, but a table of its own with no stream):
//!
//! - `pk = "conn#<connection id>"`, `sk = "conn"`: the connection's `owner` (read by `resume` and
//!   `$disconnect`, which only know the connection id);
//! - `pk = "user#<owner>"`, `sk = "conn#<connection id>"`: the same connection listed under its owner
//!   (read by the fan-out), with `live` set once the connection has sent a `resume`.
//!
//! Both rows carry `expires_at`, in seconds since the epoch, which is the table's TTL attribute: API
//! Gateway closes every connection after two hours, and `$disconnect` is best effort, so a row whose
//! connection vanished without one goes away by itself. DynamoDB deletes expired rows lazily (within
//! days), so every read also skips rows past their `expires_at`. Reads are strongly consistent: a
//! connection that has sent `resume` is seen by every fan-out that starts afterwards, which is what
//! makes the switch from replay to live lossless.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TimeToLiveSpecification, TransactWriteItem};
use rookery_domain::{Timestamp, UserId};
use rookery_ports::Failure;

use crate::dynamo::{pk_sk_table, wait_until_active};
use crate::error::sdk_failure;

/// How long a connection row lives: API Gateway's limit on a connection's age (two hours).
pub const CONNECTION_TTL: Duration = Duration::from_secs(2 * 60 * 60);

/// The most connections one user may have open at once (as on `rookery serve`); one more `$connect`
/// is refused, so a user's fan-out is bounded.
pub const MAX_CONNECTIONS_PER_USER: usize = 16;

/// The most query pages one listing reads: rows are tiny, so a page holds thousands, and more pages
/// than this would only be expired rows DynamoDB has not deleted yet.
const MAX_PAGES: usize = 4;

/// The TTL attribute.
const EXPIRES_AT: &str = "expires_at";

type Attrs = HashMap<String, AttributeValue>;

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn key(pk: String, sk: String) -> Attrs {
    HashMap::from([("pk".to_owned(), s(pk)), ("sk".to_owned(), s(sk))])
}

fn connection_key(id: &str) -> Attrs {
    key(format!("conn#{id}"), "conn".to_owned())
}

fn listing_key(owner: &UserId, id: &str) -> Attrs {
    key(format!("user#{owner}"), format!("conn#{id}"))
}

fn seconds(at: Timestamp) -> u64 {
    at.as_millis() / 1000
}

/// True when `row` has an `expires_at` after `now` (a row without one is treated as expired).
fn alive(row: &Attrs, now: Timestamp) -> bool {
    match row.get(EXPIRES_AT) {
        Some(AttributeValue::N(text)) => text.parse::<u64>().is_ok_and(|at| at > seconds(now)),
        _ => false,
    }
}

/// What became of a `$connect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registered {
    /// The connection is recorded.
    Recorded,
    /// The user already has [`MAX_CONNECTIONS_PER_USER`] connections; nothing was recorded.
    TooMany,
}

/// The WebSocket connections of every user, in their own DynamoDB table.
#[derive(Debug, Clone)]
pub struct ConnectionRegistry {
    client: Client,
    table: String,
}

impl ConnectionRegistry {
    /// A registry on `table` (made by [`create_connections_table`] or the deployment's template).
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Records connection `id` of `owner`, opened at `now`, expiring [`CONNECTION_TTL`] later; not live
    /// until [`follow`](Self::follow). Recording the same connection again is harmless.
    ///
    /// # Errors
    /// A [`Failure`] when DynamoDB cannot be read or written.
    pub async fn connect(&self, id: &str, owner: &UserId, now: Timestamp) -> Result<Registered, Failure> {
        let open = self.listed(owner, now).await?;
        if open.len() >= MAX_CONNECTIONS_PER_USER && !open.iter().any(|(listed, _)| listed == id) {
            return Ok(Registered::TooMany);
        }
        let expires_at = AttributeValue::N((seconds(now) + CONNECTION_TTL.as_secs()).to_string());
        let connected_at = AttributeValue::N(now.as_millis().to_string());
        let mut by_id = connection_key(id);
        by_id.insert("owner".into(), s(owner.as_str()));
        let mut listed = listing_key(owner, id);
        listed.insert("connection_id".into(), s(id));
        listed.insert("live".into(), AttributeValue::Bool(false));
        for row in [&mut by_id, &mut listed] {
            row.insert("kind".into(), s("connection"));
            row.insert(EXPIRES_AT.into(), expires_at.clone());
            row.insert("connected_at".into(), connected_at.clone());
        }
        let mut request = self.client.transact_write_items();
        for row in [by_id, listed] {
            let put = Put::builder()
                .table_name(&self.table)
                .set_item(Some(row))
                .build()
                .map_err(|e| Failure::permanent(e.to_string()))?;
            request = request.transact_items(TransactWriteItem::builder().put(put).build());
        }
        request
            .send()
            .await
            .map_err(|e| sdk_failure("TransactWriteItems", &e))?;
        Ok(Registered::Recorded)
    }

    /// The owner of connection `id`, unless it is unknown or expired at `now`.
    ///
    /// # Errors
    /// A [`Failure`] when DynamoDB cannot be read, or the row holds no valid user id.
    pub async fn owner_of(&self, id: &str, now: Timestamp) -> Result<Option<UserId>, Failure> {
        let found = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(connection_key(id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_failure("GetItem", &e))?;
        let Some(row) = found.item.filter(|row| alive(row, now)) else {
            return Ok(None);
        };
        match row.get("owner") {
            Some(AttributeValue::S(owner)) => UserId::parse(owner)
                .map(Some)
                .map_err(|e| Failure::permanent(format!("connection {id} has an invalid owner: {e}"))),
            _ => Err(Failure::permanent(format!("connection {id} has no owner"))),
        }
    }

    /// Marks connection `id` of `owner` live: from now on the fan-out sends it every change. False
    /// when the connection is no longer recorded (it disconnected meanwhile).
    ///
    /// # Errors
    /// A [`Failure`] when DynamoDB cannot be written.
    pub async fn follow(&self, id: &str, owner: &UserId) -> Result<bool, Failure> {
        let updated = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(listing_key(owner, id)))
            .update_expression("SET live = :live")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":live", AttributeValue::Bool(true))
            .send()
            .await;
        match updated {
            Ok(_) => Ok(true),
            Err(SdkError::ServiceError(context)) if context.err().is_conditional_check_failed_exception() => Ok(false),
            Err(error) => Err(sdk_failure("UpdateItem", &error)),
        }
    }

    /// Forgets connection `id` (both of its rows) and answers whose it was; `None` when it was not
    /// recorded. Forgetting it again is harmless.
    ///
    /// # Errors
    /// A [`Failure`] when DynamoDB cannot be read or written.
    pub async fn disconnect(&self, id: &str) -> Result<Option<UserId>, Failure> {
        // Expired or not, both rows go: `now` plays no part in a delete.
        let owner = self.owner_of(id, Timestamp::from_millis(0)).await?;
        if let Some(owner) = &owner {
            // The listing first, so that the fan-out stops sending before the connection is forgotten.
            self.delete(listing_key(owner, id)).await?;
        }
        self.delete(connection_key(id)).await?;
        Ok(owner)
    }

    async fn delete(&self, key: Attrs) -> Result<(), Failure> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| sdk_failure("DeleteItem", &e))
    }

    /// The live connections of `owner` at `now` (those that sent `resume`), at most
    /// [`MAX_CONNECTIONS_PER_USER`] of them.
    ///
    /// # Errors
    /// A [`Failure`] when DynamoDB cannot be read.
    pub async fn following(&self, owner: &UserId, now: Timestamp) -> Result<Vec<String>, Failure> {
        Ok(self
            .listed(owner, now)
            .await?
            .into_iter()
            .filter_map(|(id, live)| live.then_some(id))
            .take(MAX_CONNECTIONS_PER_USER)
            .collect())
    }

    /// Every unexpired connection of `owner` and whether it is live, reading at most [`MAX_PAGES`] pages.
    async fn listed(&self, owner: &UserId, now: Timestamp) -> Result<Vec<(String, bool)>, Failure> {
        let mut found = Vec::new();
        let mut start: Option<Attrs> = None;
        for _ in 0..MAX_PAGES {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
                .expression_attribute_values(":pk", s(format!("user#{owner}")))
                .expression_attribute_values(":prefix", s("conn#"))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| sdk_failure("Query", &e))?;
            for row in page.items() {
                if !alive(row, now) {
                    continue;
                }
                if let Some(AttributeValue::S(id)) = row.get("connection_id") {
                    let live = matches!(row.get("live"), Some(AttributeValue::Bool(true)));
                    found.push((id.clone(), live));
                }
            }
            match page.last_evaluated_key {
                Some(next) if !next.is_empty() => start = Some(next),
                _ => break,
            }
        }
        Ok(found)
    }
}

/// Creates the connections table (`pk`, `sk` strings, on-demand, no stream, TTL on `expires_at`)
/// unless it exists, and waits until it is active. The deployment's template makes the same table.
///
/// # Errors
/// A [`Failure`] when DynamoDB refuses or the table does not become active within a minute.
pub async fn create_connections_table(client: &Client, table: &str) -> Result<(), Failure> {
    let created = pk_sk_table(client, table)?.send().await;
    let existed = match created {
        Ok(_) => false,
        Err(SdkError::ServiceError(context)) if context.err().is_resource_in_use_exception() => true,
        Err(error) => return Err(sdk_failure("CreateTable", &error)),
    };
    wait_until_active(client, table).await?;
    if existed {
        return Ok(());
    }
    let ttl = TimeToLiveSpecification::builder()
        .attribute_name(EXPIRES_AT)
        .enabled(true)
        .build()
        .map_err(|e| Failure::permanent(e.to_string()))?;
    client
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(ttl)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| sdk_failure("UpdateTimeToLive", &e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_lives_until_its_expiry_second() {
        let row = HashMap::from([(EXPIRES_AT.to_owned(), AttributeValue::N("100".into()))]);
        assert!(alive(&row, Timestamp::from_millis(99_999)));
        assert!(!alive(&row, Timestamp::from_millis(100_000)));
        assert!(!alive(&HashMap::new(), Timestamp::from_millis(0)));
    }

    #[test]
    fn both_rows_of_a_connection_have_their_own_keys() {
        let owner = UserId::parse("alice").unwrap();
        assert_ne!(connection_key("abc="), listing_key(&owner, "abc="));
        assert_eq!(listing_key(&owner, "abc=")["sk"], s("conn#abc="));
    }
}
