//! The durable ledger: deliveries (the persisted intake queue), runs, spokes, the event log and
//! settings, on SQLite (`sqlite://path`, the embedded default) or PostgreSQL
//! (`postgres://...`). One interface, [`Store`], over both: the engine does not know which.
//!
//! The hot writes (spoke transitions, recorded and finished deliveries) go through one
//! group-commit writer per process (`batch`), which also publishes committed spoke changes in
//! commit order ([`Store::take_changes`]).

mod batch;
mod model;
mod postgres;
mod sqlite;

use rand::RngCore as _;
use tokio::sync::mpsc;

pub use batch::SpokeChange;
pub use model::{
    AgentRecord, NewDelivery, NewRun, NewSpoke, RunRecord, SpokeRecord, StoredDelivery,
    TransitionRecord, WorkScope,
};

use crate::hub::{HubRunId, InstallationId, RepoName, Sha, Spoke, Transition};
use batch::{Job, OwnedDelivery};

/// Errors a caller may branch on; everything else is an internal database error.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("corrupt row in {table}: {detail}")]
    Corrupt { table: &'static str, detail: String },
    #[error("no such {what}: {id}")]
    NotFound { what: &'static str, id: String },
    #[error("batched write failed: {0}")]
    Batch(String),
    #[error("the database file {0} was removed or replaced under the hub")]
    FileGone(String),
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
}

/// Why [`Store::open_read_only`] did not open a database.
#[derive(Debug, thiserror::Error)]
pub enum OpenReadOnlyError {
    /// No database there (nothing is created).
    #[error("no database at {0}")]
    Missing(String),
    #[error("invalid database URL {0}")]
    Invalid(String),
    #[error("cannot read the database {0}")]
    Unreadable(String),
}

/// When a commit counts as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// On disk before it is acknowledged: survives a power loss or a kernel crash
    /// (SQLite `synchronous = FULL`; Postgres `synchronous_commit = on`). The default, and
    /// what the hub uses.
    #[default]
    Full,
    /// Survives a crash of the hub process only (SQLite `synchronous = NORMAL`; Postgres
    /// `synchronous_commit = off`); for benchmarks.
    ProcessCrash,
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The most payload bytes [`Store::pending_deliveries`] reads at once.
const PENDING_BATCH_BYTES: i64 = 8 * 1024 * 1024;

/// How many of the oldest pending deliveries (by payload size) to read at once: at most
/// [`PENDING_BATCH_BYTES`] of payloads, but always one, so a queue of large deliveries is
/// never read into memory whole.
pub fn within_budget(sizes: &[i64]) -> usize {
    let mut total = 0i64;
    sizes
        .iter()
        .take_while(|size| {
            total += **size;
            total <= PENDING_BATCH_BYTES
        })
        .count()
        .max(1)
        .min(sizes.len())
}

/// The database behind a [`Store`].
#[derive(Clone)]
enum Backend {
    Sqlite(sqlite::Db),
    Postgres(postgres::Db),
}

/// Calls the same method on whichever database the store uses.
macro_rules! on_db {
    ($self:ident, $db:ident => $call:expr) => {
        match &$self.backend {
            $crate::store::Backend::Sqlite($db) => $call,
            $crate::store::Backend::Postgres($db) => $call,
        }
    };
}

mod ledger;
pub use ledger::{
    ChangeMark, ClaimedDelivery, Notices, ReplicaId, TriggerTurn, WorkRetry, WORK_RETRY,
};

/// The hub's ledger. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
    /// The group-commit writer for the hot writes (see `batch`).
    writer: mpsc::UnboundedSender<Job>,
    /// Committed spoke changes in commit order, for the one consumer that takes them.
    changes: std::sync::Arc<std::sync::Mutex<Option<mpsc::UnboundedReceiver<SpokeChange>>>>,
    /// Wake-ups for new work (from this process, and on Postgres from every replica).
    notices: std::sync::Arc<Notices>,
}

/// Current time in unix milliseconds, the unit every stored time uses.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Whether `url` names a PostgreSQL database (`postgres://` or `postgresql://`).
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

impl Store {
    /// Opens the database at `url` and applies migrations: `sqlite://path` (created if
    /// missing) or `sqlite::memory:`, or `postgres://user@host/db` (the database must exist;
    /// migrations run under an advisory lock, so replicas starting together do not race).
    pub async fn open(url: &str) -> anyhow::Result<Store> {
        Self::open_with(url, Durability::Full).await
    }

    /// [`Store::open`] with a chosen durability (benchmarks compare them).
    pub async fn open_with(url: &str, durability: Durability) -> anyhow::Result<Store> {
        if is_postgres_url(url) {
            let (db, writer) = postgres::Db::open(url, durability).await?;
            let store = Self::with_writer(Backend::Postgres(db.clone()), writer);
            db.listen(store.notices.clone());
            Ok(store)
        } else {
            let (db, writer) = sqlite::Db::open(url, durability).await?;
            Ok(Self::with_writer(Backend::Sqlite(db), writer))
        }
    }

