//! The write concern of `MongoConfig` is what the driver sends with every write, seen through the driver's
//! command monitoring against the real MongoDB-wire server, and that server accepts it on each kind of write
//! Herald makes (insert, insert many, update, find-and-modify, delete).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::{ensure, Context, Result};
use herald_platform::config::EnvReader;
use herald_platform::{mongo, MongoConfig};
use herald_test_support::TestContext;
use mongodb::bson::{doc, Bson, Document};
use mongodb::event::command::CommandEvent;
use mongodb::event::EventHandler;
use mongodb::Client;

/// Each started command's name and its `writeConcern`, in order.
type Seen = Arc<Mutex<Vec<(String, Option<Document>)>>>;

/// A client built from `connect`'s own options, with a command monitor added.
async fn monitored(config: &MongoConfig) -> Result<(mongodb::Database, Seen)> {
    let seen: Seen = Arc::default();
    let mut options = mongo::client_options(config, "write-concern-test").await?;
    let sink = seen.clone();
    options.command_event_handler = Some(EventHandler::callback(move |event| {
        if let CommandEvent::Started(started) = event {
            let concern = started.command.get_document("writeConcern").ok().cloned();
            sink.lock()
                .expect("monitor lock")
                .push((started.command_name, concern));
        }
    }));
    let client = Client::with_options(options)?;
    Ok((client.database(&config.database), seen))
}

/// Runs one write of each kind Herald makes and returns the concern each sent.
async fn write_all_kinds(db: &mongodb::Database, seen: &Seen) -> Result<Vec<(String, Document)>> {
    let events = db.collection::<Document>("wc_events");
    events
        .insert_one(doc! { "eventId": "e-1", "status": "QUEUED" })
        .await?;
    events
        .insert_many(vec![
            doc! { "eventId": "e-2", "status": "QUEUED" },
            doc! { "eventId": "e-3", "status": "QUEUED" },
        ])
        .await?;
    let updated = events
        .update_one(
            doc! { "eventId": "e-1", "status": "QUEUED" },
            doc! { "$set": { "status": "DELIVERED" } },
        )
        .await?;
    ensure!(updated.modified_count == 1, "update_one changed nothing");
    let claimed = events
        .find_one_and_update(
            doc! { "eventId": "e-2", "status": "QUEUED" },
            doc! { "$set": { "status": "DISPATCHING" } },
        )
        .await?;
    ensure!(claimed.is_some(), "find_one_and_update found nothing");
    events.delete_one(doc! { "eventId": "e-3" }).await?;

    // The server took every write: what was written reads back.
    let statuses: Vec<(String, String)> = {
        let mut cursor = events.find(doc! {}).sort(doc! { "eventId": 1 }).await?;
        let mut out = Vec::new();
        while cursor.advance().await? {
            let d = cursor.deserialize_current()?;
            out.push((
                d.get_str("eventId")?.to_owned(),
                d.get_str("status")?.to_owned(),
            ));
        }
        out
    };
    ensure!(
        statuses
            == vec![
                ("e-1".to_owned(), "DELIVERED".to_owned()),
                ("e-2".to_owned(), "DISPATCHING".to_owned())
            ],
        "read back {statuses:?}"
    );

    let seen = seen.lock().expect("monitor lock").clone();
    let mut writes = Vec::new();
    for name in ["insert", "update", "findAndModify", "delete"] {
        let sent: Vec<_> = seen.iter().filter(|(n, _)| n == name).collect();
        ensure!(!sent.is_empty(), "no {name} command was seen: {seen:?}");
        for (n, concern) in sent {
            let concern = concern
                .clone()
                .with_context(|| format!("{n} was sent without a writeConcern"))?;
            writes.push((n.clone(), concern));
        }
    }
    // insert_one and insert_many are both `insert` commands.
    ensure!(
        seen.iter().filter(|(n, _)| n == "insert").count() >= 2,
        "{seen:?}"
    );
    Ok(writes)
}

#[tokio::test]
async fn every_write_carries_majority_and_journal_by_default_and_ferretdb_takes_it() -> Result<()> {
    let ctx = TestContext::new("write-concern").await?;
    let mut env = EnvReader::from_map(HashMap::from([
        ("MONGODB_URI".to_owned(), ctx.mongo.uri.clone()),
        ("MONGODB_DATABASE".to_owned(), ctx.mongo.database.clone()),
    ]));
    let config = MongoConfig::read(&mut env);
    env.finish()?;
    let (db, seen) = monitored(&config).await?;
    for (name, concern) in write_all_kinds(&db, &seen).await? {
        ensure!(
            concern.get("w") == Some(&Bson::String("majority".into()))
                && concern.get("j") == Some(&Bson::Boolean(true)),
            "{name} sent {concern}"
        );
    }
    db.drop().await?;
    Ok(())
}

#[tokio::test]
async fn a_configured_write_concern_is_what_the_client_sends() -> Result<()> {
    let ctx = TestContext::new("write-concern-1").await?;
    let mut env = EnvReader::from_map(HashMap::from([
        ("MONGODB_URI".to_owned(), ctx.mongo.uri.clone()),
        ("MONGODB_DATABASE".to_owned(), ctx.mongo.database.clone()),
        ("HERALD_MONGO_WRITE_CONCERN".to_owned(), "1".to_owned()),
        ("HERALD_MONGO_JOURNAL".to_owned(), "false".to_owned()),
    ]));
    let config = MongoConfig::read(&mut env);
    env.finish()?;
    let (db, seen) = monitored(&config).await?;
    for (name, concern) in write_all_kinds(&db, &seen).await? {
        ensure!(
            concern.get("w") == Some(&Bson::Int32(1))
                && concern.get("j") == Some(&Bson::Boolean(false)),
            "{name} sent {concern}"
        );
    }
    db.drop().await?;
    Ok(())
}
