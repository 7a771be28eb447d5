//! `HERALD_QUERY_MASK_FIELDS` hides the configured payload and metadata fields in lists and details, and
//! nothing else.

use anyhow::{ensure, Result};
use herald_test_support::TestContext;
use serde_json::{json, Value};

use super::support::{database, seed, Service};

#[tokio::test]
async fn configured_fields_are_masked_in_lists_and_details() -> Result<()> {
    let ctx = TestContext::new("query-masking").await?;
    let masked = Service::start(&ctx, |config| {
        config.mask = "payload.to,payload.phoneNumber,metadata.ip"
            .parse()
            .expect("valid paths");
    })
    .await?;
    let plain = Service::start(&ctx, |_| {}).await?;
    let records = seed(&database(&ctx).await?, 20).await?;
    let record = &records[4];
    let id = record.event_id.as_str();

    let list = masked.ok("/api/logs?limit=100").await?;
    let items = list["data"].as_array().cloned().unwrap_or_default();
    ensure!(items.len() == records.len(), "{}", items.len());
    for item in &items {
        ensure!(item["payload"]["to"] == json!("***"), "{item}");
        ensure!(item["payload"]["phoneNumber"] == json!("***"), "{item}");
        ensure!(
            item["payload"]["n"].is_number(),
            "unmasked fields stay: {item}"
        );
        if item["metadata"].is_object() {
            ensure!(item["metadata"]["ip"] == json!("***"), "{item}");
            ensure!(item["metadata"]["source"] == json!("seed"), "{item}");
        }
    }
    let detail = masked.ok(&format!("/api/logs/{id}")).await?;
    assert_eq!(
        detail["payload"],
        json!({"to": "***", "phoneNumber": "***", "n": 4})
    );
    assert_eq!(detail["metadata"], json!({"ip": "***", "source": "seed"}));
    // No masked value leaks anywhere in the answers.
    let secret = record.payload["to"].as_str().unwrap_or_default().to_owned();
    ensure!(!secret.is_empty());
    for body in [&list, &detail] {
        ensure!(!body.to_string().contains(&secret), "{secret} leaked");
    }

    // Without the setting the same events show their values.
    let unmasked: Value = plain.ok(&format!("/api/logs/{id}")).await?;
    assert_eq!(unmasked["payload"], record.payload);
    assert_eq!(unmasked["metadata"], json!(record.metadata));
    masked.stop().await?;
    plain.stop().await
}

#[tokio::test]
async fn errors_that_quote_a_masked_value_are_scrubbed_too() -> Result<()> {
    let ctx = TestContext::new("query-masking-errors").await?;
    let masked = Service::start(&ctx, |config| {
        config.mask = "payload.to".parse().expect("valid paths");
    })
    .await?;
    let mut record = super::support::seeded(3);
    let secret = record.payload["to"].as_str().unwrap_or_default().to_owned();
    let error = format!("550 5.1.1 <{secret}>: recipient rejected");
    let attempt: herald_domain::Attempt = serde_json::from_value(json!({
        "number": 1, "provider": "smtp", "startedAt": "2026-11-21T10:00:00Z", "endedAt": "2026-11-21T10:00:01Z",
        "outcome": "failed", "errorClass": "permanent", "error": error, "httpStatus": 550
    }))?;
    record.status = herald_domain::Status::DeadLettered;
    record.last_error = Some(error.clone());
    record.attempts.push(attempt.clone());
    record.timeline.push(herald_platform::store::TimelineEntry {
        at: attempt.ended_at,
        kind: "dead_lettered".into(),
        attempt: None,
        detail: Some(format!("permanent error: {error}")),
    });
    super::support::insert(&database(&ctx).await?, std::slice::from_ref(&record)).await?;

    let id = record.event_id.as_str();
    let detail = masked.ok(&format!("/api/logs/{id}")).await?;
    ensure!(
        !detail.to_string().contains(&secret),
        "{secret} leaked: {detail}"
    );
    assert_eq!(
        detail["lastError"],
        json!("550 5.1.1 <***>: recipient rejected")
    );
    assert_eq!(
        detail["attempts"][0]["error"],
        json!("550 5.1.1 <***>: recipient rejected")
    );
    let list = masked.ok("/api/logs").await?;
    ensure!(
        !list.to_string().contains(&secret),
        "{secret} leaked: {list}"
    );
    masked.stop().await
}
