//! What operators do to a run: re-run its failed spokes (the check run's button, or "re-run"
//! on GitHub), cancel it (`spokehub cancel`, the API), and the rule that one task over the same
//! targets runs once at a time.

use std::sync::atomic::Ordering;

use anyhow::Context as _;

use super::plan::{check_run_name, not_started_name};
use super::Engine;
use crate::github::{ApiError, CheckRunEvent, WorkflowDispatchEvent};
use crate::hub::{HubRunId, RunStatus, SpokeEvent, SpokeStatus};
use crate::store::{now_ms, RunRecord};

/// The identifier of the check run's "Re-run failed" button.
pub const RERUN_FAILED: &str = "rerun_failed";

/// What a cancel request found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelOutcome {
    Cancelled { spokes: usize },
    AlreadyCompleted,
    NotFound,
}

impl Engine {
    /// `check_run` `requested_action` ("Re-run failed") or `rerequested` on a hub run's check
    /// run: the failed and timed-out spokes are dispatched again as new attempts of the same run.
    pub(super) async fn on_check_run(&self, e: CheckRunEvent) -> anyhow::Result<String> {
        let wanted = match e.action.as_str() {
            "requested_action" => e.requested_action.as_deref() == Some(RERUN_FAILED),
            "rerequested" => true,
            _ => false,
        };
        if !wanted {
            return Ok(format!("ignored: check_run {}", e.action));
        }
        let Some(id) = e
            .external_id
            .as_deref()
            .and_then(|x| x.parse::<HubRunId>().ok())
        else {
            return Ok("ignored: not a hub run's check run".into());
        };
        tracing::Span::current().record("hub_run_id", tracing::field::display(&id));
        let Some(run) = self.store().run(&id).await? else {
            return Ok("ignored: unknown hub run".into());
        };
        if e.installation_id != Some(run.installation_id) || e.repository != run.hub_repo {
            tracing::warn!("re-run request from another installation or repository ignored");
            return Ok("ignored: check run of another installation or repository".into());
        }
        let access = &self.config().access;
        if !access.is_hub(&run.hub_repo)
            || !access.sender_allowed(e.sender.as_deref().unwrap_or(""))
        {
            self.inner
                .metrics
                .reruns_refused
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                sender = e.sender.as_deref().unwrap_or(""),
                "re-run request ignored: not a configured hub repository or sender"
            );
            return Ok("ignored: not a configured hub repository or sender".into());
        }
        if e.app_id != Some(self.config().app_id) {
            self.inner
                .metrics
                .reruns_refused
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(app_id = ?e.app_id, "re-run request for a check run this App did not create ignored");
            return Ok("ignored: check run of another App".into());
        }
        if run.check_run_id != Some(e.check_run_id) {
            self.inner
                .metrics
                .reruns_refused
                .fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                check_run_id = e.check_run_id,
                current = ?run.check_run_id,
                "re-run request ignored: a newer check run exists for this run"
            );
            self.report_stale_rerun(&run, &e).await?;
            return Ok("ignored: a newer check run exists for this run".into());
        }
        let rerun = self.rerun_failed(&run).await?;
        Ok(format!("re-run of {rerun} failed spokes"))
    }

    /// "Re-run failed" on the run page, by a person with write access to the hub repository:
    /// what the newest check run's button does. `None` when there is no such run.
    pub async fn rerun_failed_by(&self, id: &HubRunId, by: &str) -> anyhow::Result<Option<usize>> {
        let Some(run) = self.store().run(id).await? else {
            return Ok(None);
        };
        if run.cancel_requested {
            tracing::info!(hub_run_id = %id, by, "re-run ignored: the run was cancelled");
            return Ok(Some(0));
        }
        let moved = self.rerun_failed(&run).await?;
        tracing::info!(hub_run_id = %id, by, spokes = moved, "re-run of failed spokes from the run page");
        Ok(Some(moved))
    }

    /// Re-opens a run and moves its failed and timed-out spokes to `retry_wait`, due now.
    ///
    /// Safe to repeat after a failure at any step (the delivery is processed again): the new
    /// check run is found again by its `external_id` rather than created twice, the spokes
    /// move before the run reopens, and the run reopens together with its new check run in one
    /// write, so a retried click is never mistaken for an older check run's.
    async fn rerun_failed(&self, run: &RunRecord) -> anyhow::Result<usize> {
        let completed = run.status == RunStatus::Completed;
        let to_rerun: Vec<_> = self
            .store()
            .spokes(&run.id)
            .await?
            .into_iter()
            .filter(|r| match r.spoke.status {
                SpokeStatus::Failed | SpokeStatus::TimedOut => true,
                // Moved by an earlier try of this click that did not get to reopen the run.
                SpokeStatus::RetryWait => completed,
                _ => false,
            })
            .map(|r| r.spoke.repo)
            .collect();
        if to_rerun.is_empty() {
            return Ok(0);
        }
        let new_check_run = match (completed, &run.head_sha) {
            (true, Some(sha)) => Some(self.rerun_check_run(run, sha, to_rerun.len()).await?),
            _ => None,
        };
        let mut moved = 0;
        for repo in &to_rerun {
            let rec = self.transition(run, repo, SpokeEvent::Rerun).await?;
            if rec.current().status == SpokeStatus::RetryWait {
                moved += 1;
            }
        }
        if completed {
            let policy = self.config().policy_for(&run.task);
            let deadline = now_ms() + policy.timeouts.overall.as_millis() as i64;
            self.store()
                .reopen_run(&run.id, deadline, new_check_run)
                .await?;
        }
        self.announce_runs().await;
        tracing::info!(spokes = moved, "re-running failed spokes");
        Ok(moved)
    }

    /// The check run of a re-run: one in progress that an earlier try created, else a new one
    /// (the completed one keeps its result).
    async fn rerun_check_run(
        &self,
        run: &RunRecord,
        sha: &crate::hub::Sha,
        spokes: usize,
    ) -> anyhow::Result<u64> {
        let client = self.inner.github.installation(run.installation_id).await?;
        let name = check_run_name(&run.task);
        let external_id = run.id.to_string();
        let existing = client.check_runs_for_ref(&run.hub_repo, sha, &name).await?;
        if let Some(found) = existing.iter().find(|c| {
            c.external_id.as_deref() == Some(external_id.as_str())
                && c.status != "completed"
                && Some(c.id) != run.check_run_id
        }) {
            return Ok(found.id);
        }
        let id = client
            .create_check_run(
                &run.hub_repo,
                &super::checks::started(
                    name,
                    sha.as_str(),
                    &run.id,
                    self.details_url(&run.id),
                    format!("Re-running {spokes} failed spokes"),
                    format!(
                        "Hub run `{}`: the failed and timed-out spokes are dispatched again.",
                        run.id
                    ),
                ),
            )
            .await
            .context("cannot create the re-run check run")?;
        Ok(id)
    }

    /// The button of an older check run of a run was pressed: nothing is re-run; a completed
    /// check run of its own name says why and points at the current one.
    async fn report_stale_rerun(&self, run: &RunRecord, e: &CheckRunEvent) -> anyhow::Result<()> {
        let client = self.inner.github.installation(run.installation_id).await?;
        client
            .create_check_run(
                &run.hub_repo,
                &super::checks::not_started(
                    not_started_name(&run.task),
                    &e.head_sha,
                    "neutral",
                    self.details_url(&run.id),
                    "Re-run not started: a newer check run exists",
                    format!(
                        "Hub run `{}` has a newer check run than the one whose button was pressed; \
                         only the newest check run's \"Re-run failed\" re-runs spokes.",
                        run.id
                    ),
                ),
            )
            .await
            .context("cannot create the check run of an ignored re-run")?;
        Ok(())
    }

    /// Cancels a run: nothing more is dispatched, running spoke runs are cancelled on GitHub,
    /// and the run completes as `cancelled`.
    pub async fn cancel_run(&self, id: &HubRunId, by: &str) -> anyhow::Result<CancelOutcome> {
        let Some(run) = self.store().run(id).await? else {
            return Ok(CancelOutcome::NotFound);
        };
        if run.status == RunStatus::Completed {
            return Ok(CancelOutcome::AlreadyCompleted);
        }
        if !self
            .store()
            .request_cancel(id, &format!("cancelled by {by}"))
            .await?
        {
            return Ok(CancelOutcome::AlreadyCompleted);
        }
        let run = self.store().run(id).await?.context("run vanished")?;
        let client = self.inner.github.installation(run.installation_id).await?;
        // First every spoke (fast, so the driver dispatches nothing more), then the remote
        // runs (slow: one API call each).
        let mut cancelled = 0;
        let mut remote = Vec::new();
        for record in self.store().spokes(id).await? {
            if record.spoke.status.is_terminal() {
                continue;
            }
            let rec = self
                .transition(&run, &record.spoke.repo, SpokeEvent::Cancel)
                .await?;
            if rec.current().status != SpokeStatus::Cancelled {
                continue;
            }
            cancelled += 1;
            if let Some(run_id) = rec.current().workflow_run_id {
                remote.push((record.spoke.repo, run_id));
            }
        }
        for (repo, run_id) in remote {
            self.cancel_remote(&client, &repo, run_id).await;
        }
        self.announce_runs().await;
        tracing::info!(hub_run_id = %id, spokes = cancelled, by, "run cancelled");
        Ok(CancelOutcome::Cancelled { spokes: cancelled })
    }

    /// Cancels a spoke's workflow run on GitHub; failures are logged (the spoke is already
    /// cancelled in the hub).
    pub(super) async fn cancel_remote(
        &self,
        client: &crate::github::InstallationClient,
        repo: &crate::hub::RepoName,
        run_id: u64,
    ) {
        match client.cancel_run(repo, run_id).await {
            Ok(()) | Err(ApiError::NotFound { .. }) => {}
            Err(e) => tracing::warn!(%repo, run_id, error = %e, "cannot cancel the spoke's run"),
        }
    }

    /// The concurrency rule: a run of the same task over the same targets in the same hub
    /// repository that is still active. The new trigger is not started; its check run
    /// (conclusion neutral) points at the active run.
    pub(super) async fn refuse_parallel_run(
        &self,
        e: &WorkflowDispatchEvent,
        installation_id: crate::hub::InstallationId,
        task: &str,
        active: &HubRunId,
    ) -> anyhow::Result<()> {
        let Some((client, sha)) = self.trigger_commit(installation_id, e).await? else {
            return Ok(());
        };
        let link = self
            .details_url(active)
            .map(|u| format!(" ([details]({u}))"))
            .unwrap_or_default();
        client
            .create_check_run(
                &e.repository,
                &super::checks::not_started(
                    not_started_name(task),
                    sha.as_str(),
                    "neutral",
                    self.details_url(active),
                    "Not started: the same run is already active",
                    format!(
                        "Task `{task}` over the same targets is already running as hub run `{active}`{link}. \
                         This trigger was not started. Wait for that run, or allow parallel runs for the task \
                         (`allow_parallel = true` in its policy)."
                    ),
                ),
            )
            .await
            .context("cannot create the check run of a refused parallel run")?;
        Ok(())
    }
}
