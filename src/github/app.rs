//! The GitHub App: configuration, the App-authenticated (JWT) octocrab client, and the cache of
//! one [`InstallationClient`] per installation.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use octocrab::Octocrab;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::OnceCell;
use url::Url;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::client::InstallationClient;
use super::error::{describe, from_status, github_message, ApiError};
use super::governor::GovernorConfig;
use super::send::{next_page_path, Conn, Resend};
use crate::hub::InstallationId;

/// The REST API version the hub asks for (`X-GitHub-Api-Version`, sent on every request).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ApiVersion {
    /// GitHub's default: a dispatch answers 204 unless `return_run_details` is true.
    #[default]
    V2022_11_28,
    /// A dispatch always answers 200 with the run's id; `return_run_details` is not sent.
    V2026_03_10,
}

impl ApiVersion {
    /// The versions the hub knows, oldest first.
    pub const KNOWN: [ApiVersion; 2] = [ApiVersion::V2022_11_28, ApiVersion::V2026_03_10];

    pub fn as_str(self) -> &'static str {
        match self {
            ApiVersion::V2022_11_28 => "2022-11-28",
            ApiVersion::V2026_03_10 => "2026-03-10",
        }
    }
}

impl std::fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A version string that is not one of [`ApiVersion::KNOWN`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown GitHub API version {0:?} (known: 2022-11-28, 2026-03-10)")]
pub struct UnknownApiVersion(pub String);

impl std::str::FromStr for ApiVersion {
    type Err = UnknownApiVersion;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ApiVersion::KNOWN
            .into_iter()
            .find(|v| v.as_str() == s.trim())
            .ok_or_else(|| UnknownApiVersion(s.to_owned()))
    }
}

/// How to reach GitHub as the App.
#[derive(Debug, Clone)]
pub struct GitHubConfig {
    pub app_id: u64,
    /// The App's RSA private key (PEM, PKCS#1 or PKCS#8).
    pub private_key_pem: SecretString,
    /// REST API root: `https://api.github.com`, `https://HOST/api/v3` or an emulator.
    pub api_url: Url,
    /// Bound on one request, connect to last byte (default 30 s).
    pub request_timeout: Duration,
    /// First delay before retrying an idempotent request after a 5xx or transport error
    /// (doubles per try, plus jitter; default 250 ms).
    pub retry_base_delay: Duration,
    /// Tries for idempotent requests, the first included (default 4).
    pub max_attempts: u32,
    /// Rate-limit rejections of one request (each followed by a pause) before it fails with
    /// [`ApiError::RateLimited`] (default 10).
    pub max_rate_limit_rounds: u32,
    /// Per-installation rate governor tuning (concurrency cap, secondary-limit backoff).
    pub governor: GovernorConfig,
    /// The REST API version of every request (default `2022-11-28`).
    pub api_version: ApiVersion,
    /// Rate-limit state shared with the other replicas (the Postgres ledger); none alone.
    pub shared_rate: Option<super::SharedRate>,
    /// Where requests, GitHub's budget and waits are counted.
    pub telemetry: Option<std::sync::Arc<crate::telemetry::Telemetry>>,
}

impl GitHubConfig {
    /// A configuration with the default timeouts and retry policy.
    pub fn new(app_id: u64, private_key_pem: SecretString, api_url: Url) -> Self {
        Self {
            app_id,
            private_key_pem,
            api_url,
            request_timeout: Duration::from_secs(30),
            retry_base_delay: Duration::from_millis(250),
            max_attempts: 4,
            max_rate_limit_rounds: 10,
            governor: GovernorConfig::default(),
            api_version: ApiVersion::default(),
            shared_rate: None,
            telemetry: None,
        }
    }
}

/// Settings shared by the App and all its installation clients.
#[derive(Debug)]
pub(crate) struct Settings {
    pub request_timeout: Duration,
    pub retry_base_delay: Duration,
    pub max_attempts: u32,
    pub max_rate_limit_rounds: u32,
    pub governor: GovernorConfig,
    pub api_version: ApiVersion,
    pub shared_rate: Option<super::SharedRate>,
    pub telemetry: Option<std::sync::Arc<crate::telemetry::Telemetry>>,
    /// Set once the API host answered 400 to `return_run_details` (older GHES); remembered for
    /// this App's API host.
    pub no_run_details: AtomicBool,
}

