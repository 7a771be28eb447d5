//! The counts of `GET /api/stats`: the buckets of the whole UTC hours a range covers (one day bucket for each
//! whole day, the hours of the partial days at its ends), plus the events of those hours still in flight, from a
//! snapshot of them kept fresh in the background.
//!
//! Why a snapshot: FerretDB fetches every document a query matches whole (about 0.17 ms each), so grouping the
//! events in flight took 157 to 185 ms per status at 1,000 of them, more than the answer's whole budget, and
//! under a flood it grows with the backlog. The snapshot is taken at most every [`IN_FLIGHT_MAX_AGE`] (or four
//! times as long as the last one took, so that it never costs more than a quarter of one connection), only while
//! someone asks: an answer older than that is given at once while a new one is taken behind it; one older than
//! [`IN_FLIGHT_STALE_LIMIT`] (or none yet) waits for a fresh one. Every answer says when its in-flight counts
//! were taken (`inFlightCountedAt`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use herald_domain::Status;
use herald_platform::mongo::EVENTS;
use mongodb::bson::{self, doc, Document};
use mongodb::{Collection, Database};
use tokio::sync::OnceCell;

use super::buckets::{
    day_at_or_after, day_id, day_of, default_priority, hour_at_or_after, hour_of, Tally,
    DAYS_SINCE, HOUR_DAY, STATS_DAYS, STATS_HOURS,
};
use crate::logs::reader::{Counts, NO_CHANNEL};
use crate::logs::Range;

/// The statuses of an event still on its way, counted from the events themselves.
const IN_FLIGHT: [Status; 4] = [
    Status::Pending,
    Status::Queued,
    Status::Dispatching,
    Status::RetryScheduled,
];

/// How old a snapshot of the events in flight may be before an answer takes a new one (behind it).
pub const IN_FLIGHT_MAX_AGE: Duration = Duration::from_secs(2);
/// How old a snapshot may be and still be answered with while a new one is taken.
pub const IN_FLIGHT_STALE_LIMIT: Duration = Duration::from_secs(30);
/// Longest a snapshot taken in the background may read for.
const IN_FLIGHT_READ_LIMIT: Duration = Duration::from_secs(30);

/// The counts of a range and the whole hours they cover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HourCounts {
    pub counts: Counts,
    /// The range widened to whole hours: the first hour counted, and the end of the last one.
    pub hours: Range,
    /// When the events in flight were counted.
    pub in_flight_at: DateTime<Utc>,
}

/// Read access to the buckets and to the events in flight, every request's query bounded by `max_time`.
#[derive(Debug, Clone)]
pub struct StatsReader {
    hours: Collection<Document>,
    days: Collection<Document>,
    events: Collection<Document>,
    max_time: Duration,
    /// The first day the day buckets are complete from, once read (it never changes once written).
    days_since: Arc<OnceCell<DateTime<Utc>>>,
    in_flight: Arc<Mutex<Option<Arc<Snapshot>>>>,
    /// Held while a snapshot is being taken, so that one is taken at a time.
    taking: Arc<tokio::sync::Mutex<()>>,
    max_age: Duration,
}

/// How many events in flight one hour of creation holds, by status, channel and priority.
pub type HourInFlight = BTreeMap<(Status, String, String), i64>;

/// The events in flight, counted by hour of creation, then by status, channel and priority.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub by_hour: BTreeMap<DateTime<Utc>, HourInFlight>,
    pub at: DateTime<Utc>,
    taken: Instant,
    took: Duration,
}

impl Snapshot {
    /// Whether it may be answered with as it is; `max_age` stretched to four times how long it took.
    fn fresh(&self, max_age: Duration) -> bool {
        self.age() <= max_age.max(self.took * 4)
    }

    fn age(&self) -> Duration {
        self.taken.elapsed()
    }

    /// Adds the events of the hours within `hours`.
    fn add_to(&self, tally: &mut Tally, hours: &Range) {
        let lo = hours.from.unwrap_or(DateTime::<Utc>::MIN_UTC);
        let within = self
            .by_hour
            .range(lo..)
            .take_while(|(hour, _)| hours.before.is_none_or(|b| **hour < b));
        for (_, groups) in within {
            for ((status, channel, priority), n) in groups {
                tally.add(status.as_str(), channel, priority, *n);
            }
        }
    }
}

