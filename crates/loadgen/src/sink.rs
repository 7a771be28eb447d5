//! The webhook sink: a local HTTP receiver for the webhooks Herald's dispatchers POST, which timestamps every
//! request by `Herald-Event-Id`, checks the signature when it knows the secret, and fails the first N requests of
//! each event when the URL asks it to (`/hook/<N>`), to exercise retries.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::Result;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// One request the sink got for an event.
#[derive(Debug, Clone, Copy)]
pub struct Hit {
    pub at: DateTime<Utc>,
    /// What the sink answered.
    pub status: u16,
}

#[derive(Debug, Default)]
struct Inner {
    hits: Mutex<HashMap<String, Vec<Hit>>>,
    n_requests: AtomicU64,
    n_accepted: AtomicU64,
    n_bad_signature: AtomicU64,
    n_no_event_id: AtomicU64,
}

/// A running sink. Cloning shares it.
#[derive(Debug, Clone)]
pub struct Sink {
    /// `http://<addr>/hook`: append `/<N>` to fail the first N requests of each event.
    pub base_url: String,
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct SinkState {
    inner: Arc<Inner>,
    secret: Option<Arc<String>>,
}

/// Counters of the sink, for the report.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct SinkCounts {
    pub n_requests: u64,
    /// Requests answered 2xx.
    pub n_accepted: u64,
    pub n_bad_signature: u64,
    pub n_no_event_id: u64,
    /// Events that got more than one 2xx (a send repeated after a crash or an expired lease).
    pub n_duplicate_deliveries: u64,
}

impl Sink {
    /// Binds `addr` (port 0 picks one) and serves until the process ends. With `secret`, requests whose
    /// `Herald-Signature` does not match are counted (and still accepted, so a wrong secret shows in the report
    /// instead of as retries).
    pub async fn start(addr: SocketAddr, secret: Option<String>) -> Result<Self> {
        let inner = Arc::new(Inner::default());
        let state = SinkState {
            inner: inner.clone(),
            secret: secret.map(Arc::new),
        };
        let app = Router::new()
            .route("/hook", post(receive_plain))
            .route("/hook/{fail_first}", post(receive))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let base_url = format!("http://{}/hook", listener.local_addr()?);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Self { base_url, inner })
    }

    fn hits(&self) -> MutexGuard<'_, HashMap<String, Vec<Hit>>> {
        // A panic while holding the lock cannot leave the map half-written (each insert is one push).
        self.inner
            .hits
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every request for `event_id`, in arrival order.
    pub fn hits_of(&self, event_id: &str) -> Vec<Hit> {
        self.hits().get(event_id).cloned().unwrap_or_default()
    }

    /// When `event_id` was first answered 2xx.
    pub fn delivered_at(&self, event_id: &str) -> Option<DateTime<Utc>> {
        self.hits()
            .get(event_id)
            .and_then(|hits| hits.iter().find(|h| (200..300).contains(&h.status)))
            .map(|h| h.at)
    }

    /// Events answered 2xx at least once.
    pub fn n_delivered_events(&self) -> u64 {
        self.hits()
            .values()
            .filter(|hits| hits.iter().any(|h| (200..300).contains(&h.status)))
            .count() as u64
    }

    pub fn counts(&self) -> SinkCounts {
        let n_duplicate_deliveries = self
            .hits()
            .values()
            .filter(|hits| {
                hits.iter()
                    .filter(|h| (200..300).contains(&h.status))
                    .count()
                    > 1
            })
            .count() as u64;
        SinkCounts {
            n_requests: self.inner.n_requests.load(Ordering::Relaxed),
            n_accepted: self.inner.n_accepted.load(Ordering::Relaxed),
            n_bad_signature: self.inner.n_bad_signature.load(Ordering::Relaxed),
            n_no_event_id: self.inner.n_no_event_id.load(Ordering::Relaxed),
            n_duplicate_deliveries,
        }
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Whether `Herald-Signature` is `v1=<hex HMAC-SHA256(secret, "{id}.{timestamp}.{body}")>`.
fn signature_ok(secret: &str, headers: &HeaderMap, event_id: &str, body: &[u8]) -> bool {
    let (Some(timestamp), Some(signature)) = (
        header(headers, "herald-timestamp"),
        header(headers, "herald-signature"),
    ) else {
        return false;
    };
    let Some(hex_mac) = signature.strip_prefix("v1=") else {
        return false;
    };
    let Ok(expected) = hex::decode(hex_mac) else {
        return false;
    };
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(event_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

async fn receive_plain(state: State<SinkState>, headers: HeaderMap, body: Bytes) -> StatusCode {
    receive(state, Path(0), headers, body).await
}

async fn receive(
    State(state): State<SinkState>,
    Path(fail_first): Path<usize>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let at = Utc::now();
    let inner = &state.inner;
    inner.n_requests.fetch_add(1, Ordering::Relaxed);
    let Some(event_id) = header(&headers, "herald-event-id").map(str::to_owned) else {
        inner.n_no_event_id.fetch_add(1, Ordering::Relaxed);
        return StatusCode::BAD_REQUEST;
    };
    if let Some(secret) = &state.secret {
        if !signature_ok(secret, &headers, &event_id, &body) {
            inner.n_bad_signature.fetch_add(1, Ordering::Relaxed);
        }
    }
    let mut hits = inner
        .hits
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let seen = hits.entry(event_id).or_default();
    let status = if seen.len() < fail_first {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        inner.n_accepted.fetch_add(1, Ordering::Relaxed);
        StatusCode::OK
    };
    seen.push(Hit {
        at,
        status: status.as_u16(),
    });
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_made_as_herald_makes_it_verifies() {
        // The vector of herald-dispatch's own signing test.
        let mut headers = HeaderMap::new();
        headers.insert("herald-timestamp", "1700000000".parse().expect("value"));
        headers.insert(
            "herald-signature",
            "v1=d43659741694d12f7d62c160fe8c66e164f5943590856c8fc3a2c285fb14a4ce"
                .parse()
                .expect("value"),
        );
        assert!(signature_ok("secret", &headers, "e1", br#"{"a":1}"#));
        assert!(!signature_ok("other", &headers, "e1", br#"{"a":1}"#));
    }
}
