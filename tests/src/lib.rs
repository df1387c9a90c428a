//! Contract suites and helpers shared by the integration tests.
