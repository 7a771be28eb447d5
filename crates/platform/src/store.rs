//! The `events` collection: one document per accepted event, and every state change as a conditional update.
//!
//! Every write filters on the state it expects (status, attempt count, replay count, lease), so a redelivered,
//! late or duplicated Kafka message can never move an event backwards: it matches nothing and is skipped.

use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};
use herald_domain::{Attempt, Channel, Event, EventId, Priority, Status};
use mongodb::bson::{self, doc, Bson, Document};
use mongodb::options::{FindOneAndUpdateOptions, ReturnDocument};
use mongodb::{Collection, Database};
use serde::{Deserialize, Serialize};

use crate::mongo::{self, is_duplicate_key, EVENTS};

mod bulk;
mod failure;
mod lifecycle;
mod outbox;
mod replay;
pub mod retention;

pub use bulk::{Accepting, ClaimRequest};
pub use failure::is_permanent;
pub use lifecycle::{DeadLettered, Scheduled};
pub use mongodb::error::Error;
pub use outbox::{Unpublished, OUTBOX};
pub use replay::{DeadLetterFilter, DeadLetterRef, REPLAY_CLAIMS};
pub type Result<T> = std::result::Result<T, Error>;

/// The collection of dispatch claims: one document per (event, replay, attempt, takeover generation).
pub const CLAIMS: &str = "claims";

/// The collection mapping `Idempotency-Key` header values to the event they created.
pub const IDEMPOTENCY_KEYS: &str = "idempotency_keys";

/// The UTC day an event was created (`"2026-12-02"`), stored beside `createdAt`. FerretDB 1.24 pushes equalities
/// down to PostgreSQL but not ranges, sorts or limits: an equality on a slice of time is what lets a list fetch
/// only the slice's matches instead of every match (`herald-query`'s `logs::slices`). Never updated: the slices
/// of an event are those of its `createdAt`, which does not change.
pub const CREATED_DAY: &str = "createdDay";

/// The UTC hour an event was created (`"2026-12-02T05"`), beside [`CREATED_DAY`] and for the same reason.
pub const CREATED_HOUR: &str = "createdHour";

/// The UTC ten minutes an event was created in (`"2026-12-02T05:3"`: 05:30 to 05:40), beside [`CREATED_HOUR`].
/// Not indexed: a list asks for it together with its hour, whose index narrows the rows to one hour's, and
/// PostgreSQL drops the other fifty minutes' before FerretDB fetches them, so a filter dense within an hour
/// (hundreds of matches) costs a tenth of them per page.
pub const CREATED_SLOT: &str = "createdSlot";

/// The value of [`CREATED_DAY`] for an event created at `at`.
pub fn created_day(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d").to_string()
}

/// The value of [`CREATED_HOUR`] for an event created at `at`.
pub fn created_hour(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H").to_string()
}

/// The value of [`CREATED_SLOT`] for an event created at `at`.
pub fn created_slot(at: DateTime<Utc>) -> String {
    format!("{}:{}", created_hour(at), at.minute() / 10)
}

/// One entry of an event's timeline: what happened, when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TimelineEntry {
    pub at: DateTime<Utc>,
    /// `accepted`, `attempt`, `delivered`, `recorded`, `retry_scheduled`, `dead_lettered`, `replayed` (and `queued`, in
    /// events stored before the outbox collection).
    pub kind: String,
    /// The attempt, for `attempt` entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<Attempt>,
    /// Free text: the reason of a dead letter, the due time of a retry, the filter of a replay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl TimelineEntry {
    pub fn now(kind: &str) -> Self {
        Self {
            at: Utc::now(),
            kind: kind.to_owned(),
            attempt: None,
            detail: None,
        }
    }
}

