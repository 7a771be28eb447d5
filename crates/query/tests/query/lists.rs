//! `GET /api/logs` returns exactly the seeded events each filter (alone and combined) selects, in order, with the
//! right totals and pages, both ways, by page and by cursor.

use anyhow::{ensure, Result};
use chrono::{DateTime, Utc};
use herald_domain::{Channel, Priority, Status};
use herald_platform::store::EventRecord;
use herald_test_support::TestContext;
use serde_json::{json, Value};

use super::support::{database, ids_of, join, seed, seed_end, walk_with_cursor, Expect, Service};

const N_EVENTS: u32 = 2_000;

fn at(raw: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(raw)
        .expect("valid")
        .with_timezone(&Utc)
}

/// Fetches every page of `query` with `limit` and checks each page's pagination block and the whole list.
async fn check_pages(
    service: &Service,
    records: &[EventRecord],
    query: &str,
    expect: &Expect,
    limit: u32,
) -> Result<()> {
    let expected = expect.ids(records);
    let total = expected.len() as u64;
    let pages = total.div_ceil(u64::from(limit));
    let mut served = Vec::new();
    for page in 1..=pages.max(1) {
        let body = service
            .ok(&format!(
                "/api/logs?{}",
                join(query, &format!("page={page}&limit={limit}&total=true"))
            ))
            .await?;
        let pagination = &body["pagination"];
        ensure!(
            pagination["page"] == json!(page)
                && pagination["limit"] == json!(limit)
                && pagination["total"] == json!(total)
                && pagination["pages"] == json!(pages),
            "{query} page {page}: {pagination} (expected total {total}, pages {pages})"
        );
        ensure!(
            pagination["nextCursor"].is_string() == (page < pages),
            "{query} page {page}: nextCursor {} on page {page} of {pages}",
            pagination["nextCursor"]
        );
        served.extend(ids_of(&body));
    }
    ensure!(
        served == expected,
        "{query}: {} served, {} expected; first difference at {:?}",
        served.len(),
        expected.len(),
        served.iter().zip(&expected).position(|(a, b)| a != b)
    );
    ensure!(total > 0 || served.is_empty());
    Ok(())
}

#[tokio::test]
async fn every_filter_alone_and_combined_returns_exactly_the_matching_events() -> Result<()> {
    let ctx = TestContext::new("query-lists").await?;
    let service = Service::start(&ctx, |_| {}).await?;
    let records = seed(&database(&ctx).await?, N_EVENTS).await?;

    let window_from = at("2024-05-03T08:30:00Z");
    let window_to = at("2024-05-06T17:45:10.250Z");
    let cases: Vec<(String, Expect)> = vec![
        (String::new(), Expect::default()),
        (
            "sort=createdAt".into(),
            Expect {
                oldest_first: true,
                ..Expect::default()
            },
        ),
        (
            "userId=user-7".into(),
            Expect {
                user_id: Some("user-7".into()),
                ..Expect::default()
            },
        ),
        (
            "eventType=invoice.paid".into(),
            Expect {
                event_type: Some("invoice.paid".into()),
                ..Expect::default()
            },
        ),
        (
            "activityType=user.signup&sort=createdAt".into(),
            Expect {
                event_type: Some("user.signup".into()),
                oldest_first: true,
                ..Expect::default()
            },
        ),
        (
            "channel=sms".into(),
            Expect {
                channel: Some(Channel::Sms),
                ..Expect::default()
            },
        ),
        (
            "priority=CRITICAL".into(),
            Expect {
                priority: Some(Priority::Critical),
                ..Expect::default()
            },
        ),
        (
            "status=dead_lettered".into(),
            Expect {
                status: Some(Status::DeadLettered),
                ..Expect::default()
            },
        ),
        (
            "from=2024-05-03T08:30:00Z&to=2024-05-06T17:45:10.250Z".into(),
            Expect {
                from: Some(window_from),
                to: Some(window_to),
                ..Expect::default()
            },
        ),
        (
            // The same window in another zone, under the other names.
            "startDate=2024-05-03T10:30:00%2B02:00&endDate=2024-05-06T19:45:10.250%2B02:00&sort=createdAt".into(),
            Expect {
                from: Some(window_from),
                to: Some(window_to),
                oldest_first: true,
                ..Expect::default()
            },
        ),
        (
            "from=2024-05-02&to=2024-05-04".into(),
            Expect {
                from: Some(at("2024-05-02T00:00:00Z")),
                to: Some(at("2024-05-04T23:59:59.999Z")),
                ..Expect::default()
            },
        ),
        (
            "userId=user-3&status=DELIVERED".into(),
            Expect {
                user_id: Some("user-3".into()),
                status: Some(Status::Delivered),
                ..Expect::default()
            },
        ),
        (
            "channel=email&priority=critical&from=2024-05-04T00:00:00Z".into(),
            Expect {
                channel: Some(Channel::Email),
                priority: Some(Priority::Critical),
                from: Some(at("2024-05-04T00:00:00Z")),
                ..Expect::default()
            },
        ),
        (
            "eventType=order.shipped&status=QUEUED&to=2024-05-07T00:00:00Z&sort=createdAt".into(),
            Expect {
                event_type: Some("order.shipped".into()),
                status: Some(Status::Queued),
                to: Some(at("2024-05-07T00:00:00Z")),
                oldest_first: true,
                ..Expect::default()
            },
        ),
        (
            "userId=user-4&channel=email&priority=default&status=PENDING".into(),
            Expect {
                user_id: Some("user-4".into()),
                channel: Some(Channel::Email),
                priority: Some(Priority::Default),
                status: Some(Status::Pending),
                ..Expect::default()
            },
        ),
        (
            "userId=nobody".into(),
            Expect {
                user_id: Some("nobody".into()),
                ..Expect::default()
            },
        ),
    ];
    for (query, expect) in &cases {
        check_pages(&service, &records, query, expect, 100).await?;
    }
    // Every case is a real test: most select some events but not all, one selects none.
    let sizes: Vec<usize> = cases.iter().map(|(_, e)| e.ids(&records).len()).collect();
    ensure!(
        sizes
            .iter()
            .filter(|&&n| n > 0 && n < N_EVENTS as usize)
            .count()
            >= cases.len() - 3,
        "{sizes:?}"
    );
    ensure!(sizes.contains(&0), "{sizes:?}");

    // Past the last page: no events, still the total when asked for.
    let beyond = service
        .ok("/api/logs?channel=sms&page=40&limit=100&total=true")
        .await?;
    let n_sms = cases[5].1.ids(&records).len();
    assert_eq!(
        beyond,
        json!({"data": [], "pagination": {"page": 40, "limit": 100, "total": n_sms,
            "pages": n_sms.div_ceil(100), "nextCursor": null}})
    );

    // Without `total=true` a page that is not the last counts nothing; the last one tells its total.
    let first = service.ok("/api/logs?channel=sms&limit=100").await?;
    assert_eq!(first["data"].as_array().map(Vec::len), Some(100));
    assert!(
        first["pagination"].get("total").is_none() && first["pagination"].get("pages").is_none(),
        "{}",
        first["pagination"]
    );
    let last_page = n_sms.div_ceil(100);
    let last = service
        .ok(&format!("/api/logs?channel=sms&limit=100&page={last_page}"))
        .await?;
    assert_eq!(
        last["pagination"]["total"],
        json!(n_sms),
        "the last page tells its total"
    );

    // A smaller page size across a filter, and the same lists walked by cursor.
    let (query, expect) = &cases[7];
    check_pages(&service, &records, query, expect, 7).await?;
    for (query, expect) in [&cases[0], &cases[4], &cases[9], &cases[12]] {
        let walked = walk_with_cursor(&service, query, 50, |_| async { Ok(()) }).await?;
        ensure!(
            walked == expect.ids(&records),
            "{query}: the cursor walk differs"
        );
    }
    service.stop().await
}

