//! The replay itself: walk the matching dead letters oldest first and, at the configured pace, claim each one
//! (DEAD_LETTERED to QUEUED, with an outbox entry), publish its first attempt to its priority's lane, and clear
//! the entry.
//!
//! The claim is a conditional update on the status and the replay count as read, so two replays of the same dead
//! letter cannot both win it, and a dead letter already back in flight is left alone. Claiming before publishing
//! means a publish that fails, or a process that dies, leaves the outbox entry: the outbox sweeper (replay's own, or
//! ingest's) publishes the events it names, with their replay count, so nothing replayed is lost.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::Utc;
use herald_domain::EventId;
use herald_platform::lanes::{LanePublisher, OutboxClearer};
use herald_platform::store::{DeadLetterFilter, DeadLetterRef, EventStore};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::params::ReplayRequest;

/// Dead letters selected by one query. Large, because with FerretDB each query costs about as much as reading
/// every dead letter (2 s for 10000), however few it returns; a selection is a few fields per dead letter.
const PAGE_SIZE: u32 = 5000;
/// Most events claimed but not yet acknowledged by Kafka at once. This also bounds how many events a replay leaves
/// in the outbox (for the sweeper) when Kafka stops answering.
const MAX_IN_FLIGHT: usize = 32;

/// Spaces out the events put back on the lanes to at most a given rate, across every replay of the process.
///
/// Each caller reserves the next free slot and waits for it. Idle time earns no credit: a stall (a page read, a
/// slow claim) never turns into a burst.
#[derive(Debug)]
pub(crate) struct Pacer {
    period: Duration,
    next: Mutex<Instant>,
}

impl Pacer {
    pub(crate) fn per_second(rate: u32) -> Self {
        Self {
            period: Duration::from_secs(1) / rate.max(1),
            next: Mutex::new(Instant::now()),
        }
    }

    /// Waits for this caller's slot.
    pub(crate) async fn pace(&self) {
        let now = Instant::now();
        let slot = {
            let mut next = self.next.lock().unwrap_or_else(PoisonError::into_inner);
            let slot = (*next).max(now);
            *next = slot + self.period;
            slot
        };
        if slot > now {
            tokio::time::sleep_until(slot).await;
        }
    }
}

/// Why a replay stopped before it had taken every selected dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopCause {
    Kafka,
    Mongo,
    Shutdown,
}

/// A replay that stopped part-way, and how far it got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stopped {
    pub cause: StopCause,
    /// Published and acknowledged.
    pub n_replayed: usize,
    /// Claimed (QUEUED, replay count bumped) but not acknowledged by Kafka: ingest's outbox sweeper publishes them.
    pub n_in_outbox: usize,
}

/// Where a replay starts after skipping its `from` dead letters.
enum Start {
    /// After this dead letter; `None` for the first one.
    At(Option<DeadLetterRef>),
    /// There are no more than `from` dead letters: nothing to take.
    PastTheEnd,
}

/// What became of one selected dead letter.
enum Outcome {
    /// On its lane.
    Replayed(EventId),
    /// Someone else replayed it first, or it is no longer a dead letter.
    Lost,
    /// Claimed but not published: in the outbox, for ingest's sweeper.
    Unpublished,
    /// The claim itself failed: MongoDB did not answer.
    ClaimFailed,
}

/// Runs replays. Cheap to clone: the store, the publisher and the pacer are shared.
#[derive(Clone)]
pub(crate) struct Replayer {
    store: EventStore,
    publisher: LanePublisher,
    /// Clears the outbox entries of the replayed events Kafka acknowledged, many per command.
    clearer: OutboxClearer,
    pacer: Arc<Pacer>,
    /// Cancelled at shutdown: replays stop taking new dead letters and finish the ones in flight.
    stopping: CancellationToken,
}

impl fmt::Debug for Replayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Replayer")
            .field("publisher", &self.publisher)
            .field("pacer", &self.pacer)
            .finish_non_exhaustive()
    }
}

impl Replayer {
    pub(crate) fn new(store: EventStore, publisher: LanePublisher, rate_per_sec: u32) -> Self {
        Self {
            clearer: OutboxClearer::spawn(store.clone()),
            store,
            publisher,
            pacer: Arc::new(Pacer::per_second(rate_per_sec)),
            stopping: CancellationToken::new(),
        }
    }

    /// Stops every replay of the process from taking new dead letters.
    pub(crate) fn stop(&self) {
        self.stopping.cancel();
    }

    pub(crate) fn stopping(&self) -> CancellationToken {
        self.stopping.clone()
    }

