//! What a dispatcher does with one lane message: decode it, claim the event, send it, record the attempt and hand
//! a failure to the retry scheduler, so that when [`Handler::handle`] returns `Ok` the message's offset may be
//! stored.
//!
//! A transient MongoDB or Kafka error on the way is retried with a capped backoff and the message is never
//! dropped; only shutdown (or losing the partition) stops the retries, and then `Err(Stopped)` says that the
//! offset must not be stored. A permanent store error (`store::is_permanent`: a record that does not decode, a
//! document over the size limit) would block the partition forever, so after [`PERMANENT_TRIES`] tries the lane
//! message goes to the dead-letter topic with the reason, the event is marked DEAD_LETTERED where the store can
//! still be written, and the partition moves on.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use herald_domain::messages::HEADER_EVENT_ID;
use herald_domain::{Attempt, AttemptOutcome, Event, Lane, LaneMessage, RetryRequest, Topics};
use herald_domain::{StatusMessage, StatusOutcome};
use herald_platform::retry::Backoff;
use herald_platform::store::{self, Claim, EventRecord, EventStore};
use herald_platform::{kafka, lanes, telemetry};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::FutureProducer;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::provider::{Provider, Providers, SendError, Try, UnknownProvider};
use crate::stats::{Counter, Stats};
use crate::steps::Steps;

/// The waits between two tries of a step that failed on MongoDB or Kafka: 100 ms doubling to 5 s, jittered (a
/// lane's workers fail together).
const BACKOFF: Backoff = Backoff::TRANSIENT.jittered();
/// Longest wait before looking again at an event another dispatcher holds: it usually finishes well before its
/// lease runs out.
const LEASE_POLL_CAP: Duration = Duration::from_secs(1);

/// Tries of a step failing with a permanent store error before its message is dead-lettered. More than one: a
/// misclassified transient error gets a couple of backoffs first.
const PERMANENT_TRIES: u32 = 3;

/// Work stopped before it was durable (shutdown, or the partition was taken away): do not store the offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped;

/// Why a step did not complete.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Halt {
    /// See [`Stopped`].
    Stopped,
    /// A store step failed permanently, with this reason: the message is dead-lettered.
    Unprocessable(String),
}

impl From<Stopped> for Halt {
    fn from(_: Stopped) -> Self {
        Halt::Stopped
    }
}

/// Whether an error comes back however often its step is tried.
trait Permanence: std::fmt::Display {
    fn is_permanent(&self) -> bool;
}

impl Permanence for store::Error {
    fn is_permanent(&self) -> bool {
        store::is_permanent(self)
    }
}

impl Permanence for kafka::Error {
    /// A Kafka error is the broker's or the network's, never the event's: waited out.
    fn is_permanent(&self) -> bool {
        false
    }
}

/// Handles lane messages. One per process, shared by the partition workers.
pub struct Handler {
    pub(crate) topics: Topics,
    pub(crate) store: EventStore,
    /// The claim, delivery and record-only steps, batched across the messages in flight.
    pub(crate) steps: Steps,
    pub(crate) producer: FutureProducer,
    pub(crate) providers: Providers,
    pub(crate) send_timeout: Duration,
    pub(crate) stats: Arc<Stats>,
    /// Process shutdown. Steps after a send finish unless this is cancelled (and even then get one try), so that
    /// a send that happened is recorded.
    pub(crate) shutdown: CancellationToken,
}

impl std::fmt::Debug for Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handler")
            .field("topics", &self.topics)
            .field("providers", &self.providers)
            .field("send_timeout", &self.send_timeout)
            .field("steps", &self.steps)
            .finish_non_exhaustive()
    }
}

