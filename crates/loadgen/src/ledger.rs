//! The final states of a run's events, read from MongoDB's `events` collection by the run's tag
//! (`metadata.loadgenRun`), and the wait for them to settle.

use std::time::{Duration, Instant};

use anyhow::Result;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use herald_domain::{Attempt, AttemptOutcome, Channel, Priority, Status};
use herald_platform::mongo::EVENTS;
use herald_platform::store::TimelineEntry;
use mongodb::bson::{doc, Document};
use mongodb::Database;
use serde::Deserialize;

/// What the ledger needs of a stored event (the payload is left on the server).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    pub event_id: String,
    pub status: Status,
    #[serde(default)]
    pub channel: Option<Channel>,
    #[serde(default)]
    pub priority: Priority,
    #[serde(default)]
    pub attempts: Vec<Attempt>,
    #[serde(default)]
    pub timeline: Vec<TimelineEntry>,
}

impl Row {
    /// When the provider accepted the event, as the dispatcher recorded it.
    pub fn delivered_at(&self) -> Option<DateTime<Utc>> {
        self.attempts
            .iter()
            .rev()
            .find(|a| a.outcome == AttemptOutcome::Delivered)
            .map(|a| a.ended_at)
    }

    /// Each retry the scheduler set: (attempt number, when it was scheduled, when it is due), read from the
    /// `retry_scheduled` timeline entries ("attempt N due at <RFC 3339> (...)").
    pub fn scheduled_retries(&self) -> Vec<(u32, DateTime<Utc>, DateTime<Utc>)> {
        self.timeline
            .iter()
            .filter(|e| e.kind == "retry_scheduled")
            .filter_map(|e| {
                let detail = e.detail.as_deref()?;
                let rest = detail.strip_prefix("attempt ")?;
                let (number, rest) = rest.split_once(" due at ")?;
                let due = rest.split_whitespace().next()?;
                let due = DateTime::parse_from_rfc3339(due).ok()?.with_timezone(&Utc);
                Some((number.parse().ok()?, e.at, due))
            })
            .collect()
    }
}

fn run_filter(run_id: &str) -> Document {
    doc! { "metadata.loadgenRun": run_id }
}

/// Every stored event of the run.
pub async fn read_rows(db: &Database, run_id: &str) -> Result<Vec<Row>> {
    let rows = db
        .collection::<Row>(EVENTS)
        .find(run_filter(run_id))
        .projection(doc! { "eventId": 1, "status": 1, "channel": 1, "priority": 1, "attempts": 1, "timeline": 1 })
        .await?
        .try_collect()
        .await?;
    Ok(rows)
}

fn terminal_statuses() -> Vec<&'static str> {
    Status::ALL
        .iter()
        .filter(|s| s.is_terminal())
        .map(|s| s.as_str())
        .collect()
}

/// How many of the run's events are in an end state.
pub async fn count_settled(db: &Database, run_id: &str) -> Result<u64> {
    let mut filter = run_filter(run_id);
    filter.insert("status", doc! { "$in": terminal_statuses() });
    Ok(db
        .collection::<Document>(EVENTS)
        .count_documents(filter)
        .await?)
}

/// How many of the run's events are not in an end state yet.
pub async fn count_unsettled(db: &Database, run_id: &str) -> Result<u64> {
    let mut filter = run_filter(run_id);
    filter.insert("status", doc! { "$nin": terminal_statuses() });
    Ok(db
        .collection::<Document>(EVENTS)
        .count_documents(filter)
        .await?)
}

/// Waits until at least `n_accepted` of the run's events are settled and none is still on its way, or `timeout`
/// passes; `on_poll` sees each count of settled events. Returns how long it waited.
///
/// The count alone is not enough: events ingest stored but never answered 2xx for (a client timeout, an
/// outage) are settled too, so `n_accepted` settled events can be reached while accepted ones are still queued.
pub async fn wait_settled(
    db: &Database,
    run_id: &str,
    n_accepted: u64,
    timeout: Duration,
    mut on_poll: impl FnMut(u64),
) -> Duration {
    let started = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_millis(1_000));
    loop {
        ticker.tick().await;
        // A failed count (FerretDB busy) is just another poll that did not see the end.
        let settled = count_settled(db, run_id).await.unwrap_or(0);
        on_poll(settled);
        let done = settled >= n_accepted && count_unsettled(db, run_id).await.is_ok_and(|n| n == 0);
        if done || started.elapsed() >= timeout {
            return started.elapsed();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduled_retries_are_read_from_the_timeline() {
        let row = Row {
            event_id: "e1".into(),
            status: Status::Delivered,
            channel: Some(Channel::Webhook),
            priority: Priority::Default,
            attempts: vec![],
            timeline: vec![TimelineEntry {
                at: "2026-11-22T01:00:00Z".parse().expect("date"),
                kind: "retry_scheduled".into(),
                attempt: None,
                detail: Some(
                    "attempt 2 due at 2026-11-22T01:00:05.123+00:00 (backoff 412 ms, tier 5s)"
                        .into(),
                ),
            }],
        };
        let retries = row.scheduled_retries();
        assert_eq!(retries.len(), 1);
        assert_eq!(retries[0].0, 2);
        assert_eq!(
            retries[0].2.timestamp_millis() - retries[0].1.timestamp_millis(),
            5_123
        );
    }
}
