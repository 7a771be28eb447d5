//! Coming from another event service: every request the READMEs of the systems Herald replaces document
//! (`shared/seeds/`), sent verbatim to the Herald service that takes its place, and the answers checked against the
//! shapes those READMEs document. One test per system; each runs every Herald service on its own corner of the
//! stack (ingest, the dispatchers, retry and alert from [`Herald`], plus herald-query and herald-replay).
//!
//! Not here: the notification dispatcher's `"channel": "push"` and `provider` requests (tested with the push and
//! HTTP-email providers), and the failed-request monitor, which documents no HTTP request of its own: its clients
//! post failed requests as record-only events, which `tests/alerts.rs` follows to the alert email.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use herald_domain::{EventId, Status};
use herald_e2e::Herald;
use herald_platform::service::Service as _;
use herald_test_support::eventually;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(30);

/// Taken by each test for its whole run: four Heralds at once (each with its dispatchers, retry, alert, query and
/// replay) on a loaded two-core machine made ingest's first publishes outlast its 10 s request timeout.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// herald-query and herald-replay beside a [`Herald`], on its database and topics.
struct Readers {
    query: String,
    replay: String,
    shutdown: CancellationToken,
}

impl Drop for Readers {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Readers {
    async fn start(herald: &Herald) -> Result<Self> {
        let shutdown = CancellationToken::new();
        let query =
            herald_query::App::build(herald_query::Config::for_test(herald.ctx.mongo.clone()))
                .await?;
        let query_url = format!("http://127.0.0.1:{}", query.port());
        tokio::spawn(query.run_until_stopped(shutdown.clone()));
        let replay = herald_replay::App::build(herald_replay::Config::for_test(
            herald.ctx.kafka.clone(),
            herald.ctx.mongo.clone(),
        ))
        .await?;
        let replay_url = format!("http://127.0.0.1:{}", replay.port());
        tokio::spawn(replay.run_until_stopped(shutdown.clone()));
        Ok(Self {
            query: query_url,
            replay: replay_url,
            shutdown,
        })
    }
}

/// Sends `body` exactly as written, with the content type the READMEs' requests declare.
async fn post_raw(herald: &Herald, url: String, body: &'static str) -> Result<(StatusCode, Value)> {
    let response = herald
        .http
        .post(url)
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await?;
    let status = response.status();
    Ok((status, response.json().await?))
}

async fn get(herald: &Herald, url: String) -> Result<(StatusCode, Value)> {
    let response = herald.http.get(url).send().await?;
    let status = response.status();
    Ok((status, response.json().await?))
}

fn event_id(answer: &Value) -> Result<EventId> {
    Ok(EventId::parse(
        answer["eventId"].as_str().context("an eventId")?,
    )?)
}

/// An ISO 8601 date-time in UTC with milliseconds, as the READMEs show them (`2026-01-15T02:30:00.000Z`).
fn is_iso_millis(value: &Value) -> bool {
    value.as_str().is_some_and(|text| {
        text.len() == 24
            && text.ends_with('Z')
            && chrono::DateTime::parse_from_rfc3339(text).is_ok()
    })
}

/// The notification dispatcher (`002`): its SMS example and its two replay bodies.
#[tokio::test]
async fn the_notification_dispatchers_requests() -> Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let herald = Herald::start("e2e-from-dispatcher", "").await?;
    let readers = Readers::start(&herald).await?;

