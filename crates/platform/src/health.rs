//! `/api/health` (the process is up; touches nothing) and `/api/ready` (Kafka and MongoDB answer, the service's
//! indexes exist, and no consumer of the process is stuck).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use herald_domain::{ErrorBody, FieldError};
use mongodb::Database;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::config::KafkaConfig;
use crate::kafka::watch;
use crate::service::IndexGate;

/// What `/api/ready` checks. A service that uses only one of the two leaves the other out.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    pub kafka: Option<KafkaConfig>,
    pub mongo: Option<Database>,
    /// Bound on each check. Default 2 s.
    pub timeout: Option<Duration>,
    /// The service's index gate: not ready until its indexes exist.
    pub indexes: Option<IndexGate>,
}

impl Readiness {
    /// What a service on Kafka and MongoDB is ready with: Kafka's metadata (when `kafka` is given), a MongoDB ping
    /// and its indexes, each check bounded by the default timeout.
    pub fn of(kafka: Option<&KafkaConfig>, mongo: &Database, indexes: &IndexGate) -> Self {
        Self {
            kafka: kafka.cloned(),
            mongo: Some(mongo.clone()),
            timeout: None,
            indexes: Some(indexes.clone()),
        }
    }

    /// Runs every check; `Err` lists each dependency that did not answer.
    pub async fn check(&self) -> Result<(), Vec<FieldError>> {
        let timeout = self.timeout.unwrap_or(Duration::from_secs(2));
        let kafka = async {
            match &self.kafka {
                Some(config) => crate::kafka::check_metadata(config, timeout)
                    .await
                    .map(|_| ())
                    .map_err(|e| FieldError::new("kafka", e.to_string())),
                None => Ok(()),
            }
        };
        let mongo = async {
            match &self.mongo {
                Some(db) => crate::mongo::ping(db, timeout)
                    .await
                    .map_err(|e| FieldError::new("mongodb", e.to_string())),
                None => Ok(()),
            }
        };
        let (kafka, mongo) = tokio::join!(kafka, mongo);
        let indexes = match &self.indexes {
            Some(gate) if !gate.is_open() => Err(FieldError::new(
                "mongodb indexes",
                "not created yet (tried again in the background)",
            )),
            _ => Ok(()),
        };
        let problems: Vec<FieldError> = [kafka, mongo, indexes]
            .into_iter()
            .filter_map(Result::err)
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

/// What the `/api/ready` route answers from: the dependency checks and, for a service with consumers, their
/// health.
#[derive(Debug)]
struct Ready {
    /// The service's name, which `/api/health` answers with.
    service: &'static str,
    readiness: Readiness,
    consumers: Option<watch::Health>,
}

impl Ready {
    async fn check(&self) -> Result<(), Vec<FieldError>> {
        let stuck: Vec<FieldError> = self
            .consumers
            .iter()
            .flat_map(watch::Health::problems)
            .map(|(group, why)| FieldError::new(format!("kafka consumer {group}"), why))
            .collect();
        match self.readiness.check().await {
            Ok(()) if stuck.is_empty() => Ok(()),
            Ok(()) => Err(stuck),
            Err(mut problems) => {
                problems.extend(stuck);
                Err(problems)
            }
        }
    }
}

/// The health, readiness and metrics routes, documented, to merge into an HTTP service's `OpenApiRouter`.
/// `service` is the name `/api/health` answers with (`herald-ingest`).
pub fn openapi_router(service: &'static str, readiness: Readiness) -> OpenApiRouter {
    openapi_router_of(Ready {
        service,
        readiness,
        consumers: None,
    })
}

/// [`openapi_router`] for an HTTP service that also runs self-watching Kafka consumers (herald-query's stats
/// consumer): `/api/ready` is also 503 while one of them is stuck or being rebuilt, naming it.
pub fn openapi_router_with_consumers(
    service: &'static str,
    readiness: Readiness,
    consumers: watch::Health,
) -> OpenApiRouter {
    openapi_router_of(Ready {
        service,
        readiness,
        consumers: Some(consumers),
    })
}

fn openapi_router_of(ready_state: Ready) -> OpenApiRouter {
    crate::http::metrics::install();
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(ready))
        .routes(routes!(metrics))
        .with_state(Arc::new(ready_state))
}

/// The health, readiness and metrics routes, for the services whose only HTTP is these (dispatch, retry, alert).
pub fn router(service: &'static str, readiness: Readiness) -> Router {
    let (router, _) = openapi_router(service, readiness).split_for_parts();
    router
}

/// [`router`] for a service whose Kafka consumers watch themselves: `/api/ready` is also 503 while one of them is
/// stuck or being rebuilt, naming it.
pub fn router_with_consumers(
    service: &'static str,
    readiness: Readiness,
    consumers: watch::Health,
) -> Router {
    let (router, _) = openapi_router_of(Ready {
        service,
        readiness,
        consumers: Some(consumers),
    })
    .split_for_parts();
    router
}

/// Whether the process is up, and which service it is. Touches no dependency.
///
/// The service's name is in the answer because the activity-log services Herald replaces answer
/// `{"status": "ok", "service": "producer"}`, and their health checks read it.
#[utoipa::path(
    get,
    path = "/api/health",
    tag = "health",
    responses((status = 200, description = "Up", body = crate::http::openapi::HealthStatus,
        example = json!({"status": "ok", "service": "herald-ingest"}))),
)]
async fn health(State(ready_state): State<Arc<Ready>>) -> Json<serde_json::Value> {
    Json(json!({ "status": "ok", "service": ready_state.service }))
}

