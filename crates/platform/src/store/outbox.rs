//! The outbox: one small document per event (and replay generation) recorded but not yet acknowledged by Kafka.
//!
//! Whoever publishes an event's first attempt (ingest, a replay) writes its outbox entry before the event's own
//! state change, publishes, and deletes the entry once Kafka acknowledged. A crash or a Kafka outage in between
//! leaves the entry, and ingest's sweeper publishes what it names. The event document is written once on the way
//! (its insert, or the replay's DEAD_LETTERED to QUEUED), never after the publish: on FerretDB 1.24, which reads
//! a document and writes it back whole, a publisher's late "now it is queued" update could land over the
//! dispatcher's RECORDED or DELIVERED and leave a finished event QUEUED for ever. Keeping the publisher's
//! bookkeeping in a collection of its own leaves every event document with one writer at a time.

use chrono::{DateTime, Utc};
use herald_domain::{EventId, Status};
use mongodb::bson::{self, doc, Bson, Document};
use mongodb::options::{FindOptions, IndexOptions};
use mongodb::{Collection, Database, IndexModel};

use super::{now_bson, EventRecord, EventStore, Result};
use crate::mongo::{self, is_duplicate_key};

/// The outbox collection. An entry's `_id` is `<eventId>/<replay count>`.
pub const OUTBOX: &str = "outbox";

/// How old an entry whose event is not (yet) in the state it names must be before the sweeper drops it: the event
/// insert or the replay's update that follows the entry may still be on its way, and MongoDB calls time out far
/// sooner than this.
const ORPHAN_AFTER: chrono::Duration = chrono::Duration::minutes(5);

/// The outbox entry key of replay generation `replay_count` of an event.
fn key(event_id: &EventId, replay_count: u32) -> String {
    format!("{event_id}/{replay_count}")
}

/// The outbox entry of replay generation `replay_count` of an event.
pub(super) fn entry(event_id: &EventId, replay_count: u32) -> Document {
    doc! {
        "_id": key(event_id, replay_count),
        "eventId": event_id.as_str(),
        "replayCount": i64::from(replay_count),
        "createdAt": now_bson(),
    }
}

/// The outbox's one index: the sweeper reads the oldest entries first.
pub(super) async fn ensure_indexes(db: &Database) -> Result<()> {
    let index = IndexModel::builder()
        .keys(doc! { "createdAt": 1 })
        .options(IndexOptions::builder().name("createdAt".to_owned()).build())
        .build();
    mongo::ensure_indexes(db, OUTBOX, vec![index]).await
}

/// What one look at the outbox found.
#[derive(Debug, Default)]
pub struct Unpublished {
    /// The events to publish, each in the replay generation its entry names (the record's).
    pub events: Vec<EventRecord>,
    /// Whether a further look may find more: every entry looked at was either handed out here or dropped, and
    /// the limit was reached. Entries left in place (an event insert still on its way) end the sweep.
    pub more: bool,
}

impl EventStore {
    pub(super) fn outbox(&self) -> Collection<Document> {
        self.raw
            .client()
            .database(&self.raw.namespace().db)
            .collection(OUTBOX)
    }

    /// Records that replay generation `replay_count` of an event is to be published. Written again by a
    /// repeated request, which is fine: the entry is the same.
    pub(super) async fn add_to_outbox(&self, event_id: &EventId, replay_count: u32) -> Result<()> {
        match self
            .outbox()
            .insert_one(entry(event_id, replay_count))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_duplicate_key(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Kafka acknowledged these (event, replay count) pairs: their outbox entries go. One command for them all.
    pub async fn mark_published(&self, published: &[(EventId, u32)]) -> Result<()> {
        if published.is_empty() {
            return Ok(());
        }
        let keys: Vec<Bson> = published
            .iter()
            .map(|(id, replay_count)| Bson::String(key(id, *replay_count)))
            .collect();
        self.outbox()
            .delete_many(doc! { "_id": { "$in": keys } })
            .await?;
        Ok(())
    }

    /// The events whose outbox entries are older than `cutoff`, oldest first, at most `limit` entries looked at:
    /// what the sweeper publishes, each with the replay count to publish it under.
    ///
    /// Entries that no longer stand for an unpublished event are deleted on the way: their event has moved past
    /// QUEUED in that generation (a dispatcher had it, so it was published), or is in a later generation, or, after
    /// [`ORPHAN_AFTER`], is missing or still in an earlier one (a request or replay that died right after writing
    /// the entry).
    pub async fn unpublished_before(
        &self,
        cutoff: DateTime<Utc>,
        limit: i64,
    ) -> Result<Unpublished> {
        let options = FindOptions::builder()
            .sort(doc! { "createdAt": 1 })
            .limit(limit)
            .build();
        let mut cursor = self
            .outbox()
            .find(doc! { "createdAt": { "$lt": bson::DateTime::from_chrono(cutoff) } })
            .with_options(options)
            .await?;
        let mut entries = Vec::new();
        while cursor.advance().await? {
            let entry = cursor.current();
            let (Ok(id), Ok(event_id), Ok(replay_count), Ok(created_at)) = (
                entry.get_str("_id"),
                entry.get_str("eventId"),
                entry.get_i64("replayCount"),
                entry.get_datetime("createdAt"),
            ) else {
                continue;
            };
            entries.push((
                id.to_owned(),
                event_id.to_owned(),
                u32::try_from(replay_count).unwrap_or(u32::MAX),
                created_at.to_chrono(),
            ));
        }
        if entries.is_empty() {
            return Ok(Unpublished::default());
        }
        let full = entries.len() as i64 >= limit;
        let ids: Vec<Bson> = entries
            .iter()
            .map(|(_, event_id, _, _)| Bson::String(event_id.clone()))
            .collect();
        let mut found = std::collections::HashMap::new();
        let mut events = self.events.find(doc! { "eventId": { "$in": ids } }).await?;
        while events.advance().await? {
            let record = events.deserialize_current()?;
            found.insert(record.event_id.as_str().to_owned(), record);
        }
        let orphan_before = Utc::now() - ORPHAN_AFTER;
        let mut to_publish = Vec::new();
        let mut obsolete = Vec::new();
        let mut n_kept = 0;
        for (id, event_id, replay_count, created_at) in entries {
            match found.get(&event_id) {
                Some(record) if record.replay_count == replay_count => {
                    if matches!(record.status, Status::Queued | Status::Pending) {
                        to_publish.push(record.clone());
                    } else {
                        obsolete.push(Bson::String(id));
                    }
                }
                Some(record) if record.replay_count > replay_count => {
                    obsolete.push(Bson::String(id))
                }
                _ if created_at < orphan_before => obsolete.push(Bson::String(id)),
                _ => n_kept += 1,
            }
        }
        if !obsolete.is_empty() {
            self.outbox()
                .delete_many(doc! { "_id": { "$in": obsolete } })
                .await?;
        }
        Ok(Unpublished {
            events: to_publish,
            more: full && n_kept == 0,
        })
    }
}
