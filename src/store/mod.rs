//! The durable ledger: deliveries (the persisted intake queue), runs, spokes, the event log and
//! settings. SQLite by default; the SQL is kept portable so a Postgres backend can follow behind
//! the same interface.
//!
//! Writes go through one connection (SQLite has one writer anyway), so a read-modify-write
//! transaction such as [`Store::transition`] is serialized without busy retries; reads use a
//! separate small pool and never block writers (WAL).

mod batch;
mod deliveries;
mod runs;
mod spokes;

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use rand::RngCore as _;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

pub use batch::SpokeChange;
pub use deliveries::{NewDelivery, StoredDelivery};
pub use runs::{NewRun, RunRecord};
pub use spokes::{NewSpoke, SpokeRecord, TransitionRecord};

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
}

/// Why [`Store::open_read_only`] did not open a database.
#[derive(Debug, thiserror::Error)]
pub enum OpenReadOnlyError {
    /// No file at that path (nothing is created).
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
    /// (`synchronous = FULL`). The default, and what the hub uses.
    #[default]
    Full,
    /// Survives a crash of the process only (`synchronous = NORMAL`); for benchmarks.
    ProcessCrash,
}

/// The database file as opened: if the path later names another file (or none), whatever is
/// written is not where the next start will look.
#[derive(Debug)]
struct DbFile {
    path: std::path::PathBuf,
    identity: (u64, u64),
}

impl DbFile {
    fn identity(path: &std::path::Path) -> std::io::Result<(u64, u64)> {
        use std::os::unix::fs::MetadataExt as _;
        let m = std::fs::metadata(path)?;
        Ok((m.dev(), m.ino()))
    }

