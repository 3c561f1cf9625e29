//! "Sign in with GitHub": the App's user-to-server OAuth web flow as github.com plays it.
//!
//! - `GET /login/oauth/authorize?client_id&redirect_uri&state` shows who may sign in (the
//!   scenario's `[[users]]`, one button each; `&login=NAME` signs that person in at once, as
//!   GitHub does for someone who already authorized the App); the choice redirects to
//!   `redirect_uri?code&state`.
//! - `POST /login/oauth/access_token` exchanges a code (once, within 10 minutes) or a refresh
//!   token for `ghu_` and `ghr_` tokens; failures answer 200 with `error`, as GitHub does.
//! - With a user token, `GET /user` names the person and `GET /repos/{o}/{r}` answers only
//!   for repositories the person can read, with their `permissions`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::{Extension, Json};
use rand::distributions::Alphanumeric;
use rand::Rng;
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use serde_json::json;

use super::http::{ApiError, ApiResult};
use super::scenario::{Scenario, UserConfig};
use super::server::Shared;
use crate::web::pages::esc;

/// How long an authorization code may wait for its exchange (GitHub: 10 minutes).
const CODE_TTL: Duration = Duration::from_secs(600);
/// Lifetime of a refresh token (GitHub: 6 months).
const REFRESH_TTL: Duration = Duration::from_secs(15_897_600);

/// The person a user-to-server token acts for (a request extension on API routes).
#[derive(Debug, Clone)]
pub struct SignedInUser(pub Arc<UserConfig>);

struct Code {
    login: String,
    redirect_uri: String,
    expires: Instant,
}

struct Grant {
    login: String,
    expires: Instant,
}

/// The App's OAuth client and what it has handed out.
pub struct OAuthStore {
    pub client_id: String,
    client_secret: SecretString,
    token_ttl: Duration,
    users: Vec<Arc<UserConfig>>,
    /// The App's registered callback URLs (none: any).
    callbacks: Mutex<Vec<url::Url>>,
    inner: Mutex<Grants>,
}

#[derive(Default)]
struct Grants {
    codes: HashMap<String, Code>,
    access: HashMap<String, Grant>,
    refresh: HashMap<String, Grant>,
}

fn random(prefix: &str, len: usize) -> String {
    let tail: String = rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect();
    format!("{prefix}{tail}")
}

impl OAuthStore {
    pub fn new(sc: &Scenario) -> OAuthStore {
        OAuthStore {
            client_id: sc
                .oauth
                .client_id
                .clone()
                .unwrap_or_else(|| format!("Iv1.{}", sc.app.slug)),
            client_secret: sc
                .oauth
                .client_secret
                .clone()
                .unwrap_or_else(|| SecretString::from(hex::encode(rand::random::<[u8; 20]>()))),
            token_ttl: Duration::from_secs(sc.oauth.token_ttl_s),
            users: sc.users.iter().cloned().map(Arc::new).collect(),
            callbacks: Mutex::new(
                sc.oauth
                    .callback_urls
                    .iter()
                    .filter_map(|u| url::Url::parse(u).ok())
                    .collect(),
            ),
            inner: Mutex::new(Grants::default()),
        }
    }

    /// Registers callback URLs (an App manifest's `callback_urls`).
    pub fn register_callbacks(&self, urls: impl IntoIterator<Item = url::Url>) {
        self.callbacks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(urls);
    }

    /// GitHub's rule: the redirect URI has a registered callback URL's scheme, host and port,
    /// and its path is that URL's path or below it.
    fn redirect_allowed(&self, uri: &url::Url) -> bool {
        let callbacks = self.callbacks.lock().unwrap_or_else(|p| p.into_inner());
        callbacks.is_empty()
            || callbacks.iter().any(|c| {
                let base = c.path().trim_end_matches('/');
                c.scheme() == uri.scheme()
                    && c.host_str() == uri.host_str()
                    && c.port_or_known_default() == uri.port_or_known_default()
                    && (uri.path() == c.path()
                        || uri.path().trim_end_matches('/') == base
                        || uri.path().starts_with(&format!("{base}/")))
            })
    }

    pub fn client_secret(&self) -> &str {
        self.client_secret.expose_secret()
    }

