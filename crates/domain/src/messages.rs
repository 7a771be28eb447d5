//! The messages services exchange over Kafka. JSON on the wire; these types are the only definition.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::event::{Attempt, Channel, Event, EventId, Priority, StatusOutcome};
use crate::topics::Lane;

/// Kafka header carrying the event id on every Herald message, so tools can find an event without decoding.
pub const HEADER_EVENT_ID: &str = "herald-event-id";
/// Kafka header carrying the attempt number a lane message asks for.
pub const HEADER_ATTEMPT: &str = "herald-attempt";
/// Kafka header carrying the id of the HTTP request that caused the message.
pub const HEADER_REQUEST_ID: &str = "herald-request-id";

/// An event on a lane topic (`critical`, `default`, `retry`), asking a dispatcher for one attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LaneMessage {
    pub event: Event,
    /// The attempt this message asks for: 1 from ingest, n+1 from the retry scheduler.
    pub attempt: u32,
    /// How many times the event was replayed from the dead letters when this message was made. A message
    /// from before a replay is stale and ignored.
    #[serde(default)]
    pub replay_count: u32,
    /// The provider for this attempt: the client's choice for a first attempt, the retry rules' after that; the
    /// channel's configured provider when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    pub enqueued_at: DateTime<Utc>,
}

impl LaneMessage {
    /// The first attempt of a newly accepted (or replayed) event, through the provider its client chose.
    pub fn first(event: Event) -> Self {
        Self {
            provider: event.chosen_provider().map(str::to_owned),
            event,
            attempt: 1,
            replay_count: 0,
            enqueued_at: Utc::now(),
        }
    }
}

/// A failed attempt, sent by a dispatcher to `herald.retry.requests` for the retry scheduler to decide on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryRequest {
    pub event: Event,
    /// The lane the event was first published on (its priority's lane).
    pub lane: Lane,
    /// The attempt that failed, with its error class, error and HTTP status.
    pub failed: Attempt,
    #[serde(default)]
    pub replay_count: u32,
    /// A receiver's Retry-After, in seconds: never retry earlier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_secs: Option<u64>,
}

/// A scheduled retry waiting on a delay-tier topic until `due_at`, then published to the retry lane as `message`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DelayedRetry {
    pub message: LaneMessage,
    pub due_at: DateTime<Utc>,
    /// The tier topic it waits on, in seconds.
    pub tier_secs: u64,
}

/// A step of an event's life, published on `herald.events.status` (keyed by the event's partition key) once it
/// is recorded in MongoDB: each attempt's outcome, a dead letter, a recorded record-only event.
///
/// A crash between the record and the publish makes the step be published again when the work is redelivered, so
/// consumers must tolerate duplicates: `(eventId, replayCount, attempt, outcome)` identifies a step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusMessage {
    pub event_id: EventId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    /// None for a record-only event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<Channel>,
    #[serde(default)]
    pub priority: Priority,
    /// The provider of the attempt, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    pub outcome: StatusOutcome,
    /// The attempt concerned (the last one for a dead letter); 0 for a record-only event.
    pub attempt: u32,
    #[serde(default)]
    pub replay_count: u32,
    /// When the step happened.
    pub at: DateTime<Utc>,
    /// When the event was accepted (its `createdAt`), so that a consumer can count the step in the hour the event
    /// belongs to (herald-query's stats). Absent in messages from before it was added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
    /// The attempt's error, or why the event was dead-lettered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The event's metadata, so that watchers can group on it (`metadata.ip`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
}

impl StatusMessage {
    /// The step `outcome` of `event`, now, without provider or error.
    pub fn new(event: &Event, outcome: StatusOutcome, attempt: u32, replay_count: u32) -> Self {
        Self {
            event_id: event.event_id.clone(),
            event_type: event.event_type.clone(),
            channel: event.channel,
            priority: event.priority,
            provider: None,
            outcome,
            attempt,
            replay_count,
            at: Utc::now(),
            created_at: Some(event.created_at),
            error: None,
            metadata: event.metadata.clone(),
        }
    }

    /// The outcome of a recorded attempt: delivered or failed, with its provider, error and end time.
    pub fn for_attempt(event: &Event, attempt: &Attempt, replay_count: u32) -> Self {
        let outcome = match attempt.outcome {
            crate::event::AttemptOutcome::Delivered => StatusOutcome::Delivered,
            crate::event::AttemptOutcome::Failed => StatusOutcome::Failed,
        };
        Self {
            provider: Some(attempt.provider.clone()),
            at: attempt.ended_at,
            error: attempt.error.clone(),
            ..Self::new(event, outcome, attempt.number, replay_count)
        }
    }
}

/// Kafka headers of a dead letter on `herald.events.dlq`, for any consumer of that topic.
pub mod dlq_headers {
    /// Why the event was dead-lettered (or why a message could not be decoded).
    pub const REASON: &str = "herald-dlq-reason";
    /// The lane the event travelled on (`critical`, `default`).
    pub const ORIGINAL_LANE: &str = "herald-original-lane";
    /// Attempts made before giving up.
    pub const ATTEMPTS: &str = "herald-attempts";
    /// The last attempt's error.
    pub const LAST_ERROR: &str = "herald-last-error";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_message_carries_the_event_and_snake_case_outcomes() {
        let event: Event = serde_json::from_value(serde_json::json!({
            "eventId": "e1", "eventType": "request.failed", "payload": {},
            "metadata": {"ip": "10.0.0.1"}, "createdAt": "2024-01-01T00:00:00Z"
        }))
        .expect("an event");
        let status = StatusMessage::new(&event, StatusOutcome::DeadLettered, 3, 1);
        let json = serde_json::to_value(&status).expect("serializable");
        assert_eq!(json["outcome"], "dead_lettered");
        assert_eq!(json["eventId"], "e1");
        assert_eq!(json["replayCount"], 1);
        assert_eq!(json["metadata"]["ip"], "10.0.0.1");
        assert_eq!(json["createdAt"], "2024-01-01T00:00:00Z");
        assert!(json.get("channel").is_none());
        let back: StatusMessage = serde_json::from_value(json).expect("deserializable");
        assert_eq!(back, status);
    }
}
