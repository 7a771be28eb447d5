//! A local OTLP/HTTP collector for tests of Herald's traces: it takes the JSON exports a service posts to
//! `/v1/traces` and keeps every span, so a test can check how they hang together.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use serde_json::Value;
use tokio::task::JoinHandle;

/// One exported span, as the collector got it.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportedSpan {
    /// The `service.name` of the resource that exported it.
    pub service: String,
    pub name: String,
    /// Hex, as OTLP's JSON encoding has them.
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    /// Every attribute, its value as text (`"1"` for the integer 1).
    pub attributes: BTreeMap<String, String>,
}

impl ExportedSpan {
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// The collector: an HTTP server on 127.0.0.1 that keeps every span posted to it until it is dropped.
#[derive(Debug)]
pub struct Collector {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<ExportedSpan>>>,
    /// What could not be read, so a test fails saying why rather than waiting for spans that never come.
    problems: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl Collector {
    pub async fn start() -> anyhow::Result<Self> {
        let spans: Arc<Mutex<Vec<ExportedSpan>>> = Arc::default();
        let problems: Arc<Mutex<Vec<String>>> = Arc::default();
        let (kept, noted) = (Arc::clone(&spans), Arc::clone(&problems));
        let app = Router::new().route(
            "/v1/traces",
            post(move |headers: HeaderMap, body: Bytes| {
                let (kept, noted) = (Arc::clone(&kept), Arc::clone(&noted));
                async move {
                    match decode(&headers, &body) {
                        Ok(decoded) => {
                            lock(&kept).extend(decoded);
                            (StatusCode::OK, "{}")
                        }
                        Err(problem) => {
                            lock(&noted).push(problem);
                            (StatusCode::BAD_REQUEST, "{}")
                        }
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            addr,
            spans,
            problems,
            task,
        })
    }

    /// What `OTEL_EXPORTER_OTLP_ENDPOINT` is set to: the base URL, without `/v1/traces`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span so far, or the first export that could not be read.
    pub fn spans(&self) -> Result<Vec<ExportedSpan>, String> {
        if let Some(problem) = lock(&self.problems).first() {
            return Err(format!("an export could not be read: {problem}"));
        }
        Ok(lock(&self.spans).clone())
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The spans of one `ExportTraceServiceRequest` in OTLP's JSON encoding.
fn decode(headers: &HeaderMap, body: &[u8]) -> Result<Vec<ExportedSpan>, String> {
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !content_type.starts_with("application/json") {
        return Err(format!("content-type {content_type:?}, not JSON"));
    }
    let request: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let mut spans = Vec::new();
    for resource_spans in array(&request["resourceSpans"]) {
        let resource = attributes(&resource_spans["resource"]["attributes"]);
        let service = resource.get("service.name").cloned().unwrap_or_default();
        for scope_spans in array(&resource_spans["scopeSpans"]) {
            for span in array(&scope_spans["spans"]) {
                let text = |key: &str| span[key].as_str().unwrap_or_default().to_owned();
                spans.push(ExportedSpan {
                    service: service.clone(),
                    name: text("name"),
                    trace_id: text("traceId"),
                    span_id: text("spanId"),
                    parent_span_id: text("parentSpanId"),
                    attributes: attributes(&span["attributes"]),
                });
            }
        }
    }
    Ok(spans)
}

fn array(value: &Value) -> &[Value] {
    value.as_array().map(Vec::as_slice).unwrap_or_default()
}

/// OTLP's `[{"key": ..., "value": {"stringValue": ...}}]`, each value as text.
fn attributes(list: &Value) -> BTreeMap<String, String> {
    array(list)
        .iter()
        .filter_map(|attribute| {
            let key = attribute["key"].as_str()?.to_owned();
            let value = attribute["value"].as_object()?.values().next()?;
            let text = match value {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            Some((key, text))
        })
        .collect()
}

/// The spans of one trace, by span id, with the questions a test asks about their parents.
#[derive(Debug)]
pub struct Trace {
    pub spans: Vec<ExportedSpan>,
    by_id: HashMap<String, usize>,
}

impl Trace {
    /// The spans of `spans` in trace `trace_id`.
    pub fn of(spans: &[ExportedSpan], trace_id: &str) -> Self {
        let spans: Vec<ExportedSpan> = spans
            .iter()
            .filter(|span| span.trace_id == trace_id)
            .cloned()
            .collect();
        let by_id = spans
            .iter()
            .enumerate()
            .map(|(i, span)| (span.span_id.clone(), i))
            .collect();
        Self { spans, by_id }
    }

    /// The spans named `name`.
    pub fn named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a ExportedSpan> + 'a {
        self.spans.iter().filter(move |span| span.name == name)
    }

    /// The parent of `span`, if it is in this trace.
    pub fn parent(&self, span: &ExportedSpan) -> Option<&ExportedSpan> {
        self.by_id
            .get(&span.parent_span_id)
            .map(|&i| &self.spans[i])
    }

    /// Whether `ancestor` is `span`'s parent, or its parent's, and so on.
    pub fn descends_from(&self, span: &ExportedSpan, ancestor: &ExportedSpan) -> bool {
        let mut current = self.parent(span);
        // Bounded by the number of spans: a cycle (which a correct exporter never sends) ends the walk.
        for _ in 0..self.spans.len() {
            match current {
                Some(parent) if parent.span_id == ancestor.span_id => return true,
                Some(parent) => current = self.parent(parent),
                None => return false,
            }
        }
        false
    }

    /// The spans whose parent is named but not in this trace: a hop whose context was lost or not exported.
    pub fn orphans(&self) -> Vec<&ExportedSpan> {
        self.spans
            .iter()
            .filter(|span| !span.parent_span_id.is_empty() && self.parent(span).is_none())
            .collect()
    }

    /// The spans with no parent.
    pub fn roots(&self) -> Vec<&ExportedSpan> {
        self.spans
            .iter()
            .filter(|span| span.parent_span_id.is_empty())
            .collect()
    }
}