    /// Opens an existing database for reading only (`spokehub status`): never creates a file
    /// or a database, never migrates, and every write fails. A missing one is
    /// [`OpenReadOnlyError::Missing`].
    pub async fn open_read_only(url: &str) -> Result<Store, OpenReadOnlyError> {
        if is_postgres_url(url) {
            let (db, writer) = postgres::Db::open_read_only(url).await?;
            Ok(Self::with_writer(Backend::Postgres(db), writer))
        } else {
            let (db, writer) = sqlite::Db::open_read_only(url).await?;
            Ok(Self::with_writer(Backend::Sqlite(db), writer))
        }
    }

    fn with_writer(backend: Backend, writer: impl batch::Backend) -> Store {
        let (changes_tx, changes_rx) = mpsc::unbounded_channel();
        let notices = std::sync::Arc::new(Notices::default());
        // Several processes may write a Postgres ledger: drivers read changes from it instead.
        let changes = match backend {
            Backend::Sqlite(_) => Some(changes_tx),
            Backend::Postgres(_) => None,
        };
        Store {
            backend,
            writer: batch::spawn_writer(writer, changes, notices.clone()),
            changes: std::sync::Arc::new(std::sync::Mutex::new(Some(changes_rx))),
            notices,
        }
    }

    /// Whether a write can be expected to land where the next start will look (cheap: no round
    /// trip). SQLite: the database file is still the one opened. Postgres: the last write and
    /// the last health probe did not fail. Intake checks it before acknowledging a delivery.
    pub fn check_writable(&self) -> StoreResult<()> {
        on_db!(self, db => db.check_writable())
    }

    /// A run-page session was signed out: it opens nothing until `until` (unix ms), when it
    /// would have expired anyway (older entries are pruned here).
    pub async fn end_session(&self, id: &str, until: i64) -> StoreResult<()> {
        on_db!(self, db => db.end_session(id, until).await)
    }

    /// Whether a run-page session was signed out.
    pub async fn session_ended(&self, id: &str) -> StoreResult<bool> {
        on_db!(self, db => db.session_ended(id).await)
    }

    /// Records a run-page token refresh (`sealed`: its result, encrypted) under a hash of the
    /// refresh token it spent; entries older than 5 minutes are pruned here.
    pub async fn record_refresh(&self, refresh_hash: &str, sealed: &str) -> StoreResult<()> {
        on_db!(self, db => db.record_refresh(refresh_hash, sealed).await)
    }

    /// The sealed result of a refresh of that token recorded since `since` (unix ms).
    pub async fn refreshed(&self, refresh_hash: &str, since: i64) -> StoreResult<Option<String>> {
        on_db!(self, db => db.refreshed(refresh_hash, since).await)
    }

    /// Spokes queued for workers of `scope` and not leased, of active runs, oldest first (at
    /// most `limit`): candidates for a claim, which takes each under its row lock.
    pub async fn queued_work(
        &self,
        scope: &WorkScope,
        limit: i64,
    ) -> StoreResult<Vec<(HubRunId, RepoName)>> {
        on_db!(self, db => db.queued_work(scope, limit).await)
    }

    /// Records a worker-workflow run the hub started for a hybrid run.
    pub async fn add_worker_run(
        &self,
        hub_run: &HubRunId,
        workflow_run_id: u64,
    ) -> StoreResult<()> {
        on_db!(self, db => db.add_worker_run(hub_run, workflow_run_id).await)
    }

    /// The hybrid run a worker-workflow run was started for, if the hub started it.
    pub async fn hub_run_of_worker(&self, workflow_run_id: u64) -> StoreResult<Option<HubRunId>> {
        let id = on_db!(self, db => db.hub_run_of_worker(workflow_run_id).await)?;
        id.map(|s| s.parse().map_err(|e| corrupt("worker_runs", e)))
            .transpose()
    }

    /// Records that a worker workflow was dispatched for a hybrid run (before its run id is known).
    pub async fn add_worker_dispatch(&self, hub_run: &HubRunId) -> StoreResult<()> {
        on_db!(self, db => db.add_worker_dispatch(hub_run).await)
    }

    /// How many worker workflows were dispatched for a hybrid run, and when the last was (unix ms).
    pub async fn worker_dispatches(&self, hub_run: &HubRunId) -> StoreResult<(i64, Option<i64>)> {
        on_db!(self, db => db.worker_dispatches(hub_run).await)
    }

