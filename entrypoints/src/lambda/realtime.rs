//! Function 5: realtime on AWS (`API.md`, Realtime), the same frames as `GET /v1/realtime` on
//! `rookery serve`, served by API Gateway's WebSocket API.
//!
//! One function has two triggers, told apart by the payload's shape as function 4's are: the WebSocket
//! API's routes (`$connect`, `$disconnect`, and every client frame, whatever route carried it), and a
//! DynamoDB stream batch of the events table (the fan-out). See decision 0007, "On AWS":
//!
//! - `$connect` verifies the token (the `Authorization: Bearer` header, or the `access_token` query
//!   parameter) with the same verifier as the HTTP functions and records the connection; `401`
//!   otherwise, `410 account_erased` for a user whose account was erased (as every HTTP route answers),
//!   `429` past the per-user limit.
//! - `$disconnect` forgets it.
//! - A `resume` frame marks the connection live, then replays the user's feed after `since` from the
//!   table through `PostToConnection` and posts `ready`; `ping` is answered with `pong`, anything else
//!   with an `error` frame (the connection stays open).
//! - The fan-out posts each change frame to the live connections of the event's owner, forgets
//!   connections that are gone (`410`), and names the first record not delivered in `batchItemFailures`.

use std::collections::HashMap;

use futures_util::future::join_all;
use rookery_adapters_aws::realtime::{ConnectionRegistry, ConnectionsApi, PostOutcome, Registered};
use rookery_domain::{Seq, StoredEvent, UserId};
use rookery_ports::cursor::parse_seq;
use rookery_ports::{AuthError, BatchFailure, BatchHandler, Clock, EventStore, Failure, IdentityVerifier, SkipErased};
use serde::Deserialize;
use serde_json::{Value, json};

use super::invocation::{InvocationError, stream_batch};
use super::stream::{RecordDecoder, StreamConsumer};
use crate::http::Problem;
use crate::http::problem::auth_problem;
use crate::realtime::protocol::{ClientFrame, MAX_CLIENT_FRAME, MAX_REPLAY, ServerFrame, change_frame};

/// Events a `resume` reads from the table per query.
const REPLAY_PAGE: u64 = 100;

/// The configuration the realtime function needs besides the other functions' (`ROOKERY_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealtimeSettings {
    /// The connections table (`ROOKERY_CONNECTIONS_TABLE`).
    pub connections_table: String,
    /// The WebSocket API stage's `@connections` endpoint, `https://{api id}.execute-api.{region}.amazonaws.com/{stage}`
    /// (`ROOKERY_REALTIME_ENDPOINT`).
    pub endpoint: String,
}

/// The realtime settings are missing or malformed; the message names every variable to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("realtime configuration: {}", .0.join("; "))]
pub struct RealtimeSettingsError(pub Vec<String>);

impl RealtimeSettings {
    /// Reads the settings through `var` (the environment, or a map in tests).
    ///
    /// # Errors
    /// [`RealtimeSettingsError`] naming every missing or malformed variable at once.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, RealtimeSettingsError> {
        let mut problems = Vec::new();
        let get = |name: &str| var(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let connections_table = get("ROOKERY_CONNECTIONS_TABLE");
        if connections_table.is_none() {
            problems.push("ROOKERY_CONNECTIONS_TABLE is required".to_owned());
        }
        let endpoint = get("ROOKERY_REALTIME_ENDPOINT");
        match &endpoint {
            None => problems.push("ROOKERY_REALTIME_ENDPOINT is required".to_owned()),
            Some(url) if !(url.starts_with("https://") || url.starts_with("http://")) => problems.push(format!(
                "ROOKERY_REALTIME_ENDPOINT must be the stage's https URL, not {url:?}"
            )),
            Some(_) => {}
        }
        match (connections_table, endpoint) {
            (Some(connections_table), Some(endpoint)) if problems.is_empty() => Ok(Self {
                connections_table,
                endpoint,
            }),
            _ => Err(RealtimeSettingsError(problems)),
        }
    }
}

/// The parts of an API Gateway WebSocket event this function reads.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WebSocketEvent {
    request_context: WebSocketContext,
    #[serde(default)]
    headers: Option<HashMap<String, String>>,
    #[serde(default)]
    query_string_parameters: Option<HashMap<String, String>>,
    #[serde(default)]
    multi_value_query_string_parameters: Option<HashMap<String, Vec<String>>>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    is_base64_encoded: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WebSocketContext {
    event_type: String,
    connection_id: String,
    #[serde(default)]
    route_key: Option<String>,
}

