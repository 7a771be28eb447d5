//! The API's edges: every bad parameter reported with details, malformed JSON, content types, health routes.

use anyhow::Result;
use serde_json::json;

use super::support::{answer, Fixture, Service, Spec};

#[tokio::test]
async fn every_bad_replay_parameter_is_reported_at_once() -> Result<()> {
    let fx = Fixture::new("replay-bad-body").await?;
    fx.dead_letter(&Spec::new("kept")).await?;
    let service = Service::start(&fx.ctx, |_| {}).await?;

    let (status, body) = service
        .replay(&json!({
            "limit": 0, "since": "yesterday", "until": "2024-01-01", "channel": "pigeon", "priority": "urgent",
            "eventIds": ["ok", "not ok"], "dryRun": "yes", "colour": "red",
        }))
        .await?;
    assert_eq!(status, 400, "{body}");
    let known = "is not a known field; expected one of: eventIds, channel, eventType, priority, since, until, \
                 limit, from, dryRun";
    assert_eq!(
        body,
        json!({"error": "Validation failed", "details": [
            {"field": "channel", "message": "unknown channel 'pigeon', expected one of: email, sms, webhook, push"},
            {"field": "colour", "message": known},
            {"field": "dryRun", "message": "must be true or false"},
            {"field": "eventIds[1]", "message": "may contain only letters, digits and the characters - _ . :"},
            {"field": "limit", "message": "must be an integer from 1 to 10000"},
            {"field": "priority", "message": "unknown priority 'urgent', expected one of: critical, default"},
            {"field": "since", "message":
                "'yesterday' is not an ISO 8601 date-time with a time zone, such as 2024-05-01T12:00:00Z"},
            {"field": "until", "message":
                "'2024-01-01' is not an ISO 8601 date-time with a time zone, such as 2024-05-01T12:00:00Z"},
        ]})
    );

    for (bad, field, message) in [
        (
            json!({"limit": 10001}),
            "limit",
            "must be an integer from 1 to 10000",
        ),
        (
            json!({"since": "2024-02-01T00:00:00Z", "until": "2024-01-01T00:00:00Z"}),
            "since",
            "must not be later than until",
        ),
        (
            json!({"eventIds": []}),
            "eventIds",
            "must list at least one event id",
        ),
        (
            json!({"eventIds": "kept"}),
            "eventIds",
            "must be an array of event ids",
        ),
        (json!({"eventType": ""}), "eventType", "must not be empty"),
        (json!(["kept"]), "body", "must be a JSON object"),
    ] {
        let (status, body) = service.replay(&bad).await?;
        assert_eq!(status, 400, "{bad}");
        assert_eq!(
            body,
            json!({"error": "Validation failed", "details": [{"field": field, "message": message}]}),
            "{bad}"
        );
    }

    let post = |content_type: Option<&'static str>, body: &'static str| {
        let mut request = service
            .http
            .post(service.url("/replay-dead-letter"))
            .body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        request.send()
    };
    let (status, body) = answer(post(Some("application/json"), "{\"limit\": ").await?).await?;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "Malformed JSON");
    assert_eq!(body["details"][0]["field"], "body");
    let (status, body) = answer(post(Some("text/plain"), "{}").await?).await?;
    assert_eq!(
        (status, body),
        (
            415,
            json!({"error": "Unsupported media type", "details": [{"field": "headers.Content-Type",
                "message": "must be application/json, not text/plain"}]})
        )
    );
    let (status, body) = answer(post(None, "{\"dryRun\": true}").await?).await?;
    assert_eq!(status, 415, "a body needs its content type: {body}");
    let (status, body) = answer(post(Some("application/json"), "").await?).await?;
    assert_eq!(status, 200, "an empty JSON body is no filter: {body}");
    assert_eq!(body["eventIds"], json!(["kept"]));
    service.stop().await
}

#[tokio::test]
async fn every_bad_listing_parameter_is_reported_at_once() -> Result<()> {
    let fx = Fixture::new("replay-bad-query").await?;
    let service = Service::start(&fx.ctx, |_| {}).await?;
    let (status, body) = service
        .get("/api/dead-letters?page=0&limit=101&channel=fax&since=2024-13-01T00:00:00Z&eventIds=a,,b&sort=asc&dryRun=true")
        .await?;
    assert_eq!(status, 400, "{body}");
    let fields: Vec<&str> = body["details"]
        .as_array()
        .map(|d| d.iter().filter_map(|p| p["field"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(body["error"], "Validation failed");
    assert_eq!(
        fields,
        [
            "channel",
            "dryRun",
            "eventIds[1]",
            "limit",
            "page",
            "since",
            "sort"
        ]
    );
    for (query, field, message) in [
        ("limit=0", "limit", "must be an integer from 1 to 100"),
        ("limit=ten", "limit", "must be an integer from 1 to 100"),
        ("page=-1", "page", "must be an integer of at least 1"),
        (
            "priority=low",
            "priority",
            "unknown priority 'low', expected one of: critical, default",
        ),
        (
            "since=2024-03-01T00:00:00Z&until=2024-02-01T00:00:00Z",
            "since",
            "must not be later than until",
        ),
        ("limit=5&limit=6", "limit", "is given more than once"),
    ] {
        let (status, body) = service.get(&format!("/api/dead-letters?{query}")).await?;
        assert_eq!(status, 400, "{query}");
        assert_eq!(
            body,
            json!({"error": "Validation failed", "details": [{"field": field, "message": message}]}),
            "{query}"
        );
    }
    service.stop().await
}

#[tokio::test]
async fn health_readiness_and_unknown_routes_answer_in_the_standard_shape() -> Result<()> {
    let fx = Fixture::new("replay-health").await?;
    let service = Service::start(&fx.ctx, |_| {}).await?;
    assert_eq!(
        service.get("/api/health").await?,
        (200, json!({"status": "ok", "service": "herald-replay"}))
    );
    assert_eq!(
        service.get("/api/ready").await?,
        (200, json!({"status": "ready"}))
    );
    assert_eq!(
        service.get("/nowhere").await?,
        (404, json!({"error": "Not found", "details": []}))
    );
    assert_eq!(
        service.get("/replay-dead-letter").await?,
        (405, json!({"error": "Method not allowed", "details": []}))
    );
    let response = service
        .http
        .get(service.url("/api/health"))
        .header("x-request-id", "req-42")
        .send()
        .await?;
    assert_eq!(
        response.headers().get("x-request-id").map(|v| v.as_bytes()),
        Some(&b"req-42"[..])
    );
    service.stop().await
}
