//! Publishing accepted events to their lane, and the sweeper that publishes what the outbox still holds.
//!
//! An event is recorded in MongoDB (QUEUED, with an entry in the `outbox` collection) before it is published, and
//! the entry is deleted once Kafka acknowledged: when Kafka does not (it is down, or the process dies in between),
//! the entry stays and the sweeper publishes its event once Kafka answers again. The event document itself is
//! never written after the publish (see `herald_platform::store`'s outbox module for why). A sweep may publish an
//! event that a slow request is still publishing; the duplicate is harmless because dispatchers claim attempts
//! conditionally.

use std::fmt;
use std::time::Duration;

use chrono::Utc;
use futures::future::join_all;
use herald_domain::messages::{HEADER_ATTEMPT, HEADER_EVENT_ID, HEADER_REQUEST_ID};
use herald_domain::{Event, Lane, LaneMessage, Topics};
use herald_platform::kafka;
use herald_platform::store::EventStore;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, Producer};
use tokio_util::sync::CancellationToken;

use crate::AppState;

/// Most outbox entries looked at, and events published, at once.
const SWEEP_BATCH: usize = 100;

/// Why an event could not be published.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PublishError {
    #[error("cannot encode the lane message: {0}")]
    Encode(#[from] serde_json::Error),
    #[error(transparent)]
    Kafka(#[from] kafka::Error),
}

/// Publishes first attempts to the lane of their priority. Cheap to clone: the producer is shared.
#[derive(Clone)]
pub(crate) struct Publisher {
    producer: FutureProducer,
    topics: Topics,
}

impl fmt::Debug for Publisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publisher")
            .field("topics", &self.topics)
            .finish_non_exhaustive()
    }
}

impl Publisher {
    pub(crate) fn new(producer: FutureProducer, topics: Topics) -> Self {
        Self { producer, topics }
    }

    /// Publishes the first attempt of `event` after `replay_count` replays (0 for a new event) and waits for
    /// Kafka's acknowledgement (all in-sync replicas).
    ///
    /// The replay count must be the record's: dispatchers skip a message whose count differs, and a replayed
    /// dead letter that `herald-replay` could not publish is left in the outbox for the sweeper.
    /// `request_id` is the HTTP request that accepted the event, when there is one (the sweeper has none).
    #[tracing::instrument(skip_all, fields(event_id = %event.event_id, topic, partition, offset))]
    pub(crate) async fn publish(
        &self,
        event: &Event,
        replay_count: u32,
        request_id: Option<&str>,
    ) -> Result<(), PublishError> {
        let topic = self.topics.lane(Lane::for_priority(event.priority));
        tracing::Span::current().record("topic", topic.as_str());
        let message = LaneMessage {
            replay_count,
            ..LaneMessage::first(event.clone())
        };
        let payload = serde_json::to_vec(&message)?;
        let mut headers = OwnedHeaders::new()
            .insert(Header {
                key: HEADER_EVENT_ID,
                value: Some(event.event_id.as_str()),
            })
            .insert(Header {
                key: HEADER_ATTEMPT,
                value: Some("1"),
            });
        if let Some(request_id) = request_id {
            headers = headers.insert(Header {
                key: HEADER_REQUEST_ID,
                value: Some(request_id),
            });
        }
        let (partition, offset) = kafka::send(
            &self.producer,
            &topic,
            event.partition_key(),
            &payload,
            Some(headers),
        )
        .await?;
        tracing::Span::current()
            .record("partition", partition)
            .record("offset", offset);
        tracing::debug!("published");
        Ok(())
    }

    /// Waits (at most `timeout`) for messages still in the producer's queue; called once, at shutdown.
    pub(crate) async fn flush(&self, timeout: Duration) {
        let producer = self.producer.clone();
        // librdkafka's flush blocks its thread.
        let flushed = tokio::task::spawn_blocking(move || producer.flush(timeout)).await;
        if let Ok(Err(e)) = flushed {
            tracing::warn!(error = %e, "messages left unflushed at shutdown; the sweeper of the next start republishes them");
        }
    }
}

/// Publishes the events whose outbox entries are older than `age`, every `interval`, until `shutdown`.
///
/// Until the MongoDB indexes exist (MongoDB was away at startup), each tick first tries to create them.
pub(crate) async fn sweep_until_stopped(
    state: AppState,
    interval: Duration,
    age: Duration,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = ticker.tick() => {}
        }
        // Stopping mid-sweep is safe: an entry is deleted only after its publish, so what is left is swept again.
        let work = async {
            if state.indexes.is_open() {
                sweep(&state.store, &state.publisher, age).await
            } else {
                Ok(0)
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => break,
            swept = work => match swept {
                Ok(0) => {}
                Ok(n_events) => tracing::info!(n_events, "published events left in the outbox"),
                Err(e) => tracing::warn!(error = %e, "outbox sweep failed; trying again next interval"),
            },
        }
    }
    tracing::debug!("outbox sweeper stopped");
}

/// Why a sweep stopped early.
#[derive(Debug, thiserror::Error)]
enum SweepError {
    #[error("mongodb: {0}")]
    Mongo(#[from] mongodb::error::Error),
    #[error("{n_failed} of {n_events} events not published: {first}")]
    Publish {
        n_failed: usize,
        n_events: usize,
        first: PublishError,
    },
}

/// One pass over the outbox, batch by batch, oldest first. Returns how many events were published.
async fn sweep(
    store: &EventStore,
    publisher: &Publisher,
    age: Duration,
) -> Result<usize, SweepError> {
    let age = chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX);
    let mut n_published = 0;
    loop {
        let cutoff = Utc::now()
            .checked_sub_signed(age)
            .unwrap_or(chrono::DateTime::<Utc>::MIN_UTC);
        let found = store.unpublished_before(cutoff, SWEEP_BATCH as i64).await?;
        let batch = found.events;
        let n_events = batch.len();
        // Sent together so that a batch takes one round trip, not one per event; the producer keeps the order in
        // which they are handed to it, which is the order of acceptance.
        let events: Vec<(Event, u32)> = batch
            .iter()
            .map(|record| (record.event(), record.replay_count))
            .collect();
        let results = join_all(
            events
                .iter()
                .map(|(event, replay_count)| publisher.publish(event, *replay_count, None)),
        )
        .await;
        let mut failures = Vec::new();
        let mut published = Vec::new();
        for ((event, replay_count), result) in events.iter().zip(results) {
            match result {
                Ok(()) => published.push((event.event_id.clone(), *replay_count)),
                Err(e) => failures.push(e),
            }
        }
        store.mark_published(&published).await?;
        n_published += published.len();
        let n_failed = failures.len();
        if let Some(first) = failures.into_iter().next() {
            // Most likely Kafka is still away: wait for the next interval rather than retrying at once.
            return Err(SweepError::Publish {
                n_failed,
                n_events,
                first,
            });
        }
        if !found.more {
            return Ok(n_published);
        }
    }
}
