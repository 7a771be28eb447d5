//! The service's errors: [`ApiError`], the one type every handler answers failures with, and [`Error`], what can
//! stop the service from starting or running.

use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use herald_domain::{ErrorBody, FieldError};

use crate::replay::{StopCause, Stopped};

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

/// Every way a request can fail, each answered as `{"error", "details": [{"field", "message"}]}`.
#[derive(Debug)]
pub enum ApiError {
    /// 400: the body or the query is not an acceptable request (every problem listed).
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
    /// 415: a body that is not declared as JSON.
    UnsupportedMediaType(Option<String>),
    /// 503: MongoDB did not answer a read; nothing was changed.
    MongoUnavailable,
    /// 503: a replay stopped part-way (a dependency failed, or the service is shutting down).
    ReplayStopped(Stopped),
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
                        None => "must be application/json when there is a body".into(),
                    },
                ),
            ),
            ApiError::MongoUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                one(
                    "Service unavailable",
                    "mongodb",
                    "did not answer; nothing was changed, try again later".into(),
                ),
            ),
            ApiError::ReplayStopped(stopped) => stopped_parts(&stopped),
            ApiError::Timeout(limit) => (
                StatusCode::SERVICE_UNAVAILABLE,
                one(
                    "Request timed out",
                    "request",
                    format!(
                        "was not answered within {} ms; a replay that was running goes on in the background: \
                         GET /api/dead-letters shows what is left",
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

/// 503 for a replay that stopped part-way: what was done, what the outbox sweeper will finish, what is left.
fn stopped_parts(stopped: &Stopped) -> (StatusCode, ErrorBody) {
    let (error, field, what) = match stopped.cause {
        StopCause::Kafka => ("Service unavailable", "kafka", "did not acknowledge"),
        StopCause::Mongo => ("Service unavailable", "mongodb", "did not answer"),
        StopCause::Shutdown => ("Shutting down", "replay", "was stopped by shutdown"),
    };
    let mut message = format!(
        "{what}; the replay stopped after {} events were put back on their lanes",
        stopped.n_replayed
    );
    if stopped.n_left_pending > 0 {
        message.push_str(&format!(
            "; {} more are recorded as PENDING and herald-ingest's outbox sweeper publishes them",
            stopped.n_left_pending
        ));
    }
    message.push_str("; send the request again to replay the rest");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorBody::with_details(error, vec![FieldError::new(field, message)]),
    )
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
    }

    #[test]
    fn a_stopped_replay_says_what_was_done_and_what_is_left() {
        let stopped = Stopped {
            cause: StopCause::Kafka,
            n_replayed: 3,
            n_left_pending: 2,
        };
        let (status, body) = ApiError::ReplayStopped(stopped).parts();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body.error, "Service unavailable");
        assert_eq!(body.details[0].field, "kafka");
        assert_eq!(
            body.details[0].message,
            "did not acknowledge; the replay stopped after 3 events were put back on their lanes; 2 more are \
             recorded as PENDING and herald-ingest's outbox sweeper publishes them; send the request again to \
             replay the rest"
        );
    }
}
