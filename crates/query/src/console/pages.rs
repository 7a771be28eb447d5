//! The console's pages: each handler reads what its view shows (through the readers the API uses, so the masking
//! and the filters are the same) and renders its template.

use std::collections::BTreeMap;

use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use chrono::{DateTime, SecondsFormat, Utc};
use futures::TryStreamExt;
use herald_domain::{EventId, Status};
use herald_platform::mongo::EVENTS;
use minijinja::context;
use mongodb::bson::{doc, Document};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::chart::{self, Line};
use super::session::{check_post, Viewer};
use super::{render, ConsoleError, ConsoleState};
use crate::activity::{self, Series, Window};
use crate::alerts::{self, view::AlertView};
use crate::logs::cursor::Cursor;
use crate::logs::params;
use crate::logs::view::{EventDetail, EventSummary};

/// How often the live views reload themselves, in seconds.
const OVERVIEW_REFRESH_SECS: u32 = 5;
const IN_FLIGHT_REFRESH_SECS: u32 = 2;
/// Events per page when the URL does not say.
const EVENTS_PER_PAGE: &str = "25";
/// Most replayed events the watch view follows.
const MAX_WATCHED: usize = 100;
/// Ids shown in a replay's dry-run preview.
const PREVIEW_SAMPLE: usize = 20;

/// What every page's frame needs.
#[derive(Debug, Serialize)]
struct Frame<'a> {
    title: &'a str,
    nav: &'a str,
    admin: bool,
    csrf: &'a str,
    /// Whether there is a key to sign out of (authentication on).
    signed_in: bool,
    /// Seconds between reloads of a live view.
    refresh: Option<u32>,
}

impl<'a> Frame<'a> {
    fn new(viewer: &'a Viewer, title: &'a str, nav: &'a str) -> Self {
        Self {
            title,
            nav,
            admin: viewer.admin,
            csrf: &viewer.csrf,
            signed_in: viewer.key.is_some(),
            refresh: None,
        }
    }
}

/// The query's pairs without empty values: an empty form field means "any".
fn filled(raw: Option<&str>) -> Vec<(String, String)> {
    params::pairs(raw)
        .into_iter()
        .filter(|(_, v)| !v.trim().is_empty())
        .collect()
}

