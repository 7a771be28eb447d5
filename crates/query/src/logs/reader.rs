//! Reads of the `events` collection: a filtered page (by offset or after a cursor), its total and one event.
//! Nothing here writes.
//!
//! Every list is sorted on (`createdAt`, `eventId`) and filtered on at most one indexed field plus `createdAt`, so
//! that on MongoDB one of the `<field>_createdAt_eventId` indexes (or `createdAt_eventId`) serves both the filter
//! and the sort and the server stops after `limit + 1` index entries instead of sorting the whole match. FerretDB
//! sorts every match in Go, so there a page is read slice by slice of creation time ([`super::slices`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use herald_domain::{Channel, EventId, Priority, Status};
use herald_platform::mongo::EVENTS;
use herald_platform::store::EventRecord;
use mongodb::bson::{self, doc, Document, RawDocument, RawDocumentBuf};
use mongodb::{Collection, Database};
use tokio::sync::OnceCell;

use super::params::{ListQuery, Position};
use super::slices::{Slicing, Walk};
use super::{Filters, Range, SortOrder};

pub use mongodb::error::Error;
pub type Result<T> = std::result::Result<T, Error>;

/// A stored event with the fields the dead-letter path adds to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub record: EventRecord,
    /// Why the event was (last) dead-lettered.
    pub dead_letter_reason: Option<String>,
    pub dead_lettered_at: Option<DateTime<Utc>>,
}

impl Found {
    pub(crate) fn decode(raw: &RawDocument) -> Result<Self> {
        let record: EventRecord = bson::from_slice(raw.as_bytes())
            .map_err(|e| Error::custom(format!("a stored event does not decode: {e}")))?;
        // Read from the document rather than from `EventRecord`, whose fields are the writers' business.
        let dead_letter_reason = raw
            .get("deadLetterReason")
            .ok()
            .flatten()
            .and_then(|v| v.as_str().map(str::to_owned));
        let dead_lettered_at = raw
            .get("deadLetteredAt")
            .ok()
            .flatten()
            .and_then(|v| v.as_datetime())
            .map(|t| t.to_chrono());
        Ok(Self {
            record,
            dead_letter_reason,
            dead_lettered_at,
        })
    }
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub events: Vec<Found>,
    /// Whether events follow the last one of this page.
    pub more: bool,
}

impl Page {
    /// The cursor of the page after this one, for `query`'s order and filters; `None` on the last page.
    pub fn next_cursor(&self, query: &ListQuery) -> Option<String> {
        let last = self.events.last().filter(|_| self.more)?;
        Some(
            super::cursor::Cursor::after(
                query.order,
                &query.filters,
                last.record.created_at,
                last.record.event_id.clone(),
            )
            .encode(),
        )
    }
}

/// Counts of events, by status, channel (`none` for record-only events) and priority.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub total: u64,
    pub by_status: BTreeMap<String, u64>,
    pub by_channel: BTreeMap<String, u64>,
    pub by_priority: BTreeMap<String, u64>,
}

/// The key of record-only events (no channel) in [`Counts::by_channel`].
pub const NO_CHANNEL: &str = "none";

/// Read access to `events`, every query bounded by `max_time` on the server.
#[derive(Debug, Clone)]
pub struct EventReader {
    db: Database,
    events: Collection<RawDocumentBuf>,
    max_time: Duration,
    slicing: Slicing,
    /// Whether pages are read slice by slice, once known (with [`Slicing::Auto`], when the server is FerretDB).
    sliced: Arc<OnceCell<bool>>,
}

impl EventReader {
    /// A reader whose pages are sliced per `slicing`.
    pub fn new(db: &Database, max_time: Duration, slicing: Slicing) -> Self {
        Self {
            db: db.clone(),
            events: db.collection(EVENTS),
            max_time,
            slicing,
            sliced: Arc::default(),
        }
    }

    /// One page of the events matching `query`, without their attempts and timeline.
    pub async fn page(&self, query: &ListQuery) -> Result<Page> {
        // One more than asked for says whether there is a next page, without counting.
        let wanted = query.limit as usize + 1;
        let mut events = Vec::with_capacity(wanted);
        if !self.sliced().await? {
            self.read_sorted(
                page_filter(query),
                query,
                query.offset(),
                wanted,
                &mut events,
            )
            .await?;
        } else {
            // Offset pages skip on the client: a slice does not know how many matches the earlier ones held.
            let skip = usize::try_from(query.offset()).unwrap_or(usize::MAX);
            let needed = skip.saturating_add(wanted);
            let page = page_filter(query);
            let mut walk = Walk::new(query, Utc::now());
            while events.len() < needed {
                let Some(filter) = walk.next_filter(&page) else {
                    break;
                };
                let left = needed - events.len();
                self.read_sorted(filter, query, 0, left, &mut events)
                    .await?;
                let n_found = left - (needed - events.len());
                walk.found(n_found, needed - events.len());
            }
            events.drain(..skip.min(events.len()));
        }
        let more = events.len() > query.limit as usize;
        events.truncate(query.limit as usize);
        Ok(Page { events, more })
    }

