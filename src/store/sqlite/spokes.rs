//! Spokes, read (transitions are written by the writer, see `writer`).

use super::super::model::{run_and_repo, SpokeRow, SPOKE_COLUMNS};
use super::super::{SpokeRecord, StoreResult, WorkScope};
use super::Db;
use crate::hub::{HubRunId, RepoName};

impl Db {
    pub async fn spokes(&self, run: &HubRunId) -> StoreResult<Vec<SpokeRecord>> {
        sqlx::query_as::<_, SpokeRow>(&format!(
            "SELECT {SPOKE_COLUMNS} FROM spokes WHERE run_id = ? ORDER BY repo"
        ))
        .bind(run.to_string())
        .fetch_all(&self.read)
        .await?
        .into_iter()
        .map(SpokeRow::into_record)
        .collect()
    }

    pub async fn spoke(&self, run: &HubRunId, repo: &RepoName) -> StoreResult<Option<SpokeRecord>> {
        sqlx::query_as::<_, SpokeRow>(&format!(
            "SELECT {SPOKE_COLUMNS} FROM spokes WHERE run_id = ? AND repo = ?"
        ))
        .bind(run.to_string())
        .bind(repo.as_str())
        .fetch_optional(&self.read)
        .await?
        .map(SpokeRow::into_record)
        .transpose()
    }

    pub async fn spoke_by_workflow_run(
        &self,
        workflow_run_id: u64,
    ) -> StoreResult<Option<(HubRunId, RepoName)>> {
        let row: Option<(String, String)> =
            sqlx::query_as("SELECT run_id, repo FROM spokes WHERE workflow_run_id = ? LIMIT 1")
                .bind(workflow_run_id as i64)
                .fetch_optional(&self.read)
                .await?;
        row.map(run_and_repo).transpose()
    }

    pub async fn queued_work(
        &self,
        scope: &WorkScope,
        limit: i64,
    ) -> StoreResult<Vec<(HubRunId, RepoName)>> {
        let (mode, run, agent) = scope.filter();
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT s.run_id, s.repo FROM spokes s JOIN runs r ON r.id = s.run_id
             WHERE r.mode = ? AND (? IS NULL OR r.id = ?)
               AND r.status = 'active' AND NOT r.cancel_requested
               AND s.status = 'dispatched' AND s.lease_id IS NULL
               AND (s.repo NOT LIKE ? OR s.repo = ?)
             ORDER BY s.dispatched_at, s.run_id, s.repo LIMIT ?",
        )
        .bind(mode)
        .bind(run.clone())
        .bind(run)
        .bind(WorkScope::agent_targets())
        .bind(agent)
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        rows.into_iter().map(run_and_repo).collect()
    }

    pub async fn spoke_by_lease(
        &self,
        lease_id: &str,
    ) -> StoreResult<Option<(HubRunId, RepoName)>> {
        let row: Option<(String, String)> =
            sqlx::query_as("SELECT run_id, repo FROM spokes WHERE lease_id = ? LIMIT 1")
                .bind(lease_id)
                .fetch_optional(&self.read)
                .await?;
        row.map(run_and_repo).transpose()
    }
}
