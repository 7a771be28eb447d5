//! The retry scheduler's and the dead-letter path's state changes: RETRY_SCHEDULED and DEAD_LETTERED, each
//! conditional on the failed attempt it answers, and each telling a redelivered request apart from a stale one.

use chrono::{DateTime, Utc};
use herald_domain::{EventId, Status};
use mongodb::bson::{self, doc, Bson};

use super::{now_bson, statuses, to_bson, EventRecord, EventStore, Result, TimelineEntry};

/// What scheduling a retry found.
#[derive(Debug, Clone, PartialEq)]
pub enum Scheduled {
    /// Now RETRY_SCHEDULED, due at the given time.
    Now,
    /// This retry was scheduled before (a redelivered request): publish it again with the stored due time.
    Already(Box<EventRecord>),
    /// The event has moved past this attempt (delivered, replayed, or a later attempt): nothing to do.
    Stale,
}

/// What dead-lettering found.
#[derive(Debug, Clone, PartialEq)]
pub enum DeadLettered {
    /// Now DEAD_LETTERED.
    Now(Box<EventRecord>),
    /// Dead-lettered before for this attempt (a redelivered request): publish the dead letter again.
    Already(Box<EventRecord>),
    /// The event has moved on: nothing to do.
    Stale,
}

impl EventStore {
    /// DISPATCHING (attempt `failed` recorded as failed) to RETRY_SCHEDULED, due at `next_at`.
    pub async fn schedule_retry(
        &self,
        event_id: &EventId,
        failed: u32,
        replay_count: u32,
        next_at: DateTime<Utc>,
        detail: String,
    ) -> Result<Scheduled> {
        let entry = to_bson(&TimelineEntry {
            at: Utc::now(),
            kind: "retry_scheduled".into(),
            attempt: None,
            detail: Some(detail),
        })?;
        let result = self
            .raw
            .update_one(
                doc! {
                    "eventId": event_id.as_str(),
                    "status": "DISPATCHING",
                    "leaseUntil": Bson::Null,
                    "attemptCount": i64::from(failed),
                    "replayCount": i64::from(replay_count),
                },
                doc! {
                    "$set": {
                        "status": "RETRY_SCHEDULED",
                        "nextAttemptAt": bson::DateTime::from_chrono(next_at),
                        "updatedAt": now_bson(),
                    },
                    "$push": { "timeline": entry },
                },
            )
            .await?;
        if result.modified_count == 1 {
            return Ok(Scheduled::Now);
        }
        Ok(match self.find(event_id).await? {
            Some(r)
                if r.status == Status::RetryScheduled
                    && r.attempt_count == failed
                    && r.replay_count == replay_count =>
            {
                Scheduled::Already(Box::new(r))
            }
            _ => Scheduled::Stale,
        })
    }

    /// DISPATCHING or RETRY_SCHEDULED (at attempt `failed`) to DEAD_LETTERED with `reason`.
    pub async fn dead_letter(
        &self,
        event_id: &EventId,
        failed: u32,
        replay_count: u32,
        reason: &str,
    ) -> Result<DeadLettered> {
        let entry = to_bson(&TimelineEntry {
            at: Utc::now(),
            kind: "dead_lettered".into(),
            attempt: None,
            detail: Some(reason.to_owned()),
        })?;
        let updated = self
            .events
            .find_one_and_update(
                doc! {
                    "eventId": event_id.as_str(),
                    "status": { "$in": statuses(Status::DeadLettered.predecessors()) },
                    "attemptCount": i64::from(failed),
                    "replayCount": i64::from(replay_count),
                },
                doc! {
                    "$set": {
                        "status": "DEAD_LETTERED",
                        "deadLetterReason": reason,
                        "deadLetteredAt": now_bson(),
                        "leaseUntil": Bson::Null,
                        "nextAttemptAt": Bson::Null,
                        "updatedAt": now_bson(),
                    },
                    "$push": { "timeline": entry },
                },
            )
            .return_document(mongodb::options::ReturnDocument::After)
            .await?;
        if let Some(record) = updated {
            return Ok(DeadLettered::Now(Box::new(record)));
        }
        Ok(match self.find(event_id).await? {
            Some(r)
                if r.status == Status::DeadLettered
                    && r.attempt_count == failed
                    && r.replay_count == replay_count =>
            {
                DeadLettered::Already(Box::new(r))
            }
            _ => DeadLettered::Stale,
        })
    }
}
