//! Dead letters for the replay service: selected by a filter in one stable order, counted, and brought back
//! (DEAD_LETTERED to QUEUED, a fresh attempt budget, the replay counter bumped, an outbox entry).
//!
//! Bringing one back is a claim, then a conditional update. The claim is an insert into `replay_claims` under a
//! key naming the event and the replay count it was read with, because an insert under a unique key is the one
//! write that FerretDB 1.24 (on PostgreSQL) performs atomically: its conditional updates read, change and write
//! back the whole document without holding a lock, so two concurrent updates with the same filter both report a
//! match. The conditional update stays, as the guard MongoDB itself would need.

use chrono::{DateTime, Utc};
use herald_domain::{Channel, EventId, Priority};
use mongodb::bson::{self, doc, Bson, Document};
use mongodb::options::{FindOptions, IndexOptions, ReturnDocument};
use mongodb::{Collection, Database, IndexModel};
use serde::Deserialize;

use super::{now_bson, to_bson, EventRecord, EventStore, Result, TimelineEntry};
use crate::mongo::{self, is_duplicate_key, EVENTS};

/// The collection of replay claims: one small document per replay of a dead letter, kept as a record of who
/// replayed what and when. Its `_id` is `<eventId>/<replay count read>/<generation>`.
pub const REPLAY_CLAIMS: &str = "replay_claims";

/// How long a claim holds when its dead letter was not brought back: past this, the replay that made it is taken
/// to have died between its claim and its update, and another may claim the dead letter under the next
/// generation. Far longer than the one update that follows a claim can take (MongoDB calls time out in seconds).
const STALE_CLAIM_SECS: i64 = 60;
/// Most generations tried for one dead letter and replay count: each stands for a replay that died mid-claim.
const MAX_GENERATIONS: u32 = 16;

/// Which dead letters a replay or a listing is about. Each field set narrows the selection; none set selects
/// every dead letter.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeadLetterFilter {
    /// Only these events.
    pub event_ids: Option<Vec<EventId>>,
    pub channel: Option<Channel>,
    pub event_type: Option<String>,
    pub priority: Option<Priority>,
    /// Dead-lettered at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Dead-lettered at or before this time.
    pub until: Option<DateTime<Utc>>,
}

impl DeadLetterFilter {
    fn to_document(&self) -> Document {
        let mut filter = doc! { "status": "DEAD_LETTERED" };
        if let Some(ids) = &self.event_ids {
            let ids: Vec<Bson> = ids.iter().map(|id| Bson::String(id.to_string())).collect();
            filter.insert("eventId", doc! { "$in": ids });
        }
        if let Some(channel) = self.channel {
            filter.insert("channel", channel.as_str());
        }
        if let Some(event_type) = &self.event_type {
            filter.insert("eventType", event_type.as_str());
        }
        if let Some(priority) = self.priority {
            filter.insert("priority", priority.as_str());
        }
        let mut range = Document::new();
        if let Some(since) = self.since {
            range.insert("$gte", bson::DateTime::from_chrono(since));
        }
        if let Some(until) = self.until {
            range.insert("$lte", bson::DateTime::from_chrono(until));
        }
        if !range.is_empty() {
            filter.insert("deadLetteredAt", range);
        }
        filter
    }
}

/// A dead letter as a replay selects it: what orders it and what claiming it takes, not the event itself.
///
/// It is also a position in the walk through the dead letters, in (`deadLetteredAt`, `eventId`) order. Paging by
/// position rather than by offset is what keeps a replay from skipping dead letters: the set shrinks as events
/// are replayed, so an offset would jump over as many as were replayed before it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterRef {
    pub event_id: EventId,
    #[serde(with = "bson::serde_helpers::chrono_datetime_as_bson_datetime")]
    pub dead_lettered_at: DateTime<Utc>,
    /// Replays before this one; the claim and the update are conditional on it.
    #[serde(default)]
    pub replay_count: u32,
}

/// The order dead letters are listed and replayed in: oldest first, ties broken by event id.
fn oldest_first() -> Document {
    doc! { "deadLetteredAt": 1, "eventId": 1 }
}

