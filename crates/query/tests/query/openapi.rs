//! The OpenAPI document lists every route the service serves, and every route it lists is served.

use std::collections::BTreeSet;

use anyhow::{ensure, Result};
use herald_test_support::TestContext;
use serde_json::{json, Value};

use super::support::{database, seed, Service};

/// The routes the service serves, as (method, path).
const SERVED: [(&str, &str); 17] = [
    ("get", "/api/logs"),
    ("get", "/api/logs/{id}"),
    ("get", "/api/dead-letters"),
    ("get", "/events/processed"),
    ("get", "/user-logs"),
    ("get", "/user-logs/{id}"),
    ("get", "/api/stats"),
    ("get", "/api/stats/minutes"),
    ("get", "/api/stats/dead-letters"),
    ("get", "/api/lanes"),
    ("get", "/api/alerts"),
    ("get", "/api/alerts/{id}"),
    ("get", "/api/health"),
    ("get", "/api/ready"),
    ("get", "/metrics"),
    ("get", "/api/openapi.json"),
    ("get", "/api/docs"),
];

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

#[tokio::test]
async fn the_document_lists_exactly_the_routes_served() -> Result<()> {
    let ctx = TestContext::new("query-openapi").await?;
    let service = Service::start(&ctx, |_| {}).await?;
    let records = seed(&database(&ctx).await?, 3).await?;
    let alert = super::alerts::seed_alert(&database(&ctx).await?, "r", "g").await?;
    let document = service.ok("/api/openapi.json").await?;
    ensure!(
        document["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "{}",
        document["openapi"]
    );

    let mut listed = BTreeSet::new();
    for (path, item) in document["paths"].as_object().cloned().unwrap_or_default() {
        for method in METHODS {
            if let Some(operation) = item.get(method) {
                listed.insert((method.to_owned(), path.clone()));
                ensure!(
                    operation["responses"]
                        .as_object()
                        .is_some_and(|r| !r.is_empty()),
                    "{method} {path} has no responses"
                );
                ensure!(operation["tags"].is_array(), "{method} {path} has no tag");
            }
        }
    }
    let served: BTreeSet<(String, String)> = SERVED
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(listed, served);

    // Each listed route is served: none answers with the router's fallback.
    let id = records[0].event_id.as_str();
    for (method, path) in &listed {
        ensure!(method == "get");
        let id = if path.starts_with("/api/alerts/") {
            alert.id.as_str()
        } else {
            id
        };
        let url = service.url(&path.replace("{id}", id));
        let response = service.http.get(&url).send().await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        ensure!(status == 200, "GET {path}: {status} {text}");
    }
    // And the fallback is what an unlisted route gets, so the check above means something.
    let (status, body) = service.get("/api/events").await?;
    assert_eq!((status, body["error"].clone()), (404, json!("Not found")));
    let response = service.http.post(service.url("/api/logs")).send().await?;
    assert_eq!(response.status().as_u16(), 405);

    // Every parameter of the list, every error answer, and the schemas they use are described.
    let list = &document["paths"]["/api/logs"]["get"];
    let params: BTreeSet<&str> = list["parameters"]
        .as_array()
        .map(|ps| ps.iter().filter_map(|p| p["name"].as_str()).collect())
        .unwrap_or_default();
    for name in [
        "userId",
        "eventType",
        "activityType",
        "channel",
        "priority",
        "status",
        "from",
        "startDate",
        "to",
        "endDate",
        "page",
        "limit",
        "sort",
        "cursor",
    ] {
        ensure!(params.contains(name), "/api/logs does not describe {name}");
    }
    for (path, codes) in [
        ("/api/logs", vec!["200", "400", "503"]),
        ("/api/logs/{id}", vec!["200", "400", "404", "503"]),
        ("/api/stats", vec!["200", "400", "503"]),
        ("/api/ready", vec!["200", "503"]),
    ] {
        for code in codes {
            ensure!(
                document["paths"][path]["get"]["responses"][code].is_object(),
                "{path} does not describe {code}"
            );
        }
    }
    let schemas: &Value = &document["components"]["schemas"];
    for name in [
        "LogPage",
        "EventSummary",
        "EventDetail",
        "TimelineStep",
        "AttemptView",
        "Pagination",
        "Stats",
        "ErrorBody",
        "ProcessedEvent",
        "UserLogPage",
        "UserLog",
    ] {
        ensure!(schemas[name].is_object(), "no schema {name}");
    }
    ensure!(
        schemas["EventSummary"]["properties"]["status"]["enum"]
            .as_array()
            .is_some_and(|values| values.contains(&json!("DEAD_LETTERED"))),
        "{}",
        schemas["EventSummary"]["properties"]["status"]
    );

    // Swagger UI is served from the crate's vendored copy.
    let page = service.http.get(service.url("/api/docs/")).send().await?;
    ensure!(page.status().as_u16() == 200);
    ensure!(page.text().await?.to_lowercase().contains("swagger"));
    service.stop().await
}
