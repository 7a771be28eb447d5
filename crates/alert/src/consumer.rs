//! The status consumer: each message is counted in the window of every rule it matches, alerts are raised and
//! stored, and only then is its offset stored.

use std::sync::Arc;
use std::time::Duration;

use herald_domain::StatusMessage;
use herald_platform::kafka;
use herald_platform::kafka::watch::{Watch, WatchedConsumer};
use herald_platform::KafkaConfig;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::FutureProducer;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::rules::Rules;
use crate::window::Windows;

/// First and longest wait between two tries of a message that failed on MongoDB or Kafka.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_CAP: Duration = Duration::from_secs(5);

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
    async fn handle_durably(&self, message: &OwnedMessage, shutdown: &CancellationToken) -> bool {
        let mut backoff = BACKOFF_FIRST;
        loop {
            match self.handle(message).await {
                Ok(()) => return true,
                Err(e) => {
                    tracing::warn!(error = %e, partition = message.partition(), offset = message.offset(),
                        retry_in_ms = backoff.as_millis() as u64, "handling a status message failed; trying again");
                    tokio::select! {
                        _ = shutdown.cancelled() => return false,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(BACKOFF_CAP);
                }
            }
        }
    }

    #[tracing::instrument(skip_all, fields(event_id, partition = message.partition(), offset = message.offset()))]
    async fn handle(&self, message: &OwnedMessage) -> Result<(), String> {
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
                    .map_err(|e| e.to_string());
                }
            };
        tracing::Span::current().record("event_id", status.event_id.as_str());
        metrics::counter!("herald_alert_status_messages_total", "outcome" => status.outcome.as_str())
            .increment(1);
        let mut raised = false;
        for rule in self.rules.matching(&status) {
            let group = rule.group_of(&status);
            if let Some(alert) = self
                .windows
                .observe(rule, &group, &status)
                .await
                .map_err(|e| e.to_string())?
            {
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
