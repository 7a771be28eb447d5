//! What is deleted when it has outlived its use: claims, and events past their retention.
//!
//! `claims` and `replay_claims` are only needed while the attempt or replay they guard is in flight. Once the
//! event has moved on, its state (attempt count, replay count, status) turns every later message for that step away
//! before any claim is looked at, and a claim whose holder died is taken over after its lease (seconds) anyway. So
//! claims older than [`CLAIM_RETENTION`] are dead weight, and the services that write them delete them from time
//! to time.
//!
//! Events are deleted by [`EventStore::sweep_expired`] (herald-replay runs it): a `DELIVERED` or `RECORDED` event
//! whose last change (`updatedAt`) is older than [`Retention::events`], a `DEAD_LETTERED` one dead-lettered
//! longer ago than [`Retention::dead_letters`] (kept longer, so that it can still be replayed), each with its
//! attempts and timeline (they are inside it) and its idempotency keys. An event that is not terminal is never
//! deleted: it has a terminal state still to reach. A replayed dead letter is not a dead letter any more, and its
//! `updatedAt` is new; the one race left, a replay that has claimed the dead letter but not yet updated it, is
//! closed by the sweeper claiming the same replay first (see [`EventStore::sweep_expired`]).

use std::future::Future;
use std::time::Duration;

use chrono::Utc;
use mongodb::bson::{self, doc};
use tokio_util::sync::CancellationToken;

use super::{EventStore, Result, IDEMPOTENCY_KEYS};
use herald_domain::EventId;
use mongodb::bson::Document;
use mongodb::options::IndexOptions;
use mongodb::IndexModel;

use crate::mongo;

/// How long a claim is kept: far beyond any lease (30 s by default) or stale-claim takeover (60 s).
pub const CLAIM_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// How often a service deletes what it has outgrown (the first time right after it starts).
pub const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// How long events are kept, from `HERALD_RETENTION_DAYS` and `HERALD_DLQ_RETENTION_DAYS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// A delivered or recorded event, after its last change. Default 30 days.
    pub events: Duration,
    /// A dead letter, after it was dead-lettered. Default 90 days.
    pub dead_letters: Duration,
}

/// `HERALD_RETENTION_DAYS`' default.
pub const DEFAULT_RETENTION_DAYS: u32 = 30;
/// `HERALD_DLQ_RETENTION_DAYS`' default.
pub const DEFAULT_DLQ_RETENTION_DAYS: u32 = 90;
/// Most events one sweep deletes: a pass is bounded, and the next one (every [`PRUNE_EVERY`], or at once while a
/// pass finds a full batch) goes on.
pub const SWEEP_BATCH: i64 = 1_000;

impl Retention {
    pub fn from_days(events: u32, dead_letters: u32) -> Self {
        let days = |n: u32| Duration::from_secs(u64::from(n) * 86_400);
        Self {
            events: days(events),
            dead_letters: days(dead_letters),
        }
    }
}

impl Default for Retention {
    fn default() -> Self {
        Self::from_days(DEFAULT_RETENTION_DAYS, DEFAULT_DLQ_RETENTION_DAYS)
    }
}

fn cutoff(age: Duration) -> bson::DateTime {
    bson::DateTime::from_chrono(Utc::now() - chrono::Duration::from_std(age).unwrap_or_default())
}

/// The index that finds an event's idempotency keys when the event is deleted (on FerretDB the native stack's
/// GIN index on `eventId` serves it).
fn key_index() -> IndexModel {
    IndexModel::builder()
        .keys(doc! { "eventId": 1 })
        .options(IndexOptions::builder().name("eventId".to_owned()).build())
        .build()
}

impl EventStore {
    /// Creates the index the sweeper needs to delete idempotency keys with their events (idempotent).
    pub async fn ensure_retention_indexes(db: &mongodb::Database) -> Result<()> {
        mongo::ensure_indexes(db, IDEMPOTENCY_KEYS, vec![key_index()]).await
    }