/// The route answer API Gateway expects from a proxy integration.
fn status(code: u16) -> Value {
    json!({ "statusCode": code })
}

/// A refusal with a problem document (only a `$connect` refusal reaches the client, as the handshake's answer).
fn refusal(problem: &Problem) -> Value {
    json!({
        "statusCode": problem.status().as_u16(),
        "headers": { "content-type": "application/problem+json" },
        "body": problem.body().to_string(),
    })
}

impl WebSocketEvent {
    /// The token of a `$connect`: the `Authorization: Bearer` header, else the one `access_token`
    /// query parameter.
    fn token(&self) -> Result<String, AuthError> {
        let header = self
            .headers
            .iter()
            .flatten()
            .find(|(name, _)| name.eq_ignore_ascii_case("authorization"))
            .map(|(_, value)| value.trim());
        if let Some(value) = header {
            let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
            if scheme.eq_ignore_ascii_case("bearer") {
                let token = token.trim();
                if token.is_empty() {
                    return Err(AuthError::Malformed("empty bearer token".into()));
                }
                return Ok(token.to_owned());
            }
        }
        let all: Vec<&String> = match (&self.multi_value_query_string_parameters, &self.query_string_parameters) {
            (Some(multi), _) => multi.get("access_token").into_iter().flatten().collect(),
            (None, Some(single)) => single.get("access_token").into_iter().collect(),
            (None, None) => Vec::new(),
        };
        match all.as_slice() {
            [] => Err(AuthError::Missing),
            [token] if token.trim().is_empty() => Err(AuthError::Malformed("empty access_token".into())),
            [token] => Ok(token.trim().to_owned()),
            _ => Err(AuthError::Malformed("more than one access_token".into())),
        }
    }
}

/// Whether a frame reached its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivered {
    /// It did.
    Yes,
    /// The connection is gone and has been forgotten.
    Gone,
    /// It was too large for the API and was not sent.
    TooLarge,
}

/// Posts `text` to connection `id`, forgetting the connection when it is gone.
async fn post<A: ConnectionsApi>(
    api: &A,
    registry: &ConnectionRegistry,
    id: &str,
    text: &str,
) -> Result<Delivered, Failure> {
    match api.post(id, text).await? {
        PostOutcome::Sent => Ok(Delivered::Yes),
        PostOutcome::TooLarge => Ok(Delivered::TooLarge),
        PostOutcome::Gone => {
            tracing::info!(connection = id, "connection gone; forgetting it");
            if let Err(error) = registry.disconnect(id).await {
                // Its rows expire by themselves; the next post finds it gone again.
                tracing::warn!(connection = id, %error, "could not forget a gone connection");
            }
            Ok(Delivered::Gone)
        }
    }
}

/// Posts a frame other than `change`.
async fn post_frame<A: ConnectionsApi>(
    api: &A,
    registry: &ConnectionRegistry,
    id: &str,
    frame: &ServerFrame,
) -> Result<Delivered, Failure> {
    let text = frame
        .render()
        .map_err(|e| Failure::permanent(format!("rendering a realtime frame: {e}")))?;
    post(api, registry, id, text.as_str()).await
}

/// The WebSocket routes: `$connect`, `$disconnect` and the client's frames.
#[derive(Debug, Clone)]
pub struct RealtimeRoutes<S, V, A, K> {
    store: S,
    verifier: V,
    registry: ConnectionRegistry,
    api: A,
    clock: K,
}

impl<S: EventStore, V: IdentityVerifier, A: ConnectionsApi, K: Clock> RealtimeRoutes<S, V, A, K> {
    /// Routes replaying from `store`, verifying tokens with `verifier`, recording connections in
    /// `registry` and answering them through `api`.
    pub fn new(store: S, verifier: V, registry: ConnectionRegistry, api: A, clock: K) -> Self {
        Self {
            store,
            verifier,
            registry,
            api,
            clock,
        }
    }

    /// The event store the routes replay from.
    pub fn store(&self) -> &S {
        &self.store
    }

