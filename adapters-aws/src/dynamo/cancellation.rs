//! Reading a cancelled `TransactWriteItems`: which condition failed, and whether trying again can help.
//!
//! DynamoDB answers a cancelled transaction with one reason per action, in order; matched against the
//! [`Role`] of each action this says whether the seq moved, an item's version moved or the idempotency
//! key is taken, and tells throttling and transaction conflicts (retryable) from everything else.

use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use rookery_domain::ItemKey;
use rookery_ports::Failure;

use super::transaction::Role;
use crate::error::{is_transient, sdk_failure};

/// How one action of a transaction went, as DynamoDB's cancellation reasons say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Cancelled {
    /// The user head's condition failed.
    SeqMoved,
    /// This item head's condition failed.
    VersionMoved(ItemKey),
    /// The idempotency record's condition failed.
    KeyTaken,
    /// Conflict with another transaction, throttling, or capacity: try again later.
    Transient(String),
    /// Anything else: a bug, or data DynamoDB refuses.
    Permanent(String),
}

/// Maps a transaction's cancellation reason codes (one per action, in order) to what the writer must hear.
///
/// Condition failures win over everything else, in the contract's order: seq, then item versions, then the key.
pub(super) fn classify_cancellation(codes: &[Option<&str>], roles: &[Role]) -> Cancelled {
    let failed = |wanted: &dyn Fn(&Role) -> bool| {
        codes
            .iter()
            .zip(roles)
            .find(|(code, role)| **code == Some("ConditionalCheckFailed") && wanted(role))
            .map(|(_, role)| role.clone())
    };
    if failed(&|r| *r == Role::UserHead).is_some() {
        return Cancelled::SeqMoved;
    }
    if let Some(Role::ItemHead(key)) = failed(&|r| matches!(r, Role::ItemHead(_))) {
        return Cancelled::VersionMoved(key);
    }
    if failed(&|r| *r == Role::Idempotency).is_some() {
        return Cancelled::KeyTaken;
    }
    let reasons: Vec<&str> = codes
        .iter()
        .map(|c| c.unwrap_or("None"))
        .filter(|c| *c != "None")
        .collect();
    let summary = format!("transaction cancelled: {}", reasons.join(", "));
    let transient = reasons.is_empty()
        || reasons.iter().all(|code| {
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
        let codes: Vec<Option<&str>> = cancelled.cancellation_reasons().iter().map(|r| r.code()).collect();
        return TxError::Cancelled(classify_cancellation(&codes, roles));
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
    use rookery_domain::{CollectionName, ItemId};

    use super::*;

    fn key(id: &str) -> ItemKey {
        ItemKey::new(CollectionName::parse("notes").unwrap(), ItemId::parse(id).unwrap())
    }

    #[test]
    fn cancellation_reasons_map_to_the_condition_that_failed() {
        let roles = [Role::UserHead, Role::Plain, Role::ItemHead(key("a")), Role::Idempotency];
        let ccf = Some("ConditionalCheckFailed");
        let none = Some("None");
        assert_eq!(
            classify_cancellation(&[ccf, none, none, none], &roles),
            Cancelled::SeqMoved
        );
        assert_eq!(
            classify_cancellation(&[none, none, ccf, none], &roles),
            Cancelled::VersionMoved(key("a"))
        );
        assert_eq!(
            classify_cancellation(&[none, none, none, ccf], &roles),
            Cancelled::KeyTaken
        );
        assert_eq!(
            classify_cancellation(&[ccf, none, ccf, ccf], &roles),
            Cancelled::SeqMoved,
            "seq first"
        );
        assert_eq!(
            classify_cancellation(&[none, none, ccf, ccf], &roles),
            Cancelled::VersionMoved(key("a"))
        );
        assert!(matches!(
            classify_cancellation(&[Some("TransactionConflict"), none, none, none], &roles),
            Cancelled::Transient(_)
        ));
        assert!(matches!(
            classify_cancellation(&[none, Some("ThrottlingError"), none, none], &roles),
            Cancelled::Transient(_)
        ));
        assert!(matches!(
            classify_cancellation(&[none, Some("ProvisionedThroughputExceeded"), none, none], &roles),
            Cancelled::Transient(_)
        ));
        assert!(matches!(
            classify_cancellation(&[none, Some("ValidationError"), none, none], &roles),
            Cancelled::Permanent(_)
        ));
    }

    #[test]
    fn sdk_transaction_errors_built_by_hand_are_classified() {
        use aws_sdk_dynamodb::types::CancellationReason;
        use aws_sdk_dynamodb::types::error::TransactionCanceledException;
        use aws_smithy_types::body::SdkBody;

        let roles = vec![Role::UserHead, Role::ItemHead(key("a"))];
        let response = |status: u16| HttpResponse::new(status.try_into().unwrap(), SdkBody::empty());
        let cancelled = |codes: &[&str]| {
            let mut builder = TransactionCanceledException::builder().message("cancelled");
            for code in codes {
                builder = builder.cancellation_reasons(CancellationReason::builder().code(*code).build());
            }
            SdkError::service_error(
                TransactWriteItemsError::TransactionCanceledException(builder.build()),
                response(400),
            )
        };
        assert!(matches!(
            classify_transaction_error(&cancelled(&["None", "ConditionalCheckFailed"]), &roles),
            TxError::Cancelled(Cancelled::VersionMoved(k)) if k == key("a")
        ));
        assert!(matches!(
            classify_transaction_error(&cancelled(&["ConditionalCheckFailed", "None"]), &roles),
            TxError::Cancelled(Cancelled::SeqMoved)
        ));
        assert!(matches!(
            classify_transaction_error(&cancelled(&["TransactionConflict", "None"]), &roles),
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
