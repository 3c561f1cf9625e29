//! Configuration of `spokehub serve`: flags, then environment, then an optional `spokehub.toml`,
//! then defaults. A missing or invalid setting is an error at start that names the setting;
//! secrets are held as [`SecretString`] and never printed.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use url::Url;

use crate::github::ApiVersion;
use crate::hub::{parse_duration, HubAccess, Policy, PolicyOverrides, RepoName, RunMode};

/// Settings given on the command line or in the environment (clap fills both).
/// No `Debug`: it holds secrets.
#[derive(Default, Clone, clap::Args)]
pub struct ServeArgs {
    /// The configuration file (optional; `spokehub.toml` in the working directory when present).
    #[arg(long, env = "SPOKEHUB_CONFIG")]
    pub config: Option<PathBuf>,
    /// The GitHub App's id (a number, on the App's settings page).
    #[arg(long, env = "SPOKEHUB_APP_ID", value_parser = parse_app_id)]
    pub app_id: Option<u64>,
    /// The App's private key (PEM file).
    #[arg(long, env = "SPOKEHUB_PRIVATE_KEY_FILE")]
    pub private_key_file: Option<PathBuf>,
    /// The App's private key itself (PEM), instead of a file.
    #[arg(long, env = "SPOKEHUB_PRIVATE_KEY", hide_env_values = true)]
    pub private_key: Option<String>,
    /// Webhook secret(s), comma-separated to accept several during a rotation.
    #[arg(long, env = "SPOKEHUB_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,
    /// GitHub's REST API (default https://api.github.com; GHES: https://HOST/api/v3).
    #[arg(long, env = "SPOKEHUB_GITHUB_API_URL")]
    pub github_api_url: Option<String>,
    /// Database URL: sqlite://PATH (default sqlite://spokehub.db) or postgres://USER@HOST/DB.
    #[arg(long, env = "SPOKEHUB_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Address to listen on (default 127.0.0.1:3000).
    #[arg(long, env = "SPOKEHUB_LISTEN")]
    pub listen: Option<String>,
    /// The URL where GitHub and people reach this hub (used for check-run links).
    #[arg(long, env = "SPOKEHUB_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Bearer token for `/api/v1`; the API is off when unset.
    #[arg(long, env = "SPOKEHUB_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// The hub repository (`owner/name`) whose hub workflow may start runs; comma-separated for
    /// several installations. Required.
    #[arg(long, env = "SPOKEHUB_HUB_REPOSITORY")]
    pub hub_repository: Option<String>,
    /// This replica's name in the work ledger's leases (default: host name and listen port).
    /// Unique per running replica; a replica restarted under the same name takes its leases
    /// back at once.
    #[arg(long, env = "SPOKEHUB_REPLICA_ID")]
    pub replica_id: Option<String>,
    /// Bearer token `GET /metrics` requires (unset: open, for a Prometheus on a private network).
    #[arg(long, env = "SPOKEHUB_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// The App's OAuth client id ("Sign in with GitHub" on the run page; `spokehub app create`
    /// writes it).
    #[arg(long, env = "SPOKEHUB_OAUTH_CLIENT_ID")]
    pub oauth_client_id: Option<String>,
    /// The App's OAuth client secret.
    #[arg(long, env = "SPOKEHUB_OAUTH_CLIENT_SECRET", hide_env_values = true)]
    pub oauth_client_secret: Option<String>,
    /// GitHub's web address, where people sign in (default: derived from the API URL,
    /// https://github.com for api.github.com, https://HOST for GHES).
    #[arg(long, env = "SPOKEHUB_GITHUB_WEB_URL")]
    pub github_web_url: Option<String>,
}

/// `spokehub.toml`. Unknown keys are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Where it was read from (set by [`read_file_config`]), to name it in errors.
    #[serde(skip)]
    pub path: Option<PathBuf>,
    #[serde(default)]
    pub github: GithubSection,
    #[serde(default)]
    pub server: ServerSection,
    #[serde(default)]
    pub database: DatabaseSection,
    #[serde(default)]
    pub hub: HubSection,
    #[serde(default)]
    pub policy: PolicyOverrides,
    #[serde(default)]
    pub tasks: BTreeMap<String, TaskSection>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GithubSection {
    pub app_id: Option<u64>,
    pub private_key_file: Option<PathBuf>,
    pub webhook_secret: Option<SecretString>,
    pub api_url: Option<String>,
    /// `X-GitHub-Api-Version` of every request: "2022-11-28" (default) or "2026-03-10".
    pub api_version: Option<String>,
    /// GitHub's web address (where people sign in).
    pub web_url: Option<String>,
    /// The App's OAuth client ("Sign in with GitHub").
    pub oauth_client_id: Option<String>,
    pub oauth_client_secret: Option<SecretString>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    pub listen: Option<String>,
    pub public_url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSection {
    pub url: Option<String>,
}

/// One value or a list of them (`repository = "a/b"` or `repository = ["a/b", "c/d"]`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubSection {
    /// The hub repository (`owner/name`), or several (one per installation): only their hub
    /// workflow starts runs.
    pub repository: Option<OneOrMany>,
    /// Refs besides the default branch the hub workflow may start runs from
    /// (`release`, `refs/tags/v*`).
    pub allowed_refs: Option<Vec<String>>,
    /// Logins who may start runs; unset: whoever may run the hub workflow.
    pub allowed_senders: Option<Vec<String>>,
    /// The hub workflow's file name in the hub repository.
    pub workflow: Option<String>,
    /// The spoke workflow's file name in every target repository.
    pub spoke_workflow: Option<String>,
    /// The worker workflow's file name in the hub repository (hybrid tasks).
    pub worker_workflow: Option<String>,
    /// How often failed webhook deliveries are listed and redelivered (e.g. "5m"; "0s": never).
    pub redeliver_every: Option<String>,
    /// How long a replica's lease on work lasts without renewal (default "30s"): after a
    /// replica dies, its runs and deliveries are taken over this long after its last renewal.
    pub lease_ttl: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSection {
    #[serde(default)]
    pub policy: PolicyOverrides,
    /// How the task reaches its targets: "push" (default), "pull" or "hybrid".
    pub mode: Option<String>,
    /// Pulled work on repositories: what the token handed out with each item may do
    /// (`{ contents = "write" }`), narrowed to the item's repository.
    pub permissions: Option<BTreeMap<String, String>>,
}

/// How a task's work reaches its targets, and what a worker's token for one item may do.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskWork {
    pub mode: RunMode,
    /// Permission name -> "read" | "write"; `contents = "read"` unless the task says otherwise.
    pub permissions: BTreeMap<String, String>,
}

