//! `claims` and `replay_claims` are only needed while the attempt or replay they guard is in flight. Once the
//! event has moved on, its state (attempt count, replay count, status) turns every later message for that step away
//! before any claim is looked at, and a claim whose holder died is taken over after its lease (seconds) anyway. So
//! claims older than [`CLAIM_RETENTION`] are dead weight, and the services that write them delete them from time
//! to time.

use std::future::Future;
use std::time::Duration;

use chrono::Utc;
use mongodb::bson::{self, doc};
use tokio_util::sync::CancellationToken;

use super::{EventStore, Result};

/// How long a claim is kept: far beyond any lease (30 s by default) or stale-claim takeover (60 s).
pub const CLAIM_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// How often a service deletes what it has outgrown (the first time right after it starts).
pub const PRUNE_EVERY: Duration = Duration::from_secs(600);

impl EventStore {
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