    async fn connect(&self, event: &WebSocketEvent) -> Value {
        let id = &event.request_context.connection_id;
        let verified = match event.token() {
            Ok(token) => self.verifier.verify(&token).await,
            Err(error) => Err(error),
        };
        let principal = match verified {
            Ok(principal) => principal,
            Err(error) => return refusal(&auth_problem(&error)),
        };
        // The HTTP functions' gate asks the same marker; an erased user's connection is never recorded.
        match self.store.erased(&principal.user).await {
            Ok(None) => {}
            Ok(Some(_)) => {
                tracing::info!(connection = %id, user = %principal.user, "refused: the account was erased");
                return refusal(&Problem::account_erased());
            }
            Err(error) => {
                let failure = Failure::from(error);
                tracing::error!(connection = %id, error = %failure, "could not ask whether the account was erased");
                return refusal(&Problem::unavailable(&failure));
            }
        }
        match self.registry.connect(id, &principal.user, self.clock.now()).await {
            Ok(Registered::Recorded) => {
                tracing::info!(connection = %id, user = %principal.user, "connected");
                status(200)
            }
            Ok(Registered::TooMany) => refusal(&Problem::rate_limited(1)),
            Err(error) => {
                tracing::error!(connection = %id, %error, "could not record the connection");
                refusal(&Problem::unavailable(&error))
            }
        }
    }

    async fn disconnect(&self, event: &WebSocketEvent) -> Value {
        let id = &event.request_context.connection_id;
        match self.registry.disconnect(id).await {
            Ok(owner) => {
                tracing::info!(connection = %id, user = ?owner.map(|u| u.to_string()), "disconnected");
                status(200)
            }
            Err(error) => {
                // Its rows expire by themselves; the fan-out forgets it at its first `410`.
                tracing::warn!(connection = %id, %error, "could not forget the connection");
                status(500)
            }
        }
    }

    async fn message(&self, event: &WebSocketEvent) -> Value {
        let id = &event.request_context.connection_id;
        let answered = match self.frame_of(event) {
            Err(detail) => post_frame(&self.api, &self.registry, id, &ServerFrame::invalid(detail))
                .await
                .map(|_| ()),
            Ok(ClientFrame::Ping) => post_frame(&self.api, &self.registry, id, &ServerFrame::Pong)
                .await
                .map(|_| ()),
            Ok(ClientFrame::Resume { since }) => self.resume(id, since.as_deref()).await,
        };
        match answered {
            Ok(()) => status(200),
            Err(error) => {
                tracing::error!(connection = %id, route = ?event.request_context.route_key, %error, "could not answer a frame");
                status(500)
            }
        }
    }

    /// The client frame an event carries, or the detail of the `error` frame to answer with.
    fn frame_of(&self, event: &WebSocketEvent) -> Result<ClientFrame, String> {
        if event.is_base64_encoded {
            return Err("frames are JSON text, not binary".to_owned());
        }
        let body = event.body.as_deref().unwrap_or_default();
        if body.len() > MAX_CLIENT_FRAME {
            return Err(format!("frame too large: at most {MAX_CLIENT_FRAME} bytes"));
        }
        ClientFrame::parse(body)
    }

    /// `resume`: go live, replay the feed after `since` (the head when absent), then `ready`.
    ///
    /// Going live comes first: a change committed before it is at or below the head read after it,
    /// so the replay sends it; the fan-out of any later change sees the connection live.
    async fn resume(&self, id: &str, since: Option<&str>) -> Result<(), Failure> {
        let Ok(since) = since.map(|cursor| parse_seq(Some(cursor))).transpose() else {
            let frame = ServerFrame::invalid("invalid cursor: since must be a /v1/sync cursor or a frame's cursor");
            return post_frame(&self.api, &self.registry, id, &frame).await.map(|_| ());
        };
        let Some(owner) = self.registry.owner_of(id, self.clock.now()).await? else {
            tracing::warn!(
                connection = id,
                "a frame from an unknown or expired connection; closing it"
            );
            return self.api.close(id).await;
        };
        if !self.registry.follow(id, &owner).await? {
            return Ok(());
        }
        let head = match self.store.last_seq(&owner).await {
            Ok(head) => head,
            Err(error) => return self.store_failed(id, &error).await,
        };
        let start = match since {
            None => head,
            Some(since) if since > head => {
                let frame = ServerFrame::invalid("invalid cursor: it is past the end of this user's feed");
                return post_frame(&self.api, &self.registry, id, &frame).await.map(|_| ());
            }
            Some(since) if head.0 - since.0 > MAX_REPLAY => {
                return post_frame(&self.api, &self.registry, id, &ServerFrame::behind(since))
                    .await
                    .map(|_| ());
            }
            Some(since) => since,
        };
        let Some(last) = self.replay(id, &owner, start, head).await? else {
            return Ok(());
        };
        post_frame(&self.api, &self.registry, id, &ServerFrame::ready(last))
            .await
            .map(|_| ())
    }