impl Default for TaskWork {
    fn default() -> Self {
        Self {
            mode: RunMode::Push,
            permissions: BTreeMap::from([("contents".to_owned(), "read".to_owned())]),
        }
    }
}

/// A task's `mode` and `permissions`, validated; `setting` names a key of the task's table
/// (and the file) in errors.
fn task_work_of(
    section: &TaskSection,
    setting: impl Fn(&str) -> String,
) -> anyhow::Result<TaskWork> {
    let mut work = TaskWork::default();
    if let Some(mode) = &section.mode {
        work.mode = mode.parse().map_err(|_| {
            anyhow!(
                "setting {}: {mode:?} is not \"push\", \"pull\" or \"hybrid\"",
                setting("mode")
            )
        })?;
    }
    if let Some(permissions) = &section.permissions {
        for (name, level) in permissions {
            let plain = !name.is_empty()
                && name.len() <= 64
                && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
            if !plain {
                bail!(
                    "setting {}: {name:?} is not a permission name (e.g. contents, pull_requests)",
                    setting("permissions")
                );
            }
            if !matches!(level.as_str(), "read" | "write") {
                bail!(
                    "setting {}: {level:?} is not \"read\" or \"write\"",
                    setting(&format!("permissions.{name}"))
                );
            }
        }
        work.permissions = permissions.clone();
    }
    Ok(work)
}

/// The resolved configuration of a hub.
#[derive(Debug, Clone)]
pub struct Config {
    pub app_id: u64,
    pub private_key: SecretString,
    pub webhook_secrets: Vec<SecretString>,
    pub api_url: Url,
    pub api_version: ApiVersion,
    pub database_url: String,
    pub listen: SocketAddr,
    pub public_url: Option<Url>,
    pub api_token: Option<SecretString>,
    /// Which repositories, refs and people may start runs.
    pub access: HubAccess,
    pub hub_workflow: String,
    pub spoke_workflow: String,
    /// How often failed webhook deliveries are asked for again; `None`: never.
    pub redeliver_every: Option<Duration>,
    /// This replica's name in leases, when set (else host name and listen port).
    pub replica_id: Option<crate::store::ReplicaId>,
    /// The bearer token `/metrics` requires, if any.
    pub metrics_token: Option<SecretString>,
    /// How long a lease lasts without renewal (renewed every third of it).
    pub lease_ttl: Duration,
    /// GitHub's web address (sign-in pages).
    pub web_url: Url,
    /// The App's OAuth client; the run page is off without it.
    pub oauth: Option<OAuthClient>,
    pub policy: Policy,
    pub task_policies: BTreeMap<String, Policy>,
    /// Tasks that are not push tasks, or that declare permissions.
    pub task_work: BTreeMap<String, TaskWork>,
    /// The worker workflow's file name in the hub repository (hybrid tasks).
    pub worker_workflow: String,
}

impl Config {
    /// The policy of a task: the global one with the task's overrides.
    pub fn policy_for(&self, task: &str) -> &Policy {
        self.task_policies.get(task).unwrap_or(&self.policy)
    }

    /// How a task's work reaches its targets (push unless configured).
    pub fn work_for(&self, task: &str) -> TaskWork {
        self.task_work.get(task).cloned().unwrap_or_default()
    }

    /// Resolves flags/environment over the configuration file over defaults.
    pub fn resolve(args: &ServeArgs) -> anyhow::Result<Config> {
        Self::from_parts(args, load_file_config(args.config.as_deref())?)
    }

