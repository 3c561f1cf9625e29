//! The scenario file: which organization, repositories, spoke behaviour and faults the emulator
//! plays. TOML, every table rejects unknown keys so a typo is a clear error.

use std::collections::BTreeMap;
use std::path::Path;

use secrecy::SecretString;
use serde::Deserialize;

/// Why a scenario could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// TOML syntax or an unknown/mistyped key; the message names the key.
    #[error("invalid scenario: {0}")]
    Toml(String),
    /// A value that parses but makes no sense (e.g. `duration_ms = [5, 1]`).
    #[error("invalid scenario: {key}: {reason}")]
    Invalid { key: String, reason: String },
}

fn invalid(key: &str, reason: impl Into<String>) -> ScenarioError {
    ScenarioError::Invalid {
        key: key.to_owned(),
        reason: reason.into(),
    }
}

/// A TOML error naming the key and line, without quoting the line (it may hold a private key).
fn toml_error(src: &str, e: &toml::de::Error) -> ScenarioError {
    let msg = e.message().trim().to_owned();
    let Some(span) = e.span() else {
        return ScenarioError::Toml(msg);
    };
    let start = span.start.min(src.len());
    let line_no = src[..start].matches('\n').count() + 1;
    let line = src.lines().nth(line_no - 1).unwrap_or("");
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim())
        .filter(|k| !k.is_empty() && !k.starts_with('['));
    ScenarioError::Toml(match key {
        Some(k) => format!("{msg} (key `{k}`, line {line_no})"),
        None => format!("{msg} (line {line_no})"),
    })
}

/// A whole scenario.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    #[serde(default)]
    pub app: AppConfig,
    #[serde(default)]
    pub org: OrgConfig,
    #[serde(default)]
    pub spoke: SpokeConfig,
    #[serde(default)]
    pub faults: Faults,
    /// Signing in with GitHub: the App's OAuth client.
    #[serde(default)]
    pub oauth: OAuthConfig,
    /// People who can sign in, and what each may see (default: `octocat` with write access
    /// to every repository, `mona` with read access, `outsider` with none).
    #[serde(default = "default_users")]
    pub users: Vec<UserConfig>,
    /// The hub repository's worker workflow (hybrid tasks): its jobs run as real processes.
    #[serde(default)]
    pub workers: WorkersConfig,
}

/// `[workers]`: how the worker workflow's jobs run.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkersConfig {
    /// The worker workflow's file in the hub repository.
    #[serde(default = "default_workers_workflow")]
    pub workflow: String,
    /// This share of each worker run's jobs is SIGKILLed in the middle of its first item (a
    /// runner lost mid-task: the hub gets the item back when its lease runs out).
    #[serde(default)]
    pub kill_share: f64,
}

impl Default for WorkersConfig {
    fn default() -> Self {
        Self {
            workflow: default_workers_workflow(),
            kill_share: 0.0,
        }
    }
}

fn default_workers_workflow() -> String {
    "spokehub-workers.yml".into()
}

/// The App's OAuth client (the web flow of "Sign in with GitHub").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthConfig {
    /// Default `Iv1.<slug>`.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Random when absent.
    #[serde(default)]
    pub client_secret: Option<SecretString>,
    /// Lifetime of user-to-server tokens (GitHub: 8 hours).
    #[serde(default = "default_user_token_ttl")]
    pub token_ttl_s: u64,
    /// The App's registered callback URLs: a sign-in's `redirect_uri` must be one of them or
    /// below one (same scheme, host and port). Empty: any http(s) URL, until an App manifest
    /// or `POST /_emulator/oauth/callbacks` registers some.
    #[serde(default)]
    pub callback_urls: Vec<String>,
}

impl Default for OAuthConfig {
    fn default() -> Self {
        Self {
            client_id: None,
            client_secret: None,
            token_ttl_s: default_user_token_ttl(),
            callback_urls: Vec::new(),
        }
    }
}

fn default_user_token_ttl() -> u64 {
    28_800
}