#[tokio::test]
async fn items_carry_every_field_with_iso_times() -> Result<()> {
    let ctx = TestContext::new("query-items").await?;
    let service = Service::start(&ctx, |_| {}).await?;
    let db = database(&ctx).await?;
    let mut records = seed(&db, 40).await?;
    // One event that was dead-lettered and is waiting for a retry time is enough to see every optional field.
    let id = records[14].event_id.as_str().to_owned();
    db.collection::<mongodb::bson::Document>(herald_platform::mongo::EVENTS)
        .update_one(
            mongodb::bson::doc! { "eventId": &id },
            mongodb::bson::doc! { "$set": {
                "status": "DEAD_LETTERED", "attemptCount": 3_i64, "lastError": "smtp 550 unknown recipient",
                "deadLetterReason": "permanent error", "deadLetteredAt": mongodb::bson::DateTime::from_millis(1_715_342_400_000),
                "nextAttemptAt": mongodb::bson::DateTime::from_millis(1_715_342_460_500),
            } },
        )
        .await?;
    records[14].status = Status::DeadLettered;
    let body = service
        .ok(&format!(
            "/api/logs?userId={}&status=DEAD_LETTERED",
            records[14].user_id.as_deref().unwrap_or_default()
        ))
        .await?;
    let item = body["data"]
        .as_array()
        .and_then(|items| items.iter().find(|item| item["eventId"] == json!(id)))
        .cloned()
        .unwrap_or(Value::Null);
    let r = &records[14];
    assert_eq!(
        item,
        json!({
            "eventId": id,
            "userId": r.user_id,
            "eventType": r.event_type,
            "channel": r.channel.map(|c| c.as_str()),
            "priority": r.priority.as_str(),
            "status": "DEAD_LETTERED",
            "attemptCount": 3,
            "replayCount": 0,
            "lastError": "smtp 550 unknown recipient",
            "payload": r.payload,
            "metadata": r.metadata,
            "createdAt": r.created_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "updatedAt": r.updated_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "nextAttemptAt": "2024-05-10T12:01:00.500Z",
            "deadLetterReason": "permanent error",
            "deadLetteredAt": "2024-05-10T12:00:00.000Z",
            "timestamp": r.created_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        })
    );
    ensure!(r.created_at < seed_end());
    // An event that was never dead-lettered has no dead-letter fields, and null for the other absent ones.
    let other = service.ok("/api/logs?limit=100").await?;
    let plain = other["data"]
        .as_array()
        .and_then(|items| items.iter().find(|item| item["eventId"] != json!(id)))
        .cloned()
        .unwrap_or(Value::Null);
    ensure!(plain.get("deadLetterReason").is_none(), "{plain}");
    ensure!(
        plain["nextAttemptAt"].is_null() && plain["lastError"].is_null(),
        "{plain}"
    );
    ensure!(
        plain.get("timeline").is_none() && plain.get("attempts").is_none(),
        "{plain}"
    );
    // Activity log entries (record-only events) carry their type as `activityType` too; others do not.
    for item in other["data"].as_array().cloned().unwrap_or_default() {
        let expected = if item["channel"].is_null() {
            item["eventType"].clone()
        } else {
            Value::Null
        };
        ensure!(
            item.get("activityType").cloned().unwrap_or(Value::Null) == expected,
            "{item}"
        );
        ensure!(item["timestamp"] == item["createdAt"], "{item}");
    }
    service.stop().await
}
