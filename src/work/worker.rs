//! Who is asking for work: a self-hosted agent (its own token), or a job of a worker-workflow
//! run the hub started for a hybrid run (its OIDC ID token). Every request of the work API
//! names its sender first; a refusal says why without repeating the token.

use crate::engine::Engine;
use crate::hub::HubRunId;
use crate::store::{AgentRecord, StoreError, WorkScope};

use super::agents::{self, AgentRefused};
use super::oidc::{OidcError, WorkerRefused, WorkerRule};

/// An authenticated sender of work-API requests.
#[derive(Debug, Clone)]
pub enum Worker {
    /// A self-hosted agent: claims the items of pull runs.
    Agent(AgentRecord),
    /// A job of a worker-workflow run the hub started: claims its hybrid run's items.
    Job {
        hub_run: HubRunId,
        workflow_run_id: u64,
    },
}

impl Worker {
    /// Whose queued work it may claim.
    pub fn scope(&self) -> WorkScope {
        match self {
            Worker::Agent(agent) => WorkScope::Agent(agent.name.clone()),
            Worker::Job { hub_run, .. } => WorkScope::RunWorkers(*hub_run),
        }
    }

    /// The holder its leases name: the agent's name (`run ID` for a worker-workflow run's
    /// jobs), with `/WORKER` when it runs several workers (`worker` in the claim).
    pub fn holder(&self, worker: Option<&str>) -> String {
        let name = self.name();
        match worker
            .map(str::trim)
            .filter(|w| !w.is_empty() && *w != name)
        {
            Some(w) => format!("{name}/{}", printable(w)),
            None => name,
        }
    }

    fn name(&self) -> String {
        match self {
            Worker::Agent(agent) => agent.name.clone(),
            Worker::Job {
                workflow_run_id, ..
            } => format!("run {workflow_run_id}"),
        }
    }

    /// Whether a lease held by `holder` is this worker's.
    pub fn holds(&self, holder: &str) -> bool {
        let name = self.name();
        holder == name
            || holder
                .strip_prefix(name.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
    }
}

/// A worker id as shown in leases and logs: printable, at most 64 characters.
fn printable(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(64).collect()
}

/// Why a request of the work API was refused for its sender.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("no bearer token")]
    Missing,
    #[error("the token is not the token of an active agent")]
    Unknown,
    #[error("the ID token is not accepted: {0}")]
    IdToken(OidcError),
    #[error("workers in GitHub Actions are not accepted: the hub has no public URL (SPOKEHUB_PUBLIC_URL) for their ID tokens to name")]
    NoAudience,
    #[error("{0}")]
    NotAWorker(WorkerRefused),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Refused {
    /// The label of the refusal in metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Refused::Missing => "missing_token",
            Refused::Unknown => "unknown_token",
            Refused::IdToken(OidcError::Unavailable(_)) => "issuer_unavailable",
            Refused::IdToken(_) => "bad_id_token",
            Refused::NoAudience => "no_audience",
            Refused::NotAWorker(_) => "not_a_worker",
            Refused::Store(_) => "store",
        }
    }

    /// Whether the sender is known but not allowed (403), rather than unknown (401).
    pub fn is_forbidden(&self) -> bool {
        matches!(self, Refused::NotAWorker(_))
    }
}

/// The worker a bearer token belongs to: an agent's token, or an Actions ID token of a job in
/// a worker-workflow run the hub started (from the hub repository's worker workflow, on the
/// branch the hub dispatched it on).
pub async fn identify(engine: &Engine, bearer: Option<&str>) -> Result<Worker, Refused> {
    let token = bearer.map(str::trim).filter(|t| !t.is_empty());
    match token {
        Some(t) if is_jwt(t) => job(engine, t).await,
        _ => match agents::authenticate(engine.store(), token).await {
            Ok(agent) => Ok(Worker::Agent(agent)),
            Err(AgentRefused::Missing) => Err(Refused::Missing),
            Err(AgentRefused::Unknown) => Err(Refused::Unknown),
            Err(AgentRefused::Store(e)) => Err(Refused::Store(e)),
        },
    }
}

/// Three base64url parts: a JSON web token (an agent token has none of its dots).
fn is_jwt(token: &str) -> bool {
    token.split('.').count() == 3
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

async fn job(engine: &Engine, token: &str) -> Result<Worker, Refused> {
    let verifier = engine.oidc().ok_or(Refused::NoAudience)?;
    let claims = verifier.verify(token).await.map_err(Refused::IdToken)?;
    let not_ours = || Refused::NotAWorker(WorkerRefused::Run(claims.run_id.clone()));
    let workflow_run_id: u64 = claims.run_id.parse().map_err(|_| not_ours())?;
    let hub_run = engine
        .store()
        .hub_run_of_worker(workflow_run_id)
        .await?
        .ok_or_else(not_ours)?;
    let run = engine.run_identity(&hub_run).await?.ok_or_else(not_ours)?;
    let rule = WorkerRule {
        hub_repo: run.hub_repo.to_string(),
        workflow_path: format!(".github/workflows/{}", engine.config().worker_workflow),
        default_branch: run
            .git_ref
            .strip_prefix("refs/heads/")
            .unwrap_or(&run.git_ref)
            .to_owned(),
    };
    rule.check(&claims, &[workflow_run_id])
        .map_err(Refused::NotAWorker)?;
    Ok(Worker::Job {
        hub_run,
        workflow_run_id,
    })
}
