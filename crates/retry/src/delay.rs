//! The delay-tier consumer: holds each partition until its head is due, then publishes the retry to the
//! `retry` lane and only then stores the offset.
//!
//! A partition whose head is not due is paused (librdkafka stops fetching it; nothing spins) and the head is
//! kept aside with its wake time. Other partitions and tiers go on. When the head is due it is published, its
//! offset stored, the partition rewound to just after it (anything fetched behind it while paused is read again)
//! and resumed. A restart loses nothing: an unpublished head's offset was never stored, so it is read again.
//!
//! A retry due later than its tier lasts (a Retry-After beyond the longest tier) is held like any head until one
//! tier length after it was published (its Kafka timestamp), then published to the tier again: once per tier
//! length, not in a loop. Every head behind it was published later, so it is due later too.
//!
//! Rebalances: a revoked partition's held head is dropped at once ([`DelayContext`]), so only the partition's
//! new owner fires it; a partition assigned again is resumed and read from its committed offset.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use herald_domain::messages::{HEADER_ATTEMPT, HEADER_EVENT_ID};
use herald_domain::{DelayedRetry, Lane};
use herald_platform::kafka::watch::Watch;
use herald_platform::retry::{until_done, Backoff};
use herald_platform::{kafka, telemetry, KafkaConfig};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{AppState, Result};

/// Kafka header with the due time of a fired retry (RFC 3339), so its scheduling error can be measured.
pub const HEADER_DUE_AT: &str = "herald-due-at";

/// A due time this close after "published + tier" is waited for rather than passed through the tier again: the
/// scheduler's due time and the broker's timestamp differ by a few milliseconds.
const WAIT_SLACK: chrono::Duration = chrono::Duration::seconds(1);

type Key = (String, i32);

/// A paused partition's head, waiting until `wake_at`.
#[derive(Debug, Clone)]
struct Held {
    message: OwnedMessage,
    delayed: DelayedRetry,
    /// The earlier of its due time and one tier length after it was published: then it is fired, or (due later
    /// than that, a Retry-After beyond the longest tier) published to its tier again.
    wake_at: DateTime<Utc>,
}

/// The heads held by one consumer, shared with its context so a revoked partition's head is dropped at once.
type HeldHeads = Arc<Mutex<HashMap<Key, Held>>>;

fn lock(held: &HeldHeads) -> MutexGuard<'_, HashMap<Key, Held>> {
    held.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The delay consumer's context: follows rebalances. A revoked partition's held head is dropped (its new owner
/// reads it again from the committed offset, and this process must not fire it too); an assigned partition is
/// resumed, since it may come back still paused from an earlier hold.
#[derive(Debug)]
pub struct DelayContext {
    watch: Arc<Watch>,
    held: HeldHeads,
}

impl ClientContext for DelayContext {
    fn stats(&self, statistics: rdkafka::Statistics) {
        kafka::record_consumer_lag(&statistics, self.watch.group());
    }
}

impl ConsumerContext for DelayContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(list) => {
                self.watch.revoked(list);
                let mut held = lock(&self.held);
                for e in list.elements() {
                    if held
                        .remove(&(e.topic().to_owned(), e.partition()))
                        .is_some()
                    {
                        tracing::debug!(
                            topic = e.topic(),
                            partition = e.partition(),
                            "revoked: held head dropped"
                        );
                    }
                }
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "delay tiers: rebalance failed"),
            Rebalance::Assign(_) => {}
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            self.watch.assigned(list);
            if let Err(e) = consumer.resume(list) {
                tracing::warn!(error = %e, "resuming assigned delay partitions failed");
            }
        }
    }
}

pub type DelayConsumer = StreamConsumer<DelayContext>;

/// A delay-tier consumer subscribed to the topics of `watch`.
pub fn build_consumer(
    kafka_config: &KafkaConfig,
    watch: &Arc<Watch>,
) -> kafka::Result<DelayConsumer> {
    let context = DelayContext {
        watch: Arc::clone(watch),
        held: HeldHeads::default(),
    };
    let consumer = kafka::build_consumer_with_context(kafka_config, watch.group(), context)?;
    let refs: Vec<&str> = watch.topics().iter().map(String::as_str).collect();
    consumer.subscribe(&refs)?;
    Ok(consumer)
}

/// What woke the loop.
enum Next {
    Stop,
    Stuck,
    Wake,
    Received(std::result::Result<OwnedMessage, KafkaError>),
}

