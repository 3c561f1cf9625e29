//! Group commit for the hot writes: spoke transitions, recorded deliveries and finished
//! deliveries. Callers hand a job to one writer task and await its answer; the writer takes
//! every job waiting at that moment and applies them in one transaction, then answers each.
//! Under load (a fan-out of thousands of spokes with four webhooks each) this turns thousands
//! of tiny transactions into a few large ones; alone, a job costs the same as before.
//!
//! A job is answered only after the transaction holding it committed, so "recorded" still
//! means durable. If anything in a batch fails, the batch is rolled back and every job is
//! applied again alone, so one bad job fails only itself.

use std::collections::HashSet;

use sqlx::pool::PoolConnection;
use sqlx::{Sqlite, SqlitePool};
use tokio::sync::{mpsc, oneshot};

use super::spokes::{apply_transition, Decide, EventRow};
use super::{now_ms, StoreError, StoreResult, TransitionRecord};
use crate::hub::{HubRunId, RepoName};

/// Most jobs in one transaction.
const MAX_BATCH: usize = 512;

pub(super) enum Job {
    Transition {
        run: HubRunId,
        repo: RepoName,
        decide: Decide,
        reply: oneshot::Sender<StoreResult<TransitionRecord>>,
    },
    RecordDelivery {
        delivery: OwnedDelivery,
        reply: oneshot::Sender<StoreResult<bool>>,
    },
    FinishDelivery {
        guid: String,
        outcome: String,
        reply: oneshot::Sender<StoreResult<()>>,
    },
}

pub(super) struct OwnedDelivery {
    pub guid: String,
    pub event: String,
    pub action: Option<String>,
    pub installation_id: Option<u64>,
    pub payload: bytes::Bytes,
}

/// What one job produced, held until the commit.
enum Outcome {
    Transition(Box<StoreResult<TransitionRecord>>),
    Recorded(StoreResult<bool>),
    Finished(StoreResult<()>),
}

/// A committed change of a spoke, published in commit order.
pub type SpokeChange = (HubRunId, crate::hub::Spoke);

pub(super) fn spawn_writer(
    pool: SqlitePool,
    changes: mpsc::UnboundedSender<SpokeChange>,
) -> mpsc::UnboundedSender<Job> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut jobs = vec![first];
            while jobs.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            write_batch(&pool, jobs, &changes).await;
        }
    });
    tx
}

async fn write_batch(
    pool: &SqlitePool,
    jobs: Vec<Job>,
    changes: &mpsc::UnboundedSender<SpokeChange>,
) {
    let mut conn = match pool.acquire().await {
        Ok(conn) => conn,
        Err(e) => return fail_all(jobs, &e),
    };
    match run_in_transaction(&mut conn, &jobs).await {
        Ok(outcomes) => answer(jobs, outcomes, changes),
        Err(e) if jobs.len() == 1 => fail_all(jobs, &e),
        Err(e) => {
            tracing::warn!(error = %e, jobs = jobs.len(), "batched write failed; applying jobs one by one");
            for job in jobs {
                match run_in_transaction(&mut conn, std::slice::from_ref(&job)).await {
                    Ok(outcomes) => answer(vec![job], outcomes, changes),
                    Err(e) => fail_all(vec![job], &e),
                }
            }
        }
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
                    "UPDATE deliveries SET processed_at = ?, outcome = ? WHERE guid = ?",
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

/// Answers every job of a committed batch, and publishes its spoke changes in commit order
/// (before the answers, so no one can act on a change the drivers have not heard of).
fn answer(jobs: Vec<Job>, outcomes: Vec<Outcome>, changes: &mpsc::UnboundedSender<SpokeChange>) {
    for (job, outcome) in jobs.iter().zip(&outcomes) {
        if let (Job::Transition { run, .. }, Outcome::Transition(r)) = (job, outcome) {
            if let Ok(record) = r.as_ref() {
                if let crate::hub::Transition::Changed(s)
                | crate::hub::Transition::Conflict { spoke: s, .. } = &record.transition
                {
                    let _ = changes.send((*run, s.clone()));
                }
            }
        }
    }
    for (job, outcome) in jobs.into_iter().zip(outcomes) {
        match (job, outcome) {
            (Job::Transition { reply, .. }, Outcome::Transition(r)) => {
                let _ = reply.send(*r);
            }
            (Job::RecordDelivery { reply, .. }, Outcome::Recorded(r)) => {
                let _ = reply.send(r);
            }
            (Job::FinishDelivery { reply, .. }, Outcome::Finished(r)) => {
                let _ = reply.send(r);
            }
            _ => unreachable!("outcomes are produced in job order"),
        }
    }
}

fn fail_all(jobs: Vec<Job>, e: &dyn std::fmt::Display) {
    let err = || StoreError::Batch(e.to_string());
    for job in jobs {
        match job {
            Job::Transition { reply, .. } => {
                let _ = reply.send(Err(err()));
            }
            Job::RecordDelivery { reply, .. } => {
                let _ = reply.send(Err(err()));
            }
            Job::FinishDelivery { reply, .. } => {
                let _ = reply.send(Err(err()));
            }
        }
    }
}
