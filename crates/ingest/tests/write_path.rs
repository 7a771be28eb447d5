//! What accepting an event costs the store, counted by the MongoDB driver's command monitoring: the outbox entry,
//! the event and, after the answer, the entry's deletion (all shared by concurrent requests, which ingest gathers
//! into batches), and never an update of the event document once it is published.
//!
//! That last point is a correctness property, not only a cost: FerretDB 1.24 applies an update by reading the
//! document and writing it back whole, so a publisher's late update of the event (ingest's PENDING to QUEUED did
//! this before the outbox collection) can land over a dispatcher's RECORDED or DELIVERED and leave a finished
//! event QUEUED for good; the 10-minute chaos run caught two. Its own binary, so that the process's metrics count
//! this test's commands only.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use herald_ingest::{App, Config};
use herald_platform::service::Service as _;
use herald_test_support::http::parse_prometheus;
use herald_test_support::{eventually, TestContext};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

/// `herald_store_commands_total` of herald-ingest, by (command, collection).
fn ingest_commands() -> Result<HashMap<(String, String), u64>> {
    let text = herald_platform::http::metrics::install().render();
    let samples = parse_prometheus(&text).map_err(anyhow::Error::msg)?;
    let mut counts = HashMap::new();
    for sample in samples.iter().filter(|s| {
        s.name == "herald_store_commands_total"
            && s.labels
                .get("app")
                .is_some_and(|app| app == "herald-ingest")
    }) {
        let label = |name: &str| sample.labels.get(name).cloned().unwrap_or_default();
        *counts
            .entry((label("command"), label("collection")))
            .or_insert(0) += sample.value as u64;
    }
    Ok(counts)
}

