//! The native stack's PostgreSQL under FerretDB (`xtask/src/ferretdb_indexes.sql`): every collection FerretDB
//! creates gets GIN indexes that its pushed-down lookups by `eventId` and `_id` use, an `events` collection also one
//! per list filter of herald-query (and on `createdHour`/`createdDay`, which events stored before those fields get
//! from the same script), and the server plans prepared statements with their values, which those lookups need to
//! use them.
//!
//! Runs against the stack `cargo xtask test` started; PostgreSQL's port is `HERALD_POSTGRES_PORT` (default 5432),
//! as for the stack itself.

use std::process::Command;

use herald_test_support::{stack, unique_name};
use mongodb::bson::{doc, Document};

fn psql(sql: &str) -> String {
    let port = std::env::var("HERALD_POSTGRES_PORT").unwrap_or_else(|_| "5432".into());
    let output = Command::new("psql")
        .args([
            "-X",
            "-tA",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "postgres",
        ])
        .args(["-p", &port, "-c", sql])
        .output()
        .expect("running psql (Debian's postgresql-client; .ci/run installs PostgreSQL)");
    assert!(
        output.status.success(),
        "psql on the native stack's PostgreSQL (port {port}): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

#[tokio::test]
async fn a_new_collection_gets_the_indexes_its_lookups_use() {
    let client = mongodb::Client::with_uri_str(&stack().mongodb_uri)
        .await
        .expect("client");
    let mut name = format!("t_{}", unique_name("stack-gin").replace(['.', '-'], "_"));
    name.truncate(63);
    let db = client.database(&name);
    let events = db.collection::<Document>("events");
    let docs: Vec<Document> = (0..2_000)
        .map(|i| {
            doc! {
                "_id": format!("k{i}"), "eventId": format!("e{i}"), "userId": format!("u{}", i % 100),
                "status": if i % 10 == 0 { "DEAD_LETTERED" } else { "QUEUED" },
                "eventType": "order.shipped", "channel": "sms", "priority": "default",
            }
        })
        .collect();
    events.insert_many(docs).await.expect("insert");
    // Another collection gets only the lookup indexes: the list filters are the events table's.
    db.collection::<Document>("claims")
        .insert_one(doc! { "_id": "c1", "eventId": "e1" })
        .await
        .expect("insert a claim");

    let herald_indexes = |table: &str| {
        let listed = psql(&format!(
            "select indexname from pg_indexes where schemaname = '{name}' and tablename like '{table}\\_%' \
             and indexname like '%_herald_%' order by 1"
        ));
        let mut suffixes: Vec<String> = listed
            .lines()
            .filter_map(|i| i.split_once("_herald_").map(|(_, s)| s.to_owned()))
            .collect();
        suffixes.sort();
        suffixes
    };
    assert_eq!(
        herald_indexes("events"),
        [
            "channel",
            "createdday",
            "createdhour",
            "event_id",
            "eventtype",
            "id",
            "priority",
            "status",
            "userid"
        ],
        "the events table's GIN indexes"
    );
    assert_eq!(herald_indexes("claims"), ["event_id", "id"]);

    // FerretDB's own plan for a lookup by eventId uses the index.
    let explained = db
        .run_command(doc! { "explain": { "find": "events", "filter": { "eventId": "e1234" } } })
        .await
        .expect("explain");
    let plan = explained
        .get_document("queryPlanner")
        .map(|p| p.to_string());
    assert!(
        plan.as_deref()
            .is_ok_and(|p| p.contains("_herald_event_id")),
        "{plan:?}"
    );
    // A list filter's equalities are pushed down and served by the field indexes (both, for two fields).
    let explained = db
        .run_command(doc! { "explain": {
            "find": "events", "filter": { "userId": "u7", "status": "DEAD_LETTERED" },
            "sort": { "createdAt": -1, "eventId": -1 },
        } })
        .await
        .expect("explain");
    let plan = explained
        .get_document("queryPlanner")
        .map(|p| p.to_string());
    assert!(
        plan.as_deref().is_ok_and(|p| p.contains("_herald_userid")),
        "{plan:?}"
    );
    assert_eq!(
        events
            .count_documents(doc! { "userId": "u7", "status": "DEAD_LETTERED" })
            .await
            .expect("count"),
        0,
        "u7's events are all QUEUED (i % 100 == 7 is never i % 10 == 0)"
    );
    assert_eq!(
        events
            .count_documents(doc! { "userId": "u10", "status": "DEAD_LETTERED" })
            .await
            .expect("count"),
        20
    );
    let found = events
        .find_one(doc! { "eventId": "e1234" })
        .await
        .expect("find");
    assert_eq!(
        found
            .and_then(|d| d.get_str("_id").ok().map(str::to_owned))
            .as_deref(),
        Some("k1234")
    );

    // Finds are prepared as `_jsonb->$1 @> $2`: only a plan made with the values can use the index.
    assert_eq!(psql("show plan_cache_mode"), "force_custom_plan");
    db.drop().await.expect("drop");
}

#[tokio::test]
async fn events_stored_before_the_slice_fields_get_them() {
    let client = mongodb::Client::with_uri_str(&stack().mongodb_uri)
        .await
        .expect("client");
    let mut name = format!("t_{}", unique_name("stack-slices").replace(['.', '-'], "_"));
    name.truncate(63);
    let db = client.database(&name);
    let events = db.collection::<Document>("events");
    let created = mongodb::bson::DateTime::from_millis(1_764_650_000_123); // 2025-12-02T04:33:20.123Z
    events
        .insert_many([
            doc! { "_id": "old", "eventId": "e-old", "status": "DELIVERED", "createdAt": created },
            doc! { "_id": "new", "eventId": "e-new", "createdAt": created, "createdDay": "kept", "createdHour": "kept" },
            // Stored with the day and hour, before the ten-minute slot.
            doc! { "_id": "mid", "eventId": "e-mid", "createdAt": created, "createdDay": "2025-12-02", "createdHour": "2025-12-02T04" },
        ])
        .await
        .expect("insert");
    psql(include_str!("../src/ferretdb_indexes.sql"));
    let old = events
        .find_one(doc! { "createdHour": "2025-12-02T04" })
        .await
        .expect("find by hour")
        .expect("the old event has its hour");
    assert_eq!(old.get_str("eventId"), Ok("e-old"));
    assert_eq!(old.get_str("createdDay"), Ok("2025-12-02"));
    assert_eq!(old.get_str("createdSlot"), Ok("2025-12-02T04:3"));
    assert_eq!(old.get_datetime("createdAt"), Ok(&created), "{old}");
    assert_eq!(
        old.get_str("status"),
        Ok("DELIVERED"),
        "the rest is as stored"
    );
    let new = events
        .find_one(doc! { "_id": "new" })
        .await
        .expect("find")
        .expect("the new event");
    assert_eq!(
        new.get_str("createdDay"),
        Ok("kept"),
        "a stored field is not rewritten"
    );
    let mid = events
        .find_one(doc! { "eventId": "e-mid", "createdHour": "2025-12-02T04", "createdSlot": "2025-12-02T04:3" })
        .await
        .expect("find by slot")
        .expect("the event stored before the slot has it");
    assert_eq!(mid.get_str("createdDay"), Ok("2025-12-02"), "{mid}");
    assert_eq!(mid.get_datetime("createdAt"), Ok(&created), "{mid}");
    // Run again: nothing is added twice (FerretDB reads each field once from its field list).
    psql(include_str!("../src/ferretdb_indexes.sql"));
    let again = events
        .find_one(doc! { "_id": "mid" })
        .await
        .expect("find")
        .expect("still there");
    assert_eq!(
        again.keys().filter(|k| *k == "createdSlot").count(),
        1,
        "{again}"
    );
    assert_eq!(again, mid);
    db.drop().await.expect("drop");
}
