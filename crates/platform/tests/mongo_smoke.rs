//! Smoke test of the MongoDB plumbing through the official driver, against the real MongoDB-wire server:
//! inserts, unique-index duplicates, conditional status updates that never move backwards, and a filtered,
//! sorted, paged find with a total count.

use anyhow::{ensure, Result};
use herald_domain::Status;
use herald_platform::mongo::{self, EVENTS};
use herald_test_support::TestContext;
use mongodb::bson::{doc, Bson, DateTime, Document};
use mongodb::options::FindOptions;

/// `{status: {$in: [predecessors of next]}}`: the guard every status update carries.
fn may_move_to(next: Status) -> Document {
    let allowed: Vec<Bson> = next
        .predecessors()
        .iter()
        .map(|s| Bson::String(s.as_str().to_owned()))
        .collect();
    doc! { "status": { "$in": allowed } }
}

#[tokio::test]
async fn unique_ids_monotonic_updates_and_paged_queries() -> Result<()> {
    let ctx = TestContext::new("mongo-smoke").await?;
    let db = mongo::connect(&ctx.mongo, "mongo-smoke").await?;
    mongo::ensure_event_indexes(&db).await?;
    // Creating the indexes again is a no-op, as every service does it at startup.
    mongo::ensure_event_indexes(&db).await?;
    let events = db.collection::<Document>(EVENTS);

    // Insert, then the same eventId again: the unique index rejects it and we recognise why.
    events
        .insert_one(doc! { "eventId": "e-1", "status": "QUEUED", "createdAt": DateTime::now() })
        .await?;
    let duplicate = events
        .insert_one(doc! { "eventId": "e-1", "status": "PENDING", "createdAt": DateTime::now() })
        .await
        .expect_err("a second e-1 must be rejected");
    ensure!(
        mongo::is_duplicate_key(&duplicate),
        "not recognised as a duplicate: {duplicate}"
    );

    // Forward: QUEUED -> DISPATCHING -> DELIVERED, each guarded by the allowed predecessors.
    for next in [Status::Dispatching, Status::Delivered] {
        let mut filter = may_move_to(next);
        filter.insert("eventId", "e-1");
        let result = events
            .update_one(filter, doc! { "$set": { "status": next.as_str() } })
            .await?;
        ensure!(
            result.modified_count == 1,
            "moving to {next} should succeed"
        );
    }
    // Backwards: a late DISPATCHING message for a delivered event changes nothing.
    let mut stale = may_move_to(Status::Dispatching);
    stale.insert("eventId", "e-1");
    let result = events
        .update_one(stale, doc! { "$set": { "status": "DISPATCHING" } })
        .await?;
    ensure!(
        result.matched_count == 0,
        "a stale update matched a delivered event"
    );
    let stored = events
        .find_one(doc! { "eventId": "e-1" })
        .await?
        .expect("e-1 exists");
    ensure!(
        stored.get_str("status")? == "DELIVERED",
        "status moved backwards: {stored}"
    );

    // Filtered, sorted, paged find with a total, as the query API does it.
    let base = DateTime::now().timestamp_millis();
    let docs: Vec<Document> = (0..30)
        .map(|i| {
            doc! {
                "eventId": format!("p-{i:02}"),
                "userId": if i % 3 == 0 { "alice" } else { "bob" },
                "status": "RECORDED",
                "createdAt": DateTime::from_millis(base + i64::from(i) * 1000),
            }
        })
        .collect();
    events.insert_many(docs).await?;
    let filter = doc! { "userId": "alice" };
    let total = events.count_documents(filter.clone()).await?;
    ensure!(total == 10, "alice has 10 events, counted {total}");
    let page_2 = FindOptions::builder()
        .sort(doc! { "createdAt": -1 })
        .skip(4)
        .limit(4)
        .build();
    let mut cursor = events.find(filter).with_options(page_2).await?;
    let mut ids = Vec::new();
    while cursor.advance().await? {
        ids.push(cursor.deserialize_current()?.get_str("eventId")?.to_owned());
    }
    // alice's events are 27, 24, ..., 0 newest first; page 2 of 4 holds the 5th to 8th.
    ensure!(
        ids == ["p-15", "p-12", "p-09", "p-06"],
        "page 2 was {ids:?}"
    );
    db.drop().await?;
    Ok(())
}
