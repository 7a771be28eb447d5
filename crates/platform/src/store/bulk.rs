//! The write path's commands for many events at once: what [`crate::batch::Batcher`]s in ingest and dispatch run.
//!
//! Each batched step keeps the guarantees of its one-event form, per event: an outbox entry is written before its
//! event, a duplicate event id or idempotency key still finds the event accepted first, and an event whose step
//! cannot be done in the batch (a write error of its own) gets that error alone. The common case costs one command
//! per step for the whole batch; the rare ones (a repeated key, a duplicate id) fall back to the one-event form.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use herald_domain::{Attempt, Event, EventId, Status};
use mongodb::bson::{self, doc, Bson, Document};
use mongodb::error::{Error, ErrorKind};

use super::{
    attempt_update, claim_token, dispatching, now_bson, outbox, recorded_update, statuses, Claim,
    EventRecord, EventStore, Inserted, Result,
};
use crate::mongo::DUPLICATE_KEY;

/// One lane message's claim: attempt `attempt` of `event` (as the lane message carries it) in replay generation
/// `replay_count`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimRequest {
    pub event: Event,
    pub attempt: u32,
    pub replay_count: u32,
}

/// The filter of a claim in the plain case: attempt `attempt` is next, from a state DISPATCHING may follow.
fn plain_claim_filter(request: &ClaimRequest) -> Document {
    doc! {
        "eventId": request.event.event_id.as_str(),
        "attemptCount": i64::from(request.attempt.saturating_sub(1)),
        "replayCount": i64::from(request.replay_count),
        "status": { "$in": statuses(Status::Dispatching.predecessors()) },
    }
}

/// The record a plain claim leaves: the event as accepted, DISPATCHING under this claim. (What the sender and
/// the record of the attempt read from it: the event, its replay count, attempt count, lease and generation.)
fn claimed_record(
    request: &ClaimRequest,
    lease_until: chrono::DateTime<chrono::Utc>,
) -> EventRecord {
    let mut record = EventRecord::accepted(&request.event);
    record.timeline.clear();
    record.status = Status::Dispatching;
    record.attempt_count = request.attempt.saturating_sub(1);
    record.replay_count = request.replay_count;
    record.claim_generation = 0;
    record.lease_until = Some(lease_until);
    record
}

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
        let mut encoded = Vec::new();
        let mut records = Vec::new();
        for i in insertable {
            match batch[i].record.to_document() {
                Ok(record) => {
                    encoded.push(i);
                    records.push(record);
                }
                Err(e) => answers[i] = Some(Err(e)),
            }
        }
        let events = insert_each(&self.raw, records).await;
        for (position, &i) in encoded.iter().enumerate() {
            answers[i] = Some(if events.duplicates.contains(&position) {
                self.existing(&batch[i].record).await
            } else if let Some(e) = events.failed.get(&position) {
                Err(e.clone())
            } else {
                Ok(Inserted::New)
            });
        }
        answered(answers)
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

