//! The stats consumer: reads the status topic in its own group, folds each batch of steps into the hourly
//! buckets, and only then stores the batch's offsets. An undecodable message is dead-lettered (raw, with where it
//! came from) before its offset is stored; a MongoDB failure is retried with backoff, never skipped.

use std::sync::Arc;
use std::time::Duration;

use herald_domain::StatusMessage;
use herald_platform::kafka;
use herald_platform::kafka::watch::{Watch, WatchedConsumer};
use herald_platform::retry::{until_done, Backoff};
use herald_platform::KafkaConfig;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::FutureProducer;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::buckets::{Buckets, Step};

/// Most messages folded in one batch.
pub const BATCH_MAX: usize = 500;
/// Longest a batch waits for more messages once it has one: the delay a step can add before it is counted.
pub const BATCH_WAIT: Duration = Duration::from_millis(200);

/// The consumer group of the stats consumer, under the installation's prefix.
pub fn group_id(kafka: &KafkaConfig) -> String {
    format!("{}herald-query-stats", kafka.topic_prefix)
}

/// What folding needs: the buckets, and where undecodable messages go.
#[derive(Clone)]
pub struct Folder {
    pub buckets: Buckets,
    pub producer: FutureProducer,
    pub dead_letters: String,
}

impl std::fmt::Debug for Folder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Folder")
            .field("dead_letters", &self.dead_letters)
            .finish_non_exhaustive()
    }
}

/// Consumes the status topic of `watch` until `shutdown`, then commits the stored offsets. A batch cut short by
/// `shutdown` stores nothing: its messages come again, and the buckets' offsets keep them from counting twice.
pub async fn run(
    kafka_config: KafkaConfig,
    watch: Arc<Watch>,
    folder: Folder,
    shutdown: CancellationToken,
) -> kafka::Result<()> {
    let mut consumer = WatchedConsumer::subscribe(&kafka_config, &watch, "status topic (stats)")?;
    'batches: while let Some(first) = consumer.next(&shutdown).await? {
        let mut batch = vec![first];
        let until = Instant::now() + BATCH_WAIT;
        while batch.len() < BATCH_MAX {
            match tokio::time::timeout_at(until, consumer.next(&shutdown)).await {
                Ok(Ok(Some(message))) => batch.push(message),
                Ok(Ok(None)) => break 'batches,
                Ok(Err(e)) => return Err(e),
                Err(_waited) => break,
            }
        }
        let handling = consumer.watch().handling();
        if !folder.fold_durably(&batch, &shutdown).await {
            break;
        }
        for message in &batch {
            consumer.store_offset(message);
        }
        drop(handling);
    }
    consumer.commit_and_close().await
}

impl Folder {
    /// Folds `batch` until it is done (true) or `shutdown` comes first (false: no offset may be stored).
    async fn fold_durably(&self, batch: &[OwnedMessage], shutdown: &CancellationToken) -> bool {
        until_done(
            "folding status messages into the stats",
            Backoff::TRANSIENT,
            shutdown,
            || self.fold(batch),
        )
        .await
        .is_some()
    }

    async fn fold(&self, batch: &[OwnedMessage]) -> Result<(), FoldError> {
        let mut steps = Vec::with_capacity(batch.len());
        for message in batch {
            match serde_json::from_slice::<StatusMessage>(message.payload().unwrap_or_default()) {
                Ok(status) => steps.push(Step {
                    partition: message.partition(),
                    offset: message.offset(),
                    status,
                }),
                Err(e) => {
                    tracing::warn!(error = %e, partition = message.partition(), offset = message.offset(),
                        "undecodable status message, dead-lettered");
                    kafka::dead_letter_poison(
                        &self.producer,
                        &self.dead_letters,
                        message,
                        &format!("undecodable status message: {e}"),
                    )
                    .await?;
                }
            }
        }
        self.buckets.apply(&steps).await?;
        metrics::counter!("herald_query_stats_steps_total").increment(steps.len() as u64);
        Ok(())
    }
}

/// Why a batch was not folded; each is tried again.
#[derive(Debug, thiserror::Error)]
enum FoldError {
    #[error("kafka: {0}")]
    Kafka(#[from] kafka::Error),
    #[error(transparent)]
    Buckets(#[from] super::buckets::BucketError),
}
