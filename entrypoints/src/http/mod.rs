//! The HTTP API of `API.md`: route sets over the services of `rookery_ports::service`, behind one edge.
//!
//! The same handlers serve `rookery serve` (memory adapters, development identity provider) and the
//! Lambda functions behind API Gateway (AWS adapters, Cognito). [`Api`] builds the router from the
//! route sets a deployment serves; deployments add their own routes (the local server's development
//! tokens and media URLs, in `crate::local`) with [`Api::merge_public`] and [`Api::merge_authenticated`]
//! so that they get the same edge: request ids, problem documents, deadline, authentication and rate
//! limiting. Nothing here knows an adapter: every handler is generic over the ports.

pub mod account;
pub mod auth;
pub mod dto;
pub mod edge;
pub mod extract;
mod items;
pub mod openapi;
pub mod problem;
pub mod rate_limit;
pub mod request_id;
mod routes;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::from_fn_with_state;
use axum::routing::{delete, get, post, put};
use rookery_ports::{
    AccountService, Clock, DeviceService, EraseAccount, ErasureService, EventStore, IdSource, IdentityDirectory,
    IdentityVerifier, ItemService, MediaService, MediaStore, MessageService, NoDirectory, PushGateway, SearchIndex,
    SearchService, ServiceConfig, SyncService, Writer,
};
use tower_http::limit::RequestBodyLimitLayer;

pub use auth::{Authed, ErasureMarkers, Gate};
pub use problem::{Code, Problem};
pub use rate_limit::{RateLimit, RateLimiter};

/// The largest request body the API reads (media uploads to the local store have their own limit).
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// How long a request may run before it is answered `503`.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Settings of the HTTP edge.
#[derive(Debug, Clone, Copy)]
pub struct ApiConfig {
    /// The per-user rate limit.
    pub rate_limit: RateLimit,
    /// How long a request may run.
    pub request_timeout: Duration,
    /// The largest request body, in bytes.
    pub body_limit: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            rate_limit: RateLimit::default(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            body_limit: DEFAULT_BODY_LIMIT,
        }
    }
}

/// Builds the router: the contract's route sets a deployment serves, plus whatever it adds, behind one
/// edge (request ids, problem documents, deadline, authentication and rate limiting).
///
/// Each route set ([`item_routes`], [`sync_routes`], [`device_routes`], [`media_routes`],
/// [`search_routes`], [`message_routes`]) holds only the service its handlers call, so a Lambda function
/// composes only the services of the routes it serves, and its binary holds no other handler's code.
#[derive(Debug)]
pub struct Api<V: IdentityVerifier> {
    verifier: V,
    markers: Option<ErasureMarkers>,
    config: ApiConfig,
    public: Router,
    authenticated: Router,
}

impl<V: IdentityVerifier> Api<V> {
    /// An API with no routes yet, verifying tokens with `verifier`.
    pub fn new(verifier: V, config: ApiConfig) -> Self {
        Self {
            verifier,
            markers: None,
            config,
            public: Router::new(),
            authenticated: Router::new(),
        }
    }

    /// Answers `410 account_erased` to every authenticated request of a user `store` knows as erased.
    #[must_use]
    pub fn refusing_erased<S: EventStore>(mut self, store: S) -> Self {
        self.markers = Some(ErasureMarkers::of(store));
        self
    }

    /// Adds routes that need no token (they bring their own body limits).
    #[must_use]
    pub fn merge_public(mut self, routes: Router) -> Self {
        self.public = self.public.merge(routes);
        self
    }

    /// Adds routes behind the bearer-token gate, with the API's body limit and deadline; handlers read
    /// the caller with [`Authed`].
    #[must_use]
    pub fn merge_authenticated(mut self, routes: Router) -> Self {
        self.authenticated = self.authenticated.merge(routes);
        self
    }

