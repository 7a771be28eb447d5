//! The event model: ids, channels, priorities, the status machine and delivery attempts.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};

/// A value that could not be parsed into one of the domain's types.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ParseError {
    message: String,
}

impl ParseError {
    fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

/// The id of an event: a client's own id, or a time-ordered UUIDv7 that Herald assigns.
///
/// Receivers deduplicate on it, so it never changes once an event is accepted.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct EventId(String);

impl EventId {
    /// Longest id a client may supply.
    pub const MAX_LEN: usize = 128;

    /// A new time-ordered id.
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7().to_string())
    }

    /// A client-supplied id: 1 to 128 characters of letters, digits and `-_.:`.
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        if raw.is_empty() || raw.len() > Self::MAX_LEN {
            return Err(ParseError::new(format!(
                "must be 1 to {} characters long",
                Self::MAX_LEN
            )));
        }
        if !raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
        {
            return Err(ParseError::new(
                "may contain only letters, digits and the characters - _ . :",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for EventId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// Implements `FromStr` (case-insensitive), `Display`, `as_str` and a case-insensitive `Deserialize` for a
/// fieldless enum whose wire names are given once here.
macro_rules! wire_enum {
    ($ty:ident, $what:literal, { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            /// Every value, in declaration order.
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];

            /// The name used on the wire and in storage.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $name),+
                }
            }
        }

        impl FromStr for $ty {
            type Err = ParseError;

            fn from_str(raw: &str) -> Result<Self, Self::Err> {
                $(if raw.eq_ignore_ascii_case($name) {
                    return Ok($ty::$variant);
                })+
                let names: Vec<&str> = vec![$($name),+];
                Err(ParseError::new(format!("unknown {} '{}', expected one of: {}", $what, raw, names.join(", "))))
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(deserializer)?;
                raw.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// How an event is delivered. An event without a channel is record-only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Channel {
    Email,
    Sms,
    Webhook,
    Push,
}

wire_enum!(Channel, "channel", { Email => "email", Sms => "sms", Webhook => "webhook", Push => "push" });

/// Which lane an event travels on. Critical traffic never waits behind default traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Priority {
    Critical,
    #[default]
    Default,
}

wire_enum!(Priority, "priority", { Critical => "critical", Default => "default" });

/// Where an event is in its life. Stored as the upper-case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    /// Written by Herald before the outbox collection (recorded, not yet acknowledged by Kafka); no longer
    /// written, still read and counted.
    Pending,
    /// Accepted: on its lane topic (or in the outbox, about to be), waiting for a dispatcher.
    Queued,
    /// A dispatcher is sending it.
    Dispatching,
    /// A retry is waiting on a delay topic.
    RetryScheduled,
    /// Terminal: the provider accepted it.
    Delivered,
    /// Terminal: out of attempts or permanently rejected (a replay can bring it back).
    DeadLettered,
    /// Terminal: a record-only event, stored and published, nothing to send.
    Recorded,
}

wire_enum!(Status, "status", {
    Pending => "PENDING",
    Queued => "QUEUED",
    Dispatching => "DISPATCHING",
    RetryScheduled => "RETRY_SCHEDULED",
    Delivered => "DELIVERED",
    DeadLettered => "DEAD_LETTERED",
    Recorded => "RECORDED",
});

impl Status {
    /// Whether the event has reached one of its end states.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Status::Delivered | Status::DeadLettered | Status::Recorded
        )
    }

    /// The states an event may move to `self` from, in the normal flow.
    ///
    /// Updates in MongoDB filter on these, so a redelivered or late message can never move an event backwards.
    /// Bringing a dead letter back (`DEAD_LETTERED` to `QUEUED`) is deliberately absent: only an explicit replay,
    /// which also bumps the replay counter, may do that.
    pub fn predecessors(self) -> &'static [Status] {
        use Status::*;
        match self {
            Pending => &[],
            Queued => &[Pending],
            // An accepted event is stored QUEUED, and its publisher never writes it again (its outbox entry is a
            // document of its own): FerretDB does not make concurrent updates of one document atomic.
            Dispatching => &[Queued, RetryScheduled],
            RetryScheduled => &[Dispatching],
            // From RETRY_SCHEDULED only for a delivery recorded late: a dispatcher whose lease ran out delivered
            // after all, while the claim that took over failed and had its retry scheduled.
            Delivered => &[Dispatching, RetryScheduled],
            DeadLettered => &[Queued, Dispatching, RetryScheduled],
            Recorded => &[Queued],
        }
    }

    /// Whether `self` may be followed by `next` in the normal flow.
    pub fn can_move_to(self, next: Status) -> bool {
        next.predecessors().contains(&self)
    }
}

/// How a failed attempt should be treated, decided once for every provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Worth trying again: timeouts, connection errors, 408, 429, 5xx.
    Retryable,
    /// Trying again will not help: other 4xx, invalid recipient, a receiver's `Herald-Abort`.
    Permanent,
}

wire_enum!(ErrorClass, "error class", { Retryable => "retryable", Permanent => "permanent" });

/// The result of one delivery attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttemptOutcome {
    Delivered,
    Failed,
}

wire_enum!(AttemptOutcome, "attempt outcome", { Delivered => "delivered", Failed => "failed" });

