//! API keys with scopes.
//!
//! A key is configured as `name:scope+scope:secret`, where the secret is either the key itself or, better,
//! `sha256:<hex>` of it (so the configuration never holds a usable key). Keys come from `HERALD_API_KEYS`
//! (comma-separated) and from the file `HERALD_API_KEYS_FILE` (one per line, `#` comments). Only SHA-256 digests
//! are kept in memory, and a presented key is compared against every digest in constant time.
//!
//! Callers send `Authorization: Bearer <key>` or `X-API-Key: <key>`. No key, or an unknown one: 401. A known key
//! without the route's scope: 403. Health, readiness, metrics and the API documents stay open.

use std::fmt;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::HttpError;
use crate::EnvReader;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// `POST /event`, `POST /api/logs` on herald-ingest.
    Ingest,
    /// The read routes: herald-query, `GET /api/dead-letters` on herald-replay.
    Read,
    /// `POST /replay-dead-letter` on herald-replay.
    Admin,
}

impl Scope {
    pub const ALL: &'static [Scope] = &[Scope::Ingest, Scope::Read, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Ingest => "ingest",
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Scope {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        Scope::ALL
            .iter()
            .copied()
            .find(|s| s.as_str() == raw.trim())
            .ok_or_else(|| format!("unknown scope '{raw}', expected ingest, read or admin"))
    }
}

/// One configured key: its name (for logs and rate limits), its scopes and the SHA-256 of its secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    name: String,
    scopes: Vec<Scope>,
    digest: [u8; 32],
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("name", &self.name)
            .field("scopes", &self.scopes)
            .field("digest", &"<redacted>")
            .finish()
    }
}

impl ApiKey {
    /// Parses `name:scope+scope:secret`; the secret is the key or `sha256:<64 hex digits>`.
    pub fn parse(entry: &str) -> Result<Self, String> {
        let mut parts = entry.trim().splitn(3, ':');
        let (Some(name), Some(scopes), Some(secret)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err("expected name:scope+scope:secret".into());
        };
        let name = name.trim();
        if name.is_empty() {
            return Err("the key has no name".into());
        }
        let scopes = scopes
            .split('+')
            .map(str::parse)
            .collect::<Result<Vec<Scope>, _>>()
            .map_err(|e| format!("key '{name}': {e}"))?;
        let secret = secret.trim();
        let digest = match secret.strip_prefix("sha256:") {
            Some(hex_digest) => {
                let bytes = hex::decode(hex_digest).map_err(|_| {
                    format!("key '{name}': sha256: must be followed by 64 hex digits")
                })?;
                <[u8; 32]>::try_from(bytes).map_err(|_| {
                    format!("key '{name}': sha256: must be followed by 64 hex digits")
                })?
            }
            None if secret.len() < 16 => {
                return Err(format!(
                    "key '{name}': a key must be at least 16 characters long"
                ))
            }
            None => digest(secret),
        };
        Ok(Self {
            name: name.to_owned(),
            scopes,
            digest,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }
}

fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Who made a request, put in the request's extensions by the auth middleware (for rate limits and logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller(pub String);

impl Caller {
    /// The caller of a service whose authentication is off.
    pub fn anonymous() -> Self {
        Self("anonymous".into())
    }
}

/// Whether keys are checked, and the keys.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// `HERALD_AUTH`: `on` or `off`. Default `on`; the dev stack turns it off. A service with auth off logs a
    /// warning at startup.
    pub enabled: bool,
    /// `HERALD_API_KEYS` and `HERALD_API_KEYS_FILE`.
    pub keys: Vec<ApiKey>,
}

impl AuthConfig {
    /// Authentication off: every request is let through as [`Caller::anonymous`]. For tests and demos.
    pub fn off() -> Self {
        Self::default()
    }

    /// Authentication on with the given keys.
    pub fn with_keys(keys: Vec<ApiKey>) -> Self {
        Self {
            enabled: true,
            keys,
        }
    }

    /// Reads `HERALD_AUTH`, `HERALD_API_KEYS` and `HERALD_API_KEYS_FILE`, recording every problem in `env`.
    pub fn read(env: &mut EnvReader) -> Self {
        let enabled = match env
            .string("HERALD_AUTH", "on")
            .to_ascii_lowercase()
            .as_str()
        {
            "on" | "true" | "1" => true,
            "off" | "false" | "0" => false,
            other => {
                env.problem("HERALD_AUTH", format!("must be on or off, not '{other}'"));
                true
            }
        };
        let mut keys = Vec::new();
        if let Some(list) = env.optional_string("HERALD_API_KEYS") {
            for entry in list.split(',').filter(|e| !e.trim().is_empty()) {
                match ApiKey::parse(entry) {
                    Ok(key) => keys.push(key),
                    Err(e) => env.problem("HERALD_API_KEYS", e),
                }
            }
        }
        if let Some(path) = env.optional_string("HERALD_API_KEYS_FILE") {
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    for (n, line) in text.lines().enumerate() {
                        let line = line.trim();
                        if line.is_empty() || line.starts_with('#') {
                            continue;
                        }
                        match ApiKey::parse(line) {
                            Ok(key) => keys.push(key),
                            Err(e) => env.problem(
                                "HERALD_API_KEYS_FILE",
                                format!("{path} line {}: {e}", n + 1),
                            ),
                        }
                    }
                }
                Err(e) => env.problem("HERALD_API_KEYS_FILE", format!("cannot read {path}: {e}")),
            }
        }
        let mut names: Vec<&str> = keys.iter().map(ApiKey::name).collect();
        names.sort_unstable();
        if let Some(pair) = names.windows(2).find(|pair| pair[0] == pair[1]) {
            env.problem(
                "HERALD_API_KEYS",
                format!("the key name '{}' is used twice", pair[0]),
            );
        }
        if enabled && keys.is_empty() {
            env.problem(
                "HERALD_API_KEYS",
                "authentication is on but no key is configured: set HERALD_API_KEYS or HERALD_API_KEYS_FILE, \
                 or HERALD_AUTH=off for a local demo",
            );
        }
        Self { enabled, keys }
    }

    /// The key a request presents, if it is one of ours. Every digest is compared, in constant time.
    pub fn authenticate(&self, presented: &str) -> Option<&ApiKey> {
        let presented = digest(presented);
        let mut found = None;
        for key in &self.keys {
            if bool::from(key.digest.ct_eq(&presented)) {
                found = Some(key);
            }
        }
        found
    }

    /// Logs a warning when authentication is off; call once at startup.
    pub fn warn_if_off(&self, service: &str) {
        if !self.enabled {
            tracing::warn!(
                service,
                "authentication is OFF (HERALD_AUTH=off): anyone who can reach this port can use it"
            );
        }
    }
}

