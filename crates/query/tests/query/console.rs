//! What the console reads beyond `/api/logs` (per-minute counts, dead letters by channel and last error, the lanes'
//! lag) and the console's HTTP contract (sign-in, security headers, cross-site posts refused). The console in a
//! browser is tested end to end in `tests/tests/console.rs`.

use anyhow::{ensure, Result};
use chrono::{Duration, DurationRound, TimeDelta, Utc};
use herald_domain::{Channel, Lane, LaneMessage, Priority, Status, StatusMessage, StatusOutcome};
use herald_platform::http::auth::ApiKey;
use herald_platform::http::AuthConfig;
use herald_platform::kafka;
use herald_query::stats::minutes::{self, MinuteBuckets};
use herald_test_support::{eventually, TestContext};
use serde_json::json;

use super::support::{database, insert, seeded, Service};

const OPERATOR_KEY: &str = "console-operator-key-0001";

/// Sends `message` (JSON) to `topic`, keyed by `key`.
async fn send(
    producer: &rdkafka::producer::FutureProducer,
    topic: &str,
    key: &str,
    message: &impl serde::Serialize,
) -> Result<()> {
    kafka::send(producer, topic, key, &serde_json::to_vec(message)?, None).await?;
    Ok(())
}

#[tokio::test]
async fn minutes_count_the_lanes_and_the_status_topic_and_dead_letters_are_grouped() -> Result<()> {
    let ctx = TestContext::new("query-console-stats").await?;
    let now = Utc::now();
    let minute = now.duration_trunc(TimeDelta::minutes(1))?;
    let producer = kafka::build_producer(&ctx.kafka)?;
    let critical = ctx.topics.lane(Lane::Critical);
    let status = ctx.topics.status();
    let mut records = Vec::new();
    for i in 0..3u32 {
        let mut record = seeded(i);
        record.channel = Some(Channel::Webhook);
        record.priority = Priority::Critical;
        record.created_at = minute - Duration::minutes(2);
        record.updated_at = now;
        record.status = Status::DeadLettered;
        // The masked recipient is quoted by the error: it must not reach the grouped errors.
        let to = record.payload["to"].as_str().unwrap_or_default().to_owned();
        record.last_error = Some(format!("HTTP 500 for {to}"));
        let event = record.event();
        let key = event.event_id.as_str();
        send(
            &producer,
            &critical,
            key,
            &LaneMessage::first(event.clone()),
        )
        .await?;
        // A retry and a replay of the same event ask for attempts, not for a new event: not accepted again.
        let retry = LaneMessage {
            attempt: 2,
            ..LaneMessage::first(event.clone())
        };
        send(&producer, &critical, key, &retry).await?;
        let replay = LaneMessage {
            replay_count: 1,
            ..LaneMessage::first(event.clone())
        };
        send(&producer, &critical, key, &replay).await?;
        let mut failed = StatusMessage::new(&event, StatusOutcome::Failed, 1, 0);
        failed.at = minute - Duration::minutes(2) + Duration::seconds(5);
        send(&producer, &status, key, &failed).await?;
        let mut dead = StatusMessage::new(&event, StatusOutcome::DeadLettered, 3, 0);
        dead.at = minute - Duration::minutes(1);
        send(&producer, &status, key, &dead).await?;
        records.push(record);
    }
    let mut delivered = seeded(9);
    delivered.channel = Some(Channel::Email);
    delivered.priority = Priority::Default;
    // Accepted two days ago (outside the window), delivered now.
    delivered.created_at = now - Duration::days(2);
    delivered.updated_at = now;
    delivered.status = Status::Delivered;
    let mut step = StatusMessage::new(&delivered.event(), StatusOutcome::Delivered, 1, 0);
    step.at = now;
    send(&producer, &status, delivered.event_id.as_str(), &step).await?;
    records.push(delivered);
    insert(&database(&ctx).await?, &records).await?;

    let service = Service::start(&ctx, |config| {
        config.mask = "payload.to".parse().expect("a valid mask");
        config.stats_consumer = true;
    })
    .await?;
    let series = |from: chrono::DateTime<Utc>, index: i64, n: u64| {
        let mut values = vec![0u64; 5];
        // The window ends with the service's current minute, which may have turned since `now`.
        let turned = (from - (minute - Duration::minutes(4))).num_minutes();
        if let Ok(slot) = usize::try_from(index - turned) {
            values[slot] = n;
        }
        json!(values)
    };
    let minutes = eventually(
        std::time::Duration::from_secs(60),
        "the minute buckets to count every message",
        || async {
            let minutes = service
                .ok("/api/stats/minutes?minutes=5")
                .await
                .map_err(|e| e.to_string())?;
            let from: chrono::DateTime<Utc> =
                serde_json::from_value(minutes["from"].clone()).map_err(|e| e.to_string())?;
            let all = &minutes["all"];
            let counted = all["accepted"] == series(from, 2, 3)
                && all["failed"] == series(from, 2, 3)
                && all["deadLettered"] == series(from, 3, 3)
                && all["delivered"] == series(from, 4, 1);
            counted
                .then_some((minutes.clone(), from))
                .ok_or_else(|| minutes.to_string())
        },
    )
    .await;
    let (minutes, from) = minutes;
    assert_eq!(minutes["minutes"], json!(5));
    assert_eq!(
        minutes["byChannel"]["email"]["delivered"],
        series(from, 4, 1)
    );
    assert_eq!(
        minutes["byChannel"]["webhook"]["accepted"],
        series(from, 2, 3)
    );
    assert_eq!(
        minutes["byPriority"]["critical"]["deadLettered"],
        series(from, 3, 3)
    );
    assert_eq!(
        minutes["byPriority"]["default"]["accepted"],
        series(from, 0, 0)
    );
    let (status, body) = service.get("/api/stats/minutes?minutes=0").await?;
    ensure!(status == 400, "{body}");

    let dead = service.ok("/api/stats/dead-letters").await?;
    assert_eq!(dead["total"], json!(3));
    assert_eq!(dead["byChannel"]["webhook"], json!(3));
    assert_eq!(
        dead["byError"],
        json!([{"channel": "webhook", "lastError": "HTTP 500 for ***", "count": 3}])
    );
    service.stop().await
}