/// The writes among `counts` (the sweeper's reads and index setup are not the write path).
fn writes(counts: &HashMap<(String, String), u64>) -> HashMap<(String, String), u64> {
    counts
        .iter()
        .filter(|((command, _), _)| {
            matches!(
                command.as_str(),
                "insert" | "update" | "delete" | "findAndModify"
            )
        })
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

/// The writes since `before`, once the outbox is empty again: ingest clears the entries of published events after
/// its answers.
async fn once_cleared(
    before: &HashMap<(String, String), u64>,
    db: &mongodb::Database,
) -> HashMap<(String, String), u64> {
    let outbox = db.collection::<mongodb::bson::Document>("outbox");
    eventually(
        Duration::from_secs(30),
        "the outbox entries to be cleared",
        || async {
            let left = outbox
                .count_documents(mongodb::bson::doc! {})
                .await
                .map_err(|e| e.to_string())?;
            let spent: HashMap<(String, String), u64> =
                writes(&ingest_commands().map_err(|e| e.to_string())?)
                    .iter()
                    .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
                    .filter(|(_, v)| *v > 0)
                    .collect();
            if left == 0 {
                Ok(spent)
            } else {
                Err(format!("{left} outbox entries left; {spent:?}"))
            }
        },
    )
    .await
}

#[tokio::test]
async fn an_accepted_event_costs_at_most_three_writes_and_its_document_is_never_updated(
) -> Result<()> {
    let ctx = TestContext::new("ingest-write-path").await?;
    let mut config = Config::for_test(ctx.kafka.clone(), ctx.mongo.clone());
    // The sweeper only reads unless something is left in the outbox; keep it out of the way all the same.
    config.sweep.interval = Duration::from_secs(3600);
    // A loaded machine may take seconds to publish to the test's new topics; a timeout would leave the count short.
    config.request_timeout = Duration::from_secs(60);
    let app = App::build(config).await?;
    let base = format!("http://127.0.0.1:{}", app.port());
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    let http = reqwest::Client::new();
    eventually(Duration::from_secs(30), "ingest to be ready", || async {
        match http.get(format!("{base}/api/ready")).send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let db = herald_platform::mongo::connect(&ctx.mongo, "write-path-test").await?;
    let before = writes(&ingest_commands()?);

    let requests: [(&str, Value); 3] = [
        (
            "/event",
            json!({"userId": "u1", "channel": "webhook", "priority": "critical",
                   "payload": {"url": "http://127.0.0.1:9/hook", "body": {"n": 1}}}),
        ),
        (
            "/event",
            json!({"userId": "u2", "channel": "sms", "payload": {"phoneNumber": "+14155550123", "message": "hi"}}),
        ),
        (
            "/api/logs",
            json!({"userId": "u3", "activityType": "login", "metadata": {"ip": "127.0.0.1"}}),
        ),
    ];
    for (path, body) in &requests {
        let response = http.post(format!("{base}{path}")).json(body).send().await?;
        let status = response.status();
        let answer: Value = response.json().await?;
        ensure!(status == 202, "{path}: {status} {answer}");
        ensure!(answer["status"] == "QUEUED", "{path}: {answer}");
    }

    // The outbox entries are cleared after the answers: wait for their deletes before counting.
    let n = requests.len() as u64;
    let spent = once_cleared(&before, &db).await;
    let of = |command: &str, collection: &str| {
        spent
            .get(&(command.to_owned(), collection.to_owned()))
            .copied()
            .unwrap_or(0)
    };
    ensure!(
        of("update", "events") == 0 && of("findAndModify", "events") == 0,
        "the event document was updated after its insert: {spent:?}"
    );
    ensure!(of("insert", "events") == n, "{spent:?}");
    ensure!(of("insert", "outbox") == n, "{spent:?}");
    // One request after the other: the clears may still meet in one delete.
    ensure!((1..=n).contains(&of("delete", "outbox")), "{spent:?}");
    let total: u64 = spent.values().sum();
    ensure!(total <= 3 * n, "{total} writes for {n} events: {spent:?}");

    // Concurrent requests share commands: ingest gathers them into batches (one insert_many of outbox entries, one
    // of events, one delete_many), so many events cost fewer than three writes each.
    let before = writes(&ingest_commands()?);
    let n = 48u64;
    let sends = (0..n).map(|i| {
        let body = json!({"userId": format!("c{i}"), "channel": "webhook",
                          "payload": {"url": "http://127.0.0.1:9/hook", "body": {"n": i}}});
        let request = http.post(format!("{base}/event")).json(&body).send();
        async move {
            let response = request.await?;
            let status = response.status();
            let answer: Value = response.json().await?;
            ensure!(status == 202, "{status} {answer}");
            Ok::<String, anyhow::Error>(answer["eventId"].as_str().unwrap_or_default().to_owned())
        }
    });
    let ids = futures::future::try_join_all(sends).await?;
    let distinct: std::collections::HashSet<&String> = ids.iter().collect();
    ensure!(
        distinct.len() as u64 == n,
        "{} distinct event ids for {n} events",
        distinct.len()
    );
    let spent = once_cleared(&before, &db).await;
    let total: u64 = spent.values().sum();
    // Two batches at a time and the clears after the answers, one batch at a time: here 9 writes for the 48 (three
    // batches of each step). With the clears before the answers, each request waited for its own: 21.
    ensure!(
        total <= n / 3,
        "{total} writes for {n} concurrent events (not batched): {spent:?}"
    );
    ensure!(
        !spent.contains_key(&("update".to_owned(), "events".to_owned())),
        "the event document was updated after its insert: {spent:?}"
    );
    let store = herald_platform::store::EventStore::new(&db);
    for id in &ids {
        let id = herald_domain::EventId::parse(id).map_err(anyhow::Error::msg)?;
        let found = store
            .find(&id)
            .await?
            .context("an accepted event is not stored")?;
        ensure!(
            found.status == herald_domain::Status::Queued,
            "{id}: {:?}",
            found.status
        );
    }

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(15), running)
        .await
        .context("ingest did not stop")???;
    Ok(())
}
