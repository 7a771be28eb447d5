//! [`HttpError`]: the rejections every Herald HTTP service answers the same way, before or around its handlers.
//! Each service's own `ApiError` wraps it, so one body shape holds everywhere, and gets its conversions from
//! [`crate::api_error!`]: the one `IntoResponse` of every service's `ApiError`.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
// Public for `api_error!`, whose expansion names them from the service's crate.
pub use axum::response::{IntoResponse, Response};
use axum::Json;
use herald_domain::{ErrorBody, FieldError};

use super::auth::Scope;

/// A request the service refuses before (or instead of) its handler's own logic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// 400: the body is not JSON.
    MalformedJson(String),
    /// 400: the body could not be read (the client went away mid-body, a broken chunked encoding).
    UnreadableBody(String),
    /// 401: no API key, or one the service does not know.
    Unauthorized { presented: bool },
    /// 403: a known key without the scope the route needs.
    Forbidden { needed: Scope },
    /// 404: no such route.
    NotFound,
    /// 405: the route exists, the method does not.
    MethodNotAllowed,
    /// 413: the body is larger than the limit, in bytes.
    TooLarge { limit: usize },
    /// 415: the body is not declared as JSON.
    UnsupportedMediaType(Option<String>),
    /// 429: the caller's token bucket is empty; a token is back after `retry_after_secs`.
    RateLimited { retry_after_secs: u64 },
    /// 503: the request took longer than `limit`. `hint` tells the caller what that means for this service.
    Timeout { limit: Duration, hint: &'static str },
}

/// `{"error": error, "details": [{"field": field, "message": message}]}`.
pub fn one_problem(error: &str, field: &str, message: impl Into<String>) -> ErrorBody {
    ErrorBody::with_details(error, vec![FieldError::new(field, message.into())])
}

/// 400 `Validation failed`, with every problem of the request.
pub fn validation_failed(details: Vec<FieldError>) -> (StatusCode, ErrorBody) {
    (
        StatusCode::BAD_REQUEST,
        ErrorBody::with_details("Validation failed", details),
    )
}

/// 503 `Service unavailable`: the dependency `field` (`mongodb`, `kafka`) did not answer; `message` says what
/// that means for the request.
pub fn unavailable(field: &str, message: impl Into<String>) -> (StatusCode, ErrorBody) {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        one_problem("Service unavailable", field, message),
    )
}

/// 500 `Internal error`: never any detail (it is logged where it happened).
pub fn internal_error() -> (StatusCode, ErrorBody) {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        ErrorBody::new("Internal error"),
    )
}

/// The answer of a service's own failure: its status and the standard body.
pub fn error_response((status, body): (StatusCode, ErrorBody)) -> Response {
    (status, Json(body)).into_response()
}

/// The conversions of a service's `ApiError`, written once: `From<HttpError>` (into its `Http` variant) and
/// `IntoResponse` (an `Http` rejection answers itself, keeping its headers, `Retry-After` or
/// `WWW-Authenticate`; every other variant is answered from the type's `fn parts(self) -> (StatusCode,
/// ErrorBody)`). `herald_platform::api_error!(ApiError);` beside the type.
#[macro_export]
macro_rules! api_error {
    ($name:ident) => {
        impl ::core::convert::From<$crate::http::HttpError> for $name {
            fn from(e: $crate::http::HttpError) -> Self {
                $name::Http(e)
            }
        }

        impl $crate::http::error::IntoResponse for $name {
            fn into_response(self) -> $crate::http::error::Response {
                match self {
                    $name::Http(e) => $crate::http::error::IntoResponse::into_response(e),
                    other => $crate::http::error::error_response(other.parts()),
                }
            }
        }
    };
}

impl HttpError {
    /// The status and the body of the answer.
    pub fn parts(&self) -> (StatusCode, ErrorBody) {
        let one = |error: &str, field: &str, message: String| one_problem(error, field, message);
        match self {
            HttpError::MalformedJson(message) => (
                StatusCode::BAD_REQUEST,
                one("Malformed JSON", "body", message.clone()),
            ),
            HttpError::UnreadableBody(message) => (
                StatusCode::BAD_REQUEST,
                one("Unreadable body", "body", message.clone()),
            ),
            HttpError::Unauthorized { presented } => (
                StatusCode::UNAUTHORIZED,
                one(
                    "Unauthorized",
                    "headers.Authorization",
                    if *presented {
                        "is not a known API key".into()
                    } else {
                        "an API key is required: send `Authorization: Bearer <key>` or `X-API-Key: <key>`"
                            .into()
                    },
                ),
            ),
            HttpError::Forbidden { needed } => (
                StatusCode::FORBIDDEN,
                one(
                    "Forbidden",
                    "headers.Authorization",
                    format!("this API key does not have the `{needed}` scope"),
                ),
            ),
            HttpError::NotFound => (StatusCode::NOT_FOUND, ErrorBody::new("Not found")),
            HttpError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                ErrorBody::new("Method not allowed"),
            ),
            HttpError::TooLarge { limit } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                one(
                    "Payload too large",
                    "body",
                    format!("must be at most {limit} bytes"),
                ),
            ),
            HttpError::UnsupportedMediaType(given) => (
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
            HttpError::RateLimited { retry_after_secs } => (
                StatusCode::TOO_MANY_REQUESTS,
                one(
                    "Too many requests",
                    "request",
                    format!(
                        "rate limit reached for this API key; retry after {retry_after_secs} s"
                    ),
                ),
            ),
            HttpError::Timeout { limit, hint } => {
                let mut message = format!("was not handled within {} ms", limit.as_millis());
                if !hint.is_empty() {
                    message.push_str("; ");
                    message.push_str(hint);
                }
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    one("Request timed out", "request", message),
                )
            }
        }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let (status, body) = self.parts();
        let mut response = (status, Json(body)).into_response();
        match self {
            HttpError::RateLimited { retry_after_secs } => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            }
            HttpError::Unauthorized { .. } => {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"herald\""),
                );
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rejection_has_the_standard_shape() {
        let (status, body) = HttpError::TooLarge { limit: 10 }.parts();
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(
            serde_json::to_value(body).expect("serializable"),
            serde_json::json!({"error": "Payload too large",
                "details": [{"field": "body", "message": "must be at most 10 bytes"}]})
        );
        let (status, body) = HttpError::Timeout {
            limit: Duration::from_millis(1500),
            hint: "try again",
        }
        .parts();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            body.details[0].message,
            "was not handled within 1500 ms; try again"
        );
    }

    #[test]
    fn rate_limited_answers_carry_retry_after() {
        let response = HttpError::RateLimited {
            retry_after_secs: 3,
        }
        .into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            response.headers().get(header::RETRY_AFTER),
            Some(&HeaderValue::from(3u64))
        );
    }
}
