//! Port contract suites, written once and run against every adapter.
//!
//! Each module holds one port's suite: a factory trait that makes a fresh, isolated adapter, a set of
//! `pub async fn check_<behaviour>(factory)` functions, one per documented MUST, and a macro that turns
//! the whole suite into one test per check (the way ripgrep runs each test under two regex engines).
//! A new adapter gets the whole suite with one line, for example
//! `rookery_tests::event_store_contract!(memory, MemoryStoreFactory);`.

pub mod change_feed;
pub mod erasure;
pub mod event_store;
pub mod media_store;
pub mod push_gateway;
pub mod reopen;
pub mod search_index;
pub mod system;

pub use crate::fixtures::{BoxError, Outcome};

/// Expands to `mod $name { ... }` holding one multi-threaded `#[tokio::test]` per named check of
/// `crate::contract::$suite`, each building its own factory from `$factory`.
///
/// The suite macros (`event_store_contract!` and friends) call this with their list of checks; use those.
#[doc(hidden)]
#[macro_export]
macro_rules! contract_tests {
    ($name:ident, $suite:ident, $factory:expr; $($check:ident),* $(,)?) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() -> $crate::contract::Outcome {
                    let factory = $factory;
                    $crate::contract::$suite::$check(&factory).await
                }
            )*
        }
    };
}
