//! Local fakes of the HTTP email and SMS providers, on one HTTP server: SendGrid's `POST /v3/mail/send` (checks
//! the bearer key and the Mail Send body, answers 202 with `X-Message-Id`), Mailgun's `POST /v3/{domain}/messages`
//! (checks basic auth `api:<key>`, the domain and the form, answers 200 `{id, message}`) and MessageBird's
//! `POST /messages` (checks `AccessKey <key>` and the body, answers 201 with the message). Tests read back what
//! each received.
//!
//! Recipients (for MessageBird, whose recipients are digits, the message text) steer the answers: one containing
//! `bounce` gets the API's 400 (422 for MessageBird), `busy` a 429 with `Retry-After: 1`, `down` a 503; anything
//! else is accepted.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

/// SendGrid's API key.
pub const SENDGRID_API_KEY: &str = "SG.fake-key";
/// Mailgun's API key and sending domain.
pub const MAILGUN_API_KEY: &str = "mg-fake-key";
pub const MAILGUN_DOMAIN: &str = "mg.herald.test";
/// MessageBird's access key and originator.
pub const MESSAGEBIRD_ACCESS_KEY: &str = "live_fake_key";
pub const MESSAGEBIRD_ORIGINATOR: &str = "Herald";

#[derive(Debug, Default)]
struct Seen {
    sendgrid: Vec<Value>,
    mailgun: Vec<Value>,
    messagebird: Vec<Value>,
    refused: Vec<String>,
}

/// The running fakes.
#[derive(Debug)]
pub struct MessageFakes {
    /// `http://127.0.0.1:port`: the base URL of the three APIs.
    pub base_url: String,
    seen: Arc<Mutex<Seen>>,
}

impl MessageFakes {
    pub async fn start() -> Result<Self> {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let seen = Arc::new(Mutex::new(Seen::default()));
        let app = Router::new()
            .route("/v3/mail/send", post(sendgrid))
            .route("/v3/{domain}/messages", post(mailgun))
            .route("/messages", post(messagebird))
            .with_state(seen.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Self { base_url, seen })
    }

    /// The dispatcher variables that point the three providers here (none of them sends first).
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("HERALD_SENDGRID_API_KEY", SENDGRID_API_KEY),
            ("HERALD_SENDGRID_BASE_URL", &self.base_url),
            ("HERALD_MAILGUN_API_KEY", MAILGUN_API_KEY),
            ("HERALD_MAILGUN_DOMAIN", MAILGUN_DOMAIN),
            ("HERALD_MAILGUN_BASE_URL", &self.base_url),
            ("HERALD_MESSAGEBIRD_ACCESS_KEY", MESSAGEBIRD_ACCESS_KEY),
            ("HERALD_MESSAGEBIRD_ORIGINATOR", MESSAGEBIRD_ORIGINATOR),
            ("HERALD_MESSAGEBIRD_BASE_URL", &self.base_url),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// The Mail Send bodies SendGrid received (accepted or answered with an error).
    pub fn sendgrid_mails(&self) -> Vec<Value> {
        self.seen().sendgrid.clone()
    }

    /// The forms Mailgun received, as JSON objects of their fields.
    pub fn mailgun_messages(&self) -> Vec<Value> {
        self.seen().mailgun.clone()
    }

    /// The messages MessageBird received.
    pub fn messagebird_messages(&self) -> Vec<Value> {
        self.seen().messagebird.clone()
    }

    /// Why requests were refused (bad credentials or body), so that a test can say.
    pub fn refused(&self) -> Vec<String> {
        self.seen().refused.clone()
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        lock(&self.seen)
    }
}

fn lock(seen: &Mutex<Seen>) -> std::sync::MutexGuard<'_, Seen> {
    seen.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

fn refuse(seen: &Mutex<Seen>, status: StatusCode, why: String) -> Response {
    lock(seen).refused.push(why.clone());
    (status, Json(json!({"errors": [{"message": why}]}))).into_response()
}

/// The steered answer for `recipient`, or `None` to accept it.
fn steer(recipient: &str, refusal: StatusCode, body: Value) -> Option<Response> {
    if recipient.contains("bounce") {
        Some((refusal, Json(body)).into_response())
    } else if recipient.contains("busy") {
        Some(
            (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", "1")],
                Json(json!({"errors": [{"message": "too many requests"}]})),
            )
                .into_response(),
        )
    } else if recipient.contains("down") {
        Some((StatusCode::SERVICE_UNAVAILABLE, "unavailable").into_response())
    } else {
        None
    }
}

