//! What the run page asks GitHub for a person, with the person's own user-to-server token:
//! the code exchange and refresh of the App's OAuth web flow, who they are (`GET /user`), and
//! whether they can read or push to a hub repository (`GET /repos/{o}/{r}`: 404 when GitHub
//! will not show it to them), cached for a few minutes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use url::Url;

use crate::config::OAuthClient;
use crate::github::ApiVersion;
use crate::hub::RepoName;

/// How long GitHub's answer about a person and a repository is trusted.
pub const ACCESS_TTL: Duration = Duration::from_secs(180);
/// Entries kept before the cache starts over (bounded memory whatever the traffic).
const ACCESS_CACHE_MAX: usize = 50_000;
/// How long one request to GitHub may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What a person may do with a hub repository's runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    /// GitHub does not show them the repository: its runs answer 404.
    None,
    /// They see its runs.
    Read,
    /// They may also cancel and re-run (push access).
    Write,
}

#[derive(Debug, thiserror::Error)]
pub enum WebGitHubError {
    /// GitHub refused the code or refresh token (its `error`, never a token).
    #[error("GitHub refused the sign-in: {0}")]
    Refused(String),
    /// The person's token is no longer valid: they sign in again.
    #[error("the GitHub token is no longer valid")]
    SignedOut,
    #[error("GitHub did not answer: {0}")]
    Unavailable(String),
}

/// Tokens from the code exchange or a refresh (sealed when shared between replicas).
#[derive(serde::Serialize, Deserialize)]
pub struct UserTokens {
    pub access_token: String,
    /// Unix seconds.
    pub expires_at: i64,
    pub refresh_token: Option<String>,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: Option<String>,
    expires_in: Option<i64>,
    refresh_token: Option<String>,
    error: Option<String>,
}

#[derive(Deserialize)]
struct UserAnswer {
    login: String,
    id: u64,
}

#[derive(Deserialize, Default)]
struct Permissions {
    #[serde(default)]
    admin: bool,
    #[serde(default)]
    maintain: bool,
    #[serde(default)]
    push: bool,
}

#[derive(Deserialize)]
struct RepoAnswer {
    #[serde(default)]
    permissions: Option<Permissions>,
}

pub struct GitHubWeb {
    http: reqwest::Client,
    api: Url,
    web: Url,
    client_id: String,
    client_secret: SecretString,
    api_version: ApiVersion,
    cache: Mutex<HashMap<(u64, String), (Access, Instant)>>,
}

fn unavailable(e: impl std::fmt::Display) -> WebGitHubError {
    WebGitHubError::Unavailable(e.to_string())
}

impl GitHubWeb {
    pub fn new(oauth: &OAuthClient, api: Url, web: Url, api_version: ApiVersion) -> Self {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .user_agent("spokehub")
            .build()
            .expect("an HTTP client");
        GitHubWeb {
            http,
            api,
            web,
            client_id: oauth.client_id.clone(),
            client_secret: oauth.client_secret.clone(),
            api_version,
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// Where a person is sent to sign in.
    pub fn authorize_url(&self, redirect_uri: &str, state: &str) -> Url {
        let mut u = self.web.clone();
        u.set_path(&format!(
            "{}/login/oauth/authorize",
            self.web.path().trim_end_matches('/')
        ));
        u.query_pairs_mut()
            .append_pair("client_id", &self.client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("state", state);
        u
    }

    fn api_url(&self, path: &str) -> String {
        format!("{}{path}", self.api.as_str().trim_end_matches('/'))
    }

    async fn token(&self, form: &[(&str, &str)]) -> Result<UserTokens, WebGitHubError> {
        let url = format!(
            "{}/login/oauth/access_token",
            self.web.as_str().trim_end_matches('/')
        );
        let mut all = vec![
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.client_secret.expose_secret()),
        ];
        all.extend_from_slice(form);
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(all)
            .finish();
        let resp = self
            .http
            .post(url)
            .header("accept", "application/json")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(unavailable)?;
        if !resp.status().is_success() {
            return Err(unavailable(format!("token endpoint: {}", resp.status())));
        }
        let a: TokenAnswer = resp.json().await.map_err(unavailable)?;
        match (a.access_token, a.error) {
            (Some(access_token), None) => Ok(UserTokens {
                access_token,
                // A token without expiry (expiration turned off for the App) lasts 8 hours
                // here, then is refreshed or the person signs in again.
                expires_at: crate::store::now_ms() / 1000 + a.expires_in.unwrap_or(28_800),
                refresh_token: a.refresh_token,
            }),
            (_, Some(e)) => Err(WebGitHubError::Refused(e)),
            (None, None) => Err(WebGitHubError::Refused("no access token".into())),
        }
    }

    /// The OAuth code exchange.
    pub async fn exchange_code(
        &self,
        code: &str,
        redirect_uri: &str,
    ) -> Result<UserTokens, WebGitHubError> {
        self.token(&[("code", code), ("redirect_uri", redirect_uri)])
            .await
    }

    /// A new access token for a refresh token.
    pub async fn refresh(&self, refresh_token: &str) -> Result<UserTokens, WebGitHubError> {
        self.token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ])
        .await
    }