impl Handler {
    /// Handles one message. `stop` is cancelled when the partition is revoked or the process stops.
    ///
    /// Its span, `dispatch.attempt`, continues the trace the message carries (the request that accepted the
    /// event, or the retry scheduler's release of this attempt).
    pub async fn handle(
        &self,
        message: &OwnedMessage,
        stop: &CancellationToken,
    ) -> Result<(), Stopped> {
        let span = tracing::info_span!(
            "dispatch.attempt",
            topic = message.topic(),
            partition = message.partition(),
            offset = message.offset(),
            event_id = tracing::field::Empty,
            attempt = tracing::field::Empty,
        );
        telemetry::follow_message(&span, message);
        async {
            match decode(message.payload()) {
                Ok(lane_message) => {
                    tracing::Span::current()
                        .record("event_id", lane_message.event.event_id.as_str())
                        .record("attempt", lane_message.attempt);
                    match self.dispatch(&lane_message, stop).await {
                        Ok(()) => Ok(()),
                        Err(Halt::Stopped) => Err(Stopped),
                        Err(Halt::Unprocessable(reason)) => {
                            self.dead_letter_unprocessable(message, &lane_message, &reason, stop)
                                .await
                        }
                    }
                }
                Err(poison) => self.dead_letter(message, &poison.to_string(), stop).await,
            }
        }
        .instrument(span)
        .await
    }