async fn sendgrid(
    State(seen): State<Arc<Mutex<Seen>>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let auth = header(&headers, "authorization");
    if auth != format!("Bearer {SENDGRID_API_KEY}") {
        return refuse(
            &seen,
            StatusCode::UNAUTHORIZED,
            format!("sendgrid authorization {auth:?}"),
        );
    }
    let to = body["personalizations"][0]["to"][0]["email"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let content_ok = body["content"].as_array().is_some_and(|parts| {
        !parts.is_empty()
            && parts
                .iter()
                .all(|p| p["type"].is_string() && p["value"].is_string())
    });
    if to.is_empty()
        || !body["from"]["email"].is_string()
        || !body["subject"].is_string()
        || !content_ok
    {
        return refuse(
            &seen,
            StatusCode::BAD_REQUEST,
            format!("sendgrid body {body}"),
        );
    }
    lock(&seen).sendgrid.push(body.clone());
    let invalid = json!({"errors": [{"message": "Does not contain a valid address.", "field": "personalizations.0.to.0.email", "help": null}]});
    if let Some(answer) = steer(&to, StatusCode::BAD_REQUEST, invalid) {
        return answer;
    }
    (StatusCode::ACCEPTED, [("x-message-id", "sg-fake-1")]).into_response()
}

async fn mailgun(
    State(seen): State<Arc<Mutex<Seen>>>,
    Path(domain): Path<String>,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    use base64::Engine;
    let auth = header(&headers, "authorization");
    let expected =
        base64::engine::general_purpose::STANDARD.encode(format!("api:{MAILGUN_API_KEY}"));
    if auth != format!("Basic {expected}") {
        return refuse(
            &seen,
            StatusCode::UNAUTHORIZED,
            format!("mailgun authorization {auth:?}"),
        );
    }
    if domain != MAILGUN_DOMAIN {
        return refuse(
            &seen,
            StatusCode::NOT_FOUND,
            format!("mailgun domain {domain}"),
        );
    }
    let fields: serde_json::Map<String, Value> = form
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    let body = Value::Object(fields);
    let to = body["to"].as_str().unwrap_or_default().to_owned();
    if to.is_empty()
        || !body["from"].is_string()
        || !body["subject"].is_string()
        || !(body["text"].is_string() || body["html"].is_string())
    {
        return refuse(
            &seen,
            StatusCode::BAD_REQUEST,
            format!("mailgun form {body}"),
        );
    }
    lock(&seen).mailgun.push(body.clone());
    if let Some(answer) = steer(
        &to,
        StatusCode::BAD_REQUEST,
        json!({"message": "'to' parameter is not a valid address. please check documentation"}),
    ) {
        return answer;
    }
    Json(json!({"id": "<20260101.1@mg.herald.test>", "message": "Queued. Thank you."}))
        .into_response()
}

async fn messagebird(
    State(seen): State<Arc<Mutex<Seen>>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let auth = header(&headers, "authorization");
    if auth != format!("AccessKey {MESSAGEBIRD_ACCESS_KEY}") {
        let error = json!({"errors": [{"code": 2, "description": "Request not allowed (incorrect access_key)", "parameter": "access_key"}]});
        lock(&seen)
            .refused
            .push(format!("messagebird authorization {auth:?}"));
        return (StatusCode::UNAUTHORIZED, Json(error)).into_response();
    }
    let recipient = body["recipients"][0]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if body["originator"] != MESSAGEBIRD_ORIGINATOR
        || recipient.is_empty()
        || recipient.starts_with('+')
        || !body["body"].is_string()
    {
        return refuse(
            &seen,
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("messagebird body {body}"),
        );
    }
    lock(&seen).messagebird.push(body.clone());
    let invalid = json!({"errors": [{"code": 9, "description": "no (correct) recipients found", "parameter": "recipients"}]});
    if let Some(answer) = steer(
        body["body"].as_str().unwrap_or_default(),
        StatusCode::UNPROCESSABLE_ENTITY,
        invalid,
    ) {
        return answer;
    }
    let answer = json!({
        "id": "49e40bae0b374f1ca5e3d04d46edc7c1",
        "direction": "mt", "type": "sms",
        "originator": body["originator"], "body": body["body"], "reference": body["reference"],
        "recipients": {"totalCount": 1, "totalSentCount": 1, "items": [{"recipient": recipient, "status": "sent"}]},
    });
    (StatusCode::CREATED, Json(answer)).into_response()
}
