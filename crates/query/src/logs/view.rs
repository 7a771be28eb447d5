//! What the API answers with: events as JSON (camelCase, times as ISO 8601 strings at millisecond precision,
//! payload and metadata masked) and the pagination block. Each type is also its OpenAPI schema.

use chrono::{DateTime, SecondsFormat, Utc};
use herald_domain::{Attempt, AttemptOutcome, Channel, ErrorClass, Priority, Status};
use herald_platform::store::TimelineEntry;
use serde::{Serialize, Serializer};
use serde_json::Value;
use utoipa::ToSchema;

use super::reader::Found;
use crate::mask::Masker;

fn iso<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&at.to_rfc3339_opts(SecondsFormat::Millis, true))
}

fn iso_opt<S: Serializer>(at: &Option<DateTime<Utc>>, serializer: S) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => iso(at, serializer),
        None => serializer.serialize_none(),
    }
}

/// An event in a list: everything but its attempts and timeline.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventSummary {
    /// The event's id (the client's, or a UUIDv7 Herald assigned).
    #[schema(example = "0196a0b4-6f0e-7c1a-9d7e-3b1f2a4c5d6e")]
    pub event_id: String,
    pub user_id: Option<String>,
    #[schema(example = "order.shipped")]
    pub event_type: Option<String>,
    /// `null` for a record-only event (an activity log entry).
    #[schema(schema_with = crate::openapi::channel_nullable)]
    pub channel: Option<Channel>,
    #[schema(schema_with = crate::openapi::priority)]
    pub priority: Priority,
    #[schema(schema_with = crate::openapi::status)]
    pub status: Status,
    /// Attempts made in the current budget (a replay resets it).
    pub attempt_count: u32,
    /// How many times the event was replayed from the dead letters.
    pub replay_count: u32,
    /// The error of the last failed attempt.
    pub last_error: Option<String>,
    /// The event's payload, with the configured fields masked as `"***"`.
    #[schema(value_type = Object)]
    pub payload: Value,
    /// The event's metadata, with the configured fields masked as `"***"`.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    #[serde(serialize_with = "iso")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "iso")]
    pub updated_at: DateTime<Utc>,
    /// When the scheduled retry is due, while RETRY_SCHEDULED.
    #[serde(serialize_with = "iso_opt")]
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Why the event was (last) dead-lettered; absent if it never was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_letter_reason: Option<String>,
    /// When the event was (last) dead-lettered; absent if it never was.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "iso_opt")]
    pub dead_lettered_at: Option<DateTime<Utc>>,
    /// On a record-only event (an activity log entry): its activity type, the same as `eventType`. Absent on
    /// events with a channel.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "LOGIN")]
    pub activity_type: Option<String>,
    /// When the activity happened: the client's `timestamp` (given to `POST /api/logs`, stored in the payload), or,
    /// without one, when Herald accepted the event (`createdAt`).
    #[serde(serialize_with = "iso")]
    pub timestamp: DateTime<Utc>,
}

/// When the activity an event records happened: the client's `payload.timestamp` (RFC 3339, as `POST /api/logs`
/// stores it) or, without a readable one, when Herald accepted the event.
pub fn happened_at(payload: &Value, created_at: DateTime<Utc>) -> DateTime<Utc> {
    payload
        .get("timestamp")
        .and_then(Value::as_str)
        .and_then(|raw| DateTime::parse_from_rfc3339(raw).ok())
        .map_or(created_at, |at| at.with_timezone(&Utc))
}

impl EventSummary {
    pub fn new(found: Found, mask: &Masker) -> Self {
        Self::masked(found, mask).0
    }

    /// The summary, and the values it masked (to scrub from the attempts and the timeline as well).
    fn masked(found: Found, mask: &Masker) -> (Self, Vec<String>) {
        let record = found.record;
        let mut secrets = mask.secrets("payload", &record.payload);
        if let Some(metadata) = &record.metadata {
            secrets.extend(mask.secrets("metadata", metadata));
        }
        let scrub = |text: Option<String>| text.map(|t| Masker::scrub(t, &secrets));
        let mut payload = record.payload;
        mask.apply("payload", &mut payload);
        let mut metadata = record.metadata;
        if let Some(metadata) = metadata.as_mut() {
            mask.apply("metadata", metadata);
        }
        // From the masked payload: a masked `payload.timestamp` must not come back at the top level.
        let timestamp = happened_at(&payload, record.created_at);
        let activity_type = record
            .channel
            .is_none()
            .then(|| record.event_type.clone())
            .flatten();
        let summary = Self {
            event_id: record.event_id.as_str().to_owned(),
            user_id: record.user_id,
            event_type: record.event_type,
            channel: record.channel,
            priority: record.priority,
            status: record.status,
            attempt_count: record.attempt_count,
            replay_count: record.replay_count,
            last_error: scrub(record.last_error),
            payload,
            metadata,
            created_at: record.created_at,
            updated_at: record.updated_at,
            next_attempt_at: record.next_attempt_at,
            dead_letter_reason: scrub(found.dead_letter_reason),
            dead_lettered_at: found.dead_lettered_at,
            activity_type,
            timestamp,
        };
        (summary, secrets)
    }
}

