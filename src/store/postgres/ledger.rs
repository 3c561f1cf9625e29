//! The leased work ledger on Postgres (see `store::ledger`). Times of leases and due work are
//! read from the database's clock, so replicas whose clocks differ agree on when a lease
//! expired. Claims lock the rows they take (`FOR UPDATE SKIP LOCKED`): two replicas claiming at
//! once take different rows and never wait on each other.

use sqlx::Row as _;

use super::super::ledger::{ChangeMark, ClaimedDelivery, ReplicaId, WorkRetry};
use super::super::model::{SpokeRow, SPOKE_COLUMNS};
use super::super::{corrupt, SpokeRecord, StoreResult, StoredDelivery};
use super::Db;
use crate::hub::HubRunId;

/// The database's clock in unix milliseconds.
const NOW: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

/// The channel that announces work (`deliveries`, `runs`) to every replica.
pub(super) const WORK_CHANNEL: &str = "spokehub_work";
/// The channel that names runs whose spokes changed.
pub(super) const SPOKES_CHANNEL: &str = "spokehub_spokes";

fn run_ids(ids: Vec<String>) -> StoreResult<Vec<HubRunId>> {
    ids.into_iter()
        .map(|s| s.parse().map_err(|e| corrupt("runs", e)))
        .collect()
}

