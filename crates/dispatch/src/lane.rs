//! Consuming one lane: a router reads the lane topic and hands each message to the worker of its partition, a
//! task per assigned partition that keeps up to `HERALD_DISPATCH_CONCURRENCY` messages in hand at once: messages
//! of one key (the event's partition key, its user) one after the other, in partition order, and messages of
//! different keys in parallel (the pattern of Confluent's Parallel Consumer). So one user's events keep their
//! order, while one slow receiver or a few store round trips per event no longer set the pace of a partition.
//!
//! In-flight bound. Each worker has a queue of `HERALD_DISPATCH_QUEUE_DEPTH` messages. When a queue is full the
//! router keeps the one message it holds, pauses that partition (librdkafka drops what it had prefetched for it
//! and fetches again from there on resume) and goes on with the others, so a slow receiver on one partition does
//! not hold up the rest. At most `assigned partitions × (depth + concurrency + 1)` messages are therefore in
//! flight: `depth` queued, `concurrency` in the worker's window (in hand, or waiting behind a message of their
//! key) and one held, per partition (6 × 25 = 150 by default). `/metrics` reports it as
//! `herald_dispatch_in_flight_bound`, and it is logged at every rebalance.
//!
//! Offsets. A worker stores a message's offset only after [`Handler::handle`] says its work is durable and every
//! earlier message of the partition is done too (the low watermark of the window), so offsets are stored in
//! order, without gaps, and librdkafka commits them in the background. When a partition is revoked its worker
//! lets the messages in hand finish and stops; what it had not finished comes again to the partition's next
//! owner, whose claims make the repeat harmless.
//!
//! A panic while handling a message is caught in its worker: the message goes to the dead-letter topic with the
//! panic's message as its reason, its offset is stored, and the worker goes on with the messages queued behind
//! it. It is not handled again, so a message that panics every time cannot loop.
//!
//! Recovery. The router's consumer is watched (`herald_platform::kafka::watch`); when the watch finds it stuck,
//! the router stops every worker (each finishes the message in hand), closes the consumer on a thread of its own
//! and subscribes a fresh one. What was queued or held was not stored, so it comes again to the new consumer.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use futures::FutureExt;
use herald_platform::kafka::watch::{self, Watch};
use herald_platform::{kafka, KafkaConfig};

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

/// The consumer context: tells the router and the consumer's watch about every rebalance.
#[derive(Debug)]
pub struct LaneContext {
    rebalances: mpsc::UnboundedSender<Rebalanced>,
    /// The watch of this consumer (its group names the lag metric).
    watch: Arc<Watch>,
}

impl LaneContext {
    pub fn new(watch: Arc<Watch>) -> (Self, mpsc::UnboundedReceiver<Rebalanced>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Self {
                rebalances: tx,
                watch,
            },
            rx,
        )
    }
}

/// A lane consumer in the group of `watch`, subscribed to `topic`.
pub fn subscribe(
    kafka_config: &KafkaConfig,
    watch: &Arc<Watch>,
    topic: &str,
) -> kafka::Result<(Arc<LaneConsumer>, mpsc::UnboundedReceiver<Rebalanced>)> {
    let (context, rebalances) = LaneContext::new(Arc::clone(watch));
    let consumer = kafka::build_consumer_with_context(kafka_config, watch.group(), context)?;
    consumer.subscribe(&[topic])?;
    Ok((Arc::new(consumer), rebalances))
}

fn partitions(list: &TopicPartitionList) -> Vec<i32> {
    list.elements().iter().map(|e| e.partition()).collect()
}

impl ClientContext for LaneContext {
    /// rdkafka's statistics, every 5 s: the lag of each partition of the lane this dispatcher holds.
    fn stats(&self, statistics: rdkafka::Statistics) {
        herald_platform::kafka::record_consumer_lag(&statistics, self.watch.group());
    }
}

impl ConsumerContext for LaneContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(list) => {
                self.watch.revoked(list);
                let _ = self.rebalances.send(Rebalanced::Revoked(partitions(list)));
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance failed"),
            Rebalance::Assign(_) => {}
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            self.watch.assigned(list);
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
    /// For building a fresh consumer when the watch finds this one stuck.
    kafka: KafkaConfig,
    watch: Arc<Watch>,
    rebalances: mpsc::UnboundedReceiver<Rebalanced>,
    handler: Arc<Handler>,
    stats: Arc<Stats>,
    topic: String,
    queue_depth: usize,
    /// Most messages each partition's worker has in hand at once.
    concurrency: usize,
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
    /// Subscribes a consumer of the group of `watch` to `topic`.
    pub fn build(
        kafka_config: KafkaConfig,
        watch: Arc<Watch>,
        handler: Arc<Handler>,
        stats: Arc<Stats>,
        topic: String,
        queue_depth: usize,
        concurrency: usize,
    ) -> kafka::Result<Self> {
        let (consumer, rebalances) = subscribe(&kafka_config, &watch, &topic)?;
        Ok(Self {
            consumer,
            kafka: kafka_config,
            watch,
            rebalances,
            handler,
            stats,
            topic,
            queue_depth,
            concurrency,
            assigned: HashSet::new(),
            partitions: HashMap::new(),
            retiring: Vec::new(),
            space: Arc::new(Notify::new()),
        })
    }