/// A person of the organization: repository names they may read and write (`"*"`: all).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub login: String,
    #[serde(default)]
    pub read: Vec<String>,
    #[serde(default)]
    pub write: Vec<String>,
}

impl UserConfig {
    fn listed(list: &[String], repo: &str) -> bool {
        list.iter()
            .any(|r| r == "*" || r.eq_ignore_ascii_case(repo))
    }
    /// Whether this person may read repository `name` (of the organization).
    pub fn can_read(&self, name: &str) -> bool {
        self.can_write(name) || Self::listed(&self.read, name)
    }
    /// Whether this person may push to repository `name`.
    pub fn can_write(&self, name: &str) -> bool {
        Self::listed(&self.write, name)
    }
}

fn default_users() -> Vec<UserConfig> {
    let user = |login: &str, read: &[&str], write: &[&str]| UserConfig {
        login: login.into(),
        read: read.iter().map(|s| s.to_string()).collect(),
        write: write.iter().map(|s| s.to_string()).collect(),
    };
    vec![
        user("octocat", &[], &["*"]),
        user("mona", &["*"], &[]),
        user("outsider", &[], &[]),
    ]
}

/// The emulated GitHub App.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    #[serde(default = "default_app_id")]
    pub id: u64,
    #[serde(default = "default_installation_id")]
    pub installation_id: u64,
    #[serde(default = "default_slug")]
    pub slug: String,
    /// PEM of the App's RSA private key; generated at start when neither this nor the file is given.
    #[serde(default)]
    pub private_key: Option<SecretString>,
    /// Path of a PEM file with the App's private key (relative to the current directory).
    #[serde(default)]
    pub private_key_file: Option<String>,
    /// Webhook secret; random when absent.
    #[serde(default)]
    pub webhook_secret: Option<SecretString>,
}

impl Default for AppConfig {
    fn default() -> Self {
        Self {
            id: default_app_id(),
            installation_id: default_installation_id(),
            slug: default_slug(),
            private_key: None,
            private_key_file: None,
            webhook_secret: None,
        }
    }
}

fn default_app_id() -> u64 {
    424242
}
fn default_installation_id() -> u64 {
    7_000_001
}
fn default_slug() -> String {
    "spokehub".into()
}

/// The organization and its repositories.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgConfig {
    #[serde(default = "default_org")]
    pub login: String,
    /// Number of generated repositories `svc-0001`, `svc-0002`, ...
    #[serde(default = "default_repos")]
    pub repos: usize,
    /// The hub repository (holds the hub workflow, receives `spoke_complete` dispatches).
    #[serde(default = "default_hub_repo")]
    pub hub_repo: String,
    /// Explicit repositories (added to, or overriding, the generated ones by name).
    #[serde(default)]
    pub repo: Vec<RepoConfig>,
}

impl Default for OrgConfig {
    fn default() -> Self {
        Self {
            login: default_org(),
            repos: default_repos(),
            hub_repo: default_hub_repo(),
            repo: Vec::new(),
        }
    }
}

fn default_org() -> String {
    "acme".into()
}
fn default_repos() -> usize {
    10
}
fn default_hub_repo() -> String {
    "platform-hub".into()
}

/// How a repository's spoke workflow looks.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum SpokeWorkflowKind {
    /// `true`: the standard spoke workflow; `false`: no spoke workflow file.
    Present(bool),
    /// `"standard"`, `"none"`, `"no_dispatch"` (no `workflow_dispatch` trigger) or
    /// `"other_inputs"` (declares only an input `version`).
    Named(String),
}

