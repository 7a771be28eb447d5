//! The web console at `/console`: overview, events, an event's detail, dead letters with replay, and alerts,
//! rendered on the server from the same readers the API uses.
//!
//! Pages are minijinja templates compiled into the binary, with one small script (`static/console.js`: refreshing
//! the live views, copying the curl command) and one stylesheet; charts are SVG drawn here (`chart`). Nothing is
//! built at install time.
//!
//! Signing in takes one of the service's API keys (`read` to look, `admin` to replay), kept in a session cookie
//! (`HttpOnly`, `SameSite=Strict`, path `/console`); a key that stops being accepted brings the sign-in view back.
//! Replays are forwarded to herald-replay with that key, from forms that carry the session's CSRF token and whose
//! `Origin` must be this site. Every console answer carries a strict Content-Security-Policy (no inline script,
//! `frame-ancestors 'none'`).

use std::sync::{Arc, LazyLock};

use axum::extract::Request;
use axum::http::header::{self, HeaderName, HeaderValue};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use herald_platform::http::auth::AuthConfig;
use minijinja::Environment;
use serde::Serialize;
use url::Url;

use crate::AppState;

pub mod chart;
mod pages;
mod session;

/// What the console's handlers share.
#[derive(Debug, Clone)]
pub struct ConsoleState {
    app: AppState,
    auth: Arc<AuthConfig>,
    replay_url: Url,
    http: reqwest::Client,
}

impl ConsoleState {
    pub fn new(app: AppState, auth: AuthConfig, replay_url: Url) -> Self {
        Self {
            app,
            auth: Arc::new(auth),
            replay_url,
            http: reqwest::Client::new(),
        }
    }
}

/// The console's routes under `/console`, and `/` sending browsers there.
pub fn router(state: ConsoleState) -> Router {
    let pages = Router::new()
        .route("/console", get(pages::overview))
        .route("/console/", get(pages::overview))
        .route("/console/events", get(pages::events))
        .route("/console/events/{id}", get(pages::event))
        .route("/console/dead-letters", get(pages::dead_letters))
        .route("/console/dead-letters/replay", post(pages::replay))
        .route("/console/dead-letters/replayed", get(pages::replayed))
        .route("/console/alerts", get(pages::alerts))
        .route("/console/alerts/{id}", get(pages::alert))
        .route(
            "/console/sign-in",
            get(session::sign_in_form).post(session::sign_in),
        )
        .route("/console/sign-out", post(session::sign_out))
        .route("/console/static/console.css", get(stylesheet))
        .route("/console/static/console.js", get(script))
        .with_state(state);
    Router::new()
        .route("/", get(|| async { Redirect::to("/console") }))
        .merge(pages)
        .layer(middleware::from_fn(security_headers))
}

/// Scripts and styles only from this origin, no inline script, no framing, forms posting only here.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
    connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    // Pages show live state and a signed-in view; the two static files may be cached.
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

async fn stylesheet() -> Response {
    static_file(
        "text/css; charset=utf-8",
        include_str!("console/static/console.css"),
    )
}

async fn script() -> Response {
    static_file(
        "text/javascript; charset=utf-8",
        include_str!("console/static/console.js"),
    )
}

fn static_file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// The templates, parsed once. A template that does not parse is a bug caught by the first test that renders it.
static TEMPLATES: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    for (name, source) in [
        ("base.html", include_str!("console/templates/base.html")),
        (
            "sign_in.html",
            include_str!("console/templates/sign_in.html"),
        ),
        (
            "overview.html",
            include_str!("console/templates/overview.html"),
        ),
        ("events.html", include_str!("console/templates/events.html")),
        ("event.html", include_str!("console/templates/event.html")),
        (
            "dead_letters.html",
            include_str!("console/templates/dead_letters.html"),
        ),
        (
            "preview.html",
            include_str!("console/templates/preview.html"),
        ),
        (
            "replayed.html",
            include_str!("console/templates/replayed.html"),
        ),
        ("alerts.html", include_str!("console/templates/alerts.html")),
        ("alert.html", include_str!("console/templates/alert.html")),
        (
            "problem.html",
            include_str!("console/templates/problem.html"),
        ),
    ] {
        if let Err(e) = env.add_template(name, source) {
            tracing::error!(template = name, error = %e, "a console template does not parse");
        }
    }
    env
});