    /// Posts the changes after `start` up to `head`; the last seq sent, or `None` when the replay
    /// stopped (the connection is gone, or the client was told to catch up or resume again).
    async fn replay(&self, id: &str, owner: &UserId, start: Seq, head: Seq) -> Result<Option<Seq>, Failure> {
        let mut last = start;
        while last < head {
            let page = usize::try_from((head.0 - last.0).min(REPLAY_PAGE)).unwrap_or(1);
            let events = match self.store.read_feed(owner, last, page).await {
                Ok(events) if !events.is_empty() => events,
                Ok(_) => {
                    self.store_failed(id, &"the feed ended before its head").await?;
                    return Ok(None);
                }
                Err(error) => {
                    self.store_failed(id, &error).await?;
                    return Ok(None);
                }
            };
            for event in &events {
                let frame =
                    change_frame(event).map_err(|e| Failure::permanent(format!("rendering a change frame: {e}")))?;
                match post(&self.api, &self.registry, id, frame.as_str()).await? {
                    Delivered::Yes => last = event.seq,
                    Delivered::Gone => return Ok(None),
                    Delivered::TooLarge => {
                        // The client fetches this change with `/v1/sync`, then resumes.
                        post_frame(&self.api, &self.registry, id, &ServerFrame::behind(last)).await?;
                        return Ok(None);
                    }
                }
            }
        }
        Ok(Some(last))
    }

    /// Tells the client that the feed could not be read and that it must resume again.
    async fn store_failed(&self, id: &str, error: &(dyn std::fmt::Display + Sync)) -> Result<(), Failure> {
        tracing::error!(connection = id, %error, "realtime replay failed");
        let frame = ServerFrame::Error {
            code: "internal",
            detail: "the server could not read the feed; resume again".to_owned(),
        };
        post_frame(&self.api, &self.registry, id, &frame).await.map(|_| ())
    }
}

/// The fan-out: each change of a stream batch to the live connections of its owner.
#[derive(Debug, Clone)]
pub struct FanOut<A, K> {
    registry: ConnectionRegistry,
    api: A,
    clock: K,
}

impl<A: ConnectionsApi, K: Clock> FanOut<A, K> {
    /// A fan-out listing connections in `registry` and posting through `api`.
    pub fn new(registry: ConnectionRegistry, api: A, clock: K) -> Self {
        Self { registry, api, clock }
    }

    /// Posts `event`'s change frame to `connections`; the ones that turned out gone are removed.
    async fn deliver(&self, event: &StoredEvent, connections: &mut Vec<String>) -> Result<(), Failure> {
        let frame = change_frame(event).map_err(|e| Failure::permanent(format!("rendering a change frame: {e}")))?;
        let outcomes = join_all(connections.iter().map(|id| async {
            let outcome = post(&self.api, &self.registry, id, frame.as_str()).await?;
            if outcome == Delivered::TooLarge {
                // Over API Gateway's message limit: the client fetches it with `/v1/sync`.
                let before = Seq(event.seq.0.saturating_sub(1));
                post_frame(&self.api, &self.registry, id, &ServerFrame::behind(before)).await?;
            }
            Ok::<_, Failure>((id.clone(), outcome))
        }))
        .await;
        let mut first_failure = None;
        let mut gone = Vec::new();
        for outcome in outcomes {
            match outcome {
                Ok((id, Delivered::Gone)) => gone.push(id),
                Ok(_) => {}
                Err(failure) => {
                    first_failure.get_or_insert(failure);
                }
            }
        }
        connections.retain(|id| !gone.contains(id));
        first_failure.map_or(Ok(()), Err)
    }
}

impl<A: ConnectionsApi, K: Clock> BatchHandler for FanOut<A, K> {
    async fn handle(&self, events: &[StoredEvent]) -> Result<(), BatchFailure> {
        // One listing per owner per batch: every event of the batch committed before the batch began,
        // so a connection that goes live after the listing replays them from the table.
        let now = self.clock.now();
        let mut listed: HashMap<UserId, Vec<String>> = HashMap::new();
        for (index, event) in events.iter().enumerate() {
            let fail = |failure| BatchFailure { index, failure };
            if !listed.contains_key(&event.owner) {
                let connections = self.registry.following(&event.owner, now).await.map_err(fail)?;
                listed.insert(event.owner.clone(), connections);
            }
            let Some(connections) = listed.get_mut(&event.owner) else {
                continue;
            };
            if connections.is_empty() {
                continue;
            }
            self.deliver(event, connections).await.map_err(fail)?;
        }
        Ok(())
    }
}

