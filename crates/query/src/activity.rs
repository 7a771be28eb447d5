//! `GET /api/stats/minutes` (accepted, delivered, failed and dead-lettered events per minute, in all and by channel
//! and priority) and `GET /api/stats/dead-letters` (the dead letters waiting, by channel and by last error): what
//! the console's overview and dead-letter views draw, and scripts can read as well.
//!
//! Both read a bounded number of documents and count in the service rather than in an aggregation: the minute of a
//! delivery is in each event's timeline (an array, which FerretDB 1.24 cannot `$unwind` and group on the server),
//! and an error text must be masked with its own event's masked values before it is grouped.

use std::collections::BTreeMap;

use axum::extract::{RawQuery, State};
use axum::Json;
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use futures::TryStreamExt;
use herald_domain::{AttemptOutcome, Channel, FieldError, Priority, Status};
use herald_platform::mongo::EVENTS;
use herald_platform::store::TimelineEntry;
use mongodb::bson::{self, doc, RawDocumentBuf};
use mongodb::Database;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::logs::reader::{Found, NO_CHANNEL};
use crate::logs::view::EventSummary;
use crate::openapi::ErrorBody;
use crate::AppState;

/// Most events one answer reads: past it the answer says `truncated`.
pub const MAX_SCANNED: i64 = 50_000;
/// Minutes shown by default, and at most.
pub const DEFAULT_MINUTES: u32 = 60;
pub const MAX_MINUTES: u32 = 1_440;
/// Distinct last errors listed, most frequent first.
pub const TOP_ERRORS: usize = 10;

/// Counts per minute, oldest minute first; each list has one number per minute.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Series {
    /// Events accepted by ingest (created) in each minute.
    pub accepted: Vec<u64>,
    /// Events delivered in each minute.
    pub delivered: Vec<u64>,
    /// Failed delivery attempts in each minute.
    pub failed: Vec<u64>,
    /// Events dead-lettered in each minute.
    pub dead_lettered: Vec<u64>,
}

impl Series {
    fn zero(minutes: usize) -> Self {
        Self {
            accepted: vec![0; minutes],
            delivered: vec![0; minutes],
            failed: vec![0; minutes],
            dead_lettered: vec![0; minutes],
        }
    }

    /// The sum of each list.
    pub fn totals(&self) -> [u64; 4] {
        [
            self.accepted.iter().sum(),
            self.delivered.iter().sum(),
            self.failed.iter().sum(),
            self.dead_lettered.iter().sum(),
        ]
    }
}

/// The answer of `GET /api/stats/minutes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Minutes {
    /// The start of the first minute (UTC, on the minute).
    pub from: DateTime<Utc>,
    pub minutes: u32,
    pub all: Series,
    /// By channel; `none` holds record-only events.
    pub by_channel: BTreeMap<String, Series>,
    pub by_priority: BTreeMap<String, Series>,
    /// Whether more events changed in the window than one answer reads (then the counts are short).
    pub truncated: bool,
}

/// The fields of an event the minute counts need.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Row {
    #[serde(default)]
    channel: Option<Channel>,
    #[serde(default)]
    priority: Priority,
    #[serde(with = "bson::serde_helpers::chrono_datetime_as_bson_datetime")]
    created_at: DateTime<Utc>,
    #[serde(default)]
    timeline: Vec<TimelineEntry>,
}

/// The minute buckets of a window.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub from: DateTime<Utc>,
    pub minutes: u32,
}

impl Window {
    /// The `minutes` minutes up to and including the current one.
    pub fn ending(now: DateTime<Utc>, minutes: u32) -> Self {
        let this_minute = now.duration_trunc(TimeDelta::minutes(1)).unwrap_or(now);
        Self {
            from: this_minute - TimeDelta::minutes(i64::from(minutes) - 1),
            minutes,
        }
    }

    fn slot(&self, at: DateTime<Utc>) -> Option<usize> {
        let index = (at - self.from).num_minutes();
        (at >= self.from && index < i64::from(self.minutes)).then_some(index as usize)
    }
}

/// Counts the rows into the window's minutes.
fn tally(window: Window, rows: &[Row], truncated: bool) -> Minutes {
    let n = window.minutes as usize;
    let mut all = Series::zero(n);
    let mut by_channel: BTreeMap<String, Series> = Channel::ALL
        .iter()
        .map(|c| c.as_str())
        .chain([NO_CHANNEL])
        .map(|c| (c.to_owned(), Series::zero(n)))
        .collect();
    let mut by_priority: BTreeMap<String, Series> = Priority::ALL
        .iter()
        .map(|p| (p.as_str().to_owned(), Series::zero(n)))
        .collect();
    for row in rows {
        let channel = row.channel.map_or(NO_CHANNEL, Channel::as_str);
        let priority = row.priority.as_str();
        let mut count = |pick: fn(&mut Series) -> &mut Vec<u64>, at: DateTime<Utc>| {
            let Some(slot) = window.slot(at) else { return };
            for series in [
                Some(&mut all),
                by_channel.get_mut(channel),
                by_priority.get_mut(priority),
            ]
            .into_iter()
            .flatten()
            {
                pick(series)[slot] += 1;
            }
        };
        count(|s| &mut s.accepted, row.created_at);
        for step in &row.timeline {
            match step.kind.as_str() {
                "delivered" => count(|s| &mut s.delivered, step.at),
                "dead_lettered" => count(|s| &mut s.dead_lettered, step.at),
                "attempt"
                    if step
                        .attempt
                        .as_ref()
                        .is_some_and(|a| a.outcome == AttemptOutcome::Failed) =>
                {
                    count(|s| &mut s.failed, step.at)
                }
                _ => {}
            }
        }
    }
    Minutes {
        from: window.from,
        minutes: window.minutes,
        all,
        by_channel,
        by_priority,
        truncated,
    }
}

