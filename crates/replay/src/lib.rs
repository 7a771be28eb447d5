//! `herald-replay`: brings dead letters back.
//!
//! `POST /replay-dead-letter` selects dead letters by a filter (event ids, channel, event type, priority, a time
//! range on when they died), oldest first, and puts each back on the lane of its priority as a first attempt:
//! attempt budget reset, replay counter bumped, a `replayed` entry in its timeline. It goes at a configured pace
//! so that a large replay does not swamp the dispatchers, and answers once the whole replay is done. A dry run
//! reports what would be replayed and changes nothing. `GET /api/dead-letters` lists the same selection a page
//! at a time.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use herald_platform::store::{retention, EventStore};
use herald_platform::{kafka, mongo};
use mongodb::Database;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub mod config;
pub mod error;
pub mod openapi;
pub mod params;
mod replay;
mod routes;

pub use config::Config;
pub use error::{ApiError, Error, Result};
pub use replay::{StopCause, Stopped};

use replay::Replayer;

/// How long shutdown waits for replays to finish the events in flight, and then for the producer's queue.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the ping before creating indexes may take.
const INDEX_PING_TIMEOUT: Duration = Duration::from_secs(2);

/// What every handler shares: one MongoDB client and one Kafka producer per process, cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    db: Database,
    store: EventStore,
    replayer: Replayer,
    /// The running replays, which shutdown waits for.
    tasks: TaskTracker,
    /// Set once the indexes exist. They only make reads fast, so requests are served without them.
    indexes_ready: Arc<AtomicBool>,
    /// How long events are kept; the sweeper deletes what is older.
    retention: retention::Retention,
}

impl AppState {
    /// Creates the indexes unless this process has done so already; called at startup and, until it succeeds,
    /// before each request. A ping comes first so that a MongoDB that is away costs seconds, not minutes.
    async fn ensure_indexes(&self) {
        if self.indexes_ready.load(Ordering::Acquire) {
            return;
        }
        let created = async {
            mongo::ping(&self.db, INDEX_PING_TIMEOUT).await?;
            EventStore::ensure_indexes(&self.db).await?;
            EventStore::ensure_dead_letter_index(&self.db).await?;
            EventStore::ensure_retention_indexes(&self.db).await
        };
        match created.await {
            Ok(()) => {
                self.indexes_ready.store(true, Ordering::Release);
                tracing::info!("mongodb indexes are in place");
            }
            Err(e) => tracing::warn!(error = %e, "cannot create the mongodb indexes yet"),
        }
    }
}

/// A built service: listening, not yet serving.
#[derive(Debug)]
pub struct App {
    listener: TcpListener,
    address: SocketAddr,
    router: Router,
    state: AppState,
}

impl App {
    /// Connects to MongoDB and Kafka (lazily: neither needs to be up), creates the indexes when MongoDB answers,
    /// and binds the listener.
    pub async fn build(config: Config) -> Result<Self> {
        let db = mongo::connect(&config.mongo, "herald-replay").await?;
        let producer = kafka::build_producer(&config.kafka)?;
        let store = EventStore::new(&db);
        let state = AppState {
            replayer: Replayer::new(
                store.clone(),
                producer,
                config.kafka.topics(),
                config.rate_per_sec,
            ),
            store,
            db,
            tasks: TaskTracker::new(),
            indexes_ready: Arc::new(AtomicBool::new(false)),
            retention: config.retention,
        };
        state.ensure_indexes().await;
        config.http.auth.warn_if_off("herald-replay");
        let router = routes::router(state.clone(), &config);
        let address = format!("{}:{}", config.host, config.port);
        let listener = TcpListener::bind(&address)
            .await
            .map_err(|source| Error::Bind {
                address: address.clone(),
                source,
            })?;
        let address = listener
            .local_addr()
            .map_err(|source| Error::Bind { address, source })?;
        Ok(Self {
            listener,
            address,
            router,
            state,
        })
    }

    /// The port the service listens on (the one the system picked, when configured with 0).
    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// Serves requests until `shutdown` is cancelled; then stops accepting connections, stops the running replays
    /// from taking more dead letters, waits for the events they have in flight, and flushes the producer.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<()> {
        tracing::info!(address = %self.address, "herald-replay listening");
        let store = self.state.store.clone();
        let pruner = tokio::spawn(retention::prune_periodically(
            "replay claims",
            retention::PRUNE_EVERY,
            shutdown.child_token(),
            move || {
                let store = store.clone();
                async move { store.prune_replay_claims(retention::CLAIM_RETENTION).await }
            },
        ));
        let sweeper = tokio::spawn(retention::sweep_periodically(
            self.state.store.clone(),
            self.state.retention,
            retention::PRUNE_EVERY,
            shutdown.child_token(),
        ));
        let stopping = self.state.replayer.stopping();
        let signal = async move {
            shutdown.cancelled().await;
            // Before the server waits for the requests in flight: a replay answers as soon as it has stopped.
            stopping.cancel();
        };
        let served = axum::serve(self.listener, self.router)
            .with_graceful_shutdown(signal)
            .await;
        pruner.abort();
        sweeper.abort();
        // Also when the server failed on its own, and for replays whose request is gone (timed out).
        self.state.replayer.stop();
        self.state.tasks.close();
        if tokio::time::timeout(DRAIN_TIMEOUT, self.state.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("replays still running at shutdown; their claimed events stay in the outbox for ingest's sweeper");
        }
        self.state.replayer.flush(DRAIN_TIMEOUT).await;
        tracing::info!("herald-replay stopped");
        served.map_err(Error::Serve)
    }
}