    /// Appends to `events` up to `limit` events matching `filter`, in `query`'s order after skipping `skip`.
    async fn read_sorted(
        &self,
        filter: Document,
        query: &ListQuery,
        skip: u64,
        limit: usize,
        events: &mut Vec<Found>,
    ) -> Result<()> {
        let direction = match query.order {
            SortOrder::NewestFirst => -1,
            SortOrder::OldestFirst => 1,
        };
        let limit = u32::try_from(limit).unwrap_or(u32::MAX);
        let mut cursor = self
            .events
            .find(filter)
            .sort(doc! { "createdAt": direction, "eventId": direction })
            .skip(skip)
            .limit(i64::from(limit))
            .batch_size(limit)
            .projection(doc! { "attempts": 0, "timeline": 0 })
            .max_time(self.max_time)
            .await?;
        while cursor.advance().await? {
            events.push(Found::decode(cursor.current())?);
        }
        Ok(())
    }

    /// Whether pages are read slice by slice: per the configuration, or (`auto`) when the server says it is
    /// FerretDB, whose `buildInfo` names its version (asked once; a failed ask is asked again next time).
    async fn sliced(&self) -> Result<bool> {
        match self.slicing {
            Slicing::On => Ok(true),
            Slicing::Off => Ok(false),
            Slicing::Auto => self
                .sliced
                .get_or_try_init(|| async {
                    let info = self.db.run_command(doc! { "buildInfo": 1 }).await?;
                    Ok(info.contains_key("ferretdbVersion"))
                })
                .await
                .copied(),
        }
    }

    /// How many events match `filters`.
    pub async fn count(&self, filters: &Filters) -> Result<u64> {
        self.events
            .count_documents(filter(filters))
            .max_time(self.max_time)
            .await
    }

    /// The event with id `event_id`, with its attempts and timeline.
    pub async fn find(&self, event_id: &EventId) -> Result<Option<Found>> {
        let found = self
            .events
            .find_one(doc! { "eventId": event_id.as_str() })
            .max_time(self.max_time)
            .await?;
        found.map(|raw| Found::decode(&raw)).transpose()
    }
}

impl Counts {
    /// The counts of a tally, every known status, channel and priority present (at 0 if none); `total` is the
    /// sum of the statuses. A counter below 0 (a replay's step counted before the dead letter it replaced, which
    /// the buckets' order rules out) reads as 0.
    pub fn from_tally(tally: crate::stats::buckets::Tally) -> Self {
        let mut counts = Self::zero();
        for (from, into) in [
            (tally.by_status, &mut counts.by_status),
            (tally.by_channel, &mut counts.by_channel),
            (tally.by_priority, &mut counts.by_priority),
        ] {
            for (name, n) in from {
                *into.entry(name).or_default() += u64::try_from(n).unwrap_or(0);
            }
        }
        counts.total = counts.by_status.values().sum();
        counts
    }

    /// Every known status, channel and priority at 0, so that an answer always has every key.
    fn zero() -> Self {
        let zeros = |names: Vec<&str>| names.into_iter().map(|n| (n.to_owned(), 0)).collect();
        Self {
            total: 0,
            by_status: zeros(Status::ALL.iter().map(|s| s.as_str()).collect()),
            by_channel: zeros(
                Channel::ALL
                    .iter()
                    .map(|c| c.as_str())
                    .chain([NO_CHANNEL])
                    .collect(),
            ),
            by_priority: zeros(Priority::ALL.iter().map(|p| p.as_str()).collect()),
        }
    }
}

/// The `createdAt` condition of a range, empty when unbounded.
fn created_at(range: &Range) -> Document {
    let mut created = Document::new();
    if let Some(from) = range.from {
        created.insert("$gte", bson::DateTime::from_chrono(from));
    }
    if let Some(before) = range.before {
        created.insert("$lt", bson::DateTime::from_chrono(before));
    }
    created
}

