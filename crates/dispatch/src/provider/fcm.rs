//! Push through Firebase Cloud Messaging's HTTP v1 API: `POST {base}/v1/projects/{project}/messages:send`, one
//! request per device token, authorised by an OAuth2 access token that a service account mints for itself.
//!
//! The access token comes from Google's JWT bearer grant: a JWT signed with the service account's RSA key
//! (RS256, `kid` = its key id; `iss` its email, `aud` the token URL, `scope` firebase.messaging, one hour) is
//! POSTed to the token URL, which answers `{access_token, expires_in}`. The token is cached until a minute before
//! it expires, shared by every send of the process; a 401 from FCM drops it, so the retry mints a new one.
//!
//! FCM's answers are judged like every HTTP answer (`herald_domain::outcome`): 404 `UNREGISTERED` and 400
//! `INVALID_ARGUMENT` (a token that is gone or malformed) are permanent, 429 and 5xx retryable with their
//! `Retry-After`. A 401 is retryable here: the token expired early or was revoked, and a fresh one may pass.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use herald_domain::message::Push;
use herald_domain::{Channel, ErrorClass, Event, Message};
use herald_platform::EnvReader;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::Mutex;
use url::Url;

use super::push::combine;
use super::settings::{read_url, Secret};
use super::{
    judge_response, transport_error, wrong_channel, BuildError, Delivered, Provider, SendError, Try,
};

/// The scope FCM's send API asks for.
pub const FCM_SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// Where FCM's API is, unless `HERALD_FCM_BASE_URL` says otherwise.
pub const DEFAULT_FCM_BASE_URL: &str = "https://fcm.googleapis.com";
/// Google's token endpoint, when the service account names none.
pub const DEFAULT_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";
/// How long before its expiry a cached access token is replaced.
const TOKEN_MARGIN: Duration = Duration::from_secs(60);
/// Lifetime asked for in the JWT grant (Google's maximum).
const ASSERTION_LIFETIME_SECS: i64 = 3600;

/// The fields of a service-account key file (the JSON Google Cloud hands out) that the grant needs.
#[derive(Clone, Deserialize)]
pub struct ServiceAccount {
    pub project_id: Option<String>,
    pub private_key_id: Option<String>,
    private_key: String,
    pub client_email: String,
    pub token_uri: Option<String>,
}

impl std::fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("project_id", &self.project_id)
            .field("client_email", &self.client_email)
            .field("private_key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// FCM's settings.
#[derive(Debug, Clone)]
pub struct FcmConfig {
    /// `HERALD_FCM_SERVICE_ACCOUNT_FILE`: path of the service-account JSON key file, read at startup. Required for FCM.
    pub account: ServiceAccount,
    /// `HERALD_FCM_PROJECT_ID`: the Firebase project. Default the key file's `project_id`.
    pub project_id: String,
    /// `HERALD_FCM_BASE_URL`: default `https://fcm.googleapis.com`.
    pub base_url: Url,
    /// `HERALD_FCM_TOKEN_URL`: where access tokens are minted. Default the key file's `token_uri`, else
    /// `https://oauth2.googleapis.com/token`.
    pub token_url: Url,
}

impl FcmConfig {
    /// `HERALD_FCM_*`; `None` when no key file is named (FCM is then not a provider of this dispatcher).
    pub(crate) fn read(env: &mut EnvReader) -> Option<Self> {
        let key = "HERALD_FCM_SERVICE_ACCOUNT_FILE";
        let path = env.optional_string(key)?;
        let account = match std::fs::read_to_string(&path) {
            Ok(text) => match serde_json::from_str::<ServiceAccount>(&text) {
                Ok(account) => match EncodingKey::from_rsa_pem(account.private_key.as_bytes()) {
                    Ok(_) => Some(account),
                    Err(e) => {
                        env.problem(
                            key,
                            format!("{path}: private_key is not an RSA key in PEM: {e}"),
                        );
                        None
                    }
                },
                Err(e) => {
                    env.problem(
                        key,
                        format!("{path} is not a service-account key file: {e}"),
                    );
                    None
                }
            },
            Err(e) => {
                env.problem(key, format!("cannot read {path}: {e}"));
                None
            }
        };
        let project_id = env.optional_string("HERALD_FCM_PROJECT_ID");
        let base_url = read_url(env, "HERALD_FCM_BASE_URL");
        let token_url = read_url(env, "HERALD_FCM_TOKEN_URL");
        let account = account?;
        let Some(project_id) = project_id.or_else(|| account.project_id.clone()) else {
            env.problem(
                "HERALD_FCM_PROJECT_ID",
                "is required: the key file names no project_id",
            );
            return None;
        };
        let token_url = match token_url {
            Some(url) => url,
            None => {
                let raw = account.token_uri.as_deref().unwrap_or(DEFAULT_TOKEN_URL);
                match Url::parse(raw) {
                    Ok(url) => url,
                    Err(e) => {
                        env.problem(key, format!("{path}: token_uri '{raw}' is not a URL: {e}"));
                        return None;
                    }
                }
            }
        };
        let base_url = base_url.or_else(|| Url::parse(DEFAULT_FCM_BASE_URL).ok())?;
        Some(Self {
            account,
            project_id,
            base_url,
            token_url,
        })
    }
}

/// The JWT grant's claims.
#[derive(Debug, Serialize)]
struct Claims<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: i64,
    exp: i64,
}