    /// The dead letters a replay of `filter` would take now, oldest first, at most `limit` after skipping the
    /// first `from`: a dry run.
    pub(crate) async fn select(
        &self,
        filter: &DeadLetterFilter,
        from: u32,
        limit: u32,
    ) -> Result<Vec<DeadLetterRef>, mongodb::error::Error> {
        let filter = up_to_now(filter);
        let after = match self.skip(&filter, from).await? {
            Start::At(after) => after,
            Start::PastTheEnd => return Ok(Vec::new()),
        };
        let mut selected: Vec<DeadLetterRef> = Vec::new();
        while selected.len() < limit as usize {
            let want = (limit - selected.len() as u32).min(PAGE_SIZE);
            let page = self
                .store
                .dead_letters_after(&filter, selected.last().or(after.as_ref()), i64::from(want))
                .await?;
            let n_page = page.len();
            selected.extend(page);
            if n_page < want as usize {
                break;
            }
        }
        Ok(selected)
    }

    /// Where a walk through `filter`'s dead letters starts once the first `from` are skipped (a replay's `from`):
    /// after the `from`-th, in the order replays take them.
    ///
    /// The skipped ones are read as positions (a few fields each), a page at a time, before anything is replayed,
    /// so the set does not shrink under the count.
    async fn skip(
        &self,
        filter: &DeadLetterFilter,
        from: u32,
    ) -> Result<Start, mongodb::error::Error> {
        let mut after: Option<DeadLetterRef> = None;
        let mut n_skipped = 0;
        while n_skipped < from {
            let want = (from - n_skipped).min(PAGE_SIZE);
            let page = self
                .store
                .dead_letters_after(filter, after.as_ref(), i64::from(want))
                .await?;
            n_skipped += page.len() as u32;
            if page.len() < want as usize {
                return Ok(Start::PastTheEnd);
            }
            after = page.into_iter().last();
        }
        Ok(Start::At(after))
    }

    /// Replays the dead letters `request` selects, oldest first, paced. Returns the ids this replay put back on
    /// their lanes, oldest first (a concurrent replay may have taken some of the selected ones).
    #[tracing::instrument(skip_all, fields(limit = request.limit, request_id))]
    pub(crate) async fn replay(
        &self,
        request: ReplayRequest,
        request_id: Option<String>,
    ) -> Result<Vec<EventId>, Stopped> {
        if let Some(id) = &request_id {
            tracing::Span::current().record("request_id", id.as_str());
        }
        let filter = up_to_now(&request.filter);
        let limit = request.limit as usize;
        let request_id: Option<Arc<str>> = request_id.map(Arc::from);
        // Cancelled at shutdown, or by the first event whose claim or publish failed: the dependency is likely
        // away, and every further claim would only leave one more event in the outbox.
        let stop = self.stopping.child_token();
        let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        let mut tasks = JoinSet::new();
        let mut n_selected = 0;
        let mut select_failed = false;
        let mut interrupted = false;
        let mut after: Option<DeadLetterRef> = match self.skip(&filter, request.from).await {
            Ok(Start::At(after)) => after,
            Ok(Start::PastTheEnd) => return Ok(Vec::new()),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the dead letters to skip; nothing replayed");
                return Err(Stopped {
                    cause: StopCause::Mongo,
                    n_replayed: 0,
                    n_in_outbox: 0,
                });
            }
        };
        'pages: while n_selected < limit {
            let want = (limit - n_selected).min(PAGE_SIZE as usize);
            let read = tokio::select! {
                biased;
                () = stop.cancelled() => {
                    interrupted = true;
                    break;
                }
                read = self.store.dead_letters_after(&filter, after.as_ref(), want as i64) => read,
            };
            let page = match read {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the dead letters; the replay stops");
                    select_failed = true;
                    break;
                }
            };
            let n_page = page.len();
            after = page.last().cloned();
            for dead_letter in page {
                let permit = tokio::select! {
                    biased;
                    () = stop.cancelled() => {
                        interrupted = true;
                        break 'pages;
                    }
                    permit = Arc::clone(&permits).acquire_owned() => permit,
                };
                let Ok(permit) = permit else {
                    break 'pages;
                };
                tokio::select! {
                    biased;
                    () = stop.cancelled() => {
                        interrupted = true;
                        break 'pages;
                    }
                    () = self.pacer.pace() => {}
                }
                let (this, stop, request_id) = (self.clone(), stop.clone(), request_id.clone());
                let index = n_selected;
                tasks.spawn(async move {
                    let outcome = this.replay_one(dead_letter, request_id.as_deref()).await;
                    if matches!(outcome, Outcome::Unpublished | Outcome::ClaimFailed) {
                        stop.cancel();
                    }
                    drop(permit);
                    (index, outcome)
                });
                n_selected += 1;
            }
            if n_page < want {
                break;
            }
        }
        let mut outcomes = Vec::with_capacity(n_selected);
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(outcome) => outcomes.push(outcome),
                Err(e) => {
                    // Its event is DEAD_LETTERED (the claim did not happen) or QUEUED in the outbox (the sweeper has it).
                    tracing::error!(error = %e, "a replay task panicked");
                    outcomes.push((usize::MAX, Outcome::ClaimFailed));
                }
            }
        }
        outcomes.sort_by_key(|(index, _)| *index);
        let mut replayed = Vec::new();
        let (mut n_unpublished, mut n_claim_failed) = (0, 0);
        for (_, outcome) in outcomes {
            match outcome {
                Outcome::Replayed(id) => replayed.push(id),
                Outcome::Lost => {}
                Outcome::Unpublished => n_unpublished += 1,
                Outcome::ClaimFailed => n_claim_failed += 1,
            }
        }
        let cause = if n_unpublished > 0 {
            Some(StopCause::Kafka)
        } else if n_claim_failed > 0 || select_failed {
            Some(StopCause::Mongo)
        } else if interrupted {
            Some(StopCause::Shutdown)
        } else {
            None
        };
        tracing::info!(
            n_selected,
            n_replayed = replayed.len(),
            n_unpublished,
            n_claim_failed,
            "replay finished"
        );
        match cause {
            None => Ok(replayed),
            Some(cause) => Err(Stopped {
                cause,
                n_replayed: replayed.len(),
                n_in_outbox: n_unpublished,
            }),
        }
    }

    /// Claims one dead letter, publishes it to its lane and marks it QUEUED.
    #[tracing::instrument(skip_all, fields(event_id = %dead_letter.event_id))]
    async fn replay_one(&self, dead_letter: DeadLetterRef, request_id: Option<&str>) -> Outcome {
        let replay_count = dead_letter.replay_count + 1;
        let detail = match request_id {
            Some(id) => format!("replay {replay_count}, request {id}"),
            None => format!("replay {replay_count}"),
        };
        let record = match self
            .store
            .replay_dead_letter(&dead_letter.event_id, dead_letter.replay_count, detail)
            .await
        {
            Ok(Some(record)) => record,
            Ok(None) => {
                tracing::debug!("no longer this dead letter (replayed by someone else?), skipped");
                return Outcome::Lost;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot claim the dead letter");
                return Outcome::ClaimFailed;
            }
        };
        // The record as the claim left it: its event, and the replay count the dispatchers will check.
        if let Err(e) = self
            .publisher
            .publish_first(&record.event(), record.replay_count, request_id)
            .await
        {
            tracing::warn!(error = %e, "kafka did not acknowledge; the event stays in the outbox for the sweeper");
            return Outcome::Unpublished;
        }
        // Kafka has it, so it is replayed: its entry is cleared in the background, with others (one left behind is
        // published once more by a sweep, which dispatchers ignore).
        self.clearer
            .clear(record.event_id.clone(), record.replay_count);
        tracing::info!(replay_count = record.replay_count, "replayed");
        Outcome::Replayed(record.event_id)
    }

    /// The publisher of first attempts this replayer uses (its sweeper's too).
    pub(crate) fn publisher(&self) -> &LanePublisher {
        &self.publisher
    }

    /// At shutdown, once no replay runs: waits (at most `timeout` each) for the outbox clears still running, then
    /// for the messages still in the producer's queue.
    pub(crate) async fn finish(&self, timeout: Duration) {
        self.clearer.finish(timeout).await;
        self.publisher.flush(timeout).await;
    }
}