fn range_filter(range: &Range) -> Document {
    let created = created_at(range);
    if created.is_empty() {
        Document::new()
    } else {
        doc! { "createdAt": created }
    }
}

/// The MongoDB filter of `filters`. Each value is an equality on a top-level field, which is what lets an index
/// on `(field, createdAt, eventId)` serve it.
pub fn filter(filters: &Filters) -> Document {
    let mut filter = range_filter(&filters.range);
    if let Some(user_id) = &filters.user_id {
        filter.insert("userId", user_id);
    }
    if let Some(event_type) = &filters.event_type {
        filter.insert("eventType", event_type);
    }
    if let Some(channel) = filters.channel {
        filter.insert("channel", channel.as_str());
    }
    if let Some(priority) = filters.priority {
        filter.insert("priority", priority.as_str());
    }
    if let Some(status) = filters.status {
        filter.insert("status", status.as_str());
    }
    filter
}

/// The filter of one page: the filters, and for a cursor "after (createdAt, eventId)" in the sort order.
///
/// "After" is written as a bound on `createdAt` (which the index scan uses) plus an `$or` that drops the events
/// of the cursor's own millisecond up to its event id, so the scan starts at the cursor instead of filtering
/// everything before it.
pub fn page_filter(query: &ListQuery) -> Document {
    let mut filter = filter(&query.filters);
    let Position::After(cursor) = &query.position else {
        return filter;
    };
    let at = bson::DateTime::from_millis(cursor.created_at_ms);
    let id = cursor.event_id.as_str();
    let mut created = created_at(&query.filters.range);
    match query.order {
        SortOrder::NewestFirst => {
            created.insert("$lte", at);
            filter.insert(
                "$or",
                vec![
                    doc! { "createdAt": { "$lt": at } },
                    doc! { "eventId": { "$lt": id } },
                ],
            );
        }
        SortOrder::OldestFirst => {
            // One lower bound: the later of `from` and the cursor.
            let start = match query.filters.range.from {
                Some(from) if from.timestamp_millis() > cursor.created_at_ms => {
                    bson::DateTime::from_chrono(from)
                }
                _ => at,
            };
            created.insert("$gte", start);
            filter.insert(
                "$or",
                vec![
                    doc! { "createdAt": { "$gt": at } },
                    doc! { "eventId": { "$gt": id } },
                ],
            );
        }
    }
    filter.insert("createdAt", created);
    filter
}

#[cfg(test)]
mod tests {
    use crate::logs::cursor::Cursor;

    use super::*;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(ms).expect("valid")
    }

    #[test]
    fn filters_are_equalities_and_a_half_open_range() {
        let filters = Filters {
            user_id: Some("u1".into()),
            status: Some(Status::DeadLettered),
            channel: Some(Channel::Sms),
            range: Range {
                from: Some(at(1_000)),
                before: Some(at(2_000)),
            },
            ..Filters::default()
        };
        assert_eq!(
            filter(&filters),
            doc! {
                "createdAt": { "$gte": bson::DateTime::from_millis(1_000), "$lt": bson::DateTime::from_millis(2_000) },
                "userId": "u1", "channel": "sms", "status": "DEAD_LETTERED",
            }
        );
        assert_eq!(filter(&Filters::default()), doc! {});
    }

    #[test]
    fn a_cursor_bounds_the_scan_and_breaks_ties_on_the_event_id() {
        let filters = Filters {
            range: Range {
                from: Some(at(1_000)),
                before: Some(at(9_000)),
            },
            ..Filters::default()
        };
        let id = EventId::parse("e5").expect("valid");
        let query = |order| ListQuery {
            filters: filters.clone(),
            order,
            limit: 10,
            position: Position::After(Cursor::after(order, &filters, at(5_000), id.clone())),
            with_total: false,
        };
        let t = bson::DateTime::from_millis;
        assert_eq!(
            page_filter(&query(SortOrder::NewestFirst)),
            doc! {
                "createdAt": { "$gte": t(1_000), "$lt": t(9_000), "$lte": t(5_000) },
                "$or": [{ "createdAt": { "$lt": t(5_000) } }, { "eventId": { "$lt": "e5" } }],
            }
        );
        assert_eq!(
            page_filter(&query(SortOrder::OldestFirst)),
            doc! {
                "createdAt": { "$gte": t(5_000), "$lt": t(9_000) },
                "$or": [{ "createdAt": { "$gt": t(5_000) } }, { "eventId": { "$gt": "e5" } }],
            }
        );
    }
}
