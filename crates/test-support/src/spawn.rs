//! Any Herald service, built from its configuration and run inside the test's own process until stopped: the one
//! harness every crate's tests start their service with (`spawn::<App>(config)`), through the same
//! [`Service`] trait that each binary's `main` runs.

use std::marker::PhantomData;
use std::time::Duration;

use anyhow::{Context, Result};
use herald_platform::service::{self, Service};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long [`Spawned::stop`] waits for the service to return after its shutdown. Above the services' own
/// drains (replay waits up to 15 s for the events in flight), below a test's patience.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// A service running in this process, stopped (and checked to stop cleanly) with [`Spawned::stop`].
pub struct Spawned<S: Service> {
    /// The port it listens on (its HTTP API, or its health server).
    pub port: u16,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    shutdown: CancellationToken,
    running: JoinHandle<std::result::Result<(), service::Error>>,
    /// Which service it is, for the messages of [`Spawned::stop`].
    service: PhantomData<fn() -> S>,
}

/// Builds `S` from `config` and runs it until [`Spawned::stop`] (or a failure of its own).
pub async fn spawn<S: Service>(config: S::Config) -> Result<Spawned<S>> {
    Ok(spawn_with(config, |_| ()).await?.0)
}

/// [`spawn`], with what `look` takes from the built service before it runs (a handle on its statistics, say).
pub async fn spawn_with<S: Service, T>(
    config: S::Config,
    look: impl FnOnce(&S) -> T,
) -> Result<(Spawned<S>, T)> {
    let service = S::build(config)
        .await
        .with_context(|| format!("building {}", S::NAME))?;
    let port = service.port();
    let seen = look(&service);
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(service.run_until_stopped(shutdown.clone()));
    let spawned = Spawned {
        port,
        base: format!("http://127.0.0.1:{port}"),
        shutdown,
        running,
        service: PhantomData,
    };
    Ok((spawned, seen))
}

impl<S: Service> std::fmt::Debug for Spawned<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spawned")
            .field("service", &S::NAME)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl<S: Service> Spawned<S> {
    /// `path` (with its query) on the service.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The token whose cancellation stops the service, as SIGTERM does.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Whether the service has returned (it failed, or was stopped).
    pub fn is_finished(&self) -> bool {
        self.running.is_finished()
    }

    /// Stops it as SIGTERM would and waits until it returned, within [`STOP_TIMEOUT`]; its error, if it failed.
    pub async fn stop(self) -> Result<()> {
        self.shutdown.cancel();
        tokio::time::timeout(STOP_TIMEOUT, self.running)
            .await
            .with_context(|| format!("{} did not stop within {STOP_TIMEOUT:?}", S::NAME))?
            .with_context(|| format!("{} panicked", S::NAME))?
            .with_context(|| format!("{} failed", S::NAME))
    }
}