    /// The spoke whose current attempt a worker holds under lease `lease_id`.
    pub async fn spoke_by_lease(
        &self,
        lease_id: &str,
    ) -> StoreResult<Option<(HubRunId, RepoName)>> {
        on_db!(self, db => db.spoke_by_lease(lease_id).await)
    }

    /// Adds an agent of pulled work with its token's hash; false when an agent of that name
    /// exists and is not revoked (a revoked one is replaced).
    pub async fn add_agent(&self, name: &str, token_hash: &str) -> StoreResult<bool> {
        on_db!(self, db => db.add_agent(name, token_hash).await)
    }

    /// Revokes an agent: its token opens nothing from now on. False when there is no such
    /// active agent.
    pub async fn revoke_agent(&self, name: &str) -> StoreResult<bool> {
        on_db!(self, db => db.revoke_agent(name).await)
    }

    /// Every agent, revoked ones included, by name.
    pub async fn agents(&self) -> StoreResult<Vec<AgentRecord>> {
        on_db!(self, db => db.agents().await)
    }

    /// The active agent whose token hashes to `token_hash`, noting that it was seen now.
    pub async fn agent_seen(&self, token_hash: &str) -> StoreResult<Option<AgentRecord>> {
        on_db!(self, db => db.agent_seen(token_hash).await)
    }

    /// A write commits (`/healthz`); on SQLite also: the file is the one opened.
    pub async fn health(&self) -> StoreResult<()> {
        on_db!(self, db => db.health().await)
    }

    /// Every committed spoke change, in commit order (the engine routes them to run drivers,
    /// so a driver never sees an older state after a newer one). One taker only.
    pub fn take_changes(&self) -> Option<mpsc::UnboundedReceiver<SpokeChange>> {
        self.changes.lock().expect("changes lock").take()
    }

    /// Hands a job to the group-commit writer and waits for its answer.
    async fn submit<T>(
        &self,
        job: impl FnOnce(tokio::sync::oneshot::Sender<StoreResult<T>>) -> Job,
    ) -> StoreResult<T> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.writer
            .send(job(reply))
            .map_err(|_| StoreError::Batch("the writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Batch("the writer dropped the job".into()))?
    }

    /// The key that signs callback tokens: created once, then the same across restarts.
    pub async fn signing_key(&self) -> StoreResult<Vec<u8>> {
        const KEY: &str = "callback_signing_key";
        let mut fresh = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut fresh);
        let fresh = hex::encode(fresh);
        let value = on_db!(self, db => db.setting_once(KEY, &fresh).await)?;
        hex::decode(value).map_err(|e| StoreError::Corrupt {
            table: "settings",
            detail: format!("{KEY}: {e}"),
        })
    }

    /// Appends to the event log (transitions, conflicts, rejected reports).
    pub async fn log_event(
        &self,
        run_id: Option<&str>,
        repo: Option<&str>,
        kind: &str,
        detail: &str,
    ) -> StoreResult<()> {
        on_db!(self, db => db.log_event(run_id, repo, kind, detail).await)
    }

    /// The logged events of one kind, oldest first: (repository, detail).
    pub async fn events(&self, kind: &str) -> StoreResult<Vec<(Option<String>, String)>> {
        on_db!(self, db => db.events(kind).await)
    }

    /// Number of logged events of one kind (for tests, status and metrics).
    pub async fn count_events(&self, kind: &str) -> StoreResult<i64> {
        on_db!(self, db => db.count_events(kind).await)
    }

