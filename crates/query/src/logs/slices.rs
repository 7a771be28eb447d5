//! The slice walk: a page of a list read one slice of creation time (ten minutes, an hour, then a day) at a time.
//!
//! FerretDB 1.24 pushes a find's equalities down to PostgreSQL, but not its ranges, sort or limit: a filtered
//! page made it fetch, decode and sort in Go every event the filter matches, seconds at 10,000 matches. Every
//! event also stores the UTC hour and day it was created (`createdHour`, `createdDay`, GIN-indexed by the stack),
//! so a query with the filter plus `createdHour = H` fetches only that hour's matches, and its ten minutes
//! (`createdSlot`, asked for with its hour and checked by PostgreSQL on the hour's rows), so that a filter with
//! hundreds of matches an hour fetches a sixth of them for its first page. The walk reads the slices
//! in the list's order, each query sorted and limited as the whole list would be, until the page is full; slices
//! partition `createdAt`, so the pages are exactly those of the one query, cursor and all.
//!
//! The walk is bounded: it reads slots until an hour's edge once they cover [`SLOTS_COVER`], then hours; after
//! [`HOURS_BEFORE_DAYS`] hours, or sooner when the slices read since the first match say the page would need more
//! than [`HOURS_AHEAD`] more hours (a sparse filter; slices before any match say nothing, so a quiet stretch
//! before a busy one is not mistaken for one), it reads days (the first one only up to the slices it already read), and after [`DAYS_BEFORE_ALL`] days one query without a slice (and with the bound
//! of what was read) ends it, so a sparse filter costs at most that many queries, and a dense one fills its page
//! in the first slot. A range (`from`/`to`) or a cursor says where the walk starts and ends.
//!
//! Newest first, the walk starts in the slot of now plus [`CLOCK_SKEW`]: ingest stamps `createdAt` with its
//! clock, so no event is newer, clocks being kept. Oldest first without `from` or a cursor there is no first
//! slice to start from, and the one query serves the page as before.

use chrono::{DateTime, Duration, DurationRound, TimeDelta, Utc};
use herald_platform::store::{
    created_day, created_hour, created_slot, CREATED_DAY, CREATED_HOUR, CREATED_SLOT,
};
use mongodb::bson::{self, Bson, Document};

use super::params::{ListQuery, Position};
use super::SortOrder;

/// How much time a walk's ten-minute slots cover, at least, before it reads hours (from the first hour's edge
/// after it): a walk that starts a minute past the hour does not fetch the whole hour before for its first page.
pub const SLOTS_COVER: TimeDelta = TimeDelta::minutes(10);
/// Hours a walk reads before it reads days.
pub const HOURS_BEFORE_DAYS: u32 = 6;
/// Read days instead of hours once the hours read say the page needs more than this many more hours.
pub const HOURS_AHEAD: f64 = 2.0;
/// How much time the hours read must cover before their count says the filter is sparse: a first hour that
/// began a minute ago says little.
const SPARSE_AFTER: TimeDelta = TimeDelta::minutes(30);
/// Days a walk reads before its last query, unsliced.
pub const DAYS_BEFORE_ALL: u32 = 7;
/// How far ahead of this process's clock an event's `createdAt` may be.
pub const CLOCK_SKEW: TimeDelta = TimeDelta::minutes(1);

/// Whether list pages are read slice by slice (`HERALD_QUERY_SLICED_LISTS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Slicing {
    /// When the server is FerretDB (its `buildInfo` says so). MongoDB's compound indexes serve a page with one
    /// query, and the slices are only an accelerator there.
    #[default]
    Auto,
    On,
    Off,
}

/// A value of `HERALD_QUERY_SLICED_LISTS` that is not `auto`, `on` or `off`.
#[derive(Debug, thiserror::Error)]
#[error("must be auto, on or off")]
pub struct BadSlicing;

