//! Reading a cancelled `TransactWriteItems`: which condition failed, what it saw, and whether trying again can help.
//!
//! DynamoDB answers a cancelled transaction with one reason per action, in order; matched against the
//! [`Role`] of each action this says whether the seq moved, an item's version moved or the idempotency
//! key is taken, and tells throttling and transaction conflicts (retryable) from everything else.
//!
//! The head actions ask for `ReturnValuesOnConditionCheckFailure = ALL_OLD`, so a failed head condition
//! comes back with the row it was checked against: the current seq or version is read from that row,
//! with no second read and no wait. DynamoDB returns no row when there was none, which is seq 0 or
//! version 0; an endpoint that ignored `ALL_OLD` would look the same, which is why a row that contradicts
//! its own failed condition is reported as [`Cancelled::Unexplained`] rather than guessed at.

use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::CancellationReason;
use rookery_domain::{ItemKey, Seq, Timestamp, Version};
use rookery_ports::Failure;

use super::rows::{Attrs, get_n};
use super::transaction::Role;
use crate::error::{is_transient, sdk_failure};

/// How one action of a transaction went, as DynamoDB's cancellation reasons say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Cancelled {
    /// The user head's condition failed; the stream is at this seq, as the condition saw it.
    SeqMoved(Seq),
    /// This item head's condition failed; the item is at this version, as the condition saw it.
    VersionMoved(ItemKey, Version),
    /// The idempotency record's condition failed.
    KeyTaken,
    /// The owner's erasure marker exists: the account was erased at this time.
    Erased(Timestamp),
    /// A head's condition failed, yet the row returned for it satisfies the condition: what moved is unknown.
    Unexplained(String),
    /// Conflict with another transaction, throttling, or capacity: try again later.
    Transient(String),
    /// Anything else: a bug, or data DynamoDB refuses.
    Permanent(String),
}

const CONDITION_FAILED: &str = "ConditionalCheckFailed";

/// Maps a transaction's cancellation reasons (one per action, in order) to what the writer must hear.
///
/// Condition failures win over everything else, in the contract's order: seq, then item versions, then the key.
pub(super) fn classify_cancellation(reasons: &[CancellationReason], roles: &[Role]) -> Cancelled {
    let failed = |wanted: &dyn Fn(&Role) -> bool| {
        reasons
            .iter()
            .zip(roles)
            .find(|(reason, role)| reason.code() == Some(CONDITION_FAILED) && wanted(role))
    };
    if let Some((reason, _)) = failed(&|r| *r == Role::Erased) {
        let at = reason.item().and_then(|row| get_n(row, "at").ok()).unwrap_or(0);
        return Cancelled::Erased(Timestamp::from_millis(at));
    }
    if let Some((reason, Role::UserHead(expected))) = failed(&|r| matches!(r, Role::UserHead(_))) {
        return seq_seen(reason.item(), *expected);
    }
    if let Some((reason, Role::ItemHead(key, expected))) = failed(&|r| matches!(r, Role::ItemHead(..))) {
        return version_seen(reason.item(), key, *expected);
    }
    if failed(&|r| *r == Role::Idempotency).is_some() {
        return Cancelled::KeyTaken;
    }
    let codes: Vec<&str> = reasons
        .iter()
        .map(|r| r.code().unwrap_or("None"))
        .filter(|c| *c != "None")
        .collect();
    let summary = format!("transaction cancelled: {}", codes.join(", "));
    let transient = codes.is_empty()
        || codes.iter().all(|code| {
            matches!(
                *code,
                "TransactionConflict" | "ThrottlingError" | "ProvisionedThroughputExceeded"
            ) || is_transient(Some(code), None)
        });
    if transient {
        Cancelled::Transient(summary)
    } else {
        Cancelled::Permanent(summary)
    }
}

/// The stream's seq as the failed user-head condition saw it: the returned head row's `last_seq`, or 0 without one.
fn seq_seen(row: Option<&Attrs>, expected: Seq) -> Cancelled {
    let current = match row.map(|row| get_n(row, "last_seq")).transpose() {
        Ok(seen) => Seq(seen.unwrap_or(0)),
        Err(failure) => return Cancelled::Permanent(failure.message),
    };
    if current == expected {
        return Cancelled::Unexplained(format!(
            "the user head's condition failed, yet the row returned for it is at the expected seq {current}"
        ));
    }
    Cancelled::SeqMoved(current)
}