    /// The finished router.
    pub fn into_router(self) -> Router {
        let limit = self.config.body_limit;
        let gate = Gate::with_markers(self.verifier, RateLimiter::new(self.config.rate_limit), self.markers);
        let authenticated = self
            .authenticated
            .route_layer(from_fn_with_state(gate, auth::authenticate::<V>))
            .layer(DefaultBodyLimit::max(limit))
            .layer(RequestBodyLimitLayer::new(limit))
            .layer(from_fn_with_state(self.config.request_timeout, edge::deadline));
        Router::new()
            .route("/healthz", get(routes::healthz))
            .merge(authenticated)
            .merge(self.public)
            .fallback(|| async { Problem::not_found() })
            .layer(axum::middleware::from_fn(edge::edge))
    }
}

/// Every service of the contract, for a deployment that serves all of it (`rookery serve`, tests).
#[derive(Debug, Clone)]
pub struct Services<S, C, I, X, P, M, D = NoDirectory> {
    /// Items, history and restore.
    pub items: ItemService<S, C, I>,
    /// The change feed.
    pub sync: SyncService<S>,
    /// Search.
    pub search: SearchService<X>,
    /// Messages.
    pub messages: MessageService<S, C, I>,
    /// Devices.
    pub devices: DeviceService<S, C, I, P>,
    /// Media.
    pub media: MediaService<S, C, I, M>,
    /// The caller's account: export.
    pub account: AccountService<S, C, I, M>,
    /// The caller's account: erasure.
    pub erasure: ErasureService<S, C, X, P, M, D>,
}

impl<S, C, I, X, P, M> Services<S, C, I, X, P, M>
where
    S: EventStore,
    C: Clock,
    I: IdSource,
    X: SearchIndex,
    P: PushGateway,
    M: MediaStore,
{
    /// Every service over one set of adapters and one configuration.
    pub fn new(store: S, clock: C, ids: I, index: X, push: P, media: M, config: ServiceConfig) -> Self {
        let max_query_chars = config.limits.max_query_chars;
        let writer = Writer::new(store.clone(), clock.clone(), ids, config);
        let erasure = ErasureService::new(store.clone(), clock.clone(), index.clone(), push.clone(), media.clone());
        let media = MediaService::new(writer.clone(), media);
        let account = AccountService::new(store.clone(), clock, media.clone());
        Self {
            items: ItemService::new(writer.clone()),
            sync: SyncService::new(store),
            search: SearchService::new(index, max_query_chars),
            messages: MessageService::new(writer.clone()),
            devices: DeviceService::new(writer.clone(), push),
            media,
            account,
            erasure,
        }
    }
}

impl<S, C, I, X, P, M, D> Services<S, C, I, X, P, M, D>
where
    S: EventStore,
    C: Clock,
    I: IdSource,
    X: SearchIndex,
    P: PushGateway,
    M: MediaStore,
    D: IdentityDirectory,
{
    /// The same services, an erasure deleting the user from `directory` too (the Cognito user pool);
    /// without it, the identity provider is taken to keep no user records Rookery administers.
    pub fn with_directory<D2: IdentityDirectory>(self, directory: D2) -> Services<S, C, I, X, P, M, D2> {
        Services {
            items: self.items,
            sync: self.sync,
            search: self.search,
            messages: self.messages,
            devices: self.devices,
            media: self.media,
            account: self.account,
            erasure: self.erasure.with_directory(directory),
        }
    }

    /// Every authenticated route of the contract.
    pub fn routes(&self) -> Router {
        item_routes(self.items.clone())
            .merge(sync_routes(self.sync.clone()))
            .merge(device_routes(self.devices.clone()))
            .merge(media_routes(self.media.clone()))
            .merge(search_routes(self.search.clone()))
            .merge(message_routes(self.messages.clone()))
            .merge(account_routes(self.account.clone()))
            .merge(erasure_routes(self.erasure.clone()))
    }

    /// The router with every route of the contract and `/openapi.json` (no development or local media
    /// routes), verifying tokens with `verifier`.
    pub fn router<V: IdentityVerifier>(&self, verifier: V, config: ApiConfig) -> Router {
        Api::new(verifier, config)
            .refusing_erased(self.erasure.store().clone())
            .merge_authenticated(self.routes())
            .merge_public(openapi_routes())
            .into_router()
    }
}