    async fn dispatch(&self, message: &LaneMessage, stop: &CancellationToken) -> Result<(), Halt> {
        let event = &message.event;
        let Some(channel) = event.channel else {
            let recorded = self
                .durably("mark recorded", stop, || {
                    self.steps
                        .mark_recorded(&event.event_id, message.replay_count)
                })
                .await?;
            tracing::debug!(recorded, "record-only event");
            // Published even when the event was already recorded: a redelivery after a crash between the record
            // and this publish must not lose the step (watchers drop duplicates).
            self.publish_status(
                event,
                StatusMessage::new(event, StatusOutcome::Recorded, 0, 0),
                stop,
            )
            .await?;
            self.stats.add(Counter::Recorded);
            return Ok(());
        };
        let (n, replay_count) = (message.attempt, message.replay_count);
        loop {
            let claimed_at = std::time::Instant::now();
            let claim = self
                .durably("claim", stop, || self.steps.claim(event, n, replay_count))
                .await?;
            let claim_ms = claimed_at.elapsed().as_millis() as u64;
            match claim {
                Claim::Skip(record) => {
                    tracing::debug!(
                        attempt = n,
                        "nothing to do: already handled, stale or unknown"
                    );
                    // A crash between recording this delivery and publishing its status: publish it again.
                    let delivered = record.as_deref().filter(|r| {
                        r.status == herald_domain::Status::Delivered
                            && r.replay_count == replay_count
                            && r.attempt_count == n
                    });
                    if let Some(record) = delivered {
                        if let Some(attempt) = record.attempts.iter().rev().find(|a| a.number == n)
                        {
                            let event = record.event();
                            let status = StatusMessage::for_attempt(&event, attempt, replay_count);
                            self.publish_status(&event, status, stop).await?;
                        }
                    }
                    self.stats.add(Counter::Skipped);
                    return Ok(());
                }
                Claim::Leased(until) => {
                    tracing::debug!(%until, "another dispatcher holds the event; waiting");
                    wait_for_lease(until, stop).await?;
                }
                Claim::FollowUp(record) => {
                    // A crash came between recording the failure and publishing its retry request.
                    let Some(failed) = failed_attempt(&record, n) else {
                        tracing::error!(
                            attempt = n,
                            "attempt recorded as failed but missing from the record"
                        );
                        return Ok(());
                    };
                    let event = record.event();
                    let status = StatusMessage::for_attempt(&event, &failed, replay_count);
                    self.publish_status(&event, status, &self.shutdown).await?;
                    // The receiver's Retry-After was recorded with the attempt, so it survives the crash.
                    let retry_after_secs = failed.retry_after_secs;
                    self.request_retry(&event, failed, replay_count, retry_after_secs)
                        .await?;
                    self.stats.add(Counter::FollowUps);
                    return Ok(());
                }
                Claim::Send(record) => {
                    // The send is bounded by the send timeout; with less lease left than that, another
                    // dispatcher could take the attempt over mid-send (after a MongoDB stall, say). Let the
                    // lease run out instead: the next claim takes the attempt over as a new generation.
                    let lease_left = record
                        .lease_until
                        .and_then(|until| (until - Utc::now()).to_std().ok())
                        .unwrap_or_default();
                    if lease_left < self.send_timeout {
                        tracing::warn!(
                            attempt = n,
                            lease_left_ms = lease_left.as_millis() as u64,
                            "claimed with too little lease left to send; not sending under it"
                        );
                        if let Some(until) = record.lease_until {
                            wait_for_lease(until, stop).await?;
                        }
                        continue;
                    }
                    let event = record.event();
                    let (attempt, retry_after_secs) =
                        match self.providers.select(channel, message.provider.as_deref()) {
                            Ok(provider) => {
                                let this = Try {
                                    number: n,
                                    replay_count,
                                };
                                self.attempt(provider, &event, this).await
                            }
                            Err(unknown) => (unknown_provider_attempt(&unknown, n), None),
                        };
                    observe_attempt(channel, &attempt);
                    if attempt.outcome == AttemptOutcome::Delivered {
                        let recording = std::time::Instant::now();
                        let recorded = self
                            .durably("record delivered", &self.shutdown, || {
                                self.steps.record_delivered(&record, &attempt)
                            })
                            .await?;
                        tracing::debug!(
                            claim_ms,
                            send_ms = (attempt.ended_at - attempt.started_at).num_milliseconds(),
                            record_ms = recording.elapsed().as_millis() as u64,
                            "delivery timings"
                        );
                        if !recorded {
                            tracing::warn!(
                                attempt = n,
                                "delivered, but another dispatcher had recorded the attempt"
                            );
                        }
                        let status = StatusMessage::for_attempt(&event, &attempt, replay_count);
                        self.publish_status(&event, status, &self.shutdown).await?;
                        self.stats.add(Counter::Delivered);
                        observe_delivery(&event);
                        return Ok(());
                    }
                    let recorded = self
                        .durably("record failed", &self.shutdown, || {
                            self.store.record_claimed(&record, &attempt)
                        })
                        .await?;
                    if recorded {
                        let status = StatusMessage::for_attempt(&event, &attempt, replay_count);
                        self.publish_status(&event, status, &self.shutdown).await?;
                        self.request_retry(&event, attempt, replay_count, retry_after_secs)
                            .await?;
                        self.stats.add(Counter::Failed);
                        return Ok(());
                    }
                    // Someone else recorded this attempt, a newer claim generation holds it (our lease ran out),
                    // or our write landed and its answer was lost: the next claim says whether a follow-up is
                    // still owed.
                    tracing::info!(
                        attempt = n,
                        "failed attempt already recorded; looking again"
                    );
                }
            }
        }
    }