/// The item's version as its failed head condition saw it: the returned head row's `version`, or 0 without one.
fn version_seen(row: Option<&Attrs>, key: &ItemKey, expected: Version) -> Cancelled {
    let current = match row.map(|row| get_n(row, "version")).transpose() {
        Ok(seen) => seen.map_or(Version::NONE, Version),
        Err(failure) => return Cancelled::Permanent(failure.message),
    };
    if current == expected {
        return Cancelled::Unexplained(format!(
            "the head condition of item {key} failed, yet the row returned for it is at the expected version {current}"
        ));
    }
    Cancelled::VersionMoved(key.clone(), current)
}

/// How a `TransactWriteItems` call failed.
#[derive(Debug)]
pub(super) enum TxError {
    Cancelled(Cancelled),
    Other(Failure),
}

pub(super) fn classify_transaction_error(
    error: &SdkError<TransactWriteItemsError, HttpResponse>,
    roles: &[Role],
) -> TxError {
    if let SdkError::ServiceError(context) = error
        && let TransactWriteItemsError::TransactionCanceledException(cancelled) = context.err()
    {
        return TxError::Cancelled(classify_cancellation(cancelled.cancellation_reasons(), roles));
    }
    let failure = sdk_failure("TransactWriteItems", error);
    // The modelled throttling and server errors are transient whatever code the response carried.
    if let SdkError::ServiceError(context) = error
        && matches!(
            context.err(),
            TransactWriteItemsError::ProvisionedThroughputExceededException(_)
                | TransactWriteItemsError::RequestLimitExceeded(_)
                | TransactWriteItemsError::ThrottlingException(_)
                | TransactWriteItemsError::TransactionInProgressException(_)
                | TransactWriteItemsError::InternalServerError(_)
        )
    {
        return TxError::Other(Failure::transient(failure.message));
    }
    TxError::Other(failure)
}

#[cfg(test)]
mod tests {
    use aws_sdk_dynamodb::types::AttributeValue;
    use aws_sdk_dynamodb::types::error::TransactionCanceledException;
    use aws_smithy_types::body::SdkBody;
    use rookery_domain::{CollectionName, ItemId};

    use super::*;

    fn key(id: &str) -> ItemKey {
        ItemKey::new(CollectionName::parse("notes").unwrap(), ItemId::parse(id).unwrap())
    }

    fn reason(code: &str) -> CancellationReason {
        CancellationReason::builder().code(code).build()
    }

    /// A failed condition, with the row it was checked against as `ALL_OLD` returns it.
    fn failed_on(row: &[(&str, u64)]) -> CancellationReason {
        row.iter()
            .fold(
                CancellationReason::builder().code(CONDITION_FAILED),
                |reason, (name, value)| reason.item(*name, AttributeValue::N(value.to_string())),
            )
            .build()
    }

    fn failed_without_row() -> CancellationReason {
        reason(CONDITION_FAILED)
    }

    #[test]
    fn cancellation_reasons_map_to_the_condition_that_failed_and_what_it_saw() {
        let roles = [
            Role::UserHead(Seq(3)),
            Role::Plain,
            Role::ItemHead(key("a"), Version(2)),
            Role::Idempotency,
        ];
        let none = || reason("None");
        let head = || failed_on(&[("last_seq", 5)]);
        let item = || failed_on(&[("version", 4)]);
        assert_eq!(
            classify_cancellation(&[head(), none(), none(), none()], &roles),
            Cancelled::SeqMoved(Seq(5))
        );
        assert_eq!(
            classify_cancellation(&[none(), none(), item(), none()], &roles),
            Cancelled::VersionMoved(key("a"), Version(4))
        );
        assert_eq!(
            classify_cancellation(&[none(), none(), none(), failed_without_row()], &roles),
            Cancelled::KeyTaken
        );
        assert_eq!(
            classify_cancellation(&[head(), none(), item(), failed_without_row()], &roles),
            Cancelled::SeqMoved(Seq(5)),
            "seq first"
        );
        assert_eq!(
            classify_cancellation(&[none(), none(), item(), failed_without_row()], &roles),
            Cancelled::VersionMoved(key("a"), Version(4))
        );
        for code in [
            "TransactionConflict",
            "ThrottlingError",
            "ProvisionedThroughputExceeded",
        ] {
            assert!(
                matches!(
                    classify_cancellation(&[none(), reason(code), none(), none()], &roles),
                    Cancelled::Transient(_)
                ),
                "{code}"
            );
        }
        assert!(matches!(
            classify_cancellation(&[none(), reason("ValidationError"), none(), none()], &roles),
            Cancelled::Permanent(_)
        ));
    }

