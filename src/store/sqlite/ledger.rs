//! The leased work ledger on SQLite (see `store::ledger`): one process owns the database, so
//! claims need no row locks (SQLite has one writer), but the rows, due times, leases and try
//! counts are the same as on Postgres.

use super::super::ledger::{ChangeMark, ClaimedDelivery, ReplicaId, WorkRetry};
use super::super::{corrupt, now_ms, SpokeRecord, StoreResult, StoredDelivery};
use super::Db;
use crate::hub::HubRunId;

fn run_ids(ids: Vec<String>) -> StoreResult<Vec<HubRunId>> {
    ids.into_iter()
        .map(|s| s.parse().map_err(|e| corrupt("runs", e)))
        .collect()
}

/// `?, ?, ...` for `n` values.
fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

impl Db {
    /// On SQLite one process owns the ledger: every lease is freed, whoever held it.
    pub async fn release_leases_of(&self, _owner: &ReplicaId) -> StoreResult<()> {
        let mut tx = self.write.begin().await?;
        for table in ["runs", "deliveries"] {
            sqlx::query(&format!(
                "UPDATE {table} SET lease_owner = NULL, lease_expires_at = NULL
                 WHERE lease_owner IS NOT NULL"
            ))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn claim_runs(
        &self,
        owner: &ReplicaId,
        ttl_ms: i64,
        max: i64,
    ) -> StoreResult<Vec<(HubRunId, bool)>> {
        let now = now_ms();
        let ids: Vec<String> = sqlx::query_scalar(
            "UPDATE runs SET lease_owner = ?1, lease_expires_at = ?2 + ?3
             WHERE id IN (SELECT id FROM runs
                          WHERE status <> 'completed' AND due_at <= ?2
                            AND (lease_owner IS NULL OR lease_expires_at < ?2)
                          ORDER BY created_at LIMIT ?4)
             RETURNING id",
        )
        .bind(owner.as_str())
        .bind(now)
        .bind(ttl_ms)
        .bind(max)
        .fetch_all(&self.write)
        .await?;
        // One process: a lease it finds is one it freed at start, never another's.
        Ok(run_ids(ids)?.into_iter().map(|id| (id, false)).collect())
    }

    pub async fn renew_runs(&self, owner: &ReplicaId, ttl_ms: i64) -> StoreResult<Vec<HubRunId>> {
        let ids: Vec<String> = sqlx::query_scalar(
            "UPDATE runs SET lease_expires_at = ? + ?
             WHERE lease_owner = ? AND status <> 'completed'
             RETURNING id",
        )
        .bind(now_ms())
        .bind(ttl_ms)
        .bind(owner.as_str())
        .fetch_all(&self.write)
        .await?;
        run_ids(ids)
    }

    pub async fn release_run(
        &self,
        id: &HubRunId,
        owner: &ReplicaId,
        failure: Option<&str>,
        retry: &WorkRetry,
    ) -> StoreResult<()> {
        let mut tx = self.write.begin().await?;
        let tries: Option<i64> =
            sqlx::query_scalar("SELECT tries FROM runs WHERE id = ? AND lease_owner = ?")
                .bind(id.to_string())
                .bind(owner.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        let Some(tries) = tries else {
            return Ok(());
        };
        let (tries, delay) = match failure {
            Some(_) => {
                let tries = tries + 1;
                (tries, retry.delay(tries as u32).as_millis() as i64)
            }
            None => (0, 0),
        };
        sqlx::query(
            "UPDATE runs SET lease_owner = NULL, lease_expires_at = NULL, tries = ?,
                             last_error = ?, due_at = ?
             WHERE id = ?",
        )
        .bind(tries)
        .bind(failure)
        .bind(now_ms() + delay)
        .bind(id.to_string())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Nothing to tell: no other process shares the database.
    pub async fn announce(&self, _what: &str) -> StoreResult<()> {
        Ok(())
    }

    /// One process handles deliveries, one batch at a time, so a claim is a read: writing a
    /// lease would rewrite every payload (SQLite rewrites a whole row on update) for nothing.
    /// The try count is persisted when a try fails ([`Db::retry_delivery`]).
    pub async fn claim_deliveries(
        &self,
        _owner: &ReplicaId,
        _ttl_ms: i64,
        max: i64,
    ) -> StoreResult<Vec<ClaimedDelivery>> {
        Ok(sqlx::query_as(
            "SELECT guid, event, length(payload) AS size, received_at, rowid AS seq,
                    tries + 1 AS tries, FALSE AS taken_over
             FROM deliveries WHERE processed_at IS NULL AND due_at <= ?
             ORDER BY received_at, rowid LIMIT ?",
        )
        .bind(now_ms())
        .bind(max)
        .fetch_all(&self.write)
        .await?)
    }

    pub async fn delivery_payloads(&self, guids: &[String]) -> StoreResult<Vec<StoredDelivery>> {
        let mut rows = Vec::with_capacity(guids.len());
        for chunk in guids.chunks(500) {
            let sql = format!(
                "SELECT guid, event, payload, received_at FROM deliveries WHERE guid IN ({})",
                placeholders(chunk.len())
            );
            let mut q = sqlx::query_as(&sql);
            for g in chunk {
                q = q.bind(g);
            }
            rows.extend(q.fetch_all(&self.write).await?);
        }
        Ok(rows)
    }

    /// Claims hold no lease on SQLite (see [`Db::claim_deliveries`]).
    pub async fn renew_deliveries(
        &self,
        _owner: &ReplicaId,
        _guids: &[String],
        _ttl_ms: i64,
    ) -> StoreResult<()> {
        Ok(())
    }

    pub async fn retry_delivery(
        &self,
        guid: &str,
        _owner: &ReplicaId,
        tries: i64,
        delay_ms: i64,
        error: &str,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE deliveries SET lease_owner = NULL, lease_expires_at = NULL, due_at = ?,
                                   last_error = ?, tries = ?
             WHERE guid = ? AND processed_at IS NULL",
        )
        .bind(now_ms() + delay_ms)
        .bind(error)
        .bind(tries)
        .bind(guid)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    /// One process writes: its drivers hear every change from the writer, so there is no mark.
    pub async fn change_mark(&self) -> StoreResult<ChangeMark> {
        Ok(ChangeMark(0))
    }

    /// Every spoke of the run (SQLite keeps no change marks).
    pub async fn spoke_changes(
        &self,
        run: &HubRunId,
        since: ChangeMark,
    ) -> StoreResult<(Vec<SpokeRecord>, ChangeMark)> {
        Ok((self.spokes(run).await?, since))
    }
}

impl Db {
    pub async fn active_spokes_of(&self, owner: &ReplicaId) -> StoreResult<Vec<(String, i64)>> {
        Ok(sqlx::query_as(
            "SELECT s.status, COUNT(*) FROM spokes s JOIN runs r ON r.id = s.run_id
             WHERE r.lease_owner = ? AND r.status <> 'completed'
               AND s.status IN ('planned', 'dispatching', 'unknown', 'dispatched', 'running',
                                'retry_wait')
             GROUP BY s.status",
        )
        .bind(owner.as_str())
        .fetch_all(&self.write)
        .await?)
    }

    pub async fn queued_deliveries(&self) -> StoreResult<i64> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM deliveries WHERE processed_at IS NULL")
                .fetch_one(&self.write)
                .await?,
        )
    }
}