    fn get(&self, token: &str, path: &str) -> reqwest::RequestBuilder {
        self.http
            .get(self.api_url(path))
            .bearer_auth(token)
            .header("accept", "application/vnd.github+json")
            .header("x-github-api-version", self.api_version.as_str())
    }

    /// Who the token's person is: (login, id).
    pub async fn user(&self, token: &str) -> Result<(String, u64), WebGitHubError> {
        let resp = self.get(token, "/user").send().await.map_err(unavailable)?;
        match resp.status().as_u16() {
            200 => {
                let u: UserAnswer = resp.json().await.map_err(unavailable)?;
                Ok((u.login, u.id))
            }
            401 => Err(WebGitHubError::SignedOut),
            s => Err(unavailable(format!("GET /user: {s}"))),
        }
    }

    /// What person `user_id` (with `token`) may do with `repo`, from the cache when GitHub
    /// answered within [`ACCESS_TTL`].
    pub async fn access(
        &self,
        user_id: u64,
        token: &str,
        repo: &RepoName,
    ) -> Result<Access, WebGitHubError> {
        let key = (user_id, repo.as_str().to_ascii_lowercase());
        if let Some((a, at)) = self.cache_lock().get(&key) {
            if at.elapsed() < ACCESS_TTL {
                return Ok(*a);
            }
        }
        let path = format!("/repos/{}", repo.as_str());
        let resp = self.get(token, &path).send().await.map_err(unavailable)?;
        let access = match resp.status().as_u16() {
            200 => {
                let r: RepoAnswer = resp.json().await.map_err(unavailable)?;
                let p = r.permissions.unwrap_or_default();
                if p.push || p.maintain || p.admin {
                    Access::Write
                } else {
                    Access::Read
                }
            }
            // A rate limit is not an answer about the person: try again later.
            403 if resp
                .headers()
                .get("x-ratelimit-remaining")
                .is_some_and(|v| v == "0")
                || resp.headers().contains_key("retry-after") =>
            {
                return Err(unavailable("GitHub's rate limit for the person's token"));
            }
            // Not cached: a 403 (SSO not authorized, say) may change within minutes.
            403 => return Ok(Access::None),
            404 => Access::None,
            401 => return Err(WebGitHubError::SignedOut),
            s => return Err(unavailable(format!("GET /repos/…: {s}"))),
        };
        let mut cache = self.cache_lock();
        if cache.len() >= ACCESS_CACHE_MAX {
            cache.clear();
        }
        cache.insert(key, (access, Instant::now()));
        Ok(access)
    }

    /// Forgets what GitHub said about a person (they signed out).
    pub fn forget(&self, user_id: u64) {
        self.cache_lock().retain(|(u, _), _| *u != user_id);
    }

    fn cache_lock(&self) -> std::sync::MutexGuard<'_, HashMap<(u64, String), (Access, Instant)>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}
