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

use std::net::SocketAddr;
use std::sync::Arc;

use herald_platform::health::{self, Readiness};
use herald_platform::kafka::watch::{self, Watch};
use herald_platform::{kafka, mongo};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

mod config;
pub mod consumer;
pub mod mail;
pub mod rules;
pub mod window;

pub use config::{Config, SERVICE};

/// Why the service could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kafka(#[from] kafka::Error),
    #[error(transparent)]
    Mongo(#[from] mongodb::error::Error),
    #[error("smtp transport: {0}")]
    Smtp(#[from] mail::BuildError),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

/// A built, not yet running, alerting service.
#[derive(Debug)]
pub struct App {
    config: Config,
    handler: consumer::Handler,
    mailer: mail::Mailer,
    listener: TcpListener,
    readiness: Readiness,
}

impl App {
    /// Connects, creates the indexes, builds the SMTP transport and binds the health server.
    pub async fn build(config: Config) -> Result<Self> {
        let db = mongo::connect(&config.mongo, SERVICE).await?;
        window::Windows::ensure_indexes(&db).await?;
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
        )?;
        let listener = TcpListener::bind((config.host.as_str(), config.port)).await?;
        let readiness = Readiness {
            kafka: Some(config.kafka.clone()),
            mongo: Some(db),
            timeout: None,
            indexes: None,
        };
        for rule in config.rules.all() {
            tracing::info!(rule = %rule.name, matches = %rule.matcher.describe(), threshold = rule.threshold,
                window_secs = rule.window.as_secs(), cooldown_secs = rule.cooldown.as_secs(), "alert rule");
        }
        Ok(Self {
            config,
            handler,
            mailer,
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

    /// Runs the consumer, the sender and the health server until `shutdown`; then the consumer finishes the
    /// message in hand and commits the stored offsets.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<()> {
        let consumers = watch::Health::default();
        let topic = self.config.kafka.topics().status();
        let watch = Watch::new(self.config.group_id(), vec![topic], &consumers);
        let checks = watch.spawn_checks(
            self.config.kafka.clone(),
            self.config.watch,
            shutdown.clone(),
        );
        let router = health::router_with_consumers(config::SERVICE, self.readiness, consumers);
        // The sender and the health server stop with the consumer, whatever stopped it.
        let stop = shutdown.child_token();
        let http_shutdown = stop.clone();
        let http = tokio::spawn(async move {
            axum::serve(self.listener, router)
                .with_graceful_shutdown(http_shutdown.cancelled_owned())
                .await
        });
        let windows = self.handler.windows.clone();
        let sender = tokio::spawn(self.mailer.run(
            Arc::clone(&self.handler.wake),
            self.config.sweep_interval,
            stop.clone(),
            move || {
                let windows = windows.clone();
                async move {
                    if let Err(e) = windows.delete_expired().await {
                        tracing::warn!(error = %e, "deleting expired window hits failed");
                    }
                }
            },
        ));
        let consumed = consumer::run(
            self.config.kafka.clone(),
            watch,
            self.handler,
            shutdown.clone(),
        )
        .await;
        stop.cancel();
        checks.abort();
        let (sender, http) = tokio::join!(sender, http);
        if let Err(join) = sender {
            tracing::error!(error = %join, "the sender task panicked");
        }
        consumed?;
        if let Ok(Err(e)) = http {
            return Err(Error::Io(e));
        }
        Ok(())
    }
}
