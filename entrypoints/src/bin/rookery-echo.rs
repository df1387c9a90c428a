//! A bare `lambda_runtime` function that answers every event with itself: the baseline the real
//! functions' start-up time is measured against (`entrypoints/tests/lambda_smoke.rs`, `docs/PERFORMANCE.md`).
//! It is built the same way (same profile, same runtime flavour) and composes nothing.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| async move {
        Ok::<Value, Error>(event.payload)
    }))
    .await
}
