//! The dispatcher's store steps, gathered across the messages in flight: the claims, the deliveries' records and
//! the record-only events' marks of every partition worker go to the store in batches (one command per step for
//! a whole batch, see `store::bulk`), while each message still gets its own answer.

use std::time::Duration;

use herald_domain::{Attempt, Event, EventId};
use herald_platform::batch::{Batcher, Limits, Stopped};
use herald_platform::store::{self, Claim, ClaimRequest, EventRecord, EventStore};

/// Batches of up to 16 steps, eight running at once. Small batches on purpose: FerretDB 1.24 runs the statements
/// of one command one after the other, so every step of a batch waits for the whole batch, and one user's events,
/// which go one after the other, wait for each of theirs (batches of 128 left such a chain minutes behind).
const BATCHES: Limits = Limits {
    max_batch: 16,
    max_in_flight: 8,
};

/// The batched steps of one dispatcher process.
#[derive(Debug, Clone)]
pub(crate) struct Steps {
    claims: Batcher<ClaimRequest, store::Result<Claim>>,
    deliveries: Batcher<(EventRecord, Attempt), store::Result<bool>>,
    recorded: Batcher<(EventId, u32), store::Result<bool>>,
}

/// A batcher that has stopped is waited out like an outage (it only stops with the runtime).
fn transient(stopped: Stopped) -> store::Error {
    store::Error::from(std::io::Error::other(stopped.to_string()))
}

impl Steps {
    /// Starts the gathering tasks; claims are taken with a lease of `lease`.
    pub(crate) fn spawn(store: &EventStore, lease: Duration) -> Self {
        let claiming = store.clone();
        let delivering = store.clone();
        let recording = store.clone();
        Self {
            claims: Batcher::spawn(
                "dispatch claim",
                BATCHES,
                move |batch: Vec<ClaimRequest>| {
                    let store = claiming.clone();
                    async move { store.claim_many(&batch, lease).await }
                },
            ),
            deliveries: Batcher::spawn(
                "dispatch record delivered",
                BATCHES,
                move |batch: Vec<(EventRecord, Attempt)>| {
                    let store = delivering.clone();
                    async move { store.record_delivered_many(&batch).await }
                },
            ),
            recorded: Batcher::spawn(
                "dispatch mark recorded",
                BATCHES,
                move |batch: Vec<(EventId, u32)>| {
                    let store = recording.clone();
                    async move { store.mark_recorded_many(&batch).await }
                },
            ),
        }
    }

    /// [`EventStore::claim`], in a batch.
    pub(crate) async fn claim(
        &self,
        event: &Event,
        attempt: u32,
        replay_count: u32,
    ) -> store::Result<Claim> {
        let request = ClaimRequest {
            event: event.clone(),
            attempt,
            replay_count,
        };
        self.claims.call(request).await.map_err(transient)?
    }

    /// [`EventStore::record_claimed`] of a delivery, in a batch.
    pub(crate) async fn record_delivered(
        &self,
        claim: &EventRecord,
        attempt: &Attempt,
    ) -> store::Result<bool> {
        let delivery = (claim.clone(), attempt.clone());
        self.deliveries.call(delivery).await.map_err(transient)?
    }

    /// [`EventStore::mark_recorded`], in a batch.
    pub(crate) async fn mark_recorded(
        &self,
        event_id: &EventId,
        replay_count: u32,
    ) -> store::Result<bool> {
        let mark = (event_id.clone(), replay_count);
        self.recorded.call(mark).await.map_err(transient)?
    }
}