impl std::str::FromStr for Slicing {
    type Err = BadSlicing;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        match raw.trim() {
            "auto" => Ok(Slicing::Auto),
            "on" => Ok(Slicing::On),
            "off" => Ok(Slicing::Off),
            _ => Err(BadSlicing),
        }
    }
}

/// The width of a slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grain {
    /// Ten minutes, asked for with its hour (`createdSlot` has no index of its own).
    Slot,
    Hour,
    Day,
}

impl Grain {
    fn field(self) -> &'static str {
        match self {
            Grain::Slot => CREATED_SLOT,
            Grain::Hour => CREATED_HOUR,
            Grain::Day => CREATED_DAY,
        }
    }

    fn length(self) -> Duration {
        match self {
            Grain::Slot => Duration::minutes(10),
            Grain::Hour => Duration::hours(1),
            Grain::Day => Duration::days(1),
        }
    }

    /// The start of the slice `at` is in.
    fn start_of(self, at: DateTime<Utc>) -> DateTime<Utc> {
        // Truncating to a whole hour or day of the epoch cannot fail for a time chrono holds.
        at.duration_trunc(self.length()).unwrap_or(at)
    }

    fn key(self, start: DateTime<Utc>) -> String {
        match self {
            Grain::Slot => created_slot(start),
            Grain::Hour => created_hour(start),
            Grain::Day => created_day(start),
        }
    }

    /// How many slices of this grain are read before the next grain (`None`: the unsliced query).
    fn budget(self) -> u32 {
        match self {
            // Slots end at an hour's edge instead (see `SLOTS_COVER`).
            Grain::Slot => u32::MAX,
            Grain::Hour => HOURS_BEFORE_DAYS,
            Grain::Day => DAYS_BEFORE_ALL,
        }
    }

    fn wider(self) -> Option<Grain> {
        match self {
            Grain::Slot => Some(Grain::Hour),
            Grain::Hour => Some(Grain::Day),
            Grain::Day => None,
        }
    }
}

/// Where a walk is: which slice comes next, and what the slices read so far cover.
#[derive(Debug, Clone)]
pub struct Walk {
    order: SortOrder,
    /// The grain of the next query; `None`: the next query is unsliced, and the last.
    grain: Option<Grain>,
    /// Slices read at the current grain.
    n_at_grain: u32,
    /// An instant in the next slice.
    next: DateTime<Utc>,
    /// The edge of what the slices read so far cover (newest first: every match at or after it is read; oldest
    /// first: every match before it), `None` before the first slice.
    frontier: Option<DateTime<Utc>>,
    /// Newest first: the earliest instant in range; oldest first: the first instant past the range.
    end: Option<DateTime<Utc>>,
    /// Where the density of the filter is measured from: the edge, toward the walk's start, of the first slice
    /// that found a match (`None` until one has), and how many events the slices found since: an empty stretch
    /// (a quiet night before a busy day) says nothing about how dense the filter is where events are.
    origin: Option<DateTime<Utc>>,
    n_found: usize,
    /// The edge toward the walk's start of the slice last read.
    last_edge: DateTime<Utc>,
    /// Where the walk began.
    began: DateTime<Utc>,
    done: bool,
}

impl Walk {
    /// The walk of `query`'s page, at time `now`.
    pub fn new(query: &ListQuery, now: DateTime<Utc>) -> Self {
        let cursor = match &query.position {
            Position::After(cursor) => DateTime::from_timestamp_millis(cursor.created_at_ms),
            Position::Page(_) => None,
        };
        let range = query.filters.range;
        let (start, end) = match query.order {
            SortOrder::NewestFirst => {
                let newest = [
                    Some(now + CLOCK_SKEW),
                    cursor,
                    range.before.map(|b| b - Duration::milliseconds(1)),
                ];
                (newest.into_iter().flatten().min(), range.from)
            }
            SortOrder::OldestFirst => {
                // Without a lower bound there is no first slice: the unsliced query serves the page.
                let oldest = [cursor, range.from].into_iter().flatten().max();
                let past = [
                    Some(now + CLOCK_SKEW + Duration::milliseconds(1)),
                    range.before,
                ];
                (oldest, past.into_iter().flatten().min())
            }
        };
        Self {
            order: query.order,
            grain: start.map(|_| Grain::Slot),
            n_at_grain: 0,
            next: start.unwrap_or(now),
            frontier: None,
            end,
            origin: None,
            n_found: 0,
            last_edge: start.unwrap_or(now),
            began: start.unwrap_or(now),
            done: false,
        }
    }

