//! Every bad parameter is answered 400 in the standard shape, with a detail naming it; never 500.

use anyhow::{ensure, Result};
use herald_query::logs::cursor::Cursor;
use herald_query::logs::{Filters, SortOrder};
use herald_test_support::TestContext;
use serde_json::json;

use super::support::{database, seed, Service};

/// The fields named in a 400 answer to `path`, checking the answer's shape.
async fn rejected(service: &Service, path: &str) -> Result<Vec<String>> {
    let (status, body) = service.get(path).await?;
    ensure!(status == 400, "GET {path}: {status} {body}");
    ensure!(
        body["error"] == json!("Validation failed"),
        "GET {path}: {body}"
    );
    let details = body["details"].as_array().cloned().unwrap_or_default();
    ensure!(!details.is_empty(), "GET {path}: no details");
    let mut fields = Vec::new();
    for detail in details {
        let message = detail["message"].as_str().unwrap_or_default();
        ensure!(
            !message.is_empty(),
            "GET {path}: a detail without message: {detail}"
        );
        fields.push(detail["field"].as_str().unwrap_or_default().to_owned());
    }
    Ok(fields)
}

#[tokio::test]
async fn every_bad_parameter_is_named_in_a_400() -> Result<()> {
    let ctx = TestContext::new("query-validation").await?;
    let service = Service::start(&ctx, |_| {}).await?;
    seed(&database(&ctx).await?, 30).await?;
    let other_walk = Cursor::after(
        SortOrder::NewestFirst,
        &Filters::default(),
        chrono::Utc::now(),
        herald_domain::EventId::parse("ev-1").expect("valid"),
    )
    .encode();
    let cases: Vec<(String, Vec<&str>)> = vec![
        ("limit=0".into(), vec!["limit"]),
        ("limit=101".into(), vec!["limit"]),
        ("limit=-1".into(), vec!["limit"]),
        ("limit=".into(), vec!["limit"]),
        ("page=0".into(), vec!["page"]),
        ("page=x".into(), vec!["page"]),
        ("page=102&limit=100".into(), vec!["page"]),
        ("status=LOST".into(), vec!["status"]),
        ("channel=pigeon".into(), vec!["channel"]),
        ("priority=urgent".into(), vec!["priority"]),
        ("from=yesterday".into(), vec!["from"]),
        ("to=2024-02-30".into(), vec!["to"]),
        ("startDate=2024-05-01T10:00:00".into(), vec!["startDate"]),
        ("endDate=1714557600".into(), vec!["endDate"]),
        ("from=2024-05-02&to=2024-05-01".into(), vec!["to"]),
        (
            "from=2024-05-01&startDate=2024-05-01".into(),
            vec!["startDate"],
        ),
        ("eventType=a&activityType=b".into(), vec!["activityType"]),
        ("cursor=not-a-cursor".into(), vec!["cursor"]),
        (format!("status=QUEUED&cursor={other_walk}"), vec!["cursor"]),
        (
            format!("sort=createdAt&cursor={other_walk}"),
            vec!["cursor"],
        ),
        (format!("page=2&cursor={other_walk}"), vec!["page"]),
        ("sort=name".into(), vec!["sort"]),
        ("user=ada".into(), vec!["user"]),
        ("userId=a&userId=b".into(), vec!["userId"]),
        ("userId=".into(), vec!["userId"]),
        (format!("userId={}", "u".repeat(257)), vec!["userId"]),
        (
            "limit=0&page=0&status=x&channel=y&priority=z&from=w&colour=red".into(),
            vec![
                "channel", "colour", "from", "limit", "page", "priority", "status",
            ],
        ),
    ];
    for (query, expected) in &cases {
        let fields = rejected(&service, &format!("/api/logs?{query}")).await?;
        ensure!(
            &fields == expected,
            "GET /api/logs?{query}: named {fields:?}, not {expected:?}"
        );
    }
    for (query, expected) in [
        ("from=soon", vec!["from"]),
        ("status=QUEUED", vec!["status"]),
        ("startDate=2024-05-03&endDate=2024-05-01", vec!["endDate"]),
    ] {
        let fields = rejected(&service, &format!("/api/stats?{query}")).await?;
        ensure!(
            fields == expected,
            "GET /api/stats?{query}: named {fields:?}, not {expected:?}"
        );
    }
    let fields = rejected(&service, &format!("/api/logs/{}", "x".repeat(129))).await?;
    ensure!(fields == ["id"], "{fields:?}");
    let fields = rejected(&service, "/api/logs/has%20space").await?;
    ensure!(fields == ["id"], "{fields:?}");
    // And the valid spellings of the same parameters are accepted.
    for query in [
        "limit=1",
        "limit=100&page=101",
        "status=retry_scheduled&channel=Webhook&priority=DEFAULT",
        "startDate=2024-05-01&endDate=2024-05-01",
        "sort=-createdAt",
    ] {
        let (status, body) = service.get(&format!("/api/logs?{query}")).await?;
        ensure!(status == 200, "GET /api/logs?{query}: {status} {body}");
    }
    service.stop().await
}
