//! Gathers concurrent calls into batches: one store command for many events instead of one each.
//!
//! A [`Batcher`] runs one gathering task. It takes the first waiting call, waits for a free run slot (at most
//! `max_in_flight` batches run at once), and while it waits more calls queue up; then it takes every call that
//! is waiting, up to `max_batch`, and runs them as one batch. Under a light load a call runs alone and at once
//! (no timer adds latency); under a heavy one, batches grow with the load. Each caller gets its own answer.
//!
//! Nothing here is state a restart loses: a call is only in the batcher while its caller awaits it, and the
//! caller has acknowledged nothing yet.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Semaphore};

/// The gathering task is gone (only when the runtime is shutting down).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the {0} batcher has stopped")]
pub struct Stopped(pub &'static str);

type Call<Req, Resp> = (Req, oneshot::Sender<Resp>);

/// A handle to submit calls; cheap to clone.
pub struct Batcher<Req, Resp> {
    name: &'static str,
    calls: mpsc::UnboundedSender<Call<Req, Resp>>,
}

impl<Req, Resp> std::fmt::Debug for Batcher<Req, Resp> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher").field("name", &self.name).finish()
    }
}

impl<Req, Resp> Clone for Batcher<Req, Resp> {
    fn clone(&self) -> Self {
        Self {
            name: self.name,
            calls: self.calls.clone(),
        }
    }
}

/// How a batcher gathers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The most calls in one batch.
    pub max_batch: usize,
    /// The most batches running at once.
    pub max_in_flight: usize,
}

impl<Req, Resp> Batcher<Req, Resp>
where
    Req: Send + 'static,
    Resp: Send + 'static,
{
    /// Starts the gathering task on the current runtime. `run` gets the requests of one batch and answers each,
    /// in the same order (a missing answer leaves its caller with [`Stopped`]).
    pub fn spawn<F, Fut>(name: &'static str, limits: Limits, run: F) -> Self
    where
        F: Fn(Vec<Req>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<Resp>> + Send + 'static,
    {
        let (calls, receiver) = mpsc::unbounded_channel();
        tokio::spawn(gather(name, limits, receiver, run));
        Self { name, calls }
    }

    /// Submits one request and waits for its answer.
    pub async fn call(&self, request: Req) -> Result<Resp, Stopped> {
        let (answer, receiver) = oneshot::channel();
        self.calls
            .send((request, answer))
            .map_err(|_| Stopped(self.name))?;
        receiver.await.map_err(|_| Stopped(self.name))
    }
}

async fn gather<Req, Resp, F, Fut>(
    name: &'static str,
    limits: Limits,
    mut receiver: mpsc::UnboundedReceiver<Call<Req, Resp>>,
    run: F,
) where
    Req: Send + 'static,
    Resp: Send + 'static,
    F: Fn(Vec<Req>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Vec<Resp>> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(limits.max_in_flight.max(1)));
    let max_batch = limits.max_batch.max(1);
    while let Some(first) = receiver.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match receiver.try_recv() {
                Ok(call) => batch.push(call),
                Err(_) => break,
            }
        }
        metrics::histogram!("herald_batch_size", "batch" => name).record(batch.len() as f64);
        let (requests, answers): (Vec<Req>, Vec<oneshot::Sender<Resp>>) = batch.into_iter().unzip();
        let running = run(requests);
        tokio::spawn(async move {
            let responses = running.await;
            for (answer, response) in answers.into_iter().zip(responses) {
                // A caller that gave up (its request timed out) no longer listens; its work is done anyway.
                let _ = answer.send(response);
            }
            drop(slot);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn calls_waiting_for_a_slot_run_together_and_each_gets_its_own_answer() {
        let batches = Arc::new(AtomicUsize::new(0));
        let counted = batches.clone();
        let limits = Limits {
            max_batch: 100,
            max_in_flight: 1,
        };
        let batcher = Batcher::spawn("test", limits, move |requests: Vec<u32>| {
            counted.fetch_add(1, Ordering::SeqCst);
            async move {
                // Long enough for the other calls to queue behind the first batch.
                tokio::time::sleep(Duration::from_millis(50)).await;
                requests.into_iter().map(|n| n * 10).collect::<Vec<_>>()
            }
        });
        let calls: Vec<_> = (0..20u32).map(|n| batcher.call(n)).collect();
        let answers = futures::future::join_all(calls).await;
        let answers: Vec<u32> = answers.into_iter().map(|a| a.expect("answered")).collect();
        assert_eq!(answers, (0..20).map(|n| n * 10).collect::<Vec<_>>());
        let batches = batches.load(Ordering::SeqCst);
        assert!(
            (1..=2).contains(&batches),
            "20 concurrent calls behind one slot ran in {batches} batches"
        );
    }

    #[tokio::test]
    async fn a_batch_is_never_larger_than_its_limit() {
        let largest = Arc::new(AtomicUsize::new(0));
        let seen = largest.clone();
        let limits = Limits {
            max_batch: 4,
            max_in_flight: 2,
        };
        let batcher = Batcher::spawn("test", limits, move |requests: Vec<u32>| {
            seen.fetch_max(requests.len(), Ordering::SeqCst);
            async move { requests }
        });
        let calls: Vec<_> = (0..50u32).map(|n| batcher.call(n)).collect();
        let answers = futures::future::join_all(calls).await;
        assert!(answers.iter().all(Result::is_ok));
        assert!(largest.load(Ordering::SeqCst) <= 4);
    }
}
