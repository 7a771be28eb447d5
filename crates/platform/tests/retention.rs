//! Retention against the real MongoDB-wire server: expired terminal events go with their idempotency keys, dead
//! letters stay for their longer retention, nothing unfinished is deleted, a pass is bounded, and a dead letter a
//! replay has claimed is not deleted under it.

use std::time::Duration;

use anyhow::{ensure, Result};
use chrono::Utc;
use herald_domain::{Channel, Event, EventId, Priority, Status};
use herald_platform::store::retention::Retention;
use herald_platform::store::{EventRecord, EventStore, IDEMPOTENCY_KEYS, REPLAY_CLAIMS};
use herald_platform::{mongo, MongoConfig};
use herald_test_support::{stack, unique_name};
use mongodb::bson::{doc, Document};
use mongodb::Database;

async fn database(label: &str) -> Result<Database> {
    let mut name = format!("t_{}", unique_name(label).replace(['.', '-'], "_"));
    name.truncate(63);
    let db = mongo::connect(
        &MongoConfig::new(&stack().mongodb_uri, name),
        "retention-test",
    )
    .await?;
    EventStore::ensure_indexes(&db).await?;
    EventStore::ensure_retention_indexes(&db).await?;
    Ok(db)
}

/// An event in `status` whose last change was `age_days` ago (and dead-lettered then, for a dead letter).
fn record(id: &str, status: Status, age_days: i64) -> EventRecord {
    let then = Utc::now() - chrono::Duration::days(age_days);
    let event = Event {
        event_id: EventId::parse(id).expect("valid id"),
        user_id: Some("u-1".into()),
        event_type: Some("order.shipped".into()),
        channel: Some(Channel::Webhook),
        priority: Priority::Default,
        payload: serde_json::json!({"url": "http://127.0.0.1:9/hook"}),
        metadata: None,
        created_at: then - chrono::Duration::days(1),
    };
    let mut record = EventRecord::accepted(&event);
    record.status = status;
    record.updated_at = then;
    if status == Status::DeadLettered {
        record.dead_lettered_at = Some(then);
        record.dead_letter_reason = Some("max attempts".into());
    }
    record
}

async fn seed(db: &Database, records: &[EventRecord]) -> Result<()> {
    let store = EventStore::new(db);
    for record in records {
        let key = format!("key-{}", record.event_id);
        store.insert_accepted(&record.clone(), Some(&key)).await?;
        // insert_accepted stores it as given (QUEUED); make the stored state the one asked for.
        db.collection::<Document>(mongo::EVENTS)
            .update_one(
                doc! { "eventId": record.event_id.as_str() },
                doc! { "$set": {
                    "status": record.status.as_str(),
                    "updatedAt": mongodb::bson::DateTime::from_chrono(record.updated_at),
                    "deadLetteredAt": record.dead_lettered_at.map(mongodb::bson::DateTime::from_chrono),
                } },
            )
            .await?;
    }
    Ok(())
}

async fn ids(db: &Database) -> Result<Vec<String>> {
    let mut found: Vec<String> = db
        .collection::<Document>(mongo::EVENTS)
        .distinct("eventId", doc! {})
        .await?
        .into_iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    found.sort();
    Ok(found)
}

async fn keys(db: &Database) -> Result<Vec<String>> {
    let mut found: Vec<String> = db
        .collection::<Document>(IDEMPOTENCY_KEYS)
        .distinct("eventId", doc! {})
        .await?
        .into_iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    found.sort();
    Ok(found)
}

