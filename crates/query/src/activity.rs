//! `GET /api/stats/minutes` (accepted, delivered, failed and dead-lettered events per minute, in all and by channel
//! and priority) and `GET /api/stats/dead-letters` (the dead letters waiting, by channel and by last error): what
//! the console's overview and dead-letter views draw, and scripts can read as well.
//!
//! The minutes are read from the minute buckets the stats consumer keeps ([`crate::stats::minutes`]): one read of
//! at most a day of small documents, whatever the traffic. The dead letters are read (a bounded number) and grouped
//! in the service, since an error text must be masked with its own event's masked values before it is grouped.

use std::collections::BTreeMap;

use axum::extract::{RawQuery, State};
use axum::Json;
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use herald_domain::{Channel, FieldError, Priority, Status};
use herald_platform::mongo::EVENTS;
use mongodb::bson::{doc, RawDocumentBuf};
use mongodb::Database;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::logs::reader::{Found, NO_CHANNEL};
use crate::logs::view::EventSummary;
use crate::openapi::ErrorBody;
use crate::stats::minutes::{MinuteBuckets, MinuteCounters};
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

    /// The list of a series by its bucket name (`accepted`, `delivered`, `failed`, `deadLettered`).
    fn of_kind(&mut self, kind: &str) -> Option<&mut Vec<u64>> {
        match kind {
            "accepted" => Some(&mut self.accepted),
            "delivered" => Some(&mut self.delivered),
            "failed" => Some(&mut self.failed),
            "deadLettered" => Some(&mut self.dead_lettered),
            _ => None,
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

/// Places each minute's counters in the window's series.
fn tally(window: Window, counters: &[MinuteCounters]) -> Minutes {
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
    for minute in counters {
        let Some(slot) = window.slot(minute.minute) else {
            continue;
        };
        for (kind, values) in &minute.counts {
            for (name, count) in values {
                let series = match name.split_once('.') {
                    None if name == "all" => Some(&mut all),
                    Some(("c", channel)) => by_channel.get_mut(channel),
                    Some(("p", priority)) => by_priority.get_mut(priority),
                    _ => None,
                };
                if let Some(list) = series.and_then(|s| s.of_kind(kind)) {
                    list[slot] += count;
                }
            }
        }
    }
    Minutes {
        from: window.from,
        minutes: window.minutes,
        all,
        by_channel,
        by_priority,
    }
}

/// Reads the window's minute buckets.
pub async fn minutes(
    db: &Database,
    window: Window,
    max_time: std::time::Duration,
) -> mongodb::error::Result<Minutes> {
    let counters = MinuteBuckets::new(db).read(window.from, max_time).await?;
    Ok(tally(window, &counters))
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
/// (the current one last), in all, by channel and by priority, from the minute buckets the stats consumer keeps
/// (a step is counted a second or so after it happened; nothing when this service runs without the consumer).
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
    use super::*;

    fn at(minute: i64, second: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + minute * 60 + second, 0).expect("valid")
    }

    fn counters(minute: i64, kind: &'static str, names: &[(&str, u64)]) -> MinuteCounters {
        let values = names.iter().map(|(n, c)| ((*n).to_owned(), *c)).collect();
        MinuteCounters {
            minute: at(minute, 0),
            counts: BTreeMap::from([(kind, values)]),
        }
    }

    #[test]
    fn each_minute_lands_in_its_slot_of_all_its_channel_and_its_priority() {
        let window = Window::ending(at(9, 30), 10);
        assert_eq!(window.from, at(0, 0));
        let read = vec![
            counters(
                2,
                "accepted",
                &[("all", 2), ("c.webhook", 2), ("p.critical", 2)],
            ),
            counters(
                3,
                "deadLettered",
                &[("all", 1), ("c.webhook", 1), ("p.critical", 1)],
            ),
            counters(
                9,
                "delivered",
                &[("all", 1), ("c.none", 1), ("p.default", 1)],
            ),
            // Before the window (the read starts at its first minute, but a bucket may round either way).
            counters(-1, "failed", &[("all", 5)]),
            // A counter of a name this version does not know is left out, not misplaced.
            counters(
                4,
                "failed",
                &[("all", 1), ("c.carrier-pigeon", 1), ("x.y", 1)],
            ),
        ];
        let counted = tally(window, &read);
        assert_eq!(counted.all.totals(), [2, 1, 1, 1]);
        assert_eq!(counted.all.accepted[2], 2);
        assert_eq!(counted.all.failed[4], 1);
        assert_eq!(counted.all.dead_lettered[3], 1);
        assert_eq!(counted.all.delivered[9], 1);
        assert_eq!(counted.by_channel["webhook"].totals(), [2, 0, 0, 1]);
        assert_eq!(counted.by_channel[NO_CHANNEL].totals(), [0, 1, 0, 0]);
        assert_eq!(counted.by_channel["email"].totals(), [0, 0, 0, 0]);
        assert_eq!(counted.by_priority["default"].delivered[9], 1);
        assert!(!counted.by_channel.contains_key("carrier-pigeon"));
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
