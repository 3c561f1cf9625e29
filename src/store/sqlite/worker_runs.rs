//! Hybrid runs' worker-workflow runs.

use super::super::{now_ms, StoreResult};
use super::Db;
use crate::hub::HubRunId;

impl Db {
    pub async fn add_worker_run(
        &self,
        hub_run: &HubRunId,
        workflow_run_id: u64,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO worker_runs (workflow_run_id, hub_run_id, created_at) VALUES (?, ?, ?)
             ON CONFLICT (workflow_run_id) DO NOTHING",
        )
        .bind(workflow_run_id as i64)
        .bind(hub_run.to_string())
        .bind(now_ms())
        .execute(&self.write)
        .await?;
        Ok(())
    }

    pub async fn hub_run_of_worker(&self, workflow_run_id: u64) -> StoreResult<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT hub_run_id FROM worker_runs WHERE workflow_run_id = ?")
                .bind(workflow_run_id as i64)
                .fetch_optional(&self.read)
                .await?,
        )
    }

    pub async fn add_worker_dispatch(&self, hub_run: &HubRunId) -> StoreResult<()> {
        sqlx::query("INSERT INTO worker_dispatches (hub_run_id, dispatched_at) VALUES (?, ?)")
            .bind(hub_run.to_string())
            .bind(now_ms())
            .execute(&self.write)
            .await?;
        Ok(())
    }

    pub async fn worker_dispatches(&self, hub_run: &HubRunId) -> StoreResult<(i64, Option<i64>)> {
        Ok(sqlx::query_as(
            "SELECT COUNT(*), MAX(dispatched_at) FROM worker_dispatches WHERE hub_run_id = ?",
        )
        .bind(hub_run.to_string())
        .fetch_one(&self.read)
        .await?)
    }
}
