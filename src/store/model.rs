//! What the ledger holds, as both backends read and write it: the public records and the rows
//! they are decoded from (the same column names and types on SQLite and Postgres).

use serde::Serialize;

use super::{corrupt, StoreResult};
use crate::hub::ids::AGENT_TARGET_PREFIX;
use crate::hub::{
    HubRunId, InstallationId, Lease, RepoName, RunMode, RunStatus, Sha, Spoke, SpokeStatus,
    Transition,
};

/// A verified delivery about to be recorded.
pub struct NewDelivery<'a> {
    pub guid: &'a str,
    pub event: &'a str,
    pub action: Option<&'a str>,
    pub installation_id: Option<u64>,
    /// Shared, not copied, on its way to the database.
    pub payload: bytes::Bytes,
}

/// A recorded delivery waiting to be processed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredDelivery {
    pub guid: String,
    pub event: String,
    pub payload: Vec<u8>,
    pub received_at: i64,
}

/// A run about to be recorded (status `planning`).
pub struct NewRun<'a> {
    pub id: HubRunId,
    pub installation_id: InstallationId,
    pub hub_repo: &'a RepoName,
    pub task: &'a str,
    pub targets: &'a str,
    pub params: &'a str,
    pub dry_run: bool,
    pub git_ref: &'a str,
    pub sender: &'a str,
    pub trigger_delivery: Option<&'a str>,
    pub deadline_at: i64,
    pub mode: RunMode,
}

/// A stored run.
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    pub id: HubRunId,
    pub installation_id: InstallationId,
    pub hub_repo: RepoName,
    pub task: String,
    pub targets: String,
    pub params: String,
    pub dry_run: bool,
    pub git_ref: String,
    pub head_sha: Option<Sha>,
    pub sender: String,
    pub status: RunStatus,
    pub conclusion: Option<String>,
    pub reason: Option<String>,
    /// An operator asked to cancel the run: nothing more is dispatched and it concludes
    /// `cancelled`.
    pub cancel_requested: bool,
    pub check_run_id: Option<u64>,
    pub created_at: i64,
    pub deadline_at: i64,
    pub completed_at: Option<i64>,
    pub mode: RunMode,
}

/// A spoke as planned: a target (`planned`) or a repository skipped with a reason.
#[derive(Debug, Clone)]
pub struct NewSpoke {
    pub repo: RepoName,
    pub default_branch: String,
    pub status: SpokeStatus,
    pub reason: Option<String>,
}

/// A stored spoke with what the dispatcher needs besides its state.
#[derive(Debug, Clone)]
pub struct SpokeRecord {
    pub spoke: Spoke,
    pub default_branch: String,
}

/// What a transition did, as persisted.
#[derive(Debug, Clone)]
pub struct TransitionRecord {
    /// The spoke before the event.
    pub before: Spoke,
    /// The domain's verdict.
    pub transition: Transition,
}

impl TransitionRecord {
    /// The spoke as it is now.
    pub fn current(&self) -> &Spoke {
        match &self.transition {
            Transition::Changed(s) | Transition::Conflict { spoke: s, .. } => s,
            _ => &self.before,
        }
    }
}

/// A self-hosted agent of pulled work (its token is stored only as a hash, and never read).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct AgentRecord {
    pub name: String,
    /// Unix ms.
    pub created_at: i64,
    pub revoked_at: Option<i64>,
    /// When its token was last accepted.
    pub last_seen_at: Option<i64>,
}

/// The columns of an agent row (`SELECT {AGENT_COLUMNS}`).
pub(super) const AGENT_COLUMNS: &str = "name, created_at, revoked_at, last_seen_at";

/// One status's line of a run's spoke fingerprint: status, count, attempts, latest end,
/// latest start, reasons' length, run ids, run links, summaries' length.
pub(super) type FingerprintRow = (String, i64, i64, i64, i64, i64, i64, i64, i64);

/// The columns of a run row (`SELECT {RUN_COLUMNS}`).
pub(super) const RUN_COLUMNS: &str =
    "id, installation_id, hub_repo, task, targets, params, dry_run, git_ref, head_sha, sender,
     status, conclusion, reason, cancel_requested, check_run_id, created_at, deadline_at,
     completed_at, mode";

#[derive(sqlx::FromRow)]
pub(super) struct RunRow {
    id: String,
    installation_id: i64,
    hub_repo: String,
    task: String,
    targets: String,
    params: String,
    dry_run: bool,
    git_ref: String,
    head_sha: Option<String>,
    sender: String,
    status: String,
    conclusion: Option<String>,
    reason: Option<String>,
    cancel_requested: bool,
    check_run_id: Option<i64>,
    created_at: i64,
    deadline_at: i64,
    completed_at: Option<i64>,
    mode: String,
}

