//! What `GET /api/stats` answers with.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use herald_domain::Status;
use serde::{Serialize, Serializer};
use utoipa::ToSchema;

use super::reader::HourCounts;

fn millis<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&at.to_rfc3339_opts(SecondsFormat::Millis, true))
}

fn optional_millis<S: Serializer>(
    at: &Option<DateTime<Utc>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => millis(at, serializer),
        None => serializer.serialize_none(),
    }
}

/// Counts of the events created within the asked range (all events without one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// Events created within the counted hours.
    pub total: u64,
    /// Every status, 0 included.
    #[schema(example = json!({"PENDING": 0, "QUEUED": 3, "DISPATCHING": 1, "RETRY_SCHEDULED": 2,
        "DELIVERED": 950, "DEAD_LETTERED": 4, "RECORDED": 40}))]
    pub by_status: BTreeMap<String, u64>,
    /// Every channel, 0 included; `none` counts record-only events.
    #[schema(example = json!({"email": 600, "sms": 200, "webhook": 160, "none": 40}))]
    pub by_channel: BTreeMap<String, u64>,
    /// Every priority, 0 included.
    #[schema(example = json!({"critical": 100, "default": 900}))]
    pub by_priority: BTreeMap<String, u64>,
    /// Events DEAD_LETTERED now: what a replay would bring back.
    pub dead_letters_waiting: u64,
    /// The first hour counted (UTC): the range's start, down to its hour; absent without `from`.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "optional_millis"
    )]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub counted_from: Option<DateTime<Utc>>,
    /// The end of the last hour counted (exclusive): the range's end, up to its hour; absent without `to`.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "optional_millis"
    )]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub counted_before: Option<DateTime<Utc>>,
    /// When the events still in flight (pending, queued, dispatching, retry scheduled) were counted: they come
    /// from a snapshot at most a few seconds old; the other statuses from the buckets.
    #[serde(serialize_with = "millis")]
    #[schema(value_type = String, format = DateTime)]
    pub in_flight_counted_at: DateTime<Utc>,
}

impl From<HourCounts> for Stats {
    fn from(
        HourCounts {
            counts,
            hours,
            in_flight_at,
        }: HourCounts,
    ) -> Self {
        let dead_letters_waiting = counts
            .by_status
            .get(Status::DeadLettered.as_str())
            .copied()
            .unwrap_or(0);
        Self {
            total: counts.total,
            by_status: counts.by_status,
            by_channel: counts.by_channel,
            by_priority: counts.by_priority,
            dead_letters_waiting,
            counted_from: hours.from,
            counted_before: hours.before,
            in_flight_counted_at: in_flight_at,
        }
    }
}
