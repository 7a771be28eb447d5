//! herald-replay deletes replay claims older than a day (`store::retention`), and keeps the rest.

use std::time::Duration;

use anyhow::Result;
use herald_platform::store::REPLAY_CLAIMS;
use herald_test_support::eventually;
use mongodb::bson::{doc, DateTime, Document};

use super::support::{Fixture, Service};

#[tokio::test]
async fn replay_deletes_claims_older_than_a_day_and_keeps_newer_ones() -> Result<()> {
    let fixture = Fixture::new("replay-retention").await?;
    let claims = fixture.db.collection::<Document>(REPLAY_CLAIMS);
    let two_days_ago = DateTime::from_millis(DateTime::now().timestamp_millis() - 2 * 86_400_000);
    claims
        .insert_many([
            doc! { "_id": "old-event/0/0", "eventId": "old-event", "claimedAt": two_days_ago },
            doc! { "_id": "new-event/0/0", "eventId": "new-event", "claimedAt": DateTime::now() },
        ])
        .await?;
    let service = Service::start(&fixture.ctx, |_| {}).await?;
    let left = eventually(
        Duration::from_secs(30),
        "the day-old replay claim to be pruned",
        || {
            let claims = claims.clone();
            async move {
                let ids: Vec<String> = claims
                    .distinct("_id", doc! {})
                    .await
                    .map_err(|e| e.to_string())?
                    .into_iter()
                    .filter_map(|id| id.as_str().map(str::to_owned))
                    .collect();
                if ids.iter().any(|id| id.starts_with("old-")) {
                    Err(format!("{ids:?}"))
                } else {
                    Ok(ids)
                }
            }
        },
    )
    .await;
    assert_eq!(left, ["new-event/0/0"]);
    service.stop().await
}
