//! Two dispatchers of one lane share its partitions: both deliver, and no event is sent twice.

use std::time::Duration;

use anyhow::{ensure, Result};
use herald_dispatch::Counter;
use herald_domain::{Lane, Priority, Status};
use herald_test_support::eventually;

use super::support::{webhook, Harness, Receiver};

const N_EVENTS: usize = 120;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_critical_dispatchers_share_the_partitions() -> Result<()> {
    let harness = Harness::new("dispatch-pair").await?;
    let receiver = Receiver::start().await?;
    let first = harness.start(Lane::Critical, &[]).await?;
    let second = harness.start(Lane::Critical, &[]).await?;
    eventually(
        Duration::from_secs(60),
        "both dispatchers to hold partitions",
        || async {
            let (a, b) = (
                first.stats.assigned_partitions(),
                second.stats.assigned_partitions(),
            );
            if a > 0 && b > 0 && a + b == 6 {
                Ok(())
            } else {
                Err(format!("{a} + {b}"))
            }
        },
    )
    .await;

    let mut events = Vec::new();
    for i in 0..N_EVENTS {
        let hook = webhook(
            Priority::Critical,
            &format!("user-{i}"),
            &receiver.url("/delay/2"),
        );
        harness.seed(&hook).await?;
        events.push(hook);
    }
    for hook in &events {
        harness
            .wait_for_status(&hook.event_id, Status::Delivered, Duration::from_secs(90))
            .await;
    }

    let by_event = receiver.hits_by_event();
    let twice: Vec<_> = by_event
        .iter()
        .filter(|(_, hits)| hits.len() > 1)
        .map(|(id, _)| id)
        .collect();
    ensure!(twice.is_empty(), "sent more than once: {twice:?}");
    ensure!(
        by_event.len() == N_EVENTS,
        "{} events reached the receiver",
        by_event.len()
    );
    let (a, b) = (
        first.stats.get(Counter::Delivered),
        second.stats.get(Counter::Delivered),
    );
    eprintln!("delivered by the first dispatcher: {a}, by the second: {b}");
    ensure!(a > 0 && b > 0, "both deliver some: {a} and {b}");
    ensure!(a + b == N_EVENTS as u64, "{a} + {b} != {N_EVENTS}");

    first.stop().await?;
    second.stop().await?;
    harness.finish().await
}
