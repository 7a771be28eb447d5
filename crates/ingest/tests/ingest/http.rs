//! What herald-ingest shares with every Herald HTTP service, checked here on the real stack: API keys and scopes,
//! the per-key rate limit, Prometheus metrics, and an OpenAPI document that lists exactly the routes served.

use std::collections::BTreeSet;

use anyhow::{ensure, Context, Result};
use herald_platform::http::auth::ApiKey;
use herald_platform::http::rate_limit::RateLimitConfig;
use herald_platform::http::AuthConfig;
use herald_test_support::http::{openapi_routes, parse_prometheus, sum_of};
use herald_test_support::TestContext;
use serde_json::{json, Value};

use super::support::{answer, Service};

const INGEST_KEY: &str = "ingest-key-for-tests-0001";
const READ_KEY: &str = "read-key-for-tests-000001";

fn keys() -> AuthConfig {
    AuthConfig::with_keys(vec![
        ApiKey::parse(&format!("svc:ingest:{INGEST_KEY}")).expect("valid key"),
        ApiKey::parse(&format!("ops:read:{READ_KEY}")).expect("valid key"),
    ])
}

fn event() -> Value {
    json!({"userId": "u-1", "eventType": "login", "payload": {"ip": "127.0.0.1"}})
}

#[tokio::test]
async fn every_event_route_needs_a_key_with_the_ingest_scope() -> Result<()> {
    let ctx = TestContext::new("ingest-auth").await?;
    let service = Service::start(&ctx, |config| config.http.auth = keys()).await?;
    for path in ["/event", "/api/logs"] {
        let body = if path == "/event" {
            event()
        } else {
            json!({"userId": "u-1", "activityType": "balance.inquiry"})
        };
        let response = service
            .http
            .post(service.url(path))
            .json(&body)
            .send()
            .await?;
        ensure!(
            response.headers().contains_key("www-authenticate"),
            "a 401 names the scheme"
        );
        let (status, error) = answer(response).await?;
        assert_eq!(
            (status, error["error"].clone()),
            (401, json!("Unauthorized")),
            "{path} without a key"
        );
        assert_eq!(error["details"][0]["field"], "headers.Authorization");

        let (status, _) = service
            .post_with(
                path,
                &body,
                &[("authorization", "Bearer not-a-key-of-ours-000")],
            )
            .await?;
        assert_eq!(status, 401, "{path} with an unknown key");

        let (status, error) = service
            .post_with(path, &body, &[("x-api-key", READ_KEY)])
            .await?;
        assert_eq!(
            (status, error["error"].clone()),
            (403, json!("Forbidden")),
            "{path} with a read key"
        );
        ensure!(error["details"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("`ingest`")));

        let (status, accepted) = service
            .post_with(
                path,
                &body,
                &[("authorization", &format!("Bearer {INGEST_KEY}"))],
            )
            .await?;
        assert_eq!(status, 202, "{path} with an ingest key: {accepted}");
        let (status, _) = service
            .post_with(path, &body, &[("x-api-key", INGEST_KEY)])
            .await?;
        assert_eq!(status, 202, "{path} with the key in X-API-Key");
    }
    // Health, readiness, metrics and the documents stay open.
    for path in ["/api/health", "/api/ready", "/metrics", "/api/openapi.json"] {
        let status = service
            .http
            .get(service.url(path))
            .send()
            .await?
            .status()
            .as_u16();
        assert_eq!(status, 200, "{path} without a key");
    }
    service.stop().await
}

