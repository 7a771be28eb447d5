//! herald-alert restarted in the middle of a window: the count carries on, and steps delivered again are not
//! counted twice.

use anyhow::{ensure, Context, Result};
use herald_alert::rules::FAILED_REQUESTS;

use super::support::{failed_request, Harness};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_window_survives_a_restart_and_redelivered_steps_count_once() -> Result<()> {
    let harness = Harness::new("alert-restart").await?;
    let ip = "10.8.0.1";
    let first = harness.start(&[]).await?;
    let before: Vec<_> = (0..3).map(|_| failed_request(ip)).collect();
    for step in &before {
        harness.publish(step).await?;
    }
    harness.wait_for_hits(FAILED_REQUESTS, ip, 3).await;
    first.stop().await?;

    // After the restart, the same three again (as Kafka redelivers what was handled but not committed) and two
    // new ones: five distinct steps, no alert. Six from another IP after them show they were all handled.
    let second = harness.start(&[]).await?;
    for step in &before {
        harness.publish(step).await?;
    }
    let mut after = Vec::new();
    for _ in 0..2 {
        let step = failed_request(ip);
        harness.publish(&step).await?;
        after.push(step);
    }
    for _ in 0..6 {
        harness.publish(&failed_request("10.8.0.2")).await?;
    }
    harness.wait_for_mails("10.8.0.2", 1).await;
    ensure!(harness.hits(FAILED_REQUESTS, ip).await? == 5);
    ensure!(harness.alerts(FAILED_REQUESTS, ip).await?.is_empty());
    ensure!(harness.mails(ip).await?.is_empty());

    // The sixth distinct step alerts, counting the three from before the restart.
    let sixth = failed_request(ip);
    harness.publish(&sixth).await?;
    after.push(sixth);
    harness.wait_for_mails(ip, 1).await;
    let alerts = harness.alerts(FAILED_REQUESTS, ip).await?;
    let alert = alerts.first().context("the alert")?;
    ensure!(alert.count == 6, "{alert:?}");
    // The five newest are the samples: the three after the restart and two of the three before.
    let samples = &alert.sample_event_ids;
    ensure!(samples.len() == 5, "{samples:?}");
    let n_before = before
        .iter()
        .filter(|s| samples.contains(&s.event_id.to_string()))
        .count();
    ensure!(n_before == 2, "{samples:?}");
    for step in &after {
        ensure!(samples.contains(&step.event_id.to_string()), "{samples:?}");
    }

    second.stop().await?;
    harness.finish().await
}
