//! How ingest records accepted events: one batcher per lane, so that a critical request is never gathered into,
//! or queued behind, a batch of bulk traffic.
//!
//! A batcher runs at most [`RECORD_BATCHES`]`.max_in_flight` batches at once and the requests that arrive
//! meanwhile wait for the next one. With one batcher for every priority, a critical request arriving during a
//! default-lane flood waited for the flood's batches ahead of it (the priority benchmark saw critical ingest
//! latency follow the flood's); with one per lane it waits only for critical ones. They still share the store.

use std::future::Future;

use herald_domain::{Lane, Priority};
use herald_platform::batch::{Batcher, Limits};
use herald_platform::store::{self, Accepting, Inserted};

/// How ingest gathers concurrent requests into the commands that record them: batches of up to 64 events, two
/// running at once per lane. Few at once on purpose: the requests that arrive while two batches run wait for the
/// next one, so under load a batch carries many events and the store sees few commands (eight at once left about
/// 1.2 events a batch at 16 connections, 2.4 commands an event); one slow batch still does not hold up the next.
pub(crate) const RECORD_BATCHES: Limits = Limits {
    max_batch: 64,
    max_in_flight: 2,
};

/// What one batch of accepted events answers, an answer per event in order.
type Recorder = Batcher<Accepting, store::Result<Inserted>>;

/// The recorders of the lanes ingest publishes to (a retry-lane event is never accepted as such).
#[derive(Debug, Clone)]
pub(crate) struct Recorders {
    critical: Recorder,
    default: Recorder,
}

impl Recorders {
    /// Starts one gathering task per lane, each recording its batches with `run`.
    pub(crate) fn spawn<F, Fut>(run: F) -> Self
    where
        F: Fn(Vec<Accepting>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Vec<store::Result<Inserted>>> + Send + 'static,
    {
        Self {
            critical: Batcher::spawn("ingest record (critical)", RECORD_BATCHES, run.clone()),
            default: Batcher::spawn("ingest record (default)", RECORD_BATCHES, run),
        }
    }

    /// The recorder of events of `priority`.
    pub(crate) fn for_priority(&self, priority: Priority) -> &Recorder {
        match Lane::for_priority(priority) {
            Lane::Critical => &self.critical,
            Lane::Default | Lane::Retry => &self.default,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use herald_domain::{Channel, Event, EventId};
    use herald_platform::store::EventRecord;
    use tokio::sync::watch;

    use super::*;

    fn accepting(priority: Priority) -> Accepting {
        let event = Event {
            event_id: EventId::generate(),
            user_id: None,
            event_type: None,
            channel: Some(Channel::Webhook),
            priority,
            payload: serde_json::json!({"url": "http://127.0.0.1:9/hook"}),
            metadata: None,
            created_at: chrono::Utc::now(),
        };
        Accepting {
            record: EventRecord::accepted(&event),
            key: None,
        }
    }

    #[tokio::test]
    async fn a_critical_event_is_recorded_while_default_batches_are_stuck() {
        // Default-lane batches wait until released, as under a flood on a busy store.
        let (release, released) = watch::channel(false);
        let stuck = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&stuck);
        let recorders = Recorders::spawn(move |batch: Vec<Accepting>| {
            let mut released = released.clone();
            let counted = Arc::clone(&counted);
            async move {
                if batch.iter().any(|a| a.record.priority == Priority::Default) {
                    counted.fetch_add(1, Ordering::SeqCst);
                    let _ = released.wait_for(|open| *open).await;
                }
                batch.iter().map(|_| Ok(Inserted::New)).collect()
            }
        });
        let default_call = || {
            let recorders = recorders.clone();
            tokio::spawn(async move {
                recorders
                    .for_priority(Priority::Default)
                    .call(accepting(Priority::Default))
                    .await
            })
        };
        // Default requests until every batch the batcher may run at once is stuck, then more, which queue.
        let mut flood = Vec::new();
        while stuck.load(Ordering::SeqCst) < RECORD_BATCHES.max_in_flight {
            assert!(flood.len() < 100, "the default batches never ran");
            flood.push(default_call());
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
        }
        flood.extend((0..3).map(|_| default_call()));
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        let critical = tokio::time::timeout(
            Duration::from_secs(10),
            recorders
                .for_priority(Priority::Critical)
                .call(accepting(Priority::Critical)),
        )
        .await
        .expect("the critical event is recorded while the default lane's batches are stuck")
        .expect("the batcher runs");
        assert!(matches!(critical, Ok(Inserted::New)), "{critical:?}");
        assert!(flood.iter().all(|task| !task.is_finished()));
        release.send_replace(true);
        for task in flood {
            let answer = tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("the default lane's events are recorded once released")
                .expect("the task ran");
            assert!(matches!(answer, Ok(Ok(Inserted::New))), "{answer:?}");
        }
    }
}
