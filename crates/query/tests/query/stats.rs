//! `GET /api/stats` counts the events created within whole hours by status, channel and priority: the terminal
//! ones from the buckets the stats consumer folds from the status topic, the ones in flight from the events; a
//! batch folded twice counts once, and an undecodable status message does not stop the counting.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use chrono::{DateTime, Utc};
use herald_domain::{Channel, Priority, Status, StatusMessage, StatusOutcome};
use herald_platform::kafka;
use herald_platform::store::EventRecord;
use herald_query::logs::Range;
use herald_query::stats::buckets::{hour_at_or_after, hour_of, Buckets, Step};
use herald_query::stats::reader::StatsReader;
use herald_test_support::{eventually, TestContext};
use serde_json::{json, Value};

use super::support::{database, seed, Service};

/// The answer `/api/stats` must give for the records created within the whole hours of [from, before).
fn expected(
    records: &[EventRecord],
    from: Option<DateTime<Utc>>,
    before: Option<DateTime<Utc>>,
) -> Value {
    let from = from.map(hour_of);
    let before = before.map(hour_at_or_after);
    let within: Vec<&EventRecord> = records
        .iter()
        .filter(|r| {
            from.is_none_or(|f| r.created_at >= f) && before.is_none_or(|b| r.created_at < b)
        })
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
    let mut answer = json!({
        "total": within.len(),
        "byStatus": by_status,
        "byChannel": by_channel,
        "byPriority": by_priority,
        "deadLettersWaiting": count(&|r| r.status == Status::DeadLettered),
    });
    let millis = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    if let Some(from) = from {
        answer["countedFrom"] = json!(millis(from));
    }
    if let Some(before) = before {
        answer["countedBefore"] = json!(millis(before));
    }
    answer
}

fn at(raw: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(raw)
        .expect("valid")
        .with_timezone(&Utc)
}

/// The steps the writers publish for a record in its (terminal) state: a failed attempt before some deliveries,
/// a dead letter replayed into a delivery for others; nothing for an event in flight.
fn steps_of(i: usize, record: &EventRecord) -> Vec<StatusMessage> {
    let event = record.event();
    let step = |outcome, attempt, replay| StatusMessage::new(&event, outcome, attempt, replay);
    match record.status {
        Status::Delivered if i % 4 == 0 => vec![
            step(StatusOutcome::DeadLettered, 3, 0),
            step(StatusOutcome::Failed, 1, 1),
            step(StatusOutcome::Delivered, 2, 1),
        ],
        Status::Delivered => vec![
            step(StatusOutcome::Failed, 1, 0),
            step(StatusOutcome::Delivered, 2, 0),
        ],
        Status::Recorded => vec![step(StatusOutcome::Recorded, 0, 0)],
        Status::DeadLettered => vec![step(StatusOutcome::DeadLettered, 3, 0)],
        _ => Vec::new(),
    }
}

/// The answer of `path`, without the time its events in flight were counted (checked to be a recent one).
async fn counted(service: &Service, path: &str) -> Result<Value> {
    let mut answer = service.ok(path).await?;
    let at = answer
        .as_object_mut()
        .and_then(|o| o.remove("inFlightCountedAt"))
        .ok_or_else(|| anyhow::anyhow!("no inFlightCountedAt in {answer}"))?;
    let at = at.as_str().map(self::at);
    let age = at.map(|at| Utc::now() - at);
    anyhow::ensure!(
        age.is_some_and(|a| a < chrono::TimeDelta::seconds(60)),
        "inFlightCountedAt {at:?} is not a recent time"
    );
    Ok(answer)
}

