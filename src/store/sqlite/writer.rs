//! SQLite's side of the group-commit writer: one connection, `BEGIN IMMEDIATE`, a batch per
//! transaction (see `store::batch`).

use std::collections::HashSet;

use sqlx::pool::PoolConnection;
use sqlx::{Sqlite, SqlitePool};

use super::super::batch::{judge, written, Backend, Decide, EventRow, Job, Outcome, OwnedDelivery};
use super::super::model::{SpokeRow, SPOKE_COLUMNS};
use super::super::{now_ms, StoreError, StoreResult, TransitionRecord};
use crate::hub::{HubRunId, RepoName, Spoke};

/// The writer's connection pool (one connection).
pub(in crate::store) struct Writer(pub SqlitePool);

impl Backend for Writer {
    type Conn = PoolConnection<Sqlite>;

    async fn acquire(&self) -> StoreResult<Self::Conn> {
        Ok(self.0.acquire().await?)
    }

    async fn apply(conn: &mut Self::Conn, jobs: &[Job]) -> StoreResult<Vec<Outcome>> {
        run_in_transaction(conn, jobs).await
    }
}

/// Applies every job in one transaction; any error rolls it all back.
async fn run_in_transaction(
    conn: &mut PoolConnection<Sqlite>,
    jobs: &[Job],
) -> StoreResult<Vec<Outcome>> {
    sqlx::query("BEGIN IMMEDIATE").execute(&mut **conn).await?;
    let mut outcomes = Vec::with_capacity(jobs.len());
    let mut events: Vec<EventRow> = Vec::new();
    let mut newly_recorded: HashSet<String> = match record_deliveries(conn, jobs).await {
        Ok(guids) => guids,
        Err(e) => return rollback(conn, e).await,
    };
    for job in jobs {
        let outcome = match job {
            Job::Transition {
                run, repo, decide, ..
            } => match apply_transition(&mut *conn, run, repo, decide, &mut events).await {
                Ok(record) => Outcome::Transition(Box::new(Ok(record))),
                Err(StoreError::NotFound { what, id }) => {
                    Outcome::Transition(Box::new(Err(StoreError::NotFound { what, id })))
                }
                Err(e) => return rollback(conn, e).await,
            },
            // Inserted above, all at once; the first job naming a new GUID recorded it.
            Job::RecordDelivery { delivery: d, .. } => {
                Outcome::Recorded(Ok(newly_recorded.remove(&d.guid)))
            }
            Job::FinishDelivery { guid, outcome, .. } => {
                let done = sqlx::query(
                    "UPDATE deliveries SET processed_at = ?, outcome = ?, lease_owner = NULL,
                                           lease_expires_at = NULL
                     WHERE guid = ?",
                )
                .bind(now_ms())
                .bind(outcome)
                .bind(guid)
                .execute(&mut **conn)
                .await;
                match done {
                    Ok(_) => Outcome::Finished(Ok(())),
                    Err(e) => return rollback(conn, e.into()).await,
                }
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
        if let Err(e) = q.build().execute(&mut **conn).await {
            return rollback(conn, e.into()).await;
        }
    }
    if let Err(e) = sqlx::query("COMMIT").execute(&mut **conn).await {
        return rollback(conn, e.into()).await;
    }
    Ok(outcomes)
}

/// Inserts the batch's deliveries in few statements; returns the GUIDs that were new.
async fn record_deliveries(
    conn: &mut PoolConnection<Sqlite>,
    jobs: &[Job],
) -> StoreResult<HashSet<String>> {
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
        let guids: Vec<String> = q.build_query_scalar().fetch_all(&mut **conn).await?;
        new.extend(guids);
    }
    Ok(new)
}

async fn rollback<T>(conn: &mut PoolConnection<Sqlite>, e: StoreError) -> StoreResult<T> {
    let _ = sqlx::query("ROLLBACK").execute(&mut **conn).await;
    Err(e)
}

/// One transition inside the writer's open transaction; its event-log row goes to `events`.
async fn apply_transition(
    conn: &mut sqlx::SqliteConnection,
    run: &HubRunId,
    repo: &RepoName,
    decide: &Decide,
    events: &mut Vec<EventRow>,
) -> StoreResult<TransitionRecord> {
    let run_id = run.to_string();
    let row: SpokeRow = sqlx::query_as(&format!(
        "SELECT {SPOKE_COLUMNS} FROM spokes WHERE run_id = ? AND repo = ?"
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

async fn write_spoke(
    conn: &mut sqlx::SqliteConnection,
    run_id: &str,
    s: &Spoke,
) -> StoreResult<()> {
    sqlx::query(
        "UPDATE spokes SET status = ?, reason = ?, attempt = ?, workflow_run_id = ?, run_url = ?,
            dispatched_at = ?, started_at = ?, finished_at = ?, due_at = ?, conflicts = ?,
            summary = ?, retry_after = ?, lease_id = ?, lease_worker = ?, lease_until = ?
         WHERE run_id = ? AND repo = ?",
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
