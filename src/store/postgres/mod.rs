//! The PostgreSQL backend (`SPOKEHUB_DATABASE_URL=postgres://...`): the ledger on a server the
//! operator runs, backs up and fails over.
//!
//! - Migrations run at start on one connection holding `pg_advisory_lock`, so processes that
//!   start together apply them once.
//! - Commits are acknowledged on disk (`synchronous_commit = on`, whatever the server's
//!   default).
//! - A spoke transition reads its row `FOR UPDATE` inside the writer's transaction, so a
//!   concurrent writer (another process) waits instead of racing (see `writer`).
//! - There is no file to watch: [`Db::check_writable`] answers from the last write and the last
//!   health probe, and a failure starts a probe in the background so it heals by itself.

mod agents;
mod deliveries;
mod ledger;
mod rate;
mod runs;
mod sessions;
mod spokes;
mod worker_runs;
mod writer;

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions as _, Connection as _};

use super::{now_ms, Durability, OpenReadOnlyError, StoreError, StoreResult};
pub(super) use writer::Writer;

/// Connections for everything but the group-commit writer (which has its own one).
pub const POOL_CONNECTIONS: u32 = 8;

/// The advisory lock held while migrating ("spokehub" in ASCII).
const MIGRATION_LOCK: i64 = 0x7370_6f6b_6568_7562;

/// How long a health probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub(super) struct Db {
    pool: PgPool,
    health: Arc<Health>,
}

/// Whether the last write (or health probe) failed because the database was unavailable.
pub(super) struct Health {
    failed: AtomicBool,
    probing: AtomicBool,
    pool: PgPool,
}

impl Health {
    /// Records a commit or a failure; only failures that say the database is unreachable or
    /// refusing writes count (a bad row fails its job, not the database).
    pub(super) fn observe(&self, result: Result<(), &StoreError>) {
        match result {
            Ok(()) => self.failed.store(false, Ordering::Relaxed),
            Err(e) if unavailable(e) => self.failed.store(true, Ordering::Relaxed),
            Err(_) => {}
        }
    }

    /// One write round trip (an upsert of the `health_probe` setting), bounded in time.
    async fn probe(&self) -> StoreResult<()> {
        let write = sqlx::query(
            "INSERT INTO settings (key, value) VALUES ('health_probe', $1) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(now_ms().to_string())
        .execute(&self.pool);
        let result = match tokio::time::timeout(PROBE_TIMEOUT, write).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(StoreError::from(e)),
            Err(_) => Err(StoreError::Unavailable(format!(
                "a write did not commit within {PROBE_TIMEOUT:?}"
            ))),
        };
        self.observe(result.as_ref().map(|_| ()));
        result
    }
}

/// Whether an error means the database cannot take writes now (as opposed to one bad job).
fn unavailable(e: &StoreError) -> bool {
    match e {
        StoreError::Unavailable(_) => true,
        StoreError::Database(e) => match e {
            sqlx::Error::Database(db) => {
                let code = db.code().unwrap_or_default();
                // Connection exceptions, insufficient resources (disk full), operator
                // intervention (shutdown), system errors, internal errors, and a server that
                // became a read-only standby.
                ["08", "53", "57", "58", "XX"]
                    .iter()
                    .any(|class| code.starts_with(class))
                    || code == "25006"
            }
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => true,
            _ => false,
        },
        StoreError::Batch(_) => true,
        _ => false,
    }
}

/// `url` without its password, for messages.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "(an unparsable postgres URL)".to_owned(),
    }
}

impl Db {
    /// Connects, applies migrations under the advisory lock, and opens the pools.
    pub async fn open(url: &str, durability: Durability) -> anyhow::Result<(Db, Writer)> {
        let shown = redact(url);
        let options = PgConnectOptions::from_str(url)
            .with_context(|| format!("invalid database URL {shown}"))?
            .application_name("spokehub")
            .options([(
                "synchronous_commit",
                match durability {
                    Durability::Full => "on",
                    Durability::ProcessCrash => "off",
                },
            )]);
        migrate(&options)
            .await
            .with_context(|| format!("cannot apply database migrations to {shown}"))?;
        let pool = PgPoolOptions::new()
            .max_connections(POOL_CONNECTIONS)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
            .await
            .with_context(|| format!("cannot open database {shown}"))?;
        let writer_pool = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .with_context(|| format!("cannot open database {shown}"))?;
        let health = Arc::new(Health {
            failed: AtomicBool::new(false),
            probing: AtomicBool::new(false),
            pool: pool.clone(),
        });
        let writer = Writer::new(writer_pool, health.clone());
        Ok((Db { pool, health }, writer))
    }