/// Whether the service's dependencies (Kafka metadata, a MongoDB ping, as the service needs them) answer within
/// 2 s each, and none of its Kafka consumers is stuck.
#[utoipa::path(
    get,
    path = "/api/ready",
    tag = "health",
    responses(
        (status = 200, description = "Ready", body = crate::http::openapi::HealthStatus, example = json!({"status": "ready"})),
        (status = 503, description = "A dependency did not answer, or a consumer is stuck; each one is named", body = crate::http::openapi::ErrorBody),
    )
)]
async fn ready(State(ready_state): State<Arc<Ready>>) -> Response {
    match ready_state.check().await {
        Ok(()) => Json(json!({ "status": "ready" })).into_response(),
        Err(problems) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(ErrorBody::with_details("Not ready", problems)),
        )
            .into_response(),
    }
}

/// Every metric of the process, in Prometheus's text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    responses((status = 200, description = "Prometheus text exposition format", content_type = "text/plain")),
)]
async fn metrics() -> Response {
    crate::http::metrics::render().await
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn health_names_the_service() {
        let response = router("herald-retry", Readiness::default())
            .oneshot(
                Request::get("/api/health")
                    .body(Body::empty())
                    .expect("a request"),
            )
            .await
            .expect("an answer");
        assert_eq!(response.status(), StatusCode::OK);
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .expect("a body");
        let body: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(body, json!({"status": "ok", "service": "herald-retry"}));
    }

    #[tokio::test]
    async fn a_stuck_consumer_makes_ready_fail_naming_it() {
        let consumers = watch::Health::default();
        let ready_state = Ready {
            service: "herald-test",
            readiness: Readiness::default(),
            consumers: Some(consumers.clone()),
        };
        assert!(ready_state.check().await.is_ok());
        let lane = watch::Watch::new("herald-dispatch-retry", vec!["lane".into()], &consumers);
        lane.rebuilding("no progress for 15 s");
        let problems = ready_state.check().await.expect_err("not ready");
        let body = serde_json::to_value(ErrorBody::with_details("Not ready", problems))
            .expect("serializable");
        assert_eq!(
            body["details"][0]["field"],
            "kafka consumer herald-dispatch-retry"
        );
        assert!(body["details"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("no progress")));
        lane.progressed();
        assert!(
            ready_state.check().await.is_ok(),
            "ready again once it progresses"
        );
    }
}