/// Consumes every delay-tier topic (those of `watch`) until `shutdown`; rebuilds the consumer when the watch
/// finds it stuck.
pub async fn run(
    kafka_config: KafkaConfig,
    watch: Arc<Watch>,
    state: AppState,
    shutdown: CancellationToken,
) -> Result<()> {
    let mut consumer = build_consumer(&kafka_config, &watch)?;
    loop {
        let next_wake = lock(&consumer.context().held)
            .values()
            .map(|h| h.wake_at)
            .min();
        let wake = async {
            match next_wake {
                Some(at) => {
                    let wait = (at - Utc::now()).to_std().unwrap_or_default();
                    tokio::time::sleep(wait).await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        let next = tokio::select! {
            _ = shutdown.cancelled() => Next::Stop,
            _ = watch.stuck() => Next::Stuck,
            _ = wake => Next::Wake,
            received = consumer.recv() => Next::Received(received.map(|m| m.detach())),
        };
        match next {
            Next::Stop => break,
            Next::Stuck => {
                // Held heads were never published: the fresh consumer reads them again.
                watch.rebuilding(&watch.problem().unwrap_or_default());
                kafka::watch::close_detached(consumer);
                consumer = build_consumer(&kafka_config, &watch)?;
            }
            Next::Wake => {
                if !release_due(&consumer, &state, &shutdown).await {
                    break;
                }
            }
            Next::Received(Err(e)) => tracing::warn!(error = %e, "delay tiers: consumer error"),
            Next::Received(Ok(message)) => {
                watch.progressed();
                let key = (message.topic().to_owned(), message.partition());
                if lock(&consumer.context().held).contains_key(&key) {
                    // Fetched behind a held head before the pause took effect: it is read again after the rewind.
                    continue;
                }
                if !accept(&consumer, &state, message, &shutdown).await {
                    break;
                }
            }
        }
    }
    // Held heads were never published, so their offsets were never stored: the next run reads them again.
    if let Err(e) = kafka::commit_and_close(consumer).await {
        tracing::warn!(error = %e, "final commit of the delay tiers failed; the next owner repeats a few messages");
    }
    Ok(())
}

/// When a message read now should be acted on: its due time, or, due later than one tier length after it was
/// published, that (it then goes through its tier again).
fn wake_at(message: &OwnedMessage, delayed: &DelayedRetry) -> DateTime<Utc> {
    let published = message
        .timestamp()
        .to_millis()
        .and_then(DateTime::from_timestamp_millis)
        .unwrap_or_else(Utc::now);
    let tier = chrono::Duration::seconds(i64::try_from(delayed.tier_secs).unwrap_or(i64::MAX));
    let tier_end = published.checked_add_signed(tier).unwrap_or(delayed.due_at);
    if delayed.due_at <= tier_end + WAIT_SLACK {
        delayed.due_at
    } else {
        tier_end
    }
}

/// Handles a fresh message: fire it if due, pass it through its tier again if its tier length since it was
/// published is over, otherwise hold it and pause its partition. Returns false on shutdown.
async fn accept(
    consumer: &DelayConsumer,
    state: &AppState,
    message: OwnedMessage,
    shutdown: &CancellationToken,
) -> bool {
    let delayed: DelayedRetry = match serde_json::from_slice(message.payload().unwrap_or_default())
    {
        Ok(delayed) => delayed,
        Err(e) => {
            let reason = format!("undecodable delayed retry: {e}");
            let dead_letters = state.topics.dead_letters();
            let sent = until_done(
                "dead-lettering a poison delayed retry",
                Backoff::TRANSIENT,
                shutdown,
                || kafka::dead_letter_poison(&state.producer, &dead_letters, &message, &reason),
            )
            .await;
            if sent.is_none() {
                return false;
            }
            store(consumer, &message);
            return true;
        }
    };
    let now = Utc::now();
    let wake_at = wake_at(&message, &delayed);
    if wake_at <= now {
        if act(state, &message, &delayed, shutdown).await.is_none() {
            return false;
        }
        store(consumer, &message);
        return true;
    }
    let mut partition = TopicPartitionList::new();
    partition.add_partition(message.topic(), message.partition());
    if let Err(e) = consumer.pause(&partition) {
        tracing::warn!(error = %e, "pausing a delay partition failed");
    }
    consumer
        .context()
        .watch
        .park(message.topic(), message.partition());
    lock(&consumer.context().held).insert(
        (message.topic().to_owned(), message.partition()),
        Held {
            message,
            delayed,
            wake_at,
        },
    );
    true
}

/// At a head's wake time: fires it if due, otherwise (a wait longer than its tier) publishes it to its tier
/// again, at most once per tier length. `None` on shutdown.
///
/// Its span, `retry.release`, continues the trace of the decision that scheduled the retry, and the message it
/// publishes carries it on.
async fn act(
    state: &AppState,
    message: &OwnedMessage,
    delayed: &DelayedRetry,
    shutdown: &CancellationToken,
) -> Option<()> {
    let span = tracing::info_span!(
        "retry.release",
        event_id = %delayed.message.event.event_id,
        attempt = delayed.message.attempt,
        tier_secs = delayed.tier_secs,
    );
    telemetry::follow_message(&span, message);
    release(state, message, delayed, shutdown)
        .instrument(span)
        .await
}

/// [`act`]'s work, in its span.
async fn release(
    state: &AppState,
    message: &OwnedMessage,
    delayed: &DelayedRetry,
    shutdown: &CancellationToken,
) -> Option<()> {
    if delayed.due_at <= Utc::now() {
        return fire(state, delayed, shutdown).await;
    }
    let payload = message.payload().unwrap_or_default().to_vec();
    let key = message
        .key()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .unwrap_or_default();
    let headers = message.headers().cloned();
    until_done(
        "re-queuing a long delay",
        Backoff::TRANSIENT,
        shutdown,
        || {
            kafka::send(
                &state.producer,
                message.topic(),
                &key,
                &payload,
                headers.clone(),
            )
        },
    )
    .await?;
    tracing::debug!(due_at = %delayed.due_at, topic = message.topic(), "long delay passed through its tier again");
    Some(())
}

/// Acts on every held head whose wake time has come, rewinds and resumes its partition. Returns false on
/// shutdown.
async fn release_due(
    consumer: &DelayConsumer,
    state: &AppState,
    shutdown: &CancellationToken,
) -> bool {
    let now: DateTime<Utc> = Utc::now();
    let due: Vec<Held> = lock(&consumer.context().held)
        .values()
        .filter(|h| h.wake_at <= now)
        .cloned()
        .collect();
    for head in due {
        let key = (head.message.topic().to_owned(), head.message.partition());
        if act(state, &head.message, &head.delayed, shutdown)
            .await
            .is_none()
        {
            return false;
        }
        store(consumer, &head.message);
        let next = Offset::Offset(head.message.offset() + 1);
        if let Err(e) = consumer.seek(&key.0, key.1, next, std::time::Duration::from_secs(5)) {
            tracing::warn!(error = %e, topic = %key.0, partition = key.1, "rewinding a delay partition failed");
        }
        let mut partition = TopicPartitionList::new();
        partition.add_partition(&key.0, key.1);
        if let Err(e) = consumer.resume(&partition) {
            tracing::warn!(error = %e, "resuming a delay partition failed");
        }
        consumer.context().watch.unpark(&key.0, key.1);
        lock(&consumer.context().held).remove(&key);
    }
    true
}

/// Publishes a due retry to the retry lane and waits for Kafka's acknowledgement.
async fn fire(
    state: &AppState,
    delayed: &DelayedRetry,
    shutdown: &CancellationToken,
) -> Option<()> {
    let mut message = delayed.message.clone();
    message.enqueued_at = Utc::now();
    let lateness_ms = (message.enqueued_at - delayed.due_at).num_milliseconds();
    let payload = serde_json::to_vec(&message).ok()?;
    let event_id = message.event.event_id.to_string();
    let attempt = message.attempt.to_string();
    let due_at = delayed.due_at.to_rfc3339();
    let headers = [
        (HEADER_EVENT_ID, event_id.as_str()),
        (HEADER_ATTEMPT, attempt.as_str()),
        (HEADER_DUE_AT, due_at.as_str()),
    ];
    let lane = state.topics.lane(Lane::Retry);
    until_done(
        "publishing a due retry",
        Backoff::TRANSIENT,
        shutdown,
        || {
            kafka::send(
                &state.producer,
                &lane,
                message.event.partition_key(),
                &payload,
                Some(kafka::headers(&headers)),
            )
        },
    )
    .await?;
    tracing::info!(event_id = %event_id, attempt = message.attempt, lateness_ms, "retry fired");
    metrics::histogram!("herald_retry_lateness_seconds", "tier" => format!("{}s", delayed.tier_secs))
        .record(lateness_ms.max(0) as f64 / 1000.0);
    Some(())
}

fn store(consumer: &DelayConsumer, message: &OwnedMessage) {
    if let Err(e) = consumer.store_offset(message.topic(), message.partition(), message.offset()) {
        tracing::warn!(error = %e, "storing a delay offset failed (partition revoked?)");
    }
}