#[tokio::test]
async fn stats_count_the_status_topic_and_the_events_in_flight_by_whole_hours() -> Result<()> {
    let ctx = TestContext::new("query-stats").await?;
    let records = seed(&database(&ctx).await?, 2_000).await?;
    let producer = kafka::build_producer(&ctx.kafka)?;
    let topic = ctx.topics.status();
    // A poison message first: it is dead-lettered and the counting goes on behind it.
    kafka::send(&producer, &topic, "poison", b"{not json", None).await?;
    for (i, record) in records.iter().enumerate() {
        for status in steps_of(i, record) {
            let payload = serde_json::to_vec(&status)?;
            kafka::send(&producer, &topic, record.event_id.as_str(), &payload, None).await?;
        }
    }
    let service = Service::start(&ctx, |config| config.stats_consumer = true).await?;

    let want = expected(&records, None, None);
    assert_eq!(want["total"], json!(2_000));
    eventually(
        Duration::from_secs(60),
        "the stats to count every step",
        || async {
            let all = counted(&service, "/api/stats")
                .await
                .map_err(|e| e.to_string())?;
            (all == want).then_some(()).ok_or_else(|| all.to_string())
        },
    )
    .await;

    // A range is widened to whole hours: 08:30 counts from 08:00, 17:45:10.250 up to 18:00. It spans three
    // midnights, so it is read from the day buckets of 4 and 5 May and the hours of 3 and 6 May.
    let window = counted(
        &service,
        "/api/stats?from=2024-05-03T08:30:00Z&to=2024-05-06T17:45:10.250Z",
    )
    .await?;
    let expected_window = expected(
        &records,
        Some(at("2024-05-03T08:30:00Z")),
        Some(at("2024-05-06T17:45:10.251Z")),
    );
    assert_eq!(window, expected_window);
    assert_eq!(window["countedFrom"], json!("2024-05-03T08:00:00.000Z"));
    assert_eq!(window["countedBefore"], json!("2024-05-06T18:00:00.000Z"));
    assert!(
        expected_window["total"].as_u64() < Some(2_000)
            && expected_window["total"].as_u64() > Some(0)
    );

    let days = counted(
        &service,
        "/api/stats?startDate=2024-05-02&endDate=2024-05-04",
    )
    .await?;
    assert_eq!(
        days,
        expected(
            &records,
            Some(at("2024-05-02T00:00:00Z")),
            Some(at("2024-05-05T00:00:00Z"))
        )
    );

    let empty = service.ok("/api/stats?from=2030-01-01").await?;
    assert_eq!(empty["total"], json!(0));
    service.stop().await
}

#[tokio::test]
async fn a_batch_folded_again_counts_once() -> Result<()> {
    let ctx = TestContext::new("query-stats-refold").await?;
    let db = database(&ctx).await?;
    Buckets::ensure_indexes(&db).await?;
    // A new installation: the day buckets are complete from the start.
    let marker = db
        .collection::<mongodb::bson::Document>("stats_days")
        .find_one(mongodb::bson::doc! { "_id": "since" })
        .await?
        .expect("the marker is written");
    assert_eq!(
        marker.get_datetime("since")?.to_chrono(),
        DateTime::<Utc>::UNIX_EPOCH
    );
    let all = seed(&db, 300).await?;
    let records: Vec<EventRecord> = all
        .iter()
        .filter(|r| r.status.is_terminal())
        .cloned()
        .collect();
    let steps = all_steps(&records);
    let buckets = Buckets::new(&db);
    let (first, rest) = steps.split_at(steps.len() / 2);
    buckets.apply(first).await?;
    // A crash after the fold and before the offsets were stored: the batch comes again, with more behind it.
    buckets.apply(&steps).await?;
    buckets.apply(rest).await?;
    let reader = StatsReader::new(&db, Duration::from_secs(10));
    let counts = reader.counts(&Range::default()).await?.counts;
    let n = |status: Status| all.iter().filter(|r| r.status == status).count() as u64;
    // The events in flight are counted from the events, the others from the buckets.
    assert_eq!(counts.total, all.len() as u64);
    for status in Status::ALL.iter().copied() {
        assert_eq!(counts.by_status[status.as_str()], n(status), "{status:?}");
    }
    Ok(())
}

/// The steps of `records`, as the stats consumer reads them (two partitions).
fn all_steps(records: &[EventRecord]) -> Vec<Step> {
    let mut steps = Vec::new();
    for (i, record) in records.iter().enumerate() {
        for status in steps_of(i, record) {
            steps.push(Step {
                partition: (i % 2) as i32,
                offset: steps.len() as i64,
                status,
            });
        }
    }
    steps
}

