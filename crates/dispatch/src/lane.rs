//! Consuming one lane: a router reads the lane topic and hands each message to the worker of its partition, a
//! sequential task per assigned partition, so one user's events keep their order while partitions go in
//! parallel.
//!
//! In-flight bound. Each worker has a queue of `HERALD_DISPATCH_QUEUE_DEPTH` messages. When a queue is full the
//! router keeps the one message it holds, pauses that partition (librdkafka drops what it had prefetched for it
//! and fetches again from there on resume) and goes on with the others, so a slow receiver on one partition does
//! not hold up the rest. At most `assigned partitions × (depth + 2)` messages are therefore in flight: `depth`
//! queued, one being handled and one held, per partition (6 × 18 = 108 by default). `/metrics` reports it as
//! `herald_dispatch_in_flight_bound`, and it is logged at every rebalance.
//!
//! Offsets. A worker stores a message's offset only after [`Handler::handle`] says its work is durable; a worker
//! handles its messages one after the other, so offsets are stored in order, without gaps, and librdkafka
//! commits them in the background. When a partition is revoked its worker finishes the message in hand and stops;
//! what it had queued comes again to the partition's next owner, whose claims make the repeat harmless.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{ClientContext, TopicPartitionList};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::handler::Handler;
use crate::stats::Stats;

/// A change of this consumer's assignment, passed from librdkafka's callback to the router.
#[derive(Debug)]
pub enum Rebalanced {
    Assigned(Vec<i32>),
    Revoked(Vec<i32>),
}

/// The consumer context: tells the router about every rebalance.
#[derive(Debug)]
pub struct LaneContext {
    rebalances: mpsc::UnboundedSender<Rebalanced>,
    /// The consumer group, for the lag metric.
    group: String,
}

impl LaneContext {
    pub fn new(group: String) -> (Self, mpsc::UnboundedReceiver<Rebalanced>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Self {
                rebalances: tx,
                group,
            },
            rx,
        )
    }
}

fn partitions(list: &TopicPartitionList) -> Vec<i32> {
    list.elements().iter().map(|e| e.partition()).collect()
}

impl ClientContext for LaneContext {
    /// rdkafka's statistics, every 5 s: the lag of each partition of the lane this dispatcher holds.
    fn stats(&self, statistics: rdkafka::Statistics) {
        herald_platform::kafka::record_consumer_lag(&statistics, &self.group);
    }
}

impl ConsumerContext for LaneContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(list) => {
                let _ = self.rebalances.send(Rebalanced::Revoked(partitions(list)));
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance failed"),
            Rebalance::Assign(_) => {}
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            let _ = self.rebalances.send(Rebalanced::Assigned(partitions(list)));
        }
    }
}

pub type LaneConsumer = StreamConsumer<LaneContext>;

/// One assigned partition, as the router sees it.
#[derive(Debug)]
struct Partition {
    queue: mpsc::Sender<OwnedMessage>,
    /// Cancelled when the partition is revoked (a child of the shutdown token).
    revoked: CancellationToken,
    worker: JoinHandle<()>,
    /// Messages received while the worker's queue was full; the partition is paused while this is not empty.
    held: VecDeque<OwnedMessage>,
}

/// The router of one lane consumer.
pub struct Router {
    consumer: Arc<LaneConsumer>,
    rebalances: mpsc::UnboundedReceiver<Rebalanced>,
    handler: Arc<Handler>,
    stats: Arc<Stats>,
    topic: String,
    queue_depth: usize,
    assigned: HashSet<i32>,
    partitions: HashMap<i32, Partition>,
    /// Workers of revoked partitions that may still be finishing their message.
    retiring: Vec<JoinHandle<()>>,
    /// Signalled by a worker each time it takes a message, so the router can move held messages along.
    space: Arc<Notify>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("topic", &self.topic)
            .field("assigned", &self.assigned)
            .finish_non_exhaustive()
    }
}

