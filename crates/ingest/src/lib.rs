//! `herald-ingest`: Herald's HTTP front door.
//!
//! It validates an event (`POST /event`, or an activity log entry on `POST /api/logs`), records it in MongoDB
//! as QUEUED with an outbox entry, publishes it to the lane topic of its priority, waits for Kafka's
//! acknowledgement and only then answers 202; the entry is cleared after the answer, many at a time. A repeated
//! `Idempotency-Key` or `eventId` answers 200 with the event accepted first. When Kafka does not acknowledge, the answer is 503 and the entry
//! stays; the outbox sweeper publishes the event when Kafka is back.

use std::time::Duration;

use herald_domain::request::Rules;
use herald_platform::kafka;
use herald_platform::lanes::{LanePublisher, OutboxClearer, OutboxSweeper};
use herald_platform::service::{self, HttpServer, IndexGate, Service, Supervisor};
use herald_platform::store::{Accepting, EventStore};
use mongodb::Database;
use tokio_util::sync::CancellationToken;

pub mod config;
pub mod dropin;
pub mod error;
pub mod openapi;
mod recorders;
mod routes;

pub use config::Config;
pub use error::{ApiError, Error, Result};

use recorders::Recorders;

/// How long shutdown waits for messages still in the producer's queue.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// How long shutdown waits for the outbox clears still running.
const CLEAR_TIMEOUT: Duration = Duration::from_secs(5);

/// What every handler shares: one MongoDB client and one Kafka producer per process, cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    db: Database,
    store: EventStore,
    /// Records accepted events, many per command (see [`EventStore::insert_accepted_many`]), a batcher per lane.
    recorders: Recorders,
    /// Clears the outbox entries of published events, many per command, after the answer.
    clearer: OutboxClearer,
    publisher: LanePublisher,
    rules: Rules,
    /// Open once the `events` indexes exist. The unique `eventId` index is what makes a repeated event id a
    /// duplicate, so no event is written before it exists.
    indexes: IndexGate,
}

fn recorders(store: EventStore) -> Recorders {
    Recorders::spawn(move |batch: Vec<Accepting>| {
        let store = store.clone();
        async move { store.insert_accepted_many(&batch).await }
    })
}

/// A built service: listening, not yet serving.
#[derive(Debug)]
pub struct App {
    server: HttpServer,
    state: AppState,
    sweeper: OutboxSweeper,
}

impl Service for App {
    const NAME: &'static str = "herald-ingest";
    type Config = Config;

    /// Connects to MongoDB and Kafka (lazily: neither needs to be up), tries the indexes once (then in the
    /// background until MongoDB answers; no event is accepted before), and binds the listener.
    async fn build(config: Config) -> Result<Self> {
        let (db, indexes) =
            service::connect_with_indexes(&config.mongo, Self::NAME, |db| async move {
                EventStore::ensure_indexes(&db).await
            })
            .await?;
        let producer = kafka::build_producer(&config.kafka)?;
        let store = EventStore::new(&db);
        let state = AppState {
            recorders: recorders(store.clone()),
            clearer: OutboxClearer::spawn(store.clone()),
            store,
            db,
            publisher: LanePublisher::new(producer, config.kafka.topics()),
            rules: config.rules(),
            indexes,
        };
        let sweeper = OutboxSweeper::new(
            state.store.clone(),
            state.publisher.clone(),
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

    /// Serves requests and sweeps the outbox until `shutdown` is cancelled or one of them fails; then stops
    /// accepting connections, finishes the requests in flight, stops the sweeper and flushes the producer.
    async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<()> {
        let mut tasks = Supervisor::new(&shutdown);
        let stop = tasks.stop_token();
        tasks.spawn_index_gate(&self.state.indexes);
        self.sweeper.spawn(&mut tasks);
        self.server
            .spawn(Self::NAME, &mut tasks, stop.cancelled_owned());
        let stopped = tasks.wait().await;
        self.state.clearer.finish(CLEAR_TIMEOUT).await;
        self.state.publisher.flush(FLUSH_TIMEOUT).await;
        tracing::info!("herald-ingest stopped");
        Ok(stopped?)
    }
}
