//! The OpenAPI 3.1 document (`/api/openapi.json`) and Swagger UI (`/api/docs`): this service's parts.
//!
//! The routes' operations come from their `#[utoipa::path]` attributes, collected by the router itself (see
//! `routes.rs`). The request schema describes what `params::parse_replay` accepts; it is documentation, not the
//! parser, which reads a `serde_json::Value` so that it can report every problem at once.

use utoipa::{OpenApi, ToSchema};

pub use herald_platform::http::openapi::{ErrorBody, FieldError, HealthStatus};

/// The document's fixed parts; the paths are added by the router.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "herald-replay",
        description = "Puts dead-lettered events back on their priority lane with a fresh attempt budget, by id or \
            by filter, oldest first and paced; and lists the dead letters a replay would take. Every error \
            answers `{\"error\": \"...\", \"details\": [{\"field\", \"message\"}]}`.",
        license(name = "MIT")
    ),
    tags(
        (name = "replay", description = "Dead letters and replaying them"),
        (name = "health", description = "Liveness, readiness and Prometheus metrics"),
        (name = "docs", description = "This document and Swagger UI"),
    ),
    components(schemas(ErrorBody, FieldError))
)]
pub struct ApiDoc;

/// `POST /replay-dead-letter`: which dead letters to replay. Every field is optional; `{}` or no body replays the
/// oldest dead letters up to the limit.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "camelCase")]
#[schema(example = json!({"channel": "webhook", "since": "2026-11-21T00:00:00Z", "limit": 500, "dryRun": true}))]
pub struct ReplayRequest {
    /// Exactly these events (each must be dead-lettered to be replayed; at most 10000).
    pub event_ids: Option<Vec<String>>,
    /// `email`, `sms` or `webhook`.
    pub channel: Option<String>,
    pub event_type: Option<String>,
    /// `critical` or `default`.
    pub priority: Option<String>,
    /// Dead-lettered at or after this time (ISO 8601).
    pub since: Option<String>,
    /// Dead-lettered before this time (ISO 8601).
    pub until: Option<String>,
    /// At most this many, oldest dead letter first: 1 to 10000, default 1000.
    pub limit: Option<u32>,
    /// Skip this many of the selected dead letters first (oldest first, ties by event id), as the notification
    /// dispatcher's `{"limit": 1000, "from": 0}` does; default 0.
    #[schema(minimum = 0)]
    pub from: Option<u32>,
    /// Only say what would be replayed; change nothing.
    pub dry_run: Option<bool>,
}