/// Which buckets count a range of whole hours: the day buckets of `days`, and the hour buckets of each range in
/// `hours_by_day` (by equality on their day) and `hours_by_range` (by a range of hours: days before the day
/// buckets were complete).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub days: Option<Range>,
    pub hours_by_day: Vec<(DateTime<Utc>, Range)>,
    pub hours_by_range: Option<Range>,
}

impl Plan {
    /// Covers `hours` (bounds on whole hours) with the fewest buckets: whole days from `since` on (when known)
    /// from day buckets, their partial first and last days from that day's hours, and anything before `since`
    /// from one range of hours.
    pub fn of(hours: &Range, since: Option<DateTime<Utc>>) -> Plan {
        let Some(since) = since else {
            return Plan {
                hours_by_range: Some(*hours),
                ..Plan::default()
            };
        };
        let mut plan = Plan::default();
        // Before `since`: hours by range (none before the epoch, and reading them would fetch every bucket).
        if since > DateTime::<Utc>::UNIX_EPOCH && hours.from.is_none_or(|f| f < since) {
            let before = hours.before.map_or(since, |b| b.min(since));
            if hours.from.is_none_or(|f| f < before) {
                plan.hours_by_range = Some(Range {
                    from: hours.from,
                    before: Some(before),
                });
            }
        }
        let from = hours.from.map_or(since, |f| f.max(since));
        if hours.before.is_some_and(|b| b <= from) {
            return plan;
        }
        // From `from` on: its partial first day, whole days, a partial last day.
        let first_whole = day_at_or_after(from);
        let last_whole_end = hours.before.map(day_of);
        match last_whole_end {
            Some(end) if end <= first_whole => {
                // No whole day: the hours of one day, or of two (either side of a midnight).
                let before = hours.before.unwrap_or(end);
                plan.add_hours(from, before);
            }
            _ => {
                plan.add_hours(from, first_whole);
                plan.days = Some(Range {
                    from: Some(first_whole),
                    before: last_whole_end,
                });
                if let (Some(end), Some(before)) = (last_whole_end, hours.before) {
                    plan.add_hours(end, before);
                }
            }
        }
        plan
    }

    /// The hours of [from, before), split by day.
    fn add_hours(&mut self, mut from: DateTime<Utc>, before: DateTime<Utc>) {
        while from < before {
            let day = day_of(from);
            let end = (day + TimeDelta::days(1)).min(before);
            self.hours_by_day.push((
                day,
                Range {
                    from: Some(from),
                    before: Some(end),
                },
            ));
            from = end;
        }
    }
}

impl StatsReader {
    pub fn new(db: &Database, max_time: Duration) -> Self {
        Self {
            hours: db.collection(STATS_HOURS),
            days: db.collection(STATS_DAYS),
            events: db.collection(EVENTS),
            max_time,
            days_since: Arc::new(OnceCell::new()),
            in_flight: Arc::default(),
            taking: Arc::default(),
            max_age: IN_FLIGHT_MAX_AGE,
        }
    }

