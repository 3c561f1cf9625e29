//! Everything the emulated GitHub holds: repositories, workflow runs, check runs, webhook
//! deliveries, tokens and counters. One `World` behind one mutex; every lookup is by index.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

use super::json::Ctx;
use super::scenario::{RepoConfig, Scenario, SpokeWorkflowKind};
use super::workflow::{self, WorkflowInfo};

/// A workflow file in a repository.
#[derive(Debug, Clone)]
pub struct WorkflowDef {
    pub id: u64,
    /// File name, e.g. `spokehub-spoke.yml`.
    pub file: String,
    /// `.github/workflows/<file>`.
    pub path: String,
    pub text: Arc<str>,
    pub info: WorkflowInfo,
}

/// One repository of the organization (all are in the installation).
#[derive(Debug, Clone)]
pub struct Repo {
    pub id: u64,
    pub name: String,
    pub full_name: String,
    pub default_branch: String,
    pub head_sha: String,
    pub archived: bool,
    pub fork: bool,
    pub visibility: String,
    pub topics: Vec<String>,
    pub properties: BTreeMap<String, String>,
    pub workflows: Vec<WorkflowDef>,
    /// Forced conclusion of every run here.
    pub conclusion: Option<String>,
    /// Runs here never complete on their own.
    pub stuck: bool,
    /// How long runs here last (ms, a range), instead of the scenario's `spoke.duration_ms`.
    pub duration_ms: Option<[u64; 2]>,
    /// The summary the spoke's report sends.
    pub summary: Option<String>,
    /// Workflow run ids, in creation order.
    pub runs: Vec<u64>,
    /// Check run ids, in creation order.
    pub check_runs: Vec<u64>,
    pub next_run_number: u64,
    /// The REST JSON of this repository, serialized once (it never changes).
    pub rest_json: std::sync::OnceLock<Arc<str>>,
    /// The webhook `repository` JSON, serialized once.
    pub hook_json: std::sync::OnceLock<Arc<str>>,
    /// The `repository-lite` JSON (inside workflow runs), serialized once.
    pub lite_json: std::sync::OnceLock<Arc<str>>,
}

impl Repo {
    /// A workflow by file name, path or numeric id.
    pub fn workflow(&self, key: &str) -> Option<&WorkflowDef> {
        self.workflows.iter().find(|w| {
            w.file == key || w.path == key || key.parse::<u64>().is_ok_and(|id| id == w.id)
        })
    }
}

/// A simulated workflow run.
#[derive(Debug, Clone)]
pub struct WorkflowRun {
    pub id: u64,
    pub repo: usize,
    pub workflow_id: u64,
    pub workflow_file: String,
    pub workflow_name: String,
    pub path: String,
    pub head_branch: String,
    pub head_sha: String,
    pub display_title: String,
    pub run_number: u64,
    pub run_attempt: u64,
    pub event: String,
    pub status: &'static str,
    pub conclusion: Option<String>,
    pub inputs: BTreeMap<String, String>,
    pub actor: String,
    pub html_url: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Check-run `output`.
#[derive(Debug, Clone, Default)]
pub struct Output {
    pub title: Option<String>,
    pub summary: Option<String>,
    pub text: Option<String>,
}

/// A check run created by the App.
#[derive(Debug, Clone)]
pub struct CheckRun {
    pub id: u64,
    pub repo: usize,
    pub head_sha: String,
    pub name: String,
    pub status: String,
    pub conclusion: Option<String>,
    pub output: Output,
    pub annotations_count: u64,
    pub actions: Vec<Value>,
    pub external_id: Option<String>,
    pub details_url: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub check_suite_id: u64,
    /// Number of PATCHes applied.
    pub updates: u64,
}

/// One webhook delivery (and its redeliveries, which are separate records with the same GUID).
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: u64,
    pub guid: String,
    pub event: String,
    pub action: Option<String>,
    pub repository_id: Option<u64>,
    pub redelivery: bool,
    pub delivered_at: DateTime<Utc>,
    /// HTTP status of the receiver's answer; 0 while pending, dropped or on a transport error.
    pub status_code: u16,
    /// `pending`, `OK`, `dropped`, or the failure text.
    pub status: String,
    pub duration_ms: u64,
    /// Where it was sent (one of the webhook URLs, round-robin); `None` while pending.
    pub url: Option<String>,
    /// The payload, as shared fragments (see [`super::json::Pieces`]).
    pub body: Arc<super::json::Pieces>,
}