    /// The send `this` through `provider`, bounded by the send timeout.
    async fn attempt(
        &self,
        provider: &dyn Provider,
        event: &Event,
        this: Try,
    ) -> (Attempt, Option<u64>) {
        let n = this.number;
        let started_at = Utc::now();
        // The payload is read by the rules ingest accepted it under; one that no longer reads (written by hand,
        // or by another version) cannot be sent, now or later.
        let result = match event.message() {
            Ok(Some(message)) => {
                let span = tracing::info_span!(
                    "dispatch.send",
                    event_id = %event.event_id,
                    attempt = n,
                    channel = event.channel.map_or("none", |c| c.as_str()),
                    provider = provider.name(),
                    outcome = tracing::field::Empty,
                );
                let send = provider
                    .send(event, &message, this)
                    .instrument(span.clone());
                let result = match tokio::time::timeout(self.send_timeout, send).await {
                    Ok(result) => result,
                    Err(_) => Err(SendError::transport(
                        herald_domain::outcome::TransportFailure::Timeout,
                        format!("no answer within {} ms", self.send_timeout.as_millis()),
                    )),
                };
                span.record(
                    "outcome",
                    match &result {
                        Ok(_) => AttemptOutcome::Delivered.as_str(),
                        Err(_) => AttemptOutcome::Failed.as_str(),
                    },
                );
                result
            }
            Ok(None) => Err(SendError::invalid(
                "a record-only event has nothing to send",
            )),
            Err(e) => Err(SendError::invalid(e.to_string())),
        };
        let ended_at = Utc::now();
        let mut attempt = Attempt {
            number: n,
            provider: provider.name().to_owned(),
            started_at,
            ended_at,
            outcome: AttemptOutcome::Delivered,
            error_class: None,
            error: None,
            http_status: None,
            retry_after_secs: None,
        };
        match result {
            Ok(delivered) => {
                tracing::info!(
                    attempt = n,
                    provider = provider.name(),
                    detail = delivered.detail.as_deref().unwrap_or(""),
                    "delivered"
                );
                attempt.http_status = delivered.http_status;
                (attempt, None)
            }
            Err(e) => {
                tracing::info!(attempt = n, provider = provider.name(), class = %e.class, error = %e.message, "attempt failed");
                attempt.outcome = AttemptOutcome::Failed;
                attempt.error_class = Some(e.class);
                attempt.error = Some(e.message);
                attempt.http_status = e.http_status;
                attempt.retry_after_secs = e.retry_after_secs;
                (attempt, e.retry_after_secs)
            }
        }
    }

    /// Publishes the retry request for a failed attempt and waits for Kafka's acknowledgement.
    async fn request_retry(
        &self,
        event: &Event,
        failed: Attempt,
        replay_count: u32,
        retry_after_secs: Option<u64>,
    ) -> Result<(), Halt> {
        let attempt = failed.number;
        let request = RetryRequest {
            event: event.clone(),
            lane: Lane::for_priority(event.priority),
            failed,
            replay_count,
            retry_after_secs,
        };
        let payload = match serde_json::to_vec(&request) {
            Ok(payload) => payload,
            Err(e) => {
                // Cannot happen for these types; if it did, retrying would not help either.
                tracing::error!(error = %e, "cannot encode a retry request");
                return Ok(());
            }
        };
        let headers = lanes::attempt_headers(&event.event_id, attempt, None);
        let topic = self.topics.retry_requests();
        self.publish(
            "publish retry request",
            &topic,
            event,
            &payload,
            headers,
            &self.shutdown,
        )
        .await
    }

