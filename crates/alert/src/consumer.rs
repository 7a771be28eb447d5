//! The status consumer: each message is counted in the window of every rule it matches, alerts are raised and
//! stored, and only then is its offset stored.

use std::sync::Arc;

use herald_domain::StatusMessage;
use herald_platform::kafka::watch::{Watch, WatchedConsumer};
use herald_platform::retry::{until_done, Backoff};
use herald_platform::KafkaConfig;
use herald_platform::{kafka, telemetry};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::FutureProducer;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::rules::Rules;
use crate::window::Windows;

/// Why handling a status message failed this time; both are transient, and the message is tried again.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    #[error("kafka: {0}")]
    Kafka(#[from] kafka::Error),
    #[error("mongodb: {0}")]
    Mongo(#[from] mongodb::error::Error),
}

/// What handling a message needs.
#[derive(Clone)]
pub struct Handler {
    pub rules: Arc<Rules>,
    pub windows: Windows,
    pub producer: FutureProducer,
    pub dead_letters: String,
    /// Wakes the sender when an alert was stored.
    pub wake: Arc<Notify>,
}

impl std::fmt::Debug for Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handler")
            .field("rules", &self.rules)
            .field("dead_letters", &self.dead_letters)
            .finish_non_exhaustive()
    }
}

/// Consumes the topic of `watch` until `shutdown`, then commits the stored offsets. When the watch finds the
/// consumer stuck, it is closed (detached) and a fresh one subscribed; unstored offsets come again.
pub async fn run(
    kafka_config: KafkaConfig,
    watch: Arc<Watch>,
    handler: Handler,
    shutdown: CancellationToken,
) -> kafka::Result<()> {
    let mut consumer = WatchedConsumer::subscribe(&kafka_config, &watch, "status topic")?;
    while let Some(message) = consumer.next(&shutdown).await? {
        let handling = consumer.watch().handling();
        if !handler.handle_durably(&message, &shutdown).await {
            break;
        }
        consumer.store_offset(&message);
        drop(handling);
    }
    consumer.commit_and_close().await
}

impl Handler {
    /// Handles `message` until it is done (true) or `shutdown` comes first (false: the offset must not be
    /// stored). MongoDB and Kafka failures are transient: the message is tried again, never dropped.
    ///
    /// Every try is in one span, `alert.status`, continuing the trace of the step the message reports.
    async fn handle_durably(&self, message: &OwnedMessage, shutdown: &CancellationToken) -> bool {
        let span = tracing::info_span!(
            "alert.status",
            event_id = tracing::field::Empty,
            partition = message.partition(),
            offset = message.offset(),
        );
        telemetry::follow_message(&span, message);
        until_done(
            "handling a status message",
            Backoff::TRANSIENT,
            shutdown,
            || self.handle(message),
        )
        .instrument(span)
        .await
        .is_some()
    }

    /// One try of a status message, in the span of [`Handler::handle_durably`].
    async fn handle(&self, message: &OwnedMessage) -> Result<(), HandleError> {
        let status: StatusMessage =
            match serde_json::from_slice(message.payload().unwrap_or_default()) {
                Ok(status) => status,
                Err(e) => {
                    tracing::warn!(error = %e, "undecodable status message, dead-lettered");
                    return kafka::dead_letter_poison(
                        &self.producer,
                        &self.dead_letters,
                        message,
                        &format!("undecodable status message: {e}"),
                    )
                    .await
                    .map_err(HandleError::from);
                }
            };
        tracing::Span::current().record("event_id", status.event_id.as_str());
        metrics::counter!("herald_alert_status_messages_total", "outcome" => status.outcome.as_str())
            .increment(1);
        let mut raised = false;
        for rule in self.rules.matching(&status) {
            let group = rule.group_of(&status);
            if let Some(alert) = self.windows.observe(rule, &group, &status).await? {
                tracing::info!(alert = %alert.id, rule = %alert.rule, group = %alert.group, count = alert.count,
                    severity = %alert.severity, "alert raised");
                metrics::counter!("herald_alerts_raised_total", "rule" => rule.name.clone())
                    .increment(1);
                raised = true;
            }
        }
        if raised {
            self.wake.notify_one();
        }
        Ok(())
    }
}
