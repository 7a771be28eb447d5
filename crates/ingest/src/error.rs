//! The service's errors: [`ApiError`], the one type every handler answers failures with, and [`Error`], what can
//! stop the service from starting or running.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use herald_domain::{ErrorBody, FieldError};
use herald_platform::http::HttpError;

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
    /// 503: a dependency did not answer. Without MongoDB nothing was accepted; without Kafka the event is
    /// recorded (QUEUED, in the outbox) and the outbox sweeper publishes it later.
    Unavailable(Dependency),
    /// 500: a bug; the details are logged where it happened, never sent.
    Internal,
    /// What every Herald HTTP service answers the same way (bodies, auth, rate limits, 404/405, the timeout).
    Http(HttpError),
}

impl From<HttpError> for ApiError {
    fn from(e: HttpError) -> Self {
        ApiError::Http(e)
    }
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
            ApiError::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorBody::new("Internal error"),
            ),
            ApiError::Http(e) => e.parts(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Http(e) = self {
            // Keeps its headers (Retry-After, WWW-Authenticate).
            return e.into_response();
        }
        let (status, body) = self.parts();
        (status, Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_the_standard_shape() {
        let (status, body) =
            ApiError::Validation(vec![FieldError::new("payload", "is required")]).parts();
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            serde_json::to_value(body).expect("serializable"),
            serde_json::json!({"error": "Validation failed",
                "details": [{"field": "payload", "message": "is required"}]})
        );
        let (status, body) = ApiError::Unavailable(Dependency::Mongo).parts();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body.details[0].field, "mongodb");
    }
}
