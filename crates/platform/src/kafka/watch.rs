//! A consumer watches itself: after a broker outage librdkafka does not always rejoin its group (rust-rdkafka
//! issue 597), so every Herald consumer keeps a [`Watch`] of what it is assigned and when it last made progress,
//! and a periodic check decides when it is stuck; the consumer loop then drops its consumer and builds a fresh one.
//!
//! "Stuck" means, for at least [`WatchConfig::stall_after`] while the brokers answer a fresh metadata request:
//! the consumer received nothing and had no message in hand, and at least one of the partitions it is responsible
//! for (those it is assigned, or every partition of its topics when it has none) has been behind (committed offset
//! below the end) without its committed offset moving. Each partition is judged on its own: a member that lost its
//! assignment while the group still holds partitions for it must not take a peer's progress on other partitions
//! for its own. Partitions the consumer has *parked* on purpose (a delay tier paused on a head that is not due)
//! are left out. So a lane without traffic, a member whose peers keep their partitions moving and a delay tier
//! waiting for its head never count as stuck, and during an outage nothing is rebuilt (there is nothing to
//! rebuild towards); the stall clock starts again when the brokers come back. (An idle member of a group with
//! more members than partitions does rebuild while a peer's partition stalls; that costs a rebalance, no more.)
//!
//! [`Health`] collects the stuck consumers of a process for `/api/ready`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::{EnvReader, KafkaConfig};

/// How a consumer decides it is stuck.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchConfig {
    /// `HERALD_KAFKA_CONSUMER_STALL_MS`: how long a consumer may go without progress while its partitions are
    /// behind and the brokers answer before it rebuilds itself. Default 15000.
    pub stall_after: Duration,
    /// `HERALD_KAFKA_CONSUMER_CHECK_MS`: how often that is checked. Default 5000.
    pub check_every: Duration,
}

impl Default for WatchConfig {
    fn default() -> Self {
        Self {
            stall_after: Duration::from_secs(15),
            check_every: Duration::from_secs(5),
        }
    }
}

impl WatchConfig {
    /// Reads the two variables; a zero is a problem (a check every 0 ms would spin).
    pub fn read(env: &mut EnvReader) -> Self {
        let default = Self::default();
        let stall_after = env.millis("HERALD_KAFKA_CONSUMER_STALL_MS", default.stall_after);
        let check_every = env.millis("HERALD_KAFKA_CONSUMER_CHECK_MS", default.check_every);
        for (key, value) in [
            ("HERALD_KAFKA_CONSUMER_STALL_MS", stall_after),
            ("HERALD_KAFKA_CONSUMER_CHECK_MS", check_every),
        ] {
            if value.is_zero() {
                env.problem(key, "must be above 0");
            }
        }
        Self {
            stall_after,
            check_every,
        }
    }
}

/// The stuck consumers of one process, by name (their group), for `/api/ready`.
#[derive(Debug, Clone, Default)]
pub struct Health(Arc<Mutex<BTreeMap<String, String>>>);

impl Health {
    /// Each stuck (or rebuilding) consumer with why.
    pub fn problems(&self) -> Vec<(String, String)> {
        lock(&self.0)
            .iter()
            .map(|(name, why)| (name.clone(), why.clone()))
            .collect()
    }

    fn set(&self, name: &str, problem: Option<String>) {
        let mut problems = lock(&self.0);
        match problem {
            Some(why) => problems.insert(name.to_owned(), why),
            None => problems.remove(name),
        };
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind; go on with it.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

type Key = (String, i32);

#[derive(Debug)]
struct State {
    assigned: HashSet<Key>,
    parked: HashSet<Key>,
    /// Last time anything moved: a message received, a committed offset advanced, nothing behind, the brokers
    /// back, a fresh consumer.
    last_progress: Instant,
    /// Per checked partition: its committed offset at the last check, and since when it has been behind
    /// without that offset moving (the time of the check that saw it move or caught up, otherwise).
    partitions: HashMap<Key, (i64, Instant)>,
    brokers_up: bool,
    /// A stuck verdict was given and the consumer loop has not rebuilt yet: no second verdict meanwhile.
    stuck: bool,
    /// Reported not-ready in [`Health`] (stuck, or rebuilt and not yet progressing).
    marked: bool,
}

/// What one consumer is assigned and when it last made progress; see the module documentation.
#[derive(Debug)]
pub struct Watch {
    group: String,
    topics: Vec<String>,
    state: Mutex<State>,
    signal: Notify,
    health: Health,
    /// Messages being handled now: a consumer busy with a message (MongoDB away, a slow receiver) is not stuck.
    in_hand: AtomicUsize,
}

/// A message in hand; see [`Watch::handling`].
#[derive(Debug)]
pub struct Handling<'a>(&'a Watch);

impl Drop for Handling<'_> {
    fn drop(&mut self) {
        self.0.in_hand.fetch_sub(1, Ordering::Relaxed);
        self.0.progressed();
    }
}

