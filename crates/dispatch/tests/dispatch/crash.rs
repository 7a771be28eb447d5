//! SIGKILL of a real `herald-dispatch` process in the middle of 1,000 webhook events, then a restart: every event
//! ends DELIVERED, and only the sends under way at the kill reach the receiver twice, with the same event id.

use std::collections::HashMap;
use std::fs::File;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use futures::StreamExt;
use herald_dispatch::stats::in_flight_bound;
use herald_domain::{LaneMessage, Priority};
use herald_platform::mongo::EVENTS;
use herald_platform::store::EventRecord;
use herald_test_support::eventually;
use mongodb::bson::{doc, Document};
use tokio::process::{Child, Command};

use super::support::{webhook, Harness, Receiver};

const N_EVENTS: usize = 1_000;
/// Partitions of a lane topic, and the default queue depth: the dispatcher's in-flight bound.
const LANE_PARTITIONS: u64 = 6;
const QUEUE_DEPTH: u64 = 16;
const CONCURRENCY: u64 = 8;

fn spawn_dispatcher(harness: &Harness, log: &std::path::Path) -> Result<Child> {
    let log = File::create(log)?;
    let child = Command::new(env!("CARGO_BIN_EXE_herald-dispatch"))
        .args(["--lane", "default"])
        .envs(harness.env(&[
            // A short lease, so the events held by the killed process are taken over quickly.
            ("HERALD_SEND_TIMEOUT_MS", "2000"),
            ("HERALD_DISPATCH_QUEUE_DEPTH", &QUEUE_DEPTH.to_string()),
            ("HERALD_DISPATCH_CONCURRENCY", &CONCURRENCY.to_string()),
            ("RUST_LOG", "info"),
        ]))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()?;
    Ok(child)
}