    /// Deletes up to `batch` events past `retention` with their idempotency keys; returns how many events.
    ///
    /// Each event is deleted by `_id` under the condition that selected it, repeated, so that one that changed in
    /// between stays. A dead letter is deleted only after the sweeper has claimed its next replay (the claim a
    /// replay takes before it updates the event, unique per replay): a replay that claimed it first keeps it, and
    /// a replay that comes later finds the claim taken and leaves it. Every lookup is an equality FerretDB pushes
    /// down (`status`, `_id`, `eventId`); the date conditions are checked on what those return.
    pub async fn sweep_expired(&self, retention: &Retention, batch: i64) -> Result<u64> {
        let rules = [
            ("DELIVERED", "updatedAt", retention.events),
            ("RECORDED", "updatedAt", retention.events),
            ("DEAD_LETTERED", "deadLetteredAt", retention.dead_letters),
        ];
        let mut deleted = 0;
        for (status, field, age) in rules {
            let left = batch - deleted as i64;
            if left <= 0 {
                break;
            }
            let condition = doc! { "status": status, field: { "$lt": cutoff(age) } };
            let mut expired = self
                .raw
                .find(condition.clone())
                .projection(doc! { "_id": 1, "eventId": 1, "replayCount": 1 })
                .limit(left)
                .await?;
            let mut found: Vec<Document> = Vec::new();
            while expired.advance().await? {
                found.push(expired.deserialize_current()?);
            }
            for event in found {
                let (Some(id), Ok(event_id)) = (event.get("_id"), event.get_str("eventId")) else {
                    continue;
                };
                let Ok(event_id) = EventId::parse(event_id) else {
                    continue;
                };
                let mut exact = condition.clone();
                exact.insert("_id", id.clone());
                if status == "DEAD_LETTERED" {
                    let replay_count = match event.get("replayCount") {
                        Some(bson::Bson::Int32(n)) => u32::try_from(*n).unwrap_or(0),
                        Some(bson::Bson::Int64(n)) => u32::try_from(*n).unwrap_or(0),
                        _ => 0,
                    };
                    if !self.claim_replay(&event_id, replay_count).await? {
                        continue;
                    }
                    exact.insert(
                        "replayCount",
                        event
                            .get("replayCount")
                            .cloned()
                            .unwrap_or(bson::Bson::Int64(0)),
                    );
                }
                if self.raw.delete_one(exact).await?.deleted_count == 1 {
                    deleted += 1;
                    self.keys
                        .delete_many(doc! { "eventId": event_id.as_str() })
                        .await?;
                }
            }
        }
        Ok(deleted)
    }

    /// Deletes the dispatch claims (`claims`) taken more than `older_than` ago; returns how many.
    pub async fn prune_claims(&self, older_than: Duration) -> Result<u64> {
        let before = Utc::now() - chrono::Duration::from_std(older_than).unwrap_or_default();
        let deleted = self
            .claims
            .delete_many(doc! { "at": { "$lt": bson::DateTime::from_chrono(before) } })
            .await?;
        Ok(deleted.deleted_count)
    }

    /// Deletes the replay claims (`replay_claims`) taken more than `older_than` ago; returns how many.
    pub async fn prune_replay_claims(&self, older_than: Duration) -> Result<u64> {
        let before = Utc::now() - chrono::Duration::from_std(older_than).unwrap_or_default();
        let deleted = self
            .replay_claims()
            .delete_many(doc! { "claimedAt": { "$lt": bson::DateTime::from_chrono(before) } })
            .await?;
        Ok(deleted.deleted_count)
    }
}

/// Runs `prune` now and then every `every` until `shutdown`, logging what it deleted. A failure is logged and
/// tried again next time: nothing depends on it but disk space.
pub async fn prune_periodically<F, Fut>(
    what: &str,
    every: Duration,
    shutdown: CancellationToken,
    prune: F,
) where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<u64>>,
{
    loop {
        match prune().await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, what, "pruned old documents"),
            Err(e) => {
                tracing::warn!(error = %e, what, "pruning old documents failed; trying again later")
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// Sweeps `store` of expired events until `shutdown`: now, again at once while a pass deletes a full batch (a
/// backlog, after a first start or a lowered retention), otherwise every `every`. A failure is logged and tried
/// again next time.
pub async fn sweep_periodically(
    store: EventStore,
    retention: Retention,
    every: Duration,
    shutdown: CancellationToken,
) {
    loop {
        let wait = match store.sweep_expired(&retention, SWEEP_BATCH).await {
            Ok(deleted) if deleted as i64 >= SWEEP_BATCH => {
                tracing::info!(deleted, "deleted events past their retention; more to go");
                Duration::ZERO
            }
            Ok(0) => every,
            Ok(deleted) => {
                tracing::info!(deleted, "deleted events past their retention");
                every
            }
            Err(e) => {
                tracing::warn!(error = %e, "deleting events past their retention failed; trying again later");
                every
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