#[tokio::test]
async fn a_key_over_its_rate_gets_429_with_retry_after_and_others_are_not_slowed() -> Result<()> {
    let ctx = TestContext::new("ingest-rate").await?;
    let service = Service::start(&ctx, |config| {
        config.http.auth = keys();
        config.rate_limit = RateLimitConfig {
            per_second: 1,
            burst: 3,
        };
    })
    .await?;
    let key = [("x-api-key", INGEST_KEY)];
    // The burst is spent by requests that fail validation: answered in milliseconds, so that no token comes back
    // before the fourth request, however loaded the machine (an accepted event can take a second to publish).
    for n in 0..3 {
        let (status, body) = service.post_with("/event", &json!({}), &key).await?;
        assert_eq!(status, 400, "request {n} is within the burst: {body}");
    }
    let response = service
        .http
        .post(service.url("/event"))
        .header("x-api-key", INGEST_KEY)
        .json(&event())
        .send()
        .await?;
    let retry_after: u64 = response
        .headers()
        .get("retry-after")
        .context("a 429 carries Retry-After")?
        .to_str()?
        .parse()?;
    let (status, body) = answer(response).await?;
    assert_eq!(
        (status, body["error"].clone()),
        (429, json!("Too many requests"))
    );
    ensure!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
    // A key without the scope is refused before it spends a token, and other keys have their own bucket: the read
    // key gets 403, not 429.
    let (status, _) = service
        .post_with("/event", &event(), &[("x-api-key", READ_KEY)])
        .await?;
    assert_eq!(status, 403);
    service.stop().await
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text_and_move_when_events_flow() -> Result<()> {
    let ctx = TestContext::new("ingest-metrics").await?;
    let service = Service::start(&ctx, |_| {}).await?;
    let scrape = || async {
        let response = service.http.get(service.url("/metrics")).send().await?;
        ensure!(response.status().as_u16() == 200);
        ensure!(response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("text/plain")));
        parse_prometheus(&response.text().await?).map_err(anyhow::Error::msg)
    };
    let before = scrape().await?;
    let n = 3;
    for _ in 0..n {
        let body = json!({"userId": "u-1", "channel": "webhook", "priority": "critical",
            "payload": {"url": "http://127.0.0.1:9/hook", "body": {}}});
        let (status, answer) = service.post("/event", &body).await?;
        assert_eq!(status, 202, "{answer}");
    }
    let (status, _) = service
        .post("/event", &json!({"channel": "pigeon"}))
        .await?;
    assert_eq!(status, 400);
    let after = scrape().await?;
    // Other tests of this binary share the process's recorder: compare increases, at least ours.
    let moved = |name: &str, labels: &[(&str, &str)]| {
        sum_of(&after, name, labels) - sum_of(&before, name, labels)
    };
    ensure!(
        moved(
            "herald_events_accepted_total",
            &[("channel", "webhook"), ("priority", "critical")]
        ) >= f64::from(n)
    );
    let route = [
        ("service", "herald-ingest"),
        ("route", "/event"),
        ("method", "POST"),
    ];
    ensure!(
        moved(
            "herald_http_requests_total",
            &[route[0], route[1], route[2], ("status", "202")]
        ) >= f64::from(n)
    );
    ensure!(
        moved(
            "herald_http_requests_total",
            &[route[0], route[1], route[2], ("status", "400")]
        ) >= 1.0
    );
    ensure!(
        moved("herald_http_request_duration_seconds_count", &route) >= f64::from(n + 1),
        "the latency histogram counts every request"
    );
    ensure!(
        after
            .iter()
            .any(|s| s.name == "herald_http_request_duration_seconds_bucket"
                && s.labels.get("le").is_some_and(|le| le == "+Inf")),
        "latency is a histogram with buckets"
    );
    service.stop().await
}

/// The routes herald-ingest serves, as (method, path).
const SERVED: [(&str, &str); 8] = [
    ("post", "/event"),
    ("post", "/api/logs"),
    ("post", "/events/generate"),
    ("get", "/api/health"),
    ("get", "/api/ready"),
    ("get", "/metrics"),
    ("get", "/api/openapi.json"),
    ("get", "/api/docs"),
];

#[tokio::test]
async fn the_openapi_document_lists_exactly_the_routes_served() -> Result<()> {
    let ctx = TestContext::new("ingest-openapi").await?;
    let service = Service::start(&ctx, |_| {}).await?;
    let document: Value = service
        .http
        .get(service.url("/api/openapi.json"))
        .send()
        .await?
        .json()
        .await?;
    let listed = openapi_routes(&document).map_err(anyhow::Error::msg)?;
    let served: BTreeSet<(String, String)> = SERVED
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(listed, served);
    // Each listed route is served (nothing answers with the router's 404 or 405) ...
    for (method, path) in &listed {
        let request = match method.as_str() {
            "post" => service.http.post(service.url(path)).json(&event()),
            _ => service.http.get(service.url(path)),
        };
        let status = request.send().await?.status().as_u16();
        ensure!(![404, 405].contains(&status), "{method} {path}: {status}");
    }
    // ... and the fallback is what an unlisted route gets, so the check above means something.
    let (status, body) = answer(service.http.get(service.url("/events")).send().await?).await?;
    assert_eq!((status, body["error"].clone()), (404, json!("Not found")));
    let (status, _) = answer(service.http.get(service.url("/event")).send().await?).await?;
    assert_eq!(status, 405);
    // The bodies, the errors and the security schemes are described.
    let post = &document["paths"]["/event"]["post"];
    for code in [
        "200", "202", "400", "401", "403", "413", "415", "429", "503",
    ] {
        ensure!(
            post["responses"][code].is_object(),
            "POST /event does not describe {code}"
        );
    }
    let schemas = &document["components"]["schemas"];
    for name in [
        "EventRequest",
        "ActivityRequest",
        "GenerateRequest",
        "AcceptedBody",
        "PublishedBody",
        "ErrorBody",
        "EmailPayload",
        "SmsPayload",
        "WebhookPayload",
    ] {
        ensure!(schemas[name].is_object(), "no schema {name}");
    }
    ensure!(document["components"]["securitySchemes"]["apiKey"].is_object());
    let page = service.http.get(service.url("/api/docs/")).send().await?;
    ensure!(page.status().as_u16() == 200);
    ensure!(page.text().await?.to_lowercase().contains("swagger"));
    service.stop().await
}
