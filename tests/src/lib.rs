//! Contract suites and helpers shared by the integration tests.
//!
//! [`contract`] holds one suite per port, generic over the adapter; the files in `tests/` run them
//! against each adapter with one macro line, and hold the reliability properties and end-to-end tests.
//! [`fixtures`] builds ids, times and events for them; [`memory`] wires the memory adapters into the
//! application service for the properties and end-to-end tests; [`concurrency`] writes as one user from many
//! tasks at once through them, on any event store. [`pytools`] installs the Python tools some
//! tests run (the moto emulator, cfn-lint, Schemathesis) into a virtual environment under the target directory.

pub mod aws;
pub mod concurrency;
pub mod contract;
pub mod fixtures;
pub mod http;
pub mod memory;
pub mod pytools;