/// `filter`, limited to the dead letters that exist now. An event replayed by this very replay that fails again
/// and is dead-lettered anew sorts after this bound, so a replay never takes the same event twice.
fn up_to_now(filter: &DeadLetterFilter) -> DeadLetterFilter {
    let now = Utc::now();
    DeadLetterFilter {
        until: Some(filter.until.map_or(now, |until| until.min(now))),
        ..filter.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_pacer_spaces_slots_and_gives_no_credit_for_idle_time() {
        let pacer = Pacer::per_second(100);
        let start = Instant::now();
        for _ in 0..5 {
            pacer.pace().await;
        }
        assert_eq!(start.elapsed(), Duration::from_millis(40));
        tokio::time::sleep(Duration::from_secs(1)).await;
        let idle_end = Instant::now();
        pacer.pace().await;
        pacer.pace().await;
        assert_eq!(
            idle_end.elapsed(),
            Duration::from_millis(10),
            "a second of idling does not allow a burst"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_share_one_rate() {
        let pacer = Arc::new(Pacer::per_second(50));
        let start = Instant::now();
        let callers: Vec<_> = (0..2)
            .map(|_| {
                let pacer = Arc::clone(&pacer);
                tokio::spawn(async move {
                    for _ in 0..5 {
                        pacer.pace().await;
                    }
                })
            })
            .collect();
        for caller in callers {
            caller.await.expect("no panic");
        }
        assert_eq!(start.elapsed(), Duration::from_millis(9 * 20));
    }

    #[test]
    fn a_replay_never_reaches_past_its_start() {
        let before = Utc::now();
        let bounded = up_to_now(&DeadLetterFilter::default());
        assert!(bounded.until.is_some_and(|until| until >= before));
        let early = before - chrono::Duration::days(1);
        let kept = up_to_now(&DeadLetterFilter {
            until: Some(early),
            ..DeadLetterFilter::default()
        });
        assert_eq!(kept.until, Some(early));
    }
}
