//! A dispatcher deletes the claims of attempts that finished long ago (`store::retention`), and keeps the rest.

use std::time::Duration;

use anyhow::Result;
use herald_domain::Lane;
use herald_platform::store::CLAIMS;
use herald_test_support::eventually;
use mongodb::bson::{doc, DateTime, Document};

use super::support::Harness;

#[tokio::test]
async fn a_dispatcher_deletes_claims_older_than_a_day_and_keeps_newer_ones() -> Result<()> {
    let harness = Harness::new("dispatch-retention").await?;
    let claims = harness.db.collection::<Document>(CLAIMS);
    let two_days_ago = DateTime::from_millis(DateTime::now().timestamp_millis() - 2 * 86_400_000);
    claims
        .insert_many([
            doc! { "_id": "old-event/0/1/0", "at": two_days_ago },
            doc! { "_id": "new-event/0/1/0", "at": DateTime::now() },
        ])
        .await?;
    let _dispatcher = harness.start(Lane::Default, &[]).await?;
    let left = eventually(
        Duration::from_secs(30),
        "the day-old claim to be pruned",
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
    assert_eq!(left, ["new-event/0/1/0"]);
    Ok(())
}
