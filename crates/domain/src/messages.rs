//! The messages services exchange over Kafka. JSON on the wire; these types are the only definition.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::event::{Attempt, Event};
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
    /// A provider the retry rules chose (fallback); the channel's configured provider when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    pub enqueued_at: DateTime<Utc>,
}

impl LaneMessage {
    /// The first attempt of a newly accepted event.
    pub fn first(event: Event) -> Self {
        Self {
            event,
            attempt: 1,
            replay_count: 0,
            provider: None,
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
