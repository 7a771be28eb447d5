//! Accepted events: the 202 answer, the record in MongoDB, the message on the lane of their priority; the
//! activity-log and generated-event routes; the health routes; graceful shutdown.

use anyhow::{Context, Result};
use herald_domain::messages::{HEADER_ATTEMPT, HEADER_EVENT_ID, HEADER_REQUEST_ID};
use herald_domain::{Channel, Lane, Priority, Status};
use herald_test_support::TestContext;
use serde_json::json;

use super::support::{answer, lane_consumer, lane_count, next_message, record, Service};

#[tokio::test]
async fn a_critical_email_is_recorded_and_published_on_the_critical_lane() -> Result<()> {
    let ctx = TestContext::new("ingest-critical").await?;
    let service = Service::start(&ctx, |_| {}).await?;
    let body = json!({
        "userId": "user-7",
        "eventType": "order.shipped",
        "channel": "Email",
        "priority": "CRITICAL",
        "payload": {"to": "ada@example.com", "subject": "Shipped", "text": "On its way", "html": "<p>On its way</p>"},
        "metadata": {"orderId": 42},
    });
    let response = service
        .http
        .post(service.url("/event"))
        .header("x-request-id", "req-critical-1")
        .json(&body)
        .send()
        .await?;
    assert_eq!(
        response.headers().get("x-request-id").map(|v| v.as_bytes()),
        Some(&b"req-critical-1"[..]),
        "the request id is echoed"
    );
    let (status, accepted) = answer(response).await?;
    assert_eq!(status, 202, "{accepted}");
    let event_id = accepted["eventId"]
        .as_str()
        .context("an eventId")?
        .to_owned();
    assert_eq!(
        accepted,
        json!({"eventId": event_id, "status": "QUEUED", "priority": "critical"})
    );

    let stored = record(&ctx, &event_id)
        .await?
        .context("the event is stored")?;
    assert_ne!(
        stored.status,
        Status::Pending,
        "accepted events are stored QUEUED"
    );
    assert_eq!(stored.channel, Some(Channel::Email));
    assert_eq!(stored.priority, Priority::Critical);
    assert_eq!(stored.user_id.as_deref(), Some("user-7"));
    assert_eq!(stored.payload, body["payload"]);
    assert_eq!(stored.metadata, Some(json!({"orderId": 42})));

    let consumer = lane_consumer(&ctx, Lane::Critical).await?;
    let received = next_message(&consumer).await?;
    assert_eq!(
        received.message.event,
        stored.event(),
        "the lane carries the stored event"
    );
    assert_eq!(received.message.attempt, 1);
    assert_eq!(
        received.key, "user-7",
        "one user's events share a partition"
    );
    assert_eq!(received.headers.get(HEADER_EVENT_ID), Some(&event_id));
    assert_eq!(
        received.headers.get(HEADER_ATTEMPT).map(String::as_str),
        Some("1")
    );
    assert_eq!(
        received.headers.get(HEADER_REQUEST_ID).map(String::as_str),
        Some("req-critical-1")
    );
    assert_eq!(lane_count(&ctx, Lane::Critical).await?, 1);
    assert_eq!(
        lane_count(&ctx, Lane::Default).await?,
        0,
        "critical traffic stays off the default lane"
    );
    service.stop().await
}

#[tokio::test]
async fn a_national_sms_number_is_stored_and_published_in_e164() -> Result<()> {
    let ctx = TestContext::new("ingest-sms").await?;
    let service = Service::start(&ctx, |_| {}).await?;
    let body = json!({"channel": "sms", "payload": {"phoneNumber": "(202) 555-5555", "message": "Your code is 1234"}});
    let (status, accepted) = service.post("/event", &body).await?;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["priority"], "default");
    let event_id = accepted["eventId"].as_str().context("an eventId")?;

    let expected = json!({"phoneNumber": "+12025555555", "message": "Your code is 1234"});
    let stored = record(&ctx, event_id)
        .await?
        .context("the event is stored")?;
    assert_eq!(stored.payload, expected);

    let consumer = lane_consumer(&ctx, Lane::Default).await?;
    let received = next_message(&consumer).await?;
    assert_eq!(received.message.event.event_id.as_str(), event_id);
    assert_eq!(received.message.event.payload, expected);
    assert_eq!(
        received.key, event_id,
        "an event without a user is keyed by its own id"
    );
    assert!(
        received
            .headers
            .get(HEADER_REQUEST_ID)
            .is_some_and(|id| !id.is_empty()),
        "a request id is generated when the client sends none: {:?}",
        received.headers
    );
    assert_eq!(lane_count(&ctx, Lane::Critical).await?, 0);
    service.stop().await
}