/// Why a console page could not be shown; each is rendered as a page, not as JSON.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("{0}")]
    BadRequest(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("this needs a key with the admin scope")]
    Forbidden,
    #[error("the request did not come from this console")]
    CrossSite,
    #[error("mongodb did not answer; try again")]
    Mongo(#[from] mongodb::error::Error),
    #[error("herald-replay: {0}")]
    Replay(String),
    #[error("the page cannot be drawn: {0}")]
    Template(#[from] minijinja::Error),
}

impl ConsoleError {
    fn status(&self) -> StatusCode {
        match self {
            ConsoleError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ConsoleError::NotFound(_) => StatusCode::NOT_FOUND,
            ConsoleError::Forbidden | ConsoleError::CrossSite => StatusCode::FORBIDDEN,
            ConsoleError::Mongo(_) | ConsoleError::Replay(_) => StatusCode::SERVICE_UNAVAILABLE,
            ConsoleError::Template(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(error = %self, "console page failed");
        }
        let message = match &self {
            // The details of a database or template failure stay in the log.
            ConsoleError::Mongo(_) => "MongoDB did not answer; try again".to_owned(),
            ConsoleError::Template(_) => "the page cannot be drawn".to_owned(),
            other => other.to_string(),
        };
        #[derive(Serialize)]
        struct Problem {
            title: &'static str,
            message: String,
            signed_in: bool,
        }
        match render(
            "problem.html",
            &Problem {
                title: "Something went wrong",
                message,
                signed_in: true,
            },
        ) {
            Ok(page) => (status, page).into_response(),
            Err(_) => (status, "the page cannot be drawn").into_response(),
        }
    }
}

/// Renders a template with `context`.
fn render(name: &str, context: impl Serialize) -> Result<Html<String>, ConsoleError> {
    let template = TEMPLATES.get_template(name)?;
    Ok(Html(template.render(context)?))
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_template_parses() {
        for name in [
            "base.html",
            "sign_in.html",
            "overview.html",
            "events.html",
            "event.html",
            "dead_letters.html",
            "preview.html",
            "replayed.html",
            "alerts.html",
            "alert.html",
            "problem.html",
        ] {
            assert!(super::TEMPLATES.get_template(name).is_ok(), "{name}");
        }
    }
}

#[cfg(test)]
mod render_tests {
    use minijinja::context;

    #[test]
    fn the_views_render_with_empty_data() {
        let frame = context! { title => "t", nav => "events", admin => true, csrf => "c", signed_in => true };
        for name in [
            "events.html",
            "event.html",
            "dead_letters.html",
            "preview.html",
            "replayed.html",
            "alerts.html",
            "alert.html",
            "overview.html",
        ] {
            // One item in each list, so that every loop body (and each filter in it) is drawn.
            let item = context! { eventId => "e 1", id => "a/1", status => "QUEUED", severity => "critical", email => context!{} };
            let rendered = super::render(
                name,
                context! {
                    frame, values => context!{}, summary => context!{ byChannel => context!{ webhook => 1 }, byError => vec![item.clone()] },
                    event => item.clone(), alert => context!{ email => context!{}, sampleEventIds => ["e 1"] }, waiting => 2,
                    events => vec![item.clone()], letters => vec![item.clone()], alerts => vec![item.clone()], rows => vec![item.clone()],
                    sample => ["e 1"], attempts => [context!{ number => 1 }], timeline => [context!{ kind => "accepted" }],
                    by_status => context!{ QUEUED => 1 }, lanes => [context!{ lane => "critical", lag => 2, partitions => [1] }],
                    by_channel => [context!{ name => "webhook", totals => [1, 2, 3, 4], chart => "<svg></svg>" }],
                    totals => [1, 2, 3, 4], count => 1, n => 1, followed => 1,
                },
            );
            if let Err(e) = &rendered {
                let mut text = format!("{e:#}");
                let mut source = std::error::Error::source(e);
                while let Some(inner) = source {
                    text.push_str(&format!(" / {inner}"));
                    source = inner.source();
                }
                panic!("{name}: {text}");
            }
        }
    }
}