    /// Connects read-only (`default_transaction_read_only`): never creates or migrates; a
    /// database that does not exist, or holds no ledger, is [`OpenReadOnlyError::Missing`].
    pub async fn open_read_only(url: &str) -> Result<(Db, Writer), OpenReadOnlyError> {
        let shown = redact(url);
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| OpenReadOnlyError::Invalid(format!("{shown}: {e}")))?
            .application_name("spokehub status")
            .options([("default_transaction_read_only", "on")]);
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(|e| match &e {
                sqlx::Error::Database(db) if db.code().as_deref() == Some("3D000") => {
                    OpenReadOnlyError::Missing(shown.clone())
                }
                _ => OpenReadOnlyError::Unreadable(format!("{shown}: {e}")),
            })?;
        let ledger: bool = sqlx::query_scalar("SELECT to_regclass('runs') IS NOT NULL")
            .fetch_one(&pool)
            .await
            .map_err(|e| OpenReadOnlyError::Unreadable(format!("{shown}: {e}")))?;
        if !ledger {
            return Err(OpenReadOnlyError::Missing(format!(
                "{shown} (the database exists but holds no spokehub ledger)"
            )));
        }
        let health = Arc::new(Health {
            failed: AtomicBool::new(false),
            probing: AtomicBool::new(false),
            pool: pool.clone(),
        });
        let writer = Writer::new(pool.clone(), health.clone());
        Ok((Db { pool, health }, writer))
    }

    /// Ok unless the last write or health probe found the database unavailable (no round
    /// trip). While it is failing, a probe runs in the background (one at a time), so a
    /// database that comes back is noticed without a write having to get through first.
    pub fn check_writable(&self) -> StoreResult<()> {
        if !self.health.failed.load(Ordering::Relaxed) {
            return Ok(());
        }
        if !self.health.probing.swap(true, Ordering::AcqRel) {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                let health = self.health.clone();
                rt.spawn(async move {
                    let _ = health.probe().await;
                    health.probing.store(false, Ordering::Release);
                });
            } else {
                self.health.probing.store(false, Ordering::Release);
            }
        }
        Err(StoreError::Unavailable(
            "the last write to the database failed".into(),
        ))
    }

    /// A write round trip commits (within 5 s).
    pub async fn health(&self) -> StoreResult<()> {
        self.health.probe().await
    }

    /// Stores `value` under `key` unless one is there; returns the stored value.
    pub async fn setting_once(&self, key: &str, value: &str) -> StoreResult<String> {
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(
            sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
                .bind(key)
                .fetch_one(&self.pool)
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
        sqlx::query(
            "INSERT INTO events (run_id, repo, kind, detail, at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(run_id)
        .bind(repo)
        .bind(kind)
        .bind(detail)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn events(&self, kind: &str) -> StoreResult<Vec<(Option<String>, String)>> {
        Ok(
            sqlx::query_as("SELECT repo, detail FROM events WHERE kind = $1 ORDER BY id")
                .bind(kind)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    pub async fn count_events(&self, kind: &str) -> StoreResult<i64> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE kind = $1")
                .bind(kind)
                .fetch_one(&self.pool)
                .await?,
        )
    }
}

/// Applies the migrations on a connection of its own that holds the advisory lock throughout;
/// closing it (or losing it) releases the lock, so a failed start never leaves it held.
async fn migrate(options: &PgConnectOptions) -> anyhow::Result<()> {
    let mut conn = options.connect().await.context("cannot connect")?;
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut conn)
        .await?;
    let applied = sqlx::migrate!("./migrations/postgres").run(&mut conn).await;
    let _ = conn.close().await;
    applied?;
    Ok(())
}