    fn grants(&self) -> std::sync::MutexGuard<'_, Grants> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn user(&self, login: &str) -> Option<&Arc<UserConfig>> {
        self.users
            .iter()
            .find(|u| u.login.eq_ignore_ascii_case(login))
    }

    /// The person a live user-to-server token acts for.
    pub fn user_of(&self, token: &str) -> Option<SignedInUser> {
        if !token.starts_with("ghu_") {
            return None;
        }
        let login = {
            let g = self.grants();
            let grant = g.access.get(token)?;
            (grant.expires > Instant::now()).then(|| grant.login.clone())?
        };
        self.user(&login).cloned().map(SignedInUser)
    }

    /// Ends the life of every access token now (refresh tokens keep working): what a test
    /// needs to see a hub refresh.
    pub fn expire_access_tokens(&self) -> usize {
        let mut g = self.grants();
        let now = Instant::now();
        for grant in g.access.values_mut() {
            grant.expires = now;
        }
        g.access.len()
    }

    fn issue(&self, g: &mut Grants, login: &str) -> serde_json::Value {
        let access = random("ghu_", 36);
        let refresh = random("ghr_", 76);
        let now = Instant::now();
        g.access.insert(
            access.clone(),
            Grant {
                login: login.to_owned(),
                expires: now + self.token_ttl,
            },
        );
        g.refresh.insert(
            refresh.clone(),
            Grant {
                login: login.to_owned(),
                expires: now + REFRESH_TTL,
            },
        );
        json!({
            "access_token": access,
            "expires_in": self.token_ttl.as_secs(),
            "refresh_token": refresh,
            "refresh_token_expires_in": REFRESH_TTL.as_secs(),
            "scope": "",
            "token_type": "bearer",
        })
    }
}

type S = State<Arc<Shared>>;

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    (
        status,
        Html(format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title></head>\
             <body><h1>{title}</h1>{body}</body></html>"
        )),
    )
        .into_response()
}

#[derive(Deserialize)]
pub struct AuthorizeQuery {
    client_id: Option<String>,
    redirect_uri: Option<String>,
    #[serde(default)]
    state: String,
    /// The person who signs in (instead of choosing on the page).
    login: Option<String>,
}

/// Checks an authorize request; the redirect URI when it holds.
fn check_authorize(sh: &Shared, q: &AuthorizeQuery) -> Result<url::Url, Box<Response>> {
    if q.client_id.as_deref() != Some(sh.oauth.client_id.as_str()) {
        return Err(Box::new(page(
            StatusCode::NOT_FOUND,
            "Page not found",
            "<p>No App has this client ID.</p>",
        )));
    }
    q.redirect_uri
        .as_deref()
        .and_then(|u| url::Url::parse(u).ok())
        .filter(|u| matches!(u.scheme(), "http" | "https") && sh.oauth.redirect_allowed(u))
        .ok_or_else(|| {
            Box::new(page(
                StatusCode::BAD_REQUEST,
                "Redirect URI mismatch",
                "<p>The redirect_uri is not associated with this application.</p>",
            ))
        })
}

/// `GET /login/oauth/authorize`
pub async fn authorize(State(sh): S, Query(q): Query<AuthorizeQuery>) -> Response {
    let redirect = match check_authorize(&sh, &q) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    if let Some(login) = &q.login {
        return approve(&sh, login, redirect, &q.state);
    }
    let mut buttons = String::new();
    for u in &sh.oauth.users {
        buttons.push_str(&format!(
            "<form method=\"post\" action=\"/login/oauth/authorize\">\
             <input type=\"hidden\" name=\"client_id\" value=\"{}\">\
             <input type=\"hidden\" name=\"redirect_uri\" value=\"{}\">\
             <input type=\"hidden\" name=\"state\" value=\"{}\">\
             <input type=\"hidden\" name=\"login\" value=\"{}\">\
             <button type=\"submit\" id=\"sign-in-as-{}\">Authorize as {}</button></form>",
            esc(&sh.oauth.client_id),
            esc(redirect.as_str()),
            esc(&q.state),
            esc(&u.login),
            esc(&u.login),
            esc(&u.login),
        ));
    }
    page(
        StatusCode::OK,
        &format!("Authorize {}", esc(&sh.ctx.app_slug)),
        &format!(
            "<p>{} would like to know who you are. Sign in as:</p>{buttons}",
            esc(&sh.ctx.app_slug)
        ),
    )
}

/// `POST /login/oauth/authorize`: the person's choice on the page.
pub async fn authorize_post(State(sh): S, axum::Form(q): axum::Form<AuthorizeQuery>) -> Response {
    let redirect = match check_authorize(&sh, &q) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    let Some(login) = &q.login else {
        return page(StatusCode::BAD_REQUEST, "No one chose", "");
    };
    approve(&sh, login, redirect, &q.state)
}

fn approve(sh: &Shared, login: &str, mut redirect: url::Url, state: &str) -> Response {
    let Some(user) = sh.oauth.user(login) else {
        return page(
            StatusCode::NOT_FOUND,
            "No such person",
            "<p>The scenario has no such user.</p>",
        );
    };
    let code = hex::encode(rand::random::<[u8; 10]>());
    sh.oauth.grants().codes.insert(
        code.clone(),
        Code {
            login: user.login.clone(),
            redirect_uri: redirect.to_string(),
            expires: Instant::now() + CODE_TTL,
        },
    );
    redirect
        .query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", state);
    (
        StatusCode::FOUND,
        [(header::LOCATION, redirect.to_string())],
    )
        .into_response()
}

#[derive(Deserialize, Default)]
pub struct TokenRequest {
    client_id: Option<String>,
    client_secret: Option<String>,
    code: Option<String>,
    redirect_uri: Option<String>,
    grant_type: Option<String>,
    refresh_token: Option<String>,
}