    pub fn from_parts(args: &ServeArgs, file: FileConfig) -> anyhow::Result<Config> {
        let in_file = |key: &str| format!("{key} in {}", file.name());
        let app_id = args.app_id.or(file.github.app_id).ok_or_else(|| {
            anyhow!(
                "missing setting SPOKEHUB_APP_ID (--app-id, or {})",
                in_file("github.app_id")
            )
        })?;
        let (private_key, key_setting) = match (
            &args.private_key,
            &args.private_key_file,
            &file.github.private_key_file,
        ) {
            (Some(pem), _, _) => (pem.clone(), "SPOKEHUB_PRIVATE_KEY".to_owned()),
            (None, Some(path), _) => (
                read_key("SPOKEHUB_PRIVATE_KEY_FILE", path)?,
                "SPOKEHUB_PRIVATE_KEY_FILE".to_owned(),
            ),
            (None, None, Some(path)) => {
                let setting = in_file("github.private_key_file");
                (read_key(&setting, path)?, setting)
            }
            (None, None, None) => bail!(
                "missing setting SPOKEHUB_PRIVATE_KEY_FILE (or SPOKEHUB_PRIVATE_KEY, or {})",
                in_file("github.private_key_file")
            ),
        };
        check_private_key(&key_setting, &private_key)?;
        let (secrets, secret_setting) = match (&args.webhook_secret, &file.github.webhook_secret) {
            (Some(s), _) => (s.clone(), "SPOKEHUB_WEBHOOK_SECRET".to_owned()),
            (None, Some(s)) => (
                s.expose_secret().to_owned(),
                in_file("github.webhook_secret"),
            ),
            (None, None) => bail!(
                "missing setting SPOKEHUB_WEBHOOK_SECRET (--webhook-secret, or {})",
                in_file("github.webhook_secret")
            ),
        };
        let webhook_secrets: Vec<SecretString> = secrets
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| SecretString::from(s.to_owned()))
            .collect();
        if webhook_secrets.is_empty() {
            bail!("setting {secret_setting} is empty");
        }
        let (api_url, setting) = pick(
            &args.github_api_url,
            "SPOKEHUB_GITHUB_API_URL",
            file.github.api_url.clone(),
            &in_file("github.api_url"),
            "https://api.github.com",
        );
        let api_url = Url::parse(&api_url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
            .ok_or_else(|| anyhow!("setting {setting}: not an http(s) URL: {api_url:?}"))?;
        let api_version = match &file.github.api_version {
            None => ApiVersion::default(),
            Some(v) => v
                .parse()
                .map_err(|e| anyhow!("setting {}: {e}", in_file("github.api_version")))?,
        };
        let (database_url, _) = database_url(&args.database_url, &file)?;
        let (listen, setting) = pick(
            &args.listen,
            "SPOKEHUB_LISTEN",
            file.server.listen.clone(),
            &in_file("server.listen"),
            "127.0.0.1:3000",
        );
        let listen = parse_listen(&listen).map_err(|e| anyhow!("setting {setting}: {e}"))?;
        let public_url = match (&args.public_url, &file.server.public_url) {
            (Some(u), _) => Some((u.clone(), "SPOKEHUB_PUBLIC_URL".to_owned())),
            (None, Some(u)) => Some((u.clone(), in_file("server.public_url"))),
            (None, None) => None,
        }
        .map(|(u, setting)| {
            Url::parse(&u)
                .ok()
                .filter(|p| matches!(p.scheme(), "http" | "https") && p.host_str().is_some())
                .ok_or_else(|| anyhow!("setting {setting}: not an http(s) URL: {u:?}"))
        })
        .transpose()?;
        let api_token = args
            .api_token
            .as_deref()
            .filter(|t| !t.is_empty())
            .map(|t| SecretString::from(t.to_owned()));
        let policy = Policy::default()
            .with(&file.policy)
            .map_err(|e| anyhow!("setting {}: {e}", in_file("policy")))?;
        let mut task_policies = BTreeMap::new();
        for (task, section) in &file.tasks {
            let p = policy.with(&section.policy).map_err(|e| {
                anyhow!("setting {}: {e}", in_file(&format!("tasks.{task}.policy")))
            })?;
            task_policies.insert(task.clone(), p);
        }
        let mut task_work = BTreeMap::new();
        for (task, section) in &file.tasks {
            let work = task_work_of(section, |key| in_file(&format!("tasks.{task}.{key}")))?;
            task_work.insert(task.clone(), work);
        }
        let access = hub_access(args, &file.hub, &file.name())?;
        let redeliver_every = match &file.hub.redeliver_every {
            None => Some(Duration::from_secs(5 * 60)),
            Some(s) => {
                let d = parse_duration(s)
                    .map_err(|e| anyhow!("setting {}: {e}", in_file("hub.redeliver_every")))?;
                (!d.is_zero()).then_some(d)
            }
        };
        let lease_ttl = match &file.hub.lease_ttl {
            None => Duration::from_secs(30),
            Some(s) => {
                let d = parse_duration(s)
                    .map_err(|e| anyhow!("setting {}: {e}", in_file("hub.lease_ttl")))?;
                if d < Duration::from_secs(1) {
                    bail!("setting {}: must be at least 1s", in_file("hub.lease_ttl"));
                }
                d
            }
        };
        let web_url = match (&args.github_web_url, &file.github.web_url) {
            (Some(u), _) => Some((u.clone(), "SPOKEHUB_GITHUB_WEB_URL".to_owned())),
            (None, Some(u)) => Some((u.clone(), in_file("github.web_url"))),
            (None, None) => None,
        }
        .map(|(u, setting)| {
            Url::parse(&u)
                .ok()
                .filter(|p| matches!(p.scheme(), "http" | "https") && p.host_str().is_some())
                .ok_or_else(|| anyhow!("setting {setting}: not an http(s) URL: {u:?}"))
        })
        .transpose()?
        .unwrap_or_else(|| web_url_for(&api_url));
        let oauth = oauth_client(args, &file)?;
        // Signing in sends people back to PUBLIC_URL/auth/callback, and the pages link from
        // the root of the hub's address.
        if oauth.is_some() {
            match &public_url {
                None => bail!(
                    "setting SPOKEHUB_PUBLIC_URL (or server.public_url) is required with an OAuth \
                     client: GitHub sends people back to PUBLIC_URL/auth/callback"
                ),
                Some(u) if u.path() != "/" => bail!(
                    "setting SPOKEHUB_PUBLIC_URL (or server.public_url): the run page needs the hub \
                     at the root of its address, got the path {:?}",
                    u.path()
                ),
                Some(_) => {}
            }
        }
        // Worker jobs prove who they are with an ID token whose audience is the hub's address.
        if let Some((task, _)) = task_work.iter().find(|(_, w)| w.mode == RunMode::Hybrid) {
            if public_url.is_none() {
                bail!(
                    "setting SPOKEHUB_PUBLIC_URL (or server.public_url) is required by the hybrid \
                     task {task:?}: its worker jobs reach the hub there, and their ID tokens name it"
                );
            }
        }
        let replica_id = args
            .replica_id
            .as_deref()
            .map(str::trim)
            .filter(|id| !id.is_empty())
            .map(crate::store::ReplicaId::new);
        Ok(Config {
            app_id,
            private_key: SecretString::from(private_key),
            webhook_secrets,
            api_url,
            api_version,
            database_url,
            listen,
            public_url,
            api_token,
            access,
            hub_workflow: file
                .hub
                .workflow
                .unwrap_or_else(|| "spokehub-hub.yml".into()),
            spoke_workflow: file
                .hub
                .spoke_workflow
                .unwrap_or_else(|| "spokehub-spoke.yml".into()),
            redeliver_every,
            replica_id,
            metrics_token: args
                .metrics_token
                .as_deref()
                .filter(|t| !t.is_empty())
                .map(|t| SecretString::from(t.to_owned())),
            lease_ttl,
            web_url,
            oauth,
            policy,
            task_policies,
            task_work,
            worker_workflow: file
                .hub
                .worker_workflow
                .clone()
                .unwrap_or_else(|| "spokehub-workers.yml".into()),
        })
    }
}

