//! Postgres's side of the group-commit writer: one connection of its own, a batch per
//! transaction (see `store::batch`).
//!
//! A transition reads its spoke `FOR UPDATE`: the row stays locked until the batch commits, so
//! another writer on the same database (another process) waits for this commit and then decides
//! from the spoke as committed; never a read-then-write race. A batch locks all its spokes up
//! front in one global order (run, repository), so two processes' batches wait for each other
//! instead of deadlocking; should they still deadlock, Postgres aborts one, and that batch is
//! applied again job by job.

use std::collections::HashSet;
use std::sync::Arc;

use sqlx::pool::PoolConnection;
use sqlx::{Acquire as _, PgConnection, PgPool, Postgres};

use super::super::batch::{judge, written, Backend, Decide, EventRow, Job, Outcome, OwnedDelivery};
use super::super::model::{SpokeRow, SPOKE_COLUMNS};
use super::super::{now_ms, StoreError, StoreResult, TransitionRecord};
use super::Health;
use crate::hub::{HubRunId, RepoName, Spoke};

pub(in crate::store) struct Writer {
    pool: PgPool,
    health: Arc<Health>,
}

impl Writer {
    pub(super) fn new(pool: PgPool, health: Arc<Health>) -> Writer {
        Writer { pool, health }
    }
}

impl Backend for Writer {
    type Conn = PoolConnection<Postgres>;

    async fn acquire(&self) -> StoreResult<Self::Conn> {
        Ok(self.pool.acquire().await?)
    }

    async fn apply(conn: &mut Self::Conn, jobs: &[Job]) -> StoreResult<Vec<Outcome>> {
        run_in_transaction(conn, jobs).await
    }

    fn committed(&self, result: Result<(), &StoreError>) {
        self.health.observe(result);
    }
}

/// Applies every job in one transaction; any error rolls it all back (the transaction is
/// dropped uncommitted).
async fn run_in_transaction(
    conn: &mut PoolConnection<Postgres>,
    jobs: &[Job],
) -> StoreResult<Vec<Outcome>> {
    let mut tx = conn.begin().await?;
    let mut outcomes = Vec::with_capacity(jobs.len());
    let mut events: Vec<EventRow> = Vec::new();
    lock_spokes_in_order(&mut tx, jobs).await?;
    let mut newly_recorded = record_deliveries(&mut tx, jobs).await?;
    for job in jobs {
        let outcome = match job {
            Job::Transition {
                run, repo, decide, ..
            } => match apply_transition(&mut tx, run, repo, decide, &mut events).await {
                Ok(record) => Outcome::Transition(Box::new(Ok(record))),
                Err(StoreError::NotFound { what, id }) => {
                    Outcome::Transition(Box::new(Err(StoreError::NotFound { what, id })))
                }
                Err(e) => return Err(e),
            },
            // Inserted above, all at once; the first job naming a new GUID recorded it.
            Job::RecordDelivery { delivery: d, .. } => {
                Outcome::Recorded(Ok(newly_recorded.remove(&d.guid)))
            }
            Job::FinishDelivery { guid, outcome, .. } => {
                sqlx::query(
                    "UPDATE deliveries SET processed_at = $1, outcome = $2, lease_owner = NULL,
                                           lease_expires_at = NULL
                     WHERE guid = $3",
                )
                .bind(now_ms())
                .bind(outcome)
                .bind(guid)
                .execute(&mut *tx)
                .await?;
                Outcome::Finished(Ok(()))
            }
        };
        outcomes.push(outcome);
    }
    for chunk in events.chunks(100) {
        let mut q = sqlx::QueryBuilder::new("INSERT INTO events (run_id, repo, kind, detail, at) ");
        q.push_values(chunk, |mut b, e| {
            b.push_bind(&e.run_id)
                .push_bind(&e.repo)
                .push_bind(e.kind)
                .push_bind(&e.detail)
                .push_bind(e.at);
        });
        q.build().execute(&mut *tx).await?;
    }
    announce(&mut tx, jobs, &outcomes).await?;
    tx.commit().await?;
    Ok(outcomes)
}

