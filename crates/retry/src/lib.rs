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

use std::net::SocketAddr;
use std::sync::Arc;

use herald_domain::retry::RetryRules;
use herald_domain::Topics;
use herald_platform::health::{self, Readiness};
use herald_platform::kafka::watch::{self, Watch};
use herald_platform::store::EventStore;
use herald_platform::{kafka, mongo};
use rdkafka::producer::FutureProducer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

mod config;
pub mod delay;
pub mod requests;

pub use config::{parse_tiers, Config};

/// `fetch.wait.max.ms` of the delay-tier consumer: how late a due retry may be for the fetch in flight.
const DELAY_FETCH_WAIT_MS: u64 = 20;

/// Why the service could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kafka(#[from] kafka::Error),
    #[error(transparent)]
    Mongo(#[from] mongodb::error::Error),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

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
    listener: TcpListener,
    readiness: Readiness,
}

impl App {
    /// Connects, creates the delay-tier topics and the indexes, binds the health server.
    pub async fn build(config: Config) -> Result<Self> {
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
        let db = mongo::connect(&config.mongo, "herald-retry").await?;
        EventStore::ensure_indexes(&db).await?;
        let state = AppState {
            producer: kafka::build_producer(&config.kafka)?,
            store: EventStore::new(&db),
            topics,
            rules: Arc::new(config.rules.clone()),
            tiers_secs: Arc::new(config.tiers_secs.clone()),
        };
        let listener = TcpListener::bind((config.host.as_str(), config.port)).await?;
        let readiness = Readiness {
            kafka: Some(config.kafka.clone()),
            mongo: Some(db),
            timeout: None,
        };
        Ok(Self {
            config,
            state,
            listener,
            readiness,
        })
    }

    /// The health server's port (tests bind port 0).
    pub fn port(&self) -> u16 {
        self.listener
            .local_addr()
            .map_or(0, |a: SocketAddr| a.port())
    }

    /// Runs both consumers and the health server until `shutdown`, then stops fetching, finishes the message in
    /// hand and commits the stored offsets.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<()> {
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
        let checks = [&requests_watch, &delay_watch].map(|w| {
            w.spawn_checks(
                self.config.kafka.clone(),
                self.config.watch,
                shutdown.clone(),
            )
        });
        let router = health::router_with_consumers("herald-retry", self.readiness, consumers);
        let http_shutdown = shutdown.clone();
        let http = tokio::spawn(async move {
            axum::serve(self.listener, router)
                .with_graceful_shutdown(http_shutdown.cancelled_owned())
                .await
        });
        let requests = tokio::spawn(requests::run(
            self.config.kafka.clone(),
            requests_watch,
            self.state.clone(),
            shutdown.clone(),
        ));
        let delays = tokio::spawn(delay::run(
            delay_kafka,
            delay_watch,
            self.state,
            shutdown.clone(),
        ));
        let (requests, delays, http) = tokio::join!(requests, delays, http);
        for check in checks {
            check.abort();
        }
        for result in [requests, delays] {
            match result {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(join) => tracing::error!(error = %join, "a consumer task panicked"),
            }
        }
        if let Ok(Err(e)) = http {
            return Err(Error::Io(e));
        }
        Ok(())
    }
}

/// Runs `op` until it succeeds or `shutdown` fires, backing off up to 5 s between tries: transient failures
/// (Kafka or MongoDB away) hold the message, they never drop it. `None` means shutdown came first.
pub(crate) async fn until_done<T, E, F, Fut>(
    what: &str,
    shutdown: &CancellationToken,
    mut op: F,
) -> Option<T>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, E>>,
{
    let mut backoff = std::time::Duration::from_millis(100);
    loop {
        match op().await {
            Ok(value) => return Some(value),
            Err(e) => {
                tracing::warn!(error = %e, "{what} failed; trying again in {backoff:?}");
                tokio::select! {
                    _ = shutdown.cancelled() => return None,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(std::time::Duration::from_secs(5));
            }
        }
    }
}