/// The OAuth client: both halves or neither.
fn oauth_client(args: &ServeArgs, file: &FileConfig) -> anyhow::Result<Option<OAuthClient>> {
    let id = match (&args.oauth_client_id, &file.github.oauth_client_id) {
        (Some(v), _) => Some((v.trim().to_owned(), "SPOKEHUB_OAUTH_CLIENT_ID".to_owned())),
        (None, Some(v)) => Some((
            v.trim().to_owned(),
            format!("github.oauth_client_id in {}", file.name()),
        )),
        (None, None) => None,
    }
    .filter(|(v, _)| !v.is_empty());
    let secret = match (&args.oauth_client_secret, &file.github.oauth_client_secret) {
        (Some(v), _) => Some(v.trim().to_owned()),
        (None, Some(v)) => Some(v.expose_secret().trim().to_owned()),
        (None, None) => None,
    }
    .filter(|v| !v.is_empty());
    match (id, secret) {
        (None, None) => Ok(None),
        (Some((client_id, _)), Some(secret)) => Ok(Some(OAuthClient {
            client_id,
            client_secret: SecretString::from(secret),
        })),
        (Some((_, setting)), None) => bail!(
            "setting {setting} is set but SPOKEHUB_OAUTH_CLIENT_SECRET (or github.oauth_client_secret) \
             is not: the run page's sign-in needs both"
        ),
        (None, Some(_)) => bail!(
            "setting SPOKEHUB_OAUTH_CLIENT_SECRET is set but SPOKEHUB_OAUTH_CLIENT_ID (or \
             github.oauth_client_id) is not: the run page's sign-in needs both"
        ),
    }
}

/// The App's OAuth client id and secret (the secret shows as redacted).
#[derive(Clone, Debug)]
pub struct OAuthClient {
    pub client_id: String,
    pub client_secret: SecretString,
}

/// GitHub's web address for an API URL: `https://github.com` for `api.github.com`, the host
/// for GHES (`https://HOST/api/v3`), else the API URL itself (an emulator serves both).
pub fn web_url_for(api: &Url) -> Url {
    let mut web = api.clone();
    if api.host_str() == Some("api.github.com") {
        return Url::parse("https://github.com").expect("a valid URL");
    }
    let path = api.path().trim_end_matches('/');
    let path = path.strip_suffix("/api/v3").unwrap_or(path).to_owned();
    web.set_path(&path);
    web
}

/// The machine's host name (`unknown-host` when it cannot be read).
pub fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that much.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match (rc, std::str::from_utf8(&buf[..end])) {
        (0, Ok(name)) if !name.is_empty() => name.to_owned(),
        _ => "unknown-host".to_owned(),
    }
}

/// The database when none is set.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://spokehub.db";

