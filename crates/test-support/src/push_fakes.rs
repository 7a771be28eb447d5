//! Local fakes of the push providers, on one HTTP server: Google's token endpoint (checks the JWT grant's RS256
//! signature against the service account's public key, its issuer, audience and scope), FCM's HTTP v1 send
//! (checks the bearer token it minted and the message) and OneSignal's `POST /notifications` (checks the key and
//! the app). Tests read back what each received.
//!
//! Device tokens steer the answers: a token containing `unregistered` gets FCM's 404 `UNREGISTERED`, `unavailable`
//! a 503 with `Retry-After: 1`, `unsubscribed` OneSignal's 200 without an id; anything else is accepted.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};

use anyhow::{ensure, Context, Result};
use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{json, Value};

/// The service account's email, the JWT's issuer.
/// A new 2048-bit RSA private key in PEM (`openssl genpkey`), to sign a fake service account's tokens with.
pub fn rsa_private_key() -> Result<String> {
    let key = Command::new("openssl")
        .args([
            "genpkey",
            "-quiet",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ])
        .output()
        .context("running openssl")?;
    ensure!(key.status.success(), "openssl genpkey failed");
    Ok(String::from_utf8(key.stdout)?)
}

pub const CLIENT_EMAIL: &str = "herald@herald-test.iam.gserviceaccount.com";
/// The Firebase project of the key file.
pub const PROJECT_ID: &str = "herald-test";
/// The OneSignal app and its key.
pub const ONESIGNAL_APP_ID: &str = "os-app-1";
pub const ONESIGNAL_API_KEY: &str = "os-key-1";

#[derive(Debug, Default)]
struct Seen {
    grants: usize,
    fcm: Vec<Value>,
    onesignal: Vec<Value>,
    refused: Vec<String>,
}

#[derive(Debug)]
struct Shared {
    public_pem: Vec<u8>,
    token_url: String,
    seen: Mutex<Seen>,
}

/// The running fakes, with a service-account key file whose token URL points at them.
#[derive(Debug)]
pub struct PushFakes {
    /// `http://127.0.0.1:port`: the base URL of both APIs.
    pub base_url: String,
    /// The token endpoint, `{base_url}/token`.
    pub token_url: String,
    /// A service-account JSON key file (RSA key made by `openssl` for this run).
    pub service_account_file: PathBuf,
    shared: Arc<Shared>,
    _dir: tempfile::TempDir,
}

impl PushFakes {
    pub async fn start() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let key = dir.path().join("key.pem");
        let public = dir.path().join("public.pem");
        let run = |args: &[&str]| -> Result<()> {
            let status = Command::new("openssl")
                .args(args)
                .status()
                .context("running openssl")?;
            ensure!(status.success(), "openssl {args:?} failed");
            Ok(())
        };
        let key_s = key.to_string_lossy().into_owned();
        let public_s = public.to_string_lossy().into_owned();
        std::fs::write(&key, rsa_private_key()?)?;
        run(&["pkey", "-in", &key_s, "-pubout", "-out", &public_s])?;
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let token_url = format!("{base_url}/token");
        let service_account_file = dir.path().join("service-account.json");
        let account = json!({
            "type": "service_account",
            "project_id": PROJECT_ID,
            "private_key_id": "key-1",
            "private_key": std::fs::read_to_string(&key)?,
            "client_email": CLIENT_EMAIL,
            "token_uri": token_url,
        });
        std::fs::write(&service_account_file, serde_json::to_vec(&account)?)?;
        let shared = Arc::new(Shared {
            public_pem: std::fs::read(&public)?,
            token_url: token_url.clone(),
            seen: Mutex::default(),
        });
        let app = Router::new()
            .route("/token", post(token))
            .route("/v1/projects/{project}/{action}", post(fcm_send))
            .route("/notifications", post(onesignal))
            .with_state(shared.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Self {
            base_url,
            token_url,
            service_account_file,
            shared,
            _dir: dir,
        })
    }

    /// The dispatcher variables that point both providers here.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            (
                "HERALD_FCM_SERVICE_ACCOUNT_FILE".into(),
                self.service_account_file.to_string_lossy().into_owned(),
            ),
            ("HERALD_FCM_BASE_URL".into(), self.base_url.clone()),
            ("HERALD_ONESIGNAL_APP_ID".into(), ONESIGNAL_APP_ID.into()),
            ("HERALD_ONESIGNAL_API_KEY".into(), ONESIGNAL_API_KEY.into()),
            ("HERALD_ONESIGNAL_BASE_URL".into(), self.base_url.clone()),
        ]
    }

    /// How many access tokens were minted.
    pub fn grants(&self) -> usize {
        self.seen().grants
    }

    /// The FCM messages accepted or answered, as received (`{"message": {...}}`).
    pub fn fcm_messages(&self) -> Vec<Value> {
        self.seen().fcm.clone()
    }

    /// The OneSignal notifications received.
    pub fn onesignal_notifications(&self) -> Vec<Value> {
        self.seen().onesignal.clone()
    }

    /// Why requests were refused (a bad grant, token or key), so that a test can say.
    pub fn refused(&self) -> Vec<String> {
        self.seen().refused.clone()
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.shared
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn refuse(shared: &Shared, status: StatusCode, why: String) -> Response {
    shared
        .seen
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .refused
        .push(why.clone());
    (status, Json(json!({"error": why}))).into_response()
}

async fn token(
    State(shared): State<Arc<Shared>>,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if field("grant_type") != Some("urn:ietf:params:oauth:grant-type:jwt-bearer") {
        return refuse(
            &shared,
            StatusCode::BAD_REQUEST,
            format!("grant_type {:?}", field("grant_type")),
        );
    }
    let Ok(key) = DecodingKey::from_rsa_pem(&shared.public_pem) else {
        return refuse(
            &shared,
            StatusCode::INTERNAL_SERVER_ERROR,
            "public key".into(),
        );
    };
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[shared.token_url.as_str()]);
    validation.set_issuer(&[CLIENT_EMAIL]);
    validation.set_required_spec_claims(&["exp", "iat", "aud", "iss"]);
    let claims = match jsonwebtoken::decode::<Value>(
        field("assertion").unwrap_or_default(),
        &key,
        &validation,
    ) {
        Ok(data) if data.header.kid.as_deref() == Some("key-1") => data.claims,
        Ok(data) => {
            return refuse(
                &shared,
                StatusCode::BAD_REQUEST,
                format!("kid {:?}", data.header.kid),
            )
        }
        Err(e) => {
            return refuse(
                &shared,
                StatusCode::BAD_REQUEST,
                format!("invalid_grant: {e}"),
            )
        }
    };
    if claims["scope"] != "https://www.googleapis.com/auth/firebase.messaging" {
        return refuse(
            &shared,
            StatusCode::BAD_REQUEST,
            format!("scope {}", claims["scope"]),
        );
    }
    let mut seen = shared
        .seen
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    seen.grants += 1;
    let access_token = format!("ya29.fake-{}", seen.grants);
    Json(json!({"access_token": access_token, "expires_in": 3599, "token_type": "Bearer"}))
        .into_response()
}

