//! `GET /api/dead-letters`: the selection a replay would take, oldest first, filtered and paged.

use anyhow::Result;
use serde_json::json;

use super::support::{ids, Fixture, Service};

#[tokio::test]
async fn dead_letters_are_listed_filtered_and_paged() -> Result<()> {
    let fx = Fixture::new("replay-list").await?;
    fx.standard_set().await?;
    let service = Service::start(&fx.ctx, |_| {}).await?;

    let (status, page) = service.get("/api/dead-letters").await?;
    assert_eq!(status, 200, "{page}");
    assert_eq!(ids(&page["data"]), ["a", "b", "c", "d", "e"]);
    assert_eq!(
        page["pagination"],
        json!({"page": 1, "limit": 20, "total": 5, "pages": 1})
    );
    let created_at = fx
        .record("a")
        .await?
        .created_at
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    assert_eq!(
        page["data"][0],
        json!({
            "eventId": "a", "userId": "user-a", "eventType": "order.shipped", "channel": "email",
            "priority": "critical", "attemptCount": 1, "replayCount": 0,
            "deadLetterReason": "receiver answered 410 Gone", "deadLetteredAt": "2024-01-01T00:00:00.000Z",
            "lastError": "HTTP 410", "createdAt": created_at,
        })
    );

    let (status, page) = service.get("/api/dead-letters?limit=2&page=2").await?;
    assert_eq!(status, 200, "{page}");
    assert_eq!(ids(&page["data"]), ["c", "d"]);
    assert_eq!(
        page["pagination"],
        json!({"page": 2, "limit": 2, "total": 5, "pages": 3})
    );
    let (_, page) = service.get("/api/dead-letters?limit=2&page=3").await?;
    assert_eq!(ids(&page["data"]), ["e"]);
    let (status, page) = service.get("/api/dead-letters?limit=2&page=4").await?;
    assert_eq!(status, 200, "{page}");
    assert_eq!(
        page,
        json!({"data": [], "pagination": {"page": 4, "limit": 2, "total": 5, "pages": 3}})
    );

    for (query, expected) in [
        ("channel=email", vec!["a", "d"]),
        ("eventIds=a,e,f,zz", vec!["a", "e"]),
        ("priority=critical&eventType=invoice.ready", vec!["e"]),
        (
            "since=2024-02-01T00:00:00Z&until=2024-04-01T00:00:00Z",
            vec!["b", "c", "d"],
        ),
        ("since=2024-04-15T00:00:00%2B02:00", vec!["e"]),
        ("channel=sms&priority=critical", vec![]),
    ] {
        let (status, page) = service.get(&format!("/api/dead-letters?{query}")).await?;
        assert_eq!(status, 200, "{query}: {page}");
        assert_eq!(ids(&page["data"]), expected, "{query}");
        assert_eq!(page["pagination"]["total"], expected.len(), "{query}");
    }

    // A replayed dead letter leaves the list.
    let (status, _) = service.replay(&json!({"eventIds": ["c"]})).await?;
    assert_eq!(status, 200);
    let (_, page) = service.get("/api/dead-letters").await?;
    assert_eq!(ids(&page["data"]), ["a", "b", "d", "e"]);
    service.stop().await
}
