//! `herald-dispatch`: consumes one delivery lane (`critical`, `default` or `retry`) and sends each event through
//! its channel's provider, recording every attempt in MongoDB and handing failures to the retry scheduler.
//!
//! One process serves one lane and shares nothing with the others, so critical traffic never waits behind
//! default traffic. Several processes of a lane share its partitions through the lane's consumer group.
//!
//! - [`lane`]: the consumer, the per-partition workers and the in-flight bound;
//! - [`handler`]: what happens to one message (claim, send, record, retry request, dead letter);
//! - [`provider`]: SMTP, the SMS API, webhooks and the sandbox;
//! - [`config`]: the environment variables.

pub mod config;
pub mod handler;
pub mod lane;
pub mod provider;
pub mod stats;
mod steps;

use steps::Steps;

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use herald_platform::health::{self, Readiness};
use herald_platform::kafka;
use herald_platform::kafka::watch::{self, Watch, WatchConfig};
use herald_platform::store::{retention, EventStore};
use herald_platform::KafkaConfig;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::timeout::TimeoutLayer;

pub use config::Config;
use handler::Handler;
pub use provider::{Delivered, Provider, Providers, SendError};
pub use stats::{Counter, Stats};

/// Why the dispatcher could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("mongodb: {0}")]
    Mongo(#[from] mongodb::error::Error),
    #[error(transparent)]
    Kafka(#[from] kafka::Error),
    #[error(transparent)]
    Provider(#[from] provider::BuildError),
    #[error("health server: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

/// Longest a health or readiness request may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// A built dispatcher: connected, subscribed and listening, not yet consuming.
#[derive(Debug)]
pub struct App {
    listener: TcpListener,
    port: u16,
    router: lane::Router,
    readiness: Readiness,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
    /// For deleting claims of long-finished attempts (`store::retention`).
    store: EventStore,
    /// The lane consumer's watch, its checks' settings and where the stuck consumers are reported.
    watch: Arc<Watch>,
    watch_config: WatchConfig,
    kafka: KafkaConfig,
    consumers: watch::Health,
}

impl App {
    /// Connects to MongoDB (creating the indexes) and Kafka, builds the providers, subscribes to the lane and
    /// binds the health server.
    pub async fn build(config: Config) -> Result<Self> {
        for warning in config.warnings() {
            tracing::warn!("{warning}");
        }
        let db = herald_platform::mongo::connect(&config.mongo, config::SERVICE).await?;
        EventStore::ensure_indexes(&db).await?;
        let producer = kafka::build_producer(&config.kafka)?;
        let providers = Providers::build(&config)?;
        let stats = Arc::new(Stats::new(
            config.lane,
            config.queue_depth,
            config.concurrency,
        ));
        // The handler's shutdown token is linked to the one given to `run_until_stopped`.
        let shutdown = CancellationToken::new();
        let topics = config.kafka.topics();
        let store = EventStore::new(&db);
        let handler = Arc::new(Handler {
            topics: topics.clone(),
            store: store.clone(),
            steps: Steps::spawn(&store, config.lease()),
            producer,
            providers,
            send_timeout: config.send_timeout,
            stats: Arc::clone(&stats),
            shutdown: shutdown.clone(),
        });
        let topic = topics.lane(config.lane);
        let consumers = watch::Health::default();
        let watch = Watch::new(config.group_id(), vec![topic.clone()], &consumers);
        let router = lane::Router::build(
            config.kafka.clone(),
            Arc::clone(&watch),
            handler,
            Arc::clone(&stats),
            topic.clone(),
            config.queue_depth,
            config.concurrency,
        )?;
        let listener = TcpListener::bind((config.host.as_str(), config.port)).await?;
        let port = listener.local_addr()?.port();
        tracing::info!(
            lane = config.lane.as_str(),
            %topic,
            group = %config.group_id(),
            port,
            queue_depth = config.queue_depth,
            concurrency = config.concurrency,
            send_timeout_ms = config.send_timeout.as_millis() as u64,
            "dispatcher built"
        );
        Ok(Self {
            listener,
            port,
            router,
            readiness: Readiness {
                kafka: Some(config.kafka.clone()),
                mongo: Some(db),
                timeout: None,
                indexes: None,
            },
            stats,
            shutdown,
            store,
            watch,
            watch_config: config.watch,
            kafka: config.kafka.clone(),
            consumers,
        })
    }

    /// The port of the health server (tests bind port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The counters of this dispatcher, live.
    pub fn stats(&self) -> Arc<Stats> {
        Arc::clone(&self.stats)
    }

    /// Consumes until `shutdown` is cancelled; then stops fetching, lets every partition worker finish the message
    /// in hand and store its offset, commits synchronously and returns.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<()> {
        let Self {
            listener,
            router,
            readiness,
            shutdown: own,
            store,
            watch,
            watch_config,
            kafka,
            consumers,
            ..
        } = self;
        let link = {
            let (shutdown, own) = (shutdown.clone(), own.clone());
            tokio::spawn(async move {
                shutdown.cancelled().await;
                own.cancel();
            })
        };
        // `/metrics` is platform's: the dispatcher's counters are recorded through the `metrics` facade.
        let checks = watch.spawn_checks(kafka, watch_config, own.clone());
        let app = health::router_with_consumers(config::SERVICE, readiness, consumers).layer(
            TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, HTTP_TIMEOUT),
        );
        let server = {
            let own = own.clone();
            tokio::spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(async move { own.cancelled().await })
                    .await
            })
        };
        let pruner = tokio::spawn(retention::prune_periodically(
            "dispatch claims",
            retention::PRUNE_EVERY,
            own.clone(),
            move || {
                let store = store.clone();
                async move { store.prune_claims(retention::CLAIM_RETENTION).await }
            },
        ));
        router.run(own.clone()).await;
        link.abort();
        pruner.abort();
        checks.abort();
        own.cancel();
        match server.await {
            Ok(result) => result?,
            Err(e) => tracing::error!(error = %e, "health server task failed"),
        }
        tracing::info!("dispatcher stopped");
        Ok(())
    }
}