fn query_string(pairs: &[(String, String)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

#[derive(Debug, Serialize)]
struct SeriesRow {
    name: String,
    totals: [u64; 4],
    chart: String,
}

fn series_chart(title: &str, series: &Series, width: u32, height: u32) -> String {
    chart::lines(
        title,
        &[
            Line {
                label: "accepted",
                class: "s-accepted",
                values: &series.accepted,
            },
            Line {
                label: "delivered",
                class: "s-delivered",
                values: &series.delivered,
            },
            Line {
                label: "failed attempts",
                class: "s-failed",
                values: &series.failed,
            },
            Line {
                label: "dead-lettered",
                class: "s-dead",
                values: &series.dead_lettered,
            },
        ],
        width,
        height,
    )
}

fn rows(groups: &BTreeMap<String, Series>, what: &str) -> Vec<SeriesRow> {
    groups
        .iter()
        .map(|(name, series)| SeriesRow {
            name: name.clone(),
            totals: series.totals(),
            chart: series_chart(&format!("{what} {name}, last hour"), series, 240, 48),
        })
        .collect()
}

/// `GET /console`: the last hour per minute, the lanes' lag, the dead letters waiting, the latest alerts.
pub async fn overview(
    State(state): State<ConsoleState>,
    viewer: Viewer,
    headers: HeaderMap,
) -> Result<Response, ConsoleError> {
    let app = &state.app;
    let window = Window::ending(Utc::now(), activity::DEFAULT_MINUTES);
    let latest = alerts::params::AlertQuery {
        rule: None,
        group: None,
        range: params::Range::default(),
        page: 1,
        limit: 5,
    };
    // Only the number of dead letters here: a count on `status`, which both servers answer from an index,
    // rather than the grouping the dead-letter view reads every dead letter for, five seconds apart.
    let events = app.db.collection::<Document>(EVENTS);
    let waiting = events
        .count_documents(doc! { "status": Status::DeadLettered.as_str() })
        .max_time(app.request_timeout);
    let (minutes, waiting, lanes, recent) = tokio::join!(
        activity::minutes(&app.db, window, app.request_timeout),
        waiting,
        crate::lanes::read_lag(&app.kafka),
        app.alerts.page(&latest),
    );
    let minutes = minutes?;
    let waiting = waiting?;
    let (recent, _) = recent?;
    let recent: Vec<AlertView> = recent.into_iter().map(AlertView::from).collect();
    let lanes_error = lanes.as_ref().err().map(ToString::to_string);
    let mut frame = Frame::new(&viewer, "Overview", "overview");
    frame.refresh = Some(OVERVIEW_REFRESH_SECS);
    let page = render(
        "overview.html",
        context! {
            frame,
            totals => minutes.all.totals(),
            chart => series_chart("All events, last hour", &minutes.all, 720, 180),
            by_channel => rows(&minutes.by_channel, "Channel"),
            by_priority => rows(&minutes.by_priority, "Priority"),
            lanes => lanes.ok().map(|l| l.lanes),
            lanes_error,
            waiting,
            alerts => recent,
        },
    )?;
    Ok(viewer.finish(page, &headers))
}

/// `GET /console/events`: `GET /api/logs`'s filters from the URL, a page of events, a link to the next page.
pub async fn events(
    State(state): State<ConsoleState>,
    viewer: Viewer,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ConsoleError> {
    let mut pairs = filled(raw.as_deref());
    let values: BTreeMap<String, String> = pairs.iter().cloned().collect();
    if !pairs.iter().any(|(k, _)| k == "limit") {
        pairs.push(("limit".into(), EVENTS_PER_PAGE.into()));
    }
    let frame = Frame::new(&viewer, "Events", "events");
    let base = |events: Vec<EventSummary>, next: Option<String>, problems: Vec<Value>| {
        render(
            "events.html",
            context! {
                frame,
                values,
                events,
                next,
                problems,
                statuses => Status::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
                channels => herald_domain::Channel::ALL.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
                priorities => herald_domain::Priority::ALL.iter().map(|p| p.as_str()).collect::<Vec<_>>(),
            },
        )
    };
    let query = match params::parse_list(pairs.clone()) {
        Ok(query) => query,
        Err(problems) => {
            let problems = problems
                .into_iter()
                .map(|p| json!({"field": p.field, "message": p.message}))
                .collect();
            let page = base(Vec::new(), None, problems)?;
            return Ok(viewer.finish((axum::http::StatusCode::BAD_REQUEST, page), &headers));
        }
    };
    let page = state.app.reader.page(&query).await?;
    let next = match page.events.last() {
        Some(last) if page.more => {
            let cursor = Cursor::after(
                query.order,
                &query.filters,
                last.record.created_at,
                last.record.event_id.clone(),
            )
            .encode();
            let mut keep: Vec<(String, String)> = pairs
                .iter()
                .filter(|(k, _)| !matches!(k.as_str(), "page" | "cursor" | "total"))
                .cloned()
                .collect();
            keep.push(("cursor".into(), cursor));
            Some(format!("/console/events?{}", query_string(&keep)))
        }
        _ => None,
    };
    let events: Vec<EventSummary> = page
        .events
        .into_iter()
        .map(|found| EventSummary::new(found, &state.app.mask))
        .collect();
    Ok(viewer.finish(base(events, next, Vec::new())?, &headers))
}

#[derive(Debug, Serialize)]
struct AttemptRow {
    number: u32,
    provider: String,
    outcome: String,
    http_status: Option<u16>,
    error: Option<String>,
    error_class: Option<String>,
    duration_ms: i64,
    retry_after_secs: Option<u64>,
    started_at: String,
}

fn iso(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The event's request again, as a `curl` command for ingest (with the masked payload as shown).
fn curl_command(event: &EventSummary) -> String {
    let mut body = serde_json::Map::new();
    if let Some(user) = &event.user_id {
        body.insert("userId".into(), json!(user));
    }
    if let Some(kind) = &event.event_type {
        body.insert("eventType".into(), json!(kind));
    }
    if let Some(channel) = event.channel {
        body.insert("channel".into(), json!(channel.as_str()));
    }
    body.insert("priority".into(), json!(event.priority.as_str()));
    body.insert("payload".into(), event.payload.clone());
    if let Some(metadata) = &event.metadata {
        body.insert("metadata".into(), metadata.clone());
    }
    let body = serde_json::to_string(&Value::Object(body)).unwrap_or_default();
    // In single quotes for the shell: a quote inside ends the string, adds an escaped one, opens it again.
    let quoted = body.replace('\'', r"'\''");
    format!(
        "curl -X POST \"${{HERALD_INGEST_URL:-http://127.0.0.1:3000}}/event\" \\\n  -H 'Content-Type: application/json' \\\n  -H \"X-API-Key: $HERALD_API_KEY\" \\\n  -d '{quoted}'"
    )
}

/// `GET /console/events/{id}`: the event, its attempts, its timeline, its payload (masked) and its request.
pub async fn event(
    State(state): State<ConsoleState>,
    viewer: Viewer,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ConsoleError> {
    let id = EventId::parse(&id).map_err(|e| ConsoleError::BadRequest(e.to_string()))?;
    let found = state
        .app
        .reader
        .find(&id)
        .await?
        .ok_or_else(|| ConsoleError::NotFound(format!("no event has the id {id}")))?;
    let detail = EventDetail::new(found, &state.app.mask);
    let attempts: Vec<AttemptRow> = detail
        .attempts
        .iter()
        .map(|a| AttemptRow {
            number: a.number,
            provider: a.provider.clone(),
            outcome: a.outcome.as_str().to_owned(),
            http_status: a.http_status,
            error: a.error.clone(),
            error_class: a.error_class.map(|c| c.as_str().to_owned()),
            duration_ms: (a.ended_at - a.started_at).num_milliseconds(),
            retry_after_secs: a.retry_after_secs,
            started_at: iso(a.started_at),
        })
        .collect();
    let timeline: Vec<Value> = detail
        .timeline
        .iter()
        .map(|step| {
            json!({
                "at": iso(step.at),
                "kind": step.kind,
                "detail": step.detail,
                "attempt": step.attempt.as_ref().map(|a| a.number),
            })
        })
        .collect();
    let event = &detail.event;
    let mut frame = Frame::new(&viewer, "Event", "events");
    if !event.status.is_terminal() {
        frame.refresh = Some(IN_FLIGHT_REFRESH_SECS);
    }
    let page = render(
        "event.html",
        context! {
            frame,
            event => event,
            status => event.status.as_str(),
            dead_lettered => event.status == Status::DeadLettered,
            created_at => iso(event.created_at),
            updated_at => iso(event.updated_at),
            attempts,
            timeline,
            payload => serde_json::to_string_pretty(&event.payload).unwrap_or_default(),
            metadata => event.metadata.as_ref().map(|m| serde_json::to_string_pretty(m).unwrap_or_default()),
            curl => curl_command(event),
        },
    )?;
    Ok(viewer.finish(page, &headers))
}

/// The filters the dead-letter view and a replay by filter share (those of `POST /replay-dead-letter` that the
/// list can apply too).
const DEAD_LETTER_FILTERS: [&str; 3] = ["channel", "priority", "eventType"];

/// `GET /console/dead-letters`: counts by channel and last error, the filtered dead letters to select.
pub async fn dead_letters(
    State(state): State<ConsoleState>,
    viewer: Viewer,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ConsoleError> {
    let given = filled(raw.as_deref());
    let values: BTreeMap<String, String> = given.iter().cloned().collect();
    let mut problems: Vec<Value> = given
        .iter()
        .filter(|(k, _)| !DEAD_LETTER_FILTERS.contains(&k.as_str()) && k != "page")
        .map(|(k, _)| json!({"field": k, "message": "unknown parameter"}))
        .collect();
    let mut pairs: Vec<(String, String)> = given
        .iter()
        .filter(|(k, _)| DEAD_LETTER_FILTERS.contains(&k.as_str()) || k == "page")
        .cloned()
        .collect();
    pairs.push(("status".into(), Status::DeadLettered.as_str().into()));
    pairs.push(("limit".into(), "50".into()));
    let (letters, more) = match params::parse_list(pairs) {
        Ok(query) if problems.is_empty() => {
            let page = state.app.reader.page(&query).await?;
            let letters: Vec<EventSummary> = page
                .events
                .into_iter()
                .map(|found| EventSummary::new(found, &state.app.mask))
                .collect();
            (letters, page.more)
        }
        Ok(_) => (Vec::new(), false),
        Err(found) => {
            problems.extend(
                found
                    .into_iter()
                    .map(|p| json!({"field": p.field, "message": p.message})),
            );
            (Vec::new(), false)
        }
    };
    let summary = activity::dead_letters(&state.app).await?;
    let frame = Frame::new(&viewer, "Dead letters", "dead-letters");
    let page = render(
        "dead_letters.html",
        context! {
            frame,
            values,
            problems,
            letters,
            more,
            summary,
            channels => herald_domain::Channel::ALL.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
            priorities => herald_domain::Priority::ALL.iter().map(|p| p.as_str()).collect::<Vec<_>>(),
        },
    )?;
    Ok(viewer.finish(page, &headers))
}

/// What herald-replay answers.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReplayAnswer {
    replayed: usize,
    event_ids: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct ReplayProblem {
    error: String,
    #[serde(default)]
    details: Vec<ReplayDetail>,
}

#[derive(Debug, Deserialize)]
struct ReplayDetail {
    field: String,
    message: String,
}

/// `POST /replay-dead-letter` on herald-replay, with the viewer's key.
async fn call_replay(
    state: &ConsoleState,
    viewer: &Viewer,
    body: &Value,
) -> Result<ReplayAnswer, ConsoleError> {
    let url = state
        .replay_url
        .join("replay-dead-letter")
        .map_err(|e| ConsoleError::Replay(format!("bad HERALD_QUERY_REPLAY_URL: {e}")))?;
    let mut request = state
        .http
        .post(url.clone())
        .json(body)
        .timeout(std::time::Duration::from_secs(120));
    if let Some(key) = &viewer.key {
        request = request.header("x-api-key", key);
    }
    let response = request
        .send()
        .await
        .map_err(|e| ConsoleError::Replay(format!("cannot reach {url}: {e}")))?;
    let status = response.status();
    if status.is_success() {
        return response
            .json()
            .await
            .map_err(|e| ConsoleError::Replay(format!("an answer that does not decode: {e}")));
    }
    let problem = match response.json::<ReplayProblem>().await {
        Ok(problem) => {
            let details: Vec<String> = problem
                .details
                .iter()
                .map(|d| format!("{}: {}", d.field, d.message))
                .collect();
            if details.is_empty() {
                problem.error
            } else {
                format!("{} ({})", problem.error, details.join("; "))
            }
        }
        Err(_) => "no details".to_owned(),
    };
    Err(ConsoleError::Replay(format!("{status}: {problem}")))
}

/// The fields of a replay form.
#[derive(Debug, Default)]
struct ReplayForm {
    csrf: Option<String>,
    /// `preview` (a dry run) or `run`.
    mode: String,
    /// `selected` (the `eventIds`) or `filter` (the filters).
    scope: String,
    event_ids: Vec<String>,
    filters: Vec<(String, String)>,
    /// An event whose detail view to go back to.
    back_to: Option<String>,
}

impl ReplayForm {
    fn read(pairs: Vec<(String, String)>) -> Self {
        let mut form = ReplayForm::default();
        for (name, value) in pairs {
            match name.as_str() {
                "csrf" => form.csrf = Some(value),
                "mode" => form.mode = value,
                "scope" => form.scope = value,
                "eventIds" => form.event_ids.extend(
                    value
                        .split([',', ' ', '\n'])
                        .map(str::trim)
                        .filter(|v| !v.is_empty())
                        .map(str::to_owned),
                ),
                "backTo" if !value.is_empty() => form.back_to = Some(value),
                name if DEAD_LETTER_FILTERS.contains(&name) && !value.trim().is_empty() => {
                    form.filters.push((name.to_owned(), value))
                }
                _ => {}
            }
        }
        form
    }

    /// The body of `POST /replay-dead-letter`.
    fn body(&self, dry_run: bool) -> Result<Value, ConsoleError> {
        let mut body = serde_json::Map::new();
        match self.scope.as_str() {
            "selected" => {
                if self.event_ids.is_empty() {
                    return Err(ConsoleError::BadRequest(
                        "select at least one dead letter".into(),
                    ));
                }
                body.insert("eventIds".into(), json!(self.event_ids));
            }
            "filter" => {
                for (name, value) in &self.filters {
                    body.insert(name.clone(), json!(value));
                }
            }
            other => {
                return Err(ConsoleError::BadRequest(format!(
                    "unknown replay scope '{other}'"
                )))
            }
        }
        body.insert("dryRun".into(), json!(dry_run));
        Ok(Value::Object(body))
    }
}

/// `POST /console/dead-letters/replay`: a dry run shows what would be replayed and asks to confirm; a confirmed
/// one replays and goes to the view that follows the events.
pub async fn replay(
    State(state): State<ConsoleState>,
    viewer: Viewer,
    headers: HeaderMap,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Result<Response, ConsoleError> {
    let form = ReplayForm::read(pairs);
    check_post(&headers, form.csrf.as_deref())?;
    if !viewer.admin {
        return Err(ConsoleError::Forbidden);
    }
    match form.mode.as_str() {
        "preview" => {
            let answer = call_replay(&state, &viewer, &form.body(true)?).await?;
            let frame = Frame::new(&viewer, "Replay preview", "dead-letters");
            let sample: Vec<&String> = answer.event_ids.iter().take(PREVIEW_SAMPLE).collect();
            let page = render(
                "preview.html",
                context! {
                    frame,
                    count => answer.replayed,
                    sample,
                    scope => form.scope,
                    event_ids => form.event_ids.join(","),
                    filters => form.filters,
                },
            )?;
            Ok(viewer.finish(page, &headers))
        }
        "run" => {
            let answer = call_replay(&state, &viewer, &form.body(false)?).await?;
            if let Some(id) = form.back_to {
                let id =
                    EventId::parse(&id).map_err(|e| ConsoleError::BadRequest(e.to_string()))?;
                return Ok(
                    Redirect::to(&format!("/console/events/{}", encode(id.as_str())))
                        .into_response(),
                );
            }
            let watched: Vec<&str> = answer
                .event_ids
                .iter()
                .take(MAX_WATCHED)
                .map(String::as_str)
                .collect();
            let query = query_string(&[
                ("ids".to_owned(), watched.join(",")),
                ("n".to_owned(), answer.replayed.to_string()),
            ]);
            Ok(Redirect::to(&format!("/console/dead-letters/replayed?{query}")).into_response())
        }
        other => Err(ConsoleError::BadRequest(format!(
            "unknown replay mode '{other}'"
        ))),
    }
}

fn encode(segment: &str) -> String {
    url::form_urlencoded::byte_serialize(segment.as_bytes()).collect()
}

/// `GET /console/dead-letters/replayed`: the replayed events' statuses, reloading until each is settled.
pub async fn replayed(
    State(state): State<ConsoleState>,
    viewer: Viewer,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ConsoleError> {
    let mut ids = Vec::new();
    let mut n = 0usize;
    for (name, value) in params::pairs(raw.as_deref()) {
        match name.as_str() {
            "ids" => {
                for id in value.split(',').filter(|v| !v.is_empty()).take(MAX_WATCHED) {
                    ids.push(
                        EventId::parse(id)
                            .map_err(|e| ConsoleError::BadRequest(e.to_string()))?
                            .as_str()
                            .to_owned(),
                    );
                }
            }
            "n" => n = value.parse().unwrap_or(0),
            _ => {}
        }
    }
    let found: Vec<Document> = state
        .app
        .db
        .collection::<Document>(EVENTS)
        .find(doc! { "eventId": { "$in": &ids } })
        .projection(doc! { "eventId": 1, "status": 1, "channel": 1, "attemptCount": 1, "_id": 0 })
        .max_time(state.app.request_timeout)
        .await?
        .try_collect()
        .await?;
    let mut by_status: BTreeMap<String, u64> = BTreeMap::new();
    let mut settled = true;
    let rows: Vec<Value> = found
        .iter()
        .map(|d| {
            let status = d.get_str("status").unwrap_or("UNKNOWN");
            *by_status.entry(status.to_owned()).or_default() += 1;
            // A replayed event is settled once delivered (or recorded), or dead-lettered again after its attempt.
            let done = match Status::ALL.iter().copied().find(|s| s.as_str() == status) {
                Some(Status::DeadLettered) => d.get_i32("attemptCount").unwrap_or(0) > 0,
                Some(s) => s.is_terminal(),
                None => true,
            };
            settled &= done;
            json!({
                "eventId": d.get_str("eventId").unwrap_or_default(),
                "status": status,
                "channel": d.get_str("channel").ok(),
            })
        })
        .collect();
    let mut frame = Frame::new(&viewer, "Replay", "dead-letters");
    if !settled {
        frame.refresh = Some(IN_FLIGHT_REFRESH_SECS);
    }
    let page = render(
        "replayed.html",
        context! { frame, n, rows, by_status, settled, followed => ids.len() },
    )?;
    Ok(viewer.finish(page, &headers))
}

/// `GET /console/alerts`.
pub async fn alerts(
    State(state): State<ConsoleState>,
    viewer: Viewer,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ConsoleError> {
    let query = alerts::params::parse_list(filled(raw.as_deref())).map_err(|problems| {
        let text: Vec<String> = problems
            .iter()
            .map(|p| format!("{}: {}", p.field, p.message))
            .collect();
        ConsoleError::BadRequest(text.join("; "))
    })?;
    let (found, total) = state.app.alerts.page(&query).await?;
    let list: Vec<AlertView> = found.into_iter().map(AlertView::from).collect();
    let frame = Frame::new(&viewer, "Alerts", "alerts");
    let page = render(
        "alerts.html",
        context! { frame, alerts => list, total, page => query.page, more => u64::from(query.page) * u64::from(query.limit) < total },
    )?;
    Ok(viewer.finish(page, &headers))
}

/// `GET /console/alerts/{id}`: one alert, linked to its events.
pub async fn alert(
    State(state): State<ConsoleState>,
    viewer: Viewer,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ConsoleError> {
    let found = state
        .app
        .alerts
        .find(&id)
        .await?
        .ok_or_else(|| ConsoleError::NotFound(format!("no alert has the id {id}")))?;
    let alert = AlertView::from(found);
    let frame = Frame::new(&viewer, "Alert", "alerts");
    let page = render("alert.html", context! { frame, alert })?;
    Ok(viewer.finish(page, &headers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replay_form_becomes_the_replay_body() {
        let form = ReplayForm::read(vec![
            ("csrf".into(), "t".into()),
            ("mode".into(), "preview".into()),
            ("scope".into(), "filter".into()),
            ("channel".into(), "webhook".into()),
            ("priority".into(), String::new()),
            ("eventIds".into(), "a,b".into()),
        ]);
        assert_eq!(
            form.body(true).expect("valid"),
            json!({"channel": "webhook", "dryRun": true})
        );
        let selected = ReplayForm {
            scope: "selected".into(),
            ..form
        };
        assert_eq!(
            selected.body(false).expect("valid"),
            json!({"eventIds": ["a", "b"], "dryRun": false})
        );
        let none = ReplayForm {
            scope: "selected".into(),
            ..ReplayForm::default()
        };
        assert!(none.body(true).is_err());
    }

    #[test]
    fn the_curl_command_quotes_the_body_for_the_shell() {
        let record = herald_platform::store::EventRecord {
            payload: json!({"text": "it's"}),
            ..herald_platform::store::EventRecord::accepted(
                &serde_json::from_value(json!({
                    "eventId": "e1", "channel": "webhook", "priority": "default",
                    "payload": {"text": "it's"}, "createdAt": "2026-12-01T00:00:00Z"
                }))
                .expect("an event"),
            )
        };
        let found = crate::logs::reader::Found {
            record,
            dead_letter_reason: None,
            dead_lettered_at: None,
        };
        let summary = EventSummary::new(found, &crate::mask::Masker::default());
        let curl = curl_command(&summary);
        assert!(
            curl.contains(
                r#"-d '{"channel":"webhook","priority":"default","payload":{"text":"it'\''s"}}'"#
            ),
            "{curl}"
        );
    }
}
