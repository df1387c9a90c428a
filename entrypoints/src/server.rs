//! The HTTP server both `rookery serve` backends run: binding the address, serving the router in the
//! background, and stopping it gracefully or noticing that it failed.
//!
//! What runs beside the server (the memory feed driver, the AWS stream pollers) differs by backend, so
//! each composition root stops its own background work after the server has stopped.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::http::{ApiConfig, RateLimit};

/// Why the address could not be listened on; each backend's start error has these two variants.
#[derive(Debug)]
pub(crate) enum BindError {
    /// The address is taken by another process.
    AddrInUse(SocketAddr),
    /// The address cannot be listened on for another reason.
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
}

/// Binds `addr` and returns the listener with the address it really got (port 0 picks a free one).
pub(crate) async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), BindError> {
    let listener = TcpListener::bind(addr).await.map_err(|source| match source.kind() {
        io::ErrorKind::AddrInUse => BindError::AddrInUse(addr),
        _ => BindError::Listen { addr, source },
    })?;
    let bound = listener
        .local_addr()
        .map_err(|source| BindError::Listen { addr, source })?;
    Ok((listener, bound))
}

/// The router's settings from the server's options: everything else keeps its default.
pub(crate) fn api_config(rate_limit: RateLimit, request_timeout: Duration) -> ApiConfig {
    ApiConfig {
        rate_limit,
        request_timeout,
        ..ApiConfig::default()
    }
}

/// A router served on a listener in a background task until [`Serving::stop`].
#[derive(Debug)]
pub(crate) struct Serving {
    shutdown: watch::Sender<bool>,
    server: JoinHandle<io::Result<()>>,
}

impl Serving {
    /// Starts serving `router` on `listener`.
    pub(crate) fn spawn(listener: TcpListener, router: Router) -> Self {
        let (shutdown, mut stopped) = watch::channel(false);
        let server = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stopped.wait_for(|stop| *stop).await;
                })
                .await
        });
        Self { shutdown, server }
    }

    /// Stops accepting connections and waits for in-flight requests to finish.
    ///
    /// # Errors
    /// The server's I/O error, if it failed while serving.
    pub(crate) async fn stop(self) -> io::Result<()> {
        self.shutdown.send_replace(true);
        match self.server.await {
            Ok(result) => result,
            Err(join) => Err(io::Error::other(join)),
        }
    }

    /// Serves until `signal` completes, then stops gracefully; returns early if the server fails.
    ///
    /// # Errors
    /// The server's I/O error, if it failed while serving.
    pub(crate) async fn run_until(mut self, signal: impl Future<Output = ()>) -> io::Result<()> {
        tokio::select! {
            () = signal => {
                tracing::info!("shutting down: finishing in-flight requests");
                self.stop().await
            }
            // The server task only ends on its own when it failed.
            finished = &mut self.server => {
                tracing::error!("the server stopped unexpectedly");
                finished.unwrap_or_else(|join| Err(io::Error::other(join)))
            }
        }
    }
}