/// `GET /openapi.json`, which needs no token.
pub fn openapi_routes() -> Router {
    Router::new().route("/openapi.json", get(openapi::serve))
}

/// The item routes (Lambda function 1): items, history, restore and users' public items.
pub fn item_routes<S: EventStore, C: Clock, I: IdSource>(items: ItemService<S, C, I>) -> Router {
    Router::new()
        .route(
            "/v1/items/{collection}/{id}",
            put(items::put_item::<S, C, I>)
                .patch(items::patch_item::<S, C, I>)
                .get(items::get_item::<S, C, I>)
                .delete(items::delete_item::<S, C, I>),
        )
        .route("/v1/items/{collection}", get(items::list_items::<S, C, I>))
        .route("/v1/items/{collection}/{id}/history", get(items::history::<S, C, I>))
        .route(
            "/v1/items/{collection}/{id}/restore",
            post(items::restore_item::<S, C, I>),
        )
        .route(
            "/v1/users/{owner}/items/{collection}/{id}",
            get(items::get_public_item::<S, C, I>),
        )
        .with_state(Arc::new(items))
}

/// The sync route (Lambda function 1).
pub fn sync_routes<S: EventStore>(sync: SyncService<S>) -> Router {
    Router::new()
        .route("/v1/sync", get(routes::sync::<S>))
        .with_state(Arc::new(sync))
}

/// The device routes (Lambda function 1).
pub fn device_routes<S: EventStore, C: Clock, I: IdSource, P: PushGateway>(
    devices: DeviceService<S, C, I, P>,
) -> Router {
    Router::new()
        .route("/v1/devices", get(routes::devices::<S, C, I, P>))
        .route(
            "/v1/devices/{device_id}",
            put(routes::register_device::<S, C, I, P>).delete(routes::remove_device::<S, C, I, P>),
        )
        .with_state(Arc::new(devices))
}

/// The media routes (Lambda function 1).
pub fn media_routes<S: EventStore, C: Clock, I: IdSource, M: MediaStore>(media: MediaService<S, C, I, M>) -> Router {
    Router::new()
        .route("/v1/media", post(routes::create_media::<S, C, I, M>))
        .route("/v1/media/{id}", get(routes::get_media::<S, C, I, M>))
        .with_state(Arc::new(media))
}

/// The account routes (Lambda function 1): the caller's export.
pub fn account_routes<S: EventStore, C: Clock, I: IdSource, M: MediaStore>(
    account: AccountService<S, C, I, M>,
) -> Router {
    Router::new()
        .route("/v1/me/export", get(account::export::<S, C, I, M>))
        .with_state(Arc::new(account))
}

/// The erasure route: `DELETE /v1/me`, erasing everything before answering ([`ErasureService`]) or
/// writing the marker for the rest to be finished later ([`rookery_ports::ErasureRequest`], function 1).
pub fn erasure_routes<E: EraseAccount>(erasure: E) -> Router {
    Router::new()
        .route("/v1/me", delete(account::erase::<E>))
        .with_state(Arc::new(erasure))
}

/// The search route (Lambda function 3).
pub fn search_routes<X: SearchIndex>(search: SearchService<X>) -> Router {
    Router::new()
        .route("/v1/search", get(routes::search::<X>))
        .with_state(Arc::new(search))
}

/// The message routes (Lambda function 4): sending and reading messages.
pub fn message_routes<S: EventStore, C: Clock, I: IdSource>(messages: MessageService<S, C, I>) -> Router {
    Router::new()
        .route(
            "/v1/messages",
            post(routes::send_message::<S, C, I>).get(routes::messages::<S, C, I>),
        )
        .with_state(Arc::new(messages))
}