    /// Publishes a step of the event's life on the status topic and waits for Kafka's acknowledgement, so that
    /// the lane offset is stored only after it.
    async fn publish_status(
        &self,
        event: &Event,
        status: StatusMessage,
        stop: &CancellationToken,
    ) -> Result<(), Halt> {
        let payload = match serde_json::to_vec(&status) {
            Ok(payload) => payload,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode a status message");
                return Ok(());
            }
        };
        let headers = kafka::headers(&[(HEADER_EVENT_ID, event.event_id.as_str())]);
        let topic = self.topics.status();
        self.publish("publish status", &topic, event, &payload, headers, stop)
            .await
    }

    /// Publishes `payload` on `topic`, keyed by the event's partition key, until Kafka acknowledges it.
    async fn publish(
        &self,
        what: &'static str,
        topic: &str,
        event: &Event,
        payload: &[u8],
        headers: rdkafka::message::OwnedHeaders,
        stop: &CancellationToken,
    ) -> Result<(), Halt> {
        self.durably(what, stop, || {
            kafka::send(
                &self.producer,
                topic,
                event.partition_key(),
                payload,
                Some(headers.clone()),
            )
        })
        .await?;
        Ok(())
    }

    /// Moves an undecodable message to the dead-letter topic, raw, with where it came from and why.
    async fn dead_letter(
        &self,
        message: &OwnedMessage,
        reason: &str,
        stop: &CancellationToken,
    ) -> Result<(), Stopped> {
        tracing::warn!(reason, "poison message: dead-lettering it");
        let topic = self.topics.dead_letters();
        // Kafka errors are never permanent: the only way out of this step is a stop.
        self.durably("publish dead letter", stop, || {
            kafka::dead_letter_poison(&self.producer, &topic, message, reason)
        })
        .await
        .map_err(|_| Stopped)?;
        self.stats.add(Counter::DeadLettered);
        Ok(())
    }

    /// Dead-letters a lane message whose event's record failed a store step for good: the message goes to the
    /// dead-letter topic with the reason (first, so that a crash before the mark repeats both rather than leave
    /// a dead letter nobody can see), then the event is marked DEAD_LETTERED where the store can still be
    /// written, and its status published for the alert rules.
    async fn dead_letter_unprocessable(
        &self,
        message: &OwnedMessage,
        lane_message: &LaneMessage,
        reason: &str,
        stop: &CancellationToken,
    ) -> Result<(), Stopped> {
        let event = &lane_message.event;
        self.dead_letter(message, reason, stop).await?;
        match self
            .durably("mark unprocessable dead-lettered", stop, || {
                self.store
                    .dead_letter_unprocessable(&event.event_id, reason)
            })
            .await
        {
            Ok(marked) => tracing::info!(marked, "unprocessable event dead-lettered"),
            Err(Halt::Stopped) => return Err(Stopped),
            // The record cannot be written either: the dead-letter topic has the message and the reason.
            Err(Halt::Unprocessable(e)) => {
                tracing::error!(error = %e, "cannot mark the event DEAD_LETTERED")
            }
        }
        let status = StatusMessage {
            error: Some(reason.to_owned()),
            ..StatusMessage::new(
                event,
                StatusOutcome::DeadLettered,
                lane_message.attempt,
                lane_message.replay_count,
            )
        };
        self.publish_status(event, status, stop)
            .await
            .map_err(|_| Stopped)
    }

    /// Runs `step` until it succeeds, waiting a capped, jittered backoff between tries; gives up when `stop` is
    /// cancelled (after at least one try), or when the step has failed [`PERMANENT_TRIES`] times with a
    /// permanent error.
    async fn durably<T, E, F, Fut>(
        &self,
        what: &'static str,
        stop: &CancellationToken,
        mut step: F,
    ) -> Result<T, Halt>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: Permanence,
    {
        let mut retrying = BACKOFF.start();
        let mut n_permanent = 0;
        loop {
            match step().await {
                Ok(value) => return Ok(value),
                Err(e) if e.is_permanent() && n_permanent + 1 >= PERMANENT_TRIES => {
                    tracing::error!(step = what, error = %e, "permanent error; dead-lettering the message");
                    return Err(Halt::Unprocessable(format!("{what} failed for good: {e}")));
                }
                Err(e) => {
                    n_permanent += u32::from(e.is_permanent());
                    self.stats.add(Counter::TransientErrors);
                    tracing::warn!(step = what, error = %e, "transient error; retrying");
                    if !retrying.pause(stop).await {
                        tracing::warn!(
                            step = what,
                            "stopping with the step undone; the message will come again"
                        );
                        return Err(Halt::Stopped);
                    }
                }
            }
        }
    }
}

/// `herald_dispatch_attempt_duration_seconds{channel, provider, outcome}`: how long one send took.
fn observe_attempt(channel: herald_domain::Channel, attempt: &Attempt) {
    let took = (attempt.ended_at - attempt.started_at)
        .to_std()
        .unwrap_or_default();
    metrics::histogram!("herald_dispatch_attempt_duration_seconds",
        "channel" => channel.as_str(), "provider" => attempt.provider.clone(), "outcome" => attempt.outcome.as_str())
    .record(took.as_secs_f64());
}