/// Tells every replica, at the commit, which runs' spokes changed and that deliveries arrived.
async fn announce(conn: &mut PgConnection, jobs: &[Job], outcomes: &[Outcome]) -> StoreResult<()> {
    let mut runs: Vec<String> = Vec::new();
    let mut delivered = false;
    for (job, outcome) in jobs.iter().zip(outcomes) {
        match (job, outcome) {
            (Job::Transition { run, .. }, Outcome::Transition(r))
                if r.as_ref().as_ref().ok().and_then(written).is_some() =>
            {
                runs.push(run.to_string());
            }
            (Job::RecordDelivery { .. }, Outcome::Recorded(Ok(true))) => delivered = true,
            _ => {}
        }
    }
    runs.sort();
    runs.dedup();
    if !runs.is_empty() {
        sqlx::query("SELECT pg_notify($1, r) FROM unnest($2::text[]) AS r")
            .bind(super::ledger::SPOKES_CHANNEL)
            .bind(&runs)
            .execute(&mut *conn)
            .await?;
    }
    if delivered {
        sqlx::query("SELECT pg_notify($1, 'deliveries')")
            .bind(super::ledger::WORK_CHANNEL)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Locks every spoke the batch transitions, in one global order (run, repository), before any
/// is changed: two replicas' batches touching the same spokes then wait for each other instead
/// of deadlocking.
async fn lock_spokes_in_order(conn: &mut PgConnection, jobs: &[Job]) -> StoreResult<()> {
    let mut keys: Vec<(String, String)> = jobs
        .iter()
        .filter_map(|j| match j {
            Job::Transition { run, repo, .. } => Some((run.to_string(), repo.to_string())),
            _ => None,
        })
        .collect();
    if keys.len() < 2 {
        return Ok(());
    }
    keys.sort();
    keys.dedup();
    let (runs, repos): (Vec<String>, Vec<String>) = keys.into_iter().unzip();
    sqlx::query(
        "SELECT 1 FROM spokes
         WHERE (run_id, repo) IN (SELECT * FROM unnest($1::text[], $2::text[]))
         ORDER BY run_id, repo FOR UPDATE",
    )
    .bind(&runs)
    .bind(&repos)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Inserts the batch's deliveries in few statements; returns the GUIDs that were new.
async fn record_deliveries(conn: &mut PgConnection, jobs: &[Job]) -> StoreResult<HashSet<String>> {
    let deliveries: Vec<&OwnedDelivery> = jobs
        .iter()
        .filter_map(|j| match j {
            Job::RecordDelivery { delivery, .. } => Some(delivery),
            _ => None,
        })
        .collect();
    let mut new = HashSet::new();
    let at = now_ms();
    for chunk in deliveries.chunks(100) {
        let mut q = sqlx::QueryBuilder::new(
            "INSERT INTO deliveries (guid, event, action, installation_id, payload, received_at) ",
        );
        q.push_values(chunk, |mut b, d| {
            b.push_bind(&d.guid)
                .push_bind(&d.event)
                .push_bind(&d.action)
                .push_bind(d.installation_id.map(|i| i as i64))
                .push_bind(&d.payload[..])
                .push_bind(at);
        });
        q.push(" ON CONFLICT (guid) DO NOTHING RETURNING guid");
        let guids: Vec<String> = q.build_query_scalar().fetch_all(&mut *conn).await?;
        new.extend(guids);
    }
    Ok(new)
}

/// One transition inside the writer's open transaction: the row is locked (`FOR UPDATE`)
/// until the commit; its event-log row goes to `events`.
async fn apply_transition(
    conn: &mut PgConnection,
    run: &HubRunId,
    repo: &RepoName,
    decide: &Decide,
    events: &mut Vec<EventRow>,
) -> StoreResult<TransitionRecord> {
    let run_id = run.to_string();
    let row: SpokeRow = sqlx::query_as(&format!(
        "SELECT {SPOKE_COLUMNS} FROM spokes WHERE run_id = $1 AND repo = $2 FOR UPDATE"
    ))
    .bind(&run_id)
    .bind(repo.as_str())
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| StoreError::NotFound {
        what: "spoke",
        id: format!("{run_id} {repo}"),
    })?;
    let before = row.into_record()?.spoke;
    let record = judge(&run_id, repo, before, decide, events);
    if let Some(s) = written(&record) {
        write_spoke(conn, &run_id, s).await?;
    }
    Ok(record)
}

async fn write_spoke(conn: &mut PgConnection, run_id: &str, s: &Spoke) -> StoreResult<()> {
    sqlx::query(
        "UPDATE spokes SET status = $1, reason = $2, attempt = $3, workflow_run_id = $4,
            run_url = $5, dispatched_at = $6, started_at = $7, finished_at = $8, due_at = $9,
            conflicts = $10, summary = $11, retry_after = $12, lease_id = $13,
            lease_worker = $14, lease_until = $15
         WHERE run_id = $16 AND repo = $17",
    )
    .bind(s.status.as_str())
    .bind(&s.reason)
    .bind(s.attempt as i64)
    .bind(s.workflow_run_id.map(|v| v as i64))
    .bind(&s.run_url)
    .bind(s.dispatched_at)
    .bind(s.started_at)
    .bind(s.finished_at)
    .bind(s.due_at)
    .bind(s.conflicts as i64)
    .bind(&s.summary)
    .bind(s.retry_after.map(|r| r.as_str()))
    .bind(s.lease.as_ref().map(|l| l.id.as_str()))
    .bind(s.lease.as_ref().map(|l| l.worker.as_str()))
    .bind(s.lease.as_ref().map(|l| l.until))
    .bind(run_id)
    .bind(s.repo.as_str())
    .execute(&mut *conn)
    .await?;
    Ok(())
}
