//! Every check-run request the hub sends is built here: the names, states and fixed texts of
//! the run's check run (started, in progress, concluded, failed) and of the check runs that
//! say a trigger or a button started nothing.

use crate::github::{CheckRunAction, CheckRunOutput, CheckRunRequest};
use crate::hub::{escape_cell, Conclusion, HubRunId};

/// The name of a run's check run.
pub fn check_run_name(task: &str) -> String {
    format!("spokehub: {task}")
}

/// The name of a check run that says a trigger or re-run was not started: its own name, so it
/// never hides the live run's check run of the same task on the same commit.
pub fn not_started_name(task: &str) -> String {
    format!("spokehub: {task} (not started)")
}

fn output(title: impl Into<String>, summary: String) -> Option<CheckRunOutput> {
    Some(CheckRunOutput {
        title: title.into(),
        summary,
        text: None,
    })
}

/// A run's new check run (or a re-run's), in progress; `external_id` is the hub run's id, by
/// which a retried request finds it again instead of creating a second one.
pub fn started(
    name: String,
    head_sha: &str,
    run: &HubRunId,
    details_url: Option<String>,
    title: impl Into<String>,
    summary: String,
) -> CheckRunRequest {
    CheckRunRequest {
        name: Some(name),
        head_sha: Some(head_sha.to_owned()),
        status: Some("in_progress".into()),
        external_id: Some(run.to_string()),
        details_url,
        started_at: Some(chrono::Utc::now()),
        output: output(title, summary),
        ..CheckRunRequest::default()
    }
}

/// A check run that is complete at once: a trigger or a button that started nothing
/// (`conclusion`: `neutral`, or `action_required` when the person must fix something).
pub fn not_started(
    name: String,
    head_sha: &str,
    conclusion: &str,
    details_url: Option<String>,
    title: impl Into<String>,
    summary: String,
) -> CheckRunRequest {
    CheckRunRequest {
        name: Some(name),
        head_sha: Some(head_sha.to_owned()),
        status: Some("completed".into()),
        conclusion: Some(conclusion.to_owned()),
        completed_at: Some(chrono::Utc::now()),
        details_url,
        output: output(title, summary),
        ..CheckRunRequest::default()
    }
}

/// An update of a run's check run while it goes on.
pub fn progress(summary: CheckRunOutput) -> CheckRunRequest {
    CheckRunRequest {
        status: Some("in_progress".into()),
        output: Some(summary),
        ..CheckRunRequest::default()
    }
}

/// The final update of a run's check run; with "Re-run failed" when `rerun_button`.
pub fn concluded(
    conclusion: Conclusion,
    summary: CheckRunOutput,
    rerun_button: bool,
) -> CheckRunRequest {
    CheckRunRequest {
        status: Some("completed".into()),
        conclusion: Some(conclusion.as_str().into()),
        completed_at: Some(chrono::Utc::now()),
        output: Some(summary),
        actions: rerun_button.then(|| {
            vec![CheckRunAction {
                label: "Re-run failed".into(),
                description: "Dispatch the failed spokes again".into(),
                identifier: super::operator::RERUN_FAILED.into(),
            }]
        }),
        ..CheckRunRequest::default()
    }
}

/// The final update of a run that could not go on, and why.
pub fn failed(task: &str, run: &HubRunId, reason: &str) -> CheckRunRequest {
    CheckRunRequest {
        name: Some(check_run_name(task)),
        status: Some("completed".into()),
        conclusion: Some(Conclusion::Failure.as_str().into()),
        completed_at: Some(chrono::Utc::now()),
        output: output(
            "The hub could not run this task",
            format!("Run `{run}` stopped: {}", escape_cell(reason, 2000)),
        ),
        ..CheckRunRequest::default()
    }
}