async fn fcm_send(
    State(shared): State<Arc<Shared>>,
    Path((project, action)): Path<(String, String)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if project != PROJECT_ID || action != "messages:send" {
        return refuse(
            &shared,
            StatusCode::NOT_FOUND,
            format!("path {project}/{action}"),
        );
    }
    let grants = shared
        .seen
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .grants;
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let minted = (1..=grants).any(|n| bearer == format!("Bearer ya29.fake-{n}"));
    if !minted {
        return refuse(
            &shared,
            StatusCode::UNAUTHORIZED,
            format!("bearer {bearer:?}"),
        );
    }
    let message = &body["message"];
    let token = message["token"].as_str().unwrap_or_default().to_owned();
    if token.is_empty()
        || !message["notification"]["title"].is_string()
        || !message["notification"]["body"].is_string()
    {
        return refuse(&shared, StatusCode::BAD_REQUEST, format!("message {body}"));
    }
    shared
        .seen
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .fcm
        .push(body.clone());
    if token.contains("unregistered") {
        let error = json!({"error": {"code": 404, "message": "Requested entity was not found.", "status": "NOT_FOUND",
            "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "UNREGISTERED"}]}});
        return (StatusCode::NOT_FOUND, Json(error)).into_response();
    }
    if token.contains("unavailable") {
        let error = json!({"error": {"code": 503, "message": "The service is currently unavailable.", "status": "UNAVAILABLE"}});
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [("retry-after", "1")],
            Json(error),
        )
            .into_response();
    }
    Json(json!({"name": format!("projects/{PROJECT_ID}/messages/0:{token}")})).into_response()
}

async fn onesignal(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if auth != format!("Key {ONESIGNAL_API_KEY}") {
        return refuse(
            &shared,
            StatusCode::FORBIDDEN,
            format!("authorization {auth:?}"),
        );
    }
    // OneSignal takes only a UUID as the key it deduplicates resends on.
    let key_ok = body.get("idempotency_key").is_none_or(|key| {
        key.as_str()
            .is_some_and(|k| uuid::Uuid::parse_str(k).is_ok())
    });
    if body["app_id"] != ONESIGNAL_APP_ID
        || !key_ok
        || !body["include_subscription_ids"].is_array()
        || !body["contents"]["en"].is_string()
    {
        return refuse(
            &shared,
            StatusCode::BAD_REQUEST,
            format!("notification {body}"),
        );
    }
    shared
        .seen
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .onesignal
        .push(body.clone());
    let ids = body["include_subscription_ids"].to_string();
    if ids.contains("unsubscribed") {
        return Json(json!({"id": "", "errors": ["All included players are not subscribed"]}))
            .into_response();
    }
    Json(json!({"id": "b98881cc-1e94-4366-bbd9-db8f3429292b", "external_id": null})).into_response()
}
