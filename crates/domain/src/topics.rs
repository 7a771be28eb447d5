//! Herald's Kafka topics and their partition counts, defined once.
//!
//! `cargo xtask stack up`, the tests and the compose topic-init job all create topics from [`Topics::all`].
//! A prefix (`HERALD_TOPIC_PREFIX`) lets several Herald installations, or parallel tests, share one cluster.

use crate::event::Priority;

/// A topic to create: its full name and its partition count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
}

/// Default delay tiers of the retry scheduler, in seconds: 5 s, 30 s, 2 min, 10 min, 1 h.
pub const DEFAULT_DELAY_TIERS_SECS: &[u64] = &[5, 30, 120, 600, 3600];

/// Partitions of each lane topic: the most dispatchers one lane can use at once.
const LANE_PARTITIONS: i32 = 6;
/// Partitions of the internal topics (retry requests, delay tiers, status).
const INTERNAL_PARTITIONS: i32 = 3;

/// The names of Herald's topics under one prefix.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Topics {
    prefix: String,
}

/// A delivery lane, consumed by `herald-dispatch --lane <name>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lane {
    Critical,
    Default,
    Retry,
}

impl Lane {
    pub const ALL: &'static [Lane] = &[Lane::Critical, Lane::Default, Lane::Retry];

    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Critical => "critical",
            Lane::Default => "default",
            Lane::Retry => "retry",
        }
    }

    pub fn for_priority(priority: Priority) -> Self {
        match priority {
            Priority::Critical => Lane::Critical,
            Priority::Default => Lane::Default,
        }
    }
}

impl std::str::FromStr for Lane {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        Lane::ALL
            .iter()
            .copied()
            .find(|lane| lane.as_str().eq_ignore_ascii_case(raw))
            .ok_or_else(|| {
                format!("unknown lane '{raw}', expected one of: critical, default, retry")
            })
    }
}

impl Topics {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn name(&self, base: &str) -> String {
        format!("{}{}", self.prefix, base)
    }

    /// The lane topic dispatchers of `lane` consume.
    pub fn lane(&self, lane: Lane) -> String {
        self.name(&format!("herald.events.{}", lane.as_str()))
    }

    /// The consumer group of the dispatchers of `lane` (herald-dispatch's, read back by herald-query for the lag).
    pub fn dispatch_group(&self, lane: Lane) -> String {
        self.name(&format!("herald-dispatch-{}", lane.as_str()))
    }

    /// Failed attempts, for the retry scheduler to decide on.
    pub fn retry_requests(&self) -> String {
        self.name("herald.retry.requests")
    }

    /// One topic per delay tier, where scheduled retries wait until due.
    pub fn delay(&self, tier_secs: u64) -> String {
        self.name(&format!("herald.retry.delay.{tier_secs}s"))
    }

    /// Dead letters, with headers for original lane, attempts and last error.
    pub fn dead_letters(&self) -> String {
        self.name("herald.events.dlq")
    }

    /// Lifecycle changes (attempt outcomes, dead letters, recorded events) for alerting and other consumers.
    pub fn status(&self) -> String {
        self.name("herald.events.status")
    }

    /// Every topic Herald uses, given the retry scheduler's delay tiers.
    pub fn all(&self, delay_tiers_secs: &[u64]) -> Vec<TopicSpec> {
        let mut specs: Vec<TopicSpec> = Lane::ALL
            .iter()
            .map(|lane| TopicSpec {
                name: self.lane(*lane),
                partitions: LANE_PARTITIONS,
            })
            .collect();
        let internal = [self.retry_requests(), self.status()]
            .into_iter()
            .chain(delay_tiers_secs.iter().map(|tier| self.delay(*tier)));
        specs.extend(internal.map(|name| TopicSpec {
            name,
            partitions: INTERNAL_PARTITIONS,
        }));
        // One partition keeps dead letters in the order they died, which is the order people replay them in.
        specs.push(TopicSpec {
            name: self.dead_letters(),
            partitions: 1,
        });
        specs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_applies_to_every_topic_and_names_are_unique() {
        let topics = Topics::new("t1.");
        let all = topics.all(DEFAULT_DELAY_TIERS_SECS);
        assert!(all.iter().all(|t| t.name.starts_with("t1.herald.")));
        let mut names: Vec<_> = all.iter().map(|t| t.name.clone()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), all.len());
        assert!(names.contains(&"t1.herald.events.critical".to_string()));
        assert!(names.contains(&"t1.herald.retry.delay.30s".to_string()));
    }

    #[test]
    fn priorities_map_to_their_lanes() {
        assert_eq!(Lane::for_priority(Priority::Critical), Lane::Critical);
        assert_eq!(Lane::for_priority(Priority::Default), Lane::Default);
        assert_eq!("RETRY".parse::<Lane>(), Ok(Lane::Retry));
        assert!("bulk".parse::<Lane>().is_err());
    }
}