/// The index behind [`oldest_first`] under the DEAD_LETTERED status. Its name is its own: FerretDB drops the
/// connection when `createIndexes` repeats the name of an existing compound index, which
/// [`mongo::ensure_indexes`] avoids by asking only for missing names.
fn dead_letter_index() -> IndexModel {
    IndexModel::builder()
        .keys(doc! { "status": 1, "deadLetteredAt": 1, "eventId": 1 })
        .options(
            IndexOptions::builder()
                .name("status_deadLetteredAt_eventId".to_owned())
                .build(),
        )
        .build()
}

impl EventStore {
    /// Creates the index that dead-letter selection uses, if it is missing (idempotent).
    pub async fn ensure_dead_letter_index(db: &Database) -> Result<()> {
        mongo::ensure_indexes(db, EVENTS, vec![dead_letter_index()]).await
    }

    /// Up to `limit` dead letters matching `filter` that come after `after`, oldest first.
    ///
    /// Only the fields of [`DeadLetterRef`] are read. With FerretDB 1.24 one such query costs about as much as
    /// reading every dead letter, however few it returns (about 2 s for 10000 on a 2-core development machine):
    /// it filters and sorts them itself. Callers should ask for large pages: the number of queries is what costs.
    pub async fn dead_letters_after(
        &self,
        filter: &DeadLetterFilter,
        after: Option<&DeadLetterRef>,
        limit: i64,
    ) -> Result<Vec<DeadLetterRef>> {
        let mut query = filter.to_document();
        if let Some(position) = after {
            let at = bson::DateTime::from_chrono(position.dead_lettered_at);
            let later = doc! { "$or": [
                { "deadLetteredAt": { "$gt": at } },
                { "deadLetteredAt": at, "eventId": { "$gt": position.event_id.as_str() } },
            ] };
            query = doc! { "$and": [query, later] };
        }
        let options = FindOptions::builder()
            .sort(oldest_first())
            .limit(limit)
            .projection(doc! { "_id": 0, "eventId": 1, "deadLetteredAt": 1, "replayCount": 1 })
            .build();
        let mut cursor = self
            .raw
            .clone_with_type::<DeadLetterRef>()
            .find(query)
            .with_options(options)
            .await?;
        let mut out = Vec::new();
        while cursor.advance().await? {
            out.push(cursor.deserialize_current()?);
        }
        Ok(out)
    }

    /// Page `skip / limit + 1` of the dead letters matching `filter`, oldest first: for listings, where an offset
    /// is what a reader asks for.
    pub async fn dead_letters_page(
        &self,
        filter: &DeadLetterFilter,
        skip: u64,
        limit: i64,
    ) -> Result<Vec<EventRecord>> {
        let options = FindOptions::builder()
            .sort(oldest_first())
            .skip(skip)
            .limit(limit)
            .build();
        let mut cursor = self
            .events
            .find(filter.to_document())
            .with_options(options)
            .await?;
        let mut out = Vec::new();
        while cursor.advance().await? {
            out.push(cursor.deserialize_current()?);
        }
        Ok(out)
    }

    /// How many dead letters match `filter`.
    pub async fn count_dead_letters(&self, filter: &DeadLetterFilter) -> Result<u64> {
        self.raw.count_documents(filter.to_document()).await
    }

