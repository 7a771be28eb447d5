//! Every validation rule answers 400 with the exact error body, and a rejected request publishes nothing.

use anyhow::Result;
use herald_domain::Lane;
use herald_test_support::TestContext;
use serde_json::{json, Value};

use super::support::{answer, lane_count, Service};

/// Posts `body` to `/event` and checks the 400 answer lists exactly `details`, and that no lane got a message.
async fn assert_rejected(label: &str, body: Value, details: Value) -> Result<()> {
    let ctx = TestContext::new(label).await?;
    let service = Service::start(&ctx, |_| {}).await?;
    let (status, answer) = service.post("/event", &body).await?;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(
        answer,
        json!({"error": "Validation failed", "details": details})
    );
    assert_eq!(lane_count(&ctx, Lane::Critical).await?, 0);
    assert_eq!(lane_count(&ctx, Lane::Default).await?, 0);
    service.stop().await
}

#[tokio::test]
async fn missing_payload() -> Result<()> {
    assert_rejected(
        "ingest-no-payload",
        json!({"channel": "email"}),
        json!([{"field": "payload", "message": "is required"}]),
    )
    .await
}

#[tokio::test]
async fn bad_email_address() -> Result<()> {
    assert_rejected(
        "ingest-bad-email",
        json!({"channel": "email", "payload": {"to": "ada-at-example.com", "subject": "Hi", "text": "Hello"}}),
        json!([{"field": "payload.to", "message": "must be a valid email address"}]),
    )
    .await
}

#[tokio::test]
async fn email_without_text_or_html() -> Result<()> {
    assert_rejected(
        "ingest-email-no-body",
        json!({"channel": "email", "payload": {"to": "ada@example.com", "subject": "Hi"}}),
        json!([{"field": "payload.text", "message": "an email needs a body: give text, html or both (not empty)"}]),
    )
    .await
}

#[tokio::test]
async fn invalid_sms_number() -> Result<()> {
    assert_rejected(
        "ingest-bad-sms",
        json!({"channel": "sms", "payload": {"phoneNumber": "12345", "message": "hi"}}),
        json!([{"field": "payload.phoneNumber",
            "message": "is not a valid phone number (national numbers are read as US; use +<country code> otherwise)"}]),
    )
    .await
}

#[tokio::test]
async fn webhook_ftp_url() -> Result<()> {
    assert_rejected(
        "ingest-ftp-url",
        json!({"channel": "webhook", "payload": {"url": "ftp://files.example.com/drop", "body": {"a": 1}}}),
        json!([{"field": "payload.url", "message": "must be an http or https URL, not ftp"}]),
    )
    .await
}

#[tokio::test]
async fn unknown_channel() -> Result<()> {
    assert_rejected(
        "ingest-bad-channel",
        json!({"channel": "pigeon", "payload": {}}),
        json!([{"field": "channel", "message": "unknown channel 'pigeon', expected one of: email, sms, webhook, push"}]),
    )
    .await
}

#[tokio::test]
async fn unknown_priority() -> Result<()> {
    assert_rejected(
        "ingest-bad-priority",
        json!({"priority": "urgent", "payload": {}}),
        json!([{"field": "priority", "message": "unknown priority 'urgent', expected one of: critical, default"}]),
    )
    .await
}

#[tokio::test]
async fn bad_event_id() -> Result<()> {
    assert_rejected(
        "ingest-bad-event-id",
        json!({"eventId": "order 42", "payload": {}}),
        json!([{"field": "eventId", "message": "may contain only letters, digits and the characters - _ . :"}]),
    )
    .await
}

#[tokio::test]
async fn unknown_field() -> Result<()> {
    assert_rejected(
        "ingest-unknown-field",
        json!({"chanel": "email", "payload": {}}),
        json!([{"field": "chanel",
            "message": "unknown field, expected one of: eventId, userId, eventType, channel, priority, payload, metadata, provider"}]),
    )
    .await
}

#[tokio::test]
async fn several_problems_are_listed_together() -> Result<()> {
    assert_rejected(
        "ingest-many-problems",
        json!({"userId": 42, "channel": "email", "priority": "soon",
            "payload": {"to": "nobody", "subject": "Hi", "txt": "typo"}}),
        json!([
            {"field": "payload.text", "message": "an email needs a body: give text, html or both (not empty)"},
            {"field": "payload.to", "message": "must be a valid email address"},
            {"field": "payload.txt", "message": "unknown field, expected one of: to, subject, text, html"},
            {"field": "priority", "message": "unknown priority 'soon', expected one of: critical, default"},
            {"field": "userId", "message": "must be a string, not a number"},
        ]),
    )
    .await
}

#[tokio::test]
async fn a_bad_idempotency_key_is_listed_with_the_body_problems() -> Result<()> {
    let ctx = TestContext::new("ingest-bad-key").await?;
    let service = Service::start(&ctx, |_| {}).await?;
    let key = "k".repeat(300);
    let (status, answer) = service
        .post_with(
            "/event",
            &json!({"priority": "low", "payload": {}}),
            &[("Idempotency-Key", &key)],
        )
        .await?;
    assert_eq!(status, 400);
    assert_eq!(
        answer,
        json!({"error": "Validation failed", "details": [
            {"field": "headers.Idempotency-Key", "message": "must be 1 to 255 characters long"},
            {"field": "priority", "message": "unknown priority 'low', expected one of: critical, default"},
        ]})
    );
    service.stop().await
}

#[tokio::test]
async fn malformed_json() -> Result<()> {
    let ctx = TestContext::new("ingest-malformed").await?;
    let service = Service::start(&ctx, |_| {}).await?;
    let response = service
        .http
        .post(service.url("/event"))
        .header("content-type", "application/json")
        .body(r#"{"channel": "email", "payload": {"#)
        .send()
        .await?;
    let (status, body) = answer(response).await?;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"error": "Malformed JSON", "details": [
            {"field": "body", "message": "EOF while parsing an object at line 1 column 33"}]})
    );
    service.stop().await
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() -> Result<()> {
    let ctx = TestContext::new("ingest-too-large").await?;
    let service = Service::start(&ctx, |config| config.max_body_bytes = 1024).await?;
    let big = json!({"payload": {"blob": "x".repeat(2000)}});
    let (status, body) = service.post("/event", &big).await?;
    assert_eq!(status, 413);
    assert_eq!(
        body,
        json!({"error": "Payload too large", "details": [{"field": "body", "message": "must be at most 1024 bytes"}]})
    );
    // Just under the limit is fine.
    let fits = json!({"payload": {"blob": "x".repeat(900)}});
    let (status, body) = service.post("/event", &fits).await?;
    assert_eq!(status, 202, "{body}");
    service.stop().await
}

#[tokio::test]
async fn a_body_that_is_not_json_is_415() -> Result<()> {
    let ctx = TestContext::new("ingest-media-type").await?;
    let service = Service::start(&ctx, |_| {}).await?;
    let response = service
        .http
        .post(service.url("/event"))
        .header("content-type", "text/plain")
        .body(r#"{"payload": {}}"#)
        .send()
        .await?;
    let (status, body) = answer(response).await?;
    assert_eq!(status, 415);
    assert_eq!(
        body,
        json!({"error": "Unsupported media type", "details": [
            {"field": "headers.Content-Type", "message": "must be application/json, not text/plain"}]})
    );
    // No content type at all is refused the same way.
    let response = service
        .http
        .post(service.url("/event"))
        .body("{}")
        .send()
        .await?;
    assert_eq!(response.status().as_u16(), 415);
    service.stop().await
}
