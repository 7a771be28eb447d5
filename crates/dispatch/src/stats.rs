//! Counters of what a dispatcher did: kept here for tests and the in-flight bound, and recorded through the
//! `metrics` facade for `/metrics` (`herald_dispatch_<name>_total{lane}`, and the gauges of the partitions).

use std::sync::atomic::{AtomicU64, Ordering};

use herald_domain::Lane;

/// What one dispatcher process has done since it started.
#[derive(Debug)]
pub struct Stats {
    lane: Lane,
    queue_depth: u64,
    concurrency: u64,
    assigned_partitions: AtomicU64,
    delivered: AtomicU64,
    failed: AtomicU64,
    recorded: AtomicU64,
    skipped: AtomicU64,
    follow_ups: AtomicU64,
    dead_lettered: AtomicU64,
    transient_errors: AtomicU64,
}

/// One counter, as named in `/metrics` (`herald_dispatch_<name>_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// Attempts a provider accepted.
    Delivered,
    /// Attempts that failed and were handed to the retry scheduler.
    Failed,
    /// Record-only events marked RECORDED.
    Recorded,
    /// Messages with nothing left to do (terminal, stale, redelivered).
    Skipped,
    /// Retry requests republished for an attempt recorded before a crash.
    FollowUps,
    /// Undecodable messages moved to the dead-letter topic.
    DeadLettered,
    /// MongoDB or Kafka errors that were retried.
    TransientErrors,
}

impl Counter {
    const ALL: [Counter; 7] = [
        Counter::Delivered,
        Counter::Failed,
        Counter::Recorded,
        Counter::Skipped,
        Counter::FollowUps,
        Counter::DeadLettered,
        Counter::TransientErrors,
    ];

    fn name(self) -> &'static str {
        match self {
            Counter::Delivered => "delivered",
            Counter::Failed => "failed",
            Counter::Recorded => "recorded",
            Counter::Skipped => "skipped",
            Counter::FollowUps => "follow_ups",
            Counter::DeadLettered => "dead_lettered",
            Counter::TransientErrors => "transient_errors",
        }
    }
}

impl Stats {
    pub fn new(lane: Lane, queue_depth: usize, concurrency: usize) -> Self {
        // Every counter shows on /metrics from the start, at 0, so rates and alerts have a series to work on.
        for counter in Counter::ALL {
            metrics::counter!(format!("herald_dispatch_{}_total", counter.name()), "lane" => lane.as_str())
                .increment(0);
        }
        Self {
            lane,
            queue_depth: queue_depth as u64,
            concurrency: concurrency as u64,
            assigned_partitions: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            recorded: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            follow_ups: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            transient_errors: AtomicU64::new(0),
        }
    }

    fn cell(&self, counter: Counter) -> &AtomicU64 {
        match counter {
            Counter::Delivered => &self.delivered,
            Counter::Failed => &self.failed,
            Counter::Recorded => &self.recorded,
            Counter::Skipped => &self.skipped,
            Counter::FollowUps => &self.follow_ups,
            Counter::DeadLettered => &self.dead_lettered,
            Counter::TransientErrors => &self.transient_errors,
        }
    }

    pub(crate) fn add(&self, counter: Counter) {
        self.cell(counter).fetch_add(1, Ordering::Relaxed);
        metrics::counter!(format!("herald_dispatch_{}_total", counter.name()), "lane" => self.lane.as_str())
            .increment(1);
    }

    pub fn get(&self, counter: Counter) -> u64 {
        self.cell(counter).load(Ordering::Relaxed)
    }

    pub(crate) fn set_assigned_partitions(&self, n_partitions: usize) {
        self.assigned_partitions
            .store(n_partitions as u64, Ordering::Relaxed);
        let lane = self.lane.as_str();
        metrics::gauge!("herald_dispatch_assigned_partitions", "lane" => lane)
            .set(n_partitions as f64);
        metrics::gauge!("herald_dispatch_queue_depth", "lane" => lane).set(self.queue_depth as f64);
        metrics::gauge!("herald_dispatch_in_flight_bound", "lane" => lane)
            .set(self.in_flight_bound() as f64);
    }

    /// Partitions of the lane topic this process holds now.
    pub fn assigned_partitions(&self) -> u64 {
        self.assigned_partitions.load(Ordering::Relaxed)
    }

    /// The most messages this process can hold at once: per assigned partition, `queue_depth` queued for its
    /// worker, `concurrency` in the worker's window and one held by the router while the partition is paused.
    pub fn in_flight_bound(&self) -> u64 {
        in_flight_bound(
            self.assigned_partitions(),
            self.queue_depth,
            self.concurrency,
        )
    }
}

/// `partitions × (queue_depth + concurrency + 1)`: see [`Stats::in_flight_bound`].
pub fn in_flight_bound(n_partitions: u64, queue_depth: u64, concurrency: u64) -> u64 {
    n_partitions * (queue_depth + concurrency + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_count_and_the_bound_follows_the_partitions() {
        let stats = Stats::new(Lane::Critical, 16, 8);
        stats.set_assigned_partitions(6);
        stats.add(Counter::Delivered);
        stats.add(Counter::Delivered);
        assert_eq!(stats.get(Counter::Delivered), 2);
        assert_eq!(stats.in_flight_bound(), 150);
    }
}