    /// Routes messages until `shutdown`, then lets every worker finish the message in hand, and commits.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut recv_backoff = Duration::from_millis(100);
        loop {
            let holding = self.partitions.values().any(|p| !p.held.is_empty());
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = self.watch.stuck() => self.rebuild().await,
                Some(change) = self.rebalances.recv() => self.rebalanced(change, &shutdown),
                _ = self.space.notified(), if holding => self.release_held(&shutdown),
                received = self.consumer.recv() => match received {
                    Ok(message) => {
                        recv_backoff = Duration::from_millis(100);
                        self.watch.progressed();
                        self.route(message.detach(), &shutdown);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "kafka consumer error");
                        tokio::select! {
                            _ = shutdown.cancelled() => break,
                            // A stuck consumer reports errors too (AllBrokersDown): rebuild without waiting.
                            _ = self.watch.stuck() => self.rebuild().await,
                            _ = tokio::time::sleep(recv_backoff) => {}
                        }
                        recv_backoff = (recv_backoff * 2).min(Duration::from_secs(5));
                    }
                },
            }
        }
        self.drain().await;
    }

    /// Replaces a stuck consumer: every worker finishes the message in hand and stops, the old consumer is
    /// closed on a thread of its own (its close can hang), and a fresh one subscribes. Nothing queued or held
    /// was stored, so the new consumer reads it again.
    async fn rebuild(&mut self) {
        let why = self.watch.problem().unwrap_or_default();
        self.watch.rebuilding(&why);
        let fresh = match subscribe(&self.kafka, &self.watch, &self.topic) {
            Ok(fresh) => fresh,
            Err(e) => {
                // The watch looks again after another stall period.
                tracing::error!(error = %e, "cannot build a fresh lane consumer; keeping the stuck one");
                return;
            }
        };
        let workers: Vec<JoinHandle<()>> = self
            .partitions
            .drain()
            .map(|(_, p)| {
                p.revoked.cancel();
                p.worker
            })
            .chain(self.retiring.drain(..))
            .collect();
        for worker in workers {
            if let Err(e) = worker.await {
                tracing::error!(error = %e, "a partition worker panicked");
            }
        }
        self.assigned.clear();
        self.stats.set_assigned_partitions(0);
        let (consumer, rebalances) = fresh;
        let stuck = std::mem::replace(&mut self.consumer, consumer);
        self.rebalances = rebalances;
        watch::close_detached(stuck);
        tracing::info!(topic = %self.topic, "fresh lane consumer subscribed");
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
                Arc::clone(&self.watch),
                self.concurrency,
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

/// What became of one message a worker handled.
enum Handled {
    /// Its work is durable (or it was dead-lettered): its offset may be stored once every earlier one may.
    Done,
    /// The partition was revoked or the process is stopping before the work was durable: not stored.
    Stopped,
}

/// A message in a worker's window, in the order the partition delivered it.
struct Slot {
    message: Arc<OwnedMessage>,
    done: bool,
}

/// The ordering key of a message: its Kafka key (the event's partition key, its user), or, without one, its
/// offset (a key of its own, so it waits for nothing).
fn ordering_key(message: &OwnedMessage) -> Vec<u8> {
    match message.key() {
        Some(key) => key.to_vec(),
        None => message.offset().to_be_bytes().to_vec(),
    }
}

/// A partition's worker: up to `concurrency` messages in hand at once, messages of one key (one user) one after
/// the other in partition order, messages of different keys in parallel. A message's offset is stored once it
/// and every message before it in the partition are done (the low watermark), so nothing unfinished is ever
/// committed. A message whose handling panics is dead-lettered instead (see the module documentation).
///
/// When the partition is revoked it takes no more messages, lets those in hand finish (the handler gives up its
/// waits on the same token), and stops; what it had not finished comes again to the partition's next owner.
async fn work(
    mut queue: mpsc::Receiver<OwnedMessage>,
    handler: Arc<Handler>,
    consumer: Arc<LaneConsumer>,
    revoked: CancellationToken,
    space: Arc<Notify>,
    watch: Arc<Watch>,
    concurrency: usize,
) {
    let mut window: VecDeque<Slot> = VecDeque::new();
    // The sequence number of `window`'s front; message `seq` is at `window[seq - first]`.
    let mut first: u64 = 0;
    let mut next_seq: u64 = 0;
    // Keys with a message in hand, and for each the messages (by sequence number) waiting behind it.
    let mut waiting: HashMap<Vec<u8>, VecDeque<u64>> = HashMap::new();
    let mut in_hand = FuturesUnordered::new();
    let mut stopping = false;
    loop {
        let room = !stopping && window.len() < concurrency;
        tokio::select! {
            biased;
            _ = revoked.cancelled(), if !stopping => stopping = true,
            Some((seq, handled)) = in_hand.next() => {
                let index = (seq - first) as usize;
                let key = ordering_key(&window[index].message);
                match handled {
                    Handled::Done => window[index].done = true,
                    Handled::Stopped => stopping = true,
                }
                // The next message of the same key, if one waits and the worker goes on.
                let next = waiting.get_mut(&key).and_then(VecDeque::pop_front);
                match next {
                    Some(next) if !stopping => {
                        let message = Arc::clone(&window[(next - first) as usize].message);
                        in_hand.push(handle(next, message, &handler, &revoked, &watch));
                    }
                    _ => {
                        waiting.remove(&key);
                    }
                }
                // The low watermark: store the offset of the last of the finished run at the front.
                let mut stored = None;
                while window.front().is_some_and(|slot| slot.done) {
                    stored = window.pop_front();
                    first += 1;
                }
                if let Some(slot) = stored {
                    store(&consumer, &slot.message);
                }
            }
            message = queue.recv(), if room => match message {
                Some(message) => {
                    space.notify_one();
                    let seq = next_seq;
                    next_seq += 1;
                    let message = Arc::new(message);
                    window.push_back(Slot { message: Arc::clone(&message), done: false });
                    match waiting.entry(ordering_key(&message)) {
                        Entry::Occupied(mut behind) => behind.get_mut().push_back(seq),
                        Entry::Vacant(free) => {
                            free.insert(VecDeque::new());
                            in_hand.push(handle(seq, message, &handler, &revoked, &watch));
                        }
                    }
                }
                None => stopping = true,
            },
        }
        if stopping && in_hand.is_empty() {
            break;
        }
    }
}

/// Handles one message (or dead-letters it if its handling panics), as message `seq` of its worker.
fn handle(
    seq: u64,
    message: Arc<OwnedMessage>,
    handler: &Arc<Handler>,
    revoked: &CancellationToken,
    watch: &Arc<Watch>,
) -> futures::future::BoxFuture<'static, (u64, Handled)> {
    let handler = Arc::clone(handler);
    let revoked = revoked.clone();
    let watch = Arc::clone(watch);
    Box::pin(async move {
        // A worker busy with a slow send or a MongoDB outage keeps the router from being judged stuck.
        let _handling = watch.handling();
        let handled = AssertUnwindSafe(async {
            #[cfg(debug_assertions)]
            test_hook::panic_if_asked(&message).await;
            handler.handle(&message, &revoked).await
        })
        .catch_unwind()
        .await;
        let handled = match handled {
            Ok(Ok(())) => Handled::Done,
            Ok(Err(_stopped)) => Handled::Stopped,
            Err(panic) => {
                let what = panic_message(panic.as_ref());
                drop(panic);
                if dead_letter_panicked(&handler, &message, &what, &revoked).await {
                    Handled::Done
                } else {
                    Handled::Stopped
                }
            }
        };
        (seq, handled)
    })
}

