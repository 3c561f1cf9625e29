//! Webhook deliveries: verify `X-Hub-Signature-256` on the raw body, then parse the events the
//! hub handles into the project's own small structs (octocrab's payload models are strict on
//! outer fields and drop `requested_action.identifier`).

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::Value;
use sha2::Sha256;

use super::types::WorkflowRun;
use crate::hub::{InstallationId, RepoName};

/// Why a delivery's signature was refused. Never carries the secret or the expected digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing X-Hub-Signature-256 header")]
    Missing,
    #[error("malformed X-Hub-Signature-256 header (expected sha256=<64 hex digits>)")]
    Malformed,
    #[error("no webhook secret is configured")]
    NoSecret,
    #[error("signature does not match any configured webhook secret")]
    Mismatch,
}

/// The digest in an `X-Hub-Signature-256` header (`sha256=<64 hex digits>`): checked before the
/// body is read, so that a request that cannot be genuine costs nothing.
pub fn signature_digest(header: Option<&str>) -> Result<Vec<u8>, SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?.trim();
    let hex_digest = header
        .strip_prefix("sha256=")
        .ok_or(SignatureError::Malformed)?;
    if hex_digest.len() != 64 {
        return Err(SignatureError::Malformed);
    }
    hex::decode(hex_digest).map_err(|_| SignatureError::Malformed)
}

/// Constant-time check of `X-Hub-Signature-256` (`sha256=<hex>`) over the raw body against every
/// configured secret (rotation). Missing header, bad format, or no secret matching -> Err.
pub fn verify_signature(
    secrets: &[SecretString],
    body: &[u8],
    header: Option<&str>,
) -> Result<(), SignatureError> {
    let given = signature_digest(header)?;
    if secrets.is_empty() {
        return Err(SignatureError::NoSecret);
    }
    // Check every secret (no early exit) so timing does not reveal which one matched.
    let mut matched = false;
    for secret in secrets {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose_secret().as_bytes())
            .expect("HMAC accepts keys of any length");
        mac.update(body);
        matched |= mac.verify_slice(&given).is_ok();
    }
    if matched {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// A handled event whose body could not be parsed (the caller answers 400).
#[derive(Debug, thiserror::Error)]
#[error("malformed {event} payload: {detail}")]
pub struct WebhookParseError {
    pub event: String,
    pub detail: String,
}

/// The events the hub handles.
#[derive(Debug, Clone, PartialEq)]
pub enum WebhookEvent {
    WorkflowDispatch(WorkflowDispatchEvent),
    RepositoryDispatch(RepositoryDispatchEvent),
    WorkflowRun(WorkflowRunEvent),
    CheckRun(CheckRunEvent),
}

/// Someone ran the hub workflow (`workflow_dispatch` webhook; carries no run id).
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowDispatchEvent {
    pub installation_id: Option<InstallationId>,
    pub repository: RepoName,
    /// Workflow file path, e.g. `.github/workflows/spokehub-hub.yml`.
    pub workflow: String,
    pub git_ref: String,
    /// The hub repository's default branch, as the delivery names it.
    pub default_branch: Option<String>,
    /// `null` inputs become an empty map.
    pub inputs: serde_json::Map<String, Value>,
    pub sender: String,
}

/// A spoke reported back (`repository_dispatch` webhook).
#[derive(Debug, Clone, PartialEq)]
pub struct RepositoryDispatchEvent {
    pub installation_id: Option<InstallationId>,
    pub repository: RepoName,
    /// The dispatch's `event_type`.
    pub action: String,
    pub client_payload: Value,
    pub sender: String,
}

/// A workflow run changed state (`requested`, `in_progress`, `completed`).
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowRunEvent {
    pub installation_id: Option<InstallationId>,
    pub action: String,
    pub repository: RepoName,
    pub run: WorkflowRun,
}

/// A check run event (`created`, `completed`, `rerequested`, `requested_action`, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct CheckRunEvent {
    pub installation_id: Option<InstallationId>,
    pub action: String,
    pub repository: RepoName,
    pub check_run_id: u64,
    /// The App that created the check run (`check_run.app.id`).
    pub app_id: Option<u64>,
    pub name: String,
    pub head_sha: String,
    /// `None` when absent, null or empty.
    pub external_id: Option<String>,
    /// `requested_action.identifier` for `requested_action` events.
    pub requested_action: Option<String>,
    /// Who pressed the button or asked for the re-run.
    pub sender: Option<String>,
}

