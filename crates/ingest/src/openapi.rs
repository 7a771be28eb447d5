//! The OpenAPI 3.1 document (`/api/openapi.json`) and Swagger UI (`/api/docs`): this service's parts.
//!
//! The routes' operations come from their `#[utoipa::path]` attributes, collected by the router itself (see
//! `routes.rs`). The request schemas here describe what `herald_domain::request` accepts; they are documentation,
//! not the parser, which reads a `serde_json::Value` so that it can report every problem at once.

use std::collections::BTreeMap;

use serde_json::Value;
use utoipa::{OpenApi, ToSchema};

pub use herald_platform::http::openapi::{ErrorBody, FieldError, HealthStatus};

/// The document's fixed parts; the paths are added by the router.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "herald-ingest",
        description = "Herald's front door: validates an event, records it in MongoDB, publishes it to the Kafka \
            lane of its priority and answers 202 only once both have it. A repeated `Idempotency-Key` or \
            `eventId` answers 200 with the event accepted first. Every error answers \
            `{\"error\": \"...\", \"details\": [{\"field\", \"message\"}]}`.",
        license(name = "MIT")
    ),
    tags(
        (name = "events", description = "Accepting events and activity logs"),
        (name = "health", description = "Liveness, readiness and Prometheus metrics"),
        (name = "docs", description = "This document and Swagger UI"),
    ),
    components(schemas(ErrorBody, FieldError, EmailPayload, SmsPayload, WebhookPayload, PushPayload))
)]
pub struct ApiDoc;

/// `POST /event`: a notification to deliver, or (without `channel`) an event to record only.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "camelCase")]
#[schema(example = json!({"userId": "u-42", "eventType": "order.shipped", "channel": "email", "priority": "critical",
    "payload": {"to": "ada@example.com", "subject": "Your order shipped", "text": "It is on its way."}}))]
pub struct EventRequest {
    /// Your id for the event (1 to 128 of `A-Za-z0-9._:-`); a repeated id answers 200 with the first event. Default:
    /// a new UUID v7.
    pub event_id: Option<String>,
    /// Who the event concerns, for queries (at most 256 characters).
    pub user_id: Option<String>,
    /// What happened (`order.shipped`, at most 128 characters); retry rules and alerts can match on it.
    pub event_type: Option<String>,
    /// How to deliver: `email`, `sms`, `webhook` or `push`. Absent or null: the event is only recorded.
    #[schema(value_type = Option<String>, example = "email")]
    pub channel: Option<String>,
    /// `critical` or `default` (the default). Critical events travel on their own Kafka lane.
    #[schema(value_type = Option<String>, example = "default")]
    pub priority: Option<String>,
    /// The channel's payload ([`EmailPayload`], [`SmsPayload`], [`WebhookPayload`], [`PushPayload`]); any object for a
    /// record-only event.
    pub payload: BTreeMap<String, Value>,
    /// Anything else to keep with the event (an object); alert rules can group by its fields (`metadata.ip`).
    /// `metadata.locale` (`fr`, `fr-CA`) picks a template variant; the chosen `provider` is kept here as
    /// `heraldProvider`.
    pub metadata: Option<BTreeMap<String, Value>>,
    /// The provider of the first attempt, among those the dispatchers have for the channel (`smtp`,
    /// `sendgrid`, `mailgun`, `http-sms`, `twilio`, `messagebird`, `fcm`, `firebase`, `onesignal`, `webhook`,
    /// `sandbox` and the named extras); an unknown one is a 400 listing them. The retry rules' fallback order
    /// goes on from it. Default: the channel's configured provider.
    #[schema(example = "sendgrid")]
    pub provider: Option<String>,
}

/// The payload of an email. With a template set for the event type, `subject`, `text` and `html` may be left
/// out (each given one wins over the template's) and `data` holds the template's variables.
#[derive(Debug, ToSchema)]
pub struct EmailPayload {
    /// The recipient's address.
    pub to: String,
    /// At most 998 characters.
    pub subject: String,
    /// The plain-text body; `text`, `html` or both.
    pub text: Option<String>,
    pub html: Option<String>,
    /// The variables of the event type's template (`HERALD_TEMPLATES_DIR`); not kept once rendered.
    pub data: Option<BTreeMap<String, Value>>,
}

/// The payload of an SMS.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct SmsPayload {
    /// E.164 (`+14155550123`), or national form in the configured default region; stored as E.164.
    pub phone_number: String,
    /// At most 1600 characters; may be left out when the event type has an SMS template.
    pub message: String,
    /// The variables of the event type's template (`HERALD_TEMPLATES_DIR`); not kept once rendered.
    pub data: Option<BTreeMap<String, Value>>,
}

/// The payload of a webhook.
#[derive(Debug, ToSchema)]
pub struct WebhookPayload {
    /// An http or https URL (at most 2048 bytes). The POST is signed: `webhook-id`, `webhook-timestamp` and
    /// `webhook-signature` (HMAC-SHA256 of `id.timestamp.body`).
    pub url: String,
    /// The JSON body to POST.
    pub body: Value,
    /// Extra headers to send.
    pub headers: Option<BTreeMap<String, String>>,
}

/// The payload of a push notification: `token` or `tokens`, not both.
#[derive(Debug, ToSchema)]
pub struct PushPayload {
    /// One device token (FCM registration token, or OneSignal subscription id).
    pub token: Option<String>,
    /// Up to 500 device tokens.
    pub tokens: Option<Vec<String>>,
    /// At most 256 characters.
    pub title: String,
    /// At most 2048 characters.
    pub body: String,
    /// String keys and values for the app, at most 3072 bytes (FCM's reserved keys are refused); also the
    /// variables of the event type's push template, which may then stand in for `title` and `body`.
    pub data: Option<BTreeMap<String, String>>,
}

/// `POST /api/logs`: an activity log entry, recorded (RECORDED) and never delivered.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "camelCase")]
#[schema(example = json!({"userId": "u-42", "activityType": "balance.inquiry", "metadata": {"ip": "203.0.113.7"}}))]
pub struct ActivityRequest {
    pub user_id: String,
    /// What the user did (stored as the event's `eventType`).
    pub activity_type: String,
    pub metadata: Option<BTreeMap<String, Value>>,
    /// When it happened (ISO 8601); default now.
    pub timestamp: Option<String>,
}

/// The answer to an accepted (202) or repeated (200) event.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "camelCase")]
#[schema(example = json!({"eventId": "0192f0c4-7d4e-7a8e-9b1c-3f5d2a1e9c77", "status": "QUEUED", "priority": "critical"}))]
pub struct AcceptedBody {
    pub event_id: String,
    /// `QUEUED` (recorded and published, or published later by the outbox sweeper), or, for a repeated
    /// event, where it is now.
    pub status: String,
    pub priority: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_event_request_documents_provider_and_template_data() {
        let schema = serde_json::to_value(<EventRequest as utoipa::PartialSchema>::schema())
            .expect("a schema");
        assert!(
            schema["properties"]["provider"].is_object(),
            "provider is documented: {schema}"
        );
        let email = serde_json::to_value(<EmailPayload as utoipa::PartialSchema>::schema())
            .expect("a schema");
        assert!(email["properties"]["data"].is_object(), "{email}");
    }
}
