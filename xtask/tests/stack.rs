//! The native stack's PostgreSQL under FerretDB (`xtask/src/ferretdb_indexes.sql`): every collection FerretDB
//! creates gets GIN indexes that its pushed-down lookups by `eventId` and `_id` use, and the server plans prepared
//! statements with their values, which those lookups need to use them.
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
        .map(|i| doc! { "_id": format!("k{i}"), "eventId": format!("e{i}"), "status": "QUEUED" })
        .collect();
    events.insert_many(docs).await.expect("insert");

    let indexes = psql(&format!(
        "select indexname from pg_indexes where schemaname = '{name}' and indexname like '%_herald_%' order by 1"
    ));
    let indexes: Vec<&str> = indexes.lines().collect();
    assert_eq!(
        indexes.len(),
        2,
        "the events table's GIN indexes: {indexes:?}"
    );
    assert!(
        indexes.iter().any(|i| i.ends_with("_herald_event_id")),
        "{indexes:?}"
    );
    assert!(
        indexes.iter().any(|i| i.ends_with("_herald_id")),
        "{indexes:?}"
    );

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
