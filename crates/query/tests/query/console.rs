//! What the console reads beyond `/api/logs` (per-minute counts, dead letters by channel and last error, the lanes'
//! lag) and the console's HTTP contract (sign-in, security headers, cross-site posts refused). The console in a
//! browser is tested end to end in `tests/tests/console.rs`.

use anyhow::{ensure, Result};
use chrono::{Duration, DurationRound, TimeDelta, Utc};
use herald_domain::{Attempt, AttemptOutcome, Channel, Status};
use herald_platform::http::auth::ApiKey;
use herald_platform::http::AuthConfig;
use herald_platform::store::TimelineEntry;
use herald_test_support::TestContext;
use serde_json::json;

use super::support::{database, insert, seeded, Service};

const OPERATOR_KEY: &str = "console-operator-key-0001";

fn step(kind: &str, at: chrono::DateTime<Utc>, failed: bool) -> TimelineEntry {
    TimelineEntry {
        at,
        kind: kind.to_owned(),
        attempt: failed.then(|| Attempt {
            number: 1,
            provider: "webhook".into(),
            started_at: at,
            ended_at: at,
            outcome: AttemptOutcome::Failed,
            error_class: None,
            error: Some("HTTP 500".into()),
            http_status: Some(500),
            retry_after_secs: None,
        }),
        detail: None,
    }
}

#[tokio::test]
async fn minutes_and_dead_letters_count_recent_steps() -> Result<()> {
    let ctx = TestContext::new("query-console-stats").await?;
    let service = Service::start(&ctx, |config| {
        config.mask = "payload.to".parse().expect("a valid mask");
    })
    .await?;
    let now = Utc::now();
    let minute = now.duration_trunc(TimeDelta::minutes(1))?;
    let mut records = Vec::new();
    for i in 0..3u32 {
        let mut record = seeded(i);
        record.channel = Some(Channel::Webhook);
        record.created_at = minute - Duration::minutes(2);
        record.updated_at = now;
        record.status = Status::DeadLettered;
        // The masked recipient is quoted by the error: it must not reach the grouped errors.
        let to = record.payload["to"].as_str().unwrap_or_default().to_owned();
        record.last_error = Some(format!("HTTP 500 for {to}"));
        record.timeline = vec![
            step("attempt", minute - Duration::minutes(2), true),
            step("dead_lettered", minute - Duration::minutes(1), false),
        ];
        records.push(record);
    }
    let mut delivered = seeded(9);
    delivered.channel = Some(Channel::Email);
    delivered.created_at = now - Duration::days(2);
    delivered.updated_at = now;
    delivered.status = Status::Delivered;
    delivered.timeline = vec![step("delivered", now, false)];
    records.push(delivered);
    insert(&database(&ctx).await?, &records).await?;

    let minutes = service.ok("/api/stats/minutes?minutes=5").await?;
    assert_eq!(minutes["minutes"], json!(5));
    // The window ends with the service's current minute, which may have turned since `now`.
    let from: chrono::DateTime<Utc> = serde_json::from_value(minutes["from"].clone())?;
    let turned = (from - (minute - Duration::minutes(4))).num_minutes();
    ensure!(
        (0..=1).contains(&turned),
        "window from {from}, minute {minute}"
    );
    let series = |index: i64, n: u64| {
        let mut values = vec![0u64; 5];
        if let Ok(slot) = usize::try_from(index - turned) {
            values[slot] = n;
        }
        json!(values)
    };
    assert_eq!(minutes["all"]["accepted"], series(2, 3));
    assert_eq!(minutes["all"]["failed"], series(2, 3));
    assert_eq!(minutes["all"]["deadLettered"], series(3, 3));
    assert_eq!(minutes["all"]["delivered"], series(4, 1));
    assert_eq!(minutes["byChannel"]["email"]["delivered"], series(4, 1));
    assert_eq!(minutes["truncated"], json!(false));
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