/// Reads the events that changed within the window and counts them per minute.
pub async fn minutes(
    db: &Database,
    window: Window,
    max_time: std::time::Duration,
) -> mongodb::error::Result<Minutes> {
    // Every step of the window happened at or after its start, so the event was updated then too.
    let rows: Vec<Row> = db
        .collection::<Row>(EVENTS)
        .find(doc! { "updatedAt": { "$gte": bson::DateTime::from_chrono(window.from) } })
        .projection(doc! { "channel": 1, "priority": 1, "createdAt": 1, "timeline": 1, "_id": 0 })
        .limit(MAX_SCANNED + 1)
        .max_time(max_time)
        .await?
        .try_collect()
        .await?;
    let truncated = rows.len() as i64 > MAX_SCANNED;
    Ok(tally(window, &rows, truncated))
}

/// One last error and how many dead letters of one channel stopped on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorCount {
    pub channel: String,
    /// The last error, with the configured masking applied; `null` when the event has none.
    pub last_error: Option<String>,
    pub count: u64,
}

/// The answer of `GET /api/stats/dead-letters`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterSummary {
    /// Dead letters waiting (counted, not bounded).
    pub total: u64,
    /// By channel (`none` for record-only events), among those read.
    pub by_channel: BTreeMap<String, u64>,
    /// The most frequent (channel, last error) pairs, at most ten, most frequent first.
    pub by_error: Vec<ErrorCount>,
    /// Whether there were more dead letters than one answer reads (then `byChannel` and `byError` count the
    /// newest ones).
    pub truncated: bool,
}

/// Groups the dead letters by channel and by last error (masked).
fn summarize(total: u64, letters: Vec<EventSummary>, truncated: bool) -> DeadLetterSummary {
    let mut by_channel: BTreeMap<String, u64> = Channel::ALL
        .iter()
        .map(|c| (c.as_str().to_owned(), 0))
        .collect();
    let mut errors: BTreeMap<(String, Option<String>), u64> = BTreeMap::new();
    for letter in letters {
        let channel = letter
            .channel
            .map_or(NO_CHANNEL, Channel::as_str)
            .to_owned();
        *by_channel.entry(channel.clone()).or_default() += 1;
        *errors.entry((channel, letter.last_error)).or_default() += 1;
    }
    let mut by_error: Vec<ErrorCount> = errors
        .into_iter()
        .map(|((channel, last_error), count)| ErrorCount {
            channel,
            last_error,
            count,
        })
        .collect();
    by_error.sort_by_key(|e| std::cmp::Reverse(e.count));
    by_error.truncate(TOP_ERRORS);
    DeadLetterSummary {
        total,
        by_channel,
        by_error,
        truncated,
    }
}

/// Reads the newest dead letters (bounded) and counts them all.
pub async fn dead_letters(state: &AppState) -> mongodb::error::Result<DeadLetterSummary> {
    let events = state.db.collection::<RawDocumentBuf>(EVENTS);
    let filter = doc! { "status": Status::DeadLettered.as_str() };
    let mut cursor = events
        .find(filter.clone())
        .sort(doc! { "createdAt": -1, "eventId": -1 })
        .projection(doc! { "attempts": 0, "timeline": 0 })
        .limit(MAX_SCANNED + 1)
        .max_time(state.request_timeout)
        .await?;
    let mut letters = Vec::new();
    while cursor.advance().await? {
        letters.push(EventSummary::new(
            Found::decode(cursor.current())?,
            &state.mask,
        ));
    }
    let truncated = letters.len() as i64 > MAX_SCANNED;
    letters.truncate(MAX_SCANNED as usize);
    let total = if truncated {
        events
            .count_documents(filter)
            .max_time(state.request_timeout)
            .await?
    } else {
        letters.len() as u64
    };
    Ok(summarize(total, letters, truncated))
}

/// Parses `minutes` (the only parameter of `GET /api/stats/minutes`).
pub fn parse_minutes(raw: Option<&str>) -> Result<u32, Vec<FieldError>> {
    let mut minutes = DEFAULT_MINUTES;
    let mut problems = Vec::new();
    for (name, value) in crate::logs::params::pairs(raw) {
        match name.as_str() {
            "minutes" => match value.parse::<u32>() {
                Ok(n) if (1..=MAX_MINUTES).contains(&n) => minutes = n,
                _ => problems.push(FieldError::new(
                    "minutes",
                    format!("must be a whole number from 1 to {MAX_MINUTES}"),
                )),
            },
            other => problems.push(FieldError::new(other, "unknown parameter")),
        }
    }
    if problems.is_empty() {
        Ok(minutes)
    } else {
        Err(problems)
    }
}

