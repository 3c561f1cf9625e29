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
use crate::hub::{parse_duration, HubAccess, Policy, PolicyOverrides, RepoName};

/// Settings given on the command line or in the environment (clap fills both).
/// No `Debug`: it holds secrets.
#[derive(Default, Clone, clap::Args)]
pub struct ServeArgs {
    /// The configuration file (optional; `spokehub.toml` in the working directory when present).
    #[arg(long, env = "SPOKEHUB_CONFIG")]
    pub config: Option<PathBuf>,
    /// The GitHub App's id.
    #[arg(long, env = "SPOKEHUB_APP_ID")]
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
    /// Database URL (default sqlite://spokehub.db).
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
}

/// `spokehub.toml`. Unknown keys are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
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
    /// How often failed webhook deliveries are listed and redelivered (e.g. "5m"; "0s": never).
    pub redeliver_every: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSection {
    #[serde(default)]
    pub policy: PolicyOverrides,
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
    pub policy: Policy,
    pub task_policies: BTreeMap<String, Policy>,
}

impl Config {
    /// The policy of a task: the global one with the task's overrides.
    pub fn policy_for(&self, task: &str) -> &Policy {
        self.task_policies.get(task).unwrap_or(&self.policy)
    }

    /// Resolves flags/environment over the configuration file over defaults.
    pub fn resolve(args: &ServeArgs) -> anyhow::Result<Config> {
        let file = match &args.config {
            Some(path) => Some(read_file_config(path)?),
            None if Path::new("spokehub.toml").exists() => {
                Some(read_file_config(Path::new("spokehub.toml"))?)
            }
            None => None,
        };
        Self::from_parts(args, file.unwrap_or_default())
    }

    pub fn from_parts(args: &ServeArgs, file: FileConfig) -> anyhow::Result<Config> {
        let app_id = args.app_id.or(file.github.app_id).ok_or_else(|| {
            anyhow!("missing setting SPOKEHUB_APP_ID (--app-id, or github.app_id in spokehub.toml)")
        })?;
        let private_key = match (&args.private_key, &args.private_key_file, &file.github.private_key_file) {
            (Some(pem), _, _) => pem.clone(),
            (None, Some(path), _) | (None, None, Some(path)) => std::fs::read_to_string(path)
                .with_context(|| {
                    format!("setting SPOKEHUB_PRIVATE_KEY_FILE: cannot read {}", path.display())
                })?,
            (None, None, None) => bail!(
                "missing setting SPOKEHUB_PRIVATE_KEY_FILE (or SPOKEHUB_PRIVATE_KEY, or github.private_key_file in spokehub.toml)"
            ),
        };
        if !private_key.contains("-----BEGIN") {
            bail!("setting SPOKEHUB_PRIVATE_KEY_FILE: the key is not in PEM format");
        }
        let secrets = args
            .webhook_secret
            .clone()
            .or(file.github.webhook_secret.map(|s| s.expose_secret().to_owned()))
            .ok_or_else(|| anyhow!("missing setting SPOKEHUB_WEBHOOK_SECRET (or github.webhook_secret in spokehub.toml)"))?;
        let webhook_secrets: Vec<SecretString> = secrets
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| SecretString::from(s.to_owned()))
            .collect();
        if webhook_secrets.is_empty() {
            bail!("setting SPOKEHUB_WEBHOOK_SECRET is empty");
        }
        let api_url = args
            .github_api_url
            .clone()
            .or(file.github.api_url)
            .unwrap_or_else(|| "https://api.github.com".into());
        let api_url = Url::parse(&api_url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| {
                anyhow!("setting SPOKEHUB_GITHUB_API_URL: not an http(s) URL: {api_url:?}")
            })?;
        let api_version = match &file.github.api_version {
            None => ApiVersion::default(),
            Some(v) => v
                .parse()
                .map_err(|e| anyhow!("setting github.api_version in spokehub.toml: {e}"))?,
        };
        let database_url = args
            .database_url
            .clone()
            .or(file.database.url)
            .unwrap_or_else(|| "sqlite://spokehub.db".into());
        if !database_url.starts_with("sqlite:") {
            bail!("setting SPOKEHUB_DATABASE_URL: only sqlite: URLs are supported so far, got {database_url:?}");
        }
        let listen = args
            .listen
            .clone()
            .or(file.server.listen)
            .unwrap_or_else(|| "127.0.0.1:3000".into());
        let listen: SocketAddr = listen
            .parse()
            .map_err(|e| anyhow!("setting SPOKEHUB_LISTEN: {listen:?} is not an address: {e}"))?;
        let public_url = args
            .public_url
            .clone()
            .or(file.server.public_url)
            .map(|u| Url::parse(&u).map_err(|e| anyhow!("setting SPOKEHUB_PUBLIC_URL: {u:?}: {e}")))
            .transpose()?;
        let api_token = args
            .api_token
            .as_deref()
            .filter(|t| !t.is_empty())
            .map(|t| SecretString::from(t.to_owned()));
        let policy = Policy::default()
            .with(&file.policy)
            .map_err(|e| anyhow!("setting policy in spokehub.toml: {e}"))?;
        let mut task_policies = BTreeMap::new();
        for (task, section) in &file.tasks {
            let p = policy
                .with(&section.policy)
                .map_err(|e| anyhow!("setting tasks.{task}.policy in spokehub.toml: {e}"))?;
            task_policies.insert(task.clone(), p);
        }
        let access = hub_access(args, &file.hub)?;
        let redeliver_every = match &file.hub.redeliver_every {
            None => Some(Duration::from_secs(5 * 60)),
            Some(s) => {
                let d = parse_duration(s)
                    .map_err(|e| anyhow!("setting hub.redeliver_every in spokehub.toml: {e}"))?;
                (!d.is_zero()).then_some(d)
            }
        };
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
            policy,
            task_policies,
        })
    }
}

