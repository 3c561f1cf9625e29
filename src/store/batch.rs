//! Group commit for the hot writes: spoke transitions, recorded deliveries and finished
//! deliveries. Callers hand a job to one writer task and await its answer; the writer takes
//! every job waiting at that moment and applies them in one transaction, then answers each.
//! Under load (a fan-out of thousands of spokes with four webhooks each) this turns thousands
//! of tiny transactions into a few large ones; alone, a job costs the same as before.
//!
//! A job is answered only after the transaction holding it committed, so "recorded" still
//! means durable. If anything in a batch fails, the batch is rolled back and every job is
//! applied again alone, so one bad job fails only itself.
//!
//! The writer is the same for both databases; each backend says how a batch is applied
//! ([`Backend`]). One writer per process also keeps the spoke changes it publishes in commit
//! order.

use std::future::Future;

use tokio::sync::{mpsc, oneshot};

use super::{now_ms, StoreError, StoreResult, TransitionRecord};
use crate::hub::{HubRunId, RepoName, Spoke, Transition};

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

/// How a transition is decided: by the domain, from the spoke as stored. `Fn`, so a batch that
/// failed can be applied again job by job.
pub(super) type Decide = Box<dyn Fn(&Spoke) -> Transition + Send + Sync>;

/// What one job produced, held until the commit.
pub(super) enum Outcome {
    Transition(Box<StoreResult<TransitionRecord>>),
    Recorded(StoreResult<bool>),
    Finished(StoreResult<()>),
}

/// An event-log row, written with the others of its batch in one statement.
pub(super) struct EventRow {
    pub run_id: String,
    pub repo: String,
    pub kind: &'static str,
    pub detail: String,
    pub at: i64,
}

/// A committed change of a spoke, published in commit order.
pub type SpokeChange = (HubRunId, crate::hub::Spoke);

/// How one database applies a batch.
pub(super) trait Backend: Send + Sync + 'static {
    type Conn: Send;
    fn acquire(&self) -> impl Future<Output = StoreResult<Self::Conn>> + Send;
    /// Applies every job in one transaction and commits; any error rolls it all back.
    fn apply(
        conn: &mut Self::Conn,
        jobs: &[Job],
    ) -> impl Future<Output = StoreResult<Vec<Outcome>>> + Send;
    /// Told whether each batch committed (Postgres keeps it for `check_writable`).
    fn committed(&self, _result: Result<(), &StoreError>) {}
}

/// The spoke before the event, the domain's verdict, the spoke to write (if any) and the
/// event-log row: the part of a transition that is the same on every database.
pub(super) fn judge(
    run_id: &str,
    repo: &RepoName,
    before: Spoke,
    decide: &Decide,
    events: &mut Vec<EventRow>,
) -> TransitionRecord {
    let transition = decide(&before);
    let (kind, detail) = match &transition {
        // A heartbeat's renewal is not an event worth a row.
        Transition::Changed(s) if crate::hub::is_renewal(&before, s) => ("renewal", None),
        Transition::Changed(s) => {
            let detail = format!(
                "{} -> {} (attempt {}){}",
                before.status.as_str(),
                s.status.as_str(),
                s.attempt,
                s.reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            );
            ("transition", Some(detail))
        }
        Transition::Conflict { detail, .. } => ("conflict", Some(detail.clone())),
        Transition::Stale { detail } => ("stale", Some(detail.clone())),
        Transition::Invalid { detail } => ("invalid", Some(detail.clone())),
        Transition::Unchanged => ("unchanged", None),
    };
    if let Some(detail) = detail {
        events.push(EventRow {
            run_id: run_id.to_owned(),
            repo: repo.to_string(),
            kind,
            detail,
            at: now_ms(),
        });
    }
    TransitionRecord { before, transition }
}

/// The spoke a transition writes, if it changed one.
pub(super) fn written(record: &TransitionRecord) -> Option<&Spoke> {
    match &record.transition {
        Transition::Changed(s) | Transition::Conflict { spoke: s, .. } => Some(s),
        _ => None,
    }
}

/// Where committed work is announced in this process: spoke changes in commit order (to the
/// run drivers, when they read them from here), and wake-ups.
pub(super) struct Announce {
    pub changes: Option<mpsc::UnboundedSender<SpokeChange>>,
    pub notices: std::sync::Arc<super::Notices>,
}

pub(super) fn spawn_writer<B: Backend>(
    db: B,
    changes: Option<mpsc::UnboundedSender<SpokeChange>>,
    notices: std::sync::Arc<super::Notices>,
) -> mpsc::UnboundedSender<Job> {
    let changes = Announce { changes, notices };
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
            write_batch(&db, jobs, &changes).await;
        }
    });
    tx
}

async fn write_batch<B: Backend>(db: &B, jobs: Vec<Job>, changes: &Announce) {
    let mut conn = match db.acquire().await {
        Ok(conn) => conn,
        Err(e) => {
            db.committed(Err(&e));
            return fail_all(jobs, &e);
        }
    };
    match B::apply(&mut conn, &jobs).await {
        Ok(outcomes) => {
            db.committed(Ok(()));
            answer(jobs, outcomes, changes)
        }
        Err(e) if jobs.len() == 1 => {
            db.committed(Err(&e));
            fail_all(jobs, &e)
        }
        Err(e) => {
            tracing::warn!(error = %e, jobs = jobs.len(), "batched write failed; applying jobs one by one");
            for job in jobs {
                match B::apply(&mut conn, std::slice::from_ref(&job)).await {
                    Ok(outcomes) => {
                        db.committed(Ok(()));
                        answer(vec![job], outcomes, changes)
                    }
                    Err(e) => {
                        db.committed(Err(&e));
                        fail_all(vec![job], &e)
                    }
                }
            }
        }
    }
}

/// Answers every job of a committed batch, and publishes its spoke changes in commit order
/// (before the answers, so no one can act on a change the drivers have not heard of).
fn answer(jobs: Vec<Job>, outcomes: Vec<Outcome>, announce: &Announce) {
    for (job, outcome) in jobs.iter().zip(&outcomes) {
        match (job, outcome) {
            (Job::Transition { run, .. }, Outcome::Transition(r)) => {
                if let Some(s) = r.as_ref().as_ref().ok().and_then(written) {
                    if let Some(changes) = &announce.changes {
                        let _ = changes.send((*run, s.clone()));
                    }
                    announce.notices.spokes_changed(run);
                }
            }
            (Job::RecordDelivery { .. }, Outcome::Recorded(Ok(true))) => {
                announce.notices.deliveries.notify_one();
            }
            _ => {}
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
