//! MongoDB client and index setup. One client per process, cloned into state.

use std::time::Duration;

use mongodb::bson::{doc, Document};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::event::command::CommandEvent;
use mongodb::event::EventHandler;
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::{Client, Database, IndexModel};

use crate::config::MongoConfig;

pub use mongodb::error::Error;
pub type Result<T> = std::result::Result<T, Error>;

/// The collection holding one document per accepted event.
pub const EVENTS: &str = "events";

/// Connects (lazily: the driver dials on first use) and returns the configured database.
pub async fn connect(config: &MongoConfig, app_name: &str) -> Result<Database> {
    let client = Client::with_options(client_options(config, app_name).await?)?;
    Ok(client.database(&config.database))
}

/// The driver options [`connect`] uses: the URI's, with Herald's timeouts and the configured write concern.
///
/// Every write inherits the client's write concern, so setting it here covers every service: a 2xx from ingest
/// or a stored offset stands only on writes acknowledged as `MongoConfig::write_concern` asks (by default by a
/// majority of a replica set and journaled, so a failover cannot roll them back).
pub async fn client_options(config: &MongoConfig, app_name: &str) -> Result<ClientOptions> {
    let mut options = ClientOptions::parse(&config.uri).await?;
    options.app_name = Some(app_name.to_owned());
    // Fail a request in seconds, not the driver's default 30 s, when the server is away: callers answer 503.
    options
        .server_selection_timeout
        .get_or_insert(Duration::from_secs(5));
    options
        .connect_timeout
        .get_or_insert(Duration::from_secs(5));
    // `MongoConfig` already resolved the URI's `w`/`journal` against the environment.
    options.write_concern = Some(config.write_concern.clone());
    options.command_event_handler = Some(count_commands(app_name));
    Ok(options)
}

/// Counts every command the client sends, as `herald_store_commands_total{app, command, collection}`: the store
/// round trips each service spends, which is what limits throughput (the benchmark divides them by the events
/// delivered). The driver's own monitoring (`hello`, `ping`, authentication) is left out.
fn count_commands(app_name: &str) -> EventHandler<CommandEvent> {
    let app = app_name.to_owned();
    EventHandler::callback(move |event: CommandEvent| {
        let CommandEvent::Started(started) = event else {
            return;
        };
        let command = started.command_name.as_str();
        if matches!(
            command,
            "hello"
                | "isMaster"
                | "ismaster"
                | "ping"
                | "saslStart"
                | "saslContinue"
                | "endSessions"
        ) {
            return;
        }
        // For the CRUD commands the value of the command's own key is the collection it runs on.
        let collection = started.command.get_str(command).unwrap_or("").to_owned();
        metrics::counter!("herald_store_commands_total",
            "app" => app.clone(), "command" => command.to_owned(), "collection" => collection)
        .increment(1);
    })
}

/// The readiness check: a `ping` within `timeout`.
pub async fn ping(db: &Database, timeout: Duration) -> Result<()> {
    match tokio::time::timeout(timeout, db.run_command(doc! { "ping": 1 })).await {
        Ok(result) => result.map(|_| ()),
        Err(_) => Err(Error::custom(format!("ping timed out after {timeout:?}"))),
    }
}

/// Whether `error` is a unique-index violation (E11000), the signal of a duplicate insert.
/// The server's error code for a write refused by a unique index.
pub const DUPLICATE_KEY: i32 = 11000;

pub fn is_duplicate_key(error: &Error) -> bool {
    match error.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(e)) => e.code == DUPLICATE_KEY,
        ErrorKind::InsertMany(e) => e
            .write_errors
            .as_ref()
            .is_some_and(|errors| errors.iter().any(|e| e.code == DUPLICATE_KEY)),
        ErrorKind::Command(e) => e.code == DUPLICATE_KEY,
        _ => false,
    }
}