    // "Ingestion Service: Dispatch SMS Event", verbatim (the dispatchers here use the SMS sandbox).
    let (status, answer) = post_raw(
        &herald,
        format!("{}/event", herald.ingest_url),
        r#"{
    "channel": "sms",
    "payload": {
        "message": "Test SMS",
        "phoneNumber": "2025555555"
    },
    "metadata": {

    },
    "priority": "default"
}
"#,
    )
    .await?;
    ensure!(status == StatusCode::ACCEPTED, "{status}: {answer}");
    let sms = event_id(&answer)?;
    let delivered = herald.wait_for(&sms, Status::Delivered, WAIT).await;
    ensure!(delivered.payload["phoneNumber"] == "+12025555555");

    // A dead letter for the replays to take: the sandbox refuses this message for good.
    let doomed = herald
        .post_event(json!({"channel": "sms", "payload": {"message": "fail-permanent", "phoneNumber": "2025555555"}}))
        .await?;
    herald.wait_for(&doomed, Status::DeadLettered, WAIT).await;

    // "Replay Service: Replay Dead Lettered Events", verbatim.
    let (status, answer) = post_raw(
        &herald,
        format!("{}/replay-dead-letter", readers.replay),
        "{}",
    )
    .await?;
    ensure!(status == StatusCode::OK, "{status}: {answer}");
    ensure!(
        answer == json!({"replayed": 1, "eventIds": [doomed.as_str()], "dryRun": false}),
        "{answer}"
    );
    // Replayed, it fails again and is dead-lettered again, a replay count further on.
    let died_again = |replays: u32| {
        let (herald, doomed) = (&herald, &doomed);
        async move {
            eventually(WAIT, "the replayed event to die again", || async {
                match herald.store.find(doomed).await {
                    Ok(Some(r))
                        if r.status == Status::DeadLettered && r.replay_count == replays =>
                    {
                        Ok(())
                    }
                    other => Err(format!("{other:?}")),
                }
            })
            .await
        }
    };
    died_again(1).await;

    // The replay body its clients send: `{limit, from}`.
    let (status, answer) = post_raw(
        &herald,
        format!("{}/replay-dead-letter", readers.replay),
        r#"{"limit": 1000, "from": 0}"#,
    )
    .await?;
    ensure!(status == StatusCode::OK, "{status}: {answer}");
    ensure!(
        answer == json!({"replayed": 1, "eventIds": [doomed.as_str()], "dryRun": false}),
        "{answer}"
    );
    died_again(2).await;
    let (status, answer) = post_raw(
        &herald,
        format!("{}/replay-dead-letter", readers.replay),
        r#"{"limit": 1000, "from": 1}"#,
    )
    .await?;
    ensure!(
        status == StatusCode::OK && answer["replayed"] == 0,
        "from skips the only dead letter: {status}: {answer}"
    );
    let record = herald
        .store
        .find(&doomed)
        .await?
        .context("the dead letter")?;
    ensure!(record.status == Status::DeadLettered && record.replay_count == 2);
    Ok(())
}

