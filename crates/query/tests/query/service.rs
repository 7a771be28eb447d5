//! The service around the routes: health and readiness, request ids, the request timeout, starting without
//! MongoDB.

use std::time::Duration;

use anyhow::{ensure, Result};
use herald_platform::MongoConfig;
use herald_query::Config;
use herald_test_support::TestContext;
use serde_json::json;

use super::support::{database, seed, Service};

#[tokio::test]
async fn health_ready_and_request_ids() -> Result<()> {
    let ctx = TestContext::new("query-health").await?;
    let service = Service::start(&ctx, |_| {}).await?;
    assert_eq!(
        service.get("/api/health").await?,
        (200, json!({"status": "ok", "service": "herald-query"}))
    );
    assert_eq!(
        service.get("/api/ready").await?,
        (200, json!({"status": "ready"}))
    );

    let response = service
        .http
        .get(service.url("/api/logs"))
        .header("x-request-id", "req-123")
        .send()
        .await?;
    ensure!(response
        .headers()
        .get("x-request-id")
        .is_some_and(|v| v == "req-123"));
    let response = service.http.get(service.url("/api/health")).send().await?;
    ensure!(
        response.headers().get("x-request-id").is_some(),
        "a request id is made when none is given"
    );

    // The indexes that serve the lists exist once the service has started.
    let names = database(&ctx)
        .await?
        .collection::<mongodb::bson::Document>(herald_platform::mongo::EVENTS)
        .list_index_names()
        .await?;
    for name in [
        "createdAt_eventId",
        "userId_createdAt_eventId",
        "status_createdAt_eventId",
    ] {
        ensure!(
            names.iter().any(|n| n == name),
            "no index {name}: {names:?}"
        );
    }
    service.stop().await
}

#[tokio::test]
async fn without_mongodb_it_starts_and_says_not_ready() -> Result<()> {
    let ctx = TestContext::new("query-no-mongo").await?;
    // Nothing listens on port 9 of the loopback.
    let mut config = Config::for_test(MongoConfig::new(
        "mongodb://127.0.0.1:9/?serverSelectionTimeoutMS=500",
        ctx.mongo.database.clone(),
    ));
    config.request_timeout = Duration::from_secs(5);
    let service = Service::start_with(config).await?;
    assert_eq!(service.get("/api/health").await?.0, 200);
    let (status, body) = service.get("/api/ready").await?;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], json!("Not ready"));
    assert_eq!(body["details"][0]["field"], json!("mongodb"));
    let (status, body) = service.get("/api/logs").await?;
    assert_eq!(
        (status, body["details"][0]["field"].clone()),
        (503, json!("mongodb")),
        "{body}"
    );
    service.stop().await
}

#[tokio::test]
async fn a_request_over_the_timeout_is_503() -> Result<()> {
    let ctx = TestContext::new("query-timeout").await?;
    let service = Service::start(&ctx, |config| {
        config.request_timeout = Duration::from_millis(1)
    })
    .await?;
    seed(&database(&ctx).await?, 200).await?;
    let (status, body) = service.get("/api/stats").await?;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], json!("Request timed out"));
    service.stop().await
}
