//! Signing in to the console: the key kept in a session cookie, who is looking ([`Viewer`]), and the checks a
//! form post must pass (its CSRF token and its origin).

use axum::extract::{FromRequestParts, State};
use axum::http::header::{self, HeaderMap};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use herald_platform::http::auth::AuthConfig;
use herald_platform::http::Scope;
use rand::RngCore;
use serde::{Deserialize, Serialize};

use super::{render, ConsoleError, ConsoleState};

/// The cookie holding the signed-in key.
const KEY_COOKIE: &str = "herald_console_key";
/// The cookie holding the session's CSRF token, which every form repeats.
const CSRF_COOKIE: &str = "herald_console_csrf";

/// Who is looking at a console page.
#[derive(Debug, Clone)]
pub struct Viewer {
    /// The key to forward to herald-replay; `None` when authentication is off.
    pub key: Option<String>,
    /// Whether the key may replay (always, when authentication is off).
    pub admin: bool,
    /// The session's CSRF token, for the forms of the page.
    pub csrf: String,
    /// A new CSRF cookie to set (when the session had none).
    new_csrf: bool,
}

impl Viewer {
    /// Adds the CSRF cookie to `response` when the session did not have one yet.
    pub fn finish(&self, response: impl IntoResponse, headers: &HeaderMap) -> Response {
        let mut response = response.into_response();
        if self.new_csrf {
            if let Ok(value) = cookie(CSRF_COOKIE, &self.csrf, headers).parse() {
                response.headers_mut().append(header::SET_COOKIE, value);
            }
        }
        response
    }
}

/// The value of cookie `name` in the request.
fn read_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A session cookie (no expiry: it ends with the browser session) for the console's path only. `Secure` when the
/// request reached us over TLS through a proxy that says so.
fn cookie(name: &str, value: &str, headers: &HeaderMap) -> String {
    let secure = headers
        .get("x-forwarded-proto")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    format!(
        "{name}={value}; Path=/console; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    )
}

fn expired(name: &str) -> String {
    format!("{name}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0")
}

fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Why there is no viewer: the sign-in view is shown instead.
#[derive(Debug)]
pub struct SignInRequired {
    message: Option<&'static str>,
    status: StatusCode,
    had_key: bool,
    next: String,
}

impl IntoResponse for SignInRequired {
    fn into_response(self) -> Response {
        let page = sign_in_page(self.message, &self.next);
        let mut response = (self.status, page).into_response();
        if self.had_key {
            // A key that no longer works is forgotten, so the next visit asks again.
            if let Ok(value) = expired(KEY_COOKIE).parse() {
                response.headers_mut().append(header::SET_COOKIE, value);
            }
        }
        response
    }
}

#[derive(Serialize)]
struct SignInView<'a> {
    title: &'static str,
    message: Option<&'a str>,
    next: &'a str,
    signed_in: bool,
}

fn sign_in_page(message: Option<&str>, next: &str) -> Response {
    render(
        "sign_in.html",
        SignInView {
            title: "Sign in",
            message,
            next,
            signed_in: false,
        },
    )
    .into_response()
}

/// Only paths of the console may be returned to after signing in.
fn safe_next(next: &str) -> &str {
    if next.starts_with("/console") && !next.starts_with("//") && !next.contains('\\') {
        next
    } else {
        "/console"
    }
}

impl FromRequestParts<ConsoleState> for Viewer {
    type Rejection = SignInRequired;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ConsoleState,
    ) -> Result<Self, Self::Rejection> {
        let headers = &parts.headers;
        let (csrf, new_csrf) = match read_cookie(headers, CSRF_COOKIE) {
            Some(token) if token.len() == 64 => (token.to_owned(), false),
            _ => (new_token(), true),
        };
        if !state.auth.enabled {
            return Ok(Viewer {
                key: None,
                admin: true,
                csrf,
                new_csrf,
            });
        }
        let next = parts
            .uri
            .path_and_query()
            .map_or("/console", |p| p.as_str())
            .to_owned();
        let key = read_cookie(headers, KEY_COOKIE).and_then(|k| hex::decode(k).ok());
        let Some(key) = key.and_then(|k| String::from_utf8(k).ok()) else {
            return Err(SignInRequired {
                message: None,
                status: StatusCode::UNAUTHORIZED,
                had_key: false,
                next,
            });
        };
        match check(&state.auth, &key) {
            Ok(admin) => Ok(Viewer {
                key: Some(key),
                admin,
                csrf,
                new_csrf,
            }),
            Err((status, message)) => Err(SignInRequired {
                message: Some(message),
                status,
                had_key: true,
                next,
            }),
        }
    }
}

/// Whether `key` may look (and whether it may replay), or why not.
fn check(auth: &AuthConfig, key: &str) -> Result<bool, (StatusCode, &'static str)> {
    match auth.authenticate(key) {
        None => Err((
            StatusCode::UNAUTHORIZED,
            "That key was not accepted. Enter a key with the read scope.",
        )),
        Some(found) if !found.has(Scope::Read) => Err((
            StatusCode::FORBIDDEN,
            "That key lacks the read scope. Enter a key with the read scope.",
        )),
        Some(found) => Ok(found.has(Scope::Admin)),
    }
}

