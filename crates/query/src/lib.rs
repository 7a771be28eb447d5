//! `herald-query`: Herald's read API.
//!
//! It lists events with filters and two kinds of pagination (`GET /api/logs`) and shows one event with its
//! attempts and timeline (`GET /api/logs/{id}`), straight from the `events` collection the other services
//! write, and counts events (`GET /api/stats`) from hourly buckets its stats consumer keeps from the status topic
//! (see [`stats`]). It never writes an event. Readiness is a MongoDB ping, and the stats consumer not being
//! stuck. Configured payload and metadata fields are masked in every answer. The OpenAPI 3.1 document is at
//! `/api/openapi.json`, Swagger UI at `/api/docs`. It also serves the web console (`/console`, see [`console`]),
//! and reads each lane's consumer lag from Kafka for `GET /api/lanes`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use herald_platform::health::Readiness;
use herald_platform::kafka::{self, watch};
use herald_platform::mongo;
use herald_platform::store::EventStore;
use mongodb::Database;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub mod activity;
pub mod alerts;
pub mod config;
pub mod console;
pub mod dropin;
pub mod error;
pub mod lanes;
pub mod logs;
pub mod mask;
pub mod openapi;
mod routes;
pub mod stats;

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
    reader: logs::reader::EventReader,
    alerts: alerts::reader::AlertReader,
    stats: stats::reader::StatsReader,
    mask: Arc<mask::Masker>,
    request_timeout: Duration,
    readiness: Arc<Readiness>,
    /// The stats consumer's health, for `/api/ready`.
    consumers: watch::Health,
}

/// A built service: listening, not yet serving.
#[derive(Debug)]
pub struct App {
    listener: TcpListener,
    address: SocketAddr,
    router: Router,
    db: Database,
    indexes_ready: bool,
    /// The stats consumer, when this process runs it.
    stats: Option<StatsConsumer>,
}

/// What the stats consumer runs with.
#[derive(Debug)]
struct StatsConsumer {
    kafka: herald_platform::KafkaConfig,
    watch: watch::WatchConfig,
    folder: stats::consumer::Folder,
    consumers: watch::Health,
}

impl App {
    /// Connects to MongoDB (lazily: it need not be up), creates the `events` indexes when it answers, and binds
    /// the listener.
    pub async fn build(config: Config) -> Result<Self> {
        let db = mongo::connect(&config.mongo, "herald-query").await?;
        let consumers = watch::Health::default();
        let stats = match config.stats_consumer {
            true => Some(StatsConsumer {
                kafka: config.kafka.clone(),
                watch: config.watch,
                folder: stats::consumer::Folder {
                    buckets: stats::buckets::Buckets::new(&db),
                    producer: kafka::build_producer(&config.kafka)?,
                    dead_letters: config.kafka.topics().dead_letters(),
                },
                consumers: consumers.clone(),
            }),
            false => None,
        };
        let state = AppState {
            db: db.clone(),
            kafka: config.kafka.clone(),
            reader: logs::reader::EventReader::new(&db, config.request_timeout),
            alerts: alerts::reader::AlertReader::new(&db, config.request_timeout),
            stats: stats::reader::StatsReader::new(&db, config.request_timeout),
            mask: Arc::new(config.mask.clone()),
            request_timeout: config.request_timeout,
            readiness: Arc::new(Readiness {
                kafka: None,
                mongo: Some(db.clone()),
                timeout: None,
                indexes: None,
            }),
            consumers,
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
            stats,
        })
    }

    /// The port the service listens on (the one the system picked, when configured with 0).
    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// Serves requests (and runs the stats consumer) until `shutdown` is cancelled; then stops accepting
    /// connections, finishes the requests in flight and commits the consumer's stored offsets. A consumer that
    /// fails stops the service with its error.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<()> {
        let stop = shutdown.child_token();
        let consumer = self.stats.map(|stats| {
            let topic = stats.kafka.topics().status();
            let watch = watch::Watch::new(
                stats::consumer::group_id(&stats.kafka),
                vec![topic],
                &stats.consumers,
            );
            let checks = watch.spawn_checks(stats.kafka.clone(), stats.watch, stop.clone());
            let stop = stop.clone();
            tokio::spawn(async move {
                let consumed =
                    stats::consumer::run(stats.kafka, watch, stats.folder, stop.clone()).await;
                checks.abort();
                if let Err(e) = &consumed {
                    tracing::error!(error = %e, "the stats consumer failed; stopping");
                    stop.cancel();
                }
                consumed
            })
        });
        let stop_indexer = shutdown.child_token();
        let indexer = (!self.indexes_ready).then(|| {
            tokio::spawn(ensure_indexes_until_done(
                self.db.clone(),
                stop_indexer.clone(),
            ))
        });
        tracing::info!(address = %self.address, "herald-query listening");
        let served = axum::serve(self.listener, self.router)
            .with_graceful_shutdown(stop.clone().cancelled_owned())
            .await;
        stop.cancel();
        stop_indexer.cancel();
        if let Some(Err(e)) = match indexer {
            Some(task) => Some(task.await),
            None => None,
        } {
            tracing::error!(error = %e, "the index task panicked");
        }
        let consumed = match consumer {
            Some(task) => match task.await {
                Ok(consumed) => consumed.map_err(Error::Kafka),
                Err(e) => {
                    tracing::error!(error = %e, "the stats consumer panicked");
                    Ok(())
                }
            },
            None => Ok(()),
        };
        tracing::info!("herald-query stopped");
        served.map_err(Error::Serve)?;
        consumed
    }
}

/// Creates the `events` indexes; true once they exist.
///
/// A ping comes first because creating indexes against a server that is away takes several server selection
/// timeouts (the listing, the creation, the listing again).
async fn ensure_indexes(db: &Database) -> bool {
    let created = match mongo::ping(db, INDEX_PING_TIMEOUT).await {
        Ok(()) => match EventStore::ensure_indexes(db).await {
            Ok(()) => stats::buckets::Buckets::ensure_indexes(db).await,
            Err(e) => Err(e),
        },
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
