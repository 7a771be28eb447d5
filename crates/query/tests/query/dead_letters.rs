//! `GET /api/dead-letters` pages exactly the seeded dead letters a filter selects, newest first, by cursor, and names every parameter it does not take.

use anyhow::{ensure, Result};
use herald_domain::{Priority, Status};
use herald_test_support::TestContext;

use super::support::{database, ids_of, seed, Expect, Service};

#[tokio::test]
async fn dead_letters_are_paged_newest_first_by_cursor() -> Result<()> {
    let ctx = TestContext::new("query-dead-letters").await?;
    let service = Service::start(&ctx, |_| {}).await?;
    let records = seed(&database(&ctx).await?, 700).await?;

    for (query, expect) in [
        (
            "",
            Expect {
                status: Some(Status::DeadLettered),
                ..Expect::default()
            },
        ),
        (
            "priority=DEFAULT&eventType=user.signup",
            Expect {
                status: Some(Status::DeadLettered),
                priority: Some(Priority::Default),
                event_type: Some("user.signup".into()),
                ..Expect::default()
            },
        ),
    ] {
        let expected = expect.ids(&records);
        ensure!(
            !expected.is_empty(),
            "{query}: the seed has no such dead letter"
        );
        let mut served = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..100 {
            let mut path = format!("/api/dead-letters?{query}&limit=9");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let page = service.ok(&path).await?;
            ensure!(
                page["pagination"].get("total").is_none() && page["pagination"]["limit"] == 9,
                "{path}: {}",
                page["pagination"]
            );
            for item in page["data"].as_array().into_iter().flatten() {
                ensure!(item["status"] == "DEAD_LETTERED", "{item}");
            }
            served.extend(ids_of(&page));
            match page["pagination"]["nextCursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        ensure!(
            served == expected,
            "{query}: {served:?}\nexpected {expected:?}"
        );
    }

    let (status, body) = service
        .get("/api/dead-letters?status=DELIVERED&page=2&channel=pigeon")
        .await?;
    let fields: Vec<&str> = body["details"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["field"].as_str())
        .collect();
    ensure!(
        status == 400 && fields == ["channel", "page", "status"],
        "{status} {body}"
    );
    service.stop().await
}