/// GitHub's answer to a failed exchange: 200 with `error`.
fn oauth_error(error: &str, description: &str) -> serde_json::Value {
    json!({
        "error": error,
        "error_description": description,
        "error_uri": "https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors",
    })
}

fn exchange(sh: &Shared, r: &TokenRequest) -> serde_json::Value {
    let o = &sh.oauth;
    let secret_ok = r.client_secret.as_deref().is_some_and(|s| {
        subtle::ConstantTimeEq::ct_eq(s.as_bytes(), o.client_secret().as_bytes()).into()
    });
    if r.client_id.as_deref() != Some(o.client_id.as_str()) || !secret_ok {
        return oauth_error(
            "incorrect_client_credentials",
            "The client_id and/or client_secret passed are incorrect.",
        );
    }
    let mut g = o.grants();
    if r.grant_type.as_deref() == Some("refresh_token") {
        let grant = r
            .refresh_token
            .as_deref()
            .and_then(|t| g.refresh.remove(t))
            .filter(|grant| grant.expires > Instant::now());
        return match grant {
            Some(grant) => o.issue(&mut g, &grant.login),
            None => oauth_error(
                "bad_refresh_token",
                "The refresh token passed is incorrect or expired.",
            ),
        };
    }
    let code = r
        .code
        .as_deref()
        .and_then(|c| g.codes.remove(c))
        .filter(|c| c.expires > Instant::now());
    let Some(code) = code else {
        return oauth_error(
            "bad_verification_code",
            "The code passed is incorrect or expired.",
        );
    };
    if r.redirect_uri
        .as_deref()
        .is_some_and(|u| u != code.redirect_uri)
    {
        return oauth_error(
            "redirect_uri_mismatch",
            "The redirect_uri MUST match the registered callback URL for this application.",
        );
    }
    o.issue(&mut g, &code.login)
}

/// `POST /login/oauth/access_token`: form or JSON body; JSON answer when asked for
/// (`Accept: application/json`), else form-encoded, as GitHub does.
pub async fn access_token(State(sh): S, headers: HeaderMap, body: bytes::Bytes) -> Response {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let req: TokenRequest = if is_json {
        serde_json::from_slice(&body).unwrap_or_default()
    } else {
        serde_urlencoded_from(&body)
    };
    let answer = exchange(&sh, &req);
    let wants_json = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"));
    if wants_json {
        return Json(answer).into_response();
    }
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    if let Some(obj) = answer.as_object() {
        for (k, v) in obj {
            let v = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            form.append_pair(k, &v);
        }
    }
    (
        [(header::CONTENT_TYPE, "application/x-www-form-urlencoded")],
        form.finish(),
    )
        .into_response()
}

fn serde_urlencoded_from(body: &[u8]) -> TokenRequest {
    let mut r = TokenRequest::default();
    for (k, v) in url::form_urlencoded::parse(body) {
        let v = Some(v.into_owned());
        match k.as_ref() {
            "client_id" => r.client_id = v,
            "client_secret" => r.client_secret = v,
            "code" => r.code = v,
            "redirect_uri" => r.redirect_uri = v,
            "grant_type" => r.grant_type = v,
            "refresh_token" => r.refresh_token = v,
            _ => {}
        }
    }
    r
}

/// Stable id of a person.
pub fn user_id(login: &str) -> u64 {
    5_000_000
        + login
            .to_ascii_lowercase()
            .bytes()
            .fold(0u64, |a, b| a.wrapping_mul(31).wrapping_add(b as u64))
            % 1_000_000
}

/// `GET /user`: the signed-in person; an installation token gets GitHub's 403.
pub async fn get_user(State(sh): S, user: Option<Extension<SignedInUser>>) -> ApiResult {
    let Some(Extension(SignedInUser(u))) = user else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "Resource not accessible by integration",
        ));
    };
    let mut v = super::json::user(&sh.ctx, &u.login, user_id(&u.login), "User");
    if let Some(m) = v.as_object_mut() {
        m.insert("name".into(), json!(u.login));
    }
    Ok(Json(v).into_response())
}

#[derive(Deserialize)]
pub struct Callbacks {
    urls: Vec<String>,
}

/// `POST /_emulator/oauth/callbacks` `{"urls": [...]}`: registers the App's callback URLs (as
/// its settings page would).
pub async fn register_callbacks(State(sh): S, Json(c): Json<Callbacks>) -> Response {
    let mut parsed = Vec::new();
    for u in &c.urls {
        match url::Url::parse(u) {
            Ok(p) if matches!(p.scheme(), "http" | "https") => parsed.push(p),
            _ => {
                return (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    Json(json!({"message": format!("not an http(s) URL: {u}")})),
                )
                    .into_response()
            }
        }
    }
    sh.oauth.register_callbacks(parsed);
    StatusCode::NO_CONTENT.into_response()
}

/// `POST /_emulator/oauth/expire`: every user access token expires now.
pub async fn expire(State(sh): S) -> Response {
    Json(json!({ "expired": sh.oauth.expire_access_tokens() })).into_response()
}
