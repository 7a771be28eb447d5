//! `herald-query`: Herald's read API.
//!
//! It lists events with filters and two kinds of pagination (`GET /api/logs`) and shows one event with its
//! attempts and timeline (`GET /api/logs/{id}`), straight from the `events` collection the other services
//! write, and counts events (`GET /api/stats`) from hourly buckets its stats consumer keeps from the status topic
//! (see [`stats`]). It never writes an event. Readiness is a MongoDB ping, and the stats consumer not being
//! stuck. Configured payload and metadata fields are masked in every answer. The OpenAPI 3.1 document is at
//! `/api/openapi.json`, Swagger UI at `/api/docs`. It also serves the web console (`/console`, see [`console`]),
//! and reads each lane's consumer lag from Kafka for `GET /api/lanes`.

use std::sync::Arc;
use std::time::Duration;

use herald_platform::health::Readiness;
use herald_platform::kafka::{self, watch};
use herald_platform::service::{self, HttpServer, IndexGate, Service, Supervisor};
use herald_platform::store::EventStore;
use mongodb::Database;
use tokio_util::sync::CancellationToken;

pub mod activity;
pub mod alerts;
pub mod config;
pub mod console;
pub mod dead_letters;
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
    server: HttpServer,
    /// Open once the `events` and `stats_hours` indexes exist; lists scan until then.
    indexes: IndexGate,
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

impl Service for App {
    const NAME: &'static str = "herald-query";
    type Config = Config;

    /// Connects to MongoDB (lazily: it need not be up), tries the indexes once (then in the background while
    /// MongoDB is away), and binds the listener.
    async fn build(config: Config) -> Result<Self> {
        let (db, indexes) =
            service::connect_with_indexes(&config.mongo, Self::NAME, ensure_indexes).await?;
        let consumers = watch::Health::default();
        let stats = match config.stats_consumer {
            true => Some(StatsConsumer {
                kafka: config.kafka.clone(),
                watch: config.watch,
                folder: stats::consumer::Folder {
                    buckets: stats::buckets::Buckets::new(&db),
                    minutes: stats::minutes::MinuteBuckets::new(&db),
                    topics: config.kafka.topics(),
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
            reader: logs::reader::EventReader::new(&db, config.request_timeout, config.slicing),
            alerts: alerts::reader::AlertReader::new(&db, config.request_timeout),
            stats: stats::reader::StatsReader::new(&db, config.request_timeout)
                .with_in_flight_max_age(config.stats_in_flight_max_age),
            mask: Arc::new(config.mask.clone()),
            request_timeout: config.request_timeout,
            readiness: Arc::new(Readiness::of(None, &db, &indexes)),
            consumers,
        };
        let router = routes::router(state, &config);
        let server = HttpServer::bind(&config.listen, router).await?;
        Ok(Self {
            server,
            indexes,
            stats,
        })
    }

    fn port(&self) -> u16 {
        self.server.port()
    }

    /// Serves requests (and runs the stats consumer) until `shutdown` is cancelled; then stops accepting
    /// connections, finishes the requests in flight and commits the consumer's stored offsets. A consumer that
    /// fails stops the service with its error.
    async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<()> {
        let mut tasks = Supervisor::new(&shutdown);
        let stop = tasks.stop_token();
        let mut checks = None;
        if let Some(stats) = self.stats {
            let watch = watch::Watch::new(
                stats::consumer::group_id(&stats.kafka),
                stats::consumer::topics(&stats.kafka.topics()),
                &stats.consumers,
            );
            checks = Some(watch.spawn_checks(stats.kafka.clone(), stats.watch, stop.clone()));
            tasks.spawn_until_stopped(
                "stats consumer",
                stats::consumer::run(stats.kafka, watch, stats.folder, stop.clone()),
            );
        }
        tasks.spawn_index_gate(&self.indexes);
        self.server
            .spawn(Self::NAME, &mut tasks, stop.cancelled_owned());
        let stopped = tasks.wait().await;
        if let Some(checks) = checks {
            checks.abort();
        }
        tracing::info!("herald-query stopped");
        Ok(stopped?)
    }
}

/// Creates the `events`, `stats_hours` and `stats_minutes` indexes (the index gate runs it until they exist).
async fn ensure_indexes(db: Database) -> mongodb::error::Result<()> {
    EventStore::ensure_indexes(&db).await?;
    stats::buckets::Buckets::ensure_indexes(&db).await?;
    stats::minutes::MinuteBuckets::ensure_indexes(&db).await
}
