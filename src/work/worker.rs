//! Who is asking for work: a self-hosted agent (its own token). Every request of the work API
//! names its sender first; a refusal says why without repeating the token.

use crate::store::{AgentRecord, Store, StoreError, WorkScope};

use super::agents::{self, AgentRefused};

/// An authenticated sender of work-API requests.
#[derive(Debug, Clone)]
pub enum Worker {
    /// A self-hosted agent: claims the items of pull runs.
    Agent(AgentRecord),
}

impl Worker {
    /// Whose queued work it may claim.
    pub fn scope(&self) -> WorkScope {
        match self {
            Worker::Agent(_) => WorkScope::Agents,
        }
    }

    /// The holder its leases name: the agent's name, or `name/ID` when the agent runs several
    /// workers (`worker` in the claim).
    pub fn holder(&self, worker: Option<&str>) -> String {
        let Worker::Agent(agent) = self;
        match worker
            .map(str::trim)
            .filter(|w| !w.is_empty() && *w != agent.name)
        {
            Some(w) => format!("{}/{}", agent.name, printable(w)),
            None => agent.name.clone(),
        }
    }

    /// Whether a lease held by `holder` is this worker's.
    pub fn holds(&self, holder: &str) -> bool {
        let Worker::Agent(agent) = self;
        holder == agent.name
            || holder
                .strip_prefix(agent.name.as_str())
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
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Refused {
    /// The label of the refusal in metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Refused::Missing => "missing_token",
            Refused::Unknown => "unknown_token",
            Refused::Store(_) => "store",
        }
    }
}

/// The worker a bearer token belongs to.
pub async fn identify(store: &Store, bearer: Option<&str>) -> Result<Worker, Refused> {
    match agents::authenticate(store, bearer).await {
        Ok(agent) => Ok(Worker::Agent(agent)),
        Err(AgentRefused::Missing) => Err(Refused::Missing),
        Err(AgentRefused::Unknown) => Err(Refused::Unknown),
        Err(AgentRefused::Store(e)) => Err(Refused::Store(e)),
    }
}
