//! What delivering costs the store, counted by the MongoDB driver's command monitoring: the claims and records of
//! messages in flight together are gathered into batches, so a busy dispatcher spends far fewer than the four
//! commands one message costs alone (a read, the claim insert, the DISPATCHING update, the record). Its own
//! binary, so that the process's metrics count this test's commands only.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{ensure, Result};
use herald_domain::{Event, Lane, Priority, Status};
use herald_test_support::http::parse_prometheus;

#[allow(dead_code)]
#[path = "dispatch/support.rs"]
mod support;

use support::{webhook, Harness, Receiver};

/// `herald_store_commands_total` of herald-dispatch on `events` and `claims`, by (command, collection).
fn dispatch_commands() -> Result<HashMap<(String, String), u64>> {
    let text = herald_platform::http::metrics::install().render();
    let samples = parse_prometheus(&text).map_err(anyhow::Error::msg)?;
    let mut counts = HashMap::new();
    for sample in samples.iter().filter(|s| {
        s.name == "herald_store_commands_total"
            && s.labels
                .get("app")
                .is_some_and(|app| app == "herald-dispatch")
            && s.labels
                .get("collection")
                .is_some_and(|c| c == "events" || c == "claims")
    }) {
        let label = |name: &str| sample.labels.get(name).cloned().unwrap_or_default();
        *counts
            .entry((label("command"), label("collection")))
            .or_insert(0) += sample.value as u64;
    }
    Ok(counts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_in_flight_together_share_their_store_commands() -> Result<()> {
    let harness = Harness::new("dispatch-write-path").await?;
    let receiver = Receiver::start().await?;
    // Each send is held long enough for the others to be claimed meanwhile, and for their records to meet.
    let url = receiver.url("/delay/500");
    let events: Vec<Event> = (0..48)
        .map(|n| webhook(Priority::Default, &format!("user-{n}"), &url))
        .collect();
    for event in &events {
        harness.seed(event).await?;
    }
    let before = dispatch_commands()?;
    let dispatcher = harness
        .start(Lane::Default, &[("HERALD_DISPATCH_CONCURRENCY", "16")])
        .await?;
    for event in &events {
        harness
            .wait_for_status(&event.event_id, Status::Delivered, Duration::from_secs(90))
            .await;
    }
    let after = dispatch_commands()?;
    dispatcher.stop().await?;

    let by_event = receiver.hits_by_event();
    for event in &events {
        let hits = by_event.get(event.event_id.as_str()).map_or(0, Vec::len);
        ensure!(hits == 1, "{} was sent {hits} times", event.event_id);
    }
    let spent: HashMap<(String, String), u64> = after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect();
    let total: u64 = spent.values().sum();
    let n = events.len() as u64;
    // One by one this is 4 per event; batched, well under half of that.
    ensure!(
        total <= 2 * n,
        "{total} store commands on events and claims for {n} deliveries: {spent:?}"
    );
    harness.finish().await
}