impl Watch {
    /// The watch of the consumer of `group` on `topics`, reporting to `health`.
    pub fn new(group: impl Into<String>, topics: Vec<String>, health: &Health) -> Arc<Self> {
        Arc::new(Self {
            group: group.into(),
            topics,
            state: Mutex::new(State {
                assigned: HashSet::new(),
                parked: HashSet::new(),
                last_progress: Instant::now(),
                partitions: HashMap::new(),
                brokers_up: true,
                stuck: false,
                marked: false,
            }),
            signal: Notify::new(),
            health: health.clone(),
            in_hand: AtomicUsize::new(0),
        })
    }

    /// The consumer group this watches.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The topics the consumer subscribes to.
    pub fn topics(&self) -> &[String] {
        &self.topics
    }

    /// Partitions added to the assignment (cooperative rebalancing adds and removes increments).
    pub fn assigned(&self, list: &TopicPartitionList) {
        let mut state = lock(&self.state);
        state.assigned.extend(keys(list));
        state.last_progress = Instant::now();
    }

    /// Partitions taken away; a parked one is no longer parked.
    pub fn revoked(&self, list: &TopicPartitionList) {
        let mut state = lock(&self.state);
        for key in keys(list) {
            state.assigned.remove(&key);
            state.parked.remove(&key);
        }
    }

    /// A message was received (or other work was done): the consumer is alive.
    pub fn progressed(&self) {
        let mut state = lock(&self.state);
        state.last_progress = Instant::now();
        self.unmark(&mut state);
    }

    fn unmark(&self, state: &mut State) {
        if state.marked {
            state.marked = false;
            self.health.set(&self.group, None);
        }
    }