/// One delivery attempt.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttemptView {
    /// 1 for the first attempt, counting across retries (a replay starts again at 1).
    pub number: u32,
    /// The provider used: `smtp`, `http-sms`, `webhook`, `sandbox`.
    #[schema(example = "smtp")]
    pub provider: String,
    #[serde(serialize_with = "iso")]
    pub started_at: DateTime<Utc>,
    #[serde(serialize_with = "iso")]
    pub ended_at: DateTime<Utc>,
    #[schema(schema_with = crate::openapi::attempt_outcome)]
    pub outcome: AttemptOutcome,
    /// For a failed attempt: whether trying again may help.
    #[schema(schema_with = crate::openapi::error_class)]
    pub error_class: Option<ErrorClass>,
    pub error: Option<String>,
    /// The receiver's HTTP status (or SMTP reply code), when it answered.
    pub http_status: Option<u16>,
    /// How long the receiver asked Herald to wait (its `Retry-After`, in seconds), when it did; the retry was not
    /// scheduled sooner.
    pub retry_after_secs: Option<u64>,
}

impl From<Attempt> for AttemptView {
    fn from(attempt: Attempt) -> Self {
        Self {
            number: attempt.number,
            provider: attempt.provider,
            started_at: attempt.started_at,
            ended_at: attempt.ended_at,
            outcome: attempt.outcome,
            error_class: attempt.error_class,
            error: attempt.error,
            http_status: attempt.http_status,
            retry_after_secs: attempt.retry_after_secs,
        }
    }
}

/// One step of an event's life.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TimelineStep {
    #[serde(serialize_with = "iso")]
    pub at: DateTime<Utc>,
    /// `accepted`, `attempt`, `delivered`, `recorded`, `retry_scheduled`, `dead_lettered`, `replayed` (and `queued`, in
    /// events stored before the outbox collection).
    #[schema(example = "retry_scheduled")]
    pub kind: String,
    /// The attempt, on `attempt` steps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<AttemptView>,
    /// The reason of a dead letter, the due time of a retry, what a replay was asked with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl From<TimelineEntry> for TimelineStep {
    fn from(entry: TimelineEntry) -> Self {
        Self {
            at: entry.at,
            kind: entry.kind,
            attempt: entry.attempt.map(AttemptView::from),
            detail: entry.detail,
        }
    }
}

/// An event with every attempt and its whole timeline.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventDetail {
    #[serde(flatten)]
    pub event: EventSummary,
    /// Every attempt ever made, in order (across replays).
    pub attempts: Vec<AttemptView>,
    /// Every step, in the order the event went through them.
    pub timeline: Vec<TimelineStep>,
}

impl EventDetail {
    pub fn new(mut found: Found, mask: &Masker) -> Self {
        let attempts = std::mem::take(&mut found.record.attempts);
        let timeline = std::mem::take(&mut found.record.timeline);
        let (event, secrets) = EventSummary::masked(found, mask);
        let scrub = |mut attempt: AttemptView| {
            attempt.error = attempt.error.map(|e| Masker::scrub(e, &secrets));
            attempt
        };
        Self {
            event,
            attempts: attempts
                .into_iter()
                .map(|a| scrub(AttemptView::from(a)))
                .collect(),
            timeline: timeline
                .into_iter()
                .map(|entry| {
                    let mut step = TimelineStep::from(entry);
                    step.attempt = step.attempt.map(scrub);
                    step.detail = step.detail.map(|d| Masker::scrub(d, &secrets));
                    step
                })
                .collect(),
        }
    }
}

/// Where a page is in its list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Pagination {
    /// The page number; absent when the page was asked for with a cursor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page: Option<u32>,
    pub limit: u32,
    /// How many events match the filters: on the last page, or when asked for with `total=true`; absent
    /// otherwise (counting reads every matching event, the expensive part of a page).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    /// How many pages of `limit` events that is; absent when `total` is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pages: Option<u64>,
    /// Pass as `cursor` (with the same filters) for the events after this page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// A page of events.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct LogPage {
    pub data: Vec<EventSummary>,
    pub pagination: Pagination,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn an_activity_happened_at_the_clients_timestamp_or_else_at_acceptance() {
        let created = DateTime::parse_from_rfc3339("2026-01-15T02:30:01Z")
            .expect("valid")
            .with_timezone(&Utc);
        let given = json!({"activityType": "LOGIN", "timestamp": "2026-01-15T04:30:00+02:00"});
        assert_eq!(
            happened_at(&given, created).to_rfc3339(),
            "2026-01-15T02:30:00+00:00"
        );
        for payload in [
            json!({}),
            json!({"timestamp": "***"}),
            json!({"timestamp": 1_700_000_000}),
        ] {
            assert_eq!(happened_at(&payload, created), created, "{payload}");
        }
    }
}
