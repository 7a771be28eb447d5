//! The delay-tier consumer: holds each partition until its head is due, then publishes the retry to the
//! `retry` lane and only then stores the offset.
//!
//! A partition whose head is not due is paused (librdkafka stops fetching it; nothing spins) and the head is
//! kept aside with its due time. Other partitions and tiers go on. When the head is due it is published, its
//! offset stored, the partition rewound to just after it (anything fetched behind it while paused is read again)
//! and resumed. A restart loses nothing: an unpublished head's offset was never stored, so it is read again.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use herald_domain::messages::{HEADER_ATTEMPT, HEADER_EVENT_ID};
use herald_domain::{DelayedRetry, Lane};
use herald_platform::kafka;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::{until_done, AppState, Result};

/// Kafka header with the due time of a fired retry (RFC 3339), so its scheduling error can be measured.
pub const HEADER_DUE_AT: &str = "herald-due-at";

/// A paused partition's head, waiting for its due time.
#[derive(Debug)]
struct Held {
    message: OwnedMessage,
    delayed: DelayedRetry,
}

/// Consumes every delay-tier topic until `shutdown`.
pub async fn run(
    consumer: StreamConsumer,
    state: AppState,
    shutdown: CancellationToken,
) -> Result<()> {
    let tier_topics: Vec<String> = state
        .tiers_secs
        .iter()
        .map(|t| state.topics.delay(*t))
        .collect();
    let tier_refs: Vec<&str> = tier_topics.iter().map(String::as_str).collect();
    consumer.subscribe(&tier_refs).map_err(kafka::Error::from)?;
    let mut held: HashMap<(String, i32), Held> = HashMap::new();
    loop {
        let next_due = held.values().map(|h| h.delayed.due_at).min();
        let wake = async {
            match next_due {
                Some(due) => {
                    let wait = (due - Utc::now()).to_std().unwrap_or_default();
                    tokio::time::sleep(wait).await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = wake => {
                if !release_due(&consumer, &state, &mut held, &shutdown).await {
                    break;
                }
            }
            received = consumer.recv() => {
                let message = match received {
                    Ok(message) => message.detach(),
                    Err(e) => {
                        tracing::warn!(error = %e, "delay tiers: consumer error");
                        continue;
                    }
                };
                let key = (message.topic().to_owned(), message.partition());
                if held.contains_key(&key) {
                    // Fetched behind a held head before the pause took effect: it is read again after the rewind.
                    continue;
                }
                if !accept(&consumer, &state, &mut held, message, &shutdown).await {
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

/// Handles a fresh message: fire it if due, pass it on through its tier again if it is due later than the tier
/// lasts, otherwise hold it and pause its partition. Returns false on shutdown.
async fn accept(
    consumer: &StreamConsumer,
    state: &AppState,
    held: &mut HashMap<(String, i32), Held>,
    message: OwnedMessage,
    shutdown: &CancellationToken,
) -> bool {
    let delayed: DelayedRetry = match serde_json::from_slice(message.payload().unwrap_or_default())
    {
        Ok(delayed) => delayed,
        Err(e) => {
            let reason = format!("undecodable delayed retry: {e}");
            let dead_letters = state.topics.dead_letters();
            let sent = until_done("dead-lettering a poison delayed retry", shutdown, || {
                kafka::dead_letter_poison(&state.producer, &dead_letters, &message, &reason)
            })
            .await;
            if sent.is_none() {
                return false;
            }
            store(consumer, &message);
            return true;
        }
    };
    let now = Utc::now();
    if delayed.due_at <= now {
        if fire(state, &delayed, shutdown).await.is_none() {
            return false;
        }
        store(consumer, &message);
        return true;
    }
    let tier = chrono::Duration::seconds(i64::try_from(delayed.tier_secs).unwrap_or(i64::MAX));
    if delayed.due_at - now > tier {
        // Due later than this tier lasts (a Retry-After beyond the longest tier): pass it through the tier again
        // rather than block the partition.
        let payload = message.payload().unwrap_or_default().to_vec();
        let key = message
            .key()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_default();
        let sent = until_done("re-queuing a long delay", shutdown, || {
            kafka::send(&state.producer, message.topic(), &key, &payload, None)
        })
        .await;
        if sent.is_none() {
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
    held.insert(
        (message.topic().to_owned(), message.partition()),
        Held { message, delayed },
    );
    true
}

/// Fires every held head that is due, rewinds and resumes its partition. Returns false on shutdown.
async fn release_due(
    consumer: &StreamConsumer,
    state: &AppState,
    held: &mut HashMap<(String, i32), Held>,
    shutdown: &CancellationToken,
) -> bool {
    let now: DateTime<Utc> = Utc::now();
    let due: Vec<(String, i32)> = held
        .iter()
        .filter(|(_, h)| h.delayed.due_at <= now)
        .map(|(k, _)| k.clone())
        .collect();
    for key in due {
        let Some(head) = held.get(&key) else { continue };
        if fire(state, &head.delayed, shutdown).await.is_none() {
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
        held.remove(&key);
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
    until_done("publishing a due retry", shutdown, || {
        kafka::send(
            &state.producer,
            &lane,
            message.event.partition_key(),
            &payload,
            Some(kafka::headers(&headers)),
        )
    })
    .await?;
    tracing::info!(event_id = %event_id, attempt = message.attempt, lateness_ms, "retry fired");
    metrics::histogram!("herald_retry_lateness_seconds", "tier" => format!("{}s", delayed.tier_secs))
        .record(lateness_ms.max(0) as f64 / 1000.0);
    Some(())
}

fn store(consumer: &StreamConsumer, message: &OwnedMessage) {
    if let Err(e) = consumer.store_offset(message.topic(), message.partition(), message.offset()) {
        tracing::warn!(error = %e, "storing a delay offset failed (partition revoked?)");
    }
}