/// An event as stored: the accepted event plus its delivery state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventRecord {
    pub event_id: EventId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<Channel>,
    pub priority: Priority,
    pub payload: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
    pub status: Status,
    /// Attempts made in the current budget (reset by a replay).
    #[serde(default)]
    pub attempt_count: u32,
    #[serde(default)]
    pub replay_count: u32,
    /// Takeovers of the current attempt's claim after an expired lease.
    #[serde(default)]
    pub claim_generation: u32,
    /// Every attempt ever made, in order.
    #[serde(default)]
    pub attempts: Vec<Attempt>,
    #[serde(default)]
    pub timeline: Vec<TimelineEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// While DISPATCHING: until when the dispatcher that set it owns the send. Another may take over after.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "bson::serde_helpers::chrono_datetime_as_bson_datetime_optional"
    )]
    pub lease_until: Option<DateTime<Utc>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "bson::serde_helpers::chrono_datetime_as_bson_datetime_optional"
    )]
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Why the event was last dead-lettered. Kept after a replay, as history; the status says whether it holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_reason: Option<String>,
    /// When the event was last dead-lettered: the order replays take dead letters in.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "bson::serde_helpers::chrono_datetime_as_bson_datetime_optional"
    )]
    pub dead_lettered_at: Option<DateTime<Utc>>,
    #[serde(with = "bson::serde_helpers::chrono_datetime_as_bson_datetime")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "bson::serde_helpers::chrono_datetime_as_bson_datetime")]
    pub updated_at: DateTime<Utc>,
}

impl EventRecord {
    /// A new record for an accepted event: QUEUED, its publish tracked by its outbox entry.
    pub fn accepted(event: &Event) -> Self {
        let now = Utc::now();
        Self {
            event_id: event.event_id.clone(),
            user_id: event.user_id.clone(),
            event_type: event.event_type.clone(),
            channel: event.channel,
            priority: event.priority,
            payload: event.payload.clone(),
            metadata: event.metadata.clone(),
            status: Status::Queued,
            attempt_count: 0,
            replay_count: 0,
            claim_generation: 0,
            attempts: Vec::new(),
            timeline: vec![TimelineEntry {
                at: now,
                kind: "accepted".into(),
                attempt: None,
                detail: None,
            }],
            last_error: None,
            lease_until: None,
            next_attempt_at: None,
            dead_letter_reason: None,
            dead_lettered_at: None,
            created_at: event.created_at,
            updated_at: now,
        }
    }

    /// The document stored for this record: its fields plus the slices of its creation time
    /// ([`CREATED_DAY`], [`CREATED_HOUR`], [`CREATED_SLOT`]), derived here from `createdAt` so that they always
    /// agree with it.
    pub fn to_document(&self) -> Result<Document> {
        let mut document =
            bson::to_document(self).map_err(|e| Error::custom(format!("cannot encode {e}")))?;
        document.insert(CREATED_DAY, created_day(self.created_at));
        document.insert(CREATED_HOUR, created_hour(self.created_at));
        document.insert(CREATED_SLOT, created_slot(self.created_at));
        Ok(document)
    }

    /// The event as it travels on Kafka.
    pub fn event(&self) -> Event {
        Event {
            event_id: self.event_id.clone(),
            user_id: self.user_id.clone(),
            event_type: self.event_type.clone(),
            channel: self.channel,
            priority: self.priority,
            payload: self.payload.clone(),
            metadata: self.metadata.clone(),
            created_at: self.created_at,
        }
    }
}

/// What inserting an accepted event found.
#[derive(Debug, Clone, PartialEq)]
pub enum Inserted {
    /// A new event, now QUEUED, with its outbox entry.
    New,
    /// The event id (or idempotency key) was seen before: the event stored then.
    Existing(Box<EventRecord>),
    /// A new event, now QUEUED, under the event id its idempotency key named: the key's first request recorded
    /// the key and failed before its event. Retries of that request so converge on one event.
    Adopted(EventId),
}

/// What a dispatcher may do with a lane message for attempt `n`.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// The event is now DISPATCHING under this dispatcher's lease: send it.
    Send(Box<EventRecord>),
    /// Attempt `n` ran and was recorded as failed, but its follow-up (the retry request) may not have been
    /// published: publish it again.
    FollowUp(Box<EventRecord>),
    /// Another dispatcher holds a live lease on this attempt until the given time.
    Leased(DateTime<Utc>),
    /// Nothing to do: terminal, already past this attempt, or a message from before a replay.
    Skip(Option<Box<EventRecord>>),
}

/// What a claim of attempt `attempt` makes of the event as it was read: a final answer, or the conditional
/// update (and the claim generation) that takes it.
enum Decision {
    Done(Claim),
    Take { filter: Document, generation: u32 },
}

