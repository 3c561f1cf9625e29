//! Webhook deliveries: the persisted intake queue (recorded and finished by the writer).

use super::super::{within_budget, StoreResult, StoredDelivery};
use super::Db;

impl Db {
    /// The oldest unprocessed deliveries, in the order they were received.
    pub async fn pending_deliveries(&self, limit: i64) -> StoreResult<Vec<StoredDelivery>> {
        let sizes: Vec<i64> = sqlx::query_scalar(
            "SELECT length(payload) FROM deliveries
             WHERE processed_at IS NULL ORDER BY received_at, rowid LIMIT ?",
        )
        .bind(limit)
        .fetch_all(&self.write)
        .await?;
        let take = within_budget(&sizes);
        if take == 0 {
            return Ok(Vec::new());
        }
        Ok(sqlx::query_as(
            "SELECT guid, event, payload, received_at FROM deliveries
             WHERE processed_at IS NULL ORDER BY received_at, rowid LIMIT ?",
        )
        .bind(take as i64)
        .fetch_all(&self.write)
        .await?)
    }

    /// Forgets processed deliveries received before `before` (unix ms): their payloads (which
    /// hold callback tokens) are not kept forever. Unprocessed ones are never forgotten.
    /// Returns how many were removed.
    pub async fn prune_deliveries(&self, before: i64) -> StoreResult<u64> {
        let done = sqlx::query(
            "DELETE FROM deliveries WHERE processed_at IS NOT NULL AND received_at < ?",
        )
        .bind(before)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected())
    }

    /// Number of recorded deliveries (for tests and status).
    pub async fn count_deliveries(&self) -> StoreResult<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM deliveries")
            .fetch_one(&self.read)
            .await?)
    }
}
