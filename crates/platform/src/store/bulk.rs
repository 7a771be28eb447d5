//! The write path's commands for many events at once: what [`crate::batch::Batcher`]s in ingest and dispatch run.
//!
//! Each batched step keeps the guarantees of its one-event form, per event: an outbox entry is written before its
//! event, a duplicate event id or idempotency key still finds the event accepted first, and an event whose step
//! cannot be done in the batch (a write error of its own) gets that error alone. The common case costs one command
//! per step for the whole batch; the rare ones (a repeated key, a duplicate id) fall back to the one-event form.

use std::collections::{HashMap, HashSet};

use mongodb::bson::{doc, Document};
use mongodb::error::{Error, ErrorKind};

use super::{outbox, EventRecord, EventStore, Inserted, Result};
use crate::mongo::DUPLICATE_KEY;

/// One accepted event to record: the record and the request's `Idempotency-Key`, if any.
#[derive(Debug, Clone)]
pub struct Accepting {
    pub record: EventRecord,
    pub key: Option<String>,
}

/// How an `insert_many` with `ordered: false` went, per document: those it wrote, and the error of each it did not.
struct Written {
    /// Documents (by index) refused as duplicates of a unique key.
    duplicates: HashSet<usize>,
    /// Documents (by index) refused for another reason, with the command's error.
    failed: HashMap<usize, Error>,
}

impl Written {
    fn all(error: Error, count: usize) -> Self {
        Self {
            duplicates: HashSet::new(),
            failed: (0..count).map(|i| (i, error.clone())).collect(),
        }
    }
}

/// Inserts `documents` with one unordered `insert_many` and sorts out, per document, what happened to it.
async fn insert_each(
    collection: &mongodb::Collection<Document>,
    documents: Vec<Document>,
) -> Written {
    let count = documents.len();
    let mut written = Written {
        duplicates: HashSet::new(),
        failed: HashMap::new(),
    };
    if count == 0 {
        return written;
    }
    let Err(error) = collection.insert_many(documents).ordered(false).await else {
        return written;
    };
    let ErrorKind::InsertMany(failure) = error.kind.as_ref() else {
        // Nothing is known per document (the server did not answer, say): every one failed.
        return Written::all(error, count);
    };
    if failure.write_concern_error.is_some() {
        // Written, maybe, but not as durably as asked: not accepted.
        return Written::all(error, count);
    }
    for failed in failure.write_errors.iter().flatten() {
        if failed.code == DUPLICATE_KEY {
            written.duplicates.insert(failed.index);
        } else {
            written.failed.insert(failed.index, error.clone());
        }
    }
    written
}

impl EventStore {
    /// [`Self::insert_accepted`] for many events: one `insert_many` of their idempotency keys (when any has one),
    /// one of their outbox entries and one of the events. Answers in the order of `batch`.
    pub async fn insert_accepted_many(&self, batch: &[Accepting]) -> Vec<Result<Inserted>> {
        let mut answers: Vec<Option<Result<Inserted>>> = vec![None; batch.len()];
        // Keys first: a key seen before takes the one-event path, which finds (or adopts) what it names.
        let keyed: Vec<usize> = (0..batch.len())
            .filter(|&i| batch[i].key.is_some())
            .collect();
        let key_documents = keyed
            .iter()
            .map(|&i| {
                key_entry(
                    batch[i].key.as_deref().unwrap_or_default(),
                    &batch[i].record,
                )
            })
            .collect();
        let keys = insert_each(&self.keys, key_documents).await;
        let mut repeated = Vec::new();
        for (position, &i) in keyed.iter().enumerate() {
            if keys.duplicates.contains(&position) {
                repeated.push(i);
            } else if let Some(e) = keys.failed.get(&position) {
                answers[i] = Some(Err(e.clone()));
            }
        }
        for &i in &repeated {
            let Accepting { record, key } = &batch[i];
            answers[i] = Some(self.insert_accepted(record, key.as_deref()).await);
        }
        // Every event still unanswered: outbox entries, then the events.
        let pending: Vec<usize> = (0..batch.len()).filter(|&i| answers[i].is_none()).collect();
        let entries = pending
            .iter()
            .map(|&i| outbox::entry(&batch[i].record.event_id, batch[i].record.replay_count))
            .collect();
        // A duplicate entry is the same entry (a repeated request): fine.
        let entries = insert_each(&self.outbox(), entries).await;
        let mut insertable = Vec::new();
        for (position, &i) in pending.iter().enumerate() {
            match entries.failed.get(&position) {
                Some(e) => answers[i] = Some(Err(e.clone())),
                None => insertable.push(i),
            }
        }
        let records: Result<Vec<Document>> = insertable
            .iter()
            .map(|&i| {
                mongodb::bson::to_document(&batch[i].record)
                    .map_err(|e| Error::custom(format!("cannot encode {e}")))
            })
            .collect();
        match records {
            Err(e) => {
                for &i in &insertable {
                    answers[i] = Some(Err(e.clone()));
                }
            }
            Ok(records) => {
                let events = insert_each(&self.raw, records).await;
                for (position, &i) in insertable.iter().enumerate() {
                    answers[i] = Some(if events.duplicates.contains(&position) {
                        self.existing(&batch[i].record).await
                    } else if let Some(e) = events.failed.get(&position) {
                        Err(e.clone())
                    } else {
                        Ok(Inserted::New)
                    });
                }
            }
        }
        answers
            .into_iter()
            .map(|answer| answer.unwrap_or_else(|| Err(Error::custom("no answer for an event"))))
            .collect()
    }

    /// The event stored under `record`'s id, which an insert just found there.
    async fn existing(&self, record: &EventRecord) -> Result<Inserted> {
        match self.find(&record.event_id).await? {
            Some(found) => Ok(Inserted::Existing(Box::new(found))),
            None => Err(Error::custom(format!(
                "event {} was a duplicate on insert and is not there on read",
                record.event_id
            ))),
        }
    }
}

/// The `idempotency_keys` document of `key`.
pub(super) fn key_entry(key: &str, record: &EventRecord) -> Document {
    doc! { "_id": key, "eventId": record.event_id.as_str(), "createdAt": super::now_bson() }
}
