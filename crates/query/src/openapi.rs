//! The OpenAPI 3.1 document (`/api/openapi.json`) and Swagger UI (`/api/docs`): this service's parts.
//!
//! The routes' operations come from their `#[utoipa::path]` attributes, collected by the router itself (see
//! `routes.rs`), so a route cannot be served without being documented; this module adds the info and the
//! schemas of the domain's enums; `herald_platform::http::openapi` adds what every service shares (the error body,
//! the API-key schemes, the documentation routes).

use herald_domain::{AttemptOutcome, Channel, ErrorClass, Priority, Status};
use serde_json::Value;
use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
use utoipa::openapi::Object;
use utoipa::OpenApi;

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
        (name = "alerts", description = "Alerts raised by herald-alert"),
        (name = "health", description = "Liveness, readiness and Prometheus metrics"),
        (name = "docs", description = "This document and Swagger UI"),
    ),
    components(schemas(ErrorBody, FieldError))
)]
pub struct ApiDoc;

pub use herald_platform::http::openapi::{ErrorBody, FieldError, HealthStatus};

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
