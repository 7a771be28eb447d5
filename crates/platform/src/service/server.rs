//! A service's server, bound while it is built and served as a task of its [`Supervisor`]: [`HttpServer`] (the
//! routes of an HTTP service: ingest, replay, query) and [`HealthServer`] (the health routes of a service whose
//! only HTTP is health: dispatch, retry, alert).

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::http::StatusCode;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::timeout::TimeoutLayer;

use super::{BindError, Supervisor};
use crate::config::Listen;
use crate::health::{self, Readiness};
use crate::kafka::watch;

/// Longest a health, readiness or metrics request may take.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds `host:port` (port 0: one the system picks); returns the listener and the address it got.
pub async fn bind(host: &str, port: u16) -> Result<(TcpListener, SocketAddr), BindError> {
    let address = format!("{host}:{port}");
    let listener = TcpListener::bind(&address)
        .await
        .map_err(|source| BindError {
            address: address.clone(),
            source,
        })?;
    let bound = listener
        .local_addr()
        .map_err(|source| BindError { address, source })?;
    Ok((listener, bound))
}

/// An HTTP service's server: listening, not yet serving.
#[derive(Debug)]
pub struct HttpServer {
    listener: TcpListener,
    address: SocketAddr,
    router: Router,
}

impl HttpServer {
    /// Binds `listen` (port 0: one the system picks) for `router`, which holds every route and its middleware.
    pub async fn bind(listen: &Listen, router: Router) -> Result<Self, BindError> {
        let (listener, address) = bind(&listen.host, listen.port).await?;
        Ok(Self {
            listener,
            address,
            router,
        })
    }

    /// The port it listens on (the one the system picked, when bound to 0).
    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// Serves on `tasks` (the task `http server`) until `stopping` completes, then stops accepting connections and
    /// finishes the requests in flight. `service` names it in the log.
    pub fn spawn(
        self,
        service: &'static str,
        tasks: &mut Supervisor,
        stopping: impl Future<Output = ()> + Send + 'static,
    ) {
        tracing::info!(address = %self.address, "{service} listening");
        let server = axum::serve(self.listener, self.router).with_graceful_shutdown(stopping);
        tasks.spawn_until_stopped("http server", async move { server.await });
    }
}

/// The health server of a service whose only HTTP is health (`/api/health`, `/api/ready`, `/metrics`): listening,
/// not yet serving.
#[derive(Debug)]
pub struct HealthServer {
    listener: TcpListener,
    port: u16,
    readiness: Readiness,
}

impl HealthServer {
    /// Binds `listen` (port 0: one the system picks); `/api/ready` checks `readiness`.
    pub async fn bind(listen: &Listen, readiness: Readiness) -> Result<Self, BindError> {
        let (listener, address) = bind(&listen.host, listen.port).await?;
        Ok(Self {
            listener,
            port: address.port(),
            readiness,
        })
    }

    /// The port it listens on (the one the system picked, when bound to 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves on `tasks` (the task `health server`) until their stop token is cancelled, each request bounded by
    /// [`HEALTH_TIMEOUT`]. `/api/health` answers with `service`; `/api/ready` is also 503 while one of the
    /// `consumers` is stuck or being rebuilt.
    pub fn spawn(self, service: &'static str, consumers: watch::Health, tasks: &mut Supervisor) {
        let router = health::router_with_consumers(service, self.readiness, consumers);
        tasks.spawn_until_stopped(
            "health server",
            serve_health(self.listener, router, tasks.stop_token()),
        );
    }
}

/// Serves `router` (the health routes) on `listener` until `stop`, each request bounded by [`HEALTH_TIMEOUT`].
async fn serve_health(
    listener: TcpListener,
    router: Router,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let router = router.layer(TimeoutLayer::with_status_code(
        StatusCode::REQUEST_TIMEOUT,
        HEALTH_TIMEOUT,
    ));
    axum::serve(listener, router)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
}
