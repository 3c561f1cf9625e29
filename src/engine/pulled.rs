//! The driver's side of pulled work (pull and hybrid runs): a spoke's attempt is queued for
//! workers instead of dispatched, and a queued or claimed spoke whose time has come is ended
//! here (it waited or ran too long, or its worker's lease ran out) without asking GitHub.

use crate::github::{DispatchOutcome, InstallationClient};
use crate::hub::{pulled_due_event, RepoName, SpokeEvent, Transition};
use crate::store::{now_ms, RunRecord, StoreResult};

use super::Engine;

/// What a hybrid run's driver sees of its queue.
#[derive(Debug, Clone, Copy)]
pub(super) struct QueuedWork {
    /// Items wait for a worker.
    pub queued: bool,
    /// When a worker last claimed one of the run's items (unix ms).
    pub last_claim_at: Option<i64>,
}

impl Engine {
    /// Queues the spoke's next attempt for workers; true when it was queued.
    pub(super) async fn enqueue_spoke(
        &self,
        run: &RunRecord,
        repo: &RepoName,
    ) -> StoreResult<bool> {
        let record = self.transition(run, repo, SpokeEvent::Enqueue).await?;
        Ok(matches!(record.transition, Transition::Changed(_)))
    }

    /// Ends a pulled spoke whose due time passed, as its state under the row lock says: a
    /// heartbeat that came first keeps it going.
    pub(super) async fn expire_pulled(&self, run: &RunRecord, repo: &RepoName) -> StoreResult<()> {
        let record = self
            .transition_by(run, repo, |spoke| pulled_due_event(spoke, now_ms()))
            .await?;
        if let Transition::Changed(s) = &record.transition {
            tracing::info!(%repo, status = %s.status, reason = s.reason.as_deref().unwrap_or(""), "pulled spoke's time ran out");
        }
        Ok(())
    }

    /// Work was queued: waiting claims on every replica look again.
    pub(super) async fn work_queued(&self, run: &RunRecord) {
        if let Err(e) = self.store().announce_work().await {
            // This replica's waiting claims were woken; the others look on their slow poll.
            tracing::warn!(hub_run_id = %run.id, error = %e, "cannot announce queued work");
        }
    }

    /// Hybrid: the worker-workflow runs whose jobs claim the run's items. The first is
    /// dispatched as soon as items are queued; another only when items are queued and nothing
    /// was claimed, nor a worker run dispatched, for `reconcile_after` (the jobs ended, were
    /// cancelled or never started). Items that merely wait for busy workers start no more:
    /// `workers` is the parallelism the task asked for. One content-creating request per
    /// worker run.
    pub(super) async fn ensure_workers(
        &self,
        run: &RunRecord,
        client: &InstallationClient,
        work: QueuedWork,
    ) -> anyhow::Result<()> {
        if !work.queued {
            return Ok(());
        }
        let policy = self.config().policy_for(&run.task);
        let patience = i64::try_from(policy.reconcile_after.as_millis()).unwrap_or(i64::MAX);
        let (count, last) = self.store().worker_dispatches(&run.id).await?;
        let now = now_ms();
        let quiet_since = work.last_claim_at.max(last).unwrap_or(i64::MIN);
        if count > 0 && now.saturating_sub(quiet_since) < patience {
            return Ok(());
        }
        let Some(hub_url) = &self.config().public_url else {
            tracing::error!("a hybrid run needs the hub's public URL for its workers");
            return Ok(());
        };
        let workers: Vec<usize> = (1..=policy.workers).collect();
        let mut inputs = serde_json::Map::new();
        inputs.insert("hub_run_id".into(), run.id.to_string().into());
        inputs.insert(
            "hub_url".into(),
            hub_url.as_str().trim_end_matches('/').into(),
        );
        inputs.insert("task".into(), run.task.clone().into());
        inputs.insert("workers".into(), serde_json::to_string(&workers)?.into());
        // Recorded first: a crash after the request waits out `reconcile_after` rather than
        // dispatching twice at once.
        self.store().add_worker_dispatch(&run.id).await?;
        let workflow = &self.config().worker_workflow;
        let branch = run
            .git_ref
            .strip_prefix("refs/heads/")
            .unwrap_or(&run.git_ref);
        match client
            .dispatch_workflow(&run.hub_repo, workflow, branch, &inputs)
            .await
        {
            DispatchOutcome::Created {
                run_id: Some(id), ..
            } => {
                self.store().add_worker_run(&run.id, id).await?;
                tracing::info!(workflow_run_id = id, workers = policy.workers, again = count > 0, "worker workflow dispatched");
            }
            DispatchOutcome::Created { run_id: None, .. } => tracing::error!(
                "GitHub did not say which run the worker workflow started: its jobs cannot prove \
                 they are this run's (use GitHub's API version 2026-03-10, or one that returns run details)"
            ),
            DispatchOutcome::WorkflowNotFound => tracing::error!(
                workflow,
                hub_repo = %run.hub_repo,
                "the hub repository has no worker workflow (copy workflows-templates/workers.yml); items wait until their queued timeout"
            ),
            DispatchOutcome::Rejected { message } => {
                tracing::error!(workflow, message, "GitHub refused the worker workflow's dispatch")
            }
            DispatchOutcome::Unknown { detail } => {
                tracing::warn!(detail, "the worker workflow's dispatch may not have happened; dispatching again later")
            }
            DispatchOutcome::Failed { error } => {
                tracing::warn!(error = %error, "cannot dispatch the worker workflow; trying again later")
            }
        }
        Ok(())
    }
}
