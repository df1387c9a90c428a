//! The DynamoDB event store: one table holding every user's stream, its heads and its idempotency records.
//!
//! The layout is recorded in `docs/decisions/0002-dynamodb-layout.md`. In short, one partition per user
//! (`pk = "user#<id>"`) holds the events (`sk = "evt#<20-digit seq>"`), the user head (`"head"`, last seq),
//! item heads (`"item#<collection>#<id>"`), per-item history rows (`"hist#<collection>#<id>#<20-digit version>"`),
//! the device registry (`"devices"`), media objects (`"media#<id>"`) and idempotency records (`"idem#<key>"`);
//! one more partition (`pk = "owners"`) lists every user with a stream, so rebuilds can page owners in order.
//! An append is one `TransactWriteItems` guarded by the user head's seq, each item head's version and
//! the idempotency record, so exactly one of several racing writers wins; an append that names no seq is
//! tried again by the store at the head's new seq (with jittered backoff, until a deadline), so only a
//! moved item version or a taken key ever reaches the writer.
//!
//! The module is split by job: `rows` spells keys and attributes, `transaction` builds an append's
//! `TransactWriteItems` within DynamoDB's limits, `cancellation` reads why one was cancelled,
//! `store` holds [`DynamoStore`] and its reads, `turns` queues one process's appends to each user, and
//! `table` creates the table.

mod cancellation;
mod erasure;
mod heads;
mod rows;
mod store;
mod table;
mod transaction;
mod turns;

pub use erasure::{BATCH_WRITE_ITEMS, Purged};
pub use heads::{HeadPage, ItemHeadRow, ItemHeads, ScanPosition};
pub(crate) use rows::decode_event_json;
pub use rows::{KIND_ERASED, KIND_EVENT};
pub use store::{Contention, DynamoStore, Purge};
pub use table::create_table;
pub(crate) use table::{pk_sk_table, wait_until_active};
pub use transaction::{MAX_ITEM_BYTES, MAX_TRANSACTION_ACTIONS, MAX_TRANSACTION_BYTES};