/// Count events per minute.
///
/// Accepted (created), delivered, failed attempts and dead-lettered, per minute over the last `minutes` minutes
/// (the current one last), in all, by channel and by priority. Reads at most 50,000 events changed in the window;
/// past that `truncated` is true and the counts are short.
#[utoipa::path(
    get,
    path = "/api/stats/minutes",
    tag = "stats",
    security(("apiKey" = []), ("bearer" = [])),
    params(("minutes" = Option<u32>, Query, description = "How many minutes, 1 to 1440; default 60")),
    responses(
        (status = 200, description = "The counts per minute", body = Minutes),
        (status = 400, description = "Bad parameters, each one named", body = ErrorBody),
        (status = 401, description = "No API key, or an unknown one", body = ErrorBody),
        (status = 403, description = "The key lacks the `read` scope", body = ErrorBody),
        (status = 503, description = "MongoDB did not answer, or not within the request timeout", body = ErrorBody),
    )
)]
pub async fn per_minute(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Minutes>, ApiError> {
    let n = parse_minutes(raw.as_deref()).map_err(ApiError::Validation)?;
    minutes(
        &state.db,
        Window::ending(Utc::now(), n),
        state.request_timeout,
    )
    .await
    .map(Json)
    .map_err(|e| ApiError::from_mongo(e, state.request_timeout))
}

/// Count the dead letters waiting.
///
/// The number of `DEAD_LETTERED` events, by channel, and the ten most frequent (channel, last error) pairs, with
/// the configured masking applied to the errors. Groups the newest 50,000 dead letters at most (`truncated`).
#[utoipa::path(
    get,
    path = "/api/stats/dead-letters",
    tag = "stats",
    security(("apiKey" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "The dead letters waiting, grouped", body = DeadLetterSummary),
        (status = 401, description = "No API key, or an unknown one", body = ErrorBody),
        (status = 403, description = "The key lacks the `read` scope", body = ErrorBody),
        (status = 503, description = "MongoDB did not answer, or not within the request timeout", body = ErrorBody),
    )
)]
pub async fn dead_letter_summary(
    State(state): State<AppState>,
) -> Result<Json<DeadLetterSummary>, ApiError> {
    dead_letters(&state)
        .await
        .map(Json)
        .map_err(|e| ApiError::from_mongo(e, state.request_timeout))
}

#[cfg(test)]
mod tests {
    use herald_domain::Attempt;

    use super::*;

    fn at(minute: i64, second: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + minute * 60 + second, 0).expect("valid")
    }

    fn step(kind: &str, when: DateTime<Utc>, failed: bool) -> TimelineEntry {
        TimelineEntry {
            at: when,
            kind: kind.to_owned(),
            attempt: failed.then(|| Attempt {
                number: 1,
                provider: "webhook".into(),
                started_at: when,
                ended_at: when,
                outcome: AttemptOutcome::Failed,
                error_class: None,
                error: None,
                http_status: Some(500),
                retry_after_secs: None,
            }),
            detail: None,
        }
    }

    #[test]
    fn each_step_is_counted_in_its_minute_channel_and_priority() {
        let window = Window::ending(at(9, 30), 10);
        assert_eq!(window.from, at(0, 0));
        let rows = vec![
            Row {
                channel: Some(Channel::Webhook),
                priority: Priority::Critical,
                created_at: at(2, 5),
                timeline: vec![
                    step("attempt", at(2, 6), true),
                    step("dead_lettered", at(3, 0), false),
                ],
            },
            Row {
                channel: None,
                priority: Priority::Default,
                // Before the window: not counted as accepted, its delivery inside it is.
                created_at: at(-5, 0),
                timeline: vec![step("delivered", at(9, 59), false)],
            },
        ];
        let counted = tally(window, &rows, false);
        assert_eq!(counted.all.totals(), [1, 1, 1, 1]);
        assert_eq!(counted.all.accepted[2], 1);
        assert_eq!(counted.all.failed[2], 1);
        assert_eq!(counted.all.dead_lettered[3], 1);
        assert_eq!(counted.all.delivered[9], 1);
        assert_eq!(counted.by_channel["webhook"].totals(), [1, 0, 1, 1]);
        assert_eq!(counted.by_channel[NO_CHANNEL].totals(), [0, 1, 0, 0]);
        assert_eq!(counted.by_channel["email"].totals(), [0, 0, 0, 0]);
        assert_eq!(counted.by_priority["default"].delivered[9], 1);
    }

    #[test]
    fn minutes_are_bounded_and_other_parameters_named() {
        assert_eq!(parse_minutes(None), Ok(DEFAULT_MINUTES));
        assert_eq!(parse_minutes(Some("minutes=5")), Ok(5));
        let problems = parse_minutes(Some("minutes=0&x=1")).expect_err("two problems");
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["minutes", "x"]);
    }
}
