//! Counters of what a dispatcher did, served as Prometheus text on `/metrics` and read by tests.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use herald_domain::Lane;

/// What one dispatcher process has done since it started.
#[derive(Debug)]
pub struct Stats {
    lane: Lane,
    queue_depth: u64,
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
    pub fn new(lane: Lane, queue_depth: usize) -> Self {
        Self {
            lane,
            queue_depth: queue_depth as u64,
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
    }

    pub fn get(&self, counter: Counter) -> u64 {
        self.cell(counter).load(Ordering::Relaxed)
    }

    pub(crate) fn set_assigned_partitions(&self, n_partitions: usize) {
        self.assigned_partitions
            .store(n_partitions as u64, Ordering::Relaxed);
    }

    /// Partitions of the lane topic this process holds now.
    pub fn assigned_partitions(&self) -> u64 {
        self.assigned_partitions.load(Ordering::Relaxed)
    }

    /// The most messages this process can hold at once: per assigned partition, `queue_depth` queued for its
    /// worker, one being handled and one held by the router while the partition is paused.
    pub fn in_flight_bound(&self) -> u64 {
        in_flight_bound(self.assigned_partitions(), self.queue_depth)
    }

    /// The Prometheus text exposition of every counter and gauge.
    pub fn render(&self) -> String {
        let lane = self.lane.as_str();
        let mut out = String::new();
        for counter in Counter::ALL {
            let name = counter.name();
            let _ = writeln!(out, "# TYPE herald_dispatch_{name}_total counter");
            let _ = writeln!(
                out,
                "herald_dispatch_{name}_total{{lane=\"{lane}\"}} {}",
                self.get(counter)
            );
        }
        for (name, value) in [
            ("assigned_partitions", self.assigned_partitions()),
            ("queue_depth", self.queue_depth),
            ("in_flight_bound", self.in_flight_bound()),
        ] {
            let _ = writeln!(out, "# TYPE herald_dispatch_{name} gauge");
            let _ = writeln!(out, "herald_dispatch_{name}{{lane=\"{lane}\"}} {value}");
        }
        out
    }
}

/// `partitions × (queue_depth + 2)`: see [`Stats::in_flight_bound`].
pub fn in_flight_bound(n_partitions: u64, queue_depth: u64) -> u64 {
    n_partitions * (queue_depth + 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_show_counters_and_the_bound() {
        let stats = Stats::new(Lane::Critical, 16);
        stats.set_assigned_partitions(6);
        stats.add(Counter::Delivered);
        stats.add(Counter::Delivered);
        let text = stats.render();
        assert!(
            text.contains("herald_dispatch_delivered_total{lane=\"critical\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("herald_dispatch_in_flight_bound{lane=\"critical\"} 108"),
            "{text}"
        );
    }
}
