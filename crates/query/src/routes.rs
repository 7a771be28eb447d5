//! The service's router: `GET /api/logs`, `GET /api/logs/{id}`, `GET /api/stats`, `GET /api/stats/minutes`,
//! `GET /api/stats/dead-letters`, `GET /api/dead-letters`, `GET /api/lanes`, the alerts (each needing a key with the `read` scope), the
//! health and metrics routes, the documentation and the console; the middleware is platform's standard stack.
//! Each resource's handlers are in its own folder (`logs/routes.rs`, `alerts/routes.rs`).
//!
//! Routes are only added through [`OpenApiRouter::routes`], which records each handler's `#[utoipa::path]`
//! operation as it adds the route: the document and the router are built from the same list.

use std::sync::Arc;

use axum::middleware;
use axum::Router;
use herald_platform::health;
use herald_platform::http::auth::{self, Required};
use herald_platform::http::{self, Scope, Standard};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::config::Config;
use crate::error::TIMEOUT_HINT;
use crate::openapi::ApiDoc;
use crate::{alerts, logs, stats, AppState};

/// Every route of the service with its middleware, the OpenAPI document among them.
pub fn router(state: AppState, config: &Config) -> Router {
    let read = Required {
        auth: Arc::new(config.http.auth.clone()),
        scope: Scope::Read,
    };
    let (api, document) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(logs::routes::list_logs))
        .routes(routes!(logs::routes::get_log))
        .routes(routes!(crate::dead_letters::routes::list_dead_letters))
        .routes(routes!(stats::routes::stats))
        .routes(routes!(crate::activity::per_minute))
        .routes(routes!(crate::activity::dead_letter_summary))
        .routes(routes!(crate::lanes::lanes))
        .routes(routes!(alerts::routes::list_alerts))
        .routes(routes!(alerts::routes::get_alert))
        .routes(routes!(crate::dropin::list_processed))
        .routes(routes!(crate::dropin::list_user_logs))
        .routes(routes!(crate::dropin::get_user_log))
        .route_layer(middleware::from_fn_with_state(read, auth::require))
        .with_state(state.clone())
        .merge(health::openapi_router_with_consumers(
            "herald-query",
            (*state.readiness).clone(),
            state.consumers.clone(),
        ))
        .split_for_parts();
    let docs = http::openapi::finish(document);
    let console = crate::console::router(crate::console::ConsoleState::new(
        state,
        config.http.auth.clone(),
        config.replay_url.clone(),
    ));
    Standard {
        service: "herald-query",
        request_timeout: config.request_timeout,
        timeout_hint: TIMEOUT_HINT,
        http: &config.http,
    }
    .apply(api.merge(docs).merge(console))
}
