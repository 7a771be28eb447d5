//! herald-replay's HTTP surface: `admin` for replaying, `read` for listing, and an OpenAPI document that lists
//! exactly the routes served.

use std::collections::BTreeSet;

use anyhow::{ensure, Result};
use herald_platform::http::auth::ApiKey;
use herald_platform::http::AuthConfig;
use herald_test_support::http::openapi_routes;
use herald_test_support::TestContext;
use serde_json::{json, Value};

use super::support::{answer, Service};

const ADMIN_KEY: &str = "admin-key-for-replay-tests";
const READ_KEY: &str = "read-key-for-replay-tests0";

#[tokio::test]
async fn replaying_needs_admin_and_listing_needs_read() -> Result<()> {
    let ctx = TestContext::new("replay-auth").await?;
    let service = Service::start(&ctx, |config| {
        config.http.auth = AuthConfig::with_keys(vec![
            ApiKey::parse(&format!("ops:admin:{ADMIN_KEY}")).expect("valid key"),
            ApiKey::parse(&format!("dash:read:{READ_KEY}")).expect("valid key"),
        ]);
    })
    .await?;
    let replay = |key: Option<&str>| {
        let mut request = service
            .http
            .post(service.url("/replay-dead-letter"))
            .json(&json!({"dryRun": true}));
        if let Some(key) = key {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        request.send()
    };
    let (status, body) = answer(replay(None).await?).await?;
    assert_eq!(
        (status, body["error"].clone()),
        (401, json!("Unauthorized"))
    );
    let (status, body) = answer(replay(Some(READ_KEY)).await?).await?;
    assert_eq!((status, body["error"].clone()), (403, json!("Forbidden")));
    let (status, body) = answer(replay(Some(ADMIN_KEY)).await?).await?;
    assert_eq!(
        (status, body["dryRun"].clone()),
        (200, json!(true)),
        "{body}"
    );

    let list = |key: Option<&str>| {
        let mut request = service.http.get(service.url("/api/dead-letters"));
        if let Some(key) = key {
            request = request.header("x-api-key", key.to_owned());
        }
        request.send()
    };
    assert_eq!(answer(list(None).await?).await?.0, 401);
    assert_eq!(
        answer(list(Some(ADMIN_KEY)).await?).await?.0,
        403,
        "admin does not imply read"
    );
    let (status, body) = answer(list(Some(READ_KEY)).await?).await?;
    assert_eq!(status, 200, "{body}");
    for path in ["/api/health", "/api/ready", "/metrics", "/api/openapi.json"] {
        let status = service
            .http
            .get(service.url(path))
            .send()
            .await?
            .status()
            .as_u16();
        assert_eq!(status, 200, "{path} stays open");
    }
    service.stop().await
}

const SERVED: [(&str, &str); 7] = [
    ("post", "/replay-dead-letter"),
    ("get", "/api/dead-letters"),
    ("get", "/api/health"),
    ("get", "/api/ready"),
    ("get", "/metrics"),
    ("get", "/api/openapi.json"),
    ("get", "/api/docs"),
];

#[tokio::test]
async fn the_openapi_document_lists_exactly_the_routes_served() -> Result<()> {
    let ctx = TestContext::new("replay-openapi").await?;
    let service = Service::start(&ctx, |_| {}).await?;
    let (status, document) = service.get("/api/openapi.json").await?;
    assert_eq!(status, 200);
    let listed = openapi_routes(&document).map_err(anyhow::Error::msg)?;
    let served: BTreeSet<(String, String)> = SERVED
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(listed, served);
    for (method, path) in &listed {
        let request = match method.as_str() {
            "post" => service
                .http
                .post(service.url(path))
                .json(&json!({"dryRun": true})),
            _ => service.http.get(service.url(path)),
        };
        let status = request.send().await?.status().as_u16();
        ensure!(status == 200, "{method} {path}: {status}");
    }
    let (status, body) = service.get("/api/replays").await?;
    assert_eq!((status, body["error"].clone()), (404, json!("Not found")));
    let (status, _) = service.get("/replay-dead-letter").await?;
    assert_eq!(status, 405);
    let post = &document["paths"]["/replay-dead-letter"]["post"];
    for code in ["200", "400", "401", "403", "413", "415", "503"] {
        ensure!(
            post["responses"][code].is_object(),
            "POST /replay-dead-letter does not describe {code}"
        );
    }
    let parameters: BTreeSet<&str> = document["paths"]["/api/dead-letters"]["get"]["parameters"]
        .as_array()
        .map(|ps| ps.iter().filter_map(|p| p["name"].as_str()).collect())
        .unwrap_or_default();
    for name in [
        "eventIds",
        "channel",
        "eventType",
        "priority",
        "since",
        "until",
        "page",
        "limit",
    ] {
        ensure!(
            parameters.contains(name),
            "GET /api/dead-letters does not describe {name}"
        );
    }
    let schemas: &Value = &document["components"]["schemas"];
    for name in [
        "ReplayRequest",
        "ReplayAnswer",
        "DeadLetterPage",
        "DeadLetterItem",
        "ErrorBody",
    ] {
        ensure!(schemas[name].is_object(), "no schema {name}");
    }
    service.stop().await
}