    /// Marks a message in hand until the guard is dropped: meanwhile the consumer is not judged stuck (its work,
    /// not its consumer, is what waits), and finishing counts as progress.
    pub fn handling(&self) -> Handling<'_> {
        self.in_hand.fetch_add(1, Ordering::Relaxed);
        Handling(self)
    }

    /// `partition` is paused on purpose (a head not due yet): its lag does not count.
    pub fn park(&self, topic: &str, partition: i32) {
        lock(&self.state)
            .parked
            .insert((topic.to_owned(), partition));
    }

    /// `partition` consumes again.
    pub fn unpark(&self, topic: &str, partition: i32) {
        lock(&self.state)
            .parked
            .remove(&(topic.to_owned(), partition));
    }

    /// Resolves when a check found the consumer stuck, with why.
    pub async fn stuck(&self) {
        self.signal.notified().await;
    }

    /// The consumer loop replaced its consumer after [`Watch::stuck`]: counts the recovery, forgets the old
    /// assignment and gives the new consumer a full stall period. Stays not-ready until the new one progresses.
    pub fn rebuilding(&self, why: &str) {
        tracing::warn!(group = %self.group, why, "kafka consumer stuck; rebuilding it");
        metrics::counter!("herald_kafka_consumer_recoveries_total", "group" => self.group.clone())
            .increment(1);
        let mut state = lock(&self.state);
        state.assigned.clear();
        state.parked.clear();
        state.partitions.clear();
        state.last_progress = Instant::now();
        state.stuck = false;
        state.marked = true;
        self.health
            .set(&self.group, Some(format!("rebuilding after: {why}")));
    }

    /// The reason of the last stuck verdict, if the consumer is still marked stuck.
    pub fn problem(&self) -> Option<String> {
        self.health
            .problems()
            .into_iter()
            .find(|(name, _)| *name == self.group)
            .map(|(_, why)| why)
    }

    /// Checks every `config.check_every` until `shutdown`; on a stuck verdict wakes [`Watch::stuck`].
    pub fn spawn_checks(
        self: &Arc<Self>,
        kafka: KafkaConfig,
        config: WatchConfig,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let watch = Arc::clone(self);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(config.check_every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = ticks.tick() => {}
                }
                let scope = watch.scope();
                let probed = probe(
                    &kafka,
                    &watch.group,
                    &watch.topics,
                    scope,
                    config.check_every,
                )
                .await;
                if let Some(why) = watch.judge(probed, config.stall_after) {
                    tracing::warn!(group = %watch.group, why, "kafka consumer stuck");
                    watch.signal.notify_one();
                }
            }
        })
    }

    /// What the check looks at: the assigned partitions, or every partition of the topics when none; without
    /// the parked ones.
    fn scope(&self) -> Scope {
        let state = lock(&self.state);
        Scope {
            assigned: state.assigned.iter().cloned().collect(),
            parked: state.parked.clone(),
        }
    }

    /// Updates the state with one probe; `Some(why)` when the consumer is stuck (once per stall).
    fn judge(&self, probed: Result<Probed, super::Error>, stall_after: Duration) -> Option<String> {
        let mut state = lock(&self.state);
        let now = Instant::now();
        let probed = match probed {
            Ok(probed) => probed,
            Err(e) => {
                tracing::debug!(group = %self.group, error = %e, "consumer check: brokers do not answer");
                state.brokers_up = false;
                return None;
            }
        };
        if !state.brokers_up {
            // Back from an outage: give the client a full stall period to rejoin on its own.
            state.brokers_up = true;
            state.last_progress = now;
        }
        // Per partition, not summed: a member that lost its assignment must not take a peer's progress on other
        // partitions for its own (seen in the chaos run: `partitions=[]` while the group kept its partitions).
        let mut seen = HashMap::with_capacity(probed.partitions.len());
        let (mut stalled_lag, mut n_stalled) = (0i64, 0usize);
        for (key, committed, lag) in probed.partitions {
            let since = match state.partitions.get(&key) {
                Some((before, since)) if *before == committed && lag > 0 => *since,
                _ => now,
            };
            if lag > 0 && now.duration_since(since) >= stall_after {
                stalled_lag += lag;
                n_stalled += 1;
            }
            seen.insert(key, (committed, since));
        }
        state.partitions = seen;
        let busy = self.in_hand.load(Ordering::Relaxed) > 0;
        if busy {
            state.last_progress = now;
        }
        if n_stalled == 0 || busy {
            self.unmark(&mut state);
            return None;
        }
        let stalled = now.duration_since(state.last_progress);
        if stalled < stall_after || state.stuck {
            return None;
        }
        let why = format!(
            "nothing received for {} s while {} messages wait on {} of its {} partitions ({} assigned)",
            stalled.as_secs(),
            stalled_lag,
            n_stalled,
            probed.n_partitions,
            state.assigned.len()
        );
        state.stuck = true;
        state.marked = true;
        self.health.set(&self.group, Some(why.clone()));
        Some(why)
    }
}

fn keys(list: &TopicPartitionList) -> impl Iterator<Item = Key> + '_ {
    list.elements()
        .into_iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
}

#[derive(Debug)]
struct Scope {
    assigned: Vec<Key>,
    parked: HashSet<Key>,
}

#[derive(Debug)]
struct Probed {
    /// Each checked partition with the group's committed offset and how far behind its end that is.
    partitions: Vec<(Key, i64, i64)>,
    n_partitions: usize,
}

/// One check, on a fresh client (the consumer's own may be the broken part): metadata (the brokers answer),
/// the group's committed offsets and the partitions' ends. On a blocking thread, bounded.
async fn probe(
    kafka: &KafkaConfig,
    group: &str,
    topics: &[String],
    scope: Scope,
    timeout: Duration,
) -> Result<Probed, super::Error> {
    let mut client = super::client_config(kafka);
    client
        .set("group.id", group)
        .set("enable.auto.commit", "false");
    let topics = topics.to_vec();
    let task = tokio::task::spawn_blocking(move || -> Result<Probed, super::Error> {
        let probe: BaseConsumer = client.create()?;
        let metadata = probe.fetch_metadata(None, timeout)?;
        let mut keys: Vec<Key> = if scope.assigned.is_empty() {
            metadata
                .topics()
                .iter()
                .filter(|t| topics.iter().any(|name| name == t.name()))
                .flat_map(|t| t.partitions().iter().map(|p| (t.name().to_owned(), p.id())))
                .collect()
        } else {
            scope.assigned
        };
        keys.retain(|key| !scope.parked.contains(key));
        keys.sort();
        let mut list = TopicPartitionList::new();
        for (topic, partition) in &keys {
            list.add_partition(topic, *partition);
        }
        let committed = probe.committed_offsets(list, timeout)?;
        let mut partitions = Vec::with_capacity(keys.len());
        for (topic, partition) in &keys {
            let (low, high) = probe.fetch_watermarks(topic, *partition, timeout)?;
            let at = match committed
                .find_partition(topic, *partition)
                .map(|e| e.offset())
            {
                Some(Offset::Offset(n)) => n,
                _ => low,
            };
            partitions.push(((topic.clone(), *partition), at, (high - at).max(0)));
        }
        let n_partitions = keys.len();
        drop(probe);
        Ok(Probed {
            partitions,
            n_partitions,
        })
    });
    // A probe whose client hangs past its own timeouts is abandoned on its thread, not awaited.
    match tokio::time::timeout(timeout * 4, task).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) | Err(_) => Err(super::Error::Timeout(timeout * 4)),
    }
}

