//! Deletes what earlier test runs left on the stack: the topics and databases of tests whose process is gone.
//!
//! Each test works under a name made by `herald_test_support::unique_name` (`<label>-<pid>-<n>-<8 hex>`): its
//! topics are `<name>.<topic>` and its database `t_<name>` with `-` and `.` as `_`. Tests do not delete them (a
//! failed test's are worth reading), so a dev stack gathers a suite's worth per run; a single broker with tens of
//! thousands of partitions runs out of file descriptors. A name whose pid still runs is left alone (a test running
//! now, perhaps in another checkout, or a pid the system gave to something else: never too much).

use std::time::Duration;

use anyhow::Result;
use herald_platform::{kafka, mongo, KafkaConfig, MongoConfig};

/// The pid in a test's name (`<label>-<pid>-<n>-<8 hex>`, the separators `sep`), if `name` is one.
fn test_pid(name: &str, sep: char) -> Option<u32> {
    let mut parts = name.rsplitn(4, sep);
    let random = parts.next()?;
    let n = parts.next()?;
    let pid = parts.next()?;
    let label = parts.next()?;
    let is_hex = random.len() == 8 && random.bytes().all(|b| b.is_ascii_hexdigit());
    let is_number = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (is_hex && is_number(n) && !label.is_empty())
        .then(|| pid.parse().ok())
        .flatten()
}

/// Whether `topic` belongs to a test whose process is gone.
fn is_leftover_topic(topic: &str, alive: impl Fn(u32) -> bool) -> bool {
    topic
        .split_once('.')
        .and_then(|(name, _)| test_pid(name, '-'))
        .is_some_and(|pid| !alive(pid))
}

/// Whether `database` belongs to a test whose process is gone.
fn is_leftover_database(database: &str, alive: impl Fn(u32) -> bool) -> bool {
    database
        .strip_prefix("t_")
        .and_then(|name| test_pid(name, '_'))
        .is_some_and(|pid| !alive(pid))
}

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Deletes the leftover topics and databases; says what it deleted. A failure is reported, not fatal: the tests
/// can still run.
pub async fn leftovers(kafka_config: &KafkaConfig, mongo_config: &MongoConfig) {
    if let Err(e) = prune(kafka_config, mongo_config).await {
        eprintln!("prune      could not delete earlier tests' topics and databases: {e:#}");
    }
}

async fn prune(kafka_config: &KafkaConfig, mongo_config: &MongoConfig) -> Result<()> {
    let topics: Vec<String> = kafka::topic_names(kafka_config, Duration::from_secs(30))
        .await?
        .into_iter()
        .filter(|topic| is_leftover_topic(topic, pid_alive))
        .collect();
    let deleted = kafka::delete_topics(kafka_config, &topics).await?;
    let db = mongo::connect(mongo_config, "xtask-prune").await?;
    let mut dropped = 0;
    for name in db.client().list_database_names().await? {
        if is_leftover_database(&name, pid_alive) {
            db.client().database(&name).drop().await?;
            dropped += 1;
        }
    }
    if deleted + dropped > 0 {
        eprintln!(
            "prune      {deleted} topics and {dropped} databases of earlier test runs deleted"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_names_of_tests_whose_process_is_gone_are_leftovers() {
        let alive = |pid: u32| pid == 42;
        assert!(is_leftover_topic(
            "dispatch-lanes-7-3-0a1b2c3d.herald.lane.default",
            alive
        ));
        assert!(!is_leftover_topic(
            "dispatch-lanes-42-3-0a1b2c3d.herald.lane.default",
            alive
        ));
        assert!(!is_leftover_topic("herald.lane.default", alive));
        assert!(!is_leftover_topic("__consumer_offsets", alive));
        assert!(!is_leftover_topic(
            "bench-7-3-notahex!.herald.status",
            alive
        ));
        assert!(is_leftover_database("t_alert_ips_7_0_deadbeef", alive));
        assert!(!is_leftover_database("t_alert_ips_42_0_deadbeef", alive));
        assert!(!is_leftover_database("herald", alive));
        assert!(!is_leftover_database("t_truncated_7_0_dead", alive));
    }
}