/// One explicit repository.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoConfig {
    pub name: String,
    #[serde(default)]
    pub topics: Vec<String>,
    #[serde(default)]
    pub archived: bool,
    #[serde(default)]
    pub fork: bool,
    /// `public`, `private` (default) or `internal`.
    #[serde(default = "default_visibility")]
    pub visibility: String,
    /// Custom property values.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    #[serde(default = "default_spoke_workflow")]
    pub spoke_workflow: SpokeWorkflowKind,
    /// An explicit spoke workflow file text; wins over `spoke_workflow`.
    #[serde(default)]
    pub workflow_yaml: Option<String>,
    /// Forces the conclusion of every run in this repository (e.g. `failure`).
    #[serde(default)]
    pub conclusion: Option<String>,
    #[serde(default = "default_branch")]
    pub default_branch: String,
    /// Runs here start but never complete on their own (only a cancel ends them).
    #[serde(default)]
    pub stuck: bool,
    /// How long runs here last (ms, a range), instead of `spoke.duration_ms`.
    #[serde(default)]
    pub duration_ms: Option<[u64; 2]>,
    /// The summary the spoke's report sends with its result (Markdown, as a task writes it).
    #[serde(default)]
    pub summary: Option<String>,
}

fn default_visibility() -> String {
    "private".into()
}
fn default_spoke_workflow() -> SpokeWorkflowKind {
    SpokeWorkflowKind::Present(true)
}
fn default_branch() -> String {
    "main".into()
}

/// How `spoke_complete` reaches the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Callback {
    RepositoryDispatch,
    None,
    /// The real report action script (`action/report.sh`) runs at spoke completion and sends
    /// the callback through the emulator's API, as on a runner.
    Action,
}

/// Simulated spoke runs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpokeConfig {
    #[serde(default = "default_workflow")]
    pub workflow: String,
    #[serde(default = "default_duration")]
    pub duration_ms: [u64; 2],
    #[serde(default)]
    pub failure_rate: f64,
    #[serde(default = "default_callback")]
    pub callback: Callback,
    #[serde(default = "default_token_lifetime")]
    pub token_lifetime_s: u64,
    /// Seed of the RNG deciding durations and failures (random when absent).
    #[serde(default)]
    pub seed: Option<u64>,
    /// With `callback = "action"`: the report script (default: `action/report.sh` of the
    /// source tree, else found next to the binary).
    #[serde(default)]
    pub action_script: Option<String>,
    /// With `callback = "action"`: how many report scripts may run at once.
    #[serde(default = "default_action_concurrency")]
    pub action_concurrency: usize,
    /// Probability that a run starts but never completes on its own (a stuck runner).
    #[serde(default)]
    pub stuck_rate: f64,
}

impl Default for SpokeConfig {
    fn default() -> Self {
        Self {
            workflow: default_workflow(),
            duration_ms: default_duration(),
            failure_rate: 0.0,
            callback: default_callback(),
            token_lifetime_s: default_token_lifetime(),
            seed: None,
            action_script: None,
            action_concurrency: default_action_concurrency(),
            stuck_rate: 0.0,
        }
    }
}

fn default_workflow() -> String {
    "spokehub-spoke.yml".into()
}
fn default_duration() -> [u64; 2] {
    [20, 200]
}
fn default_callback() -> Callback {
    Callback::RepositoryDispatch
}
fn default_action_concurrency() -> usize {
    16
}
fn default_token_lifetime() -> u64 {
    3600
}

/// Injected faults. Rates are probabilities in `[0, 1]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    #[serde(default)]
    pub api_error_rate: f64,
    #[serde(default)]
    pub api_latency_ms: u64,
    #[serde(default)]
    pub lost_response_rate: f64,
    /// Content-creating requests allowed per secondary-limit window (GitHub: per minute).
    #[serde(default)]
    pub secondary_limit_per_minute: Option<u32>,
    /// Length of that window in milliseconds (60000 like GitHub; shorter keeps tests short).
    #[serde(default = "default_secondary_window")]
    pub secondary_window_ms: u64,
    #[serde(default = "default_rate_limit")]
    pub rate_limit_per_hour: u32,
    #[serde(default)]
    pub webhook_drop_rate: f64,
    #[serde(default)]
    pub webhook_duplicate_rate: f64,
    #[serde(default)]
    pub webhook_delay_ms: u64,
    #[serde(default)]
    pub ghes_3_20: bool,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            api_error_rate: 0.0,
            api_latency_ms: 0,
            lost_response_rate: 0.0,
            secondary_limit_per_minute: None,
            secondary_window_ms: default_secondary_window(),
            rate_limit_per_hour: default_rate_limit(),
            webhook_drop_rate: 0.0,
            webhook_duplicate_rate: 0.0,
            webhook_delay_ms: 0,
            ghes_3_20: false,
        }
    }
}

