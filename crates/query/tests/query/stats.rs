//! `GET /api/stats` counts the seed by status, channel and priority, within a range or not.

use std::collections::BTreeMap;

use anyhow::Result;
use chrono::{DateTime, Utc};
use herald_domain::{Channel, Priority, Status};
use herald_platform::store::EventRecord;
use herald_test_support::TestContext;
use serde_json::{json, Value};

use super::support::{database, seed, Service};

/// The answer `/api/stats` must give for the records created within [from, to].
fn expected(
    records: &[EventRecord],
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> Value {
    let within: Vec<&EventRecord> = records
        .iter()
        .filter(|r| from.is_none_or(|f| r.created_at >= f) && to.is_none_or(|t| r.created_at <= t))
        .collect();
    let count = |pred: &dyn Fn(&EventRecord) -> bool| within.iter().filter(|r| pred(r)).count();
    let by_status: BTreeMap<&str, usize> = Status::ALL
        .iter()
        .map(|s| (s.as_str(), count(&|r| r.status == *s)))
        .collect();
    let mut by_channel: BTreeMap<&str, usize> = Channel::ALL
        .iter()
        .map(|c| (c.as_str(), count(&|r| r.channel == Some(*c))))
        .collect();
    by_channel.insert("none", count(&|r| r.channel.is_none()));
    let by_priority: BTreeMap<&str, usize> = Priority::ALL
        .iter()
        .map(|p| (p.as_str(), count(&|r| r.priority == *p)))
        .collect();
    json!({
        "total": within.len(),
        "byStatus": by_status,
        "byChannel": by_channel,
        "byPriority": by_priority,
        "deadLettersWaiting": count(&|r| r.status == Status::DeadLettered),
    })
}

fn at(raw: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(raw)
        .expect("valid")
        .with_timezone(&Utc)
}

#[tokio::test]
async fn stats_count_the_seed_by_status_channel_and_priority() -> Result<()> {
    let ctx = TestContext::new("query-stats").await?;
    let service = Service::start(&ctx, |_| {}).await?;
    let records = seed(&database(&ctx).await?, 2_000).await?;

    let all = service.ok("/api/stats").await?;
    assert_eq!(all, expected(&records, None, None));
    assert_eq!(all["total"], json!(2_000));

    let window = service
        .ok("/api/stats?from=2024-05-03T08:30:00Z&to=2024-05-06T17:45:10.250Z")
        .await?;
    let expected_window = expected(
        &records,
        Some(at("2024-05-03T08:30:00Z")),
        Some(at("2024-05-06T17:45:10.250Z")),
    );
    assert_eq!(window, expected_window);
    assert!(
        expected_window["total"].as_u64() < Some(2_000)
            && expected_window["total"].as_u64() > Some(0)
    );

    let days = service
        .ok("/api/stats?startDate=2024-05-02&endDate=2024-05-04")
        .await?;
    assert_eq!(
        days,
        expected(
            &records,
            Some(at("2024-05-02T00:00:00Z")),
            Some(at("2024-05-04T23:59:59.999Z"))
        )
    );

    let empty = service.ok("/api/stats?from=2030-01-01").await?;
    assert_eq!(empty, expected(&[], None, None));
    service.stop().await
}