#[derive(Deserialize)]
struct Installation {
    id: u64,
}
#[derive(Deserialize)]
struct Repository {
    full_name: RepoName,
    #[serde(default)]
    default_branch: Option<String>,
}
#[derive(Deserialize)]
struct App {
    id: u64,
}
#[derive(Deserialize)]
struct Sender {
    login: String,
}

#[derive(Deserialize)]
struct RawWorkflowDispatch {
    installation: Option<Installation>,
    repository: Repository,
    workflow: String,
    #[serde(rename = "ref")]
    git_ref: String,
    #[serde(default)]
    inputs: Option<serde_json::Map<String, Value>>,
    sender: Sender,
}

#[derive(Deserialize)]
struct RawRepositoryDispatch {
    installation: Option<Installation>,
    repository: Repository,
    action: String,
    #[serde(default)]
    client_payload: Value,
    sender: Sender,
}

#[derive(Deserialize)]
struct RawWorkflowRun {
    installation: Option<Installation>,
    action: String,
    repository: Repository,
    workflow_run: WorkflowRun,
}

#[derive(Deserialize)]
struct RawCheckRun {
    installation: Option<Installation>,
    action: String,
    repository: Repository,
    check_run: RawCheckRunBody,
    #[serde(default)]
    requested_action: Option<RawRequestedAction>,
    #[serde(default)]
    sender: Option<Sender>,
}
#[derive(Deserialize)]
struct RawCheckRunBody {
    id: u64,
    #[serde(default)]
    app: Option<App>,
    name: String,
    head_sha: String,
    #[serde(default)]
    external_id: Option<String>,
}
#[derive(Deserialize)]
struct RawRequestedAction {
    identifier: String,
}

fn inst(i: Option<Installation>) -> Option<InstallationId> {
    i.map(|i| InstallationId(i.id))
}

/// Parse a delivery by its `X-GitHub-Event` name. `Ok(None)` for events the hub ignores
/// (unknown names, ping, installation, push, ...); `Err` for malformed JSON or missing required
/// fields of a handled event.
pub fn parse_event(event: &str, body: &[u8]) -> Result<Option<WebhookEvent>, WebhookParseError> {
    fn de<T: for<'a> Deserialize<'a>>(event: &str, body: &[u8]) -> Result<T, WebhookParseError> {
        serde_json::from_slice(body).map_err(|e| WebhookParseError {
            event: event.to_owned(),
            detail: e.to_string(),
        })
    }
    let parsed = match event {
        "workflow_dispatch" => {
            let r: RawWorkflowDispatch = de(event, body)?;
            WebhookEvent::WorkflowDispatch(WorkflowDispatchEvent {
                installation_id: inst(r.installation),
                default_branch: r.repository.default_branch,
                repository: r.repository.full_name,
                workflow: r.workflow,
                git_ref: r.git_ref,
                inputs: r.inputs.unwrap_or_default(),
                sender: r.sender.login,
            })
        }
        "repository_dispatch" => {
            let r: RawRepositoryDispatch = de(event, body)?;
            WebhookEvent::RepositoryDispatch(RepositoryDispatchEvent {
                installation_id: inst(r.installation),
                repository: r.repository.full_name,
                action: r.action,
                client_payload: r.client_payload,
                sender: r.sender.login,
            })
        }
        "workflow_run" => {
            let r: RawWorkflowRun = de(event, body)?;
            WebhookEvent::WorkflowRun(WorkflowRunEvent {
                installation_id: inst(r.installation),
                action: r.action,
                repository: r.repository.full_name,
                run: r.workflow_run,
            })
        }
        "check_run" => {
            let r: RawCheckRun = de(event, body)?;
            WebhookEvent::CheckRun(CheckRunEvent {
                installation_id: inst(r.installation),
                action: r.action,
                repository: r.repository.full_name,
                check_run_id: r.check_run.id,
                app_id: r.check_run.app.map(|a| a.id),
                name: r.check_run.name,
                head_sha: r.check_run.head_sha,
                external_id: r.check_run.external_id.filter(|s| !s.is_empty()),
                requested_action: r.requested_action.map(|a| a.identifier),
                sender: r.sender.map(|s| s.login),
            })
        }
        _ => return Ok(None),
    };
    Ok(Some(parsed))
}

#[cfg(test)]
#[path = "webhook_tests.rs"]
mod tests;
