//! The service's errors: [`ApiError`], the one type every handler answers failures with, and [`Error`], what can
//! stop the service from starting or running.

use axum::http::StatusCode;
use herald_domain::{ErrorBody, FieldError};
use herald_platform::http::error as http;
use herald_platform::http::HttpError;

use crate::replay::{StopCause, Stopped};

/// What can stop the service from starting or running.
pub use herald_platform::service::Error;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every way a request can fail, each answered as `{"error", "details": [{"field", "message"}]}`.
#[derive(Debug)]
pub enum ApiError {
    /// 400: the body or the query is not an acceptable request (every problem listed).
    Validation(Vec<FieldError>),
    /// 503: MongoDB did not answer a read; nothing was changed.
    MongoUnavailable,
    /// 503: a replay stopped part-way (a dependency failed, or the service is shutting down).
    ReplayStopped(Stopped),
    /// 500: a bug; the details are logged where it happened, never sent.
    Internal,
    /// What every Herald HTTP service answers the same way (bodies, auth, 404/405, the timeout).
    Http(HttpError),
}

herald_platform::api_error!(ApiError);

impl ApiError {
    fn parts(self) -> (StatusCode, ErrorBody) {
        match self {
            ApiError::Validation(details) => http::validation_failed(details),
            ApiError::MongoUnavailable => http::unavailable(
                "mongodb",
                "did not answer; nothing was changed, try again later",
            ),
            ApiError::ReplayStopped(stopped) => stopped_parts(&stopped),
            ApiError::Internal => http::internal_error(),
            ApiError::Http(e) => e.parts(),
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
    if stopped.n_in_outbox > 0 {
        message.push_str(&format!(
            "; {} more are QUEUED in the outbox and herald-ingest's sweeper publishes them",
            stopped.n_in_outbox
        ));
    }
    message.push_str("; send the request again to replay the rest");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        http::one_problem(error, field, message),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_the_standard_shape() {
        let (status, body) = ApiError::MongoUnavailable.parts();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            serde_json::to_value(body).expect("serializable"),
            serde_json::json!({"error": "Service unavailable",
                "details": [{"field": "mongodb", "message": "did not answer; nothing was changed, try again later"}]})
        );
    }

    #[test]
    fn a_stopped_replay_says_what_was_done_and_what_is_left() {
        let stopped = Stopped {
            cause: StopCause::Kafka,
            n_replayed: 3,
            n_in_outbox: 2,
        };
        let (status, body) = ApiError::ReplayStopped(stopped).parts();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body.error, "Service unavailable");
        assert_eq!(body.details[0].field, "kafka");
        assert_eq!(
            body.details[0].message,
            "did not acknowledge; the replay stopped after 3 events were put back on their lanes; 2 more are \
             QUEUED in the outbox and herald-ingest's sweeper publishes them; send the request again to \
             replay the rest"
        );
    }
}