/// A form post must come from a page of this console: its `Origin` (or, without one, `Sec-Fetch-Site`) says it
/// does, and it repeats the session's CSRF token.
pub fn check_post(headers: &HeaderMap, csrf: Option<&str>) -> Result<(), ConsoleError> {
    same_origin(headers)?;
    let expected = read_cookie(headers, CSRF_COOKIE).ok_or(ConsoleError::CrossSite)?;
    match csrf {
        Some(given) if !given.is_empty() && given == expected => Ok(()),
        _ => Err(ConsoleError::CrossSite),
    }
}

/// The request's `Origin` names this host, or, when a browser sends none, `Sec-Fetch-Site` is not cross-site.
fn same_origin(headers: &HeaderMap) -> Result<(), ConsoleError> {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().ok().and_then(|o| url::Url::parse(o).ok());
        let origin_host = origin.as_ref().and_then(|o| {
            o.host_str().map(|h| match o.port() {
                Some(port) => format!("{h}:{port}"),
                None => h.to_owned(),
            })
        });
        return match (origin_host, host) {
            (Some(origin), Some(host)) if origin == host => Ok(()),
            _ => Err(ConsoleError::CrossSite),
        };
    }
    match headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        Some("same-origin") | Some("none") | None => Ok(()),
        Some(_) => Err(ConsoleError::CrossSite),
    }
}

#[derive(Debug, Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

/// `GET /console/sign-in`.
pub async fn sign_in_form(
    axum::extract::Query(query): axum::extract::Query<NextQuery>,
) -> Response {
    sign_in_page(None, safe_next(query.next.as_deref().unwrap_or("/console")))
}

#[derive(Debug, Deserialize)]
pub struct SignInForm {
    key: String,
    next: Option<String>,
}

/// `POST /console/sign-in`: a good key is kept for the session and the browser goes where it was going; a wrong
/// one gets the sign-in view again, saying so.
pub async fn sign_in(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    Form(form): Form<SignInForm>,
) -> Result<Response, ConsoleError> {
    same_origin(&headers)?;
    let next = safe_next(form.next.as_deref().unwrap_or("/console")).to_owned();
    let key = form.key.trim();
    if state.auth.enabled {
        if let Err((status, message)) = check(&state.auth, key) {
            return Ok((status, sign_in_page(Some(message), &next)).into_response());
        }
    }
    let mut response = Redirect::to(&next).into_response();
    let cookies = [
        // Hex, so that any key is a valid cookie value.
        cookie(KEY_COOKIE, &hex::encode(key), &headers),
        cookie(CSRF_COOKIE, &new_token(), &headers),
    ];
    for value in cookies {
        if let Ok(value) = value.parse() {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    Ok(response)
}

#[derive(Debug, Deserialize)]
pub struct SignOutForm {
    csrf: Option<String>,
}

/// `POST /console/sign-out`: forgets the key.
pub async fn sign_out(
    headers: HeaderMap,
    Form(form): Form<SignOutForm>,
) -> Result<Response, ConsoleError> {
    check_post(&headers, form.csrf.as_deref())?;
    let mut response = Redirect::to("/console/sign-in").into_response();
    for name in [KEY_COOKIE, CSRF_COOKIE] {
        if let Ok(value) = expired(name).parse() {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn a_post_needs_this_origin_and_the_session_token() {
        let token = "a".repeat(64);
        let cookie: &'static str = Box::leak(format!("{CSRF_COOKIE}={token}").into_boxed_str());
        let ok = headers(&[
            ("host", "127.0.0.1:3001"),
            ("origin", "http://127.0.0.1:3001"),
            ("cookie", cookie),
        ]);
        assert!(check_post(&ok, Some(&token)).is_ok());
        assert!(check_post(&ok, Some("b")).is_err(), "wrong token");
        assert!(check_post(&ok, None).is_err(), "no token");
        let elsewhere = headers(&[
            ("host", "127.0.0.1:3001"),
            ("origin", "http://evil.test"),
            ("cookie", cookie),
        ]);
        assert!(
            check_post(&elsewhere, Some(&token)).is_err(),
            "another origin"
        );
        let cross = headers(&[
            ("host", "127.0.0.1:3001"),
            ("sec-fetch-site", "cross-site"),
            ("cookie", cookie),
        ]);
        assert!(
            check_post(&cross, Some(&token)).is_err(),
            "cross-site without an origin"
        );
    }

    #[test]
    fn only_console_paths_are_returned_to() {
        assert_eq!(
            safe_next("/console/events?status=QUEUED"),
            "/console/events?status=QUEUED"
        );
        assert_eq!(safe_next("https://evil.test/console"), "/console");
        assert_eq!(safe_next("//evil.test"), "/console");
    }
}
