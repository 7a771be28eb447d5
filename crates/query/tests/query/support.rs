//! What the query tests share: an in-process service on port 0, a seed of varied events with its in-memory
//! model, and the filter the API is checked against.

use anyhow::{Context, Result};
use chrono::{DateTime, TimeZone, Utc};
use herald_domain::{Channel, Event, EventId, Priority, Status};
use herald_platform::mongo::{self, EVENTS};
use herald_platform::store::EventRecord;
use herald_query::{App, Config};
use herald_test_support::{spawn, Spawned, TestContext};
use mongodb::Database;
use serde_json::{json, Value};

/// A running `herald-query`, stopped (and checked to stop cleanly) with [`Service::stop`].
pub struct Service {
    pub base: String,
    pub http: reqwest::Client,
    app: Spawned<App>,
}

impl Service {
    /// Starts the service with the test's MongoDB and the defaults, adjusted by `adjust`.
    pub async fn start(ctx: &TestContext, adjust: impl FnOnce(&mut Config)) -> Result<Self> {
        let mut config = Config::for_test(ctx.mongo.clone());
        config.kafka = ctx.kafka.clone();
        adjust(&mut config);
        Self::start_with(config).await
    }

    pub async fn start_with(config: Config) -> Result<Self> {
        let app = spawn::<App>(config).await?;
        Ok(Self {
            base: app.base.clone(),
            http: reqwest::Client::new(),
            app,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// GETs `path` (with its query string); returns the status and the decoded answer.
    pub async fn get(&self, path: &str) -> Result<(u16, Value)> {
        answer(self.http.get(self.url(path)).send().await?).await
    }

    /// GETs `path` and insists on 200.
    pub async fn ok(&self, path: &str) -> Result<Value> {
        let (status, body) = self.get(path).await?;
        anyhow::ensure!(status == 200, "GET {path}: {status} {body}");
        Ok(body)
    }

    /// Stops the service and checks that it stopped cleanly, within a bound.
    pub async fn stop(self) -> Result<()> {
        self.app.stop().await
    }
}

/// The status and JSON body of a response.
pub async fn answer(response: reqwest::Response) -> Result<(u16, Value)> {
    let status = response.status().as_u16();
    let text = response.text().await?;
    let body =
        serde_json::from_str(&text).with_context(|| format!("not JSON ({status}): {text}"))?;
    Ok((status, body))
}

/// The test's database, through a client of its own.
pub async fn database(ctx: &TestContext) -> Result<Database> {
    Ok(mongo::connect(&ctx.mongo, "query-test").await?)
}

/// Noon of 2024-05-10 (UTC): the seed's events lie in the ten days before it.
pub fn seed_end() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 5, 10, 12, 0, 0)
        .single()
        .expect("a valid time")
}

pub const EVENT_TYPES: [&str; 4] = [
    "order.shipped",
    "user.signup",
    "password.reset",
    "invoice.paid",
];

/// Event `i` of a seed: every field varies with `i` on a different period, so filters cut across each other;
/// pairs of events share a millisecond, so the `eventId` tie-break matters; ids are not in time order.
pub fn seeded(i: u32) -> EventRecord {
    let slot = i64::from((i * 7919) % 1000);
    // A thousand slots over ten days, about 14 minutes apart, each used by two events (i and i + 1000).
    let created_at = seed_end() - chrono::Duration::milliseconds(slot * 863_999 + 7);
    let channel = match i % 7 {
        0 | 3 => Some(Channel::Email),
        1 | 5 => Some(Channel::Sms),
        2 => Some(Channel::Webhook),
        _ => None,
    };
    let event = Event {
        event_id: EventId::parse(&format!(
            "ev-{:04x}-{i}",
            i.wrapping_mul(2_654_435_761) >> 16
        ))
        .expect("a valid id"),
        user_id: (i % 23 != 0).then(|| format!("user-{}", i % 20)),
        event_type: (i % 31 != 0).then(|| EVENT_TYPES[(i % 4) as usize].to_owned()),
        channel,
        priority: if i % 5 == 0 {
            Priority::Critical
        } else {
            Priority::Default
        },
        payload: json!({"to": format!("user{i}@example.com"), "phoneNumber": format!("+1555{i:07}"), "n": i}),
        metadata: (i % 2 == 0)
            .then(|| json!({"ip": format!("10.0.{}.{}", i / 256, i % 256), "source": "seed"})),
        created_at,
    };
    let mut record = EventRecord::accepted(&event);
    record.status = Status::ALL[((i * 3) % 7) as usize];
    record.updated_at = created_at + chrono::Duration::seconds(1);
    record
}

/// Inserts `records` in batches of 500, as one `insert_many` each, as the writers store them (with the slices of
/// their creation time).
pub async fn insert(db: &Database, records: &[EventRecord]) -> Result<()> {
    let events = db.collection::<mongodb::bson::Document>(EVENTS);
    for batch in records.chunks(500) {
        let documents = batch
            .iter()
            .map(EventRecord::to_document)
            .collect::<Result<Vec<_>, _>>()?;
        events.insert_many(documents).await?;
    }
    Ok(())
}

/// Seeds events 0..n_events and returns them.
pub async fn seed(db: &Database, n_events: u32) -> Result<Vec<EventRecord>> {
    let records: Vec<EventRecord> = (0..n_events).map(seeded).collect();
    insert(db, &records).await?;
    Ok(records)
}

/// The filters of a list request, as the in-memory model applies them.
#[derive(Debug, Clone, Default)]
pub struct Expect {
    pub user_id: Option<String>,
    pub event_type: Option<String>,
    pub channel: Option<Channel>,
    pub priority: Option<Priority>,
    pub status: Option<Status>,
    /// Inclusive.
    pub from: Option<DateTime<Utc>>,
    /// Inclusive.
    pub to: Option<DateTime<Utc>>,
    pub oldest_first: bool,
}

impl Expect {
    pub fn matches(&self, r: &EventRecord) -> bool {
        self.user_id
            .as_ref()
            .is_none_or(|u| r.user_id.as_ref() == Some(u))
            && self
                .event_type
                .as_ref()
                .is_none_or(|t| r.event_type.as_ref() == Some(t))
            && self.channel.is_none_or(|c| r.channel == Some(c))
            && self.priority.is_none_or(|p| r.priority == p)
            && self.status.is_none_or(|s| r.status == s)
            && self.from.is_none_or(|from| r.created_at >= from)
            && self.to.is_none_or(|to| r.created_at <= to)
    }