struct Inner {
    /// Where the API is (named in start-up errors).
    api_url: Url,
    crab: Octocrab,
    /// App-authenticated (JWT) requests, under the same policy as installation requests.
    conn: Conn,
    settings: Arc<Settings>,
    installations: Mutex<HashMap<InstallationId, Arc<OnceCell<InstallationClient>>>>,
}

/// The App. Cheap to clone (an `Arc` inside).
#[derive(Clone)]
pub struct GitHubApp {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for GitHubApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHubApp").finish_non_exhaustive()
    }
}

impl GitHubApp {
    /// Build the App client. A bad PEM gives a clear error that does not contain the key.
    pub fn new(cfg: GitHubConfig) -> Result<Self, ApiError> {
        let key =
            jsonwebtoken::EncodingKey::from_rsa_pem(cfg.private_key_pem.expose_secret().as_bytes())
                .map_err(|_| ApiError::Config {
                    detail: "private key is not a valid RSA private key in PEM format".into(),
                })?;
        if cfg.request_timeout.is_zero() {
            return Err(ApiError::Config {
                detail: "request_timeout must be positive".into(),
            });
        }
        let api_version = http::HeaderName::from_static("x-github-api-version");
        // octocrab's own retry layer is not compiled in (feature "retry" off), so nothing is
        // resent behind our back; the policy lives in `send`.
        let crab = Octocrab::builder()
            .base_uri(cfg.api_url.as_str())
            .map_err(|e| ApiError::Config {
                detail: format!("api_url {}: {}", cfg.api_url, describe(&e)),
            })?
            .add_header(api_version, cfg.api_version.as_str().into())
            .set_connect_timeout(Some(cfg.request_timeout.min(Duration::from_secs(10))))
            .set_read_timeout(Some(cfg.request_timeout))
            .set_write_timeout(Some(cfg.request_timeout))
            .app(octocrab::models::AppId(cfg.app_id), key)
            .build()
            .map_err(|e| ApiError::Config {
                detail: describe(&e),
            })?;
        let settings = Arc::new(Settings {
            request_timeout: cfg.request_timeout,
            retry_base_delay: cfg.retry_base_delay,
            max_attempts: cfg.max_attempts.max(1),
            max_rate_limit_rounds: cfg.max_rate_limit_rounds.max(1),
            governor: cfg.governor,
            api_version: cfg.api_version,
            shared_rate: cfg.shared_rate,
            telemetry: cfg.telemetry,
            no_run_details: AtomicBool::new(false),
        });
        Ok(Self {
            inner: Arc::new(Inner {
                api_url: cfg.api_url.clone(),
                conn: Conn::new(crab.clone(), settings.clone(), None),
                crab,
                settings,
                installations: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The client of one installation, created once and cached. Its token is minted before
    /// this returns, so a fan-out over many repositories does not mint tokens in parallel.
    /// A failed mint is not cached: the next call tries again.
    pub async fn installation(&self, id: InstallationId) -> Result<InstallationClient, ApiError> {
        let cell = {
            let mut map = self
                .inner
                .installations
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            map.entry(id).or_default().clone()
        };
        cell.get_or_try_init(|| async {
            let (crab, _token) = self
                .inner
                .crab
                .installation_and_token(octocrab::models::InstallationId(id.0))
                .await
                .map_err(|e| octo_error(&e, "POST /app/installations/{id}/access_tokens"))?;
            Ok(InstallationClient::new(
                id,
                crab,
                self.inner.settings.clone(),
            ))
        })
        .await
        .cloned()
    }

    /// The App's slug (`GET /app`), e.g. to recognise its own check runs.
    pub async fn app_slug(&self) -> Result<String, ApiError> {
        #[derive(Deserialize)]
        struct App {
            slug: String,
        }
        let reply = self.inner.conn.get_ok("/app").await?;
        serde_json::from_str::<App>(&reply.body)
            .map(|a| a.slug)
            .map_err(|e| ApiError::Decode {
                detail: format!("/app: {e}"),
            })
    }

    /// Confirms, before anything is served, that the API answers and accepts the App's id and
    /// key together (`GET /app` with the App's JWT); returns the App's slug. Server errors are
    /// tried again for a while (the API may be having a bad minute); a refusal or no answer at
    /// all is reported at once.
    pub async fn check_credentials(&self) -> Result<String, CredentialsError> {
        const ROUNDS: u32 = 4;
        let url = self.inner.api_url.as_str().trim_end_matches('/').to_owned();
        let mut round = 0;
        let reply = loop {
            round += 1;
            match self
                .inner
                .conn
                .send(http::Method::GET, "/app", None, Resend::Safe)
                .await
            {
                Ok(reply) => break reply,
                Err(f) => match f.error {
                    ApiError::Transport { detail } => {
                        return Err(CredentialsError::Unreachable { url, detail })
                    }
                    e @ (ApiError::Server { .. } | ApiError::RateLimited { .. }) => {
                        if round >= ROUNDS {
                            return Err(CredentialsError::Unavailable {
                                url,
                                detail: e.to_string(),
                            });
                        }
                        tokio::time::sleep(self.inner.settings.retry_base_delay * 4 * round).await;
                    }
                    other => {
                        return Err(CredentialsError::NotGitHub {
                            url,
                            detail: other.to_string(),
                        })
                    }
                },
            }
        };
        #[derive(Deserialize)]
        struct App {
            slug: String,
        }
        match reply.status {
            200..=299 => serde_json::from_str::<App>(&reply.body)
                .map(|a| a.slug)
                .map_err(|_| CredentialsError::NotGitHub {
                    url,
                    detail: format!("{} without an App in its body", reply.status),
                }),
            status @ (401 | 403) => Err(CredentialsError::Refused {
                status,
                message: github_message(&reply.body),
            }),
            status => Err(CredentialsError::NotGitHub {
                url,
                detail: format!("{status} {}", github_message(&reply.body)),
            }),
        }
    }

    /// Webhook deliveries of the App since `since`, newest first (`GET /app/hook/deliveries`,
    /// pages followed until older than `since`). GitHub keeps them 30 days and never
    /// redelivers on its own: failed ones (`status_code` not 2xx) can be sent again with
    /// [`redeliver`](Self::redeliver).
    pub async fn hook_deliveries(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<HookDelivery>, ApiError> {
        let mut out = Vec::new();
        let mut next = Some("/app/hook/deliveries?per_page=100".to_owned());
        while let Some(path) = next.take() {
            let reply = self.inner.conn.get_ok(&path).await?;
            let page: Vec<HookDelivery> =
                serde_json::from_str(&reply.body).map_err(|e| ApiError::Decode {
                    detail: format!("/app/hook/deliveries: {e}"),
                })?;
            let reached_older = page.iter().any(|d| d.delivered_at < since);
            out.extend(page.into_iter().filter(|d| d.delivered_at >= since));
            if !reached_older {
                next = next_page_path(&reply.headers).filter(|n| *n != path);
            }
        }
        Ok(out)
    }

    /// Ask GitHub to send a delivery again (`POST /app/hook/deliveries/{id}/attempts`, 202).
    /// A redelivery keeps its `X-GitHub-Delivery` GUID, so a duplicate is harmless to a
    /// receiver that deduplicates; this request is therefore retried on transient failures.
    pub async fn redeliver(&self, delivery_id: u64) -> Result<(), ApiError> {
        let path = format!("/app/hook/deliveries/{delivery_id}/attempts");
        let reply = self
            .inner
            .conn
            .send(http::Method::POST, &path, None, Resend::Safe)
            .await
            .map_err(|f| f.error)?;
        match reply.status {
            200..=299 => Ok(()),
            s => Err(from_status(s, &path, &reply.body)),
        }
    }
}

/// An installation token narrowed to some repositories and permissions.
#[derive(Debug, Clone)]
pub struct NarrowedToken {
    pub token: secrecy::SecretString,
    pub expires_at: String,
}

impl GitHubApp {
    /// Mints an installation token that reaches only `repositories` (names, without the owner)
    /// with only `permissions` (`POST /app/installations/{id}/access_tokens`): what a worker
    /// gets with one item of pulled work. A token is a new secret each time, so a lost answer
    /// costs nothing but the retry; it is not content GitHub limits.
    pub async fn narrowed_token(
        &self,
        installation: InstallationId,
        repositories: &[&str],
        permissions: &std::collections::BTreeMap<String, String>,
    ) -> Result<NarrowedToken, ApiError> {
        #[derive(Deserialize)]
        struct Minted {
            token: String,
            expires_at: String,
        }
        let path = format!("/app/installations/{}/access_tokens", installation.0);
        let body = serde_json::json!({
            "repositories": repositories,
            "permissions": permissions,
        });
        let reply = self
            .inner
            .conn
            .send(http::Method::POST, &path, Some(&body), Resend::Safe)
            .await
            .map_err(|f| f.error)?;
        match reply.status {
            200..=299 => serde_json::from_str::<Minted>(&reply.body)
                .map(|m| NarrowedToken {
                    token: secrecy::SecretString::from(m.token),
                    expires_at: m.expires_at,
                })
                .map_err(|e| ApiError::Decode {
                    detail: format!("POST /app/installations/{{id}}/access_tokens: {e}"),
                }),
            s => Err(from_status(s, &path, &reply.body)),
        }
    }
}

/// Why [`GitHubApp::check_credentials`] could not confirm the App. Each names what to check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    /// The API answered 401 or 403: the App id and the private key do not belong together (or
    /// to this GitHub), or the App was suspended.
    #[error(
        "GitHub refused the App's credentials ({status} {message}): check SPOKEHUB_APP_ID and the private key (SPOKEHUB_PRIVATE_KEY_FILE or SPOKEHUB_PRIVATE_KEY)"
    )]
    Refused { status: u16, message: String },
    /// No HTTP answer at all.
    #[error("cannot reach GitHub at {url} ({detail}): check SPOKEHUB_GITHUB_API_URL")]
    Unreachable { url: String, detail: String },
    /// Something answered, but not as GitHub's REST API does.
    #[error(
        "{url} does not answer like GitHub's REST API (GET /app: {detail}): check SPOKEHUB_GITHUB_API_URL (https://api.github.com, or https://HOST/api/v3 for GitHub Enterprise Server)"
    )]
    NotGitHub { url: String, detail: String },
    /// Server errors or rate limits, still after several tries.
    #[error("GitHub at {url} is not answering GET /app ({detail}); try again later")]
    Unavailable { url: String, detail: String },
}

/// One webhook delivery as listed by `GET /app/hook/deliveries`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct HookDelivery {
    pub id: u64,
    /// The `X-GitHub-Delivery` GUID (same on redelivery).
    pub guid: String,
    pub delivered_at: DateTime<Utc>,
    #[serde(default)]
    pub redelivery: bool,
    /// The receiver's HTTP status (0 or absent when it could not be reached).
    #[serde(default)]
    pub status_code: u16,
    /// GitHub's words for the outcome ("OK", "Invalid HTTP Response: 503", ...); "pending"
    /// while a delivery is still on its way.
    #[serde(default)]
    pub status: String,
    pub event: String,
    #[serde(default)]
    pub action: Option<String>,
    #[serde(default)]
    pub installation_id: Option<u64>,
}

impl HookDelivery {
    /// The receiver did not answer 2xx.
    pub fn failed(&self) -> bool {
        !(200..300).contains(&self.status_code)
    }

    /// Still on its way (not yet delivered or failed).
    pub fn pending(&self) -> bool {
        self.status.eq_ignore_ascii_case("pending")
    }
}

/// Map an octocrab error: GitHub's own errors (e.g. from the token mint) by status, the rest
/// as transport errors.
pub(crate) fn octo_error(e: &octocrab::Error, route: &str) -> ApiError {
    match e {
        octocrab::Error::GitHub { source, .. } => {
            from_status(source.status_code.as_u16(), route, &source.message)
        }
        octocrab::Error::Json { .. } | octocrab::Error::Serde { .. } => ApiError::Decode {
            detail: format!("{route}: {}", describe(e)),
        },
        other => ApiError::Transport {
            detail: describe(other),
        },
    }
}