    /// Brings a dead letter back: DEAD_LETTERED (with `replay_count` replays so far) to QUEUED with replay count
    /// `replay_count + 1`, no attempts spent, no lease and no retry due, and a `replayed` timeline entry.
    ///
    /// Of two replays of the same dead letter, exactly one gets the record as it is now. Its outbox entry is
    /// written before the update, and the caller publishes, then calls [`EventStore::mark_published`]: a replay
    /// that dies before Kafka acknowledged leaves the entry, and ingest's sweeper publishes the event. `None` when
    /// the event is no longer that dead letter (replayed by someone else, or never dead-lettered).
    pub async fn replay_dead_letter(
        &self,
        event_id: &EventId,
        replay_count: u32,
        detail: String,
    ) -> Result<Option<EventRecord>> {
        if !self.claim_replay(event_id, replay_count).await? {
            return Ok(None);
        }
        self.add_to_outbox(event_id, replay_count + 1).await?;
        let entry = to_bson(&TimelineEntry {
            at: Utc::now(),
            kind: "replayed".into(),
            attempt: None,
            detail: Some(detail),
        })?;
        self.events
            .find_one_and_update(
                doc! {
                    "eventId": event_id.as_str(),
                    "status": "DEAD_LETTERED",
                    "replayCount": i64::from(replay_count),
                },
                doc! {
                    "$set": {
                        "status": "QUEUED",
                        "replayCount": i64::from(replay_count) + 1,
                        "attemptCount": 0_i64,
                        "leaseUntil": Bson::Null,
                        "nextAttemptAt": Bson::Null,
                        "updatedAt": now_bson(),
                    },
                    "$push": { "timeline": entry },
                },
            )
            .return_document(ReturnDocument::After)
            .await
    }

    pub(super) fn replay_claims(&self) -> Collection<Document> {
        self.raw
            .client()
            .database(&self.raw.namespace().db)
            .collection(REPLAY_CLAIMS)
    }

    /// Claims replay number `replay_count + 1` of a dead letter: true for exactly one caller.
    ///
    /// A claim that is older than [`STALE_CLAIM_SECS`] while its dead letter is still untouched belongs to a
    /// replay that died before its update; the next generation's key is then free to claim.
    pub(super) async fn claim_replay(&self, event_id: &EventId, replay_count: u32) -> Result<bool> {
        let claims = self.replay_claims();
        for generation in 0..MAX_GENERATIONS {
            let key = format!("{event_id}/{replay_count}/{generation}");
            let claim = doc! {
                "_id": &key,
                "eventId": event_id.as_str(),
                "replayCount": i64::from(replay_count),
                "generation": i64::from(generation),
                "claimedAt": now_bson(),
            };
            match claims.insert_one(claim).await {
                Ok(_) => return Ok(true),
                Err(e) if is_duplicate_key(&e) => {}
                Err(e) => return Err(e),
            }
            let held = claims.find_one(doc! { "_id": &key }).await?;
            let claimed_at = held
                .as_ref()
                .and_then(|claim| claim.get_datetime("claimedAt").ok())
                .map(|at| at.to_chrono());
            let stale_before = Utc::now() - chrono::Duration::seconds(STALE_CLAIM_SECS);
            if claimed_at.is_none_or(|at| at > stale_before) {
                return Ok(false);
            }
            let untouched = self
                .raw
                .find_one(doc! {
                    "eventId": event_id.as_str(),
                    "status": "DEAD_LETTERED",
                    "replayCount": i64::from(replay_count),
                })
                .await?
                .is_some();
            if !untouched {
                return Ok(false);
            }
            tracing::warn!(%event_id, generation, "taking over a stale replay claim");
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_filter_selects_every_dead_letter() {
        assert_eq!(
            DeadLetterFilter::default().to_document(),
            doc! { "status": "DEAD_LETTERED" }
        );
    }

    #[test]
    fn every_field_narrows_the_selection() {
        let since = DateTime::parse_from_rfc3339("2024-01-01T00:00:00Z")
            .expect("valid")
            .with_timezone(&Utc);
        let until = DateTime::parse_from_rfc3339("2024-02-01T00:00:00Z")
            .expect("valid")
            .with_timezone(&Utc);
        let filter = DeadLetterFilter {
            event_ids: Some(vec![EventId::parse("a").expect("valid")]),
            channel: Some(Channel::Sms),
            event_type: Some("otp.sent".into()),
            priority: Some(Priority::Critical),
            since: Some(since),
            until: Some(until),
        };
        assert_eq!(
            filter.to_document(),
            doc! {
                "status": "DEAD_LETTERED",
                "eventId": { "$in": ["a"] },
                "channel": "sms",
                "eventType": "otp.sent",
                "priority": "critical",
                "deadLetteredAt": {
                    "$gte": bson::DateTime::from_chrono(since),
                    "$lte": bson::DateTime::from_chrono(until),
                },
            }
        );
    }
}