/// The indexes of the `events` collection: the unique event id, and one per list filter of the query API
/// (each paired with `createdAt`, the sort key).
pub fn event_indexes() -> Vec<IndexModel> {
    let unique = IndexOptions::builder()
        .unique(true)
        .name("eventId_unique".to_owned())
        .build();
    let mut indexes = vec![IndexModel::builder()
        .keys(doc! { "eventId": 1 })
        .options(unique)
        .build()];
    indexes.extend(query_indexes());
    indexes
}

/// Indexes earlier versions created that are now prefixes of [`query_indexes`] (`{userId: 1, createdAt: -1}` is
/// a prefix of `{userId: 1, createdAt: -1, eventId: -1}`): they cost every write and serve no query the longer
/// ones do not. Dropped at startup where they exist.
const OBSOLETE_EVENT_INDEXES: &[&str] = &[
    "userId_createdAt",
    "status_createdAt",
    "eventType_createdAt",
    "channel_createdAt",
    "priority_createdAt",
    "createdAt",
];

/// The indexes that serve `herald-query`'s lists: sorted on (`createdAt`, `eventId`), the event id breaking
/// ties so that pages and cursors are stable, alone or after one equality filter.
///
/// The tie-break must be in the index: with `{field: 1, createdAt: -1}` alone MongoDB cannot take the sort
/// from the index and sorts every matching event in memory before returning a page.
fn query_indexes() -> Vec<IndexModel> {
    let named = |keys: Document, name: String| {
        IndexModel::builder()
            .keys(keys)
            .options(IndexOptions::builder().name(name).build())
            .build()
    };
    let mut indexes = vec![named(
        doc! { "createdAt": -1, "eventId": -1 },
        "createdAt_eventId".to_owned(),
    )];
    for field in ["userId", "status", "eventType", "channel", "priority"] {
        indexes.push(named(
            doc! { field: 1, "createdAt": -1, "eventId": -1 },
            format!("{field}_createdAt_eventId"),
        ));
    }
    indexes
}

/// Creates the `events` indexes that do not exist yet, so every service may call this at startup.
///
/// Only missing indexes are requested: FerretDB 1.24 drops the connection when `createIndexes` names a
/// compound index that already exists. Two services racing here may still collide; a failure is therefore
/// checked against a fresh listing before it is reported.
pub async fn ensure_event_indexes(db: &Database) -> Result<()> {
    ensure_indexes(db, EVENTS, event_indexes()).await?;
    let events = db.collection::<Document>(EVENTS);
    let existing = events.list_index_names().await.unwrap_or_default();
    for name in OBSOLETE_EVENT_INDEXES {
        if existing.iter().any(|e| e == name) {
            // Another service may drop it first; what matters is that it is gone.
            if let Err(e) = events.drop_index(*name).await {
                tracing::debug!(index = name, error = %e, "could not drop an obsolete index");
            } else {
                tracing::info!(index = name, "dropped an obsolete index");
            }
        }
    }
    Ok(())
}

/// Creates those of `indexes` (each must be named) that `collection` lacks.
pub async fn ensure_indexes(
    db: &Database,
    collection: &str,
    indexes: Vec<IndexModel>,
) -> Result<()> {
    let coll = db.collection::<Document>(collection);
    let missing = missing_indexes(&coll, indexes).await?;
    if missing.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = missing.iter().filter_map(index_name).collect();
    match coll.create_indexes(missing).await {
        Ok(_) => Ok(()),
        Err(e) => {
            let existing = coll.list_index_names().await.unwrap_or_default();
            if names.iter().all(|name| existing.contains(name)) {
                Ok(())
            } else {
                Err(e)
            }
        }
    }
}

async fn missing_indexes(
    coll: &mongodb::Collection<Document>,
    indexes: Vec<IndexModel>,
) -> Result<Vec<IndexModel>> {
    // A collection that does not exist yet has no indexes; listing it fails with NamespaceNotFound.
    let existing = coll.list_index_names().await.unwrap_or_default();
    Ok(indexes
        .into_iter()
        .filter(|index| index_name(index).is_none_or(|name| !existing.contains(&name)))
        .collect())
}

fn index_name(index: &IndexModel) -> Option<String> {
    index.options.as_ref().and_then(|o| o.name.clone())
}