/// What happened to an event, as published on the status topic for alerting and other watchers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StatusOutcome {
    /// An attempt was delivered.
    Delivered,
    /// An attempt failed (a retry may follow).
    Failed,
    /// The event was dead-lettered.
    DeadLettered,
    /// A record-only event was recorded.
    Recorded,
}

wire_enum!(StatusOutcome, "outcome", {
    Delivered => "delivered",
    Failed => "failed",
    DeadLettered => "dead_lettered",
    Recorded => "recorded",
});

/// One try at delivering an event through one provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    /// 1 for the first attempt, counting across retries (reset by a replay).
    pub number: u32,
    /// The provider that was used (`smtp`, `http-sms`, `webhook`, `sandbox`).
    pub provider: String,
    pub started_at: DateTime<Utc>,
    pub ended_at: DateTime<Utc>,
    pub outcome: AttemptOutcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_class: Option<ErrorClass>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// The receiver's `Retry-After`, in seconds, kept with the attempt so that a retry request published again
    /// after a crash still honours it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_secs: Option<u64>,
}

/// An accepted event, as it travels on Kafka and is stored in MongoDB.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub event_id: EventId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    /// None for a record-only event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<Channel>,
    #[serde(default)]
    pub priority: Priority,
    pub payload: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
    pub created_at: DateTime<Utc>,
}

impl Event {
    /// The Kafka message key: one user's events share a partition and keep their order.
    /// Events without a user spread by their own id.
    pub fn partition_key(&self) -> &str {
        self.user_id.as_deref().unwrap_or(self.event_id.as_str())
    }

    /// Whether there is nothing to deliver, only something to record.
    pub fn is_record_only(&self) -> bool {
        self.channel.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_parses_case_insensitively_and_defaults_to_default() {
        assert_eq!("CRITICAL".parse::<Priority>(), Ok(Priority::Critical));
        assert_eq!("Default".parse::<Priority>(), Ok(Priority::Default));
        assert_eq!(Priority::default(), Priority::Default);
        let err = "urgent".parse::<Priority>().expect_err("not a priority");
        assert_eq!(
            err.to_string(),
            "unknown priority 'urgent', expected one of: critical, default"
        );
    }

    #[test]
    fn statuses_round_trip_through_their_wire_names() {
        for status in Status::ALL {
            let json = serde_json::to_string(status).expect("serializable");
            let back: Status = serde_json::from_str(&json).expect("deserializable");
            assert_eq!(*status, back);
        }
        assert_eq!(Status::RetryScheduled.as_str(), "RETRY_SCHEDULED");
    }

    #[test]
    fn no_status_moves_back_to_an_earlier_one_except_the_retry_loop() {
        use Status::*;
        assert!(Queued.can_move_to(Dispatching));
        assert!(RetryScheduled.can_move_to(Dispatching));
        assert!(!Delivered.can_move_to(Dispatching));
        assert!(!Delivered.can_move_to(Queued));
        assert!(
            !DeadLettered.can_move_to(Queued),
            "only a replay revives a dead letter"
        );
        for terminal in Status::ALL.iter().filter(|s| s.is_terminal()) {
            for next in Status::ALL {
                assert!(
                    !terminal.can_move_to(*next),
                    "{terminal} must not move to {next}"
                );
            }
        }
    }

    #[test]
    fn event_ids_are_checked() {
        assert!(EventId::parse("order-42:confirm.v1").is_ok());
        assert!(EventId::parse("").is_err());
        assert!(EventId::parse("has space").is_err());
        assert!(EventId::parse(&"x".repeat(129)).is_err());
        let generated = EventId::generate();
        assert!(EventId::parse(generated.as_str()).is_ok());
    }

    #[test]
    fn an_attempt_keeps_its_retry_after_and_older_records_still_read() {
        let old = serde_json::json!({
            "number": 1, "provider": "webhook", "outcome": "failed",
            "startedAt": "2026-01-01T00:00:00Z", "endedAt": "2026-01-01T00:00:01Z",
            "errorClass": "retryable", "httpStatus": 503
        });
        let mut attempt: Attempt = serde_json::from_value(old.clone()).expect("an older attempt");
        assert_eq!(attempt.retry_after_secs, None);
        assert_eq!(
            serde_json::to_value(&attempt).expect("serializable"),
            old,
            "absent stays absent"
        );
        attempt.retry_after_secs = Some(42);
        let json = serde_json::to_value(&attempt).expect("serializable");
        assert_eq!(json["retryAfterSecs"], 42);
        let back: Attempt = serde_json::from_value(json).expect("deserializable");
        assert_eq!(back.retry_after_secs, Some(42));
    }

    #[test]
    fn events_use_camel_case_on_the_wire() {
        let event = Event {
            event_id: EventId::parse("e1").expect("valid"),
            user_id: Some("u1".into()),
            event_type: Some("order.shipped".into()),
            channel: Some(Channel::Email),
            priority: Priority::Critical,
            payload: serde_json::json!({"to": "a@example.com"}),
            metadata: None,
            created_at: DateTime::from_timestamp(0, 0).expect("valid"),
        };
        let json = serde_json::to_value(&event).expect("serializable");
        assert_eq!(json["eventId"], "e1");
        assert_eq!(json["userId"], "u1");
        assert_eq!(json["channel"], "email");
        assert_eq!(json["priority"], "critical");
        assert_eq!(event.partition_key(), "u1");
        let back: Event = serde_json::from_value(json).expect("deserializable");
        assert_eq!(back, event);
    }
}
