//! `GET /api/alerts` and `GET /api/alerts/{id}` over alerts stored the way `herald-alert` stores them.

use anyhow::{ensure, Result};
use chrono::{DateTime, Duration, TimeZone, Utc};
use herald_platform::alerts::{AlertRecord, EmailState, EmailStatus, ALERTS};
use herald_test_support::TestContext;
use mongodb::Database;
use serde_json::json;

use super::support::{database, Service};

/// Noon of 2024-06-01 (UTC): the seeded alerts are raised a minute apart from then on.
fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 6, 1, 12, 0, 0)
        .single()
        .expect("a valid time")
}

/// An alert as `herald-alert` stores it.
pub fn alert(rule: &str, group: &str, seq: u32, created_at: DateTime<Utc>) -> AlertRecord {
    AlertRecord {
        id: format!("a{}{seq}{}", created_at.timestamp(), group.len()),
        rule: rule.to_owned(),
        group: group.to_owned(),
        seq,
        severity: "warning".into(),
        count: 6,
        threshold: 6,
        window_secs: 600,
        cooldown_secs: 1800,
        first_at: created_at - Duration::minutes(5),
        last_at: created_at,
        sample_event_ids: vec!["ev-1".into(), "ev-2".into()],
        query_url: "http://localhost:3001/api/logs?eventType=request.failed".into(),
        recipients: vec!["ops@example.com".into()],
        subject: format!("[Herald WARNING] {rule}: {group}"),
        text: "6 matching events".into(),
        email: EmailState {
            status: EmailStatus::Sent,
            attempts: 1,
            last_error: None,
            next_attempt_at: None,
            sent_at: Some(created_at),
        },
        created_at,
    }
}

/// Stores one alert and returns it.
pub async fn seed_alert(db: &Database, rule: &str, group: &str) -> Result<AlertRecord> {
    let stored = alert(rule, group, 0, start());
    db.collection::<AlertRecord>(ALERTS)
        .insert_one(&stored)
        .await?;
    Ok(stored)
}

fn ids(body: &serde_json::Value) -> Vec<String> {
    body["data"]
        .as_array()
        .map(|data| {
            data.iter()
                .filter_map(|a| a["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn alerts_are_listed_newest_first_with_filters_and_pages() -> Result<()> {
    let ctx = TestContext::new("query-alerts").await?;
    let db = database(&ctx).await?;
    let service = Service::start(&ctx, |_| {}).await?;
    // Twelve alerts a minute apart: rules alternate, groups cycle through three IPs.
    let stored: Vec<AlertRecord> = (0..12)
        .map(|i| {
            alert(
                if i % 2 == 0 {
                    "failed-requests"
                } else {
                    "channel-failures"
                },
                ["10.0.0.1", "10.0.0.2", "10.0.0.3"][i % 3],
                0,
                start() + Duration::minutes(i as i64),
            )
        })
        .collect();
    db.collection::<AlertRecord>(ALERTS)
        .insert_many(&stored)
        .await?;
    let newest_first = |keep: &dyn Fn(&AlertRecord) -> bool| -> Vec<String> {
        stored
            .iter()
            .rev()
            .filter(|a| keep(a))
            .map(|a| a.id.clone())
            .collect()
    };

    let all = service.ok("/api/alerts").await?;
    ensure!(ids(&all) == newest_first(&|_| true)[..10], "{all}");
    ensure!(
        all["pagination"]
            == json!({"page": 1, "limit": 10, "total": 12, "pages": 2, "nextCursor": null}),
        "{}",
        all["pagination"]
    );
    let first = &all["data"][0];
    ensure!(
        first["rule"] == "channel-failures" && first["group"] == "10.0.0.3",
        "{first}"
    );
    ensure!(
        first["email"]["status"] == "sent" && first["count"] == 6,
        "{first}"
    );
    ensure!(first["createdAt"] == "2024-06-01T12:11:00Z", "{first}");

    let by_rule = service
        .ok("/api/alerts?rule=failed-requests&limit=100")
        .await?;
    ensure!(ids(&by_rule) == newest_first(&|a| a.rule == "failed-requests"));
    let by_both = service
        .ok("/api/alerts?rule=failed-requests&group=10.0.0.1")
        .await?;
    ensure!(
        ids(&by_both) == newest_first(&|a| a.rule == "failed-requests" && a.group == "10.0.0.1"),
        "{by_both}"
    );
    let window = service
        .ok("/api/alerts?from=2024-06-01T12:03:00Z&to=2024-06-01T12:05:00Z")
        .await?;
    ensure!(
        ids(&window)
            == stored[3..=5]
                .iter()
                .rev()
                .map(|a| a.id.clone())
                .collect::<Vec<_>>()
    );
    let page = service.ok("/api/alerts?page=2&limit=5").await?;
    ensure!(ids(&page) == newest_first(&|_| true)[5..10]);

    let one = service.ok(&format!("/api/alerts/{}", stored[4].id)).await?;
    ensure!(
        one["id"] == stored[4].id.as_str() && one["sampleEventIds"] == json!(["ev-1", "ev-2"]),
        "{one}"
    );
    ensure!(
        one["windowSecs"] == 600 && one["recipients"] == json!(["ops@example.com"]),
        "{one}"
    );

    let (status, body) = service.get("/api/alerts/doesnotexist").await?;
    ensure!(
        status == 404 && body == json!({"error": "Alert not found", "details": []}),
        "{body}"
    );
    let (status, body) = service.get("/api/alerts/not-an-id!").await?;
    ensure!(
        status == 400 && body["details"][0]["field"] == "id",
        "{body}"
    );
    let (status, body) = service
        .get("/api/alerts?limit=0&colour=red&from=yesterday&rule=")
        .await?;
    let fields: Vec<&str> = body["details"]
        .as_array()
        .map(|d| d.iter().filter_map(|e| e["field"].as_str()).collect())
        .unwrap_or_default();
    ensure!(
        status == 400 && body["error"] == "Validation failed",
        "{body}"
    );
    ensure!(fields == ["colour", "from", "limit", "rule"], "{body}");

    service.stop().await?;
    db.drop().await?;
    Ok(())
}
