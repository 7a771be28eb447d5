//! The middleware every Herald HTTP service wraps its routes in, and the HTTP settings they share.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower::ServiceBuilder;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use super::{auth::AuthConfig, metrics, HttpError, REQUEST_ID};
use crate::EnvReader;

/// The HTTP settings every Herald HTTP service reads the same way.
#[derive(Debug, Clone, Default)]
pub struct HttpConfig {
    /// `HERALD_AUTH`, `HERALD_API_KEYS`, `HERALD_API_KEYS_FILE`: see [`AuthConfig`].
    pub auth: AuthConfig,
    /// `HERALD_CORS_ORIGINS`: comma-separated origins browsers may call the API from, or `*` for any. Default
    /// none (no CORS headers: browsers on other origins are refused).
    pub cors_origins: Vec<String>,
}

impl HttpConfig {
    pub fn read(env: &mut EnvReader) -> Self {
        let auth = AuthConfig::read(env);
        let cors_origins: Vec<String> = env
            .optional_string("HERALD_CORS_ORIGINS")
            .map(|raw| {
                raw.split(',')
                    .map(|o| o.trim().to_owned())
                    .filter(|o| !o.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        for origin in &cors_origins {
            if origin != "*" && (HeaderValue::from_str(origin).is_err() || !origin.contains("://"))
            {
                env.problem(
                    "HERALD_CORS_ORIGINS",
                    format!("'{origin}' is not an origin like https://app.example.com"),
                );
            }
        }
        Self { auth, cors_origins }
    }

    /// Authentication off and no CORS: for tests and embedding.
    pub fn open() -> Self {
        Self::default()
    }

    fn cors(&self) -> Option<CorsLayer> {
        if self.cors_origins.is_empty() {
            return None;
        }
        let origins = if self.cors_origins.iter().any(|o| o == "*") {
            AllowOrigin::any()
        } else {
            AllowOrigin::list(
                self.cors_origins
                    .iter()
                    .filter_map(|o| HeaderValue::from_str(o).ok()),
            )
        };
        Some(
            CorsLayer::new()
                .allow_origin(origins)
                .allow_methods([Method::GET, Method::POST])
                .allow_headers(Any)
                .expose_headers([axum::http::HeaderName::from_static(REQUEST_ID)]),
        )
    }
}

/// What [`Standard::apply`] needs to know about a service.
#[derive(Debug, Clone)]
pub struct Standard<'a> {
    /// The service's name, the `service` label of its HTTP metrics.
    pub service: &'static str,
    /// Bound on handling one request; past it the answer is 503 in the standard shape.
    pub request_timeout: Duration,
    /// What a timed-out request means for the caller, added to the 503's message (may be empty).
    pub timeout_hint: &'static str,
    pub http: &'a HttpConfig,
}

impl Standard<'_> {
    /// Wraps every route of `router` (which must already hold all of them) in the standard middleware: 404 and
    /// 405 in the standard shape, a request id (the client's `x-request-id` or a new UUID, echoed back), a
    /// tracing span per request (a child of the client's `traceparent`, if it sent one), CORS when configured,
    /// request metrics, and the request timeout. Called once, while the service is built: it also logs the
    /// warning of an API whose authentication is off.
    pub fn apply(self, router: Router) -> Router {
        self.http.auth.warn_if_off(self.service);
        metrics::install();
        let trace = TraceLayer::new_for_http()
            .make_span_with(|request: &Request| {
                let request_id = request
                    .headers()
                    .get(REQUEST_ID)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-");
                let span = tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id, caller = tracing::field::Empty);
                // A client that traces its call makes this request a part of its trace.
                crate::telemetry::follow_request(&span, request.headers());
                span
            })
            .on_response(DefaultOnResponse::new().level(Level::INFO));
        let timeout = Timeout {
            limit: self.request_timeout,
            hint: self.timeout_hint,
        };
        let router = router
            .fallback(|| async { HttpError::NotFound })
            .method_not_allowed_fallback(|| async { HttpError::MethodNotAllowed })
            .layer(middleware::from_fn_with_state(timeout, time_limit))
            .layer(middleware::from_fn_with_state(self.service, metrics::track));
        let router = match self.http.cors() {
            Some(cors) => router.layer(cors),
            None => router,
        };
        router.layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(trace)
                .layer(PropagateRequestIdLayer::x_request_id()),
        )
    }
}

#[derive(Debug, Clone, Copy)]
struct Timeout {
    limit: Duration,
    hint: &'static str,
}

/// Answers 503 in the standard shape when a request takes longer than its limit.
///
/// (tower-http's `TimeoutLayer` answers with an empty body, which would break the one-error-shape rule.)
async fn time_limit(State(timeout): State<Timeout>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(timeout.limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => HttpError::Timeout {
            limit: timeout.limit,
            hint: timeout.hint,
        }
        .into_response(),
    }
}
