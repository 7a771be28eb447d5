//! The service's errors: [`ApiError`], the one type every handler answers failures with, and [`Error`], what can
//! stop the service from starting or running.

use axum::http::StatusCode;
use herald_domain::{ErrorBody, FieldError};
use herald_platform::http::error as http;
use herald_platform::http::HttpError;

/// What can stop the service from starting or running.
pub use herald_platform::service::Error;

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

herald_platform::api_error!(ApiError);

impl ApiError {
    fn parts(self) -> (StatusCode, ErrorBody) {
        match self {
            ApiError::Validation(details) => http::validation_failed(details),
            ApiError::Unavailable(dependency) => http::unavailable(
                dependency.field(),
                match dependency {
                    Dependency::Mongo => "did not answer; the event was not accepted, try again later",
                    Dependency::Kafka => {
                        "did not acknowledge the event; it is recorded and will be published when Kafka is \
                         back: retry with the same Idempotency-Key or eventId to learn its status"
                    }
                },
            ),
            ApiError::Internal => http::internal_error(),
            ApiError::Http(e) => e.parts(),
        }
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