    fn check(&self) -> StoreResult<()> {
        match Self::identity(&self.path) {
            Ok(id) if id == self.identity => Ok(()),
            _ => Err(StoreError::FileGone(self.path.display().to_string())),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The hub's ledger. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    write: SqlitePool,
    read: SqlitePool,
    /// The group-commit writer for the hot writes (see `batch`).
    writer: tokio::sync::mpsc::UnboundedSender<batch::Job>,
    /// Committed spoke changes in commit order, for the one consumer that takes them.
    changes:
        std::sync::Arc<std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<SpokeChange>>>>,
    /// The file behind the database (none in memory).
    file: Option<std::sync::Arc<DbFile>>,
}

/// Current time in unix milliseconds, the unit every stored time uses.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Store {
    /// Opens (creating if missing) the database at `url` (`sqlite://path` or `sqlite::memory:`)
    /// and applies migrations.
    pub async fn open(url: &str) -> anyhow::Result<Store> {
        Self::open_with(url, Durability::Full).await
    }

    /// [`Store::open`] with a chosen durability (benchmarks compare them).
    pub async fn open_with(url: &str, durability: Durability) -> anyhow::Result<Store> {
        let options = SqliteConnectOptions::from_str(url)
            .with_context(|| format!("invalid database URL {url:?}"))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match durability {
                Durability::Full => SqliteSynchronous::Full,
                Durability::ProcessCrash => SqliteSynchronous::Normal,
            })
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let memory = url.contains(":memory:") || url.contains("mode=memory");
        let db_path = options.get_filename().to_path_buf();
        // No liveness ping per acquire: the connections are in-process, and the ping is a round
        // trip to SQLite's worker thread on every single statement.
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .test_before_acquire(false)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options.clone())
            .await
            .with_context(|| format!("cannot open database {url:?}"))?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&write)
            .await
            .context("cannot apply database migrations")?;
        // An in-memory database exists once per connection: share the writer for reads.
        let read = if memory {
            write.clone()
        } else {
            SqlitePoolOptions::new()
                .max_connections(4)
                .test_before_acquire(false)
                .connect_with(options.read_only(true))
                .await
                .with_context(|| format!("cannot open database {url:?} for reading"))?
        };
        let file = if memory {
            None
        } else {
            let path = db_path.clone();
            let identity = DbFile::identity(&path)
                .with_context(|| format!("cannot read the database file {}", path.display()))?;
            Some(std::sync::Arc::new(DbFile { path, identity }))
        };
        let (changes_tx, changes_rx) = tokio::sync::mpsc::unbounded_channel();
        let writer = batch::spawn_writer(write.clone(), changes_tx);
        Ok(Store {
            write,
            read,
            writer,
            changes: std::sync::Arc::new(std::sync::Mutex::new(Some(changes_rx))),
            file,
        })
    }

    /// Opens an existing database for reading only (`spokehub status`): never creates a file,
    /// never migrates, and every write fails. A missing file is [`OpenReadOnlyError::Missing`].
    pub async fn open_read_only(url: &str) -> Result<Store, OpenReadOnlyError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| OpenReadOnlyError::Invalid(format!("{url:?}: {e}")))?
            .create_if_missing(false)
            .read_only(true)
            .busy_timeout(Duration::from_secs(10));
        if url.contains(":memory:") || url.contains("mode=memory") {
            return Err(OpenReadOnlyError::Invalid(format!(
                "{url:?} is a memory database: it holds nothing once its process ends"
            )));
        }
        let path = options.get_filename().to_path_buf();
        let identity = match DbFile::identity(&path) {
            Ok(id) => id,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(OpenReadOnlyError::Missing(path.display().to_string()))
            }
            Err(e) => {
                return Err(OpenReadOnlyError::Unreadable(format!(
                    "{}: {e}",
                    path.display()
                )))
            }
        };
        let read = SqlitePoolOptions::new()
            .max_connections(2)
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .map_err(|e| OpenReadOnlyError::Unreadable(format!("{}: {e}", path.display())))?;
        let (changes_tx, changes_rx) = tokio::sync::mpsc::unbounded_channel();
        let writer = batch::spawn_writer(read.clone(), changes_tx);
        Ok(Store {
            write: read.clone(),
            read,
            writer,
            changes: std::sync::Arc::new(std::sync::Mutex::new(Some(changes_rx))),
            file: Some(std::sync::Arc::new(DbFile { path, identity })),
        })
    }

    /// Whether the database file is still the one opened (cheap: one `stat`). Intake checks
    /// it before acknowledging a delivery.
    pub fn check_writable(&self) -> StoreResult<()> {
        match &self.file {
            Some(f) => f.check(),
            None => Ok(()),
        }
    }

    /// The file is the one opened and a write commits (`/healthz`).
    pub async fn health(&self) -> StoreResult<()> {
        self.check_writable()?;
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ('health_probe', ?) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(now_ms().to_string())
        .execute(&self.write)
        .await?;
        self.check_writable()
    }

    /// Every committed spoke change, in commit order (the engine routes them to run drivers,
    /// so a driver never sees an older state after a newer one). One taker only.
    pub fn take_changes(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<SpokeChange>> {
        self.changes.lock().expect("changes lock").take()
    }

    /// Hands a job to the group-commit writer and waits for its answer.
    async fn submit<T>(
        &self,
        job: impl FnOnce(tokio::sync::oneshot::Sender<StoreResult<T>>) -> batch::Job,
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
        sqlx::query("INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING")
            .bind(KEY)
            .bind(hex::encode(fresh))
            .execute(&self.write)
            .await?;
        let value: String = sqlx::query_scalar("SELECT value FROM settings WHERE key = ?")
            .bind(KEY)
            .fetch_one(&self.write)
            .await?;
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
        sqlx::query("INSERT INTO events (run_id, repo, kind, detail, at) VALUES (?, ?, ?, ?, ?)")
            .bind(run_id)
            .bind(repo)
            .bind(kind)
            .bind(detail)
            .bind(now_ms())
            .execute(&self.write)
            .await?;
        Ok(())
    }

    /// The logged events of one kind, oldest first: (repository, detail).
    pub async fn events(&self, kind: &str) -> StoreResult<Vec<(Option<String>, String)>> {
        Ok(
            sqlx::query_as("SELECT repo, detail FROM events WHERE kind = ? ORDER BY id")
                .bind(kind)
                .fetch_all(&self.read)
                .await?,
        )
    }

    /// Number of logged events of one kind (for tests, status and metrics).
    pub async fn count_events(&self, kind: &str) -> StoreResult<i64> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE kind = ?")
                .bind(kind)
                .fetch_one(&self.read)
                .await?,
        )
    }
}

