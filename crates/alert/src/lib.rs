//! `herald-alert`: threshold rules over the event lifecycle, email alerts with a cooldown, and the alert history.
//!
//! - [`consumer`] reads `herald.events.status` (group `herald-alert`) and counts each step in the sliding window
//!   of every rule it matches; windows live in MongoDB ([`window`]), so they survive a restart, and a redelivered
//!   step is not counted twice. When a window reaches its rule's threshold outside the cooldown, the alert is
//!   stored in `alerts` (email pending) before the offset is stored.
//! - [`mail`] sends pending alert emails through one pooled SMTP transport, retrying with backoff; it works from
//!   MongoDB only, so an alert raised while SMTP is away is sent when it is back, even after a restart.
//! - [`rules`] defines and validates the rules (built-in ones, and a TOML or JSON file).
//!
//! `herald-query` serves the stored alerts (`GET /api/alerts`).

use std::sync::Arc;

use herald_platform::health::Readiness;
use herald_platform::kafka;
use herald_platform::kafka::watch::{self, Watch};
use herald_platform::service::{self, HealthServer, IndexGate, Service, Supervisor};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

mod config;
pub mod consumer;
pub mod mail;
pub mod rules;
pub mod window;

pub use config::{Config, SERVICE};

/// Why the service could not start or stopped (the SMTP transport is [`Error::Build`]).
pub use herald_platform::service::Error;

pub type Result<T> = std::result::Result<T, Error>;

/// A built, not yet running, alerting service.
#[derive(Debug)]
pub struct App {
    config: Config,
    handler: consumer::Handler,
    mailer: mail::Mailer,
    health: HealthServer,
    indexes: IndexGate,
}

impl Service for App {
    const NAME: &'static str = SERVICE;
    type Config = Config;

    /// Connects, builds the SMTP transport, binds the health server and tries the indexes once (the consumer and
    /// the sender wait for them; they are tried again in the background while MongoDB is away).
    async fn build(config: Config) -> Result<Self> {
        let (db, indexes) =
            service::connect_with_indexes(&config.mongo, SERVICE, |db| async move {
                window::Windows::ensure_indexes(&db).await
            })
            .await?;
        let topics = config.kafka.topics();
        let handler = consumer::Handler {
            rules: Arc::new(config.rules.clone()),
            windows: window::Windows::new(&db, config.query_url.clone()),
            producer: kafka::build_producer(&config.kafka)?,
            dead_letters: topics.dead_letters(),
            wake: Arc::new(Notify::new()),
        };
        let mailer = mail::Mailer::build(
            &db,
            &config.smtp,
            config.send_timeout,
            config.send_backoff_cap,
            config.send_attempts,
        )
        .map_err(Error::build)?;
        let readiness = Readiness::of(Some(&config.kafka), &db, &indexes);
        let health = HealthServer::bind(&config.listen, readiness).await?;
        for rule in config.rules.all() {
            tracing::info!(rule = %rule.name, matches = %rule.matcher.describe(), threshold = rule.threshold,
                window_secs = rule.window.as_secs(), cooldown_secs = rule.cooldown.as_secs(), "alert rule");
        }
        Ok(Self {
            config,
            handler,
            mailer,
            health,
            indexes,
        })
    }

    /// The health server's port (tests bind port 0).
    fn port(&self) -> u16 {
        self.health.port()
    }

    /// Runs the consumer, the sender (both once the indexes exist) and the health server until `shutdown` or
    /// until one of them fails; then the consumer finishes the message in hand and commits the stored offsets.
    async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<()> {
        let consumers = watch::Health::default();
        let topic = self.config.kafka.topics().status();
        let watch = Watch::new(self.config.group_id(), vec![topic], &consumers);
        let mut tasks = Supervisor::new(&shutdown);
        let stop = tasks.stop_token();
        let checks = watch.spawn_checks(self.config.kafka.clone(), self.config.watch, stop.clone());
        self.health.spawn(SERVICE, consumers, &mut tasks);
        tasks.spawn_index_gate(&self.indexes);
        let windows = self.handler.windows.clone();
        let (mailer, wake) = (self.mailer, Arc::clone(&self.handler.wake));
        let (sweep_interval, sender_stop) = (self.config.sweep_interval, stop.clone());
        tasks.spawn_when_open("alert sender", &self.indexes, async move {
            mailer
                .run(wake, sweep_interval, sender_stop, move || {
                    let windows = windows.clone();
                    async move {
                        if let Err(e) = windows.delete_expired().await {
                            tracing::warn!(error = %e, "deleting expired window hits failed");
                        }
                    }
                })
                .await;
            Ok::<(), Error>(())
        });
        let (kafka, handler) = (self.config.kafka.clone(), self.handler);
        tasks.spawn_when_open(
            "status consumer",
            &self.indexes,
            consumer::run(kafka, watch, handler, stop),
        );
        let stopped = tasks.wait().await;
        checks.abort();
        Ok(stopped?)
    }
}
