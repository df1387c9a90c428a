//! Lambda function 5: realtime on AWS. API Gateway's WebSocket API routes (`$connect`, `$disconnect`,
//! the client's frames) and the fan-out of the events table's stream to the connections, in one handler
//! told apart by the payload's shape (`rookery_entrypoints::lambda::realtime`).
//!
//! Everything is built once per cold start, here: the SDK clients, the token verifier, the connection
//! registry and the `@connections` client. Besides the other functions' variables it needs
//! `ROOKERY_CONNECTIONS_TABLE` and `ROOKERY_REALTIME_ENDPOINT`.

// The AWS SDK's futures nest deeply; computing the layout of the composed handler needs more than the default 128.
#![recursion_limit = "256"]

use std::process::ExitCode;

use rookery_adapters_memory::SystemClock;
use rookery_entrypoints::lambda::compose::Aws;
use rookery_entrypoints::lambda::realtime::{FanOut, RealtimeHandler, RealtimeRoutes, RealtimeSettings};
use rookery_entrypoints::lambda::stream::decode_lambda_record;
use rookery_entrypoints::lambda::{logging, runtime, startup};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    logging::init();
    let composed: Result<_, Box<dyn std::error::Error>> = async {
        let settings = RealtimeSettings::from_vars(|name| std::env::var(name).ok());
        let aws = Aws::from_env().await;
        // Both sets of problems at once, so a deployment is fixed in one go.
        let (settings, aws) = match (settings, aws) {
            (Ok(settings), Ok(aws)) => (settings, aws),
            (Err(settings), Ok(_)) => return Err(settings.into()),
            (Ok(_), Err(aws)) => return Err(aws.into()),
            (Err(settings), Err(aws)) => return Err(format!("{aws}; {settings}").into()),
        };
        let clients = aws.clients();
        let registry = clients.connection_registry(&settings.connections_table);
        let api = clients.management_api(&settings.endpoint);
        let routes = RealtimeRoutes::new(
            clients.event_store(),
            aws.verifier()?,
            registry.clone(),
            api.clone(),
            SystemClock::new(),
        );
        let fan_out = FanOut::new(registry, api, SystemClock::new());
        Ok(RealtimeHandler::new(routes, decode_lambda_record, fan_out))
    }
    .await;
    match composed {
        Ok(handler) => runtime::exit_code(runtime::serve_realtime(handler).await),
        Err(error) => startup::fail(&error).await,
    }
}
