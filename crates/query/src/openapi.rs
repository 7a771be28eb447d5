//! The OpenAPI 3.1 document (`/api/openapi.json`) and Swagger UI (`/api/docs`).
//!
//! The routes' operations come from their `#[utoipa::path]` attributes, collected by the router itself (see
//! `routes.rs`), so a route cannot be served without being documented; this module adds what is shared: the
//! info, the error body, the schemas of the domain's enums, and the two documentation routes.

use herald_domain::{AttemptOutcome, Channel, ErrorClass, Priority, Status};
use serde_json::Value;
use utoipa::openapi::path::{HttpMethod, OperationBuilder};
use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
use utoipa::openapi::{ContentBuilder, Object, OpenApi as Document, ResponseBuilder};
use utoipa::{OpenApi, ToSchema};

/// Where the document is served.
pub const OPENAPI_PATH: &str = "/api/openapi.json";
/// Where Swagger UI is served.
pub const DOCS_PATH: &str = "/api/docs";

/// The document's fixed parts; the paths are added by the router.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "herald-query",
        description = "Herald's read API: lists events with filters and pagination (offset with a total, or a \
            keyset cursor that stays stable while events arrive), shows one event with its attempts and timeline, \
            and counts events by status, channel and priority. Every error answers \
            `{\"error\": \"...\", \"details\": [{\"field\", \"message\"}]}`.",
        license(name = "MIT")
    ),
    tags(
        (name = "logs", description = "Events and their timelines"),
        (name = "stats", description = "Counts"),
        (name = "health", description = "Liveness and readiness"),
        (name = "docs", description = "This document and Swagger UI"),
    ),
    components(schemas(ErrorBody, FieldError))
)]
pub struct ApiDoc;

/// Every error answer.
#[derive(Debug, ToSchema)]
#[schema(example = json!({"error": "Validation failed", "details": [{"field": "limit", "message": "must be a whole number from 1 to 100"}]}))]
pub struct ErrorBody {
    /// What went wrong, in a few words: `Validation failed`, `Event not found`, `Service unavailable`.
    pub error: String,
    /// One entry per problem; empty when there is nothing more to say.
    pub details: Vec<FieldError>,
}

/// One problem with one part of a request.
#[derive(Debug, ToSchema)]
pub struct FieldError {
    /// The parameter (`limit`, `cursor`), path part (`id`) or dependency (`mongodb`) concerned.
    pub field: String,
    /// What is wrong, in words a caller can act on.
    pub message: String,
}

/// The answer of `/api/health` and `/api/ready`.
#[derive(Debug, ToSchema)]
pub struct HealthStatus {
    /// `ok` (health) or `ready` (ready).
    #[schema(example = "ok")]
    pub status: String,
}

fn string_enum(values: Vec<Value>, nullable: bool) -> Object {
    let schema_type = if nullable {
        SchemaType::from_iter([Type::String, Type::Null])
    } else {
        SchemaType::Type(Type::String)
    };
    let mut values = values;
    if nullable {
        values.push(Value::Null);
    }
    ObjectBuilder::new()
        .schema_type(schema_type)
        .enum_values(Some(values))
        .build()
}

fn names<T: Copy>(all: &[T], name: fn(T) -> &'static str) -> Vec<Value> {
    all.iter().map(|v| Value::from(name(*v))).collect()
}

pub fn status() -> Object {
    string_enum(names(Status::ALL, Status::as_str), false)
}

pub fn priority() -> Object {
    string_enum(names(Priority::ALL, Priority::as_str), false)
}

pub fn channel_nullable() -> Object {
    string_enum(names(Channel::ALL, Channel::as_str), true)
}

pub fn attempt_outcome() -> Object {
    string_enum(
        names(
            &[AttemptOutcome::Delivered, AttemptOutcome::Failed],
            AttemptOutcome::as_str,
        ),
        false,
    )
}

pub fn error_class() -> Object {
    string_enum(
        names(
            &[ErrorClass::Retryable, ErrorClass::Permanent],
            ErrorClass::as_str,
        ),
        true,
    )
}

pub fn status_param() -> Object {
    status()
}

pub fn priority_param() -> Object {
    priority()
}

pub fn channel_param() -> Object {
    string_enum(names(Channel::ALL, Channel::as_str), false)
}

pub fn sort_param() -> Object {
    string_enum(vec!["-createdAt".into(), "createdAt".into()], false)
}

/// Adds the two documentation routes, which Swagger UI serves rather than a handler of ours.
pub fn add_doc_routes(document: &mut Document) {
    let json = OperationBuilder::new()
        .tag("docs")
        .operation_id(Some("openapi"))
        .summary(Some("This OpenAPI 3.1 document"))
        .response(
            "200",
            ResponseBuilder::new()
                .description("The document")
                .content("application/json", ContentBuilder::new().build()),
        )
        .build();
    document
        .paths
        .add_path_operation(OPENAPI_PATH, vec![HttpMethod::Get], json);
    let docs = OperationBuilder::new()
        .tag("docs")
        .operation_id(Some("docs"))
        .summary(Some(
            "Swagger UI for this document (its assets are served below this path)",
        ))
        .response(
            "200",
            ResponseBuilder::new()
                .description("An HTML page (`/api/docs` redirects to `/api/docs/`)")
                .content("text/html", ContentBuilder::new().build()),
        )
        .build();
    document
        .paths
        .add_path_operation(DOCS_PATH, vec![HttpMethod::Get], docs);
}