fn decide(current: EventRecord, attempt: u32, replay_count: u32) -> Decision {
    let previous = attempt.saturating_sub(1);
    let stale = current.status.is_terminal()
        || current.replay_count != replay_count
        || current.attempt_count > attempt
        || current.attempt_count < previous;
    if stale {
        return Decision::Done(Claim::Skip(Some(Box::new(current))));
    }
    if current.attempt_count == attempt {
        return Decision::Done(if current.status == Status::Dispatching {
            Claim::FollowUp(Box::new(current))
        } else {
            Claim::Skip(Some(Box::new(current)))
        });
    }
    // attempt_count == attempt - 1: this attempt has not been recorded yet.
    let mut filter = doc! {
        "eventId": current.event_id.as_str(),
        "attemptCount": i64::from(previous),
        "replayCount": i64::from(replay_count),
    };
    if current.status == Status::Dispatching {
        match current.lease_until {
            Some(until) if until > Utc::now() => return Decision::Done(Claim::Leased(until)),
            Some(until) => {
                filter.insert("status", "DISPATCHING");
                filter.insert("leaseUntil", bson::DateTime::from_chrono(until));
            }
            None => {
                filter.insert("status", "DISPATCHING");
                filter.insert("leaseUntil", Bson::Null);
            }
        }
    } else {
        filter.insert(
            "status",
            doc! { "$in": statuses(Status::Dispatching.predecessors()) },
        );
    }
    // A takeover after an expired lease is the next generation of the same attempt.
    let generation = if current.status == Status::Dispatching {
        current.claim_generation + 1
    } else {
        0
    };
    Decision::Take { filter, generation }
}

/// The `_id` of a claim: one per (event, replay generation, attempt, takeover generation).
fn claim_token(event_id: &EventId, replay_count: u32, attempt: u32, generation: u32) -> String {
    format!(
        "{}/{replay_count}/{attempt}/{generation}",
        event_id.as_str()
    )
}

/// The update that marks a claimed event DISPATCHING under a lease until `lease_until`, by claim `generation`.
fn dispatching(lease_until: DateTime<Utc>, generation: u32) -> Document {
    doc! { "$set": {
        "status": "DISPATCHING",
        "leaseUntil": bson::DateTime::from_chrono(lease_until),
        "claimGeneration": i64::from(generation),
        "updatedAt": now_bson(),
    } }
}

fn to_bson<T: Serialize>(value: &T) -> Result<Bson> {
    bson::to_bson(value).map_err(|e| Error::custom(format!("cannot encode {e}")))
}

fn statuses(list: &[Status]) -> Bson {
    Bson::Array(
        list.iter()
            .map(|s| Bson::String(s.as_str().to_owned()))
            .collect(),
    )
}

fn now_bson() -> bson::DateTime {
    bson::DateTime::now()
}

/// Typed access to the `events` and `idempotency_keys` collections.
#[derive(Debug, Clone)]
pub struct EventStore {
    events: Collection<EventRecord>,
    raw: Collection<Document>,
    keys: Collection<Document>,
    claims: Collection<Document>,
}

impl EventStore {
    pub fn new(db: &Database) -> Self {
        Self {
            events: db.collection(EVENTS),
            raw: db.collection(EVENTS),
            keys: db.collection(IDEMPOTENCY_KEYS),
            claims: db.collection(CLAIMS),
        }
    }

    /// Creates the indexes (idempotent; every service calls it at startup).
    /// (`idempotency_keys` needs none: its `_id` is the key.)
    pub async fn ensure_indexes(db: &Database) -> Result<()> {
        mongo::ensure_event_indexes(db).await?;
        outbox::ensure_indexes(db).await
    }

    /// Records an accepted event as QUEUED with its outbox entry, or finds the one that was accepted before under
    /// the same event id or idempotency key. The caller publishes a new event, then calls [`Self::mark_published`].
    pub async fn insert_accepted(
        &self,
        record: &EventRecord,
        idempotency_key: Option<&str>,
    ) -> Result<Inserted> {
        if let Some(key) = idempotency_key {
            if let Err(e) = self.keys.insert_one(bulk::key_entry(key, record)).await {
                if !is_duplicate_key(&e) {
                    return Err(e);
                }
                let existing = self.keys.find_one(doc! { "_id": key }).await?;
                let first_id = existing
                    .as_ref()
                    .and_then(|d| d.get_str("eventId").ok())
                    .unwrap_or(record.event_id.as_str())
                    .to_owned();
                if let Some(found) = self.find_raw_id(&first_id).await? {
                    return Ok(Inserted::Existing(Box::new(found)));
                }
                // The key was recorded but its event was not (a crash in between): the event id the key names is
                // the one to create now, so retries of this request converge on one event.
                if first_id != record.event_id.as_str() {
                    let mut adopted = record.clone();
                    adopted.event_id = EventId::parse(&first_id).map_err(|e| {
                        Error::custom(format!("stored idempotency key is corrupt: {e}"))
                    })?;
                    return Ok(match self.insert_record(&adopted).await? {
                        Inserted::New => Inserted::Adopted(adopted.event_id),
                        existing => existing,
                    });
                }
            }
        }
        self.insert_record(record).await
    }