/// Stores `message`'s offset: it and everything before it in its partition is done.
fn store(consumer: &LaneConsumer, message: &OwnedMessage) {
    if let Err(e) = herald_platform::kafka::store_offset(consumer, message) {
        // The partition was revoked meanwhile: its next owner handles these messages again, and finds them done.
        tracing::debug!(
            partition = message.partition(),
            offset = message.offset(),
            error = %e,
            "offset not stored"
        );
    }
}

/// What a panic said.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// Sends a message whose handling panicked to the dead-letter topic, with the panic's message, trying again
/// (Kafka may be away) until it is sent or the partition is revoked. False means not sent: do not store.
async fn dead_letter_panicked(
    handler: &Handler,
    message: &OwnedMessage,
    what: &str,
    revoked: &CancellationToken,
) -> bool {
    let reason = format!("handling panicked: {what}");
    tracing::error!(
        partition = message.partition(),
        offset = message.offset(),
        reason,
        "a lane message made its handler panic; dead-lettering it"
    );
    let dead_letters = handler.topics.dead_letters();
    let mut backoff = Duration::from_millis(100);
    loop {
        match kafka::dead_letter_poison(&handler.producer, &dead_letters, message, &reason).await {
            Ok(()) => return true,
            Err(e) => {
                tracing::warn!(error = %e, "dead-lettering a panicking message failed; trying again");
                tokio::select! {
                    _ = revoked.cancelled() => return false,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Debug builds only (tests): a way to make a handler panic, since no real message does.
#[cfg(debug_assertions)]
pub mod test_hook {
    use rdkafka::message::{Message, OwnedMessage};

    /// A lane message whose payload contains this makes its worker panic, 300 ms after it took it (so the
    /// messages behind it are queued by then), instead of handling it.
    pub const PANIC_MARKER: &str = "herald-test-hook-panic";

    pub(super) async fn panic_if_asked(message: &OwnedMessage) {
        let payload = message.payload().unwrap_or_default();
        let marker = PANIC_MARKER.as_bytes();
        if payload.windows(marker.len()).any(|w| w == marker) {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            panic!("test hook: {PANIC_MARKER}");
        }
    }
}