/// The counts by status of the records created within [from, before).
fn by_status(
    records: &[EventRecord],
    from: DateTime<Utc>,
    before: DateTime<Utc>,
) -> BTreeMap<String, u64> {
    Status::ALL
        .iter()
        .map(|s| {
            let n = records
                .iter()
                .filter(|r| r.status == *s && r.created_at >= from && r.created_at < before)
                .count();
            (s.as_str().to_owned(), n as u64)
        })
        .collect()
}

#[tokio::test]
async fn an_installation_with_hour_buckets_from_before_day_buckets_counts_its_past_from_the_hours(
) -> Result<()> {
    let ctx = TestContext::new("query-stats-upgrade").await?;
    let db = database(&ctx).await?;
    let records = seed(&db, 400).await?;
    // The release before folded hours only: fold, then take the day buckets away.
    Buckets::new(&db).apply(&all_steps(&records)).await?;
    db.collection::<mongodb::bson::Document>("stats_days")
        .drop()
        .await?;
    Buckets::ensure_indexes(&db).await?;
    let marker = db
        .collection::<mongodb::bson::Document>("stats_days")
        .find_one(mongodb::bson::doc! { "_id": "since" })
        .await?
        .expect("the marker is written");
    let since = marker.get_datetime("since")?.to_chrono();
    assert!(
        since > Utc::now(),
        "the day buckets are complete only from a day to come: {since}"
    );
    assert_eq!(
        db.collection::<mongodb::bson::Document>("stats_days")
            .count_documents(mongodb::bson::doc! {})
            .await?,
        1,
        "no day bucket but the marker"
    );

    let reader = StatsReader::new(&db, Duration::from_secs(10));
    let (from, before) = (at("2024-05-03T05:00:00Z"), at("2024-05-08T07:00:00Z"));
    let range = Range {
        from: Some(from),
        before: Some(before),
    };
    let counts = reader.counts(&range).await?.counts;
    let want = by_status(&records, from, before);
    assert!(want.values().sum::<u64>() > 0);
    assert_eq!(counts.by_status, want);
    let all = reader.counts(&Range::default()).await?.counts;
    assert_eq!(all.total, 400);
    Ok(())
}

#[tokio::test]
async fn the_events_in_flight_are_counted_again_once_their_count_is_older_than_its_max_age(
) -> Result<()> {
    let ctx = TestContext::new("query-stats-in-flight").await?;
    let db = database(&ctx).await?;
    Buckets::ensure_indexes(&db).await?;
    let records = seed(&db, 200).await?;
    let reader = StatsReader::new(&db, Duration::from_secs(10))
        .with_in_flight_max_age(Duration::from_millis(200));
    let first = reader.counts(&Range::default()).await?;
    let queued = |counts: &herald_query::stats::reader::HourCounts| {
        counts.counts.by_status[Status::Queued.as_str()]
    };
    let n_queued = records
        .iter()
        .filter(|r| r.status == Status::Queued)
        .count() as u64;
    assert!(n_queued > 0);
    assert_eq!(queued(&first), n_queued);

    // One queued event is delivered: the count follows within a few max ages, and says it is newer.
    let moved = records
        .iter()
        .find(|r| r.status == Status::Queued)
        .expect("a queued event");
    db.collection::<mongodb::bson::Document>(herald_platform::mongo::EVENTS)
        .update_one(
            mongodb::bson::doc! { "eventId": moved.event_id.as_str() },
            mongodb::bson::doc! { "$set": { "status": Status::Delivered.as_str() } },
        )
        .await?;
    eventually(
        Duration::from_secs(20),
        "the queued count to drop by one",
        || async {
            let now = reader
                .counts(&Range::default())
                .await
                .map_err(|e| e.to_string())?;
            (queued(&now) == n_queued - 1 && now.in_flight_at > first.in_flight_at)
                .then_some(())
                .ok_or_else(|| format!("{} queued, counted at {}", queued(&now), now.in_flight_at))
        },
    )
    .await;
    Ok(())
}