    /// Tells the walk that its last query returned `n_found` events and that the page still wants `n_left` more:
    /// a walk through slots and hours whose matches, since the first one, are too sparse to fill the page in
    /// [`HOURS_AHEAD`] more hours reads days from now on.
    pub fn found(&mut self, n_found: usize, n_left: usize) {
        if self.origin.is_none() && n_found > 0 {
            self.origin = Some(self.last_edge);
        }
        self.n_found += n_found;
        let (Some(Grain::Slot | Grain::Hour), Some(frontier), Some(origin)) =
            (self.grain, self.frontier, self.origin)
        else {
            return;
        };
        let covered = (frontier - origin).abs();
        if n_left == 0 || covered < SPARSE_AFTER {
            return;
        }
        let covered_hours = covered.num_milliseconds() as f64 / 3_600_000.0;
        // One more than found: a slight lean toward sparse.
        let hours_needed = n_left as f64 * covered_hours / (self.n_found + 1) as f64;
        if hours_needed > HOURS_AHEAD {
            self.grain = Some(Grain::Day);
            self.n_at_grain = 0;
            self.n_found = 0;
        }
    }

    /// The filter of the next query (`page` is the page's filter: its equalities, range and cursor), or `None`
    /// once the walk has covered everything in range.
    pub fn next_filter(&mut self, page: &Document) -> Option<Document> {
        if self.done {
            return None;
        }
        let mut filter = page.clone();
        let Some(grain) = self.grain else {
            self.done = true;
            self.bound(&mut filter);
            return Some(filter);
        };
        let start = grain.start_of(self.next);
        let past = start + grain.length();
        let beyond = match self.order {
            SortOrder::NewestFirst => self.end.is_some_and(|from| past <= from),
            SortOrder::OldestFirst => self.end.is_some_and(|past_end| start >= past_end),
        };
        if beyond {
            self.done = true;
            return None;
        }
        if grain == Grain::Slot {
            // The hour's index narrows the rows; the slot is checked on them.
            filter.insert(CREATED_HOUR, created_hour(start));
        }
        filter.insert(grain.field(), grain.key(start));
        self.bound(&mut filter);
        self.last_edge = match self.order {
            SortOrder::NewestFirst => self.frontier.unwrap_or(self.last_edge).min(past),
            SortOrder::OldestFirst => self.frontier.unwrap_or(self.last_edge).max(start),
        };
        match self.order {
            SortOrder::NewestFirst => {
                self.frontier = Some(start);
                self.next = start - Duration::milliseconds(1);
            }
            SortOrder::OldestFirst => {
                self.frontier = Some(past);
                self.next = past;
            }
        }
        self.n_at_grain += 1;
        // Slots end at the first hour's edge past `SLOTS_COVER`, so that no hour is fetched again for a part of it
        // already read.
        let slots_done = self
            .frontier
            .is_some_and(|f| Grain::Hour.start_of(f) == f && (f - self.began).abs() >= SLOTS_COVER);
        if self.n_at_grain >= grain.budget() || (grain == Grain::Slot && slots_done) {
            self.grain = grain.wider();
            self.n_at_grain = 0;
        }
        Some(filter)
    }

