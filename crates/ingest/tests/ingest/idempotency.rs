//! A repeated `Idempotency-Key` or client `eventId` answers 200 with the original event and publishes nothing.

use anyhow::{Context, Result};
use herald_domain::{Lane, Status};
use herald_platform::store::IDEMPOTENCY_KEYS;
use herald_test_support::TestContext;
use mongodb::bson::{doc, Document};
use serde_json::json;

use super::support::{lane_consumer, lane_count, next_message, record, Service};

#[tokio::test]
async fn a_repeated_idempotency_key_answers_the_original_event() -> Result<()> {
    let ctx = TestContext::new("ingest-idem-key").await?;
    let service = Service::start(&ctx, |_| {}).await?;
    let body = json!({"userId": "u1", "channel": "email",
        "payload": {"to": "ada@example.com", "subject": "Receipt", "text": "Thanks"}});
    let key = [("Idempotency-Key", "receipt-u1-1001")];

    let (status, first) = service.post_with("/event", &body, &key).await?;
    assert_eq!(status, 202, "{first}");
    let (status, second) = service.post_with("/event", &body, &key).await?;
    assert_eq!(status, 200, "{second}");
    assert_eq!(
        second,
        json!({"eventId": first["eventId"], "status": "QUEUED", "priority": "default"})
    );

    // Even a different body under the same key is the same request.
    let mut changed = body.clone();
    changed["priority"] = json!("critical");
    let (status, third) = service.post_with("/event", &changed, &key).await?;
    assert_eq!(status, 200, "{third}");
    assert_eq!(third["eventId"], first["eventId"]);
    assert_eq!(
        third["priority"], "default",
        "the original event is answered"
    );

    assert_eq!(
        lane_count(&ctx, Lane::Default).await?,
        1,
        "published exactly once"
    );
    assert_eq!(lane_count(&ctx, Lane::Critical).await?, 0);
    service.stop().await
}

#[tokio::test]
async fn a_repeated_event_id_answers_the_original_event() -> Result<()> {
    let ctx = TestContext::new("ingest-idem-id").await?;
    let service = Service::start(&ctx, |_| {}).await?;
    let body = json!({"eventId": "invoice-7:sent", "channel": "webhook", "priority": "critical",
        "payload": {"url": "https://hooks.example.com/herald", "body": {"invoice": 7}}});

    let (status, first) = service.post("/event", &body).await?;
    assert_eq!(status, 202, "{first}");
    assert_eq!(
        first,
        json!({"eventId": "invoice-7:sent", "status": "QUEUED", "priority": "critical"})
    );
    let (status, second) = service.post("/event", &body).await?;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second, first);

    assert_eq!(
        lane_count(&ctx, Lane::Critical).await?,
        1,
        "published exactly once"
    );
    let stored = record(&ctx, "invoice-7:sent").await?.context("stored")?;
    assert_eq!(stored.status, Status::Queued);
    service.stop().await
}

#[tokio::test]
async fn a_key_whose_event_was_never_written_creates_that_event() -> Result<()> {
    let ctx = TestContext::new("ingest-idem-adopt").await?;
    let service = Service::start(&ctx, |_| {}).await?;
    // A first request recorded its key, then failed before writing its event.
    let db = herald_platform::mongo::connect(&ctx.mongo, "ingest-test").await?;
    db.collection::<Document>(IDEMPOTENCY_KEYS)
        .insert_one(doc! { "_id": "half-done", "eventId": "first-try-id" })
        .await?;

    let body = json!({"payload": {"note": "retried"}});
    let (status, accepted) = service
        .post_with("/event", &body, &[("Idempotency-Key", "half-done")])
        .await?;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(
        accepted["eventId"], "first-try-id",
        "the id the key named is the one created"
    );
    let stored = record(&ctx, "first-try-id")
        .await?
        .context("stored under the key's id")?;
    assert_eq!(stored.status, Status::Queued);

    let consumer = lane_consumer(&ctx, Lane::Default).await?;
    let received = next_message(&consumer).await?;
    assert_eq!(received.message.event.event_id.as_str(), "first-try-id");
    service.stop().await
}
