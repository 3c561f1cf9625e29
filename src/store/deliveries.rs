//! Webhook deliveries: the persisted intake queue.

use sqlx::Row as _;

use super::batch::{Job, OwnedDelivery};
use super::{Store, StoreResult};

/// The most payload bytes [`Store::pending_deliveries`] reads at once.
const PENDING_BATCH_BYTES: i64 = 8 * 1024 * 1024;

/// A verified delivery about to be recorded.
pub struct NewDelivery<'a> {
    pub guid: &'a str,
    pub event: &'a str,
    pub action: Option<&'a str>,
    pub installation_id: Option<u64>,
    /// Shared, not copied, on its way to the database.
    pub payload: bytes::Bytes,
}

/// A recorded delivery waiting to be processed.
#[derive(Debug, Clone)]
pub struct StoredDelivery {
    pub guid: String,
    pub event: String,
    pub payload: Vec<u8>,
    pub received_at: i64,
}

impl Store {
    /// Records a delivery once: returns false when its GUID was already recorded (a duplicate
    /// or a redelivery), in which case nothing changes.
    pub async fn record_delivery(&self, d: &NewDelivery<'_>) -> StoreResult<bool> {
        let delivery = OwnedDelivery {
            guid: d.guid.to_owned(),
            event: d.event.to_owned(),
            action: d.action.map(str::to_owned),
            installation_id: d.installation_id,
            payload: d.payload.clone(),
        };
        self.submit(|reply| Job::RecordDelivery { delivery, reply })
            .await
    }

    /// The oldest unprocessed deliveries, in the order they were received.
    pub async fn pending_deliveries(&self, limit: i64) -> StoreResult<Vec<StoredDelivery>> {
        // At most `PENDING_BATCH_BYTES` of payloads at once (but always one): a queue of large
        // deliveries must not be read into memory whole.
        let sizes: Vec<i64> = sqlx::query_scalar(
            "SELECT length(payload) FROM deliveries
             WHERE processed_at IS NULL ORDER BY received_at, rowid LIMIT ?",
        )
        .bind(limit)
        .fetch_all(&self.write)
        .await?;
        let mut total = 0i64;
        let take = sizes
            .iter()
            .take_while(|size| {
                total += **size;
                total <= PENDING_BATCH_BYTES
            })
            .count()
            .max(1)
            .min(sizes.len());
        if take == 0 {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "SELECT guid, event, payload, received_at FROM deliveries
             WHERE processed_at IS NULL ORDER BY received_at, rowid LIMIT ?",
        )
        .bind(take as i64)
        .fetch_all(&self.write)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| StoredDelivery {
                guid: r.get("guid"),
                event: r.get("event"),
                payload: r.get("payload"),
                received_at: r.get("received_at"),
            })
            .collect())
    }

    /// Marks a delivery processed with a short outcome ("started run ...", "rejected: ...").
    pub async fn finish_delivery(&self, guid: &str, outcome: &str) -> StoreResult<()> {
        let (guid, outcome) = (guid.to_owned(), outcome.to_owned());
        self.submit(|reply| Job::FinishDelivery {
            guid,
            outcome,
            reply,
        })
        .await
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
