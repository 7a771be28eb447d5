//! `herald-retry`: decides what follows each failed attempt and waits out backoffs durably.
//!
//! Two consumers run side by side:
//! - [`requests`] reads `herald.retry.requests`, asks the rules engine (`herald_domain::retry`) for a decision,
//!   records RETRY_SCHEDULED or DEAD_LETTERED in MongoDB, and publishes the retry to a delay-tier topic or the
//!   event to the dead-letter topic;
//! - [`delay`] reads the delay-tier topics and holds each partition (paused, not spinning) until its head is due,
//!   then publishes the retry to the `retry` lane and only then stores the offset.
//!
//! Nothing waits in memory: a killed `herald-retry` loses no scheduled retry, because every retry is on a Kafka
//! topic until the lane has it.

use std::sync::Arc;

use herald_domain::retry::RetryRules;
use herald_domain::Topics;
use herald_platform::health::Readiness;
use herald_platform::kafka;
use herald_platform::kafka::watch::{self, Watch};
use herald_platform::service::{self, HealthServer, IndexGate, Service, Supervisor};
use herald_platform::store::EventStore;
use rdkafka::producer::FutureProducer;
use tokio_util::sync::CancellationToken;

mod config;
pub mod delay;
pub mod requests;

pub use config::{parse_tiers, Config};

/// `fetch.wait.max.ms` of the delay-tier consumer: how late a due retry may be for the fetch in flight.
const DELAY_FETCH_WAIT_MS: u64 = 20;

/// Why the service could not start or stopped.
pub use herald_platform::service::Error;

pub type Result<T> = std::result::Result<T, Error>;

/// What both consumers share.
#[derive(Clone)]
pub struct AppState {
    pub producer: FutureProducer,
    pub store: EventStore,
    pub topics: Topics,
    pub rules: Arc<RetryRules>,
    pub tiers_secs: Arc<Vec<u64>>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("topics", &self.topics)
            .field("tiers_secs", &self.tiers_secs)
            .finish_non_exhaustive()
    }
}

/// A built, not yet running, retry scheduler.
#[derive(Debug)]
pub struct App {
    config: Config,
    state: AppState,
    health: HealthServer,
    indexes: IndexGate,
}

impl Service for App {
    const NAME: &'static str = "herald-retry";
    type Config = Config;

    /// Connects, creates the delay-tier topics, binds the health server and tries the indexes once (the
    /// consumers wait for them; they are tried again in the background while MongoDB is away).
    async fn build(config: Config) -> Result<Self> {
        let topics = config.kafka.topics();
        let tier_topics: Vec<_> = topics
            .all(&config.tiers_secs)
            .into_iter()
            .filter(|spec| {
                config
                    .tiers_secs
                    .iter()
                    .any(|t| spec.name == topics.delay(*t))
            })
            .collect();
        kafka::ensure_topics(&config.kafka, &tier_topics, config.topic_replication).await?;
        let (db, indexes) =
            service::connect_with_indexes(&config.mongo, Self::NAME, |db| async move {
                EventStore::ensure_indexes(&db).await
            })
            .await?;
        let state = AppState {
            producer: kafka::build_producer(&config.kafka)?,
            store: EventStore::new(&db),
            topics,
            rules: Arc::new(config.rules.clone()),
            tiers_secs: Arc::new(config.tiers_secs.clone()),
        };
        let readiness = Readiness::of(Some(&config.kafka), &db, &indexes);
        let health = HealthServer::bind(&config.listen, readiness).await?;
        Ok(Self {
            config,
            state,
            health,
            indexes,
        })
    }

    /// The health server's port (tests bind port 0).
    fn port(&self) -> u16 {
        self.health.port()
    }

    /// Runs both consumers (once the indexes exist) and the health server until `shutdown` or until one of them
    /// fails, then stops fetching, finishes the message in hand and commits the stored offsets.
    async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<()> {
        let prefix = self.state.topics.prefix().to_owned();
        let consumers = watch::Health::default();
        let requests_watch = Watch::new(
            format!("{prefix}herald-retry-requests"),
            vec![self.state.topics.retry_requests()],
            &consumers,
        );
        let tier_topics: Vec<String> = self
            .state
            .tiers_secs
            .iter()
            .map(|t| self.state.topics.delay(*t))
            .collect();
        let delay_watch = Watch::new(
            format!("{prefix}herald-retry-delay"),
            tier_topics,
            &consumers,
        );
        // A partition resumed when its head came due waits for the fetch already parked on the broker, up to
        // `fetch.wait.max.ms` (500 ms by default): measured, that was the p99 of the scheduling error
        // (`examples/retry_bench.rs`). A short wait costs a few empty fetches a second. `KAFKA_PROPERTY_*` still wins.
        let mut delay_kafka = self.config.kafka.clone();
        delay_kafka.extra.insert(
            0,
            ("fetch.wait.max.ms".into(), DELAY_FETCH_WAIT_MS.to_string()),
        );
        let mut tasks = Supervisor::new(&shutdown);
        let stop = tasks.stop_token();
        let checks = [&requests_watch, &delay_watch]
            .map(|w| w.spawn_checks(self.config.kafka.clone(), self.config.watch, stop.clone()));
        self.health.spawn(Self::NAME, consumers, &mut tasks);
        tasks.spawn_index_gate(&self.indexes);
        let (kafka, state) = (self.config.kafka.clone(), self.state.clone());
        tasks.spawn_when_open(
            "retry requests consumer",
            &self.indexes,
            requests::run(kafka, requests_watch, state, stop.clone()),
        );
        tasks.spawn_when_open(
            "delay tiers consumer",
            &self.indexes,
            delay::run(delay_kafka, delay_watch, self.state, stop),
        );
        let stopped = tasks.wait().await;
        for check in checks {
            check.abort();
        }
        Ok(stopped?)
    }
}