impl RunRow {
    pub(super) fn into_record(self) -> StoreResult<RunRecord> {
        Ok(RunRecord {
            id: self.id.parse().map_err(|e| corrupt("runs", e))?,
            installation_id: InstallationId(self.installation_id as u64),
            hub_repo: self.hub_repo.parse().map_err(|e| corrupt("runs", e))?,
            task: self.task,
            targets: self.targets,
            params: self.params,
            dry_run: self.dry_run,
            git_ref: self.git_ref,
            head_sha: self
                .head_sha
                .map(|s| s.parse())
                .transpose()
                .map_err(|e| corrupt("runs", e))?,
            sender: self.sender,
            status: self.status.parse().map_err(|e| corrupt("runs", e))?,
            conclusion: self.conclusion,
            reason: self.reason,
            cancel_requested: self.cancel_requested,
            check_run_id: self.check_run_id.map(|i| i as u64),
            created_at: self.created_at,
            deadline_at: self.deadline_at,
            completed_at: self.completed_at,
            mode: self.mode.parse().map_err(|e| corrupt("runs", e))?,
        })
    }
}

/// The columns of a spoke row (`SELECT {SPOKE_COLUMNS}`).
pub(super) const SPOKE_COLUMNS: &str =
    "repo, default_branch, status, reason, attempt, workflow_run_id, run_url,
     dispatched_at, started_at, finished_at, due_at, conflicts, summary, retry_after,
     lease_id, lease_worker, lease_until";

#[derive(sqlx::FromRow)]
pub(super) struct SpokeRow {
    repo: String,
    default_branch: String,
    status: String,
    reason: Option<String>,
    attempt: i64,
    workflow_run_id: Option<i64>,
    run_url: Option<String>,
    dispatched_at: Option<i64>,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    due_at: Option<i64>,
    conflicts: i64,
    summary: Option<String>,
    retry_after: Option<String>,
    lease_id: Option<String>,
    lease_worker: Option<String>,
    lease_until: Option<i64>,
}

impl SpokeRow {
    pub(super) fn into_record(self) -> StoreResult<SpokeRecord> {
        Ok(SpokeRecord {
            spoke: Spoke {
                repo: self.repo.parse().map_err(|e| corrupt("spokes", e))?,
                status: self
                    .status
                    .parse()
                    .map_err(|_| corrupt("spokes", &self.status))?,
                reason: self.reason,
                attempt: self.attempt as u32,
                workflow_run_id: self.workflow_run_id.map(|v| v as u64),
                run_url: self.run_url,
                dispatched_at: self.dispatched_at,
                started_at: self.started_at,
                finished_at: self.finished_at,
                due_at: self.due_at,
                conflicts: self.conflicts as u32,
                summary: self.summary,
                retry_after: self
                    .retry_after
                    .map(|s| s.parse().map_err(|_| corrupt("spokes", &s)))
                    .transpose()?,
                lease: match (self.lease_id, self.lease_worker, self.lease_until) {
                    (Some(id), Some(worker), Some(until)) => Some(Lease { id, worker, until }),
                    (None, None, None) => None,
                    _ => return Err(corrupt("spokes", "a lease with missing parts")),
                },
            },
            default_branch: self.default_branch,
        })
    }
}

/// Whose queued work a claim may take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkScope {
    /// A self-hosted agent, by name: the items of pull runs over repositories (any agent may
    /// take them), and those whose target is this agent.
    Agent(String),
    /// A worker job the hub started for one hybrid run: that run's items only.
    RunWorkers(HubRunId),
}

impl WorkScope {
    /// The run mode, (for run workers) the run whose items are in scope, and the agent target
    /// in scope besides the repositories (none matches for run workers).
    pub(super) fn filter(&self) -> (&'static str, Option<String>, String) {
        match self {
            WorkScope::Agent(name) => (
                RunMode::Pull.as_str(),
                None,
                format!("{AGENT_TARGET_PREFIX}{name}"),
            ),
            WorkScope::RunWorkers(id) => (
                RunMode::Hybrid.as_str(),
                Some(id.to_string()),
                String::new(),
            ),
        }
    }

    /// `LIKE` pattern of every agent target.
    pub(super) fn agent_targets() -> String {
        format!("{AGENT_TARGET_PREFIX}%")
    }
}

/// A (run id, repository) pair as stored.
pub(super) fn run_and_repo((run, repo): (String, String)) -> StoreResult<(HubRunId, RepoName)> {
    Ok((
        run.parse().map_err(|e| corrupt("spokes", e))?,
        repo.parse().map_err(|e| corrupt("spokes", e))?,
    ))
}