/// `herald_delivery_latency_seconds{priority, channel}`: from acceptance to a recorded delivery, retries included.
fn observe_delivery(event: &Event) {
    let latency = (Utc::now() - event.created_at).to_std().unwrap_or_default();
    metrics::histogram!("herald_delivery_latency_seconds",
        "priority" => event.priority.as_str(), "channel" => event.channel.map_or("none", |c| c.as_str()))
    .record(latency.as_secs_f64());
}

/// Why a lane message is poison: the reason it is dead-lettered with.
#[derive(Debug, thiserror::Error)]
enum Poison {
    #[error("empty payload")]
    Empty,
    #[error("not a lane message: {0}")]
    NotLaneMessage(#[source] serde_json::Error),
    #[error("not a lane message: attempt must be at least 1")]
    NoAttempt,
}

/// The lane message in `payload`, or why it is poison.
fn decode(payload: Option<&[u8]>) -> Result<LaneMessage, Poison> {
    let payload = payload.ok_or(Poison::Empty)?;
    let message: LaneMessage = serde_json::from_slice(payload).map_err(Poison::NotLaneMessage)?;
    if message.attempt == 0 {
        return Err(Poison::NoAttempt);
    }
    Ok(message)
}

/// The failed attempt `n` of a record, for a follow-up: the newest attempt with that number.
fn failed_attempt(record: &EventRecord, n: u32) -> Option<Attempt> {
    record
        .attempts
        .iter()
        .rev()
        .find(|a| a.number == n)
        .or(record.attempts.last())
        .cloned()
}

/// The attempt recorded when a lane message names a provider this dispatcher lacks: nothing is sent, and the
/// failure is permanent, so the event is dead-lettered with the reason instead of failing the same way until its
/// attempts run out.
fn unknown_provider_attempt(unknown: &UnknownProvider, n: u32) -> Attempt {
    tracing::warn!(attempt = n, error = %unknown, "unknown provider requested");
    let now = Utc::now();
    Attempt {
        number: n,
        provider: unknown.requested.clone(),
        started_at: now,
        ended_at: now,
        outcome: AttemptOutcome::Failed,
        error_class: Some(herald_domain::ErrorClass::Permanent),
        error: Some(unknown.to_string()),
        http_status: None,
        retry_after_secs: None,
    }
}

/// Waits until the lease may have ended, polling at least every [`LEASE_POLL_CAP`].
async fn wait_for_lease(
    until: chrono::DateTime<Utc>,
    stop: &CancellationToken,
) -> Result<(), Stopped> {
    let remaining = (until - Utc::now()).to_std().unwrap_or_default();
    let wait = remaining.clamp(Duration::from_millis(50), LEASE_POLL_CAP);
    tokio::select! {
        _ = stop.cancelled() => Err(Stopped),
        _ = tokio::time::sleep(wait) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poison_is_recognised_with_a_reason() {
        assert!(matches!(decode(None), Err(Poison::Empty)));
        let garbage = decode(Some(b"{not json")).expect_err("garbage").to_string();
        assert!(garbage.starts_with("not a lane message"), "{garbage}");
        let event = serde_json::json!({
            "eventId": "e1", "payload": {}, "createdAt": "2024-01-01T00:00:00Z"
        });
        let zero =
            serde_json::json!({"event": event, "attempt": 0, "enqueuedAt": "2024-01-01T00:00:00Z"});
        assert!(matches!(
            decode(Some(zero.to_string().as_bytes())),
            Err(Poison::NoAttempt)
        ));
        let one =
            serde_json::json!({"event": event, "attempt": 1, "enqueuedAt": "2024-01-01T00:00:00Z"});
        assert_eq!(
            decode(Some(one.to_string().as_bytes()))
                .ok()
                .map(|m| m.attempt),
            Some(1)
        );
    }
}