    /// Adds "not in what was read" to `filter`: newest first `createdAt < frontier`, oldest first
    /// `createdAt >= frontier`, tightening a bound of the same operator the page's filter already has.
    fn bound(&self, filter: &mut Document) {
        let Some(frontier) = self.frontier else {
            return;
        };
        let (operator, tighter): (&str, fn(i64, i64) -> i64) = match self.order {
            SortOrder::NewestFirst => ("$lt", i64::min),
            SortOrder::OldestFirst => ("$gte", i64::max),
        };
        let mut created = match filter.remove("createdAt") {
            Some(Bson::Document(created)) => created,
            _ => Document::new(),
        };
        let mut edge = frontier.timestamp_millis();
        if let Ok(existing) = created.get_datetime(operator) {
            edge = tighter(edge, existing.timestamp_millis());
        }
        created.insert(operator, bson::DateTime::from_millis(edge));
        filter.insert("createdAt", created);
    }
}

#[cfg(test)]
mod tests {
    use mongodb::bson::doc;

    use super::super::cursor::Cursor;
    use super::super::{Filters, Range};
    use super::*;

    fn at(raw: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(raw)
            .expect("valid")
            .with_timezone(&Utc)
    }

    fn query(order: SortOrder, range: Range, position: Position) -> ListQuery {
        ListQuery {
            filters: Filters {
                range,
                ..Filters::default()
            },
            order,
            limit: 10,
            position,
            with_total: false,
        }
    }

    /// The slice (field, key) and the createdAt bound of every query of a walk over an empty database.
    fn steps(query: &ListQuery, now: DateTime<Utc>) -> Vec<(String, Option<Document>)> {
        let mut walk = Walk::new(query, now);
        let mut steps = Vec::new();
        while let Some(filter) = walk.next_filter(&doc! {}) {
            let slice = [CREATED_SLOT, CREATED_HOUR, CREATED_DAY]
                .iter()
                .find_map(|f| filter.get_str(f).ok().map(|k| format!("{f}={k}")))
                .unwrap_or_else(|| "all".to_owned());
            steps.push((slice, filter.get_document("createdAt").ok().cloned()));
            assert!(steps.len() < 100, "the walk does not end");
        }
        steps
    }

    #[test]
    fn newest_first_reads_slots_then_hours_then_days_then_the_rest() {
        let now = at("2026-12-02T05:30:00Z");
        let walk = steps(
            &query(SortOrder::NewestFirst, Range::default(), Position::Page(1)),
            now,
        );
        let slices: Vec<&str> = walk.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(
            slices,
            [
                // Slots to the first hour's edge ten minutes or more away.
                "createdSlot=2026-12-02T05:3",
                "createdSlot=2026-12-02T05:2",
                "createdSlot=2026-12-02T05:1",
                "createdSlot=2026-12-02T05:0",
                "createdHour=2026-12-02T04",
                "createdHour=2026-12-02T03",
                "createdHour=2026-12-02T02",
                "createdHour=2026-12-02T01",
                "createdHour=2026-12-02T00",
                "createdHour=2026-12-01T23",
                "createdDay=2026-12-01",
                "createdDay=2026-11-30",
                "createdDay=2026-11-29",
                "createdDay=2026-11-28",
                "createdDay=2026-11-27",
                "createdDay=2026-11-26",
                "createdDay=2026-11-25",
                "all",
            ]
        );
        assert_eq!(walk[0].1, None, "the first slice has no bound");
        assert_eq!(
            walk[1].1,
            Some(doc! { "$lt": bson::DateTime::from_chrono(at("2026-12-02T05:30:00Z")) })
        );
        assert_eq!(
            walk[4].1,
            Some(doc! { "$lt": bson::DateTime::from_chrono(at("2026-12-02T05:00:00Z")) })
        );
        assert_eq!(
            walk[10].1,
            Some(doc! { "$lt": bson::DateTime::from_chrono(at("2026-12-01T23:00:00Z")) }),
            "the first day is bounded by the hours read"
        );
        assert_eq!(
            walk[17].1,
            Some(doc! { "$lt": bson::DateTime::from_chrono(at("2026-11-25T00:00:00Z")) })
        );
    }

