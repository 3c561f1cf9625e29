//! Small shapes shared by the webhook parser and the API client: a workflow run, a check-run
//! request (POST and PATCH) and what the hub reads back about a check run.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One workflow run, as GitHub describes it in the REST API and in `workflow_run` webhooks.
/// Only the fields the hub needs; unknown fields are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowRun {
    pub id: u64,
    #[serde(default)]
    pub name: Option<String>,
    /// The workflow's `run-name` (carries the hub run id).
    #[serde(default)]
    pub display_title: String,
    pub status: String,
    #[serde(default)]
    pub conclusion: Option<String>,
    pub html_url: String,
    #[serde(default = "one")]
    pub run_attempt: u32,
    #[serde(default)]
    pub path: String,
    #[serde(default)]
    pub event: String,
    pub head_sha: String,
    pub created_at: DateTime<Utc>,
}

fn one() -> u32 {
    1
}

/// Body of `POST /repos/{o}/{r}/check-runs` and `PATCH .../check-runs/{id}`. Every field is
/// optional and skipped when `None`, so one struct serves both.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CheckRunRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub head_sha: Option<String>,
    /// queued | in_progress | completed
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Required by GitHub when `status` is completed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conclusion: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<CheckRunOutput>,
    /// Buttons (at most 3); clicking one sends `check_run.requested_action`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actions: Option<Vec<CheckRunAction>>,
}

/// The Markdown body of a check run. `summary` and `text` are at most 65,535 characters each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckRunOutput {
    pub title: String,
    pub summary: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// A check-run button: label <= 20, description <= 40, identifier <= 20 characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckRunAction {
    pub label: String,
    pub description: String,
    pub identifier: String,
}

/// What the hub reads back about an existing check run (for reconciliation by `external_id`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CheckRunInfo {
    pub id: u64,
    pub name: String,
    #[serde(default)]
    pub external_id: Option<String>,
    pub status: String,
    #[serde(default)]
    pub conclusion: Option<String>,
}