#[tokio::test]
async fn a_minute_batch_folded_again_counts_once_and_old_minutes_go() -> Result<()> {
    let ctx = TestContext::new("query-console-refold").await?;
    let db = database(&ctx).await?;
    MinuteBuckets::ensure_indexes(&db).await?;
    let buckets = MinuteBuckets::new(&db);
    let now = Utc::now();
    let minute = now.duration_trunc(TimeDelta::minutes(1))?;
    let counts: Vec<_> = (0..10u32)
        .filter_map(|i| {
            let mut record = seeded(i);
            record.created_at = minute - Duration::minutes(i64::from(i % 3));
            let head = serde_json::from_value(
                serde_json::to_value(LaneMessage::first(record.event())).ok()?,
            )
            .ok()?;
            minutes::of_lane_message(Lane::Default, (i % 2) as i32, i64::from(i), &head)
        })
        .collect();
    assert_eq!(counts.len(), 10);
    let (first, _) = counts.split_at(4);
    buckets.apply(first.to_vec(), now).await?;
    // A crash after the fold and before the offsets were stored: the batch comes again, whole.
    buckets.apply(counts.clone(), now).await?;
    buckets.apply(counts.clone(), now).await?;
    let read = buckets
        .read(
            minute - Duration::minutes(5),
            std::time::Duration::from_secs(10),
        )
        .await?;
    let accepted: u64 = read.iter().map(|m| m.counts["accepted"]["all"]).sum();
    assert_eq!(accepted, 10);

    // A day and more later, the next new minute deletes the minutes past the retention.
    let later = now + minutes::MINUTE_RETENTION + Duration::minutes(5);
    let mut record = seeded(99);
    record.created_at = later;
    let head = serde_json::from_value(serde_json::to_value(LaneMessage::first(record.event()))?)?;
    let count = minutes::of_lane_message(Lane::Default, 0, 100, &head).expect("a first attempt");
    buckets.apply(vec![count], later).await?;
    let read = buckets
        .read(
            minute - Duration::minutes(5),
            std::time::Duration::from_secs(10),
        )
        .await?;
    assert_eq!(read.len(), 1, "{read:?}");
    assert_eq!(read[0].counts["accepted"]["all"], 1);
    Ok(())
}

