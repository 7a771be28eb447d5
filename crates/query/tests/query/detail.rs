//! `GET /api/logs/{id}` shows an event's whole life, step by step in order, as the writers recorded it through
//! the event store; an unknown id is 404.

use std::time::Duration;

use anyhow::{ensure, Result};
use chrono::{DateTime, Utc};
use herald_domain::{Attempt, AttemptOutcome, Channel, ErrorClass, Event, EventId, Priority};
use herald_platform::store::{
    Claim, DeadLettered, EventRecord, EventStore, Inserted, Scheduled, TimelineEntry,
};
use herald_test_support::TestContext;
use mongodb::bson::{self, doc, Document};
use serde_json::{json, Value};

use super::support::{database, Service};

fn iso(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn failed(number: u32, error: &str, http_status: u16) -> Attempt {
    let ended_at = Utc::now().trunc_subsecs_ms();
    Attempt {
        number,
        provider: "webhook".into(),
        started_at: ended_at - chrono::Duration::milliseconds(120),
        ended_at,
        outcome: AttemptOutcome::Failed,
        error_class: Some(ErrorClass::Retryable),
        error: Some(error.into()),
        http_status: Some(http_status),
        // A 503 may say when to come back.
        retry_after_secs: (http_status == 503).then_some(7),
    }
}

trait TruncMs {
    fn trunc_subsecs_ms(self) -> Self;
}

impl TruncMs for DateTime<Utc> {
    fn trunc_subsecs_ms(self) -> Self {
        chrono::SubsecRound::trunc_subsecs(self, 3)
    }
}

#[tokio::test]
async fn the_detail_shows_every_step_in_order_and_404_for_an_unknown_id() -> Result<()> {
    let ctx = TestContext::new("query-detail").await?;
    let service = Service::start(&ctx, |_| {}).await?;
    let db = database(&ctx).await?;
    let store = EventStore::new(&db);
    let lease = Duration::from_secs(30);

    let event = Event {
        event_id: EventId::parse("order-42:shipped")?,
        user_id: Some("user-42".into()),
        event_type: Some("order.shipped".into()),
        channel: Some(Channel::Webhook),
        priority: Priority::Critical,
        payload: json!({"url": "https://example.com/hook", "body": {"order": 42}}),
        metadata: Some(json!({"source": "shop"})),
        created_at: Utc::now().trunc_subsecs_ms(),
    };
    let id = event.event_id.clone();
    ensure!(
        store
            .insert_accepted(&EventRecord::accepted(&event), None)
            .await?
            == Inserted::New
    );
    ensure!(matches!(
        store.claim(&id, 1, 0, lease).await?,
        Claim::Send(_)
    ));
    let first = failed(1, "http 503 from receiver", 503);
    ensure!(store.record_failed(&id, &first, 0).await?);
    let due = (Utc::now() + chrono::Duration::seconds(30)).trunc_subsecs_ms();
    ensure!(
        store
            .schedule_retry(&id, 1, 0, due, format!("due at {}", iso(due)))
            .await?
            == Scheduled::Now
    );
    ensure!(matches!(
        store.claim(&id, 2, 0, lease).await?,
        Claim::Send(_)
    ));
    let second = failed(2, "http 500 from receiver", 500);
    ensure!(store.record_failed(&id, &second, 0).await?);
    ensure!(matches!(
        store.dead_letter(&id, 2, 0, "out of attempts").await?,
        DeadLettered::Now(_)
    ));
    // A replay, as the replay path records it: QUEUED again with a fresh budget and a `replayed` step.
    let replayed = bson::to_bson(&TimelineEntry {
        detail: Some("replay of DEAD_LETTERED channel=webhook".into()),
        ..TimelineEntry::now("replayed")
    })?;
    db.collection::<Document>(herald_platform::mongo::EVENTS)
        .update_one(
            doc! { "eventId": id.as_str(), "status": "DEAD_LETTERED" },
            doc! {
                "$set": { "status": "QUEUED", "replayCount": 1_i64, "attemptCount": 0_i64 },
                "$push": { "timeline": replayed },
            },
        )
        .await?;

    let body = service.ok("/api/logs/order-42:shipped").await?;
    let kinds: Vec<&str> = body["timeline"]
        .as_array()
        .map(|steps| steps.iter().filter_map(|s| s["kind"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        kinds,
        [
            "accepted",
            "attempt",
            "retry_scheduled",
            "attempt",
            "dead_lettered",
            "replayed"
        ]
    );
    let steps = body["timeline"].as_array().cloned().unwrap_or_default();
    let attempt_json = |a: &Attempt| {
        json!({
            "number": a.number, "provider": "webhook", "startedAt": iso(a.started_at), "endedAt": iso(a.ended_at),
            "outcome": "failed", "errorClass": "retryable", "error": a.error, "httpStatus": a.http_status,
            "retryAfterSecs": a.retry_after_secs,
        })
    };
    assert_eq!(steps[1]["attempt"], attempt_json(&first));
    assert_eq!(steps[3]["attempt"], attempt_json(&second));
    assert_eq!(steps[2]["detail"], json!(format!("due at {}", iso(due))));
    assert_eq!(steps[4]["detail"], json!("out of attempts"));
    assert_eq!(
        steps[5]["detail"],
        json!("replay of DEAD_LETTERED channel=webhook")
    );
    assert_eq!(
        body["attempts"],
        json!([attempt_json(&first), attempt_json(&second)])
    );
    // Every step has a time, and the times never go backwards.
    let times: Vec<&str> = steps.iter().filter_map(|s| s["at"].as_str()).collect();
    ensure!(times.len() == steps.len(), "{steps:?}");
    ensure!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    // The event itself, as it is now.
    for (field, value) in [
        ("eventId", json!("order-42:shipped")),
        ("status", json!("QUEUED")),
        ("channel", json!("webhook")),
        ("priority", json!("critical")),
        ("attemptCount", json!(0)),
        ("replayCount", json!(1)),
        ("lastError", json!("http 500 from receiver")),
        ("deadLetterReason", json!("out of attempts")),
        ("createdAt", json!(iso(event.created_at))),
        ("payload", event.payload.clone()),
        ("metadata", json!({"source": "shop"})),
    ] {
        ensure!(
            body[field] == value,
            "{field}: {} is not {value}",
            body[field]
        );
    }

    let (status, body) = service.get("/api/logs/no-such-event").await?;
    assert_eq!(
        (status, body),
        (404, json!({"error": "Event not found", "details": []}))
    );
    let (status, body): (u16, Value) = service.get("/api/nothing/here").await?;
    assert_eq!((status, body["error"].clone()), (404, json!("Not found")));
    service.stop().await
}