/// The token endpoint's answer.
#[derive(Debug, Deserialize)]
struct Minted {
    access_token: String,
    expires_in: u64,
}

/// An access token and when it must be replaced.
#[derive(Debug)]
struct Cached {
    token: Secret,
    renew_at: Instant,
}

/// Sends push messages through FCM.
#[derive(Debug)]
pub struct FcmProvider {
    client: reqwest::Client,
    endpoint: Url,
    token_url: Url,
    client_email: String,
    key_id: Option<String>,
    key: EncodingKeyDebug,
    cached: Mutex<Option<Cached>>,
}

/// The signing key, kept out of `Debug`.
struct EncodingKeyDebug(EncodingKey);

impl std::fmt::Debug for EncodingKeyDebug {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl FcmProvider {
    pub fn build(config: &FcmConfig, client: reqwest::Client) -> Result<Self, BuildError> {
        let error = |message: String| BuildError {
            channel: Channel::Push,
            message,
        };
        let key = EncodingKey::from_rsa_pem(config.account.private_key.as_bytes())
            .map_err(|e| error(format!("the FCM service account's key: {e}")))?;
        let mut endpoint = config.base_url.clone();
        endpoint
            .path_segments_mut()
            .map_err(|()| error(format!("{} cannot be a base URL", config.base_url)))?
            .pop_if_empty()
            .extend([
                "v1",
                "projects",
                config.project_id.as_str(),
                "messages:send",
            ]);
        Ok(Self {
            client,
            endpoint,
            token_url: config.token_url.clone(),
            client_email: config.account.client_email.clone(),
            key_id: config.account.private_key_id.clone(),
            key: EncodingKeyDebug(key),
            cached: Mutex::new(None),
        })
    }

    /// A valid access token: the cached one, or a new one from the token endpoint.
    async fn access_token(&self) -> Result<Secret, SendError> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref().filter(|c| Instant::now() < c.renew_at) {
            return Ok(c.token.clone());
        }
        let now = Utc::now().timestamp();
        let claims = Claims {
            iss: &self.client_email,
            scope: FCM_SCOPE,
            aud: self.token_url.as_str(),
            iat: now,
            exp: now + ASSERTION_LIFETIME_SECS,
        };
        let mut header = Header::new(Algorithm::RS256);
        header.kid = self.key_id.clone();
        let assertion = jsonwebtoken::encode(&header, &claims, &self.key.0)
            .map_err(|e| SendError::invalid(format!("fcm: cannot sign the token grant: {e}")))?;
        let response = self
            .client
            .post(self.token_url.clone())
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", assertion.as_str()),
            ])
            .send()
            .await
            .map_err(|e| transport_error(&e))?;
        let (_, response) = judge_response(response).await.map_err(|e| SendError {
            message: format!("fcm token endpoint: {}", e.message),
            ..e
        })?;
        let minted: Minted = response.json().await.map_err(|e| {
            SendError::transport(
                herald_domain::outcome::TransportFailure::Io,
                format!("fcm token endpoint: unreadable answer: {e}"),
            )
        })?;
        let lifetime = Duration::from_secs(minted.expires_in).saturating_sub(TOKEN_MARGIN);
        let token = Secret::new(minted.access_token);
        *cached = Some(Cached {
            token: token.clone(),
            renew_at: Instant::now() + lifetime,
        });
        Ok(token)
    }

    async fn send_one(&self, push: &Push, token: &str) -> Result<Delivered, SendError> {
        let access = self.access_token().await?;
        let mut message = json!({
            "token": token,
            "notification": {"title": push.title(), "body": push.body()},
        });
        if let Some(data) = push.data() {
            message["data"] = json!(data);
        }
        let response = self
            .client
            .post(self.endpoint.clone())
            .bearer_auth(access.expose())
            .json(&json!({ "message": message }))
            .send()
            .await
            .map_err(|e| transport_error(&e))?;
        match judge_response(response).await {
            Ok((delivered, response)) => {
                let name = response
                    .json::<serde_json::Value>()
                    .await
                    .ok()
                    .and_then(|v| v["name"].as_str().map(str::to_owned));
                Ok(Delivered {
                    detail: name,
                    ..delivered
                })
            }
            Err(e) if e.http_status == Some(401) => {
                // The access token was refused: forget it, so the next try mints another.
                *self.cached.lock().await = None;
                Err(SendError {
                    class: ErrorClass::Retryable,
                    message: format!("fcm: {}", e.message),
                    ..e
                })
            }
            Err(e) => Err(SendError {
                message: format!("fcm: {}", e.message),
                ..e
            }),
        }
    }
}

#[async_trait]
impl Provider for FcmProvider {
    fn name(&self) -> &str {
        herald_domain::provider::FCM
    }

    async fn send(
        &self,
        _event: &Event,
        message: &Message,
        _attempt: Try,
    ) -> Result<Delivered, SendError> {
        let Message::Push(push) = message else {
            return Err(wrong_channel(Channel::Push, message));
        };
        let mut results = Vec::with_capacity(push.tokens().len());
        for token in push.tokens() {
            let result = self.send_one(push, token).await;
            let retry = result
                .as_ref()
                .is_err_and(|e| e.class == ErrorClass::Retryable);
            results.push((token.clone(), result));
            if retry {
                break;
            }
        }
        combine(results)
    }
}
