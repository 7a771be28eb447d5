//! The ledger's drain against the real MongoDB-wire server: it does not end while an accepted event is still on
//! its way, even when events stored without a 2xx (a client timeout during an outage) make up the count.

use std::time::Duration;

use herald_loadgen::ledger::wait_settled;
use herald_platform::mongo::{self, EVENTS};
use herald_test_support::TestContext;
use mongodb::bson::{doc, Document};

#[tokio::test]
async fn the_drain_waits_for_every_event_not_just_for_a_count() -> anyhow::Result<()> {
    let ctx = TestContext::new("loadgen-ledger").await?;
    let db = mongo::connect(&ctx.mongo, "loadgen-ledger").await?;
    let events = db.collection::<Document>(EVENTS);
    let run = "lg-ledger-test";
    // Three accepted events: two delivered, one still queued; and one stored although ingest's answer never
    // reached the client, already delivered.
    events
        .insert_many(vec![
            doc! { "eventId": "a-1", "status": "DELIVERED", "metadata": { "loadgenRun": run } },
            doc! { "eventId": "a-2", "status": "RECORDED", "metadata": { "loadgenRun": run } },
            doc! { "eventId": "a-3", "status": "QUEUED", "metadata": { "loadgenRun": run } },
            doc! { "eventId": "unacknowledged", "status": "DELIVERED", "metadata": { "loadgenRun": run } },
        ])
        .await?;

    let timeout = Duration::from_secs(4);
    let waited = wait_settled(&db, run, 3, timeout, |_| {}).await;
    assert!(
        waited >= timeout,
        "the drain ended after {waited:?} with a-3 still queued"
    );

    events
        .update_one(
            doc! { "eventId": "a-3" },
            doc! { "$set": { "status": "DELIVERED" } },
        )
        .await?;
    let waited = wait_settled(&db, run, 3, timeout, |_| {}).await;
    assert!(
        waited < timeout,
        "everything is settled, yet the drain waited {waited:?}"
    );
    db.drop().await?;
    Ok(())
}
