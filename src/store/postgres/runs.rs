//! Hub runs (Postgres).

use super::super::model::{FingerprintRow, RunRow, RUN_COLUMNS};
use super::super::{corrupt, now_ms, NewRun, NewSpoke, RunRecord, StoreResult};
use super::Db;
use crate::hub::{HubRunId, InstallationId, RepoName, RunStatus, Sha};

impl Db {
    /// Records a new run in `planning`. Returns false (and records nothing) when a run was
    /// already started by the same delivery.
    pub async fn insert_run(&self, run: &NewRun<'_>) -> StoreResult<bool> {
        let done = sqlx::query(
            "INSERT INTO runs (id, installation_id, hub_repo, task, targets, params, dry_run, git_ref,
                               sender, trigger_delivery, status, created_at, deadline_at, mode)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
             ON CONFLICT (trigger_delivery) DO NOTHING",
        )
        .bind(run.id.to_string())
        .bind(run.installation_id.0 as i64)
        .bind(run.hub_repo.as_str())
        .bind(run.task)
        .bind(run.targets)
        .bind(run.params)
        .bind(run.dry_run)
        .bind(run.git_ref)
        .bind(run.sender)
        .bind(run.trigger_delivery)
        .bind(RunStatus::Planning.as_str())
        .bind(now_ms())
        .bind(run.deadline_at)
        .bind(run.mode.as_str())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn run(&self, id: &HubRunId) -> StoreResult<Option<RunRecord>> {
        sqlx::query_as::<_, RunRow>(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1"))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .map(RunRow::into_record)
            .transpose()
    }

    /// The most recently created run.
    pub async fn latest_run_id(&self) -> StoreResult<Option<HubRunId>> {
        let id: Option<String> =
            sqlx::query_scalar("SELECT id FROM runs ORDER BY created_at DESC, id LIMIT 1")
                .fetch_optional(&self.pool)
                .await?;
        id.map(|s| s.parse().map_err(|e| corrupt("runs", e)))
            .transpose()
    }

    /// The active run (not a dry run) of this task over these targets in this hub repository,
    /// if any: the concurrency rule.
    pub async fn active_run_for(
        &self,
        installation_id: InstallationId,
        hub_repo: &RepoName,
        task: &str,
        targets: &str,
    ) -> StoreResult<Option<HubRunId>> {
        let id: Option<String> = sqlx::query_scalar(
            "SELECT id FROM runs WHERE status <> 'completed' AND dry_run = $1 AND installation_id = $2
               AND hub_repo = $3 AND task = $4 AND targets = $5
             ORDER BY created_at LIMIT 1",
        )
        .bind(false)
        .bind(installation_id.0 as i64)
        .bind(hub_repo.as_str())
        .bind(task)
        .bind(targets)
        .fetch_optional(&self.pool)
        .await?;
        id.map(|s| s.parse().map_err(|e| corrupt("runs", e)))
            .transpose()
    }

    /// Makes a completed run active again (operator re-run), with a new deadline and, when
    /// given, its new check run, in one write.
    pub async fn reopen_run(
        &self,
        id: &HubRunId,
        deadline_at: i64,
        check_run_id: Option<u64>,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE runs SET status = $1, conclusion = NULL, reason = NULL, completed_at = NULL,
                             cancel_requested = FALSE, deadline_at = $2,
                             check_run_id = COALESCE($3, check_run_id)
             WHERE id = $4",
        )
        .bind(RunStatus::Active.as_str())
        .bind(deadline_at)
        .bind(check_run_id.map(|c| c as i64))
        .bind(id.to_string())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Ends planning: stores the head sha and every spoke, and makes the run active, in one
    /// transaction (a restart during planning simply plans again).
    pub async fn activate_run(
        &self,
        id: &HubRunId,
        head_sha: &Sha,
        spokes: &[NewSpoke],
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        let run_id = id.to_string();
        sqlx::query("DELETE FROM spokes WHERE run_id = $1")
            .bind(&run_id)
            .execute(&mut *tx)
            .await?;
        for chunk in spokes.chunks(500) {
            let mut q = sqlx::QueryBuilder::new(
                "INSERT INTO spokes (run_id, repo, default_branch, status, reason, attempt) ",
            );
            q.push_values(chunk, |mut b, s| {
                b.push_bind(&run_id)
                    .push_bind(s.repo.as_str())
                    .push_bind(&s.default_branch)
                    .push_bind(s.status.as_str())
                    .push_bind(&s.reason)
                    .push_bind(0i64);
            });
            q.build().execute(&mut *tx).await?;
        }
        sqlx::query("UPDATE runs SET head_sha = $1, status = $2 WHERE id = $3")
            .bind(head_sha.as_str())
            .bind(RunStatus::Active.as_str())
            .bind(&run_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn set_head_sha(&self, id: &HubRunId, head_sha: &Sha) -> StoreResult<()> {
        sqlx::query("UPDATE runs SET head_sha = $1 WHERE id = $2")
            .bind(head_sha.as_str())
            .bind(id.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn set_check_run(&self, id: &HubRunId, check_run_id: u64) -> StoreResult<()> {
        sqlx::query("UPDATE runs SET check_run_id = $1 WHERE id = $2")
            .bind(check_run_id as i64)
            .bind(id.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Completes a run with its conclusion (and why, when it did not run normally).
    pub async fn complete_run(
        &self,
        id: &HubRunId,
        conclusion: &str,
        reason: Option<&str>,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE runs SET status = $1, conclusion = $2, reason = COALESCE($3, reason), completed_at = $4
             WHERE id = $5",
        )
        .bind(RunStatus::Completed.as_str())
        .bind(conclusion)
        .bind(reason)
        .bind(now_ms())
        .bind(id.to_string())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Completes a run only when every spoke is terminal (an operator's re-run may have
    /// reopened spokes a moment ago); false when it is not settled, and nothing changed.
    pub async fn complete_settled_run(&self, id: &HubRunId, conclusion: &str) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE runs SET status = $1, conclusion = $2, completed_at = $3
             WHERE id = $4 AND status <> $5
               AND NOT EXISTS (SELECT 1 FROM spokes WHERE run_id = $6 AND status NOT IN
                   ('skipped', 'succeeded', 'failed', 'cancelled', 'timed_out', 'dispatch_failed'))",
        )
        .bind(RunStatus::Completed.as_str())
        .bind(conclusion)
        .bind(now_ms())
        .bind(id.to_string())
        .bind(RunStatus::Completed.as_str())
        .bind(id.to_string())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records an operator's request to cancel a run that has not completed, and why;
    /// false when the run has completed (or does not exist).
    pub async fn request_cancel(&self, id: &HubRunId, reason: &str) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE runs SET cancel_requested = TRUE, reason = $1 WHERE id = $2 AND status <> $3",
        )
        .bind(reason)
        .bind(id.to_string())
        .bind(RunStatus::Completed.as_str())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }
}

impl Db {
    /// The most recent runs, newest first: only those not completed with `active_only`, only
    /// task `task` when given.
    pub async fn recent_runs(
        &self,
        active_only: bool,
        task: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<RunRecord>> {
        sqlx::query_as::<_, RunRow>(&format!(
            "SELECT {RUN_COLUMNS} FROM runs
             WHERE ($1 = FALSE OR status <> 'completed') AND ($2 IS NULL OR task = $3)
             ORDER BY created_at DESC, id LIMIT $4"
        ))
        .bind(active_only)
        .bind(task)
        .bind(task)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(RunRow::into_record)
        .collect()
    }

    /// A run's event log, oldest first: (at, repository, kind, detail).
    pub async fn run_events(
        &self,
        id: &HubRunId,
    ) -> StoreResult<Vec<(i64, Option<String>, String, String)>> {
        Ok(sqlx::query_as(
            "SELECT at, repo, kind, detail FROM events WHERE run_id = $1 ORDER BY id",
        )
        .bind(id.to_string())
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn run_events_newest(
        &self,
        id: &HubRunId,
        limit: i64,
    ) -> StoreResult<(i64, Vec<(i64, Option<String>, String, String)>)> {
        let (total,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM events WHERE run_id = $1")
            .bind(id.to_string())
            .fetch_one(&self.pool)
            .await?;
        let mut newest: Vec<(i64, Option<String>, String, String)> = sqlx::query_as(
            "SELECT at, repo, kind, detail FROM events WHERE run_id = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(id.to_string())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        newest.reverse();
        Ok((total, newest))
    }

    pub async fn spokes_fingerprint(&self, id: &HubRunId) -> StoreResult<String> {
        let rows: Vec<FingerprintRow> = sqlx::query_as(
            "SELECT status, COUNT(*), COALESCE(SUM(attempt), 0)::BIGINT,
                    COALESCE(MAX(finished_at), 0), COALESCE(MAX(started_at), 0),
                    COALESCE(SUM(LENGTH(reason)), 0)::BIGINT, COUNT(workflow_run_id),
                    COUNT(run_url), COALESCE(SUM(LENGTH(summary)), 0)::BIGINT
             FROM spokes WHERE run_id = $1 GROUP BY status ORDER BY status",
        )
        .bind(id.to_string())
        .fetch_all(&self.pool)
        .await?;
        Ok(format!("{rows:?}"))
    }
}
