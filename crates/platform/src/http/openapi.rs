//! What the OpenAPI 3.1 documents of Herald's HTTP services share: the error body's schema, the API-key security
//! schemes, and the two documentation routes (`/api/openapi.json`, Swagger UI at `/api/docs`).
//!
//! Each service builds its document from its own routes with utoipa-axum's `OpenApiRouter`, so a route cannot be
//! served without being documented.

use axum::Router;
use utoipa::openapi::path::{HttpMethod, OperationBuilder};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as Document, ResponseBuilder};
use utoipa::{PartialSchema, ToSchema};
use utoipa_swagger_ui::SwaggerUi;

/// Where the document is served.
pub const OPENAPI_PATH: &str = "/api/openapi.json";
/// Where Swagger UI is served.
pub const DOCS_PATH: &str = "/api/docs";

/// Every error answer.
#[derive(Debug, ToSchema)]
#[schema(example = json!({"error": "Validation failed", "details": [{"field": "limit", "message": "must be a whole number from 1 to 100"}]}))]
pub struct ErrorBody {
    /// What went wrong, in a few words: `Validation failed`, `Event not found`, `Service unavailable`.
    pub error: String,
    /// One entry per problem; empty when there is nothing more to say.
    pub details: Vec<FieldError>,
}

/// One problem with one part of a request.
#[derive(Debug, ToSchema)]
pub struct FieldError {
    /// The field (`payload.to`), parameter (`limit`), header, path part (`id`) or dependency (`mongodb`).
    pub field: String,
    /// What is wrong, in words a caller can act on.
    pub message: String,
}

/// The answer of `/api/health` and `/api/ready`.
#[derive(Debug, ToSchema)]
pub struct HealthStatus {
    /// `ok` (health) or `ready` (ready).
    #[schema(example = "ok")]
    pub status: String,
    /// On `/api/health`: the service that answers (`herald-ingest`, `herald-query`, ...).
    #[schema(example = "herald-ingest")]
    pub service: Option<String>,
}

/// The name of the security requirement routes that need a key refer to.
pub const API_KEY: &str = "apiKey";
/// The same key sent as a bearer token.
pub const BEARER: &str = "bearer";

/// Adds the error schemas, the API-key security schemes and the documentation routes to `document`, and returns
/// the router that serves the document and Swagger UI.
pub fn finish(mut document: Document) -> Router {
    let components = document.components.get_or_insert_with(Default::default);
    for (name, schema) in [ErrorBody::name(), FieldError::name(), HealthStatus::name()]
        .into_iter()
        .zip([
            ErrorBody::schema(),
            FieldError::schema(),
            HealthStatus::schema(),
        ])
    {
        components
            .schemas
            .entry(name.into_owned())
            .or_insert(schema);
    }
    components.add_security_scheme(
        API_KEY,
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
            "X-API-Key",
            "An API key with the route's scope (ingest, read or admin)",
        ))),
    );
    components.add_security_scheme(
        BEARER,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some("The same API key as `Authorization: Bearer <key>`"))
                .build(),
        ),
    );
    add_doc_routes(&mut document);
    SwaggerUi::new(DOCS_PATH).url(OPENAPI_PATH, document).into()
}

/// Adds the two documentation routes, which Swagger UI serves rather than a handler of ours.
fn add_doc_routes(document: &mut Document) {
    let json = OperationBuilder::new()
        .tag("docs")
        .operation_id(Some("openapi"))
        .summary(Some("This OpenAPI 3.1 document"))
        .response(
            "200",
            ResponseBuilder::new()
                .description("The document")
                .content("application/json", ContentBuilder::new().build()),
        )
        .build();
    document
        .paths
        .add_path_operation(OPENAPI_PATH, vec![HttpMethod::Get], json);
    let docs = OperationBuilder::new()
        .tag("docs")
        .operation_id(Some("docs"))
        .summary(Some(
            "Swagger UI for this document (its assets are served below this path)",
        ))
        .response(
            "200",
            ResponseBuilder::new()
                .description("An HTML page (`/api/docs` redirects to `/api/docs/`)")
                .content("text/html", ContentBuilder::new().build()),
        )
        .build();
    document
        .paths
        .add_path_operation(DOCS_PATH, vec![HttpMethod::Get], docs);
}