#[tokio::test]
async fn expired_terminal_events_go_with_their_keys_and_nothing_else_does() -> Result<()> {
    let db = database("retention").await?;
    seed(
        &db,
        &[
            record("delivered-old", Status::Delivered, 31),
            record("delivered-new", Status::Delivered, 29),
            record("recorded-old", Status::Recorded, 40),
            // Not terminal: it still has a terminal state to reach, however old.
            record("queued-old", Status::Queued, 200),
            record("retrying-old", Status::RetryScheduled, 200),
            // Dead letters are kept for 90 days.
            record("dead-60", Status::DeadLettered, 60),
            record("dead-91", Status::DeadLettered, 91),
        ],
    )
    .await?;
    let store = EventStore::new(&db);
    let deleted = store.sweep_expired(&Retention::default(), 1_000).await?;
    ensure!(deleted == 3, "deleted {deleted}");
    let left = ["dead-60", "delivered-new", "queued-old", "retrying-old"];
    ensure!(ids(&db).await? == left, "{:?}", ids(&db).await?);
    ensure!(
        keys(&db).await? == left,
        "the keys of the deleted events go with them: {:?}",
        keys(&db).await?
    );
    // A second pass finds nothing more.
    ensure!(store.sweep_expired(&Retention::default(), 1_000).await? == 0);

    // Shorter retentions take more.
    let short = Retention::from_days(1, 30);
    ensure!(store.sweep_expired(&short, 1_000).await? == 2);
    ensure!(ids(&db).await? == ["queued-old", "retrying-old"]);
    db.drop().await?;
    Ok(())
}

#[tokio::test]
async fn a_pass_deletes_at_most_its_batch() -> Result<()> {
    let db = database("retention-batch").await?;
    let records: Vec<EventRecord> = (0..5)
        .map(|i| record(&format!("old-{i}"), Status::Delivered, 45))
        .collect();
    seed(&db, &records).await?;
    let store = EventStore::new(&db);
    ensure!(store.sweep_expired(&Retention::default(), 2).await? == 2);
    ensure!(ids(&db).await?.len() == 3);
    ensure!(store.sweep_expired(&Retention::default(), 2).await? == 2);
    ensure!(store.sweep_expired(&Retention::default(), 2).await? == 1);
    ensure!(ids(&db).await?.is_empty());
    db.drop().await?;
    Ok(())
}

#[tokio::test]
async fn a_dead_letter_being_replayed_at_its_deadline_is_not_deleted_under_the_replay() -> Result<()>
{
    let db = database("retention-replay").await?;
    seed(
        &db,
        &[
            record("claimed", Status::DeadLettered, 91),
            record("replayed", Status::DeadLettered, 91),
            record("expired", Status::DeadLettered, 91),
        ],
    )
    .await?;
    let store = EventStore::new(&db);
    // "replayed" was replayed just before its deadline: QUEUED again, with a new last change.
    let replayed = store
        .replay_dead_letter(&EventId::parse("replayed")?, 0, "test".into())
        .await?;
    ensure!(replayed.is_some_and(|r| r.status == Status::Queued));
    // A replay of "claimed" has taken its claim and not yet moved it (the claim a replay inserts first).
    db.collection::<Document>(REPLAY_CLAIMS)
        .insert_one(doc! {
            "_id": "claimed/0/0", "eventId": "claimed", "replayCount": 0_i64, "generation": 0_i64,
            "claimedAt": mongodb::bson::DateTime::now(),
        })
        .await?;

    let deleted = store.sweep_expired(&Retention::default(), 1_000).await?;
    ensure!(deleted == 1, "deleted {deleted}");
    ensure!(
        ids(&db).await? == ["claimed", "replayed"],
        "{:?}",
        ids(&db).await?
    );
    // The replay that holds the claim goes on: its update still finds the dead letter.
    let moved = db
        .collection::<Document>(mongo::EVENTS)
        .update_one(
            doc! { "eventId": "claimed", "status": "DEAD_LETTERED", "replayCount": 0_i64 },
            doc! { "$set": { "status": "QUEUED", "replayCount": 1_i64 } },
        )
        .await?;
    ensure!(moved.modified_count == 1);
    // And a replay that comes after the sweeper claimed a dead letter finds it gone or claimed, never half-deleted.
    let late = store
        .replay_dead_letter(&EventId::parse("expired")?, 0, "late".into())
        .await?;
    ensure!(late.is_none());
    tokio::time::timeout(Duration::from_secs(10), db.drop()).await??;
    Ok(())
}