/// The context of a consumer with nothing else to follow: keeps its [`Watch`] told of rebalances and records the
/// lag metric.
#[derive(Debug)]
pub struct WatchedContext {
    watch: Arc<Watch>,
}

impl WatchedContext {
    pub fn new(watch: Arc<Watch>) -> Self {
        Self { watch }
    }
}

impl ClientContext for WatchedContext {
    fn stats(&self, statistics: rdkafka::Statistics) {
        super::record_consumer_lag(&statistics, self.watch.group());
    }
}

impl ConsumerContext for WatchedContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(list) => self.watch.revoked(list),
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance failed"),
            Rebalance::Assign(_) => {}
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            self.watch.assigned(list);
        }
    }
}

/// A consumer in `group` subscribed to `topics`, watched by `watch`: build it again with this after
/// [`Watch::stuck`].
pub fn build_watched(
    kafka: &KafkaConfig,
    watch: &Arc<Watch>,
) -> super::Result<StreamConsumer<WatchedContext>> {
    let consumer = super::build_consumer_with_context(
        kafka,
        watch.group(),
        WatchedContext::new(Arc::clone(watch)),
    )?;
    let topics: Vec<&str> = watch.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    Ok(consumer)
}

/// Drops `consumer` (leaving its group, committing what it stored) on a thread of its own, not awaited: with
/// brokers in a bad state librdkafka's close can hang, and a hung close must neither block a runtime worker nor
/// keep the process from exiting.
pub fn close_detached<T: Send + 'static>(consumer: T) {
    let spawned = std::thread::Builder::new()
        .name("kafka-close".into())
        .spawn(move || drop(consumer));
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start a thread to close a consumer");
    }
}

/// A consumer of a [`Watch`]'s topics that replaces itself when the watch finds it stuck: the loop every
/// one-message-at-a-time consumer (herald-retry's requests, herald-alert's status topic) would otherwise write
/// again. Messages come detached, so a rebuild never waits on a borrow of the consumer it replaces.
pub struct WatchedConsumer {
    kafka: KafkaConfig,
    watch: Arc<Watch>,
    consumer: StreamConsumer<WatchedContext>,
    /// What it consumes, for logs (`retry requests`, `status topic`).
    what: &'static str,
}

impl std::fmt::Debug for WatchedConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchedConsumer")
            .field("group", &self.watch.group())
            .field("what", &self.what)
            .finish_non_exhaustive()
    }
}

impl WatchedConsumer {
    /// A consumer of `watch`'s group, subscribed to its topics.
    pub fn subscribe(
        kafka: &KafkaConfig,
        watch: &Arc<Watch>,
        what: &'static str,
    ) -> super::Result<Self> {
        Ok(Self {
            kafka: kafka.clone(),
            watch: Arc::clone(watch),
            consumer: build_watched(kafka, watch)?,
            what,
        })
    }

    /// The watch, to mark a message in hand ([`Watch::handling`]).
    pub fn watch(&self) -> &Watch {
        &self.watch
    }

