//! `/api/health` (the process is up; touches nothing) and `/api/ready` (Kafka and MongoDB answer).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use herald_domain::{ErrorBody, FieldError};
use mongodb::Database;
use serde_json::json;

use crate::config::KafkaConfig;

/// What `/api/ready` checks. A service that uses only one of the two leaves the other out.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    pub kafka: Option<KafkaConfig>,
    pub mongo: Option<Database>,
    /// Bound on each check. Default 2 s.
    pub timeout: Option<Duration>,
}

impl Readiness {
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
        let problems: Vec<FieldError> =
            [kafka, mongo].into_iter().filter_map(Result::err).collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

/// The health and readiness routes, to merge into a service's router.
pub fn router(readiness: Readiness) -> Router {
    Router::new()
        .route("/api/health", get(health))
        .route("/api/ready", get(ready))
        .with_state(Arc::new(readiness))
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

async fn ready(State(readiness): State<Arc<Readiness>>) -> Response {
    match readiness.check().await {
        Ok(()) => Json(json!({ "status": "ready" })).into_response(),
        Err(problems) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(ErrorBody::with_details("Not ready", problems)),
        )
            .into_response(),
    }
}