    #[test]
    fn a_failed_condition_without_a_row_saw_an_empty_stream_or_an_unused_item() {
        assert_eq!(
            classify_cancellation(&[failed_without_row()], &[Role::UserHead(Seq(7))]),
            Cancelled::SeqMoved(Seq(0))
        );
        assert_eq!(
            classify_cancellation(&[failed_without_row()], &[Role::ItemHead(key("a"), Version(2))]),
            Cancelled::VersionMoved(key("a"), Version::NONE)
        );
    }

    #[test]
    fn a_returned_row_that_satisfies_its_failed_condition_is_unexplained_not_guessed() {
        for (reason, role) in [
            (failed_without_row(), Role::UserHead(Seq(0))),
            (failed_on(&[("last_seq", 3)]), Role::UserHead(Seq(3))),
            (failed_without_row(), Role::ItemHead(key("a"), Version::NONE)),
            (failed_on(&[("version", 2)]), Role::ItemHead(key("a"), Version(2))),
        ] {
            let outcome = classify_cancellation(&[reason], std::slice::from_ref(&role));
            assert!(matches!(outcome, Cancelled::Unexplained(_)), "{role:?}: {outcome:?}");
        }
        let corrupt = classify_cancellation(&[failed_on(&[("seq", 3)])], &[Role::UserHead(Seq(1))]);
        assert!(
            matches!(&corrupt, Cancelled::Permanent(why) if why.contains("last_seq")),
            "{corrupt:?}"
        );
    }

    #[test]
    fn sdk_transaction_errors_built_by_hand_are_classified() {
        let roles = vec![Role::UserHead(Seq(1)), Role::ItemHead(key("a"), Version(1))];
        let response = |status: u16| HttpResponse::new(status.try_into().unwrap(), SdkBody::empty());
        let cancelled = |reasons: Vec<CancellationReason>| {
            let builder = TransactionCanceledException::builder()
                .message("cancelled")
                .set_cancellation_reasons(Some(reasons));
            SdkError::service_error(
                TransactWriteItemsError::TransactionCanceledException(builder.build()),
                response(400),
            )
        };
        assert!(matches!(
            classify_transaction_error(&cancelled(vec![reason("None"), failed_on(&[("version", 3)])]), &roles),
            TxError::Cancelled(Cancelled::VersionMoved(k, Version(3))) if k == key("a")
        ));
        assert!(matches!(
            classify_transaction_error(&cancelled(vec![failed_on(&[("last_seq", 2)]), reason("None")]), &roles),
            TxError::Cancelled(Cancelled::SeqMoved(Seq(2)))
        ));
        assert!(matches!(
            classify_transaction_error(&cancelled(vec![reason("TransactionConflict"), reason("None")]), &roles),
            TxError::Cancelled(Cancelled::Transient(_))
        ));

        let throttled = SdkError::service_error(
            TransactWriteItemsError::ProvisionedThroughputExceededException(
                aws_sdk_dynamodb::types::error::ProvisionedThroughputExceededException::builder()
                    .message("slow")
                    .build(),
            ),
            response(400),
        );
        assert!(matches!(classify_transaction_error(&throttled, &roles), TxError::Other(f) if f.retryable));
        let in_progress = SdkError::service_error(
            TransactWriteItemsError::TransactionInProgressException(
                aws_sdk_dynamodb::types::error::TransactionInProgressException::builder().build(),
            ),
            response(400),
        );
        assert!(matches!(classify_transaction_error(&in_progress, &roles), TxError::Other(f) if f.retryable));
        let server = SdkError::service_error(
            TransactWriteItemsError::InternalServerError(
                aws_sdk_dynamodb::types::error::InternalServerError::builder()
                    .message("boom")
                    .build(),
            ),
            response(500),
        );
        assert!(matches!(classify_transaction_error(&server, &roles), TxError::Other(f) if f.retryable));
        let timeout: SdkError<TransactWriteItemsError, HttpResponse> = SdkError::timeout_error("took too long");
        assert!(matches!(classify_transaction_error(&timeout, &roles), TxError::Other(f) if f.retryable));
        let construction: SdkError<TransactWriteItemsError, HttpResponse> = SdkError::construction_failure("bad input");
        assert!(matches!(classify_transaction_error(&construction, &roles), TxError::Other(f) if !f.retryable));
    }
}