    /// The ids of the matching records, in the API's order.
    pub fn ids(&self, records: &[EventRecord]) -> Vec<String> {
        let mut matching: Vec<&EventRecord> = records.iter().filter(|r| self.matches(r)).collect();
        matching.sort_by(|a, b| {
            (a.created_at, a.event_id.as_str()).cmp(&(b.created_at, b.event_id.as_str()))
        });
        if !self.oldest_first {
            matching.reverse();
        }
        matching
            .into_iter()
            .map(|r| r.event_id.as_str().to_owned())
            .collect()
    }
}

/// The `eventId`s of a page's `data`.
pub fn ids_of(page: &Value) -> Vec<String> {
    page["data"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item["eventId"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// `query` with `&` between it and `more` when both are non-empty.
pub fn join(query: &str, more: &str) -> String {
    match (query.is_empty(), more.is_empty()) {
        (true, _) => more.to_owned(),
        (_, true) => query.to_owned(),
        _ => format!("{query}&{more}"),
    }
}

/// Walks `/api/logs?{query}` with the cursor, `limit` at a time, calling `between` after every page; returns every
/// id in the order served.
pub async fn walk_with_cursor<F, Fut>(
    service: &Service,
    query: &str,
    limit: u32,
    mut between: F,
) -> Result<Vec<String>>
where
    F: FnMut(&Value) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10_000 {
        let path = match &cursor {
            None => format!("/api/logs?{}", join(query, &format!("limit={limit}"))),
            Some(c) => format!(
                "/api/logs?{}",
                join(query, &format!("limit={limit}&cursor={c}"))
            ),
        };
        let page = service.ok(&path).await?;
        ids.extend(ids_of(&page));
        between(&page).await?;
        match page["pagination"]["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return Ok(ids),
        }
    }
    anyhow::bail!("the walk did not end")
}
