//! The service's errors: [`ApiError`], the one type every handler answers failures with, and [`Error`], what can
//! stop the service from starting or running.

use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use herald_domain::{ErrorBody, FieldError};

/// What can stop the service from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("mongodb: {0}")]
    Mongo(#[from] mongodb::error::Error),
    #[error("kafka: {0}")]
    Kafka(#[from] herald_platform::kafka::Error),
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: String,
        source: std::io::Error,
    },
    #[error("http server: {0}")]
    Serve(std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A dependency a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dependency {
    Kafka,
    Mongo,
}

impl Dependency {
    fn field(self) -> &'static str {
        match self {
            Dependency::Kafka => "kafka",
            Dependency::Mongo => "mongodb",
        }
    }
}

/// Every way a request can fail, each answered as `{"error", "details": [{"field", "message"}]}`.
#[derive(Debug)]
pub enum ApiError {
    /// 400: the body is JSON but not an acceptable event (every problem listed).
    Validation(Vec<FieldError>),
    /// 400: the body is not JSON.
    MalformedJson(String),
    /// 400: the body could not be read (the client went away mid-body, a broken chunked encoding).
    UnreadableBody(String),
    /// 404: no such route.
    NotFound,
    /// 405: the route exists, the method does not.
    MethodNotAllowed,
    /// 413: the body is larger than the limit, in bytes.
    TooLarge { limit: usize },
    /// 415: the body is not declared as JSON.
    UnsupportedMediaType(Option<String>),
    /// 503: a dependency did not answer. Without MongoDB nothing was accepted; without Kafka the event is
    /// recorded (PENDING) and the outbox sweeper publishes it later.
    Unavailable(Dependency),
    /// 503: the request took longer than the configured request timeout.
    Timeout(Duration),
    /// 500: a bug; the details are logged where it happened, never sent.
    Internal,
}

impl ApiError {
    fn parts(self) -> (StatusCode, ErrorBody) {
        let one = |error: &str, field: &str, message: String| {
            ErrorBody::with_details(error, vec![FieldError::new(field, message)])
        };
        match self {
            ApiError::Validation(details) => (
                StatusCode::BAD_REQUEST,
                ErrorBody::with_details("Validation failed", details),
            ),
            ApiError::MalformedJson(message) => (
                StatusCode::BAD_REQUEST,
                one("Malformed JSON", "body", message),
            ),
            ApiError::UnreadableBody(message) => (
                StatusCode::BAD_REQUEST,
                one("Unreadable body", "body", message),
            ),
            ApiError::NotFound => (StatusCode::NOT_FOUND, ErrorBody::new("Not found")),
            ApiError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                ErrorBody::new("Method not allowed"),
            ),
            ApiError::TooLarge { limit } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                one(
                    "Payload too large",
                    "body",
                    format!("must be at most {limit} bytes"),
                ),
            ),
            ApiError::UnsupportedMediaType(given) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                one(
                    "Unsupported media type",
                    "headers.Content-Type",
                    match given {
                        Some(given) => format!("must be application/json, not {given}"),
                        None => "must be application/json".into(),
                    },
                ),
            ),
            ApiError::Unavailable(dependency) => (
                StatusCode::SERVICE_UNAVAILABLE,
                one(
                    "Service unavailable",
                    dependency.field(),
                    match dependency {
                        Dependency::Mongo => "did not answer; the event was not accepted, try again later",
                        Dependency::Kafka => {
                            "did not acknowledge the event; it is recorded and will be published when Kafka is \
                             back: retry with the same Idempotency-Key or eventId to learn its status"
                        }
                    }
                    .to_owned(),
                ),
            ),
            ApiError::Timeout(limit) => (
                StatusCode::SERVICE_UNAVAILABLE,
                one(
                    "Request timed out",
                    "request",
                    format!(
                        "was not handled within {} ms; the event may have been accepted: retry with the same Idempotency-Key or eventId",
                        limit.as_millis()
                    ),
                ),
            ),
            ApiError::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorBody::new("Internal error"),
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = self.parts();
        (status, Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_the_standard_shape() {
        let (status, body) = ApiError::TooLarge { limit: 10 }.parts();
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(
            serde_json::to_value(body).expect("serializable"),
            serde_json::json!({"error": "Payload too large",
                "details": [{"field": "body", "message": "must be at most 10 bytes"}]})
        );
        let (status, body) = ApiError::Unavailable(Dependency::Mongo).parts();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body.details[0].field, "mongodb");
    }
}