#[tokio::test]
async fn an_activity_log_is_a_record_only_event() -> Result<()> {
    let ctx = TestContext::new("ingest-logs").await?;
    let service = Service::start(&ctx, |_| {}).await?;
    let body = json!({"userId": "user-9", "activityType": "profile.updated", "metadata": {"field": "email"},
        "timestamp": "2024-05-01T14:00:00+02:00"});
    let (status, accepted) = service.post("/api/logs", &body).await?;
    assert_eq!(status, 202, "{accepted}");
    let event_id = accepted["eventId"].as_str().context("an eventId")?;
    assert_eq!(
        accepted,
        json!({"success": true, "message": "Activity log published successfully", "eventId": event_id,
            "status": "QUEUED", "priority": "default"})
    );

    let stored = record(&ctx, event_id)
        .await?
        .context("the event is stored")?;
    assert_eq!(stored.channel, None, "record-only");
    assert_eq!(stored.event_type.as_deref(), Some("profile.updated"));
    assert_eq!(stored.user_id.as_deref(), Some("user-9"));
    assert_eq!(
        stored.payload,
        json!({"activityType": "profile.updated", "timestamp": "2024-05-01T12:00:00Z"})
    );
    assert_eq!(stored.metadata, Some(json!({"field": "email"})));

    let consumer = lane_consumer(&ctx, Lane::Default).await?;
    let received = next_message(&consumer).await?;
    assert_eq!(received.message.event, stored.event());

    let (status, rejected) = service
        .post("/api/logs", &json!({"userId": "user-9"}))
        .await?;
    assert_eq!(status, 400);
    assert_eq!(
        rejected,
        json!({"error": "Validation failed", "details": [{"field": "activityType", "message": "is required"}]})
    );
    service.stop().await
}

/// The activity-event service's `POST /events/generate`, with its documented body: a record-only event whose
/// payload is kept, answered with that service's `message` and `eventId`.
#[tokio::test]
async fn a_generated_user_event_is_a_record_only_event() -> Result<()> {
    let ctx = TestContext::new("ingest-generate").await?;
    let service = Service::start(&ctx, |_| {}).await?;
    let body = json!({"userId": "user123", "eventType": "LOGIN", "payload": {"ip": "127.0.0.1"}});
    let (status, accepted) = service.post("/events/generate", &body).await?;
    assert_eq!(status, 202, "{accepted}");
    let event_id = accepted["eventId"].as_str().context("an eventId")?;
    assert_eq!(
        accepted,
        json!({"success": true, "message": "Event published successfully", "eventId": event_id,
            "status": "QUEUED", "priority": "default"})
    );
    let stored = record(&ctx, event_id)
        .await?
        .context("the event is stored")?;
    assert_eq!(stored.channel, None, "record-only");
    assert_eq!(stored.user_id.as_deref(), Some("user123"));
    assert_eq!(stored.event_type.as_deref(), Some("LOGIN"));
    assert_eq!(stored.payload, json!({"ip": "127.0.0.1"}));
    let consumer = lane_consumer(&ctx, Lane::Default).await?;
    let received = next_message(&consumer).await?;
    assert_eq!(received.message.event, stored.event());

    let (status, rejected) = service
        .post(
            "/events/generate",
            &json!({"userId": "user123", "type": "LOGIN"}),
        )
        .await?;
    assert_eq!(status, 400);
    assert_eq!(
        rejected,
        json!({"error": "Validation failed", "details": [
            {"field": "eventType", "message": "is required"},
            {"field": "type", "message": "unknown field, expected one of: userId, eventType, payload"},
        ]})
    );
    service.stop().await
}

#[tokio::test]
async fn health_and_readiness_answer() -> Result<()> {
    let ctx = TestContext::new("ingest-health").await?;
    let service = Service::start(&ctx, |_| {}).await?;
    let (status, body) = answer(service.http.get(service.url("/api/health")).send().await?).await?;
    assert_eq!(
        (status, body),
        (200, json!({"status": "ok", "service": "herald-ingest"}))
    );
    let (status, body) = answer(service.http.get(service.url("/api/ready")).send().await?).await?;
    assert_eq!((status, body), (200, json!({"status": "ready"})));
    let (status, body) = answer(service.http.get(service.url("/nowhere")).send().await?).await?;
    assert_eq!(
        (status, body),
        (404, json!({"error": "Not found", "details": []}))
    );
    let (status, body) = answer(service.http.get(service.url("/event")).send().await?).await?;
    assert_eq!(
        (status, body),
        (405, json!({"error": "Method not allowed", "details": []}))
    );
    service.stop().await
}

#[tokio::test]
async fn shutdown_stops_accepting_connections() -> Result<()> {
    let ctx = TestContext::new("ingest-shutdown").await?;
    let service = Service::start(&ctx, |_| {}).await?;
    let url = service.url("/api/health");
    let http = service.http.clone();
    assert_eq!(http.get(&url).send().await?.status().as_u16(), 200);
    service.stop().await?;
    let after = reqwest::Client::new().get(&url).send().await;
    assert!(after.is_err(), "still answering after shutdown: {after:?}");
    Ok(())
}