    // ---- deliveries: the persisted intake queue

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
        on_db!(self, db => db.pending_deliveries(limit).await)
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
        on_db!(self, db => db.prune_deliveries(before).await)
    }

    /// Number of recorded deliveries (for tests and status).
    pub async fn count_deliveries(&self) -> StoreResult<i64> {
        on_db!(self, db => db.count_deliveries().await)
    }

    // ---- runs

    /// Records a new run in `planning`. Returns false (and records nothing) when a run was
    /// already started by the same delivery.
    pub async fn insert_run(&self, run: &NewRun<'_>) -> StoreResult<bool> {
        on_db!(self, db => db.insert_run(run).await)
    }

    pub async fn run(&self, id: &HubRunId) -> StoreResult<Option<RunRecord>> {
        on_db!(self, db => db.run(id).await)
    }

    /// The most recently created run.
    pub async fn latest_run_id(&self) -> StoreResult<Option<HubRunId>> {
        on_db!(self, db => db.latest_run_id().await)
    }

    /// The most recent runs, newest first (at most `limit`): only those not completed with
    /// `active_only`, only task `task` when given.
    pub async fn recent_runs(
        &self,
        active_only: bool,
        task: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<RunRecord>> {
        on_db!(self, db => db.recent_runs(active_only, task, limit).await)
    }

    /// A run's event log, oldest first: (at in unix ms, repository, kind, detail).
    pub async fn run_events(
        &self,
        id: &HubRunId,
    ) -> StoreResult<Vec<(i64, Option<String>, String, String)>> {
        on_db!(self, db => db.run_events(id).await)
    }

    /// The number of a run's events and the newest `limit` of them, oldest first (what the
    /// run page shows; a 10,000-spoke run has tens of thousands).
    pub async fn run_events_newest(
        &self,
        id: &HubRunId,
        limit: i64,
    ) -> StoreResult<(i64, Vec<(i64, Option<String>, String, String)>)> {
        on_db!(self, db => db.run_events_newest(id, limit).await)
    }

    /// A value that changes whenever a spoke of the run changes state, attempt, times or
    /// reason: per status, the count, attempts, latest start and end and reasons' length. One
    /// aggregate query, for the run page's live stream, instead of reading every spoke.
    pub async fn spokes_fingerprint(&self, id: &HubRunId) -> StoreResult<String> {
        on_db!(self, db => db.spokes_fingerprint(id).await)
    }

    /// The active run (not a dry run) of this task over these targets in this hub repository,
    /// if any: the concurrency rule.
    pub async fn active_run_for(
        &self,
        installation_id: InstallationId,
        hub_repo: &RepoName,
        task: &str,
        targets: &str,
    ) -> StoreResult<Option<HubRunId>> {
        on_db!(self, db => db.active_run_for(installation_id, hub_repo, task, targets).await)
    }

    /// Makes a completed run active again (operator re-run), with a new deadline and, when
    /// given, its new check run, in one write.
    pub async fn reopen_run(
        &self,
        id: &HubRunId,
        deadline_at: i64,
        check_run_id: Option<u64>,
    ) -> StoreResult<()> {
        on_db!(self, db => db.reopen_run(id, deadline_at, check_run_id).await)
    }

    /// Ends planning: stores the head sha and every spoke, and makes the run active, in one
    /// transaction (a restart during planning simply plans again).
    pub async fn activate_run(
        &self,
        id: &HubRunId,
        head_sha: &Sha,
        spokes: &[NewSpoke],
    ) -> StoreResult<()> {
        on_db!(self, db => db.activate_run(id, head_sha, spokes).await)
    }

    pub async fn set_head_sha(&self, id: &HubRunId, head_sha: &Sha) -> StoreResult<()> {
        on_db!(self, db => db.set_head_sha(id, head_sha).await)
    }

    pub async fn set_check_run(&self, id: &HubRunId, check_run_id: u64) -> StoreResult<()> {
        on_db!(self, db => db.set_check_run(id, check_run_id).await)
    }

    /// Completes a run with its conclusion (and why, when it did not run normally).
    pub async fn complete_run(
        &self,
        id: &HubRunId,
        conclusion: &str,
        reason: Option<&str>,
    ) -> StoreResult<()> {
        on_db!(self, db => db.complete_run(id, conclusion, reason).await)
    }

    /// Completes a run only when every spoke is terminal (an operator's re-run may have
    /// reopened spokes a moment ago); false when it is not settled, and nothing changed.
    pub async fn complete_settled_run(&self, id: &HubRunId, conclusion: &str) -> StoreResult<bool> {
        on_db!(self, db => db.complete_settled_run(id, conclusion).await)
    }

    /// Records an operator's request to cancel a run that has not completed, and why;
    /// false when the run has completed (or does not exist).
    pub async fn request_cancel(&self, id: &HubRunId, reason: &str) -> StoreResult<bool> {
        on_db!(self, db => db.request_cancel(id, reason).await)
    }

    // ---- spokes

    /// Every spoke of a run, ordered by repository name.
    pub async fn spokes(&self, run: &HubRunId) -> StoreResult<Vec<SpokeRecord>> {
        on_db!(self, db => db.spokes(run).await)
    }

    /// One spoke of a run.
    pub async fn spoke(&self, run: &HubRunId, repo: &RepoName) -> StoreResult<Option<SpokeRecord>> {
        on_db!(self, db => db.spoke(run, repo).await)
    }

    /// The spoke whose current attempt owns a GitHub workflow run.
    pub async fn spoke_by_workflow_run(
        &self,
        workflow_run_id: u64,
    ) -> StoreResult<Option<(HubRunId, RepoName)>> {
        on_db!(self, db => db.spoke_by_workflow_run(workflow_run_id).await)
    }

    /// Applies one event to one spoke atomically: reads the spoke (on Postgres with a row lock,
    /// `FOR UPDATE`), asks the domain (`decide`), persists a change or a conflict together
    /// with its event-log entry, and returns what happened. Committed in a group with the
    /// other writes waiting at the same moment, so concurrent reports for one spoke cannot
    /// lose an update.
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

fn corrupt(table: &'static str, detail: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        table,
        detail: detail.to_string(),
    }
}