impl EventStore {
    /// [`Self::claim`] for many lane messages, without reading the events first: each is claimed as if it were
    /// in the plain case (attempt `n` of a QUEUED or RETRY_SCHEDULED event, next in line), with one
    /// `insert_many` of claims and one multi-statement `update` marking them DISPATCHING, under one lease start.
    /// The lane message carries the event as accepted (payload included), so no read is needed to send it.
    ///
    /// Anything else takes the one-event path, which reads the event and answers exactly as [`Self::claim`]: a
    /// claim someone else holds (a redelivery, another dispatcher, a takeover), the same event twice in the batch,
    /// or a mark that did not land (the event was not in the plain case: stale, terminal, already recorded). A
    /// claim inserted for a message that turns out stale is never wanted by anyone (its attempt is past) and is
    /// pruned with the others after a day.
    pub async fn claim_many(&self, batch: &[ClaimRequest], lease: Duration) -> Vec<Result<Claim>> {
        let mut answers: Vec<Option<Result<Claim>>> = vec![None; batch.len()];
        let mut alone = Vec::new();
        let mut seen = HashSet::new();
        let mut taking = Vec::new();
        for (position, request) in batch.iter().enumerate() {
            if seen.insert(request.event.event_id.as_str()) {
                taking.push(position);
            } else {
                alone.push(position);
            }
        }
        // The claims, under their unique keys (atomic on every server, see `claim`), all dated from one `at`.
        let taken_at = now_bson();
        let tokens = taking
            .iter()
            .map(|&i| {
                let request = &batch[i];
                let token = claim_token(
                    &request.event.event_id,
                    request.replay_count,
                    request.attempt,
                    0,
                );
                doc! { "_id": token, "at": taken_at }
            })
            .collect();
        let claimed = insert_each(&self.claims, tokens).await;
        let mut won = Vec::new();
        for (index, &i) in taking.iter().enumerate() {
            if claimed.duplicates.contains(&index) {
                alone.push(i);
            } else if let Some(e) = claimed.failed.get(&index) {
                answers[i] = Some(Err(e.clone()));
            } else {
                won.push(i);
            }
        }
        let lease_length =
            chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::seconds(30));
        let lease_until = taken_at.to_chrono() + lease_length;
        let statements = won
            .iter()
            .map(|&i| (plain_claim_filter(&batch[i]), dispatching(lease_until, 0)))
            .collect();
        match self.update_each(statements).await {
            Ok(matched) if matched == won.len() as u64 => {
                for i in won {
                    answers[i] = Some(Ok(Claim::Send(Box::new(claimed_record(
                        &batch[i],
                        lease_until,
                    )))));
                }
            }
            Ok(_) => {
                // Some marks did not land: read each of those events to tell which did.
                for i in won {
                    let request = &batch[i];
                    answers[i] = Some(match self.find(&request.event.event_id).await {
                        Ok(Some(record))
                            if record.status == Status::Dispatching
                                && record.claim_generation == 0
                                && record.replay_count == request.replay_count
                                && record.attempt_count + 1 == request.attempt
                                && record.lease_until == Some(lease_until) =>
                        {
                            Ok(Claim::Send(Box::new(record)))
                        }
                        Ok(_) => {
                            alone.push(i);
                            continue;
                        }
                        Err(e) => Err(e),
                    });
                }
            }
            Err(e) => {
                for i in won {
                    answers[i] = Some(Err(e.clone()));
                }
            }
        }
        for position in alone {
            let request = &batch[position];
            answers[position] = Some(
                self.claim(
                    &request.event.event_id,
                    request.attempt,
                    request.replay_count,
                    lease,
                )
                .await,
            );
        }
        answered(answers)
    }

    /// [`Self::record_claimed`] of deliveries, many at once: one `update` command. When some did not land (a
    /// takeover, a lost claim), each of the batch is also recorded as a late delivery, which matches only those
    /// still short of DELIVERED; true for each delivery now recorded under its claim or late.
    pub async fn record_delivered_many(
        &self,
        batch: &[(EventRecord, Attempt)],
    ) -> Vec<Result<bool>> {
        let statements = batch.iter().map(|(claim, attempt)| {
            attempt_update(
                &claim.event_id,
                attempt,
                claim.replay_count,
                Some(claim.claim_generation),
                Some(Status::Delivered),
            )
        });
        match self.all_matched(statements).await {
            Ok(true) => vec![Ok(true); batch.len()],
            Ok(false) => {
                let mut answers = Vec::with_capacity(batch.len());
                for (claim, attempt) in batch {
                    let late = self
                        .record_late_delivery(&claim.event_id, attempt, claim.replay_count)
                        .await;
                    answers.push(match late {
                        Ok(true) => Ok(true),
                        Ok(false) => self.holds_attempt(&claim.event_id, attempt).await,
                        Err(e) => Err(e),
                    });
                }
                answers
            }
            Err(e) => vec![Err(e); batch.len()],
        }
    }

    /// [`Self::mark_recorded`] for many record-only events: one `update` command. When some did not land (already
    /// recorded, or of an older replay generation), each is marked again alone, which says which.
    pub async fn mark_recorded_many(&self, batch: &[(EventId, u32)]) -> Vec<Result<bool>> {
        let statements = batch
            .iter()
            .map(|(event_id, replay_count)| recorded_update(event_id, *replay_count));
        match self.all_matched(statements).await {
            Ok(true) => vec![Ok(true); batch.len()],
            Ok(false) => {
                let mut answers = Vec::with_capacity(batch.len());
                for (event_id, replay_count) in batch {
                    answers.push(self.mark_recorded(event_id, *replay_count).await);
                }
                answers
            }
            Err(e) => vec![Err(e); batch.len()],
        }
    }

    /// Whether the event's record holds `attempt` (its number and start), whoever wrote it.
    async fn holds_attempt(&self, event_id: &EventId, attempt: &Attempt) -> Result<bool> {
        Ok(self.find(event_id).await?.is_some_and(|record| {
            record
                .attempts
                .iter()
                .any(|a| a.number == attempt.number && a.started_at == attempt.started_at)
        }))
    }

    /// Runs `statements` as one `update` command (see [`Self::update_each`]): whether every one matched.
    async fn all_matched(
        &self,
        statements: impl Iterator<Item = Result<(Document, Document)>>,
    ) -> Result<bool> {
        let statements: Vec<(Document, Document)> = statements.collect::<Result<_>>()?;
        let count = statements.len() as u64;
        Ok(self.update_each(statements).await? == count)
    }

    /// Runs `statements` (filter, update) as one unordered `update` command under the collection's write concern,
    /// and answers how many matched. A statement the server refused counts as not matched: its caller's fallback
    /// runs it alone, which reports its own error.
    async fn update_each(&self, statements: Vec<(Document, Document)>) -> Result<u64> {
        if statements.is_empty() {
            return Ok(0);
        }
        let updates: Vec<Document> = statements
            .into_iter()
            .map(|(q, u)| doc! { "q": q, "u": u })
            .collect();
        let mut command = doc! {
            "update": self.raw.name(),
            "updates": updates,
            "ordered": false,
        };
        if let Some(concern) = self.raw.write_concern() {
            let concern = bson::to_document(concern)
                .map_err(|e| Error::custom(format!("cannot encode {e}")))?;
            command.insert("writeConcern", concern);
        }
        let db = self.raw.client().database(&self.raw.namespace().db);
        let answer = db.run_command(command).await?;
        if answer.contains_key("writeConcernError") {
            // Written, maybe, but not as durably as asked: as if not written (every step here is conditional,
            // so running it again is harmless).
            return Err(Error::from(std::io::Error::other(format!(
                "write concern not satisfied: {answer}"
            ))));
        }
        let matched = match answer.get("n") {
            Some(Bson::Int32(n)) => u64::try_from(*n).unwrap_or(0),
            Some(Bson::Int64(n)) => u64::try_from(*n).unwrap_or(0),
            Some(Bson::Double(n)) => *n as u64,
            _ => 0,
        };
        Ok(matched)
    }
}

/// Every answer, in order; a slot left empty (a bug) is an error rather than a panic.
fn answered<T>(answers: Vec<Option<Result<T>>>) -> Vec<Result<T>> {
    answers
        .into_iter()
        .map(|answer| answer.unwrap_or_else(|| Err(Error::custom("no answer for a batched step"))))
        .collect()
}
