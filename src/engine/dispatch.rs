//! Work on one spoke: dispatch an attempt, find the run of a dispatch whose answer was lost, and
//! read back a spoke whose report is overdue. Each step persists its transition before acting.

use chrono::{TimeZone as _, Utc};
use serde_json::{json, Map, Value};

use super::Engine;
use crate::github::{ApiError, DispatchOutcome, InstallationClient};
use crate::hub::{Channel, RepoName, ReportOutcome, SpokeEvent, SpokeStatus, Transition};
use crate::store::{now_ms, RunRecord};

/// Slack for clock differences when searching for runs created since a dispatch.
const SEARCH_SLACK_MS: i64 = 2 * 60 * 1000;

/// The title key that identifies an attempt's run: `[<hub_run_id>#<attempt>]`.
pub fn title_key(run: &RunRecord, attempt: u32) -> String {
    format!("[{}#{}]", run.id, attempt)
}

impl Engine {
    /// Dispatches the next attempt of a spoke (or re-dispatches an attempt whose run was not
    /// found); `false` when the spoke was not in a state to dispatch. The `dispatching` state is persisted before the request goes out, so a crash
    /// in between is recovered by searching, never by blindly sending again.
    pub(super) async fn dispatch_spoke(
        &self,
        run: &RunRecord,
        client: &InstallationClient,
        repo: &RepoName,
        branch: &str,
    ) -> anyhow::Result<bool> {
        let record = self
            .transition(run, repo, SpokeEvent::DispatchStarted)
            .await?;
        let Transition::Changed(spoke) = &record.transition else {
            return Ok(false);
        };
        if spoke.status != SpokeStatus::Dispatching {
            return Ok(false);
        }
        let inputs = self.spoke_inputs(run, repo, spoke.attempt);
        let started = std::time::Instant::now();
        let outcome = client
            .dispatch_workflow(repo, &self.config().spoke_workflow, branch, &inputs)
            .await;
        self.telemetry()
            .dispatch_duration
            .observe(started.elapsed().as_secs_f64());
        let event = match outcome {
            DispatchOutcome::Created { run_id, run_url } => {
                SpokeEvent::DispatchAccepted { run_id, run_url }
            }
            DispatchOutcome::WorkflowNotFound => SpokeEvent::WorkflowMissing,
            DispatchOutcome::Rejected { message } => SpokeEvent::DispatchRejected { message },
            DispatchOutcome::Unknown { detail } => {
                tracing::warn!(%repo, detail, "dispatch answer lost; will search before re-dispatching");
                SpokeEvent::DispatchLost
            }
            // A definite refusal is permanent; anything that may pass (5xx, transport, rate
            // limits after every pause) is searched for and then sent again.
            DispatchOutcome::Failed { error } => match error {
                ApiError::Unauthorized
                | ApiError::Forbidden { .. }
                | ApiError::NotFound { .. }
                | ApiError::Unprocessable { .. }
                | ApiError::Status { .. } => SpokeEvent::DispatchRejected {
                    message: error.to_string(),
                },
                other => {
                    tracing::warn!(%repo, error = %other, "dispatch failed; will search before re-dispatching");
                    SpokeEvent::DispatchLost
                }
            },
        };
        let record = self.transition(run, repo, event).await?;
        // Cancelled while the request was in flight: the run it created must not go on.
        let spoke = record.current();
        if spoke.status == SpokeStatus::Cancelled {
            if let Some(run_id) = spoke.workflow_run_id {
                self.cancel_remote(client, repo, run_id).await;
            }
        }
        Ok(true)
    }

    /// The spoke workflow's inputs for one attempt, with a fresh callback token.
    fn spoke_inputs(&self, run: &RunRecord, repo: &RepoName, attempt: u32) -> Map<String, Value> {
        let now_s = now_ms() / 1000;
        let expires = run.deadline_at / 1000 + 3600;
        let token = self
            .inner
            .signer
            .issue(&run.id, repo, attempt, now_s, expires);
        let inputs = json!({
            "hub_run_id": run.id.to_string(),
            "attempt": attempt.to_string(),
            "task": run.task,
            "params": run.params,
            "callback_token": token,
        });
        match inputs {
            Value::Object(map) => map,
            _ => unreachable!("a json! object literal is an object"),
        }
    }

    /// A dispatch whose answer was lost: look for the run it may have created (by the attempt's
    /// title key, among the workflow's runs created since the dispatch, every page). Found: adopt
    /// it. Not found (after the indexing delay that put the spoke in `unknown`): dispatch again.
    pub(super) async fn search_lost_dispatch(
        &self,
        run: &RunRecord,
        client: &InstallationClient,
        repo: &RepoName,
        branch: &str,
    ) -> anyhow::Result<()> {
        let Some(current) = self.store().spoke(&run.id, repo).await? else {
            return Ok(());
        };
        let spoke = current.spoke;
        if spoke.status != SpokeStatus::Unknown {
            return Ok(());
        }
        match self.find_attempt_run(run, client, repo, &spoke).await? {
            Some(found) => {
                tracing::info!(%repo, workflow_run_id = found.id, "adopted the run of a lost dispatch");
                self.transition(
                    run,
                    repo,
                    SpokeEvent::DispatchAccepted {
                        run_id: Some(found.id),
                        run_url: Some(found.html_url.clone()),
                    },
                )
                .await?;
                if let Some(outcome) = outcome_of(&found.status, found.conclusion.as_deref()) {
                    self.report_reconciled(run, repo, spoke.attempt, &found, outcome)
                        .await?;
                }
                Ok(())
            }
            None => {
                tracing::info!(%repo, attempt = spoke.attempt, "lost dispatch created no run; dispatching again");
                self.dispatch_spoke(run, client, repo, branch).await?;
                Ok(())
            }
        }
    }