    /// The next message, or `None` once `shutdown` is cancelled. A consumer error is logged and waited past; a
    /// consumer the watch finds stuck is closed on a thread of its own and a fresh one subscribed (unstored
    /// offsets come again).
    pub async fn next(
        &mut self,
        shutdown: &CancellationToken,
    ) -> super::Result<Option<rdkafka::message::OwnedMessage>> {
        loop {
            let received = tokio::select! {
                _ = shutdown.cancelled() => return Ok(None),
                _ = self.watch.stuck() => None,
                received = self.consumer.recv() => Some(received.map(|m| m.detach())),
            };
            match received {
                None => {
                    self.watch
                        .rebuilding(&self.watch.problem().unwrap_or_default());
                    let fresh = build_watched(&self.kafka, &self.watch)?;
                    close_detached(std::mem::replace(&mut self.consumer, fresh));
                }
                Some(Ok(message)) => {
                    self.watch.progressed();
                    return Ok(Some(message));
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, what = self.what, "kafka consumer error")
                }
            }
        }
    }

    /// Marks `message` processed (see [`super::store_offset`]); a revoked partition's offset is not stored, and
    /// its next owner handles the message again.
    pub fn store_offset(&self, message: &impl rdkafka::Message) {
        if let Err(e) = super::store_offset(&self.consumer, message) {
            tracing::warn!(error = %e, what = self.what, "storing an offset failed (partition revoked?)");
        }
    }

    /// Commits what was stored and leaves the group ([`super::commit_and_close`]).
    pub async fn commit_and_close(self) -> super::Result<()> {
        super::commit_and_close(self.consumer).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probed(lag: i64, committed: i64) -> Result<Probed, super::super::Error> {
        Ok(Probed {
            partitions: vec![(("t".into(), 0), committed, lag)],
            n_partitions: 1,
        })
    }

    /// Moves every clock of the watch `by` into the past, as if that much time had gone by since.
    fn aged(watch: &Watch, by: Duration) {
        let back = |at: Instant| at.checked_sub(by).unwrap_or(at);
        let mut state = lock(&watch.state);
        state.last_progress = back(state.last_progress);
        for (_, since) in state.partitions.values_mut() {
            *since = back(*since);
        }
    }

    fn probed_many(partitions: &[(i32, i64, i64)]) -> Result<Probed, super::super::Error> {
        Ok(Probed {
            partitions: partitions
                .iter()
                .map(|(p, committed, lag)| (("t".into(), *p), *committed, *lag))
                .collect(),
            n_partitions: partitions.len(),
        })
    }

    #[test]
    fn a_member_without_partitions_is_stuck_when_one_partition_stalls_while_others_move() {
        // The chaos run's stall: `partitions=[]` on one dispatcher while the group kept partitions 0, 2 and 4 for
        // it and its peer went on with 1, 3 and 5. Summed, the peer's commits looked like progress.
        let watch = Watch::new("g", vec!["t".into()], &Health::default());
        let stall = Duration::from_secs(15);
        assert!(watch
            .judge(probed_many(&[(0, 10, 5), (1, 10, 5)]), stall)
            .is_none());
        aged(&watch, Duration::from_secs(16));
        let why = watch.judge(probed_many(&[(0, 10, 5), (1, 20, 5)]), stall);
        assert!(
            why.as_deref().is_some_and(|w| w.contains("1 of its 2")),
            "{why:?}"
        );
    }

    #[test]
    fn lag_that_does_not_shrink_for_the_stall_period_is_stuck_once() {
        let watch = Watch::new("g", vec!["t".into()], &Health::default());
        let stall = Duration::from_secs(15);
        assert!(watch.judge(probed(5, 10), stall).is_none(), "first look");
        aged(&watch, Duration::from_secs(16));
        assert!(watch.judge(probed(5, 10), stall).is_some());
        assert_eq!(watch.health.problems().len(), 1);
        aged(&watch, Duration::from_secs(30));
        assert!(watch.judge(probed(5, 10), stall).is_none(), "reported once");
        watch.progressed();
        assert!(watch.health.problems().is_empty());
    }

    #[test]
    fn a_consumer_with_a_message_in_hand_is_not_stuck() {
        let watch = Watch::new("g", vec!["t".into()], &Health::default());
        let stall = Duration::from_secs(15);
        assert!(watch.judge(probed(5, 10), stall).is_none());
        let busy = watch.handling();
        aged(&watch, Duration::from_secs(60));
        assert!(watch.judge(probed(5, 10), stall).is_none(), "busy");
        drop(busy);
        aged(&watch, Duration::from_secs(60));
        assert!(
            watch.judge(probed(5, 10), stall).is_some(),
            "idle and behind"
        );
    }

    #[test]
    fn no_lag_moving_offsets_and_outages_are_not_stuck() {
        let watch = Watch::new("g", vec!["t".into()], &Health::default());
        let stall = Duration::from_secs(15);
        aged(&watch, Duration::from_secs(60));
        assert!(
            watch.judge(probed(0, 10), stall).is_none(),
            "nothing behind"
        );
        aged(&watch, Duration::from_secs(60));
        assert!(watch.judge(probed(5, 11), stall).is_none(), "offsets moved");
        aged(&watch, Duration::from_secs(60));
        assert!(watch
            .judge(Err(super::super::Error::Timeout(stall)), stall)
            .is_none());
        assert!(
            watch.judge(probed(5, 11), stall).is_none(),
            "brokers just came back"
        );
    }
}