    /// The outbox entry goes first: an event is never stored without one, so a crash between the two writes
    /// leaves at most an entry without its event, which the sweeper drops, and never a QUEUED event that nothing
    /// publishes (a repeated request finds it and publishes nothing).
    async fn insert_record(&self, record: &EventRecord) -> Result<Inserted> {
        self.add_to_outbox(&record.event_id, record.replay_count)
            .await?;
        match self.raw.insert_one(record.to_document()?).await {
            Ok(_) => Ok(Inserted::New),
            Err(e) if is_duplicate_key(&e) => match self.find(&record.event_id).await? {
                Some(found) => Ok(Inserted::Existing(Box::new(found))),
                None => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    async fn find_raw_id(&self, event_id: &str) -> Result<Option<EventRecord>> {
        self.events.find_one(doc! { "eventId": event_id }).await
    }

    pub async fn find(&self, event_id: &EventId) -> Result<Option<EventRecord>> {
        self.find_raw_id(event_id.as_str()).await
    }

    /// Record-only events: QUEUED to RECORDED, for a lane message of replay generation `replay_count`. False if
    /// it was already recorded, or the message is of an older replay generation.
    pub async fn mark_recorded(&self, event_id: &EventId, replay_count: u32) -> Result<bool> {
        let (filter, update) = recorded_update(event_id, replay_count)?;
        let result = self.raw.update_one(filter, update).await?;
        Ok(result.modified_count == 1)
    }

    /// Claims attempt `attempt` of an event for sending, with a lease of `lease`.
    ///
    /// The claim succeeds from QUEUED or RETRY_SCHEDULED when `attempt` is the next one, or from a
    /// DISPATCHING whose lease has expired (its dispatcher died mid-send; the resend keeps the event id).
    ///
    /// The lease starts when the claim is taken (its insert), not when this call began: the reads before it do
    /// not eat into it. The returned record carries `lease_until` and the claim
    /// generation; a caller checks the lease left before it sends and records through [`Self::record_claimed`].
    pub async fn claim(
        &self,
        event_id: &EventId,
        attempt: u32,
        replay_count: u32,
        lease: Duration,
    ) -> Result<Claim> {
        let Some(current) = self.find(event_id).await? else {
            return Ok(Claim::Skip(None));
        };
        let (filter, mut generation) = match decide(current, attempt, replay_count) {
            Decision::Done(claim) => return Ok(claim),
            Decision::Take { filter, generation } => (filter, generation),
        };
        let lease_length =
            chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::seconds(30));
        let now = Utc::now();
        // The claim itself is an insert under a unique key: atomic on every MongoDB-wire server. (A conditional
        // update is not on FerretDB 1.x, which reads and writes a document in two steps: two dispatchers could
        // both win.) A takeover after an expired lease is the next generation of the same attempt.
        let taken_at = loop {
            let token = claim_token(event_id, replay_count, attempt, generation);
            // Other dispatchers date the lease from this `at`, so the lease is dated from it here too.
            let taken_at = now_bson();
            match self
                .claims
                .insert_one(doc! { "_id": &token, "at": taken_at })
                .await
            {
                Ok(_) => break taken_at.to_chrono(),
                Err(e) if is_duplicate_key(&e) => {
                    // Someone holds this generation. If its lease has run out (its claimer died, possibly before
                    // it could mark the event), the next generation may be claimed; otherwise wait for it.
                    let held = self.claims.find_one(doc! { "_id": &token }).await?;
                    let taken_at = held
                        .as_ref()
                        .and_then(|d| d.get_datetime("at").ok())
                        .map_or(now, |at| at.to_chrono());
                    let expires = taken_at + lease_length;
                    if expires > Utc::now() {
                        return Ok(Claim::Leased(expires));
                    }
                    generation += 1;
                }
                Err(e) => return Err(e),
            }
        };
        let lease_until = taken_at + lease_length;
        let options = FindOneAndUpdateOptions::builder()
            .return_document(ReturnDocument::After)
            .build();
        let claimed = self
            .events
            .find_one_and_update(filter, dispatching(lease_until, generation))
            .with_options(options)
            .await?;
        match claimed {
            Some(record) => Ok(Claim::Send(Box::new(record))),
            // Someone else moved it between our read and our write: look again.
            None => Box::pin(self.claim(event_id, attempt, replay_count, lease)).await,
        }
    }

    /// Records attempt `attempt` of the claim `claim` (the record [`Claim::Send`] returned), by its outcome.
    ///
    /// Both filter on the claim's generation: once a lease ran out and another dispatcher took the attempt over,
    /// a failure recorded by the older claim matches nothing, so it can neither land before nor overwrite the
    /// newer claim's outcome. A delivery is different: it happened, so an older claim's late delivery still ends
    /// the event as DELIVERED while it is in this replay generation and not terminal (the newer claim may have
    /// failed meanwhile, and its retry may be scheduled: that retry then finds the event delivered).
    pub async fn record_claimed(&self, claim: &EventRecord, attempt: &Attempt) -> Result<bool> {
        let generation = Some(claim.claim_generation);
        let event_id = &claim.event_id;
        if attempt.outcome != herald_domain::AttemptOutcome::Delivered {
            return self
                .record_attempt(event_id, attempt, claim.replay_count, generation, None)
                .await;
        }
        let delivered = Some(Status::Delivered);
        Ok(self
            .record_attempt(event_id, attempt, claim.replay_count, generation, delivered)
            .await?
            || self
                .record_late_delivery(event_id, attempt, claim.replay_count)
                .await?)
    }

    /// Records a successful attempt: DISPATCHING to DELIVERED, whatever claim generation holds it. For callers
    /// that hold no claim (tools, tests); a dispatcher records through [`Self::record_claimed`].
    pub async fn record_delivered(
        &self,
        event_id: &EventId,
        attempt: &Attempt,
        replay_count: u32,
    ) -> Result<bool> {
        self.record_attempt(
            event_id,
            attempt,
            replay_count,
            None,
            Some(Status::Delivered),
        )
        .await
    }

    /// Records a failed attempt. The event stays DISPATCHING, without a lease, until the retry scheduler decides
    /// (RETRY_SCHEDULED or DEAD_LETTERED). Whatever claim generation holds it: for callers that hold no claim
    /// (tools, tests); a dispatcher records through [`Self::record_claimed`].
    pub async fn record_failed(
        &self,
        event_id: &EventId,
        attempt: &Attempt,
        replay_count: u32,
    ) -> Result<bool> {
        self.record_attempt(event_id, attempt, replay_count, None, None)
            .await
    }

    /// A delivery of attempt `attempt.number` by a claim that lost its lease, or whose claim was lost: DELIVERED
    /// if the event is still in replay generation `replay_count`, not terminal, and at this attempt or a later one.
    /// The attempt count never goes down.
    ///
    /// "Not terminal" includes QUEUED: FerretDB 1.24 does not apply a conditional update atomically (it reads,
    /// then writes the whole document), so a write that read the document before the claim landed can write it
    /// back over DISPATCHING. Before the outbox collection, ingest's PENDING to QUEUED update did exactly that in
    /// a 10-minute chaos run: the webhook was delivered and the event stayed QUEUED for good. No writer does so now,
    /// but the send happened, so DELIVERED is the truth whatever the document says.
    async fn record_late_delivery(
        &self,
        event_id: &EventId,
        attempt: &Attempt,
        replay_count: u32,
    ) -> Result<bool> {
        let previous = attempt.number.saturating_sub(1);
        let entries = vec![
            to_bson(&TimelineEntry {
                at: attempt.ended_at,
                kind: "attempt".into(),
                attempt: Some(attempt.clone()),
                detail: Some("recorded late: its claim's lease had run out".into()),
            })?,
            to_bson(&TimelineEntry {
                at: attempt.ended_at,
                kind: "delivered".into(),
                attempt: None,
                detail: None,
            })?,
        ];
        let result = self
            .raw
            .update_one(
                doc! {
                    "eventId": event_id.as_str(),
                    "status": { "$nin": statuses(&[Status::Delivered, Status::DeadLettered, Status::Recorded]) },
                    "attemptCount": { "$gte": i64::from(previous) },
                    "replayCount": i64::from(replay_count),
                },
                doc! {
                    "$set": {
                        "status": "DELIVERED",
                        "leaseUntil": Bson::Null,
                        "nextAttemptAt": Bson::Null,
                        "updatedAt": now_bson(),
                    },
                    "$max": { "attemptCount": i64::from(attempt.number) },
                    "$push": { "attempts": to_bson(attempt)?, "timeline": { "$each": entries } },
                },
            )
            .await?;
        if result.modified_count == 1 {
            tracing::warn!(event_id = %event_id, attempt = attempt.number, "a delivery recorded after its claim's lease ran out");
        }
        Ok(result.modified_count == 1)
    }

    /// Marks an event whose record cannot be processed (it does not decode, or a write of it fails for good)
    /// DEAD_LETTERED with `reason`, unless it is terminal already. Raw `$set`s only, no decoding and no growth of
    /// the document: this has to work on the record that broke the normal path. True if it was marked.
    pub async fn dead_letter_unprocessable(
        &self,
        event_id: &EventId,
        reason: &str,
    ) -> Result<bool> {
        let terminal: Vec<Status> =
            [Status::Delivered, Status::Recorded, Status::DeadLettered].into();
        let result = self
            .raw
            .update_one(
                doc! { "eventId": event_id.as_str(), "status": { "$nin": statuses(&terminal) } },
                doc! { "$set": {
                    "status": "DEAD_LETTERED",
                    "deadLetterReason": reason,
                    "deadLetteredAt": now_bson(),
                    "leaseUntil": Bson::Null,
                    "nextAttemptAt": Bson::Null,
                    "updatedAt": now_bson(),
                } },
            )
            .await?;
        Ok(result.modified_count == 1)
    }

    async fn record_attempt(
        &self,
        event_id: &EventId,
        attempt: &Attempt,
        replay_count: u32,
        generation: Option<u32>,
        next: Option<Status>,
    ) -> Result<bool> {
        let (filter, update) = attempt_update(event_id, attempt, replay_count, generation, next)?;
        let result = self.raw.update_one(filter, update).await?;
        Ok(result.modified_count == 1)
    }
}

/// The conditional update that takes a record-only event to RECORDED: its filter and its update.
fn recorded_update(event_id: &EventId, replay_count: u32) -> Result<(Document, Document)> {
    let entry = to_bson(&TimelineEntry::now("recorded"))?;
    let filter = doc! {
        "eventId": event_id.as_str(),
        "status": { "$in": statuses(Status::Recorded.predecessors()) },
        "replayCount": i64::from(replay_count),
    };
    let update = doc! {
        "$set": { "status": "RECORDED", "updatedAt": now_bson() },
        "$push": { "timeline": entry },
    };
    Ok((filter, update))
}

/// The conditional update that records `attempt` (see [`EventStore::record_claimed`]): its filter and its update.
fn attempt_update(
    event_id: &EventId,
    attempt: &Attempt,
    replay_count: u32,
    generation: Option<u32>,
    next: Option<Status>,
) -> Result<(Document, Document)> {
    let previous = attempt.number.saturating_sub(1);
    let mut set = doc! {
        "attemptCount": i64::from(attempt.number),
        "leaseUntil": Bson::Null,
        "updatedAt": now_bson(),
    };
    let mut entries = vec![to_bson(&TimelineEntry {
        at: attempt.ended_at,
        kind: "attempt".into(),
        attempt: Some(attempt.clone()),
        detail: None,
    })?];
    match next {
        Some(status) => {
            set.insert("status", status.as_str());
            entries.push(to_bson(&TimelineEntry {
                at: attempt.ended_at,
                kind: status.as_str().to_ascii_lowercase(),
                attempt: None,
                detail: None,
            })?);
        }
        None => {
            set.insert(
                "lastError",
                attempt.error.clone().map_or(Bson::Null, Bson::String),
            );
        }
    }
    let mut filter = doc! {
        "eventId": event_id.as_str(),
        "status": "DISPATCHING",
        "attemptCount": i64::from(previous),
        "replayCount": i64::from(replay_count),
    };
    if let Some(generation) = generation {
        filter.insert("claimGeneration", i64::from(generation));
    }
    let update = doc! {
        "$set": set,
        "$push": { "attempts": to_bson(attempt)?, "timeline": { "$each": entries } },
    };
    Ok((filter, update))
}
