//! Pages read slice by slice (`HERALD_QUERY_SLICED_LISTS=on`) are exactly the pages of the one query (`off`):
//! same events, same order, same pagination and cursors, on a seed that spans dense recent hours, sparse days,
//! empty days and events older than the walk's day budget, with events sharing a millisecond across slices.

use anyhow::{ensure, Result};
use chrono::{DateTime, Duration, DurationRound, Utc};
use herald_domain::{Channel, Event, EventId, Priority, Status};
use herald_platform::store::EventRecord;
use herald_query::logs::slices::Slicing;
use herald_test_support::TestContext;
use serde_json::{json, Value};

use super::support::{database, insert, join, Service};

/// When event `i` was created: a third in the last six hours, a third over the last three days, the rest 5 to 12
/// days ago and 20 to 40 days ago (past the walk's days); pairs share a millisecond, some on an hour's edge.
fn created_at(i: u32, now: DateTime<Utc>) -> DateTime<Utc> {
    let hour = now.duration_trunc(Duration::hours(1)).expect("an hour");
    let pair = i64::from(i / 2);
    match i % 6 {
        0 | 1 => now - Duration::milliseconds(pair * 20_011 % 21_600_000),
        2 => now - Duration::milliseconds(pair * 1_234_567 % 259_200_000),
        3 => hour - Duration::hours(pair % 80) - Duration::milliseconds(i64::from(i % 4 / 2)),
        4 => now - Duration::days(5) - Duration::milliseconds(pair * 7_654_321 % 604_800_000),
        _ => now - Duration::days(20) - Duration::milliseconds(pair * 17_654_321 % 1_728_000_000),
    }
}

fn record(i: u32, now: DateTime<Utc>) -> EventRecord {
    let event = Event {
        // Ids out of time order, so the tie-break matters.
        event_id: EventId::parse(&format!(
            "sl-{:05x}-{i}",
            i.wrapping_mul(2_654_435_761) >> 12
        ))
        .expect("a valid id"),
        user_id: Some(format!("user-{}", i % 13)),
        event_type: Some(["order.shipped", "user.signup"][(i % 2) as usize].to_owned()),
        channel: [Some(Channel::Email), Some(Channel::Sms), None][(i % 3) as usize],
        priority: if i % 5 == 0 {
            Priority::Critical
        } else {
            Priority::Default
        },
        payload: json!({"n": i}),
        metadata: None,
        created_at: created_at(i, now),
    };
    let mut record = EventRecord::accepted(&event);
    record.status =
        [Status::Delivered, Status::DeadLettered, Status::Recorded][(i % 7 % 3) as usize];
    record
}

/// Every page of `query`, by cursor and by offset, from both services: each answer must be the same.
async fn compare(sliced: &Service, plain: &Service, query: &str, limit: u32) -> Result<usize> {
    let mut cursor: Option<String> = None;
    let mut n_events = 0;
    for _ in 0..1_000 {
        let more = match &cursor {
            None => format!("limit={limit}"),
            Some(c) => format!("limit={limit}&cursor={c}"),
        };
        let path = format!("/api/logs?{}", join(query, &more));
        let (a, b) = tokio::try_join!(sliced.ok(&path), plain.ok(&path))?;
        ensure!(a == b, "GET {path}:\nsliced {a}\nplain  {b}");
        n_events += a["data"].as_array().map_or(0, Vec::len);
        match a["pagination"]["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    for page in [1, 2, 5] {
        let path = format!(
            "/api/logs?{}",
            join(query, &format!("limit={limit}&page={page}"))
        );
        let (a, b): (Value, Value) = tokio::try_join!(sliced.ok(&path), plain.ok(&path))?;
        ensure!(a == b, "GET {path}:\nsliced {a}\nplain  {b}");
    }
    Ok(n_events)
}

#[tokio::test]
async fn sliced_pages_are_the_pages_of_one_query() -> Result<()> {
    let ctx = TestContext::new("query-slices").await?;
    let sliced = Service::start(&ctx, |c| c.slicing = Slicing::On).await?;
    let plain = Service::start(&ctx, |c| c.slicing = Slicing::Off).await?;
    let now = Utc::now();
    let records: Vec<EventRecord> = (0..600).map(|i| record(i, now)).collect();
    insert(&database(&ctx).await?, &records).await?;

    let day = |days: i64| (now - Duration::days(days)).format("%Y-%m-%d").to_string();
    let iso = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let queries = [
        String::new(),
        "sort=createdAt".to_owned(),
        "userId=user-3".to_owned(),
        "userId=user-3&status=DEAD_LETTERED".to_owned(),
        "status=DEAD_LETTERED&channel=sms".to_owned(),
        "priority=critical&sort=createdAt".to_owned(),
        "eventType=user.signup&status=RECORDED".to_owned(),
        // No event matches.
        "userId=nobody".to_owned(),
        format!("from={}&to={}", day(2), day(1)),
        format!(
            "status=DELIVERED&from={}&to={}&sort=createdAt",
            day(10),
            day(6)
        ),
        format!("from={}", iso(now - Duration::hours(30))),
        format!("channel=email&to={}", iso(now - Duration::hours(3))),
        format!("to={}&sort=createdAt", day(25)),
        format!(
            "from={}&to={}",
            iso(now - Duration::minutes(200)),
            iso(now - Duration::minutes(170))
        ),
    ];
    let mut n_compared = 0;
    for (n, query) in queries.iter().enumerate() {
        // Small pages on a few lists: many cursors, many slice edges.
        let limits: &[u32] = if n % 4 == 0 { &[13, 100] } else { &[100] };
        for &limit in limits {
            n_compared += compare(&sliced, &plain, query, limit).await?;
        }
    }
    ensure!(
        n_compared > 2 * records.len(),
        "only {n_compared} events compared"
    );
    sliced.stop().await?;
    plain.stop().await
}