impl Db {
    pub async fn release_leases_of(&self, owner: &ReplicaId) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        for table in ["runs", "deliveries"] {
            sqlx::query(&format!(
                "UPDATE {table} SET lease_owner = NULL, lease_expires_at = NULL
                 WHERE lease_owner = $1"
            ))
            .bind(owner.as_str())
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
        let rows: Vec<(String, bool)> = sqlx::query_as(&format!(
            "UPDATE runs r SET lease_owner = $1, lease_expires_at = {NOW} + $2
             FROM (SELECT id, lease_owner FROM runs
                   WHERE status <> 'completed' AND due_at <= {NOW}
                     AND (lease_owner IS NULL OR lease_expires_at < {NOW})
                   ORDER BY created_at LIMIT $3
                   FOR UPDATE SKIP LOCKED) c
             WHERE r.id = c.id
             RETURNING r.id, c.lease_owner IS NOT NULL"
        ))
        .bind(owner.as_str())
        .bind(ttl_ms)
        .bind(max)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(id, taken_over)| Ok((id.parse().map_err(|e| corrupt("runs", e))?, taken_over)))
            .collect()
    }

    pub async fn renew_runs(&self, owner: &ReplicaId, ttl_ms: i64) -> StoreResult<Vec<HubRunId>> {
        let ids: Vec<String> = sqlx::query_scalar(&format!(
            "UPDATE runs SET lease_expires_at = {NOW} + $2
             WHERE lease_owner = $1 AND status <> 'completed'
             RETURNING id"
        ))
        .bind(owner.as_str())
        .bind(ttl_ms)
        .fetch_all(&self.pool)
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
        let mut tx = self.pool.begin().await?;
        let tries: Option<i64> = sqlx::query_scalar(
            "SELECT tries FROM runs WHERE id = $1 AND lease_owner = $2 FOR UPDATE",
        )
        .bind(id.to_string())
        .bind(owner.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(tries) = tries else {
            return Ok(()); // no longer ours
        };
        let (tries, delay) = match failure {
            Some(_) => {
                let tries = tries + 1;
                (tries, retry.delay(tries as u32).as_millis() as i64)
            }
            None => (0, 0),
        };
        sqlx::query(&format!(
            "UPDATE runs SET lease_owner = NULL, lease_expires_at = NULL, tries = $2,
                             last_error = $3, due_at = {NOW} + $4
             WHERE id = $1"
        ))
        .bind(id.to_string())
        .bind(tries)
        .bind(failure)
        .bind(delay)
        .execute(&mut *tx)
        .await?;
        sqlx::query("SELECT pg_notify($1, 'runs')")
            .bind(WORK_CHANNEL)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn announce(&self, what: &str) -> StoreResult<()> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(WORK_CHANNEL)
            .bind(what)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn claim_deliveries(
        &self,
        owner: &ReplicaId,
        ttl_ms: i64,
        max: i64,
    ) -> StoreResult<Vec<ClaimedDelivery>> {
        Ok(sqlx::query_as(&format!(
            "UPDATE deliveries d SET lease_owner = $1, lease_expires_at = {NOW} + $2,
                                     tries = d.tries + 1
             FROM (SELECT guid, lease_owner FROM deliveries
                   WHERE processed_at IS NULL AND due_at <= {NOW}
                     AND (lease_owner IS NULL OR lease_expires_at < {NOW})
                   ORDER BY received_at, seq LIMIT $3
                   FOR UPDATE SKIP LOCKED) c
             WHERE d.guid = c.guid
             RETURNING d.guid, d.event, octet_length(d.payload)::BIGINT AS size, d.received_at,
                       d.seq, d.tries, c.lease_owner IS NOT NULL AS taken_over"
        ))
        .bind(owner.as_str())
        .bind(ttl_ms)
        .bind(max)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn delivery_payloads(&self, guids: &[String]) -> StoreResult<Vec<StoredDelivery>> {
        Ok(sqlx::query_as(
            "SELECT guid, event, payload, received_at FROM deliveries WHERE guid = ANY($1)",
        )
        .bind(guids)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn renew_deliveries(
        &self,
        owner: &ReplicaId,
        guids: &[String],
        ttl_ms: i64,
    ) -> StoreResult<()> {
        sqlx::query(&format!(
            "UPDATE deliveries SET lease_expires_at = {NOW} + $3
             WHERE lease_owner = $1 AND guid = ANY($2) AND processed_at IS NULL"
        ))
        .bind(owner.as_str())
        .bind(guids)
        .bind(ttl_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn retry_delivery(
        &self,
        guid: &str,
        owner: &ReplicaId,
        tries: i64,
        delay_ms: i64,
        error: &str,
    ) -> StoreResult<()> {
        sqlx::query(&format!(
            "UPDATE deliveries SET lease_owner = NULL, lease_expires_at = NULL,
                                   due_at = {NOW} + $3, last_error = $4, tries = $5
             WHERE guid = $1 AND lease_owner = $2 AND processed_at IS NULL"
        ))
        .bind(guid)
        .bind(owner.as_str())
        .bind(delay_ms)
        .bind(error)
        .bind(tries)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn change_mark(&self) -> StoreResult<ChangeMark> {
        let xmin: i64 =
            sqlx::query_scalar("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
                .fetch_one(&self.pool)
                .await?;
        Ok(ChangeMark(xmin))
    }

    /// One snapshot for both the mark and the rows, so nothing committed after the read can
    /// be older than the next mark.
    pub async fn spoke_changes(
        &self,
        run: &HubRunId,
        since: ChangeMark,
    ) -> StoreResult<(Vec<SpokeRecord>, ChangeMark)> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        let xmin: i64 = sqlx::query("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        let rows: Vec<SpokeRow> = sqlx::query_as(&format!(
            "SELECT {SPOKE_COLUMNS} FROM spokes WHERE run_id = $1 AND changed_xid >= $2"
        ))
        .bind(run.to_string())
        .bind(since.0)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let records = rows
            .into_iter()
            .map(SpokeRow::into_record)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok((records, ChangeMark(xmin)))
    }
}

impl Db {
    /// Hears every replica's announcements (`LISTEN`) and wakes the waiting work in this
    /// process. The listener reconnects by itself; what is announced while it is away is found
    /// by the slow polls.
    pub(in crate::store) fn listen(&self, notices: std::sync::Arc<super::super::Notices>) {
        let pool = self.pool.clone();
        tokio::spawn(async move {
            loop {
                let mut listener = match sqlx::postgres::PgListener::connect_with(&pool).await {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot listen for work announcements; retrying");
                        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                        continue;
                    }
                };
                if let Err(e) = listener.listen_all([WORK_CHANNEL, SPOKES_CHANNEL]).await {
                    tracing::warn!(error = %e, "cannot listen for work announcements; retrying");
                    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                    continue;
                }
                loop {
                    match listener.try_recv().await {
                        Ok(Some(n)) => match (n.channel(), n.payload()) {
                            (WORK_CHANNEL, "deliveries") => notices.deliveries.notify_one(),
                            (WORK_CHANNEL, "runs") => notices.runs.notify_one(),
                            (WORK_CHANNEL, "work") => notices.work.notify_waiters(),
                            (SPOKES_CHANNEL, run) => {
                                if let Ok(run) = run.parse::<HubRunId>() {
                                    notices.spokes_changed(&run);
                                }
                            }
                            _ => {}
                        },
                        // The connection was lost (the next call reconnects): whatever was
                        // announced meanwhile is looked for now.
                        Ok(None) => {
                            tracing::warn!("work announcements interrupted; reconnecting");
                            notices.wake_all();
                            // Not a hot loop if the server keeps dropping the connection; what
                            // is announced before the reconnect is found by the slow polls.
                            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "work announcements interrupted");
                            notices.wake_all();
                            break;
                        }
                    }
                }
            }
        });
    }
}

impl Db {
    pub async fn active_spokes_of(&self, owner: &ReplicaId) -> StoreResult<Vec<(String, i64)>> {
        Ok(sqlx::query_as(
            "SELECT s.status, COUNT(*) FROM spokes s JOIN runs r ON r.id = s.run_id
             WHERE r.lease_owner = $1 AND r.status <> 'completed'
               AND s.status IN ('planned', 'dispatching', 'unknown', 'dispatched', 'running',
                                'retry_wait')
             GROUP BY s.status",
        )
        .bind(owner.as_str())
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn queued_deliveries(&self) -> StoreResult<i64> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM deliveries WHERE processed_at IS NULL")
                .fetch_one(&self.pool)
                .await?,
        )
    }
}