/// An installation access token.
#[derive(Debug, Clone)]
pub struct Token {
    pub expires_at: DateTime<Utc>,
    /// The repositories and permissions it was narrowed to.
    pub scope: super::scopes::TokenScope,
}

/// A `repository_dispatch` event created through the API (or by a simulated spoke).
#[derive(Debug, Clone, serde::Serialize)]
pub struct RepoDispatch {
    pub repo: String,
    pub event_type: String,
    pub client_payload: Value,
}

/// Counters kept for `/_emulator/state?summary=1`.
#[derive(Debug, Default, Clone)]
pub struct Counters {
    pub requests_total: u64,
    pub requests_by_route: HashMap<String, u64>,
    /// Requests by the API version they selected (`X-GitHub-Api-Version`, default applied).
    pub requests_by_api_version: HashMap<&'static str, u64>,
    pub workflow_runs_created: u64,
    /// Spoke runs (dispatched, outside the hub repository) queued or in progress now, and the
    /// most there ever were at once.
    pub spoke_runs_active: u64,
    pub spoke_runs_peak_active: u64,
    pub webhooks_sent: u64,
    pub webhooks_dropped: u64,
    pub webhooks_duplicated: u64,
    pub rate_limit_violations: u64,
    /// The violations by method and route template (`POST /repos/{owner}/{repo}/...`).
    pub rate_limit_violations_by_route: HashMap<String, u64>,
    /// The first violation: what was sent, by which token, and who was told to wait when.
    pub first_rate_limit_violation: Option<String>,
    pub secondary_limit_hits: u64,
    pub primary_limit_hits: u64,
    pub api_errors_injected: u64,
    pub lost_responses: u64,
    pub tokens_minted: u64,
    /// Content-creating requests answered (dispatches, check-run creations): GitHub allows an
    /// installation about 80 a minute and 500 an hour.
    pub content_creating_requests: u64,
}

/// Rate-limit bookkeeping for the installation token bucket.
#[derive(Debug, Default)]
pub struct RateState {
    /// Start of the current hour window (epoch s) and requests used in it.
    pub window_start: i64,
    pub used: u32,
    /// Times (ms since start) of recent content-creating requests, oldest first.
    pub content_times: std::collections::VecDeque<u64>,
    /// The client was told to wait until this instant (ms since start).
    pub blocked_until_ms: u64,
    /// Which token was told to wait (its last characters), and when (ms since start).
    pub blocked_by: String,
    pub blocked_at_ms: u64,
}

/// The whole emulated world.
pub struct World {
    pub repos: Vec<Repo>,
    pub repo_index: HashMap<String, usize>,
    pub hub_repo: usize,
    pub runs: HashMap<u64, WorkflowRun>,
    pub check_runs: HashMap<u64, CheckRun>,
    pub deliveries: Vec<Delivery>,
    pub dispatches: Vec<RepoDispatch>,
    pub tokens: HashMap<String, Token>,
    pub counters: Counters,
    pub rate: RateState,
    pub rng: StdRng,
    next_id: u64,
}