    #[test]
    fn sparse_slices_turn_into_days_and_dense_ones_do_not() {
        let now = at("2026-12-02T05:30:00Z");
        let q = query(SortOrder::NewestFirst, Range::default(), Position::Page(1));
        let slice_of = |filter: Document| {
            filter
                .get_str(CREATED_SLOT)
                .map(|h| format!("slot {h}"))
                .or_else(|_| filter.get_str(CREATED_HOUR).map(|h| format!("hour {h}")))
                .or_else(|_| filter.get_str(CREATED_DAY).map(|d| format!("day {d}")))
                .unwrap_or_else(|_| "all".to_owned())
        };
        // One match in the first ten minutes, then half an hour with nothing: 10 more would take hours. Days
        // from then on.
        let mut sparse = Walk::new(&q, now);
        let mut seen = Vec::new();
        for n_found in [1, 0, 0, 0, 0, 0] {
            let filter = sparse.next_filter(&doc! {}).expect("a slice");
            seen.push(slice_of(filter));
            sparse.found(n_found, 10);
        }
        assert_eq!(
            seen,
            [
                "slot 2026-12-02T05:3",
                "slot 2026-12-02T05:2",
                "slot 2026-12-02T05:1",
                "slot 2026-12-02T05:0",
                "day 2026-12-02",
                "day 2026-12-01"
            ]
        );
        // Fifteen events in each ten minutes: the rest is within the next hour.
        let mut dense = Walk::new(&q, now);
        for (n_found, n_left) in [(15, 36), (15, 21), (15, 6), (1, 5)] {
            dense.next_filter(&doc! {}).expect("a slice");
            dense.found(n_found, n_left);
        }
        let fifth = dense.next_filter(&doc! {}).expect("a slice");
        assert_eq!(slice_of(fifth), "hour 2026-12-02T04");
        // Slices with nothing at all say nothing of the filter: a quiet stretch before a busy one is read at the
        // grain it started with.
        let mut quiet = Walk::new(&q, now);
        for _ in 0..4 {
            quiet.next_filter(&doc! {}).expect("a slice");
            quiet.found(0, 51);
        }
        let fifth = quiet.next_filter(&doc! {}).expect("a slice");
        assert_eq!(slice_of(fifth), "hour 2026-12-02T04");
        // A first slot that began a minute ago says nothing yet.
        let mut early = Walk::new(&q, at("2026-12-02T05:00:30Z"));
        early.next_filter(&doc! {}).expect("a slice");
        early.found(0, 11);
        let second = early.next_filter(&doc! {}).expect("a slice");
        assert_eq!(slice_of(second), "slot 2026-12-02T04:5");
    }

    #[test]
    fn a_day_after_the_hours_is_bounded_by_them() {
        let now = at("2026-12-02T20:30:00Z");
        let walk = steps(
            &query(SortOrder::NewestFirst, Range::default(), Position::Page(1)),
            now,
        );
        assert_eq!(walk[10].0, "createdDay=2026-12-02");
        assert_eq!(
            walk[10].1,
            Some(doc! { "$lt": bson::DateTime::from_chrono(at("2026-12-02T14:00:00Z")) })
        );
        assert_eq!(walk[11].0, "createdDay=2026-12-01");
    }

