//! Putting first attempts on the lanes, and the outbox sweeper: what every writer of the write path's front half
//! shares (ingest for new events, replay for replayed dead letters).
//!
//! An event is recorded (QUEUED, with an entry in the `outbox` collection, see [`crate::store`]'s outbox module)
//! before it is published, and the entry is deleted once Kafka acknowledged. When Kafka does not (it is down, or
//! the process dies in between), the entry stays, and any running sweeper (ingest's or replay's) publishes its
//! event once Kafka answers again. A sweep may publish an event that a slow request is still publishing, and two
//! sweepers may publish the same entry: the duplicates are harmless because dispatchers claim attempts
//! conditionally.

use std::fmt;
use std::time::Duration;

use chrono::Utc;
use futures::future::join_all;
use herald_domain::messages::{HEADER_ATTEMPT, HEADER_EVENT_ID, HEADER_REQUEST_ID};
use herald_domain::{Event, EventId, Lane, LaneMessage, Topics};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{FutureProducer, Producer};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::batch::{Batcher, Limits};
use crate::service::{IndexGate, Supervisor};
use crate::store::{self, EventStore};
use crate::{kafka, EnvReader};

/// Most outbox entries looked at, and events published, at once by a sweep.
const SWEEP_BATCH: usize = 100;

/// The headers of a message about one attempt of an event: its id, the attempt's number and, when an HTTP
/// request caused it, that request's id.
pub fn attempt_headers(event_id: &EventId, attempt: u32, request_id: Option<&str>) -> OwnedHeaders {
    let attempt = attempt.to_string();
    let mut pairs = vec![
        (HEADER_EVENT_ID, event_id.as_str()),
        (HEADER_ATTEMPT, attempt.as_str()),
    ];
    if let Some(id) = request_id {
        pairs.push((HEADER_REQUEST_ID, id));
    }
    kafka::headers(&pairs)
}

/// Why an event could not be published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("cannot encode the lane message: {0}")]
    Encode(#[from] serde_json::Error),
    #[error(transparent)]
    Kafka(#[from] kafka::Error),
}

/// Publishes lane messages to the lane of their event's priority. Cheap to clone: the producer is shared.
#[derive(Clone)]
pub struct LanePublisher {
    producer: FutureProducer,
    topics: Topics,
}

impl fmt::Debug for LanePublisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LanePublisher")
            .field("topics", &self.topics)
            .finish_non_exhaustive()
    }
}

impl LanePublisher {
    pub fn new(producer: FutureProducer, topics: Topics) -> Self {
        Self { producer, topics }
    }

    /// Publishes the first attempt of `event` in replay generation `replay_count` (0 for a new event) and waits
    /// for Kafka's acknowledgement (all in-sync replicas).
    ///
    /// The replay count must be the record's: dispatchers skip a message whose count differs. `request_id` is
    /// the HTTP request that accepted or replayed the event, when there is one (a sweep has none).
    pub async fn publish_first(
        &self,
        event: &Event,
        replay_count: u32,
        request_id: Option<&str>,
    ) -> Result<(), PublishError> {
        let message = LaneMessage {
            replay_count,
            ..LaneMessage::first(event.clone())
        };
        self.publish(&message, request_id).await
    }

    /// Publishes `message` to the lane of its event's priority and waits for Kafka's acknowledgement.
    #[tracing::instrument(name = "lane.publish", skip_all, fields(event_id = %message.event.event_id, topic, partition, offset))]
    pub async fn publish(
        &self,
        message: &LaneMessage,
        request_id: Option<&str>,
    ) -> Result<(), PublishError> {
        let event = &message.event;
        let topic = self.topics.lane(Lane::for_priority(event.priority));
        tracing::Span::current().record("topic", topic.as_str());
        let payload = serde_json::to_vec(message)?;
        let headers = attempt_headers(&event.event_id, message.attempt, request_id);
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
    pub async fn flush(&self, timeout: Duration) {
        let producer = self.producer.clone();
        // librdkafka's flush blocks its thread.
        let flushed = tokio::task::spawn_blocking(move || producer.flush(timeout)).await;
        if let Ok(Err(e)) = flushed {
            tracing::warn!(error = %e, "messages left unflushed at shutdown; a sweep publishes them again");
        }
    }
}

/// How the outbox entries of published events are cleared: off the publisher's path, one batch at a time, so that
/// they gather while it runs.
const CLEAR_BATCHES: Limits = Limits {
    max_batch: 256,
    max_in_flight: 1,
};

/// Clears the outbox entries of events Kafka acknowledged, many per command, after the publisher has moved on.
/// A clear that never happens (the process died first) leaves an entry that a sweep publishes once more, which
/// dispatchers' claims make harmless. Cheap to clone.
#[derive(Debug, Clone)]
pub struct OutboxClearer {
    batcher: Batcher<(EventId, u32), store::Result<()>>,
    /// The clears not yet done, waited for by [`OutboxClearer::finish`].
    clearing: TaskTracker,
}

impl OutboxClearer {
    /// Starts the gathering task on the current runtime.
    pub fn spawn(store: EventStore) -> Self {
        let batcher = Batcher::spawn(
            "outbox clear",
            CLEAR_BATCHES,
            move |published: Vec<(EventId, u32)>| {
                let store = store.clone();
                async move {
                    let cleared = store.mark_published(&published).await;
                    vec![cleared; published.len()]
                }
            },
        );
        Self {
            batcher,
            clearing: TaskTracker::new(),
        }
    }