impl World {
    /// Builds the organization a scenario describes.
    pub fn new(sc: &Scenario) -> World {
        let mut rng = match sc.spoke.seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_entropy(),
        };
        let mut configs: Vec<RepoConfig> = (1..=sc.org.repos)
            .map(|i| RepoConfig {
                name: format!("svc-{i:04}"),
                topics: Vec::new(),
                archived: false,
                fork: false,
                visibility: "private".into(),
                properties: BTreeMap::new(),
                spoke_workflow: SpokeWorkflowKind::Present(true),
                workflow_yaml: None,
                conclusion: None,
                default_branch: "main".into(),
                stuck: false,
                duration_ms: None,
                summary: None,
            })
            .collect();
        let mut index: HashMap<String, usize> = configs
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.clone(), i))
            .collect();
        for c in &sc.org.repo {
            match index.get(&c.name) {
                Some(&i) => configs[i] = c.clone(),
                None => {
                    index.insert(c.name.clone(), configs.len());
                    configs.push(c.clone());
                }
            }
        }
        let hub_cfg_idx = match index.get(&sc.org.hub_repo) {
            Some(&i) => i,
            None => {
                configs.push(RepoConfig {
                    name: sc.org.hub_repo.clone(),
                    topics: Vec::new(),
                    archived: false,
                    fork: false,
                    visibility: "private".into(),
                    properties: BTreeMap::new(),
                    spoke_workflow: SpokeWorkflowKind::Present(false),
                    workflow_yaml: None,
                    conclusion: None,
                    default_branch: "main".into(),
                    stuck: false,
                    duration_ms: None,
                    summary: None,
                });
                index.insert(sc.org.hub_repo.clone(), configs.len() - 1);
                configs.len() - 1
            }
        };
        let mut next_wf_id = 90_000_000u64;
        let mut repos = Vec::with_capacity(configs.len());
        for (i, c) in configs.into_iter().enumerate() {
            let mut workflows = Vec::new();
            let mut add = |file: &str, text: String| {
                next_wf_id += 1;
                workflows.push(WorkflowDef {
                    id: next_wf_id,
                    file: file.to_owned(),
                    path: format!(".github/workflows/{file}"),
                    info: workflow::parse(&text, file),
                    text: text.into(),
                });
            };
            if i == hub_cfg_idx {
                add("spokehub-hub.yml", workflow::HUB_WORKFLOW.to_owned());
                add(&sc.workers.workflow, workflow::WORKERS_WORKFLOW.to_owned());
            }
            if let Some(text) = workflow::spoke_text(&c.spoke_workflow, c.workflow_yaml.as_deref())
            {
                add(&sc.spoke.workflow, text);
            }
            let head_sha: String = (0..40)
                .map(|_| char::from_digit(rng.gen_range(0..16), 16).unwrap_or('0'))
                .collect();
            repos.push(Repo {
                id: 500_000 + i as u64,
                full_name: format!("{}/{}", sc.org.login, c.name),
                name: c.name,
                default_branch: c.default_branch,
                head_sha,
                archived: c.archived,
                fork: c.fork,
                visibility: c.visibility,
                topics: c.topics,
                properties: c.properties,
                workflows,
                conclusion: c.conclusion,
                stuck: c.stuck,
                duration_ms: c.duration_ms,
                summary: c.summary,
                runs: Vec::new(),
                check_runs: Vec::new(),
                next_run_number: 1,
                rest_json: std::sync::OnceLock::new(),
                hook_json: std::sync::OnceLock::new(),
                lite_json: std::sync::OnceLock::new(),
            });
        }
        World {
            repo_index: index,
            hub_repo: hub_cfg_idx,
            repos,
            runs: HashMap::new(),
            check_runs: HashMap::new(),
            deliveries: Vec::new(),
            dispatches: Vec::new(),
            tokens: HashMap::new(),
            counters: Counters::default(),
            rate: RateState::default(),
            rng,
            next_id: 1_000_000_000,
        }
    }

    /// A fresh id for runs, check runs and deliveries.
    pub fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Finds a repository of the organization by owner and name.
    pub fn repo(&self, ctx: &Ctx, owner: &str, name: &str) -> Option<usize> {
        if !owner.eq_ignore_ascii_case(&ctx.org) {
            return None;
        }
        self.repo_index.get(name).copied()
    }

    /// A delivery by id.
    pub fn delivery(&self, id: u64) -> Option<&Delivery> {
        // Deliveries are appended with increasing ids: binary search.
        self.deliveries
            .binary_search_by_key(&id, |d| d.id)
            .ok()
            .map(|i| &self.deliveries[i])
    }

    /// A delivery by id, mutably.
    pub fn delivery_mut(&mut self, id: u64) -> Option<&mut Delivery> {
        self.deliveries
            .binary_search_by_key(&id, |d| d.id)
            .ok()
            .map(move |i| &mut self.deliveries[i])
    }
}