#[tokio::test]
async fn lanes_report_each_lane_of_the_prefix() -> Result<()> {
    let ctx = TestContext::new("query-console-lanes").await?;
    let service = Service::start(&ctx, |_| {}).await?;
    let lanes = service.ok("/api/lanes").await?;
    let names: Vec<&str> = lanes["lanes"]
        .as_array()
        .map(|l| l.iter().filter_map(|lane| lane["lane"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(names, ["critical", "default", "retry"]);
    let prefix = ctx.topics.prefix();
    assert_eq!(
        lanes["lanes"][0]["group"],
        json!(format!("{prefix}herald-dispatch-critical"))
    );
    assert_eq!(lanes["lanes"][0]["lag"], json!(0));
    service.stop().await
}

#[tokio::test]
async fn the_console_asks_for_a_key_and_refuses_cross_site_posts() -> Result<()> {
    let ctx = TestContext::new("query-console-http").await?;
    let service = Service::start(&ctx, |config| {
        config.http.auth = AuthConfig::with_keys(vec![ApiKey::parse(&format!(
            "ops:read+admin:{OPERATOR_KEY}"
        ))
        .expect("a valid key")]);
    })
    .await?;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let page = http.get(service.url("/console")).send().await?;
    assert_eq!(page.status(), 401);
    let csp = page
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    ensure!(
        csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    ensure!(page.text().await?.contains("Sign in"));

    let sign_in = |key: &'static str| {
        http.post(service.url("/console/sign-in"))
            .header("origin", service.url(""))
            .form(&[("key", key), ("next", "/console/events")])
            .send()
    };
    let wrong = sign_in("not-a-key-we-know").await?;
    assert_eq!(wrong.status(), 401);
    ensure!(wrong.text().await?.contains("That key was not accepted"));
    let right = sign_in(OPERATOR_KEY).await?;
    assert_eq!(right.status(), 303);
    let cookies: Vec<String> = right
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or_default().to_owned())
        .collect();
    ensure!(right.headers()["set-cookie"]
        .to_str()?
        .contains("HttpOnly; SameSite=Strict"));
    let cookie = cookies.join("; ");
    let events = http
        .get(service.url("/console/events"))
        .header("cookie", &cookie)
        .send()
        .await?;
    assert_eq!(events.status(), 200);

    // A replay posted from another site is refused before anything is forwarded, token or not.
    let csrf = cookies
        .iter()
        .find_map(|c| c.strip_prefix("herald_console_csrf="))
        .unwrap_or_default()
        .to_owned();
    let replay = |origin: String, token: String| {
        http.post(service.url("/console/dead-letters/replay"))
            .header("cookie", &cookie)
            .header("origin", origin)
            .form(&[
                ("csrf", token),
                ("mode", "run".into()),
                ("scope", "filter".into()),
            ])
            .send()
    };
    let own = service.url("");
    for (origin, token) in [
        ("http://evil.test".to_owned(), csrf.clone()),
        (own.clone(), "forged".to_owned()),
    ] {
        let refused = replay(origin, token).await?;
        assert_eq!(refused.status(), 403);
        ensure!(refused
            .text()
            .await?
            .contains("did not come from this console"));
    }
    // With this origin and the token the replay is forwarded: to a herald-replay that is not running here.
    let forwarded = replay(own, csrf).await?;
    assert_eq!(forwarded.status(), 503);
    ensure!(forwarded.text().await?.contains("herald-replay"));
    service.stop().await
}
