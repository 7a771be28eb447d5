//! Every read route needs a key with the `read` scope; health, metrics and the documents stay open.

use anyhow::Result;
use herald_platform::http::auth::ApiKey;
use herald_platform::http::AuthConfig;
use herald_test_support::TestContext;
use serde_json::json;

use super::support::{answer, database, seed, Service};

const READ_KEY: &str = "read-key-for-query-tests";
const INGEST_KEY: &str = "ingest-key-for-query-test";

#[tokio::test]
async fn read_routes_need_a_key_with_the_read_scope() -> Result<()> {
    let ctx = TestContext::new("query-auth").await?;
    let service = Service::start(&ctx, |config| {
        config.http.auth = AuthConfig::with_keys(vec![
            ApiKey::parse(&format!("dash:read:{READ_KEY}")).expect("valid key"),
            ApiKey::parse(&format!("svc:ingest:{INGEST_KEY}")).expect("valid key"),
        ]);
    })
    .await?;
    let records = seed(&database(&ctx).await?, 2).await?;
    let detail = format!("/api/logs/{}", records[0].event_id.as_str());
    for path in ["/api/logs", detail.as_str(), "/api/stats"] {
        let (status, body) = service.get(path).await?;
        assert_eq!(
            (status, body["error"].clone()),
            (401, json!("Unauthorized")),
            "{path}"
        );
        let get = |key: &str| {
            service
                .http
                .get(service.url(path))
                .header("x-api-key", key.to_owned())
                .send()
        };
        let (status, body) = answer(get(INGEST_KEY).await?).await?;
        assert_eq!(
            (status, body["error"].clone()),
            (403, json!("Forbidden")),
            "{path}"
        );
        let (status, body) = answer(get(READ_KEY).await?).await?;
        assert_eq!(status, 200, "{path}: {body}");
    }
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