    /// Clears, in the background, the entry of replay generation `replay_count` of an event just published.
    pub fn clear(&self, event_id: EventId, replay_count: u32) {
        let batcher = self.batcher.clone();
        self.clearing.spawn(async move {
            match batcher.call((event_id, replay_count)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot clear an outbox entry"),
                Err(e) => tracing::warn!(error = %e, "cannot clear an outbox entry"),
            }
        });
    }

    /// Waits, at most `timeout`, for the clears still running; called once, at shutdown.
    pub async fn finish(&self, timeout: Duration) {
        self.clearing.close();
        if tokio::time::timeout(timeout, self.clearing.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "outbox clears still running at shutdown; a sweep publishes their events once more"
            );
        }
    }
}

/// How a service sweeps the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sweep {
    /// `HERALD_SWEEP_INTERVAL_MS`: how often the sweeper looks for unpublished events. Default 2000.
    pub interval: Duration,
    /// `HERALD_SWEEP_AGE_MS`: how long an event's outbox entry must have been there before the sweeper
    /// publishes it. Default 5000.
    pub age: Duration,
}

impl Sweep {
    /// Reads `HERALD_SWEEP_INTERVAL_MS` and `HERALD_SWEEP_AGE_MS`, recording a zero interval as a problem.
    pub fn read(env: &mut EnvReader) -> Self {
        Self {
            interval: env.positive_millis("HERALD_SWEEP_INTERVAL_MS", Duration::from_secs(2)),
            age: env.millis("HERALD_SWEEP_AGE_MS", Duration::from_secs(5)),
        }
    }
}

/// The outbox sweeper of a service that publishes events (ingest, replay): built with the service, spawned on its
/// [`Supervisor`] when it runs.
#[derive(Debug, Clone)]
pub struct OutboxSweeper {
    store: EventStore,
    publisher: LanePublisher,
    sweep: Sweep,
    indexes: IndexGate,
}

impl OutboxSweeper {
    /// A sweeper publishing with `publisher` the events of `store` whose outbox entries are older than
    /// `sweep.age`, every `sweep.interval`; nothing is swept before `indexes` open (MongoDB was away at startup).
    pub fn new(
        store: EventStore,
        publisher: LanePublisher,
        sweep: Sweep,
        indexes: IndexGate,
    ) -> Self {
        Self {
            store,
            publisher,
            sweep,
            indexes,
        }
    }

    /// Sweeps as a task of `tasks` (`outbox sweeper`, which may end with the others) until they stop.
    pub fn spawn(self, tasks: &mut Supervisor) {
        let stop = tasks.stop_token();
        tasks.spawn_droppable("outbox sweeper", self.sweep_until_stopped(stop));
    }

    /// Publishes the events whose outbox entries are old enough, every interval, until `shutdown`.
    async fn sweep_until_stopped(self, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(self.sweep.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = ticker.tick() => {}
            }
            // Stopping mid-sweep is safe: an entry is deleted only after its publish, so what is left is swept again.
            let work = async {
                if self.indexes.is_open() {
                    sweep_once(&self.store, &self.publisher, self.sweep.age).await
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
async fn sweep_once(
    store: &EventStore,
    publisher: &LanePublisher,
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
                .map(|(event, replay_count)| publisher.publish_first(event, *replay_count, None)),
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