/// The configuration file: the one named (`--config`, `SPOKEHUB_CONFIG`), else
/// `spokehub.toml` in the working directory when there is one, else none (empty).
pub fn load_file_config(named: Option<&Path>) -> anyhow::Result<FileConfig> {
    match named {
        Some(path) => read_file_config(path),
        None if Path::new("spokehub.toml").exists() => read_file_config(Path::new("spokehub.toml")),
        None => Ok(FileConfig::default()),
    }
}

/// The database URL (`SPOKEHUB_DATABASE_URL`, else `database.url` in the file, else the
/// default) and the setting it came from (`None`: the default).
pub fn database_url(
    arg: &Option<String>,
    file: &FileConfig,
) -> anyhow::Result<(String, Option<String>)> {
    let setting = match (arg, &file.database.url) {
        (Some(_), _) => Some("SPOKEHUB_DATABASE_URL".to_owned()),
        (None, Some(_)) => Some(format!("database.url in {}", file.name())),
        (None, None) => None,
    };
    let url = arg
        .clone()
        .or(file.database.url.clone())
        .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned());
    if !url.starts_with("sqlite:") && !crate::store::is_postgres_url(&url) {
        let shown = match url.split_once("://") {
            Some((scheme, _)) => format!("a {scheme}:// URL"),
            None => format!("{url:?}"),
        };
        bail!(
            "setting {}: the database must be sqlite://PATH or postgres://USER@HOST/DB \
             (postgresql:// also works), got {shown}",
            setting.as_deref().unwrap_or("SPOKEHUB_DATABASE_URL")
        );
    }
    Ok((url, setting))
}

/// A setting from flags/environment (named by its variable), else the file (named by its key
/// and file), else its default (named by its variable).
fn pick(
    arg: &Option<String>,
    var: &str,
    file: Option<String>,
    in_file: &str,
    default: &str,
) -> (String, String) {
    match (arg, file) {
        (Some(v), _) => (v.clone(), var.to_owned()),
        (None, Some(v)) => (v, in_file.to_owned()),
        (None, None) => (default.to_owned(), var.to_owned()),
    }
}

/// `SPOKEHUB_APP_ID` / `--app-id`: clap's own message would name only the flag.
fn parse_app_id(s: &str) -> Result<u64, String> {
    s.trim()
        .parse::<u64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| {
            "SPOKEHUB_APP_ID (--app-id) must be the App's numeric id, as shown on its settings page"
                .to_owned()
        })
}

/// Reads the private key file a setting names.
fn read_key(setting: &str, path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path)
        .with_context(|| format!("setting {setting}: cannot read {}", path.display()))
}

/// The key must be an RSA private key in PEM form (PKCS#1 or PKCS#8), as GitHub hands it out.
/// The error names the setting, never the key.
fn check_private_key(setting: &str, pem: &str) -> anyhow::Result<()> {
    if !pem.contains("-----BEGIN") {
        bail!("setting {setting}: the key is not in PEM format (-----BEGIN ... PRIVATE KEY-----)");
    }
    jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes()).map_err(|_| {
        anyhow!("setting {setting}: not an RSA private key in PEM format (use the .pem file GitHub generated for the App)")
    })?;
    Ok(())
}

