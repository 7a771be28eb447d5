//! `herald-query`: Herald's read API.
//!
//! It lists events with filters and two kinds of pagination (`GET /api/logs`), shows one event with its
//! attempts and timeline (`GET /api/logs/{id}`) and counts events (`GET /api/stats`), straight from the `events`
//! collection the other services write. It never writes an event and needs no Kafka: readiness is a MongoDB
//! ping. Configured payload and metadata fields are masked in every answer. The OpenAPI 3.1 document is at
//! `/api/openapi.json`, Swagger UI at `/api/docs`. It also serves the web console (`/console`, see [`console`]),
//! and reads each lane's consumer lag from Kafka for `GET /api/lanes`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use herald_platform::health::Readiness;
use herald_platform::mongo;
use herald_platform::store::EventStore;
use mongodb::Database;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub mod activity;
pub mod alerts;
pub mod config;
pub mod console;
pub mod cursor;
pub mod dropin;
pub mod error;
pub mod events;
pub mod lanes;
pub mod mask;
pub mod openapi;
pub mod params;
mod routes;
pub mod view;

pub use config::Config;
pub use error::{ApiError, Error, Result};

/// How long the ping before creating indexes may take.
const INDEX_PING_TIMEOUT: Duration = Duration::from_secs(2);
/// How often index creation is tried again when MongoDB was away at startup.
const INDEX_RETRY_INTERVAL: Duration = Duration::from_secs(5);

/// What every handler shares, cheap to clone: one MongoDB client per process.
#[derive(Debug, Clone)]
pub struct AppState {
    db: Database,
    kafka: herald_platform::KafkaConfig,
    reader: events::EventReader,
    alerts: alerts::AlertReader,
    mask: Arc<mask::Masker>,
    request_timeout: Duration,
    readiness: Arc<Readiness>,
}

/// A built service: listening, not yet serving.
#[derive(Debug)]
pub struct App {
    listener: TcpListener,
    address: SocketAddr,
    router: Router,
    db: Database,
    indexes_ready: bool,
}

impl App {
    /// Connects to MongoDB (lazily: it need not be up), creates the `events` indexes when it answers, and binds
    /// the listener.
    pub async fn build(config: Config) -> Result<Self> {
        let db = mongo::connect(&config.mongo, "herald-query").await?;
        let state = AppState {
            db: db.clone(),
            kafka: config.kafka.clone(),
            reader: events::EventReader::new(&db, config.request_timeout),
            alerts: alerts::AlertReader::new(&db, config.request_timeout),
            mask: Arc::new(config.mask.clone()),
            request_timeout: config.request_timeout,
            readiness: Arc::new(Readiness {
                kafka: None,
                mongo: Some(db.clone()),
                timeout: None,
            }),
        };
        // Starting without MongoDB is allowed (`/api/ready` says so); the indexes are then created later.
        let indexes_ready = ensure_indexes(&db).await;
        config.http.auth.warn_if_off("herald-query");
        let router = routes::router(state, &config);
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
            db,
            indexes_ready,
        })
    }

    /// The port the service listens on (the one the system picked, when configured with 0).
    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// Serves requests until `shutdown` is cancelled; then stops accepting connections and finishes the requests
    /// in flight.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<()> {
        let stop_indexer = shutdown.child_token();
        let indexer = (!self.indexes_ready).then(|| {
            tokio::spawn(ensure_indexes_until_done(
                self.db.clone(),
                stop_indexer.clone(),
            ))
        });
        tracing::info!(address = %self.address, "herald-query listening");
        let served = axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        stop_indexer.cancel();
        if let Some(Err(e)) = match indexer {
            Some(task) => Some(task.await),
            None => None,
        } {
            tracing::error!(error = %e, "the index task panicked");
        }
        tracing::info!("herald-query stopped");
        served.map_err(Error::Serve)
    }
}

/// Creates the `events` indexes; true once they exist.
///
/// A ping comes first because creating indexes against a server that is away takes several server selection
/// timeouts (the listing, the creation, the listing again).
async fn ensure_indexes(db: &Database) -> bool {
    let created = match mongo::ping(db, INDEX_PING_TIMEOUT).await {
        Ok(()) => EventStore::ensure_indexes(db).await,
        Err(e) => Err(e),
    };
    match created {
        Ok(()) => {
            tracing::info!("mongodb indexes are in place");
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot create the mongodb indexes yet; lists scan until they exist");
            false
        }
    }
}

async fn ensure_indexes_until_done(db: Database, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(INDEX_RETRY_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            done = ensure_indexes(&db) => if done { return },
        }
    }
}
