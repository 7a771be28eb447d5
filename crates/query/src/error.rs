//! The service's errors: [`ApiError`], the one type every handler answers failures with, and [`Error`], what can
//! stop the service from starting or running.

use std::time::Duration;

use axum::http::StatusCode;
use herald_domain::{ErrorBody, FieldError};
use herald_platform::http::error as http;
use herald_platform::http::HttpError;
use mongodb::error::ErrorKind;

/// What can stop the service from starting or running.
pub use herald_platform::service::Error;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every way a request can fail, each answered as `{"error", "details": [{"field", "message"}]}`.
#[derive(Debug)]
pub enum ApiError {
    /// 400: bad query parameters or path (every problem listed).
    Validation(Vec<FieldError>),
    /// 404: no event has this id.
    EventNotFound,
    /// 404: no alert has this id.
    AlertNotFound,
    /// 503: MongoDB did not answer.
    Unavailable,
    /// 503: Kafka did not answer (only `GET /api/lanes` asks it).
    KafkaUnavailable,
    /// 503: the MongoDB query took longer than the configured request timeout (its `maxTimeMS`).
    Timeout(Duration),
    /// 500: a bug or a corrupt document; the message is logged once, when the answer is made, and never sent.
    Internal(String),
    /// What every Herald HTTP service answers the same way: 401, 403, 404 and 405, the request timeout.
    Http(HttpError),
}

herald_platform::api_error!(ApiError);

/// What a timed-out request means for its caller.
pub const TIMEOUT_HINT: &str = "narrow the filters (userId, a shorter from/to) or page with cursor";

/// MongoDB's `MaxTimeMSExpired`: the server stopped a query at its `maxTimeMS`.
const MAX_TIME_EXPIRED: i32 = 50;

impl ApiError {
    /// Classifies a MongoDB failure: the server being away or slow is 503, anything else is a bug.
    pub fn from_mongo(error: mongodb::error::Error, timeout: Duration) -> Self {
        match error.kind.as_ref() {
            ErrorKind::ServerSelection { .. }
            | ErrorKind::Io(_)
            | ErrorKind::ConnectionPoolCleared { .. } => {
                tracing::warn!(error = %error, "mongodb did not answer");
                ApiError::Unavailable
            }
            ErrorKind::Command(e) if e.code == MAX_TIME_EXPIRED => ApiError::Timeout(timeout),
            _ => ApiError::Internal(format!("mongodb: {error}")),
        }
    }

    fn parts(self) -> (StatusCode, ErrorBody) {
        match self {
            ApiError::Validation(details) => http::validation_failed(details),
            ApiError::EventNotFound => (StatusCode::NOT_FOUND, ErrorBody::new("Event not found")),
            ApiError::AlertNotFound => (StatusCode::NOT_FOUND, ErrorBody::new("Alert not found")),
            ApiError::Unavailable => {
                http::unavailable("mongodb", "did not answer; try again later")
            }
            ApiError::KafkaUnavailable => {
                http::unavailable("kafka", "did not answer; try again later")
            }
            ApiError::Timeout(limit) => HttpError::Timeout {
                limit,
                hint: TIMEOUT_HINT,
            }
            .parts(),
            ApiError::Http(e) => e.parts(),
            ApiError::Internal(message) => {
                tracing::error!(error = %message, "internal error");
                http::internal_error()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_the_standard_shape() {
        let (status, body) = ApiError::EventNotFound.parts();
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(
            serde_json::to_value(body).expect("serializable"),
            serde_json::json!({"error": "Event not found", "details": []})
        );
        let (status, body) =
            ApiError::Validation(vec![FieldError::new("limit", "must be 1 to 100")]).parts();
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            serde_json::to_value(body).expect("serializable"),
            serde_json::json!({"error": "Validation failed",
                "details": [{"field": "limit", "message": "must be 1 to 100"}]})
        );
        let (status, body) = ApiError::Internal("secret detail".into()).parts();
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(body.details.is_empty(), "internal details are never sent");
    }
}
