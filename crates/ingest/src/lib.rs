//! `herald-ingest`: Herald's HTTP front door.
//!
//! It validates an event (`POST /event`, or an activity log entry on `POST /api/logs`), records it in MongoDB
//! as QUEUED with an outbox entry, publishes it to the lane topic of its priority, waits for Kafka's
//! acknowledgement, clears the entry and only then answers 202. A repeated `Idempotency-Key` or `eventId`
//! answers 200 with the event accepted first. When Kafka does not acknowledge, the answer is 503 and the entry
//! stays; the outbox sweeper publishes the event when Kafka is back.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use herald_domain::request::Rules;
use herald_domain::EventId;
use herald_platform::batch::{Batcher, Limits};
use herald_platform::store::{self, Accepting, EventStore, Inserted};
use herald_platform::{kafka, mongo};
use mongodb::Database;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub mod config;
pub mod dropin;
pub mod error;
pub mod openapi;
mod outbox;
mod routes;

pub use config::Config;
pub use error::{ApiError, Error, Result};

use outbox::Publisher;

/// How long shutdown waits for messages still in the producer's queue.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the ping before creating indexes may take.
const INDEX_PING_TIMEOUT: Duration = Duration::from_secs(2);

/// How ingest gathers concurrent requests into store commands: batches of up to 64 events, eight running at once
/// (so that a slow batch does not hold up the requests that arrive meanwhile, and no request waits for a huge one).
const BATCHES: Limits = Limits {
    max_batch: 64,
    max_in_flight: 8,
};

/// What every handler shares: one MongoDB client and one Kafka producer per process, cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    db: Database,
    store: EventStore,
    /// Records accepted events, many per command (see [`EventStore::insert_accepted_many`]).
    recorder: Batcher<Accepting, store::Result<Inserted>>,
    /// Clears the outbox entries of published events, many per command.
    clearer: Batcher<(EventId, u32), store::Result<()>>,
    publisher: Publisher,
    rules: Rules,
    /// Set once the `events` indexes exist. The unique `eventId` index is what makes a repeated event id a
    /// duplicate, so no event is written before it exists.
    indexes_ready: Arc<AtomicBool>,
}

impl AppState {
    fn indexes_ready(&self) -> bool {
        self.indexes_ready.load(Ordering::Acquire)
    }

    /// Creates the indexes unless this process has done so already; called at startup and then by the sweeper
    /// until it succeeds. True once they exist.
    ///
    /// A ping comes first because creating indexes against a server that is away takes several server
    /// selection timeouts (the listing, the creation, the listing again).
    async fn ensure_indexes(&self) -> bool {
        if self.indexes_ready() {
            return true;
        }
        let created = match mongo::ping(&self.db, INDEX_PING_TIMEOUT).await {
            Ok(()) => EventStore::ensure_indexes(&self.db).await,
            Err(e) => Err(e),
        };
        match created {
            Ok(()) => {
                self.indexes_ready.store(true, Ordering::Release);
                tracing::info!("mongodb indexes are in place");
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot create the mongodb indexes yet; events are refused until then");
                false
            }
        }
    }
}

fn recorder(store: EventStore) -> Batcher<Accepting, store::Result<Inserted>> {
    Batcher::spawn("ingest record", BATCHES, move |batch: Vec<Accepting>| {
        let store = store.clone();
        async move { store.insert_accepted_many(&batch).await }
    })
}

fn clearer(store: EventStore) -> Batcher<(EventId, u32), store::Result<()>> {
    Batcher::spawn(
        "ingest outbox clear",
        BATCHES,
        move |published: Vec<(EventId, u32)>| {
            let store = store.clone();
            async move {
                let cleared = store.mark_published(&published).await;
                vec![cleared; published.len()]
            }
        },
    )
}

/// A built service: listening, not yet serving.
#[derive(Debug)]
pub struct App {
    listener: TcpListener,
    address: SocketAddr,
    router: Router,
    state: AppState,
    sweep_interval: Duration,
    sweep_age: Duration,
}

impl App {
    /// Connects to MongoDB and Kafka (lazily: neither needs to be up), creates the indexes when MongoDB
    /// answers, and binds the listener.
    pub async fn build(config: Config) -> Result<Self> {
        let db = mongo::connect(&config.mongo, "herald-ingest").await?;
        let producer = kafka::build_producer(&config.kafka)?;
        let store = EventStore::new(&db);
        let state = AppState {
            recorder: recorder(store.clone()),
            clearer: clearer(store.clone()),
            store,
            db,
            publisher: Publisher::new(producer, config.kafka.topics()),
            rules: config.rules(),
            indexes_ready: Arc::new(AtomicBool::new(false)),
        };
        // Starting without MongoDB is allowed (`/api/ready` says so); the sweeper creates the indexes later.
        state.ensure_indexes().await;
        config.http.auth.warn_if_off("herald-ingest");
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
            sweep_interval: config.sweep_interval,
            sweep_age: config.sweep_age,
        })
    }

    /// The port the service listens on (the one the system picked, when configured with 0).
    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// Serves requests and sweeps the outbox until `shutdown` is cancelled; then stops accepting connections,
    /// finishes the requests in flight, stops the sweeper and flushes the producer.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<()> {
        let stop_sweeper = shutdown.child_token();
        let sweeper = tokio::spawn(outbox::sweep_until_stopped(
            self.state.clone(),
            self.sweep_interval,
            self.sweep_age,
            stop_sweeper.clone(),
        ));
        tracing::info!(address = %self.address, "herald-ingest listening");
        let served = axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        // Also when the server failed on its own: the sweeper must not outlive it.
        stop_sweeper.cancel();
        if let Err(e) = sweeper.await {
            tracing::error!(error = %e, "the outbox sweeper panicked");
        }
        self.state.publisher.flush(FLUSH_TIMEOUT).await;
        tracing::info!("herald-ingest stopped");
        served.map_err(Error::Serve)
    }
}
