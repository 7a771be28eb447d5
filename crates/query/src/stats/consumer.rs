//! The stats consumer: reads the status topic and the critical and default lanes in its own group, folds each
//! batch into the hourly buckets (status steps) and the minute buckets (steps, and the lanes' newly accepted
//! events), and only then stores the batch's offsets. An undecodable status message is dead-lettered (raw, with
//! where it came from) before its offset is stored; an undecodable lane message is skipped, since the lane's
//! dispatcher dead-letters it. A MongoDB failure is retried with backoff, never skipped.

use std::sync::Arc;
use std::time::Duration;

use herald_domain::{Lane, StatusMessage, Topics};
use herald_platform::kafka;
use herald_platform::kafka::watch::{Watch, WatchedConsumer};
use herald_platform::retry::{until_done, Backoff};
use herald_platform::KafkaConfig;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::FutureProducer;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::buckets::{Buckets, Step};
use super::minutes::{self, LaneHead, MinuteBuckets};

/// Most messages folded in one batch.
pub const BATCH_MAX: usize = 500;
/// Longest a batch waits for more messages once it has one: the delay a step can add before it is counted.
pub const BATCH_WAIT: Duration = Duration::from_millis(200);

/// The consumer group of the stats consumer, under the installation's prefix.
pub fn group_id(kafka: &KafkaConfig) -> String {
    format!("{}herald-query-stats", kafka.topic_prefix)
}

/// The lanes whose messages count accepted events: every new event goes to one of them first (the retry lane
/// carries later attempts only).
pub const COUNTED_LANES: [Lane; 2] = [Lane::Critical, Lane::Default];

/// The topics the stats consumer reads: the status topic, then [`COUNTED_LANES`].
pub fn topics(topics: &Topics) -> Vec<String> {
    std::iter::once(topics.status())
        .chain(COUNTED_LANES.iter().map(|lane| topics.lane(*lane)))
        .collect()
}

/// What folding needs: the buckets, the topics' names, and where undecodable messages go.
#[derive(Clone)]
pub struct Folder {
    pub buckets: Buckets,
    pub minutes: MinuteBuckets,
    pub topics: Topics,
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
        let status_topic = self.topics.status();
        let lanes: Vec<(Lane, String)> = COUNTED_LANES
            .iter()
            .map(|lane| (*lane, self.topics.lane(*lane)))
            .collect();
        let mut steps = Vec::with_capacity(batch.len());
        let mut per_minute = Vec::with_capacity(batch.len());
        for message in batch {
            let payload = message.payload().unwrap_or_default();
            if message.topic() != status_topic {
                let Some((lane, _)) = lanes.iter().find(|(_, name)| name == message.topic()) else {
                    continue;
                };
                match serde_json::from_slice::<LaneHead>(payload) {
                    Ok(head) => per_minute.extend(minutes::of_lane_message(
                        *lane,
                        message.partition(),
                        message.offset(),
                        &head,
                    )),
                    Err(e) => tracing::debug!(error = %e, topic = message.topic(),
                        partition = message.partition(), offset = message.offset(),
                        "undecodable lane message, not counted (its dispatcher dead-letters it)"),
                }
                continue;
            }
            match serde_json::from_slice::<StatusMessage>(payload) {
                Ok(status) => {
                    per_minute.extend(minutes::of_step(
                        message.partition(),
                        message.offset(),
                        &status,
                    ));
                    steps.push(Step {
                        partition: message.partition(),
                        offset: message.offset(),
                        status,
                    });
                }
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
        self.minutes.apply(per_minute, chrono::Utc::now()).await?;
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