/// The realtime function: the WebSocket routes and the fan-out, in one handler.
#[derive(Debug, Clone)]
pub struct RealtimeHandler<S, V, A, K, D> {
    routes: RealtimeRoutes<S, V, A, K>,
    stream: StreamConsumer<D, SkipErased<S, FanOut<A, K>>>,
}

impl<S, V, A, K, D> RealtimeHandler<S, V, A, K, D>
where
    S: EventStore,
    V: IdentityVerifier,
    A: ConnectionsApi,
    K: Clock,
    D: RecordDecoder,
{
    /// A handler answering WebSocket events with `routes`, and stream batches by decoding their records
    /// with `decoder` and posting the changes with `fan_out`, except those of erased owners: a batch
    /// delivered again after its owner's erasure reaches none of the connections they still had open.
    pub fn new(routes: RealtimeRoutes<S, V, A, K>, decoder: D, fan_out: FanOut<A, K>) -> Self {
        let stream = StreamConsumer::new(decoder, SkipErased::new(routes.store().clone(), fan_out));
        Self { routes, stream }
    }

    /// Answers one invocation: a route answer for a WebSocket event, `batchItemFailures` for a batch.
    ///
    /// # Errors
    /// [`InvocationError`] for a payload of neither kind, or a batch whose failed record cannot be
    /// named; the function then fails and Lambda retries the whole invocation.
    pub async fn handle(&self, payload: &str) -> Result<Value, InvocationError> {
        if let Some(batch) = stream_batch(payload) {
            let answer = self.stream.handle(&batch?).await?;
            return serde_json::to_value(answer).map_err(InvocationError::Answer);
        }
        let event: WebSocketEvent = serde_json::from_str(payload).map_err(InvocationError::Unrecognized)?;
        Ok(match event.request_context.event_type.as_str() {
            "CONNECT" => self.routes.connect(&event).await,
            "DISCONNECT" => self.routes.disconnect(&event).await,
            "MESSAGE" => self.routes.message(&event).await,
            other => {
                tracing::warn!(event_type = other, "unknown WebSocket event type");
                status(400)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(mut value: Value) -> Value {
        value["requestContext"] = json!({"eventType": "CONNECT", "connectionId": "c="});
        value
    }

    #[test]
    fn the_token_comes_from_the_header_or_one_access_token() {
        let token = |value: Value| serde_json::from_value::<WebSocketEvent>(ctx(value)).unwrap().token();
        assert_eq!(
            token(json!({"headers": {"authorization": "Bearer abc"}})),
            Ok("abc".into())
        );
        assert_eq!(
            token(
                json!({"headers": {"Authorization": "bearer abc"}, "queryStringParameters": {"access_token": "def"}})
            ),
            Ok("abc".into())
        );
        assert_eq!(
            token(
                json!({"queryStringParameters": {"access_token": "def"}, "multiValueQueryStringParameters": {"access_token": ["def"]}})
            ),
            Ok("def".into())
        );
        assert_eq!(
            token(json!({"queryStringParameters": {"access_token": "def"}})),
            Ok("def".into())
        );
        assert_eq!(
            token(json!({"headers": {"Host": "x"}, "queryStringParameters": null})),
            Err(AuthError::Missing)
        );
        assert!(matches!(
            token(json!({"multiValueQueryStringParameters": {"access_token": ["a", "b"]}})),
            Err(AuthError::Malformed(_))
        ));
        assert!(matches!(
            token(json!({"queryStringParameters": {"access_token": " "}})),
            Err(AuthError::Malformed(_))
        ));
        assert!(matches!(
            token(json!({"headers": {"Authorization": "Bearer "}})),
            Err(AuthError::Malformed(_))
        ));
    }

    #[test]
    fn settings_name_every_missing_variable() {
        let none = RealtimeSettings::from_vars(|_| None).unwrap_err();
        assert_eq!(none.0.len(), 2, "{none}");
        let vars = HashMap::from([
            ("ROOKERY_CONNECTIONS_TABLE", "conns"),
            (
                "ROOKERY_REALTIME_ENDPOINT",
                "https://abc.execute-api.eu-west-1.amazonaws.com/live",
            ),
        ]);
        let settings = RealtimeSettings::from_vars(|name| vars.get(name).map(|v| (*v).to_owned())).unwrap();
        assert_eq!(settings.connections_table, "conns");
        let bad =
            RealtimeSettings::from_vars(|name| (name == "ROOKERY_REALTIME_ENDPOINT").then(|| "wss://x".to_owned()))
                .unwrap_err();
        assert_eq!(bad.0.len(), 2, "{bad}");
    }
}
