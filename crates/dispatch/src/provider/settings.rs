//! What the providers' settings share: secrets kept out of logs, the real-or-sandbox choice, named extra
//! providers and the readers of their variables.

use std::fmt;

use herald_domain::provider as names;
use herald_domain::Channel;
use herald_platform::EnvReader;
use url::Url;

/// A value that must never reach a log: `Debug` shows `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Which implementation serves a channel: the real one (SMTP, the SMS API, HTTP webhooks) or the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Real,
    Sandbox,
}

/// A provider beyond a channel's configured one, reachable by its name from retry rules (`providers = [..]`).
#[derive(Debug, Clone)]
pub struct NamedProvider<C> {
    /// Its name, as listed in `HERALD_EMAIL_PROVIDERS` / `HERALD_SMS_PROVIDERS`, recorded in each attempt.
    pub name: String,
    pub config: C,
}

/// Reads a channel's `HERALD_<CHANNEL>_PROVIDER`: one of `real` (the comma-separated names of the real
/// implementations) or `sandbox`.
pub(crate) fn backend(env: &mut EnvReader, key: &str, real: &str, default: Backend) -> Backend {
    match env.raw(key).map(str::to_ascii_lowercase) {
        None => default,
        Some(raw) if real.split(", ").any(|name| name == raw) => Backend::Real,
        Some(raw) if raw == "sandbox" => Backend::Sandbox,
        Some(raw) => {
            env.problem(
                key,
                format!("'{raw}' is not valid: expected {real} or sandbox"),
            );
            default
        }
    }
}

/// The names listed in a channel's `HERALD_<CHANNEL>_PROVIDERS`, each problem recorded.
pub(crate) fn read_extra_names(env: &mut EnvReader, channel: Channel) -> Vec<String> {
    let Some(key) = names::extras_variable(channel) else {
        return Vec::new();
    };
    match env.raw(key).map(|raw| names::parse_names(channel, raw)) {
        None => Vec::new(),
        Some(Ok(names)) => names,
        Some(Err(problems)) => {
            for problem in problems {
                env.problem(key, problem);
            }
            Vec::new()
        }
    }
}

/// A required per-provider variable; its absence is recorded as a problem naming the provider.
pub(crate) fn required(env: &mut EnvReader, key: &str, list: &str, name: &str) -> Option<String> {
    let value = env.optional_string(key);
    if value.is_none() {
        env.problem(
            key,
            format!("is required for the provider '{name}' of {list}"),
        );
    }
    value
}

/// An http(s) URL, or a problem.
/// [`read_url`], or `default` when the variable is unset: the base URL of a provider's API.
pub(crate) fn read_url_or(env: &mut EnvReader, key: &str, default: &str) -> Option<Url> {
    read_url(env, key).or_else(|| Url::parse(default).ok())
}

pub(crate) fn read_url(env: &mut EnvReader, key: &str) -> Option<Url> {
    let raw = env.optional_string(key)?;
    match Url::parse(&raw) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => Some(url),
        Ok(_) => {
            env.problem(key, "must be an http:// or https:// URL");
            None
        }
        Err(e) => {
            env.problem(key, format!("'{raw}' is not a URL: {e}"));
            None
        }
    }
}
