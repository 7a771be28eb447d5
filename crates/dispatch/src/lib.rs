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

use std::convert::Infallible;
use std::sync::Arc;

use herald_platform::health::Readiness;
use herald_platform::kafka;
use herald_platform::kafka::watch::{self, Watch, WatchConfig};
use herald_platform::service::{self, HealthServer, IndexGate, Service, Supervisor};
use herald_platform::store::{retention, EventStore};
use herald_platform::KafkaConfig;
use tokio_util::sync::CancellationToken;

pub use config::Config;
use handler::Handler;
pub use provider::{Delivered, Provider, Providers, SendError, Try};
pub use stats::{Counter, Stats};

/// Why the dispatcher could not start or stopped with an error (its providers are [`Error::Build`]).
pub use herald_platform::service::Error;

pub type Result<T> = std::result::Result<T, Error>;

/// A built dispatcher: connected, subscribed and listening, not yet consuming.
#[derive(Debug)]
pub struct App {
    health: HealthServer,
    router: lane::Router,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
    /// For deleting claims of long-finished attempts (`store::retention`).
    store: EventStore,
    /// The lane consumer's watch, its checks' settings and where the stuck consumers are reported.
    watch: Arc<Watch>,
    watch_config: WatchConfig,
    kafka: KafkaConfig,
    consumers: watch::Health,
    indexes: IndexGate,
}

impl App {
    /// The counters of this dispatcher, live.
    pub fn stats(&self) -> Arc<Stats> {
        Arc::clone(&self.stats)
    }
}

impl Service for App {
    const NAME: &'static str = config::SERVICE;
    type Config = Config;

    /// Connects to MongoDB and Kafka, builds the providers, subscribes to the lane, binds the health server and
    /// tries the indexes once (the lane waits for them; they are tried again in the background while MongoDB is
    /// away).
    async fn build(config: Config) -> Result<Self> {
        for warning in config.warnings() {
            tracing::warn!("{warning}");
        }
        let (db, indexes) =
            service::connect_with_indexes(&config.mongo, config::SERVICE, |db| async move {
                EventStore::ensure_indexes(&db).await
            })
            .await?;
        let producer = kafka::build_producer(&config.kafka)?;
        let providers = Providers::build(&config).map_err(Error::build)?;
        let stats = Arc::new(Stats::new(
            config.lane,
            config.queue_depth,
            config.concurrency,
        ));
        // The handler's own token, cancelled by the supervisor's stop in `run_until_stopped`.
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
        let readiness = Readiness::of(Some(&config.kafka), &db, &indexes);
        let health = HealthServer::bind(&config.listen, readiness).await?;
        let port = health.port();
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
            health,
            router,
            stats,
            shutdown,
            store,
            watch,
            watch_config: config.watch,
            kafka: config.kafka.clone(),
            consumers,
            indexes,
        })
    }

    /// The port of the health server (tests bind port 0).
    fn port(&self) -> u16 {
        self.health.port()
    }

    /// Consumes (once the indexes exist) until `shutdown` is cancelled or one of its tasks fails (the health
    /// server); then stops fetching, lets every partition worker finish the message in hand and store its offset,
    /// commits synchronously and returns.
    async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<()> {
        let Self {
            health,
            router,
            shutdown: own,
            store,
            watch,
            watch_config,
            kafka,
            consumers,
            indexes,
            ..
        } = self;
        let mut tasks = Supervisor::new(&shutdown);
        let stop = tasks.stop_token();
        // `/metrics` is platform's: the dispatcher's counters are recorded through the `metrics` facade.
        let checks = watch.spawn_checks(kafka, watch_config, stop.clone());
        health.spawn(config::SERVICE, consumers, &mut tasks);
        tasks.spawn_index_gate(&indexes);
        tasks.spawn_droppable(
            "claim pruner",
            retention::prune_periodically(
                "dispatch claims",
                retention::PRUNE_EVERY,
                stop.clone(),
                move || {
                    let store = store.clone();
                    async move { store.prune_claims(retention::CLAIM_RETENTION).await }
                },
            ),
        );
        tasks.spawn_when_open("lane consumer", &indexes, async move {
            // The handler was built with its own token, before this one existed: it stops with the rest.
            let link = {
                let (stop, own) = (stop.clone(), own.clone());
                tokio::spawn(async move {
                    stop.cancelled().await;
                    own.cancel();
                })
            };
            router.run(own).await;
            link.abort();
            Ok::<(), Infallible>(())
        });
        let stopped = tasks.wait().await;
        checks.abort();
        tracing::info!("dispatcher stopped");
        Ok(stopped?)
    }
}