/// The user activity log services (`004`): producer and consumer health, `POST /api/logs` (both documented
/// bodies), `GET /api/logs` (both documented queries) and `GET /api/logs/:id`, and the error shapes.
#[tokio::test]
async fn the_activity_log_services_requests() -> Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let herald = Herald::start("e2e-from-activity-logs", "").await?;
    let readers = Readers::start(&herald).await?;

    // "Health Check" of the producer (ingest) and of the consumer (query).
    for (base, service) in [
        (&herald.ingest_url, "herald-ingest"),
        (&readers.query, "herald-query"),
    ] {
        let (status, answer) = get(&herald, format!("{base}/api/health")).await?;
        ensure!(
            status == StatusCode::OK && answer == json!({"status": "ok", "service": service}),
            "{status}: {answer}"
        );
    }

    // "Publish User Activity Log": the API documentation's body, then the cURL example's (the PowerShell one
    // sends the same).
    let (status, answer) = post_raw(
        &herald,
        format!("{}/api/logs", herald.ingest_url),
        r#"{
  "userId": "user-123",
  "activityType": "LOGIN",
  "metadata": {
    "device": "mobile",
    "ip": "192.168.1.1",
    "location": "New York"
  }
}"#,
    )
    .await?;
    ensure!(status.is_success(), "{status}: {answer}");
    ensure!(
        answer["success"] == true && answer["message"] == "Activity log published successfully",
        "{answer}"
    );
    let login = event_id(&answer)?;
    let (status, answer) = post_raw(
        &herald,
        format!("{}/api/logs", herald.ingest_url),
        r#"{
    "userId": "test-user",
    "activityType": "LOGIN",
    "metadata": {"device": "web"}
  }"#,
    )
    .await?;
    ensure!(status.is_success(), "{status}: {answer}");
    let web = event_id(&answer)?;
    let (status, answer) = post_raw(
        &herald,
        format!("{}/api/logs", herald.ingest_url),
        r#"{"userId":"test-user","activityType":"LOGIN","metadata":{"device":"web"}}"#,
    )
    .await?;
    ensure!(status.is_success(), "{status}: {answer}");
    let powershell = event_id(&answer)?;
    for id in [&login, &web, &powershell] {
        herald.wait_for(id, Status::Recorded, WAIT).await;
    }

    // "Get Activity Logs (Paginated)", with the documented query.
    let (status, page) = get(
        &herald,
        format!(
            "{}/api/logs?page=1&limit=10&userId=user-123&activityType=LOGIN",
            readers.query
        ),
    )
    .await?;
    ensure!(status == StatusCode::OK, "{status}: {page}");
    let items = page["data"].as_array().context("data")?;
    ensure!(items.len() == 1, "{page}");
    let item = &items[0];
    ensure!(item["eventId"] == login.as_str(), "{item}");
    ensure!(item["userId"] == "user-123", "{item}");
    ensure!(item["activityType"] == "LOGIN", "{item}");
    ensure!(
        item["metadata"]
            == json!({"device": "mobile", "ip": "192.168.1.1", "location": "New York"}),
        "{item}"
    );
    ensure!(
        is_iso_millis(&item["timestamp"]) && is_iso_millis(&item["createdAt"]),
        "{item}"
    );
    ensure!(
        page["pagination"]["page"] == 1
            && page["pagination"]["limit"] == 10
            && page["pagination"]["total"] == 1
            && page["pagination"]["pages"] == 1,
        "{page}"
    );

    // The cURL example's query.
    let (status, page) = get(
        &herald,
        format!("{}/api/logs?userId=test-user&limit=5", readers.query),
    )
    .await?;
    ensure!(status == StatusCode::OK, "{status}: {page}");
    let ids: Vec<&str> = page["data"]
        .as_array()
        .context("data")?
        .iter()
        .filter_map(|item| item["eventId"].as_str())
        .collect();
    ensure!(ids == [powershell.as_str(), web.as_str()], "{page}");
    ensure!(page["pagination"]["total"] == 2, "{page}");

    // "Get Single Activity Log".
    let (status, one) = get(&herald, format!("{}/api/logs/{login}", readers.query)).await?;
    ensure!(status == StatusCode::OK, "{status}: {one}");
    for field in ["eventId", "userId", "activityType", "metadata"] {
        ensure!(one[field] == item[field], "{field}: {one}");
    }
    ensure!(is_iso_millis(&one["timestamp"]), "{one}");

    // The client's own `timestamp` is the time the activity happened, at the top level.
    let (status, answer) = post_raw(
        &herald,
        format!("{}/api/logs", herald.ingest_url),
        r#"{"userId": "user-123", "activityType": "LOGOUT", "timestamp": "2026-01-15T02:30:00.000Z"}"#,
    )
    .await?;
    ensure!(status.is_success(), "{status}: {answer}");
    let logout = event_id(&answer)?;
    let (_, one) = get(&herald, format!("{}/api/logs/{logout}", readers.query)).await?;
    ensure!(
        one["timestamp"] == "2026-01-15T02:30:00.000Z" && one["activityType"] == "LOGOUT",
        "{one}"
    );

    // "Error Responses": a 400 with the failing field named, a 404 with an error message.
    let (status, answer) = post_raw(
        &herald,
        format!("{}/api/logs", herald.ingest_url),
        r#"{"activityType": "LOGIN"}"#,
    )
    .await?;
    ensure!(
        status == StatusCode::BAD_REQUEST
            && answer["error"] == "Validation failed"
            && answer["details"] == json!([{"field": "userId", "message": "is required"}]),
        "{status}: {answer}"
    );
    let (status, answer) = get(&herald, format!("{}/api/logs/no-such-log", readers.query)).await?;
    ensure!(
        status == StatusCode::NOT_FOUND && answer["error"].is_string(),
        "{status}: {answer}"
    );
    Ok(())
}

/// The activity events service (`001`): `POST /events/generate` (the API documentation's body and the cURL
/// example's) and `GET /events/processed`.
#[tokio::test]
async fn the_activity_event_services_requests() -> Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let herald = Herald::start("e2e-from-activity-events", "").await?;
    let readers = Readers::start(&herald).await?;

    let mut generated = Vec::new();
    for body in [
        r#"{
  "userId": "user123",
  "eventType": "LOGIN",
  "payload": {
    "ip": "127.0.0.1"
  }
}"#,
        r#"{
  "userId": "user456",
  "eventType": "LOGIN",
  "payload": {
    "ip": "192.168.1.1"
  }
}"#,
    ] {
        let (status, answer) = post_raw(
            &herald,
            format!("{}/events/generate", herald.ingest_url),
            body,
        )
        .await?;
        ensure!(status.is_success(), "{status}: {answer}");
        ensure!(
            answer["message"] == "Event published successfully",
            "{answer}"
        );
        generated.push(event_id(&answer)?);
    }

    // Processed once a dispatcher has recorded them; the newest first.
    let processed: Vec<Value> = eventually(WAIT, "both events processed", || async {
        let (status, answer) = get(&herald, format!("{}/events/processed", readers.query))
            .await
            .map_err(|e| e.to_string())?;
        match answer.as_array() {
            Some(events) if status == StatusCode::OK && events.len() == 2 => Ok(events.clone()),
            _ => Err(format!("{status}: {answer}")),
        }
    })
    .await;
    for (event, (id, user, ip)) in processed.iter().zip([
        (&generated[1], "user456", "192.168.1.1"),
        (&generated[0], "user123", "127.0.0.1"),
    ]) {
        let mut keys: Vec<&str> = event
            .as_object()
            .context("an object")?
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        ensure!(
            keys == ["eventId", "eventType", "payload", "timestamp", "userId"],
            "{event}"
        );
        ensure!(
            event["eventId"] == id.as_str()
                && event["userId"] == user
                && event["eventType"] == "LOGIN"
                && event["payload"] == json!({"ip": ip})
                && is_iso_millis(&event["timestamp"]),
            "{event}"
        );
    }
    Ok(())
}

