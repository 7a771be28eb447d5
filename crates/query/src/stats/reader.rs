//! The counts of `GET /api/stats`: the buckets of the whole UTC hours a range covers, plus the events of those
//! hours still in flight, counted live.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use herald_domain::Status;
use herald_platform::mongo::EVENTS;
use mongodb::bson::{self, doc, Document};
use mongodb::{Collection, Database};

use super::buckets::{default_priority, hour_at_or_after, hour_of, Tally, STATS_HOURS};
use crate::logs::reader::{Counts, NO_CHANNEL};
use crate::logs::Range;

/// The statuses of an event still on its way, counted from the events themselves.
const IN_FLIGHT: [Status; 4] = [
    Status::Pending,
    Status::Queued,
    Status::Dispatching,
    Status::RetryScheduled,
];

/// The counts of a range and the whole hours they cover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HourCounts {
    pub counts: Counts,
    /// The range widened to whole hours: the first hour counted, and the end of the last one.
    pub hours: Range,
}

/// Read access to the buckets and to the events in flight, every query bounded by `max_time`.
#[derive(Debug, Clone)]
pub struct StatsReader {
    hours: Collection<Document>,
    events: Collection<Document>,
    max_time: Duration,
}

impl StatsReader {
    pub fn new(db: &Database, max_time: Duration) -> Self {
        Self {
            hours: db.collection(STATS_HOURS),
            events: db.collection(EVENTS),
            max_time,
        }
    }

    /// The counts of the events created within `range`, widened to whole hours.
    ///
    /// One read of the buckets (a few hundred small documents for a month) and one `$group` per in-flight status,
    /// whose `$match` starts with an equality on `status` that FerretDB pushes down to its GIN index.
    pub async fn counts(&self, range: &Range) -> mongodb::error::Result<HourCounts> {
        let hours = Range {
            from: range.from.map(hour_of),
            before: range.before.map(hour_at_or_after),
        };
        let mut tally = Tally::default();
        let mut buckets = self
            .hours
            .find(window("hour", &hours))
            .projection(doc! { "s": 1, "c": 1, "p": 1 })
            .max_time(self.max_time)
            .await?;
        while buckets.advance().await? {
            tally.add_bucket(&buckets.deserialize_current()?);
        }
        for status in IN_FLIGHT {
            let mut matching = doc! { "status": status.as_str() };
            matching.extend(window("createdAt", &hours));
            let pipeline = vec![
                doc! { "$match": matching },
                doc! { "$group": {
                    "_id": { "channel": "$channel", "priority": "$priority" },
                    "n": { "$sum": 1 },
                } },
            ];
            let groups: Vec<Document> = self
                .events
                .aggregate(pipeline)
                .max_time(self.max_time)
                .await?
                .try_collect()
                .await?;
            for group in groups {
                let key = group.get_document("_id").ok();
                let text = |name: &str| key.and_then(|k| k.get_str(name).ok());
                let n = match group.get("n") {
                    Some(bson::Bson::Int32(n)) => i64::from(*n),
                    Some(bson::Bson::Int64(n)) => *n,
                    Some(bson::Bson::Double(n)) => *n as i64,
                    _ => 0,
                };
                tally.add(
                    status.as_str(),
                    text("channel").unwrap_or(NO_CHANNEL),
                    text("priority").unwrap_or(default_priority()),
                    n,
                );
            }
        }
        Ok(HourCounts {
            counts: Counts::from_tally(tally),
            hours,
        })
    }
}

/// `{field: {$gte: from, $lt: before}}` for the bounds `range` has; empty when unbounded.
fn window(field: &str, range: &Range) -> Document {
    let mut bounds = Document::new();
    let at = |t: DateTime<Utc>| bson::DateTime::from_chrono(t);
    if let Some(from) = range.from {
        bounds.insert("$gte", at(from));
    }
    if let Some(before) = range.before {
        bounds.insert("$lt", at(before));
    }
    if bounds.is_empty() {
        Document::new()
    } else {
        doc! { field: bounds }
    }
}
