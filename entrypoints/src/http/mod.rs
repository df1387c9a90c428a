//! The HTTP API of `API.md`: one axum router, generic over the adapters and the identity verifier.
//!
//! The same router serves `rookery serve` (memory adapters, development identity provider) and the
//! Lambda functions behind API Gateway (AWS adapters, Cognito). [`Api`] builds it; deployments add their
//! own routes (development tokens, local media URLs) with [`Api::merge_public`] and
//! [`Api::merge_authenticated`] so that they get the same edge: request ids, problem documents,
//! deadline, authentication and rate limiting.

pub mod auth;
pub mod dev;
pub mod dto;
pub mod extract;
mod items;
pub mod local_media;
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
use axum::routing::{get, post, put};
use rookery_ports::{App, IdentityVerifier, Ports};
use tower_http::limit::RequestBodyLimitLayer;

pub use auth::{Authed, Gate};
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

/// Builds the router: the API's routes plus whatever a deployment adds.
#[derive(Debug)]
pub struct Api<P: Ports, V: IdentityVerifier> {
    app: Arc<App<P>>,
    gate: Arc<Gate<V>>,
    config: ApiConfig,
    /// The contract's authenticated routes this router serves.
    routes: Router<Arc<App<P>>>,
    public: Router,
    authenticated: Router,
}

impl<P: Ports, V: IdentityVerifier> Api<P, V> {
    /// The whole API over `app` (every route of the contract and `/openapi.json`), verifying tokens
    /// with `verifier`.
    pub fn new(app: App<P>, verifier: V, config: ApiConfig) -> Self {
        let routes = item_routes::<P>()
            .merge(search_routes::<P>())
            .merge(message_routes::<P>());
        Self::with_routes(app, verifier, config, routes).merge_public(openapi_routes())
    }

    /// The API over `app` with only `routes` of the contract (one of [`item_routes`], [`search_routes`]
    /// and [`message_routes`], or several merged), and no `/openapi.json` unless merged in with
    /// [`openapi_routes`]. A Lambda function is built this way, so that its binary holds the code of its
    /// own routes only: a handler that is never routed is never compiled in.
    pub fn with_routes(app: App<P>, verifier: V, config: ApiConfig, routes: Router<Arc<App<P>>>) -> Self {
        Self {
            app: Arc::new(app),
            gate: Gate::new(verifier, RateLimiter::new(config.rate_limit)),
            config,
            routes,
            public: Router::new(),
            authenticated: Router::new(),
        }
    }

    /// The application service the routes call.
    pub fn app(&self) -> &Arc<App<P>> {
        &self.app
    }

    /// Adds routes that need no token (they bring their own body limits).
    #[must_use]
    pub fn merge_public(mut self, routes: Router) -> Self {
        self.public = self.public.merge(routes);
        self
    }

    /// Adds routes behind the bearer-token gate; handlers read the caller with [`Authed`].
    #[must_use]
    pub fn merge_authenticated(mut self, routes: Router) -> Self {
        self.authenticated = self.authenticated.merge(routes);
        self
    }

    /// The finished router.
    pub fn into_router(self) -> Router {
        let limit = self.config.body_limit;
        let authenticated = self
            .routes
            .with_state(self.app)
            .merge(self.authenticated)
            .route_layer(from_fn_with_state(self.gate, auth::authenticate::<V>))
            .layer(DefaultBodyLimit::max(limit))
            .layer(RequestBodyLimitLayer::new(limit))
            .layer(from_fn_with_state(self.config.request_timeout, request_id::deadline));
        Router::new()
            .route("/healthz", get(routes::healthz))
            .merge(authenticated)
            .merge(self.public)
            .fallback(|| async { Problem::not_found() })
            .layer(axum::middleware::from_fn(request_id::edge))
    }
}

/// The router with only the contract's routes (no development or local media routes).
pub fn router<P: Ports, V: IdentityVerifier>(app: App<P>, verifier: V, config: ApiConfig) -> Router {
    Api::new(app, verifier, config).into_router()
}

/// `GET /openapi.json`, which needs no token.
pub fn openapi_routes() -> Router {
    Router::new().route("/openapi.json", get(openapi::serve))
}

/// Function 1's authenticated routes: items, users' public items, sync, devices and media.
pub fn item_routes<P: Ports>() -> Router<Arc<App<P>>> {
    Router::new()
        .route(
            "/v1/items/{collection}/{id}",
            put(items::put_item::<P>)
                .patch(items::patch_item::<P>)
                .get(items::get_item::<P>)
                .delete(items::delete_item::<P>),
        )
        .route("/v1/items/{collection}", get(items::list_items::<P>))
        .route("/v1/items/{collection}/{id}/history", get(items::history::<P>))
        .route("/v1/items/{collection}/{id}/restore", post(items::restore_item::<P>))
        .route(
            "/v1/users/{owner}/items/{collection}/{id}",
            get(items::get_public_item::<P>),
        )
        .route("/v1/sync", get(routes::sync::<P>))
        .route("/v1/devices", get(routes::devices::<P>))
        .route(
            "/v1/devices/{device_id}",
            put(routes::register_device::<P>).delete(routes::remove_device::<P>),
        )
        .route("/v1/media", post(routes::create_media::<P>))
        .route("/v1/media/{id}", get(routes::get_media::<P>))
}

/// Function 3's authenticated route: search.
pub fn search_routes<P: Ports>() -> Router<Arc<App<P>>> {
    Router::new().route("/v1/search", get(routes::search::<P>))
}

/// Function 4's authenticated routes: sending and reading messages.
pub fn message_routes<P: Ports>() -> Router<Arc<App<P>>> {
    Router::new().route(
        "/v1/messages",
        post(routes::send_message::<P>).get(routes::messages::<P>),
    )
}
