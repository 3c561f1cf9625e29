//! The SQLite backend: the embedded default (demo, tests, one node).
//!
//! Writes go through one connection (SQLite has one writer anyway), so a read-modify-write
//! transaction such as a spoke transition is serialized without busy retries; reads use a
//! separate small pool and never block writers (WAL).

mod agents;
mod deliveries;
mod ledger;
mod runs;
mod sessions;
mod spokes;
mod worker_runs;
mod writer;

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

use super::{now_ms, Durability, OpenReadOnlyError, StoreError, StoreResult};
pub(super) use writer::Writer;

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

#[derive(Clone)]
pub(super) struct Db {
    write: SqlitePool,
    read: SqlitePool,
    /// The file behind the database (none in memory).
    file: Option<std::sync::Arc<DbFile>>,
}

impl Db {
    /// Opens (creating if missing) the database at `url` (`sqlite://path` or `sqlite::memory:`)
    /// and applies migrations.
    pub async fn open(url: &str, durability: Durability) -> anyhow::Result<(Db, Writer)> {
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
        let writer = Writer(write.clone());
        Ok((Db { write, read, file }, writer))
    }

    /// Opens an existing database for reading only: never creates a file, never migrates, and
    /// every write fails. A missing file is [`OpenReadOnlyError::Missing`].
    pub async fn open_read_only(url: &str) -> Result<(Db, Writer), OpenReadOnlyError> {
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
        let db = Db {
            write: read.clone(),
            read: read.clone(),
            file: Some(std::sync::Arc::new(DbFile { path, identity })),
        };
        Ok((db, Writer(read)))
    }

    /// Whether the database file is still the one opened (cheap: one `stat`).
    pub fn check_writable(&self) -> StoreResult<()> {
        match &self.file {
            Some(f) => f.check(),
            None => Ok(()),
        }
    }

    /// The file is the one opened and a write commits.
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

    /// Stores `value` under `key` unless one is there; returns the stored value.
    pub async fn setting_once(&self, key: &str, value: &str) -> StoreResult<String> {
        sqlx::query("INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING")
            .bind(key)
            .bind(value)
            .execute(&self.write)
            .await?;
        Ok(
            sqlx::query_scalar("SELECT value FROM settings WHERE key = ?")
                .bind(key)
                .fetch_one(&self.write)
                .await?,
        )
    }

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

    pub async fn events(&self, kind: &str) -> StoreResult<Vec<(Option<String>, String)>> {
        Ok(
            sqlx::query_as("SELECT repo, detail FROM events WHERE kind = ? ORDER BY id")
                .bind(kind)
                .fetch_all(&self.read)
                .await?,
        )
    }

    pub async fn count_events(&self, kind: &str) -> StoreResult<i64> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE kind = ?")
                .bind(kind)
                .fetch_one(&self.read)
                .await?,
        )
    }
}