/// The financial activity logs service (`003`): `GET /user-logs` with the documented filters and pages, and
/// `GET /user-logs/:id`. Its producer wrote to Kafka itself; its clients' logs reach Herald as activity logs.
#[tokio::test]
async fn the_financial_activity_log_services_requests() -> Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let herald = Herald::start("e2e-from-user-logs", "").await?;
    let readers = Readers::start(&herald).await?;

    let mut sent = Vec::new();
    for (user, action) in [
        ("user-1", "send"),
        ("user-1", "receive"),
        ("user-1", "send"),
        ("user-2", "send"),
        ("user-1", "balance_inquiry"),
    ] {
        let response = herald
            .http
            .post(format!("{}/api/logs", herald.ingest_url))
            .json(&json!({"userId": user, "activityType": action, "metadata": {"amount": 25}}))
            .send()
            .await?;
        ensure!(response.status().is_success());
        let answer: Value = response.json().await?;
        let id = event_id(&answer)?;
        herald.wait_for(&id, Status::Recorded, WAIT).await;
        if (user, action) == ("user-1", "send") {
            sent.push(id);
        }
    }

    // "GET /user-logs", the documented example.
    let (status, page) = get(
        &herald,
        format!(
            "{}/user-logs?userId=user-1&action=send&page=1&limit=10",
            readers.query
        ),
    )
    .await?;
    ensure!(status == StatusCode::OK, "{status}: {page}");
    ensure!(
        page["metadata"] == json!({"page": 1, "limit": 10, "total": 2, "totalPages": 1}),
        "{page}"
    );
    let ids: Vec<&str> = page["data"]
        .as_array()
        .context("data")?
        .iter()
        .filter_map(|log| log["_id"].as_str())
        .collect();
    ensure!(ids == [sent[1].as_str(), sent[0].as_str()], "{page}");
    let log = &page["data"][0];
    ensure!(
        log["userId"] == "user-1"
            && log["action"] == "send"
            && log["metadata"] == json!({"amount": 25})
            && is_iso_millis(&log["timestamp"]),
        "{log}"
    );

    // Pages: the total and the page count stay, the data moves on.
    let (_, second) = get(
        &herald,
        format!("{}/user-logs?userId=user-1&page=2&limit=3", readers.query),
    )
    .await?;
    ensure!(
        second["metadata"] == json!({"page": 2, "limit": 3, "total": 4, "totalPages": 2})
            && second["data"].as_array().map(Vec::len) == Some(1),
        "{second}"
    );

    // "GET /user-logs/:id", with an id from the list.
    let (status, one) = get(&herald, format!("{}/user-logs/{}", readers.query, sent[0])).await?;
    ensure!(status == StatusCode::OK, "{status}: {one}");
    ensure!(
        one["_id"] == sent[0].as_str() && one["action"] == "send" && one["userId"] == "user-1",
        "{one}"
    );
    let (status, answer) = get(&herald, format!("{}/user-logs/nope", readers.query)).await?;
    ensure!(
        status == StatusCode::NOT_FOUND && answer["error"].is_string(),
        "{status}: {answer}"
    );
    let (status, answer) = get(
        &herald,
        format!("{}/user-logs?action=send&sort=asc", readers.query),
    )
    .await?;
    ensure!(
        status == StatusCode::BAD_REQUEST && answer["details"][0]["field"] == "sort",
        "{status}: {answer}"
    );
    Ok(())
}