impl Router {
    pub fn new(
        consumer: Arc<LaneConsumer>,
        rebalances: mpsc::UnboundedReceiver<Rebalanced>,
        handler: Arc<Handler>,
        stats: Arc<Stats>,
        topic: String,
        queue_depth: usize,
    ) -> Self {
        Self {
            consumer,
            rebalances,
            handler,
            stats,
            topic,
            queue_depth,
            assigned: HashSet::new(),
            partitions: HashMap::new(),
            retiring: Vec::new(),
            space: Arc::new(Notify::new()),
        }
    }

    /// Routes messages until `shutdown`, then lets every worker finish the message in hand, and commits.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut recv_backoff = Duration::from_millis(100);
        loop {
            let holding = self.partitions.values().any(|p| !p.held.is_empty());
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some(change) = self.rebalances.recv() => self.rebalanced(change, &shutdown),
                _ = self.space.notified(), if holding => self.release_held(&shutdown),
                received = self.consumer.recv() => match received {
                    Ok(message) => {
                        recv_backoff = Duration::from_millis(100);
                        self.route(message.detach(), &shutdown);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "kafka consumer error");
                        tokio::select! {
                            _ = shutdown.cancelled() => break,
                            _ = tokio::time::sleep(recv_backoff) => {}
                        }
                        recv_backoff = (recv_backoff * 2).min(Duration::from_secs(5));
                    }
                },
            }
        }
        self.drain().await;
    }

    fn rebalanced(&mut self, change: Rebalanced, shutdown: &CancellationToken) {
        match change {
            Rebalanced::Assigned(list) => {
                self.assigned.extend(&list);
                for partition in &list {
                    self.worker(*partition, shutdown);
                }
            }
            Rebalanced::Revoked(list) => {
                for partition in &list {
                    self.assigned.remove(partition);
                    if let Some(gone) = self.partitions.remove(partition) {
                        gone.revoked.cancel();
                        if !gone.held.is_empty() {
                            // A paused partition could come back paused; what it held is fetched again anyway.
                            self.set_paused(*partition, false);
                        }
                        self.retiring.push(gone.worker);
                    }
                }
                self.retiring.retain(|worker| !worker.is_finished());
            }
        }
        self.stats.set_assigned_partitions(self.assigned.len());
        tracing::info!(
            partitions = ?sorted(&self.assigned),
            in_flight_bound = self.stats.in_flight_bound(),
            "assignment changed"
        );
    }

    /// The worker of `partition`, started if there is none (or if the last one ended).
    fn worker(&mut self, partition: i32, shutdown: &CancellationToken) -> &mut Partition {
        let alive = self
            .partitions
            .get(&partition)
            .is_some_and(|p| !p.queue.is_closed());
        if !alive {
            let (tx, rx) = mpsc::channel(self.queue_depth);
            let revoked = shutdown.child_token();
            let worker = tokio::spawn(work(
                rx,
                Arc::clone(&self.handler),
                Arc::clone(&self.consumer),
                revoked.clone(),
                Arc::clone(&self.space),
            ));
            self.partitions.insert(
                partition,
                Partition {
                    queue: tx,
                    revoked,
                    worker,
                    held: VecDeque::new(),
                },
            );
        }
        self.partitions
            .get_mut(&partition)
            .unwrap_or_else(|| unreachable!("inserted above"))
    }

    fn route(&mut self, message: OwnedMessage, shutdown: &CancellationToken) {
        let partition = message.partition();
        let entry = self.worker(partition, shutdown);
        if !entry.held.is_empty() {
            entry.held.push_back(message);
            return;
        }
        match entry.queue.try_send(message) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(message)) => {
                entry.held.push_back(message);
                self.set_paused(partition, true);
            }
            Err(mpsc::error::TrySendError::Closed(message)) => {
                // The worker ended (it panicked): start another, in order, from this message.
                tracing::error!(
                    partition,
                    "partition worker ended unexpectedly; restarting it"
                );
                let entry = self.worker(partition, shutdown);
                entry.held.push_back(message);
                self.release_held(shutdown);
            }
        }
    }

    /// Moves held messages into queues that have room, resuming partitions that hold nothing any more.
    fn release_held(&mut self, shutdown: &CancellationToken) {
        let mut resumed = Vec::new();
        let mut restart = Vec::new();
        for (partition, entry) in self
            .partitions
            .iter_mut()
            .filter(|(_, p)| !p.held.is_empty())
        {
            while let Some(message) = entry.held.pop_front() {
                match entry.queue.try_send(message) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(message)) => {
                        entry.held.push_front(message);
                        break;
                    }
                    Err(mpsc::error::TrySendError::Closed(message)) => {
                        entry.held.push_front(message);
                        restart.push(*partition);
                        break;
                    }
                }
            }
            if entry.held.is_empty() {
                resumed.push(*partition);
            }
        }
        for partition in resumed {
            self.set_paused(partition, false);
        }
        for partition in restart {
            let held = self
                .partitions
                .remove(&partition)
                .map(|p| p.held)
                .unwrap_or_default();
            self.worker(partition, shutdown).held = held;
            self.space.notify_one();
        }
    }

    fn set_paused(&self, partition: i32, paused: bool) {
        let mut list = TopicPartitionList::new();
        list.add_partition(&self.topic, partition);
        let result = if paused {
            self.consumer.pause(&list)
        } else {
            self.consumer.resume(&list)
        };
        match result {
            Ok(()) => tracing::debug!(partition, paused, "partition flow changed"),
            Err(e) => {
                tracing::warn!(partition, paused, error = %e, "cannot pause or resume a partition")
            }
        }
    }

    /// Shutdown: no new messages; each worker finishes the one in hand and stores its offset; then the stored
    /// offsets are committed synchronously.
    async fn drain(mut self) {
        let workers: Vec<JoinHandle<()>> = self
            .partitions
            .drain()
            .map(|(_, p)| p.worker)
            .chain(self.retiring.drain(..))
            .collect();
        tracing::info!(n_workers = workers.len(), "draining partition workers");
        for worker in workers {
            if let Err(e) = worker.await {
                tracing::error!(error = %e, "a partition worker panicked");
            }
        }
        let consumer = Arc::clone(&self.consumer);
        let committed =
            tokio::task::spawn_blocking(move || consumer.commit_consumer_state(CommitMode::Sync))
                .await;
        match committed {
            Ok(Ok(())) => tracing::info!("offsets committed"),
            Ok(Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset))) => {
                tracing::info!("no new offsets to commit")
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "final commit failed; the next owner repeats a few messages")
            }
            Err(e) => tracing::error!(error = %e, "final commit panicked"),
        }
    }
}

fn sorted(set: &HashSet<i32>) -> Vec<i32> {
    let mut list: Vec<i32> = set.iter().copied().collect();
    list.sort_unstable();
    list
}

/// A partition's worker: handles its messages one at a time and stores each offset once the work is durable.
async fn work(
    mut queue: mpsc::Receiver<OwnedMessage>,
    handler: Arc<Handler>,
    consumer: Arc<LaneConsumer>,
    revoked: CancellationToken,
    space: Arc<Notify>,
) {
    loop {
        let message = tokio::select! {
            biased;
            _ = revoked.cancelled() => break,
            message = queue.recv() => match message {
                Some(message) => message,
                None => break,
            },
        };
        space.notify_one();
        if handler.handle(&message, &revoked).await.is_err() {
            break;
        }
        if let Err(e) = herald_platform::kafka::store_offset(consumer.as_ref(), &message) {
            // The partition was revoked while the message was in hand: its next owner handles it again, and
            // finds it done.
            tracing::debug!(
                partition = message.partition(),
                offset = message.offset(),
                error = %e,
                "offset not stored"
            );
        }
    }
}
