//! The minute buckets of `stats_minutes`: per UTC minute, how many events were accepted, delivered and
//! dead-lettered, and how many delivery attempts failed, in all, by channel and by priority. They answer
//! `GET /api/stats/minutes` (the console's overview) with one read of at most a day of small documents, however
//! busy the lanes are.
//!
//! The stats consumer folds them from what the writers publish: a lane message asking for the first attempt of a
//! new event (`attempt` 1, never replayed) counts it as accepted in the minute of its `createdAt`; a status step
//! counts in the minute it happened (`at`): delivered, dead-lettered, or a failed attempt. Each bucket keeps, per
//! topic partition (`s3` for the status topic's partition 3, `c0` for the critical lane's, `d1` for the default
//! lane's), the last offset it counted, so a batch read again after a crash counts once (see
//! [`super::buckets::fold`]). What is counted twice is what was published twice: an event the outbox sweeper
//! published again after a lost acknowledgement, a step whose writer crashed before storing its offset.
//!
//! Minute buckets are kept for [`MINUTE_RETENTION`] (the longest window the route serves, plus an hour): the
//! consumer deletes older ones whenever it starts a new minute. The hourly buckets keep the long history.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use herald_domain::{Channel, Lane, Priority, StatusMessage, StatusOutcome};
use mongodb::bson::{self, doc, Bson, Document};
use mongodb::options::IndexOptions;
use mongodb::{Collection, Database, IndexModel};
use serde::Deserialize;

use super::buckets::{as_i64, fold, BucketError, Counted, Delta};
use crate::logs::reader::NO_CHANNEL;

/// The collection of the minute buckets.
pub const STATS_MINUTES: &str = "stats_minutes";
/// How long a minute bucket is kept: the longest window `GET /api/stats/minutes` serves (1,440 minutes), and an
/// hour more.
pub const MINUTE_RETENTION: TimeDelta = TimeDelta::hours(25);

/// The four series of a minute, as named in its bucket and in the API.
pub const KINDS: [&str; 4] = ["accepted", "delivered", "failed", "deadLettered"];

/// The start of the minute `at` falls in.
pub fn minute_of(at: DateTime<Utc>) -> DateTime<Utc> {
    at.duration_trunc(TimeDelta::minutes(1)).unwrap_or(at)
}

/// A bucket's id: its minute, `2026-12-02T05:13`.
fn bucket_id(minute: DateTime<Utc>) -> String {
    minute.format("%Y-%m-%dT%H:%M").to_string()
}

/// What one message adds to one minute's bucket.
#[derive(Debug, Clone, PartialEq)]
pub struct MinuteCount {
    pub minute: DateTime<Utc>,
    pub counted: Counted,
}

/// Counts `kind` once in all, in its channel and in its priority.
fn series_delta(kind: &str, channel: Option<Channel>, priority: Priority) -> Delta {
    let mut delta = Delta::default();
    delta.bump(format!("{kind}.all"), 1);
    let channel = channel.map_or(NO_CHANNEL, Channel::as_str);
    delta.bump(format!("{kind}.c.{channel}"), 1);
    delta.bump(format!("{kind}.p.{}", priority.as_str()), 1);
    delta
}

/// The minute count of a status step read at `offset` of the status topic's `partition`; `None` for a step that
/// none of the series counts (an event recorded without delivery).
pub fn of_step(partition: i32, offset: i64, status: &StatusMessage) -> Option<MinuteCount> {
    let kind = match status.outcome {
        StatusOutcome::Delivered => "delivered",
        StatusOutcome::DeadLettered => "deadLettered",
        StatusOutcome::Failed => "failed",
        StatusOutcome::Recorded => return None,
    };
    Some(MinuteCount {
        minute: minute_of(status.at),
        counted: Counted {
            source: format!("s{partition}"),
            offset,
            delta: series_delta(kind, status.channel, status.priority),
        },
    })
}

/// The few fields of a lane message the accepted count needs; the payload is skipped, not decoded.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LaneHead {
    event: EventHead,
    attempt: u32,
    #[serde(default)]
    replay_count: u32,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventHead {
    #[serde(default)]
    channel: Option<Channel>,
    #[serde(default)]
    priority: Priority,
    created_at: DateTime<Utc>,
}

/// The minute count of a lane message read at `offset` of `lane`'s `partition`: one accepted event for a first
/// attempt of an event never replayed, `None` for the others (a retry, a replay: the event was counted when it was
/// accepted).
pub fn of_lane_message(
    lane: Lane,
    partition: i32,
    offset: i64,
    head: &LaneHead,
) -> Option<MinuteCount> {
    (head.attempt == 1 && head.replay_count == 0).then(|| MinuteCount {
        minute: minute_of(head.event.created_at),
        counted: Counted {
            source: format!("{}{partition}", &lane.as_str()[..1]),
            offset,
            delta: series_delta("accepted", head.event.channel, head.event.priority),
        },
    })
}

/// One minute's counters as read back: by series, the counts in all (`all`), by channel (`c`) and by priority (`p`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MinuteCounters {
    pub minute: DateTime<Utc>,
    /// By series name (`accepted`, ...), then `all`, `c.<channel>` or `p.<priority>`.
    pub counts: BTreeMap<&'static str, BTreeMap<String, u64>>,
}