async fn count_delivered(harness: &Harness) -> Result<u64, String> {
    harness
        .db
        .collection::<Document>(EVENTS)
        .count_documents(doc! { "status": "DELIVERED" })
        .await
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_then_restart_delivers_everything_with_bounded_duplicates() -> Result<()>
{
    let harness = Harness::new("dispatch-crash").await?;
    let receiver = Receiver::start().await?;
    let url = receiver.url("/delay/3");
    let events: Vec<_> = (0..N_EVENTS)
        .map(|i| webhook(Priority::Default, &format!("user-{}", i % 60), &url))
        .collect();
    let records: Vec<EventRecord> = events.iter().map(EventRecord::accepted).collect();
    harness
        .db
        .collection::<EventRecord>(EVENTS)
        .insert_many(&records)
        .await?;
    let harness_ref = &harness;
    let published: Vec<Result<i32>> = futures::stream::iter(&events)
        .map(|event| async move {
            harness_ref
                .publish(&LaneMessage::first(event.clone()))
                .await
        })
        .buffer_unordered(64)
        .collect()
        .await;
    for result in published {
        result?;
    }

    let logs = std::env::temp_dir().join(harness.ctx.topics.prefix().trim_end_matches('.'));
    std::fs::create_dir_all(&logs)?;
    let mut first = spawn_dispatcher(&harness, &logs.join("first.log"))?;
    eventually(
        Duration::from_secs(180),
        "300 events to reach the receiver",
        || async {
            let n = receiver.hits().len();
            if n >= 300 {
                Ok(())
            } else {
                Err(format!("{n} so far; logs in {}", logs.display()))
            }
        },
    )
    .await;
    first.start_kill()?;
    let killed_at = Instant::now();
    first.wait().await?;
    let before = receiver.hits();
    let rate_first = rate(&before, killed_at);

    let mut second = spawn_dispatcher(&harness, &logs.join("second.log"))?;
    let restarted_at = Instant::now();
    // Generous: a loaded CI machine, and a restart that first waits out the killed member's session and leases.
    eventually(
        Duration::from_secs(600),
        "every event DELIVERED",
        || async {
            let n = count_delivered(&harness).await?;
            if n == N_EVENTS as u64 {
                Ok(())
            } else {
                Err(format!("{n} delivered; logs in {}", logs.display()))
            }
        },
    )
    .await;
    let recovered_in = restarted_at.elapsed();

    // A graceful stop with a real SIGTERM: the process drains, commits and exits 0.
    let pid = second.id().context("the second dispatcher's pid")?;
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    ensure!(status.success(), "kill -TERM failed");
    let exit = tokio::time::timeout(Duration::from_secs(30), second.wait())
        .await
        .context("no exit within 30 s of SIGTERM")??;
    ensure!(exit.success(), "exit after SIGTERM: {exit}");

    let by_event = receiver.hits_by_event();
    let missing: Vec<_> = events
        .iter()
        .filter(|e| !by_event.contains_key(e.event_id.as_str()))
        .collect();
    ensure!(
        missing.is_empty(),
        "{} events never reached the receiver",
        missing.len()
    );
    ensure!(
        by_event.len() == N_EVENTS,
        "unknown event ids at the receiver: {}",
        by_event.len()
    );
    let duplicated: HashMap<&String, usize> = by_event
        .iter()
        .filter(|(_, hits)| hits.len() > 1)
        .map(|(id, hits)| (id, hits.len()))
        .collect();
    let n_duplicates: usize = duplicated.values().map(|n| n - 1).sum();
    let bound = in_flight_bound(LANE_PARTITIONS, QUEUE_DEPTH, CONCURRENCY);
    eprintln!(
        "crash test: {} hits before the kill ({rate_first:.0} events/s), {} after; {n_duplicates} duplicates \
         ({} events) against an in-flight bound of {bound}; the restart finished in {:.1} s",
        before.len(),
        receiver.hits().len() - before.len(),
        duplicated.len(),
        recovered_in.as_secs_f64()
    );
    for id in duplicated.keys() {
        let hits = &by_event[*id];
        // Sent by the killed process: before the second one started. (Not "before the kill": a request written
        // just before it may reach the receiver's handler, which stamps `at`, a moment after it on a busy machine.)
        ensure!(
            hits[0].at <= restarted_at,
            "{id} was sent twice although its first send came from the restarted dispatcher"
        );
        ensure!(
            hits.iter()
                .all(|h| h.header("herald-event-id") == Some(id.as_str())),
            "duplicates carry the same event id"
        );
    }
    ensure!(
        n_duplicates as u64 <= bound,
        "{n_duplicates} duplicates exceed the in-flight bound {bound}"
    );
    harness.finish().await
}

/// Events per second over the hits before `until`, from the first hit.
fn rate(hits: &[super::support::Hit], until: Instant) -> f64 {
    let Some(first) = hits.iter().map(|h| h.at).min() else {
        return 0.0;
    };
    let secs = until.duration_since(first).as_secs_f64();
    if secs > 0.0 {
        hits.len() as f64 / secs
    } else {
        0.0
    }
}

/// Sends SIGTERM to `child` and waits for its exit, which must be a clean one within `within`.
async fn terminate(child: &mut Child, within: Duration) -> Result<Duration> {
    let pid = child.id().context("the dispatcher's pid")?;
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    ensure!(status.success(), "kill -TERM failed");
    let sent = Instant::now();
    let exit = tokio::time::timeout(within, child.wait())
        .await
        .with_context(|| format!("no exit within {within:?} of SIGTERM"))??;
    ensure!(exit.success(), "exit after SIGTERM: {exit}");
    Ok(sent.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_finishes_what_it_started_and_sends_nothing_twice() -> Result<()> {
    const N: usize = 400;
    let harness = Harness::new("dispatch-sigterm").await?;
    let receiver = Receiver::start().await?;
    // Slow enough that sends are under way at the signal, fast enough for the test.
    let url = receiver.url("/delay/20");
    let events: Vec<_> = (0..N)
        .map(|i| webhook(Priority::Default, &format!("user-{}", i % 40), &url))
        .collect();
    let records: Vec<EventRecord> = events.iter().map(EventRecord::accepted).collect();
    harness
        .db
        .collection::<EventRecord>(EVENTS)
        .insert_many(&records)
        .await?;
    for event in &events {
        harness.publish(&LaneMessage::first(event.clone())).await?;
    }
    let logs = std::env::temp_dir().join(harness.ctx.topics.prefix().trim_end_matches('.'));
    std::fs::create_dir_all(&logs)?;

    let mut first = spawn_dispatcher(&harness, &logs.join("first.log"))?;
    eventually(
        Duration::from_secs(120),
        "100 events at the receiver",
        || async {
            let n = receiver.hits().len();
            if n >= 100 {
                Ok(())
            } else {
                Err(format!("{n} so far; logs in {}", logs.display()))
            }
        },
    )
    .await;
    let took = terminate(&mut first, Duration::from_secs(30)).await?;
    // Every send that reached the receiver before the exit was recorded: nothing is left DISPATCHING for a lease to
    // expire and a second dispatcher to send again.
    let sent = receiver.hits_by_event();
    let delivered = count_delivered(&harness)
        .await
        .map_err(anyhow::Error::msg)?;
    ensure!(
        delivered as usize == sent.len(),
        "{} events reached the receiver but {delivered} are DELIVERED",
        sent.len()
    );
    ensure!(sent.len() < N, "the stop came before the end of the load");

    let mut second = spawn_dispatcher(&harness, &logs.join("second.log"))?;
    eventually(
        Duration::from_secs(300),
        "every event DELIVERED",
        || async {
            let n = count_delivered(&harness).await?;
            if n == N as u64 {
                Ok(())
            } else {
                Err(format!("{n} delivered; logs in {}", logs.display()))
            }
        },
    )
    .await;
    terminate(&mut second, Duration::from_secs(30)).await?;

    let by_event = receiver.hits_by_event();
    ensure!(
        by_event.len() == N,
        "{} of {N} events reached the receiver",
        by_event.len()
    );
    let twice: Vec<&String> = by_event
        .iter()
        .filter(|(_, hits)| hits.len() > 1)
        .map(|(id, _)| id)
        .collect();
    ensure!(
        twice.is_empty(),
        "sent twice after a graceful stop: {twice:?}"
    );
    eprintln!(
        "sigterm test: {} of {N} sent before SIGTERM, exit {:.2} s after it, none sent twice",
        sent.len(),
        took.as_secs_f64()
    );
    harness.finish().await
}
