//! `herald-replay`: brings dead letters back.
//!
//! `POST /replay-dead-letter` selects dead letters by a filter (event ids, channel, event type, priority, a time
//! range on when they died), oldest first, and puts each back on the lane of its priority as a first attempt:
//! attempt budget reset, replay counter bumped, a `replayed` entry in its timeline. It goes at a configured pace
//! so that a large replay does not swamp the dispatchers, and answers once the whole replay is done. A dry run
//! reports what would be replayed and changes nothing. `GET /api/dead-letters` lists the same selection a page
//! at a time.

use std::time::Duration;

use herald_platform::kafka;
use herald_platform::lanes::{LanePublisher, OutboxSweeper};
use herald_platform::service::{self, HttpServer, IndexGate, Service, Supervisor};
use herald_platform::store::{retention, EventStore};
use mongodb::Database;
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

/// What every handler shares: one MongoDB client and one Kafka producer per process, cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    db: Database,
    store: EventStore,
    replayer: Replayer,
    /// The running replays, which shutdown waits for.
    tasks: TaskTracker,
    /// Open once the indexes exist. They only make reads fast, so requests are served without them.
    indexes: IndexGate,
    /// How long events are kept; the sweeper deletes what is older.
    retention: retention::Retention,
}

/// A built service: listening, not yet serving.
#[derive(Debug)]
pub struct App {
    server: HttpServer,
    state: AppState,
    sweeper: OutboxSweeper,
}

impl Service for App {
    const NAME: &'static str = "herald-replay";
    type Config = Config;

    /// Connects to MongoDB and Kafka (lazily: neither needs to be up), tries the indexes once (then in the
    /// background while MongoDB is away), and binds the listener.
    async fn build(config: Config) -> Result<Self> {
        let (db, indexes) =
            service::connect_with_indexes(&config.mongo, Self::NAME, |db| async move {
                EventStore::ensure_indexes(&db).await?;
                EventStore::ensure_dead_letter_index(&db).await?;
                EventStore::ensure_retention_indexes(&db).await
            })
            .await?;
        let producer = kafka::build_producer(&config.kafka)?;
        let store = EventStore::new(&db);
        let state = AppState {
            replayer: Replayer::new(
                store.clone(),
                LanePublisher::new(producer, config.kafka.topics()),
                config.rate_per_sec,
            ),
            store,
            db,
            tasks: TaskTracker::new(),
            indexes,
            retention: config.retention,
        };
        let sweeper = OutboxSweeper::new(
            state.store.clone(),
            state.replayer.publisher().clone(),
            config.sweep,
            state.indexes.clone(),
        );
        let router = routes::router(state.clone(), &config);
        let server = HttpServer::bind(&config.listen, router).await?;
        Ok(Self {
            server,
            state,
            sweeper,
        })
    }

    fn port(&self) -> u16 {
        self.server.port()
    }

    /// Serves requests until `shutdown` is cancelled or one of its tasks fails; then stops accepting
    /// connections, stops the running replays from taking more dead letters, waits for the events they have in
    /// flight, and flushes the producer.
    async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<()> {
        let mut tasks = Supervisor::new(&shutdown);
        let stop = tasks.stop_token();
        tasks.spawn_index_gate(&self.state.indexes);
        let store = self.state.store.clone();
        tasks.spawn_droppable(
            "replay claims pruner",
            retention::prune_periodically(
                "replay claims",
                retention::PRUNE_EVERY,
                stop.clone(),
                move || {
                    let store = store.clone();
                    async move { store.prune_replay_claims(retention::CLAIM_RETENTION).await }
                },
            ),
        );
        tasks.spawn_droppable(
            "retention sweeper",
            retention::sweep_periodically(
                self.state.store.clone(),
                self.state.retention,
                retention::PRUNE_EVERY,
                stop.clone(),
            ),
        );
        self.sweeper.spawn(&mut tasks);
        let stopping = self.state.replayer.stopping();
        let signal = async move {
            stop.cancelled().await;
            // Before the server waits for the requests in flight: a replay answers as soon as it has stopped.
            stopping.cancel();
        };
        self.server.spawn(Self::NAME, &mut tasks, signal);
        let stopped = tasks.wait().await;
        // Also when the server failed on its own, and for replays whose request is gone (timed out).
        self.state.replayer.stop();
        self.state.tasks.close();
        if tokio::time::timeout(DRAIN_TIMEOUT, self.state.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("replays still running at shutdown; their claimed events stay in the outbox for the sweeper");
        }
        self.state.replayer.finish(DRAIN_TIMEOUT).await;
        tracing::info!("herald-replay stopped");
        Ok(stopped?)
    }
}