/// `hub.repository` (or `SPOKEHUB_HUB_REPOSITORY`), `hub.allowed_refs`, `hub.allowed_senders`.
fn hub_access(args: &ServeArgs, hub: &HubSection) -> anyhow::Result<HubAccess> {
    let (names, setting) = match (&args.hub_repository, &hub.repository) {
        (Some(env), _) => (
            env.split(',').map(|s| s.trim().to_owned()).collect::<Vec<_>>(),
            "SPOKEHUB_HUB_REPOSITORY",
        ),
        (None, Some(file)) => (
            match file {
                OneOrMany::One(s) => vec![s.clone()],
                OneOrMany::Many(v) => v.clone(),
            },
            "hub.repository in the configuration file",
        ),
        (None, None) => bail!(
            "missing setting SPOKEHUB_HUB_REPOSITORY (--hub-repository, or hub.repository in spokehub.toml): \
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
        bail!("setting hub.allowed_refs: {bad:?} is not a ref");
    }
    Ok(HubAccess {
        repositories,
        allowed_refs,
        allowed_senders: hub.allowed_senders.clone(),
    })
}

/// Reads and validates `spokehub.toml`.
pub fn read_file_config(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read configuration file {}", path.display()))?;
    parse_file_config(&text)
        .with_context(|| format!("invalid configuration file {}", path.display()))
}

pub fn parse_file_config(text: &str) -> anyhow::Result<FileConfig> {
    Ok(toml::from_str(text)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> ServeArgs {
        ServeArgs {
            app_id: Some(7),
            private_key: Some(
                "-----BEGIN RSA PRIVATE KEY-----\nx\n-----END RSA PRIVATE KEY-----".into(),
            ),
            webhook_secret: Some("new, old".into()),
            hub_repository: Some("acme/hub".into()),
            ..ServeArgs::default()
        }
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
            !shown.contains("new") && !shown.contains("BEGIN RSA"),
            "{shown}"
        );
    }
}