    #[test]
    fn a_range_says_where_the_walk_starts_and_ends() {
        let range = Range {
            from: Some(at("2026-11-01T10:00:00Z")),
            before: Some(at("2026-11-01T13:00:00Z")),
        };
        let now = at("2026-12-02T05:30:00Z");
        let newest = steps(
            &query(SortOrder::NewestFirst, range, Position::Page(1)),
            now,
        );
        let slices: Vec<&str> = newest.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(
            slices,
            [
                "createdSlot=2026-11-01T12:5",
                "createdSlot=2026-11-01T12:4",
                "createdSlot=2026-11-01T12:3",
                "createdSlot=2026-11-01T12:2",
                "createdSlot=2026-11-01T12:1",
                "createdSlot=2026-11-01T12:0",
                "createdHour=2026-11-01T11",
                "createdHour=2026-11-01T10"
            ]
        );
        let oldest = steps(
            &query(SortOrder::OldestFirst, range, Position::Page(1)),
            now,
        );
        let slices: Vec<&str> = oldest.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(
            slices,
            [
                "createdSlot=2026-11-01T10:0",
                "createdSlot=2026-11-01T10:1",
                "createdSlot=2026-11-01T10:2",
                "createdSlot=2026-11-01T10:3",
                "createdSlot=2026-11-01T10:4",
                "createdSlot=2026-11-01T10:5",
                "createdHour=2026-11-01T11",
                "createdHour=2026-11-01T12"
            ]
        );
        assert_eq!(
            oldest[1].1,
            Some(doc! { "$gte": bson::DateTime::from_chrono(at("2026-11-01T10:10:00Z")) })
        );
        assert_eq!(
            oldest[6].1,
            Some(doc! { "$gte": bson::DateTime::from_chrono(at("2026-11-01T11:00:00Z")) })
        );
    }

    #[test]
    fn a_cursor_starts_the_walk_in_its_slice() {
        let now = at("2026-12-02T05:30:00Z");
        let filters = Filters::default();
        let id = herald_domain::EventId::parse("e1").expect("valid");
        let cursor = |order| {
            Position::After(Cursor::after(
                order,
                &filters,
                at("2026-11-20T08:15:00Z"),
                id.clone(),
            ))
        };
        let newest = steps(
            &query(
                SortOrder::NewestFirst,
                Range::default(),
                cursor(SortOrder::NewestFirst),
            ),
            now,
        );
        assert_eq!(newest[0].0, "createdSlot=2026-11-20T08:1");
        assert_eq!(newest[1].0, "createdSlot=2026-11-20T08:0");
        assert_eq!(newest[2].0, "createdHour=2026-11-20T07");
        let oldest = steps(
            &query(
                SortOrder::OldestFirst,
                Range::default(),
                cursor(SortOrder::OldestFirst),
            ),
            now,
        );
        assert_eq!(oldest[0].0, "createdSlot=2026-11-20T08:1");
        assert_eq!(oldest[4].0, "createdSlot=2026-11-20T08:5");
        assert_eq!(oldest[5].0, "createdHour=2026-11-20T09");
        assert_eq!(oldest[11].0, "createdDay=2026-11-20");
        assert_eq!(oldest[12].0, "createdDay=2026-11-21");
        assert_eq!(oldest.last().map(|s| s.0.as_str()), Some("all"));
    }

    #[test]
    fn oldest_first_without_a_lower_bound_is_one_query() {
        let now = at("2026-12-02T05:30:00Z");
        let walk = steps(
            &query(SortOrder::OldestFirst, Range::default(), Position::Page(1)),
            now,
        );
        assert_eq!(walk, [("all".to_owned(), None)]);
    }

    #[test]
    fn the_bound_tightens_the_range() {
        let range = Range {
            from: None,
            before: Some(at("2026-11-01T10:30:00Z")),
        };
        let q = query(SortOrder::NewestFirst, range, Position::Page(1));
        let mut walk = Walk::new(&q, at("2026-12-02T05:30:00Z"));
        let page = super::super::reader::page_filter(&q);
        let first = walk.next_filter(&page).expect("a slice");
        // A slot is asked for with its hour, whose index narrows the rows.
        assert_eq!(first.get_str(CREATED_SLOT), Ok("2026-11-01T10:2"));
        assert_eq!(first.get_str(CREATED_HOUR), Ok("2026-11-01T10"));
        assert_eq!(
            first.get_document("createdAt").ok(),
            Some(&doc! { "$lt": bson::DateTime::from_chrono(at("2026-11-01T10:30:00Z")) })
        );
        let second = walk.next_filter(&page).expect("a slice");
        assert_eq!(
            second.get_document("createdAt").ok(),
            Some(&doc! { "$lt": bson::DateTime::from_chrono(at("2026-11-01T10:20:00Z")) })
        );
    }
}
