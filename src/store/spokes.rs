//! Spokes and their transitions.

use sqlx::sqlite::SqliteRow;
use sqlx::Row as _;

use super::batch::Job;
use super::{corrupt, now_ms, Store, StoreError, StoreResult};
use crate::hub::{HubRunId, RepoName, Spoke, SpokeStatus, Transition};

/// A spoke as planned: a target (`planned`) or a repository skipped with a reason.
#[derive(Debug, Clone)]
pub struct NewSpoke {
    pub repo: RepoName,
    pub default_branch: String,
    pub status: SpokeStatus,
    pub reason: Option<String>,
}

/// A stored spoke with what the dispatcher needs besides its state.
#[derive(Debug, Clone)]
pub struct SpokeRecord {
    pub spoke: Spoke,
    pub default_branch: String,
}

/// What a transition did, as persisted.
#[derive(Debug, Clone)]
pub struct TransitionRecord {
    /// The spoke before the event.
    pub before: Spoke,
    /// The domain's verdict.
    pub transition: Transition,
}

impl TransitionRecord {
    /// The spoke as it is now.
    pub fn current(&self) -> &Spoke {
        match &self.transition {
            Transition::Changed(s) | Transition::Conflict { spoke: s, .. } => s,
            _ => &self.before,
        }
    }
}

fn opt_u64(r: &SqliteRow, col: &str) -> Option<u64> {
    r.get::<Option<i64>, _>(col).map(|v| v as u64)
}

fn spoke_from_row(r: &SqliteRow) -> StoreResult<SpokeRecord> {
    let repo: String = r.get("repo");
    let status: String = r.get("status");
    Ok(SpokeRecord {
        spoke: Spoke {
            repo: repo.parse().map_err(|e| corrupt("spokes", e))?,
            status: status.parse().map_err(|_| corrupt("spokes", status))?,
            reason: r.get("reason"),
            attempt: r.get::<i64, _>("attempt") as u32,
            workflow_run_id: opt_u64(r, "workflow_run_id"),
            run_url: r.get("run_url"),
            dispatched_at: r.get("dispatched_at"),
            started_at: r.get("started_at"),
            finished_at: r.get("finished_at"),
            due_at: r.get("due_at"),
            conflicts: r.get::<i64, _>("conflicts") as u32,
            summary: r.get("summary"),
        },
        default_branch: r.get("default_branch"),
    })
}

const SPOKE_COLUMNS: &str =
    "repo, default_branch, status, reason, attempt, workflow_run_id, run_url,
     dispatched_at, started_at, finished_at, due_at, conflicts, summary";

impl Store {
    /// Every spoke of a run, ordered by repository name.
    pub async fn spokes(&self, run: &HubRunId) -> StoreResult<Vec<SpokeRecord>> {
        sqlx::query(&format!(
            "SELECT {SPOKE_COLUMNS} FROM spokes WHERE run_id = ? ORDER BY repo"
        ))
        .bind(run.to_string())
        .fetch_all(&self.read)
        .await?
        .iter()
        .map(spoke_from_row)
        .collect()
    }

    /// One spoke of a run.
    pub async fn spoke(&self, run: &HubRunId, repo: &RepoName) -> StoreResult<Option<SpokeRecord>> {
        sqlx::query(&format!(
            "SELECT {SPOKE_COLUMNS} FROM spokes WHERE run_id = ? AND repo = ?"
        ))
        .bind(run.to_string())
        .bind(repo.as_str())
        .fetch_optional(&self.read)
        .await?
        .as_ref()
        .map(spoke_from_row)
        .transpose()
    }

    /// The spoke whose current attempt owns a GitHub workflow run.
    pub async fn spoke_by_workflow_run(
        &self,
        workflow_run_id: u64,
    ) -> StoreResult<Option<(HubRunId, RepoName)>> {
        let row: Option<(String, String)> =
            sqlx::query_as("SELECT run_id, repo FROM spokes WHERE workflow_run_id = ? LIMIT 1")
                .bind(workflow_run_id as i64)
                .fetch_optional(&self.read)
                .await?;
        row.map(|(run, repo)| {
            Ok((
                run.parse().map_err(|e| corrupt("spokes", e))?,
                repo.parse().map_err(|e| corrupt("spokes", e))?,
            ))
        })
        .transpose()
    }

    /// Applies one event to one spoke atomically: reads the spoke, asks the domain (`decide`),
    /// persists a change or a conflict together with its event-log entry, and returns what
    /// happened. Serialized with every other write (and committed in a group with those
    /// waiting at the same moment), so concurrent reports for one spoke cannot lose an update.
    pub async fn transition(
        &self,
        run: &HubRunId,
        repo: &RepoName,
        decide: impl Fn(&Spoke) -> Transition + Send + Sync + 'static,
    ) -> StoreResult<TransitionRecord> {
        let (run, repo) = (*run, repo.clone());
        self.submit(|reply| Job::Transition {
            run,
            repo,
            decide: Box::new(decide),
            reply,
        })
        .await
    }
}

/// How a transition is decided: by the domain, from the spoke as stored. `Fn`, so a batch that
/// failed can be applied again job by job.
pub(super) type Decide = Box<dyn Fn(&Spoke) -> Transition + Send + Sync>;

/// An event-log row, written with the others of its batch in one statement.
pub(super) struct EventRow {
    pub run_id: String,
    pub repo: String,
    pub kind: &'static str,
    pub detail: String,
    pub at: i64,
}

/// One transition inside the writer's open transaction; its event-log row goes to `events`.
pub(super) async fn apply_transition(
    conn: &mut sqlx::SqliteConnection,
    run: &HubRunId,
    repo: &RepoName,
    decide: &Decide,
    events: &mut Vec<EventRow>,
) -> StoreResult<TransitionRecord> {
    let run_id = run.to_string();
    let row = sqlx::query(&format!(
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
    let before = spoke_from_row(&row)?.spoke;
    let transition = decide(&before);
    let (kind, detail) = match &transition {
        Transition::Changed(s) => {
            write_spoke(conn, &run_id, s).await?;
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
        Transition::Conflict { spoke, detail } => {
            write_spoke(conn, &run_id, spoke).await?;
            ("conflict", Some(detail.clone()))
        }
        Transition::Stale { detail } => ("stale", Some(detail.clone())),
        Transition::Invalid { detail } => ("invalid", Some(detail.clone())),
        Transition::Unchanged => ("unchanged", None),
    };
    if let Some(detail) = detail {
        events.push(EventRow {
            run_id,
            repo: repo.to_string(),
            kind,
            detail,
            at: now_ms(),
        });
    }
    Ok(TransitionRecord { before, transition })
}

async fn write_spoke(
    conn: &mut sqlx::SqliteConnection,
    run_id: &str,
    s: &Spoke,
) -> StoreResult<()> {
    sqlx::query(
        "UPDATE spokes SET status = ?, reason = ?, attempt = ?, workflow_run_id = ?, run_url = ?,
            dispatched_at = ?, started_at = ?, finished_at = ?, due_at = ?, conflicts = ?,
            summary = ?
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
    .bind(run_id)
    .bind(s.repo.as_str())
    .execute(&mut *conn)
    .await?;
    Ok(())
}