fn default_rate_limit() -> u32 {
    15000
}
fn default_secondary_window() -> u64 {
    60_000
}

impl Default for Scenario {
    fn default() -> Self {
        Self::generated(default_repos())
    }
}

impl Scenario {
    /// Parses and checks a scenario.
    pub fn from_toml(s: &str) -> Result<Scenario, ScenarioError> {
        let sc: Scenario = toml::from_str(s).map_err(|e| toml_error(s, &e))?;
        sc.validate()?;
        Ok(sc)
    }

    /// Reads a scenario file.
    pub fn load(path: &Path) -> anyhow::Result<Scenario> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read scenario {}: {e}", path.display()))?;
        Scenario::from_toml(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// The defaults with `repos` generated repositories `svc-0001`...
    pub fn generated(repos: usize) -> Scenario {
        Scenario {
            app: AppConfig::default(),
            org: OrgConfig {
                repos,
                ..OrgConfig::default()
            },
            spoke: SpokeConfig::default(),
            faults: Faults::default(),
            oauth: OAuthConfig::default(),
            users: default_users(),
            workers: WorkersConfig::default(),
        }
    }

    fn validate(&self) -> Result<(), ScenarioError> {
        let rates = [
            ("spoke.failure_rate", self.spoke.failure_rate),
            ("spoke.stuck_rate", self.spoke.stuck_rate),
            ("workers.kill_share", self.workers.kill_share),
            ("faults.api_error_rate", self.faults.api_error_rate),
            ("faults.lost_response_rate", self.faults.lost_response_rate),
            ("faults.webhook_drop_rate", self.faults.webhook_drop_rate),
            (
                "faults.webhook_duplicate_rate",
                self.faults.webhook_duplicate_rate,
            ),
        ];
        for (key, v) in rates {
            if !(0.0..=1.0).contains(&v) {
                return Err(invalid(key, format!("{v} is not within [0, 1]")));
            }
        }
        let [lo, hi] = self.spoke.duration_ms;
        if lo > hi {
            return Err(invalid("spoke.duration_ms", "min is greater than max"));
        }
        for repo in &self.org.repo {
            if let Some([lo, hi]) = repo.duration_ms {
                if lo > hi {
                    return Err(invalid(
                        "org.repo.duration_ms",
                        format!("{}: min is greater than max", repo.name),
                    ));
                }
            }
        }
        let mut logins = std::collections::HashSet::new();
        for u in &self.users {
            if u.login.is_empty()
                || !u
                    .login
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-')
            {
                return Err(invalid(
                    "users.login",
                    format!("{:?} is not a GitHub login", u.login),
                ));
            }
            if !logins.insert(u.login.to_ascii_lowercase()) {
                return Err(invalid(
                    "users.login",
                    format!("{} is listed twice", u.login),
                ));
            }
        }
        for u in &self.oauth.callback_urls {
            if !url::Url::parse(u).is_ok_and(|u| matches!(u.scheme(), "http" | "https")) {
                return Err(invalid(
                    "oauth.callback_urls",
                    format!("{u:?} is not an http(s) URL"),
                ));
            }
        }
        if self.oauth.token_ttl_s == 0 {
            return Err(invalid("oauth.token_ttl_s", "must be at least 1"));
        }
        if self.spoke.action_concurrency == 0 {
            return Err(invalid("spoke.action_concurrency", "must be at least 1"));
        }
        if self.faults.secondary_window_ms == 0 {
            return Err(invalid("faults.secondary_window_ms", "must be at least 1"));
        }
        if self.spoke.token_lifetime_s == 0 {
            return Err(invalid("spoke.token_lifetime_s", "must be at least 1"));
        }
        if self.org.login.is_empty() {
            return Err(invalid("org.login", "must not be empty"));
        }
        if self.org.hub_repo.is_empty() {
            return Err(invalid("org.hub_repo", "must not be empty"));
        }
        if self.app.private_key.is_some() && self.app.private_key_file.is_some() {
            return Err(invalid(
                "app.private_key",
                "give private_key or private_key_file, not both",
            ));
        }
        for (i, r) in self.org.repo.iter().enumerate() {
            let key = format!("org.repo[{i}]");
            if r.name.is_empty() || r.name.contains('/') {
                return Err(invalid(
                    &format!("{key}.name"),
                    "must be a bare repository name",
                ));
            }
            if !matches!(r.visibility.as_str(), "public" | "private" | "internal") {
                return Err(invalid(
                    &format!("{key}.visibility"),
                    "must be public, private or internal",
                ));
            }
            if let SpokeWorkflowKind::Named(n) = &r.spoke_workflow {
                if !matches!(
                    n.as_str(),
                    "standard" | "none" | "no_dispatch" | "other_inputs"
                ) {
                    return Err(invalid(
                        &format!("{key}.spoke_workflow"),
                        "must be true, false, \"standard\", \"none\", \"no_dispatch\" or \"other_inputs\"",
                    ));
                }
            }
            if let Some(c) = &r.conclusion {
                if !CONCLUSIONS.contains(&c.as_str()) {
                    return Err(invalid(
                        &format!("{key}.conclusion"),
                        format!("must be one of {CONCLUSIONS:?}"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Conclusions a scenario may force on a repository's runs.
pub const CONCLUSIONS: &[&str] = &[
    "success",
    "failure",
    "neutral",
    "cancelled",
    "skipped",
    "timed_out",
    "action_required",
    "stale",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let s = Scenario::from_toml("").unwrap();
        assert_eq!(s.org.login, "acme");
        assert_eq!(s.org.repos, 10);
        assert_eq!(s.org.hub_repo, "platform-hub");
        assert_eq!(s.spoke.workflow, "spokehub-spoke.yml");
        assert_eq!(s.spoke.duration_ms, [20, 200]);
        assert_eq!(s.spoke.callback, Callback::RepositoryDispatch);
        assert_eq!(s.faults.rate_limit_per_hour, 15000);
    }

    #[test]
    fn unknown_key_is_named() {
        let e = Scenario::from_toml("[spoke]\nfailure_rat = 0.1\n").unwrap_err();
        assert!(e.to_string().contains("failure_rat"), "{e}");
        let e = Scenario::from_toml("[[org.repo]]\nname = \"a\"\ncolour = 1\n").unwrap_err();
        assert!(e.to_string().contains("colour"), "{e}");
    }

    #[test]
    fn errors_do_not_quote_private_keys() {
        let e = Scenario::from_toml("[app]\nprivate_key = 42\n").unwrap_err();
        let text = e.to_string();
        assert!(text.contains("private_key"), "{text}");
        let e = Scenario::from_toml("[app]\nprivate_key = \"SECRETPEM\nwebhook = 1\n").unwrap_err();
        assert!(!e.to_string().contains("SECRETPEM"), "{e}");
    }

    #[test]
    fn bad_values_are_named() {
        let e = Scenario::from_toml("[spoke]\nduration_ms = [5, 1]\n").unwrap_err();
        assert!(e.to_string().contains("spoke.duration_ms"), "{e}");
        let e = Scenario::from_toml("[faults]\napi_error_rate = 2.0\n").unwrap_err();
        assert!(e.to_string().contains("faults.api_error_rate"), "{e}");
        let e =
            Scenario::from_toml("[[org.repo]]\nname = \"a\"\nconclusion = \"meh\"\n").unwrap_err();
        assert!(e.to_string().contains("org.repo[0].conclusion"), "{e}");
        let e = Scenario::from_toml("[spoke]\ncallback = \"carrier_pigeon\"\n").unwrap_err();
        assert!(e.to_string().contains("carrier_pigeon"), "{e}");
    }
}
