//! JSON request bodies, read as a `serde_json::Value` so that validation can report every problem at once.
//!
//! Both extractors reject a body over the limit (413), one not declared as JSON (415) and one that is not JSON
//! (400), in the standard shape. The limit is set with [`BodyLimit::layer`], which also tells the 413 answer what
//! the limit is.

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::Router;
use serde_json::Value;

use super::HttpError;

/// The largest body a router accepts, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimit(pub usize);

impl BodyLimit {
    /// Applies the limit to every route of `router`.
    pub fn apply<S: Clone + Send + Sync + 'static>(self, router: Router<S>) -> Router<S> {
        router
            .layer(DefaultBodyLimit::max(self.0))
            .layer(axum::Extension(self))
    }
}

/// A required JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonBody(pub Value);

/// An optional JSON body: `None` when there is none (an empty body needs no content type).
#[derive(Debug, Clone, PartialEq)]
pub struct OptionalJsonBody(pub Option<Value>);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = HttpError;

    async fn from_request(request: Request, _: &S) -> Result<Self, Self::Rejection> {
        let content_type = content_type(&request);
        if !content_type.as_deref().is_some_and(is_json) {
            return Err(HttpError::UnsupportedMediaType(content_type));
        }
        let bytes = read(request).await?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| HttpError::MalformedJson(e.to_string()))
    }
}

impl<S: Send + Sync> FromRequest<S> for OptionalJsonBody {
    type Rejection = HttpError;

    async fn from_request(request: Request, _: &S) -> Result<Self, Self::Rejection> {
        let content_type = content_type(&request);
        if content_type.as_deref().is_some_and(|ct| !is_json(ct)) {
            return Err(HttpError::UnsupportedMediaType(content_type));
        }
        let bytes = read(request).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(None));
        }
        if content_type.is_none() {
            return Err(HttpError::UnsupportedMediaType(None));
        }
        serde_json::from_slice(&bytes)
            .map(|value| Self(Some(value)))
            .map_err(|e| HttpError::MalformedJson(e.to_string()))
    }
}

fn content_type(request: &Request) -> Option<String> {
    request
        .headers()
        .get(CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

async fn read(request: Request) -> Result<Bytes, HttpError> {
    let limit = request.extensions().get::<BodyLimit>().copied();
    Bytes::from_request(request, &())
        .await
        .map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                HttpError::TooLarge {
                    // axum's own default applies when no `BodyLimit` was set.
                    limit: limit.map_or(2 * 1024 * 1024, |l| l.0),
                }
            } else {
                HttpError::UnreadableBody(rejection.body_text())
            }
        })
}

/// `application/json`, or any `application/*+json`, with or without parameters.
pub fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

#[cfg(test)]
mod tests {
    use super::is_json;

    #[test]
    fn json_content_types_are_recognised() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(is_json("application/merge-patch+json"));
        assert!(!is_json("text/plain"));
        assert!(!is_json("application/x-www-form-urlencoded"));
        assert!(!is_json(""));
    }
}