/// The key a request presents: `Authorization: Bearer <key>` or `X-API-Key: <key>`.
fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(value) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        if let Some(key) = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
        {
            return Some(key.trim());
        }
    }
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// The state of [`require`]: the keys and the scope the routes need.
#[derive(Debug, Clone)]
pub struct Required {
    pub auth: Arc<AuthConfig>,
    pub scope: Scope,
}

/// Middleware: lets a request through only with a key holding the scope, and records the caller.
///
/// Use with `axum::middleware::from_fn_with_state(Required { .. }, require)` as a `route_layer` on the routes that
/// need it.
pub async fn require(
    State(required): State<Required>,
    mut request: Request,
    next: Next,
) -> Response {
    let caller = if required.auth.enabled {
        let Some(presented) = presented_key(request.headers()) else {
            return HttpError::Unauthorized { presented: false }.into_response();
        };
        let Some(key) = required.auth.authenticate(presented) else {
            return HttpError::Unauthorized { presented: true }.into_response();
        };
        if !key.has(required.scope) {
            return HttpError::Forbidden {
                needed: required.scope,
            }
            .into_response();
        }
        Caller(key.name().to_owned())
    } else {
        Caller::anonymous()
    };
    tracing::Span::current().record("caller", caller.0.as_str());
    request.extensions_mut().insert(caller);
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(vars: &[(&str, &str)]) -> Result<AuthConfig, crate::ConfigError> {
        let mut env = EnvReader::from_pairs(vars);
        let config = AuthConfig::read(&mut env);
        env.finish().map(|()| config)
    }

    #[test]
    fn keys_are_parsed_hashed_and_matched() {
        let hashed = hex::encode(digest("reader-key-0123456789"));
        let config = read(&[(
            "HERALD_API_KEYS",
            &format!("svc:ingest+read:plain-key-0123456789, ops:read:sha256:{hashed}"),
        )])
        .expect("valid");
        assert!(config.enabled);
        let svc = config.authenticate("plain-key-0123456789").expect("known");
        assert_eq!(svc.name(), "svc");
        assert!(svc.has(Scope::Ingest) && svc.has(Scope::Read) && !svc.has(Scope::Admin));
        let ops = config.authenticate("reader-key-0123456789").expect("known");
        assert_eq!(ops.name(), "ops");
        assert!(config.authenticate("plain-key-012345678").is_none());
        assert!(!format!("{config:?}").contains(&hashed));
    }

    #[test]
    fn bad_configurations_are_reported() {
        let e = read(&[]).expect_err("on without keys").to_string();
        assert!(e.contains("HERALD_API_KEYS"), "{e}");
        assert!(read(&[("HERALD_AUTH", "off")]).is_ok());
        let e = read(&[("HERALD_API_KEYS", "a:root:0123456789abcdef")])
            .expect_err("unknown scope")
            .to_string();
        assert!(e.contains("unknown scope"), "{e}");
        let e = read(&[("HERALD_API_KEYS", "a:read:short")])
            .expect_err("short")
            .to_string();
        assert!(e.contains("at least 16"), "{e}");
        let e = read(&[(
            "HERALD_API_KEYS",
            "a:read:0123456789abcdef,a:admin:0123456789abcdeg",
        )])
        .expect_err("duplicate name")
        .to_string();
        assert!(e.contains("used twice"), "{e}");
        let e = read(&[("HERALD_API_KEYS", "a:read:sha256:abcd")])
            .expect_err("short digest")
            .to_string();
        assert!(e.contains("64 hex"), "{e}");
    }

    #[test]
    fn the_key_is_taken_from_either_header() {
        let mut headers = HeaderMap::new();
        assert_eq!(presented_key(&headers), None);
        headers.insert("x-api-key", "k1".parse().expect("header"));
        assert_eq!(presented_key(&headers), Some("k1"));
        headers.insert("authorization", "Bearer k2".parse().expect("header"));
        assert_eq!(presented_key(&headers), Some("k2"));
    }
}