impl MinuteCounters {
    fn from_bucket(minute: DateTime<Utc>, bucket: &Document) -> Self {
        let mut counts = BTreeMap::new();
        for kind in KINDS {
            let Ok(series) = bucket.get_document(kind) else {
                continue;
            };
            let mut values = BTreeMap::new();
            if let Some(n) = series.get("all").and_then(as_i64) {
                values.insert("all".to_owned(), n.max(0) as u64);
            }
            for dimension in ["c", "p"] {
                if let Ok(names) = series.get_document(dimension) {
                    for (name, n) in names {
                        values.insert(
                            format!("{dimension}.{name}"),
                            as_i64(n).unwrap_or(0).max(0) as u64,
                        );
                    }
                }
            }
            counts.insert(kind, values);
        }
        Self { minute, counts }
    }
}

/// Read and write access to `stats_minutes`.
#[derive(Debug, Clone)]
pub struct MinuteBuckets {
    minutes: Collection<Document>,
}

impl MinuteBuckets {
    pub fn new(db: &Database) -> Self {
        Self {
            minutes: db.collection(STATS_MINUTES),
        }
    }

    /// The index a window is read and old buckets are deleted with (idempotent).
    pub async fn ensure_indexes(db: &Database) -> mongodb::error::Result<()> {
        let index = IndexModel::builder()
            .keys(doc! { "minute": 1 })
            .options(IndexOptions::builder().name("minute".to_owned()).build())
            .build();
        herald_platform::mongo::ensure_indexes(db, STATS_MINUTES, vec![index]).await
    }

    /// Folds `counts` into their minutes' buckets, each message once; when a new minute's bucket was created,
    /// deletes the buckets older than [`MINUTE_RETENTION`] before `now`. On `Err`, folding the same counts again
    /// completes it without counting any twice.
    pub async fn apply(
        &self,
        counts: Vec<MinuteCount>,
        now: DateTime<Utc>,
    ) -> Result<(), BucketError> {
        let mut by_minute: BTreeMap<DateTime<Utc>, Vec<Counted>> = BTreeMap::new();
        for count in counts {
            by_minute
                .entry(count.minute)
                .or_default()
                .push(count.counted);
        }
        let mut created = false;
        for (minute, counted) in by_minute {
            created |= fold(
                &self.minutes,
                &bucket_id(minute),
                ("minute", minute),
                None,
                &counted,
            )
            .await?;
        }
        if created {
            let before = bson::DateTime::from_chrono(now - MINUTE_RETENTION);
            self.minutes
                .delete_many(doc! { "minute": { "$lt": before } })
                .await?;
        }
        Ok(())
    }

    /// The counters of the minutes from `from` (inclusive), at most one read of [`MINUTE_RETENTION`]'s buckets.
    pub async fn read(
        &self,
        from: DateTime<Utc>,
        max_time: Duration,
    ) -> mongodb::error::Result<Vec<MinuteCounters>> {
        let mut cursor = self
            .minutes
            .find(doc! { "minute": { "$gte": bson::DateTime::from_chrono(from) } })
            .projection(doc! { "o": 0 })
            .max_time(max_time)
            .await?;
        let mut minutes = Vec::new();
        while cursor.advance().await? {
            let bucket: Document = cursor.deserialize_current()?;
            let Some(Bson::DateTime(minute)) = bucket.get("minute") else {
                continue;
            };
            minutes.push(MinuteCounters::from_bucket(minute.to_chrono(), &bucket));
        }
        Ok(minutes)
    }
}

#[cfg(test)]
mod tests {
    use herald_domain::{Event, EventId};

    use super::*;

    fn event(created_at: DateTime<Utc>) -> Event {
        Event {
            event_id: EventId::parse("e1").expect("valid"),
            user_id: None,
            event_type: None,
            channel: Some(Channel::Sms),
            priority: Priority::Critical,
            payload: serde_json::json!({"to": "+15550100", "message": "hi"}),
            metadata: None,
            created_at,
        }
    }

    fn at(raw: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(raw)
            .expect("valid")
            .with_timezone(&Utc)
    }

    #[test]
    fn a_first_attempt_counts_as_accepted_in_its_creation_minute_and_nothing_else_does() {
        let message = herald_domain::LaneMessage::first(event(at("2026-12-02T05:13:59.900Z")));
        let head: LaneHead =
            serde_json::from_slice(&serde_json::to_vec(&message).expect("encodes"))
                .expect("decodes");
        let count = of_lane_message(Lane::Critical, 2, 40, &head).expect("counted");
        assert_eq!(bucket_id(count.minute), "2026-12-02T05:13");
        assert_eq!(count.counted.source, "c2");
        let mut want = Delta::default();
        for key in ["accepted.all", "accepted.c.sms", "accepted.p.critical"] {
            want.bump(key.to_owned(), 1);
        }
        assert_eq!(count.counted.delta, want);

        let retry = herald_domain::LaneMessage {
            attempt: 2,
            ..message.clone()
        };
        let replay = herald_domain::LaneMessage {
            replay_count: 1,
            ..message
        };
        for other in [retry, replay] {
            let head: LaneHead =
                serde_json::from_slice(&serde_json::to_vec(&other).expect("encodes"))
                    .expect("decodes");
            assert_eq!(of_lane_message(Lane::Default, 0, 1, &head), None);
        }
    }

    #[test]
    fn a_step_counts_in_the_minute_it_happened() {
        let mut status = StatusMessage::new(
            &event(at("2026-12-02T04:00:00Z")),
            StatusOutcome::Failed,
            1,
            0,
        );
        status.at = at("2026-12-02T05:14:00Z");
        let count = of_step(3, 7, &status).expect("counted");
        assert_eq!(bucket_id(count.minute), "2026-12-02T05:14");
        assert_eq!(count.counted.source, "s3");
        status.outcome = StatusOutcome::Recorded;
        assert_eq!(of_step(3, 8, &status), None);
    }
}