    /// The same reader with snapshots of the events in flight at most `max_age` old.
    pub fn with_in_flight_max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age;
        self
    }

    /// The counts of the events created within `range`, widened to whole hours.
    pub async fn counts(&self, range: &Range) -> mongodb::error::Result<HourCounts> {
        let hours = Range {
            from: range.from.map(hour_of),
            before: range.before.map(hour_at_or_after),
        };
        let plan = Plan::of(&hours, self.days_since().await?);
        let mut tally = Tally::default();
        if let Some(days) = &plan.days {
            self.add_buckets(&self.days, window("day", days), None, &mut tally)
                .await?;
        }
        for (day, within) in &plan.hours_by_day {
            let by_day = doc! { HOUR_DAY: day_id(*day) };
            self.add_buckets(&self.hours, by_day, Some(within), &mut tally)
                .await?;
        }
        if let Some(within) = &plan.hours_by_range {
            self.add_buckets(&self.hours, window("hour", within), None, &mut tally)
                .await?;
        }
        let in_flight = self.in_flight().await?;
        in_flight.add_to(&mut tally, &hours);
        Ok(HourCounts {
            counts: Counts::from_tally(tally),
            hours,
            in_flight_at: in_flight.at,
        })
    }

    /// Adds the buckets `filter` matches (those whose `hour` is within `hours`, when given) to `tally`.
    async fn add_buckets(
        &self,
        buckets: &Collection<Document>,
        filter: Document,
        hours: Option<&Range>,
        tally: &mut Tally,
    ) -> mongodb::error::Result<()> {
        let mut found = buckets
            .find(filter)
            .projection(doc! { "hour": 1, "s": 1, "c": 1, "p": 1 })
            .max_time(self.max_time)
            .await?;
        while found.advance().await? {
            let bucket = found.deserialize_current()?;
            if let Some(hours) = hours {
                let Ok(hour) = bucket.get_datetime("hour") else {
                    continue;
                };
                let hour = hour.to_chrono();
                if hours.from.is_some_and(|f| hour < f) || hours.before.is_some_and(|b| hour >= b) {
                    continue;
                }
            }
            tally.add_bucket(&bucket);
        }
        Ok(())
    }

    /// The first day the day buckets count whole, once the marker exists.
    async fn days_since(&self) -> mongodb::error::Result<Option<DateTime<Utc>>> {
        if let Some(since) = self.days_since.get() {
            return Ok(Some(*since));
        }
        let marker = self
            .days
            .find_one(doc! { "_id": DAYS_SINCE })
            .max_time(self.max_time)
            .await?;
        let since = marker.and_then(|m| m.get_datetime("since").ok().map(|d| d.to_chrono()));
        if let Some(since) = since {
            let _ = self.days_since.set(since);
        }
        Ok(since)
    }

    /// A snapshot of the events in flight fresh enough to answer with; takes one behind the answer when it is
    /// getting old, and before it when there is none or it is too old.
    async fn in_flight(&self) -> mongodb::error::Result<Arc<Snapshot>> {
        let current = self.current();
        match current {
            Some(snapshot) if snapshot.fresh(self.max_age) => Ok(snapshot),
            Some(snapshot) if snapshot.age() <= IN_FLIGHT_STALE_LIMIT => {
                if let Ok(guard) = self.taking.clone().try_lock_owned() {
                    let reader = self.clone();
                    tokio::spawn(async move {
                        if let Err(e) = reader.take_snapshot(IN_FLIGHT_READ_LIMIT).await {
                            tracing::warn!(error = %e, "counting the events in flight failed");
                        }
                        drop(guard);
                    });
                }
                Ok(snapshot)
            }
            _ => {
                let _guard = self.taking.lock().await;
                // Another request may have taken one while this one waited.
                match self.current() {
                    Some(snapshot) if snapshot.fresh(self.max_age) => Ok(snapshot),
                    _ => self.take_snapshot(self.max_time).await,
                }
            }
        }
    }

    fn current(&self) -> Option<Arc<Snapshot>> {
        self.in_flight
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Counts the events in flight now (one query per in-flight status, all at once, each an equality on `status`
    /// that FerretDB pushes down to its GIN index) and keeps the count.
    async fn take_snapshot(&self, max_time: Duration) -> mongodb::error::Result<Arc<Snapshot>> {
        let started = Instant::now();
        let at = Utc::now();
        let counted = futures::future::try_join_all(
            IN_FLIGHT.map(|status| self.count_in_flight(status, max_time)),
        )
        .await?;
        let mut by_hour: BTreeMap<DateTime<Utc>, HourInFlight> = BTreeMap::new();
        for (hour, groups) in counted.into_iter().flatten() {
            let into = by_hour.entry(hour).or_default();
            for (key, n) in groups {
                *into.entry(key).or_default() += n;
            }
        }
        let snapshot = Arc::new(Snapshot {
            by_hour,
            at,
            taken: started,
            took: started.elapsed(),
        });
        *self
            .in_flight
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(snapshot.clone());
        Ok(snapshot)
    }

    /// The events in `status`, counted by hour of creation, channel and priority.
    async fn count_in_flight(
        &self,
        status: Status,
        max_time: Duration,
    ) -> mongodb::error::Result<BTreeMap<DateTime<Utc>, HourInFlight>> {
        let mut by_hour: BTreeMap<DateTime<Utc>, HourInFlight> = BTreeMap::new();
        let mut found = self
            .events
            .find(doc! { "status": status.as_str() })
            .projection(doc! { "_id": 0, "createdAt": 1, "channel": 1, "priority": 1 })
            .max_time(max_time)
            .await?;
        while found.advance().await? {
            let event = found.deserialize_current()?;
            let Ok(created) = event.get_datetime("createdAt") else {
                continue;
            };
            let text = |name: &str, or: &'static str| {
                event.get_str(name).map_or(or.to_owned(), str::to_owned)
            };
            let key = (
                status,
                text("channel", NO_CHANNEL),
                text("priority", default_priority()),
            );
            *by_hour
                .entry(hour_of(created.to_chrono()))
                .or_default()
                .entry(key)
                .or_default() += 1;
        }
        Ok(by_hour)
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn hour(n: i64) -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH + TimeDelta::hours(n)
    }

    /// The hours a plan counts, each as many times as it is counted, within [lo, hi) for unbounded sides.
    fn counted(plan: &Plan, lo: i64, hi: i64) -> Vec<i64> {
        let mut hours = Vec::new();
        let mut add = |range: &Range, step: i64| {
            let from = range.from.map_or(lo, |f| (f - hour(0)).num_hours());
            let before = range.before.map_or(hi, |b| (b - hour(0)).num_hours());
            let mut h = from;
            while h < before {
                for i in 0..step.min(before - h) {
                    hours.push(h + i);
                }
                h += step;
            }
        };
        if let Some(days) = &plan.days {
            add(days, 24);
        }
        for (day, range) in &plan.hours_by_day {
            assert!(range.from.is_some_and(|f| day_of(f) == *day));
            assert!(range.before.is_some_and(|b| b <= *day + TimeDelta::days(1)));
            add(range, 1);
        }
        if let Some(range) = &plan.hours_by_range {
            add(range, 1);
        }
        hours.sort_unstable();
        hours
    }

    proptest! {
        /// Every hour of the range is counted exactly once, days only from `since` on, and whole days only.
        #[test]
        fn a_plan_counts_every_hour_once(
            from in proptest::option::of(0_i64..2_000),
            span in 0_i64..2_000,
            bounded in any::<bool>(),
            since_day in proptest::option::of(0_i64..90),
        ) {
            let since = since_day.map(|d| hour(d * 24));
            let before = bounded.then(|| from.unwrap_or(0) + span);
            let range = Range { from: from.map(hour), before: before.map(hour) };
            let plan = Plan::of(&range, since);
            let (lo, hi) = (0, 4_000);
            let want: Vec<i64> = (from.unwrap_or(lo)..before.unwrap_or(hi)).collect();
            prop_assert_eq!(counted(&plan, lo, hi), want);
            if let Some(days) = &plan.days {
                let first = days.from.expect("days start at a day");
                prop_assert_eq!(first, day_of(first));
                prop_assert!(since.is_some_and(|s| first >= s));
                if let Some(end) = days.before {
                    prop_assert_eq!(end, day_of(end));
                    prop_assert!(end > first);
                }
            }
            if since.is_none() {
                prop_assert!(plan.days.is_none() && plan.hours_by_day.is_empty());
            }
        }
    }

    #[test]
    fn a_month_is_read_as_days_with_its_partial_ends_as_hours() {
        let since = Some(DateTime::<Utc>::UNIX_EPOCH);
        let from = hour(24 * 10 + 5);
        let before = hour(24 * 40 + 3);
        let plan = Plan::of(
            &Range {
                from: Some(from),
                before: Some(before),
            },
            since,
        );
        assert_eq!(
            plan.days,
            Some(Range {
                from: Some(hour(24 * 11)),
                before: Some(hour(24 * 40)),
            })
        );
        assert_eq!(plan.hours_by_day.len(), 2);
        assert_eq!(plan.hours_by_range, None);
    }
}