fn corrupt(table: &'static str, detail: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        table,
        detail: detail.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::{
        apply, HubRunId, InstallationId, Policy, RepoName, SpokeEvent, SpokeStatus, Transition,
        TransitionContext,
    };

    async fn temp_store() -> (Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        (Store::open(&url).await.unwrap(), dir)
    }

    #[tokio::test]
    async fn deliveries_are_recorded_once_and_queued_in_order() {
        let (store, _dir) = temp_store().await;
        let d = |guid| NewDelivery {
            guid,
            event: "workflow_run",
            action: Some("completed"),
            installation_id: Some(1),
            payload: bytes::Bytes::from_static(b"{}"),
        };
        assert!(store.record_delivery(&d("a")).await.unwrap());
        assert!(store.record_delivery(&d("b")).await.unwrap());
        assert!(!store.record_delivery(&d("a")).await.unwrap());
        let pending = store.pending_deliveries(10).await.unwrap();
        assert_eq!(
            pending.iter().map(|p| p.guid.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        store.finish_delivery("a", "done").await.unwrap();
        assert_eq!(store.pending_deliveries(10).await.unwrap().len(), 1);
        assert_eq!(store.count_deliveries().await.unwrap(), 2);
        // Pruning forgets what was processed before the cut, never what waits.
        assert_eq!(store.prune_deliveries(now_ms() - 60_000).await.unwrap(), 0);
        assert_eq!(store.prune_deliveries(now_ms() + 1).await.unwrap(), 1);
        assert_eq!(store.count_deliveries().await.unwrap(), 1);
        assert_eq!(store.pending_deliveries(10).await.unwrap()[0].guid, "b");
    }

    #[tokio::test]
    async fn the_signing_key_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let first = Store::open(&url)
            .await
            .unwrap()
            .signing_key()
            .await
            .unwrap();
        let again = Store::open(&url)
            .await
            .unwrap()
            .signing_key()
            .await
            .unwrap();
        assert_eq!(first.len(), 32);
        assert_eq!(first, again);
    }

    #[tokio::test]
    async fn a_run_and_its_spokes_round_trip_and_transitions_persist() {
        let (store, _dir) = temp_store().await;
        let id = HubRunId::new_random();
        let hub: RepoName = "acme/hub".parse().unwrap();
        let run = NewRun {
            id,
            installation_id: InstallationId(9),
            hub_repo: &hub,
            task: "scan",
            targets: "",
            params: "{}",
            dry_run: false,
            git_ref: "main",
            sender: "octocat",
            trigger_delivery: Some("guid-1"),
            deadline_at: now_ms() + 60_000,
        };
        assert!(store.insert_run(&run).await.unwrap());
        let again = NewRun {
            id: HubRunId::new_random(),
            ..run
        };
        assert!(
            !store.insert_run(&again).await.unwrap(),
            "same trigger twice"
        );
        let repo: RepoName = "acme/svc".parse().unwrap();
        let sha = "a".repeat(40).parse().unwrap();
        let spokes = vec![
            NewSpoke {
                repo: repo.clone(),
                default_branch: "main".into(),
                status: SpokeStatus::Planned,
                reason: None,
            },
            NewSpoke {
                repo: "acme/old".parse().unwrap(),
                default_branch: "main".into(),
                status: SpokeStatus::Skipped,
                reason: Some("archived".into()),
            },
        ];
        store.activate_run(&id, &sha, &spokes).await.unwrap();
        let loaded = store.run(&id).await.unwrap().unwrap();
        assert_eq!(loaded.status.as_str(), "active");
        assert_eq!(loaded.head_sha, Some(sha));
        let decide = |event: SpokeEvent| {
            move |s: &crate::hub::Spoke| {
                let policy = Policy::default();
                let ctx = TransitionContext {
                    now: now_ms(),
                    policy: &policy,
                };
                apply(s, event.clone(), &ctx)
            }
        };
        let rec = store
            .transition(&id, &repo, decide(SpokeEvent::DispatchStarted))
            .await
            .unwrap();
        assert!(matches!(rec.transition, Transition::Changed(_)));
        let rec = store
            .transition(
                &id,
                &repo,
                decide(SpokeEvent::DispatchAccepted {
                    run_id: Some(77),
                    run_url: Some("u".into()),
                }),
            )
            .await
            .unwrap();
        assert_eq!(rec.current().status, SpokeStatus::Dispatched);
        let stored = store.spoke(&id, &repo).await.unwrap().unwrap().spoke;
        assert_eq!(stored.status, SpokeStatus::Dispatched);
        assert_eq!((stored.attempt, stored.workflow_run_id), (1, Some(77)));
        assert_eq!(
            store.spoke_by_workflow_run(77).await.unwrap(),
            Some((id, repo.clone()))
        );
        assert_eq!(store.count_events("transition").await.unwrap(), 2);
        let all = store.spokes(&id).await.unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].spoke.reason.as_deref(), Some("archived"));
    }

    #[tokio::test]
    async fn concurrent_transitions_of_one_spoke_are_serialized_and_none_is_lost() {
        let (store, _dir) = temp_store().await;
        let id = HubRunId::new_random();
        let hub: RepoName = "acme/hub".parse().unwrap();
        store
            .insert_run(&NewRun {
                id,
                installation_id: InstallationId(1),
                hub_repo: &hub,
                task: "t",
                targets: "",
                params: "{}",
                dry_run: false,
                git_ref: "main",
                sender: "s",
                trigger_delivery: None,
                deadline_at: now_ms() + 60_000,
            })
            .await
            .unwrap();
        let repos: Vec<RepoName> = (0..50)
            .map(|i| format!("acme/r{i}").parse().unwrap())
            .collect();
        let spokes: Vec<NewSpoke> = repos
            .iter()
            .map(|r| NewSpoke {
                repo: r.clone(),
                default_branch: "main".into(),
                status: SpokeStatus::Planned,
                reason: None,
            })
            .collect();
        store
            .activate_run(&id, &"b".repeat(40).parse().unwrap(), &spokes)
            .await
            .unwrap();
        // Every spoke gets two conflicting-order events from many tasks at once; the writer
        // batches them, and each spoke must end dispatched exactly once (attempt 1).
        let mut tasks = Vec::new();
        for repo in &repos {
            for event in [SpokeEvent::DispatchStarted, SpokeEvent::DispatchStarted] {
                let store = store.clone();
                let repo = repo.clone();
                tasks.push(tokio::spawn(async move {
                    store
                        .transition(&id, &repo, move |s| {
                            let policy = Policy::default();
                            apply(
                                s,
                                event.clone(),
                                &TransitionContext {
                                    now: now_ms(),
                                    policy: &policy,
                                },
                            )
                        })
                        .await
                        .unwrap()
                }));
            }
        }
        let mut changed = 0;
        for t in tasks {
            if matches!(t.await.unwrap().transition, Transition::Changed(_)) {
                changed += 1;
            }
        }
        assert_eq!(changed, 50, "each spoke started exactly once");
        for s in store.spokes(&id).await.unwrap() {
            assert_eq!(s.spoke.status, SpokeStatus::Dispatching);
            assert_eq!(s.spoke.attempt, 1);
        }
        let missing = store
            .transition(&id, &"acme/nope".parse().unwrap(), |_| {
                Transition::Unchanged
            })
            .await;
        assert!(matches!(missing, Err(StoreError::NotFound { .. })));
    }
}