/// A listen address: `IP:PORT` (`127.0.0.1:3000`, `[::]:3000`) or `HOST:PORT`
/// (`localhost:3000`), a host name resolved once, at start (an IPv4 address preferred).
pub fn parse_listen(s: &str) -> anyhow::Result<SocketAddr> {
    use std::net::ToSocketAddrs as _;
    const FORMS: &str =
        "use IP:PORT or HOST:PORT, e.g. 127.0.0.1:3000, 0.0.0.0:3000, [::]:3000 or localhost:3000";
    let s = s.trim();
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        bail!("{s:?} has no port: {FORMS}");
    };
    if host.is_empty() || port.parse::<u16>().is_err() {
        bail!("{s:?} is not an address: {FORMS}");
    }
    // Like tokio's `lookup_host`, which runs this same resolver on a blocking thread; this runs
    // once, before anything is served.
    let addrs: Vec<SocketAddr> = s
        .to_socket_addrs()
        .map_err(|e| anyhow!("cannot resolve the host name in {s:?} ({e}): {FORMS}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| anyhow!("the host name in {s:?} has no address: {FORMS}"))
}

/// `hub.repository` (or `SPOKEHUB_HUB_REPOSITORY`), `hub.allowed_refs`, `hub.allowed_senders`.
fn hub_access(args: &ServeArgs, hub: &HubSection, file_name: &str) -> anyhow::Result<HubAccess> {
    let (names, setting) = match (&args.hub_repository, &hub.repository) {
        (Some(env), _) => (
            env.split(',').map(|s| s.trim().to_owned()).collect::<Vec<_>>(),
            "SPOKEHUB_HUB_REPOSITORY".to_owned(),
        ),
        (None, Some(file)) => (
            match file {
                OneOrMany::One(s) => vec![s.clone()],
                OneOrMany::Many(v) => v.clone(),
            },
            format!("hub.repository in {file_name}"),
        ),
        (None, None) => bail!(
            "missing setting SPOKEHUB_HUB_REPOSITORY (--hub-repository, or hub.repository in {file_name}): \
             the owner/name of the repository whose hub workflow may start runs"
        ),
    };
    let repositories = names
        .iter()
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<RepoName>()
                .map_err(|_| anyhow!("setting {setting}: {s:?} is not an owner/name repository"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if repositories.is_empty() {
        bail!("setting {setting} is empty");
    }
    let allowed_refs = hub.allowed_refs.clone().unwrap_or_default();
    if let Some(bad) = allowed_refs
        .iter()
        .find(|r| r.trim().is_empty() || r.contains(char::is_whitespace))
    {
        bail!("setting hub.allowed_refs in {file_name}: {bad:?} is not a ref");
    }
    Ok(HubAccess {
        repositories,
        allowed_refs,
        allowed_senders: hub.allowed_senders.clone(),
    })
}

impl FileConfig {
    /// How errors name the file: its path, or `spokehub.toml` when it was not read from one.
    pub fn name(&self) -> String {
        self.path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "spokehub.toml".into())
    }
}

/// Reads and validates `spokehub.toml` (or the file given with `--config`); errors name it.
pub fn read_file_config(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read configuration file {}", path.display()))?;
    let mut file = parse_file_config(&text)
        .with_context(|| format!("invalid configuration file {}", path.display()))?;
    file.path = Some(path.to_owned());
    Ok(file)
}

pub fn parse_file_config(text: &str) -> anyhow::Result<FileConfig> {
    Ok(toml::from_str(text)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEST_KEY: &str = include_str!("../tests/data/test-app-key.pem");

    fn args() -> ServeArgs {
        ServeArgs {
            app_id: Some(7),
            private_key: Some(TEST_KEY.into()),
            webhook_secret: Some("new, old".into()),
            hub_repository: Some("acme/hub".into()),
            ..ServeArgs::default()
        }
    }

    #[test]
    fn the_web_address_follows_the_api_url_unless_set() {
        let web = |api: &str| web_url_for(&Url::parse(api).unwrap()).to_string();
        assert_eq!(web("https://api.github.com"), "https://github.com/");
        assert_eq!(web("https://ghes.example/api/v3"), "https://ghes.example/");
        assert_eq!(web("http://127.0.0.1:8080"), "http://127.0.0.1:8080/");
        let c = Config::from_parts(&args(), FileConfig::default()).unwrap();
        assert_eq!(c.web_url.as_str(), "https://github.com/");
        assert!(c.oauth.is_none());
    }

    #[test]
    fn the_oauth_client_needs_both_halves() {
        let mut a = args();
        a.oauth_client_id = Some("Iv1.x".into());
        let e = Config::from_parts(&a, FileConfig::default())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("SPOKEHUB_OAUTH_CLIENT_SECRET"), "{e}");
        a.oauth_client_secret = Some("s".into());
        let e = Config::from_parts(&a, FileConfig::default())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("SPOKEHUB_PUBLIC_URL"), "{e}");
        a.public_url = Some("https://hub.example/spokehub".into());
        let e = Config::from_parts(&a, FileConfig::default())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("root"), "{e}");
        a.public_url = Some("https://hub.example".into());
        let c = Config::from_parts(&a, FileConfig::default()).unwrap();
        assert_eq!(c.oauth.unwrap().client_id, "Iv1.x");
        let mut b = args();
        b.oauth_client_secret = Some("s".into());
        let e = Config::from_parts(&b, FileConfig::default())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("SPOKEHUB_OAUTH_CLIENT_ID"), "{e}");
    }

    #[test]
    fn defaults_and_secret_rotation() {
        let c = Config::from_parts(&args(), FileConfig::default()).unwrap();
        assert_eq!(c.api_url.as_str(), "https://api.github.com/");
        assert_eq!(c.listen.to_string(), "127.0.0.1:3000");
        assert_eq!(c.database_url, "sqlite://spokehub.db");
        let secrets: Vec<_> = c
            .webhook_secrets
            .iter()
            .map(|s| s.expose_secret().to_owned())
            .collect();
        assert_eq!(secrets, ["new", "old"]);
        assert!(c.api_token.is_none());
        assert_eq!(c.spoke_workflow, "spokehub-spoke.yml");
    }

    #[test]
    fn the_database_is_sqlite_or_postgres_and_anything_else_is_named() {
        for url in [
            "sqlite://hub.db",
            "sqlite::memory:",
            "postgres://spokehub@db.internal/spokehub",
            "postgresql://spokehub:secret@db.internal:5433/spokehub?sslmode=require",
        ] {
            let args = ServeArgs {
                database_url: Some(url.into()),
                ..args()
            };
            let c = Config::from_parts(&args, FileConfig::default()).unwrap();
            assert_eq!(c.database_url, url);
        }
        let args = ServeArgs {
            database_url: Some("mysql://root:hunter2@db/spokehub".into()),
            ..args()
        };
        let e = Config::from_parts(&args, FileConfig::default())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("SPOKEHUB_DATABASE_URL"), "{e}");
        assert!(e.contains("postgres://") && e.contains("sqlite://"), "{e}");
        assert!(e.contains("mysql://") && !e.contains("hunter2"), "{e}");
    }

    #[test]
    fn missing_settings_are_named() {
        let mut a = args();
        a.app_id = None;
        let e = Config::from_parts(&a, FileConfig::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("SPOKEHUB_APP_ID"), "{e}");
        let mut a = args();
        a.webhook_secret = None;
        let e = Config::from_parts(&a, FileConfig::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("SPOKEHUB_WEBHOOK_SECRET"), "{e}");
        let mut a = args();
        a.listen = Some("nowhere".into());
        let e = Config::from_parts(&a, FileConfig::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("SPOKEHUB_LISTEN"), "{e}");
    }

    #[test]
    fn the_hub_repository_is_required_and_may_be_several() {
        let mut a = args();
        a.hub_repository = None;
        let e = Config::from_parts(&a, FileConfig::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("SPOKEHUB_HUB_REPOSITORY"), "{e}");
        a.hub_repository = Some("not a repo".into());
        let e = Config::from_parts(&a, FileConfig::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("SPOKEHUB_HUB_REPOSITORY") && e.contains("not a repo"),
            "{e}"
        );
        a.hub_repository = None;
        let file = parse_file_config(
            "[hub]\nrepository = [\"acme/hub\", \"other/hub\"]\nallowed_refs = [\"release\"]\nallowed_senders = [\"octocat\"]\n",
        )
        .unwrap();
        let c = Config::from_parts(&a, file).unwrap();
        assert_eq!(c.access.repositories.len(), 2);
        assert_eq!(c.access.allowed_refs, ["release"]);
        assert_eq!(
            c.access.allowed_senders.as_deref(),
            Some(&["octocat".to_owned()][..])
        );
        let file = parse_file_config("[hub]\nrepository = \"acme/hub\"\n").unwrap();
        let c = Config::from_parts(&a, file).unwrap();
        assert_eq!(c.access.repositories[0].as_str(), "acme/hub");
    }

    #[test]
    fn file_config_rejects_unknown_keys_and_applies_task_policies() {
        assert!(parse_file_config("[server]\nlisen = \"x\"").is_err());
        let file =
            parse_file_config("[policy]\nconcurrency = 5\n[tasks.scan.policy]\nconcurrency = 2\n")
                .unwrap();
        let c = Config::from_parts(&args(), file).unwrap();
        assert_eq!(c.policy_for("other").concurrency, 5);
        assert_eq!(c.policy_for("scan").concurrency, 2);
    }

    #[test]
    fn tasks_choose_their_model_and_the_permissions_of_their_items() {
        let file = parse_file_config(
            "[tasks.scan]\nmode = \"pull\"\n[tasks.bump]\nmode = \"hybrid\"\npermissions = { contents = \"write\", pull_requests = \"write\" }\n[tasks.bump.policy]\nworkers = 8\nwork_lease = \"2m\"\n",
        )
        .unwrap();
        let mut a = args();
        a.public_url = Some("https://hub.example".into());
        let c = Config::from_parts(&a, file).unwrap();
        assert_eq!(c.work_for("other").mode, RunMode::Push, "push by default");
        assert_eq!(c.work_for("other").permissions["contents"], "read");
        assert_eq!(c.work_for("scan").mode, RunMode::Pull);
        assert_eq!(c.work_for("bump").mode, RunMode::Hybrid);
        assert_eq!(c.work_for("bump").permissions["pull_requests"], "write");
        assert_eq!(c.policy_for("bump").workers, 8);
        assert_eq!(c.policy_for("bump").work_lease, Duration::from_secs(120));
        assert_eq!(c.policy_for("scan").workers, 20);
        for (text, says) in [
            ("[tasks.x]\nmode = \"poll\"", "tasks.x.mode"),
            (
                "[tasks.x]\npermissions = { contents = \"admin\" }",
                "tasks.x.permissions.contents",
            ),
            (
                "[tasks.x]\npermissions = { \"Contents!\" = \"read\" }",
                "tasks.x.permissions",
            ),
            ("[tasks.x.policy]\nworkers = 0", "workers"),
            ("[tasks.x.policy]\nwork_lease = \"10ms\"", "work_lease"),
        ] {
            let e = Config::from_parts(&a, parse_file_config(text).unwrap()).unwrap_err();
            assert!(format!("{e:#}").contains(says), "{text}: {e:#}");
        }
        // Hybrid workers reach the hub at its public URL.
        let file = parse_file_config("[tasks.bump]\nmode = \"hybrid\"").unwrap();
        let e = Config::from_parts(&args(), file).unwrap_err();
        assert!(format!("{e:#}").contains("SPOKEHUB_PUBLIC_URL"), "{e:#}");
    }

    #[test]
    fn task_policy_after_nested_global_tables() {
        let text = "[policy]\nunknown_search_delay = \"200ms\"\n[policy.retry]\nlimit = 0\n\n[tasks.slow.policy]\nconcurrency = 1\n";
        let c = Config::from_parts(&args(), parse_file_config(text).unwrap()).unwrap();
        assert_eq!(c.policy_for("slow").concurrency, 1);
        assert_eq!(c.policy_for("slow").retry.limit, 0);
    }

    #[test]
    fn api_version_is_one_of_the_known_ones() {
        let c = Config::from_parts(&args(), FileConfig::default()).unwrap();
        assert_eq!(c.api_version, ApiVersion::V2022_11_28);
        let file = parse_file_config("[github]\napi_version = \"2026-03-10\"").unwrap();
        let c = Config::from_parts(&args(), file).unwrap();
        assert_eq!(c.api_version, ApiVersion::V2026_03_10);
        let file = parse_file_config("[github]\napi_version = \"2025-01-01\"").unwrap();
        let e = Config::from_parts(&args(), file).unwrap_err().to_string();
        assert!(
            e.contains("github.api_version")
                && e.contains("2025-01-01")
                && e.contains("2026-03-10"),
            "{e}"
        );
    }

    #[test]
    fn secrets_do_not_appear_in_debug_output() {
        let c = Config::from_parts(&args(), FileConfig::default()).unwrap();
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("new") && !shown.contains("PRIVATE KEY"),
            "{shown}"
        );
    }

    fn error_of(a: &ServeArgs, file: FileConfig) -> String {
        format!("{:#}", Config::from_parts(a, file).unwrap_err())
    }

    #[test]
    fn key_errors_name_the_setting_that_holds_the_key() {
        let mut a = args();
        a.private_key = Some("not a key".into());
        let e = error_of(&a, FileConfig::default());
        assert!(
            e.contains("SPOKEHUB_PRIVATE_KEY:") && !e.contains("_FILE"),
            "{e}"
        );
        a.private_key =
            Some("-----BEGIN RSA PRIVATE KEY-----\nx\n-----END RSA PRIVATE KEY-----".into());
        let e = error_of(&a, FileConfig::default());
        assert!(
            e.contains("SPOKEHUB_PRIVATE_KEY:") && e.contains("not an RSA private key"),
            "{e}"
        );
        assert!(!e.contains("-----BEGIN"), "the key is not repeated: {e}");

        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("app.pem");
        std::fs::write(&key, "garbage").unwrap();
        a.private_key = None;
        a.private_key_file = Some(key.clone());
        let e = error_of(&a, FileConfig::default());
        assert!(e.contains("SPOKEHUB_PRIVATE_KEY_FILE:"), "{e}");
        a.private_key_file = Some(dir.path().join("missing.pem"));
        let e = error_of(&a, FileConfig::default());
        assert!(
            e.contains("SPOKEHUB_PRIVATE_KEY_FILE") && e.contains("missing.pem"),
            "{e}"
        );

        let toml = dir.path().join("hub.toml");
        std::fs::write(
            &toml,
            format!(
                "[github]\nprivate_key_file = {:?}\n",
                key.display().to_string()
            ),
        )
        .unwrap();
        a.private_key_file = None;
        let e = error_of(&a, read_file_config(&toml).unwrap());
        assert!(
            e.contains("github.private_key_file in") && e.contains("hub.toml"),
            "{e}"
        );
    }

    #[test]
    fn errors_about_the_file_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("my-hub.toml");
        std::fs::write(&path, "[policy]\nconcurrency = 0\n").unwrap();
        let e = error_of(&args(), read_file_config(&path).unwrap());
        assert!(e.contains("policy in") && e.contains("my-hub.toml"), "{e}");
        assert!(!e.contains("spokehub.toml"), "{e}");

        std::fs::write(&path, "[server]\nlisten = \"nowhere\"\n").unwrap();
        let e = error_of(&args(), read_file_config(&path).unwrap());
        assert!(
            e.contains("server.listen in") && e.contains("my-hub.toml"),
            "{e}"
        );

        let mut a = args();
        a.app_id = None;
        std::fs::write(&path, "").unwrap();
        let e = error_of(&a, read_file_config(&path).unwrap());
        assert!(
            e.contains("SPOKEHUB_APP_ID")
                && e.contains("github.app_id in")
                && e.contains("my-hub.toml"),
            "{e}"
        );

        std::fs::write(&path, "[server]\nlisen = 1\n").unwrap();
        let e = format!("{:#}", read_file_config(&path).unwrap_err());
        assert!(e.contains("my-hub.toml") && e.contains("lisen"), "{e}");
        let e = format!(
            "{:#}",
            read_file_config(&dir.path().join("none.toml")).unwrap_err()
        );
        assert!(e.contains("none.toml"), "{e}");
    }

    #[test]
    fn a_bad_app_id_names_the_variable() {
        assert_eq!(parse_app_id(" 42 "), Ok(42));
        for bad in ["abc", "", "0", "-1", "12.5"] {
            let e = parse_app_id(bad).unwrap_err();
            assert!(e.contains("SPOKEHUB_APP_ID"), "{bad}: {e}");
        }
    }

    #[test]
    fn listen_takes_a_host_name_or_says_which_forms_work() {
        let mut a = args();
        a.listen = Some("localhost:3000".into());
        let c = Config::from_parts(&a, FileConfig::default()).unwrap();
        assert!(c.listen.ip().is_loopback(), "{}", c.listen);
        assert_eq!(c.listen.port(), 3000);
        a.listen = Some("[::1]:3001".into());
        let c = Config::from_parts(&a, FileConfig::default()).unwrap();
        assert_eq!(c.listen.to_string(), "[::1]:3001");
        for bad in ["nowhere", "localhost", "localhost:http", ":3000"] {
            a.listen = Some(bad.into());
            let e = error_of(&a, FileConfig::default());
            assert!(
                e.contains("SPOKEHUB_LISTEN") && e.contains(bad) && e.contains("localhost:3000"),
                "{bad}: {e}"
            );
        }
    }
}
