//! The clock and id source contracts: time never runs backwards, ids are unique and well formed.

use std::collections::HashSet;
use std::sync::Mutex;

use rookery_domain::{EventId, MediaId, MessageId, Timestamp};
use rookery_ports::{Clock, IdSource};

use crate::fixtures::Outcome;

/// Makes the clock under test.
pub trait ClockFactory: Send + Sync {
    /// The adapter under test.
    type Clock: Clock;

    /// A new clock.
    fn fresh(&self) -> Self::Clock;
}

/// Makes id sources under test; several instances must never return the same id.
pub trait IdsFactory: Send + Sync {
    /// The adapter under test.
    type Ids: IdSource;

    /// A new instance.
    fn fresh(&self) -> Self::Ids;
}

/// `now` never goes backwards: not along one thread, and not in the order calls are observed across
/// threads (each reading is taken and compared under one lock, so the order is real).
pub async fn check_clock_never_goes_backwards<F: ClockFactory>(factory: &F) -> Outcome {
    let clock = factory.fresh();
    let last = Mutex::new(Timestamp::from_millis(0));
    let backwards = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let (clock, last) = (clock.clone(), &last);
                scope.spawn(move || {
                    let mut own = clock.now();
                    let mut errors = Vec::new();
                    for _ in 0..5_000 {
                        let now = clock.now();
                        if now < own {
                            errors.push(format!("{now} after {own} on one thread"));
                        }
                        own = now;
                        if let Ok(mut seen) = last.lock() {
                            let now = clock.now();
                            if now < *seen {
                                errors.push(format!("{now} after {} across threads", *seen));
                            }
                            *seen = now;
                        }
                    }
                    errors
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|_| vec!["a thread died".into()]))
            .collect::<Vec<_>>()
    });
    assert!(
        backwards.is_empty(),
        "the clock went backwards: {:?}",
        &backwards[..backwards.len().min(5)]
    );
    Ok(())
}

fn well_formed(id: &str) -> bool {
    let bytes = id.as_bytes();
    (1..=128).contains(&bytes.len())
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

/// Ids from several instances, used from several threads at once, are all distinct, 1 to 128 characters
/// of `^[A-Za-z0-9][A-Za-z0-9_.:-]*$`, and valid event, message and media ids.
pub async fn check_ids_are_unique_and_well_formed<F: IdsFactory>(factory: &F) -> Outcome {
    let sources = [factory.fresh(), factory.fresh()];
    let ids: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let source = sources[t % 2].clone();
                scope.spawn(move || (0..2_500).map(|_| source.new_id()).collect::<Vec<_>>())
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect()
    });
    assert_eq!(ids.len(), 10_000, "every thread finished");
    let distinct: HashSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len(), "every id is unique");
    for id in &ids {
        assert!(well_formed(id), "{id:?} matches the pattern");
        assert!(
            EventId::parse(id.as_str()).is_ok() && MessageId::parse(id.as_str()).is_ok(),
            "{id:?}"
        );
        assert!(MediaId::parse(id.as_str()).is_ok(), "{id:?}");
    }
    Ok(())
}

/// Ids one instance returns one after another sort in the order they were made (a SHOULD of the port).
pub async fn check_ids_sort_by_creation<F: IdsFactory>(factory: &F) -> Outcome {
    let source = factory.fresh();
    let ids: Vec<String> = (0..2_000).map(|_| source.new_id()).collect();
    for pair in ids.windows(2) {
        assert!(pair[0] < pair[1], "{:?} then {:?}", pair[0], pair[1]);
    }
    Ok(())
}

/// Expands to one `#[tokio::test]` per clock check, inside `mod $name`, for the factory `$factory`.
#[macro_export]
macro_rules! clock_contract {
    ($name:ident, $factory:expr) => {
        $crate::contract_tests!($name, system, $factory; check_clock_never_goes_backwards);
    };
}

/// Expands to one `#[tokio::test]` per id source check, inside `mod $name`, for the factory `$factory`.
#[macro_export]
macro_rules! id_source_contract {
    ($name:ident, $factory:expr) => {
        $crate::contract_tests!($name, system, $factory;
            check_ids_are_unique_and_well_formed,
            check_ids_sort_by_creation,
        );
    };
}
