//! The Cognito user pool as an [`IdentityDirectory`]: erasing an account deletes its Cognito user.
//!
//! Rookery's user id is the token's `sub`, which is not always the pool's user name (a pool that signs
//! in by email or by a chosen name keeps the name apart from the `sub`), so the user is first found by
//! `ListUsers` with the filter `sub = "<id>"`, then deleted by `AdminDeleteUser` under the name found.
//! A `sub` no user has, and a user deleted between the two calls, are both `Ok`: the user is gone.

use aws_sdk_cognitoidentityprovider::Client;
use aws_sdk_cognitoidentityprovider::error::SdkError;
use aws_sdk_cognitoidentityprovider::operation::admin_delete_user::AdminDeleteUserError;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use rookery_domain::UserId;
use rookery_ports::{Failure, IdentityDirectory};

use crate::error::{RetryPolicy, sdk_failure};

/// The longest value a `ListUsers` filter takes (Cognito's limit on the whole filter is 256).
const MAX_FILTER_VALUE: usize = 200;

/// The `ListUsers` filter that finds the user whose `sub` is `sub`, or `None` when `sub` cannot be put
/// in a filter safely (empty, too long, or holding a control character).
///
/// The value is written in double quotes, with `\` and `"` escaped by a backslash, so no text of it
/// can end the string or become another clause.
pub fn sub_filter(sub: &str) -> Option<String> {
    if sub.is_empty() || sub.len() > MAX_FILTER_VALUE || sub.chars().any(char::is_control) {
        return None;
    }
    let mut filter = String::with_capacity(sub.len() + 10);
    filter.push_str("sub = \"");
    for c in sub.chars() {
        if c == '"' || c == '\\' {
            filter.push('\\');
        }
        filter.push(c);
    }
    filter.push('"');
    Some(filter)
}

/// The users of one Cognito user pool.
#[derive(Debug, Clone)]
pub struct CognitoDirectory {
    client: Client,
    pool_id: String,
    retry: RetryPolicy,
}

impl CognitoDirectory {
    /// The directory of pool `pool_id`, through `client`.
    pub fn new(client: Client, pool_id: impl Into<String>) -> Self {
        Self {
            client,
            pool_id: pool_id.into(),
            retry: RetryPolicy::default(),
        }
    }

    /// The same directory with another retry policy for transient failures.
    #[must_use]
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The pool's user names of the users whose `sub` is `sub` (one, or none).
    ///
    /// # Errors
    /// A permanent [`Failure`] when `sub` cannot be put in a filter; a [`Failure`] when Cognito refuses
    /// or cannot be reached.
    pub async fn usernames_of(&self, sub: &str) -> Result<Vec<String>, Failure> {
        let filter = sub_filter(sub)
            .ok_or_else(|| Failure::permanent(format!("the user id {sub:?} cannot be looked up in Cognito safely")))?;
        let out = self
            .retry
            .run(Failure::is_retryable, || async {
                self.client
                    .list_users()
                    .user_pool_id(&self.pool_id)
                    .filter(&filter)
                    // A `sub` is unique in a pool; asking for two shows a surprise rather than hiding it.
                    .limit(2)
                    .send()
                    .await
                    .map_err(|e| sdk_failure("ListUsers", &e))
            })
            .await?;
        Ok(out
            .users
            .unwrap_or_default()
            .into_iter()
            .filter_map(|user| user.username)
            .collect())
    }

    /// Deletes the user named `username`; one Cognito does not know is `Ok`.
    async fn delete_username(&self, username: &str) -> Result<(), Failure> {
        let outcome = self
            .retry
            .run(
                |e: &SdkError<AdminDeleteUserError, HttpResponse>| sdk_failure("AdminDeleteUser", e).is_retryable(),
                || {
                    self.client
                        .admin_delete_user()
                        .user_pool_id(&self.pool_id)
                        .username(username)
                        .send()
                },
            )
            .await;
        match outcome {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(context)) if context.err().is_user_not_found_exception() => Ok(()),
            Err(error) => Err(sdk_failure("AdminDeleteUser", &error)),
        }
    }
}

impl IdentityDirectory for CognitoDirectory {
    async fn delete_user(&self, user: &UserId) -> Result<(), Failure> {
        let usernames = self.usernames_of(user.as_str()).await?;
        if usernames.len() > 1 {
            return Err(Failure::permanent(format!(
                "Cognito pool {} has more than one user with sub {user}",
                self.pool_id
            )));
        }
        for username in &usernames {
            self.delete_username(username).await?;
        }
        tracing::info!(%user, found = usernames.len(), "Cognito user deleted");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sub_is_quoted_with_quotes_and_backslashes_escaped() {
        assert_eq!(
            sub_filter("0b6f1e2c-aaaa-4bbb-8ccc-123456789abc").as_deref(),
            Some(r#"sub = "0b6f1e2c-aaaa-4bbb-8ccc-123456789abc""#)
        );
        assert_eq!(sub_filter(r#"a"b\c"#).as_deref(), Some(r#"sub = "a\"b\\c""#));
        assert_eq!(
            sub_filter(r#"x" or username = "admin"#).as_deref(),
            Some(r#"sub = "x\" or username = \"admin""#)
        );
    }

    #[test]
    fn a_sub_that_cannot_be_filtered_safely_is_refused() {
        assert_eq!(sub_filter(""), None);
        assert_eq!(sub_filter("a\nb"), None);
        assert_eq!(sub_filter("a\0b"), None);
        assert_eq!(sub_filter(&"a".repeat(MAX_FILTER_VALUE + 1)), None);
        assert!(sub_filter(&"a".repeat(MAX_FILTER_VALUE)).is_some());
    }
}