    /// A spoke whose report is overdue (no news for `reconcile_after`, its deadline passed, or
    /// the hub restarted and may have missed webhooks): read its run back from GitHub. A finished run is reported; a spoke
    /// past its deadline with no finished run times out.
    pub(super) async fn reconcile_spoke(
        &self,
        run: &RunRecord,
        client: &InstallationClient,
        repo: &RepoName,
    ) -> anyhow::Result<()> {
        let Some(current) = self.store().spoke(&run.id, repo).await? else {
            return Ok(());
        };
        let spoke = current.spoke;
        if !matches!(spoke.status, SpokeStatus::Dispatched | SpokeStatus::Running) {
            return Ok(());
        }
        let found = match spoke.workflow_run_id {
            Some(id) => match client.get_run(repo, id).await {
                Ok(r) => Some(r),
                Err(ApiError::NotFound { .. }) => None,
                Err(e) => return Err(e.into()),
            },
            None => self.find_attempt_run(run, client, repo, &spoke).await?,
        };
        if let Some(found) = &found {
            match outcome_of(&found.status, found.conclusion.as_deref()) {
                // Still queued: the spoke stays dispatched (its run id is now known).
                None => {
                    self.transition(
                        run,
                        repo,
                        SpokeEvent::DispatchAccepted {
                            run_id: Some(found.id),
                            run_url: Some(found.html_url.clone()),
                        },
                    )
                    .await?;
                }
                Some(outcome) => {
                    let finished = !matches!(outcome, ReportOutcome::Running);
                    self.report_reconciled(run, repo, spoke.attempt, found, outcome)
                        .await?;
                    if finished {
                        return Ok(());
                    }
                }
            }
        }
        if spoke.due_at.is_some_and(|due| due <= now_ms()) {
            let record = self.transition(run, repo, SpokeEvent::TimedOut).await?;
            if self.config().policy_for(&run.task).cancel_on_timeout {
                // The run id may only be known from the read-back (GHES, lost dispatch answer).
                let run_id = spoke.workflow_run_id.or(found.as_ref().map(|f| f.id));
                if let (Transition::Changed(_), Some(id)) = (&record.transition, run_id) {
                    if let Err(e) = client.cancel_run(repo, id).await {
                        tracing::warn!(%repo, error = %e, "cannot cancel timed-out spoke run");
                    }
                }
            }
        }
        Ok(())
    }

    /// The run an attempt created, found by its title key (`[<hub run id>#<attempt>]`) among
    /// the spoke workflow's dispatched runs since the dispatch, every page. A repository
    /// without the workflow has no such run.
    async fn find_attempt_run(
        &self,
        run: &RunRecord,
        client: &InstallationClient,
        repo: &RepoName,
        spoke: &crate::hub::Spoke,
    ) -> anyhow::Result<Option<crate::github::WorkflowRun>> {
        let since_ms = spoke.dispatched_at.unwrap_or(run.created_at) - SEARCH_SLACK_MS;
        let since = Utc
            .timestamp_millis_opt(since_ms)
            .single()
            .unwrap_or_else(Utc::now);
        let key = title_key(run, spoke.attempt);
        match client
            .find_runs(repo, &self.config().spoke_workflow, since)
            .await
        {
            Ok(runs) => Ok(runs.into_iter().find(|r| r.display_title.contains(&key))),
            Err(ApiError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn report_reconciled(
        &self,
        run: &RunRecord,
        repo: &RepoName,
        attempt: u32,
        found: &crate::github::WorkflowRun,
        outcome: ReportOutcome,
    ) -> anyhow::Result<()> {
        self.transition(
            run,
            repo,
            SpokeEvent::Report {
                attempt,
                run_id: Some(found.id),
                run_url: Some(found.html_url.clone()),
                outcome,
                channel: Channel::Reconcile,
                summary: None,
            },
        )
        .await?;
        Ok(())
    }
}

/// A workflow run's state as a report, or None while it is queued.
fn outcome_of(status: &str, conclusion: Option<&str>) -> Option<ReportOutcome> {
    match (status, conclusion) {
        ("completed", Some(c)) => Some(ReportOutcome::from_conclusion(c)),
        ("completed", None) => Some(ReportOutcome::Failed {
            detail: Some("completed without a conclusion".into()),
        }),
        ("in_progress", _) => Some(ReportOutcome::Running),
        _ => None,
    }
}
